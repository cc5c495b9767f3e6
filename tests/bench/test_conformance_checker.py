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


def write_fr_artifact(folder, facts, absent=(), unparsed=0):
    """Two Flight Recorder dumps (rank 1 never entered collective 2) and one file that is no dump."""
    dumps = folder / "dumps"
    dumps.mkdir(parents=True)
    for rank, seqs in ((0, (1, 2)), (1, (1,))):
        entries = [
            {
                "pg_id": 0,
                "process_group": ["0", "default_pg"],
                "collective_seq_id": s,
                "profiling_name": "nccl:all_reduce",
                "state": "completed" if s == 1 else "scheduled",
                "input_sizes": [[3, 4]],
            }
            for s in seqs
        ]
        dump = {"version": "2.5", "pg_config": {"0": {"ranks": "[0, 1, 2]"}}, "entries": entries}
        (dumps / f"nccl_trace_rank_{rank}").write_text(json.dumps(dump))
    (dumps / "README").write_text("not a dump\n")
    odd = {"version": "2.5", "entries": ["not an entry", {"profiling_name": "nccl:barrier"}]}
    (dumps / "nccl_trace_rank_3").write_text(json.dumps(odd))
    spec = {
        "reader": "flight_recorder",
        "paths": {"dump_dir": "dumps"},
        "facts": list(facts),
        "absent": list(absent),
        "unparsed_lines": unparsed,
    }
    (folder / "expected.json").write_text(json.dumps(spec))
    (folder / "SOURCE.md").write_text("written for this test\n")
    return folder


def test_a_reader_that_is_no_sampler_gives_pseudo_tables(tmp_path):
    facts = [
        {
            "table": "fr_dumps",
            "row": {"file": "nccl_trace_rank_1", "rank": 1, "version": "2.5", "entries": 1},
        },
        {"table": "fr_entries", "row": {"rank": 0, "process_group": "0", "collective_seq_id": 2}},
        {"table": "fr_entries", "row": {"process_group_desc": "default_pg", "input_sizes": [[3, 4]]}},
        {"table": "fr_missing", "row": {"process_group": "0", "last_seq": 2, "missing": [1], "stuck": [0]}},
        {"table": "fr_missing", "row": {"members": [0, 1, 2], "no_dump": [2]}},
    ]
    absent = [{"table": "fr_entries", "row": {"rank": 1, "collective_seq_id": 2}}]
    facts.append({"table": "fr_dumps", "row": {"rank": 3, "entries": 1, "entries_without_seq": 1}})
    result = check_artifact(write_fr_artifact(tmp_path / "good", facts, absent, unparsed=2))
    assert result.failures == [] and result.sampler == "flight_recorder"
    assert result.facts == 1 + len(facts) + len(absent) + 1 and result.unparsed_lines == 2

    wrong = [{"table": "fr_missing", "row": {"missing": [0]}}]
    result = check_artifact(write_fr_artifact(tmp_path / "bad", wrong, unparsed=0))
    assert len(result.failures) == 2  # the fact, and the README and the odd entry counted as unparsed
    assert "fr_missing" in result.failures[0] and "expected 0" in result.failures[1]


def test_an_unknown_reader_fails_every_fact(tmp_path):
    folder = write_fr_artifact(tmp_path / "a", [{"table": "fr_dumps", "row": {"rank": 0}}])
    spec = json.loads((folder / "expected.json").read_text()) | {"reader": "nope"}
    (folder / "expected.json").write_text(json.dumps(spec))
    result = check_artifact(folder)
    assert result.facts_ok == 0 and "no reader 'nope'" in result.failures[0]
