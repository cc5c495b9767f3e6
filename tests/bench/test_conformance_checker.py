"""The corpus checker itself: facts that hold count, facts that do not fail with the nearest row named."""

from __future__ import annotations

import json
from argparse import Namespace

from c4.bench.conformance import check_artifact, run

XID_LINE = "NVRM: Xid (PCI:0000:18:00): 79, pid=4242, name=python, GPU has fallen off the bus.\n"


def write_artifact(folder, facts, absent=(), unparsed=None, source=True):
    folder.mkdir(parents=True)
    (folder / "kern.log").write_text(XID_LINE)
    spec = {
        "sampler": "xid_kmsg",
        "options": {"from_start": True},
        "paths": {"kmsg_path": "kern.log"},
        "facts": list(facts),
        "absent": list(absent),
    }
    if unparsed is not None:
        spec["unparsed_lines"] = unparsed
    (folder / "expected.json").write_text(json.dumps(spec))
    if source:
        (folder / "SOURCE.md").write_text("written for this test\n")
    return folder


def test_facts_that_hold_and_facts_that_do_not(tmp_path):
    good = write_artifact(tmp_path / "good", [{"table": "gpu_events", "row": {"xid": 79}}], unparsed=0)
    result = check_artifact(good)
    assert result.failures == [] and result.facts == result.facts_ok == 3  # read + fact + unparsed count

    bad = write_artifact(
        tmp_path / "bad",
        [{"table": "gpu_events", "row": {"xid": 48}}],
        absent=[{"table": "gpu_events", "row": {"xid": 79}}],
        unparsed=2,
        source=False,
    )
    result = check_artifact(bad)
    assert result.facts == 5 and result.facts_ok == 1
    text = "\n".join(result.failures)
    assert "SOURCE.md" in text and "'xid': 79" in text and "must not exist" in text and "expected 2" in text


def test_bench_exit_code_and_json_summary(tmp_path, capsys):
    write_artifact(tmp_path / "a", [{"table": "gpu_events", "row": {"xid": 79}}])
    assert run(Namespace(corpus=str(tmp_path), verbose=False, json=True)) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "artifacts": 1,
        "facts": 2,
        "facts_ok": 2,
        "unparsed_lines": 0,
    }
    write_artifact(tmp_path / "b", [{"table": "gpu_events", "row": {"xid": 13}}])
    assert run(Namespace(corpus=str(tmp_path), verbose=False, json=False)) == 1
    assert run(Namespace(corpus=str(tmp_path / "none"), verbose=False, json=False)) == 2
