"""The hold book: operators' holds beside the config's, what each hold/release changes, loading from rows."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from c4.analytics.holds import HoldBook
from c4.analytics.remediation import Hold

T0 = datetime(2026, 5, 1, 12, 0, 0)


def take(book: HoldBook, scope: str, job: str, hold: bool, at: datetime = T0, note: str = ""):
    """Change a hold and take the row in, as the collector does once it is stored."""
    change = book.change(scope, job, hold, "alice", note, at)
    if change.row is not None:
        book.apply(change.row)
    return change


def test_job_hold_covers_that_job_only_until_released():
    book = HoldBook()
    assert take(book, "job", "train", True, note="incident 42").changed
    assert book.reason("train") == "job train held by alice (c4 faults hold) (incident 42)"
    assert book.reason("other") == "" and book.reason("") == ""
    repeat = take(book, "job", "train", True)
    assert not repeat.changed and repeat.message.startswith("remediation is already held job train since")
    released = take(book, "job", "train", False, T0 + timedelta(seconds=5))
    assert released.changed and released.message == "remediation released job train"
    assert book.reason("train") == ""
    again = take(book, "job", "train", False)
    assert not again.changed and again.message == "no operator hold job train: nothing released"


def test_cluster_hold_covers_every_job_and_its_release_names_the_job_holds_left():
    book = HoldBook()
    take(book, "job", "train", True)
    take(book, "cluster", "", True)
    assert book.reason("anything").startswith("cluster-wide held by alice")
    released = take(book, "cluster", "", False)
    assert released.message == "remediation released cluster-wide; jobs still held by operators: train"
    assert book.reason("anything") == "" and book.reason("train")


def test_config_holds_are_listed_and_never_released_at_run_time():
    book = HoldBook(Hold(jobs=frozenset({"frozen"})))
    change = take(book, "job", "frozen", False)
    assert not change.changed
    assert "job frozen stays held by the collector config (remediation_hold_jobs)" in change.message
    assert book.reason("frozen") == "job frozen is held (remediation_hold_jobs)"
    # an operator hold on top, then released: the config's hold stays, and the message says so
    take(book, "job", "frozen", True)
    released = take(book, "job", "frozen", False)
    assert released.changed and "stays held by the collector config" in released.message
    assert book.reason("frozen")
    everyone = HoldBook(Hold(cluster=True))
    assert [(h.scope, h.source) for h in everyone.holds()] == [("cluster", "config")]
    assert "remediation_hold = true" in take(everyone, "cluster", "", False).message


def test_load_takes_the_newest_row_per_scope_and_job_and_new_rows_come_after_it():
    book = HoldBook()
    rows = [
        {"ts": T0, "scope": "job", "job": "a", "hold": True, "set_by": "x", "note": ""},
        {
            "ts": T0 + timedelta(seconds=2),
            "scope": "job",
            "job": "a",
            "hold": False,
            "set_by": "x",
            "note": "",
        },
        {
            "ts": T0 + timedelta(seconds=1),
            "scope": "job",
            "job": "b",
            "hold": True,
            "set_by": "y",
            "note": "n",
        },
    ]
    book.load(rows)
    assert [(h.job, h.by, h.note) for h in book.holds()] == [("b", "y", "n")]
    # a change dated before the newest stored row (the clock stepped back) is stored after it
    change = book.change("job", "a", True, "z", "", T0)
    assert change.row["ts"] == T0 + timedelta(seconds=2, microseconds=1)


def test_unknown_scope_is_an_error():
    with pytest.raises(ValueError, match="scope must be one of cluster, job"):
        HoldBook().change("galaxy", "", True, "", "", T0)


def test_reload_replaces_operator_holds_and_names_the_released():
    """A lake's leader reloads the holds other collectors stored: set ones appear, released ones go."""
    book = HoldBook()
    take(book, "job", "train", True)
    take(book, "cluster", "", True)
    current = [{"ts": T0, "scope": "job", "job": "eval", "hold": True, "set_by": "bob", "note": ""}]
    assert book.reload(current) == {("job", "train"), ("cluster", "")}
    assert book.reason("eval") and not book.reason("train")
    assert book.reload(current) == set()
