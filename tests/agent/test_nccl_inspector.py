"""NCCL Inspector: both output forms, NCCL's p2p records, a dump directory that appears later, skip reasons."""

from __future__ import annotations

import json
from pathlib import Path

from c4.agent.nccl_inspector import InspectorSampler
from c4.agent.runner import ScheduledSampler
from c4.agent.sampler import StartupPolicy

CORPUS = Path(__file__).resolve().parents[1] / "conformance" / "nccl_inspector"
DEFAULT_FORM = json.loads((CORPUS / "readme-default-v4.0" / "example-hostname-pid1639453.log").read_text())
VERBOSE_FORM = json.loads((CORPUS / "readme-verbose-v4.0" / "example-hostname-pid438776.log").read_text())

#: Derived from the writer calls at v2.30.7-1:plugins/profiler/inspector/inspector_json.cc:28-35 (header, with
#: comm_name), 60-68 (metadata) and 231-249 (p2p_perf), expanded the way json.cc writes them (compact, one line).
P2P_2_30 = (
    '{"header":{"id":"0x7f8c496ae9f661","comm_name":"unknown","rank":2,"n_ranks":8,"nnodes":1},'
    '"metadata":{"inspector_output_format_version":"v4.0","git_rev":"","rec_mechanism":"nccl_profiler_interface",'
    '"dump_timestamp_us":1748030377748202,"hostname":"example-hostname","pid":1639453},'
    '"p2p_perf":{"p2p":"Send","p2p_sn":12,"p2p_peer":3,"p2p_msg_size_bytes":524288,"p2p_exec_time_us":50,'
    '"p2p_timing_source":"kernel_gpu","p2p_algobw_gbs":"nan","p2p_busbw_gbs":10.485760}}'
)


def write_lines(path: Path, *objs) -> None:
    with open(path, "a") as f:
        for o in objs:
            f.write((o if isinstance(o, str) else json.dumps(o, separators=(",", ":"))) + "\n")


def test_default_form_has_no_start_time_and_verbose_form_has_one(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    write_lines(d / "h-pid1.log", DEFAULT_FORM, VERBOSE_FORM)
    s = InspectorSampler(d)
    s.probe()
    rows = {r["coll_sn"]: r for r in s.sample(0)["nccl_collectives"]}
    assert rows[1407]["start_ts"] is None  # NCCL_INSPECTOR_DUMP_VERBOSE unset: nothing to read it from
    assert rows[1231]["start_ts"].isoformat() == "2025-07-18T19:33:49.235059"
    assert s.records_skipped == 0


def test_p2p_record_of_nccl_2_30(tmp_path):
    path = tmp_path / "h-pid1.log"
    write_lines(path, P2P_2_30)
    s = InspectorSampler(path)  # one dump file instead of a directory
    s.probe()
    (row,) = s.sample(0)["nccl_collectives"]
    assert (row["kind"], row["coll"], row["coll_sn"], row["peer"], row["comm_name"]) == (
        "p2p",
        "Send",
        12,
        3,
        "unknown",
    )
    assert row["algobw_gbs"] is None and row["busbw_gbs"] == 10.48576  # NCCL writes NaN as "nan"


def test_dump_dir_that_appears_after_the_agent_started(tmp_path):
    """Under the default startup policy the sampler keeps running and reads the directory once it exists."""
    d = tmp_path / "later" / "nccl-inspector-unknown-jobid"
    s = InspectorSampler(d, start_at_end=True)
    scheduled = ScheduledSampler(s, 1.0, StartupPolicy.IGNORE)
    assert scheduled.probe() and scheduled.state == "running"
    assert s.sample(0) == {}
    d.mkdir(parents=True)
    write_lines(
        d / "h-pid1.log", DEFAULT_FORM
    )  # written by the job before the next tick: read from its start
    assert [r["coll_sn"] for r in s.sample(1)["nccl_collectives"]] == [1407]
    write_lines(d / "h-pid1.log", VERBOSE_FORM)
    assert [r["coll_sn"] for r in s.sample(2)["nccl_collectives"]] == [1231]


def test_start_at_end_skips_only_what_was_there_at_start(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    write_lines(d / "old.log", DEFAULT_FORM)
    s = InspectorSampler(d, start_at_end=True)
    s.probe()
    assert s.sample(0)["nccl_collectives"] == []
    write_lines(d / "old.log", VERBOSE_FORM)
    assert [r["coll_sn"] for r in s.sample(1)["nccl_collectives"]] == [1231]


def test_no_dump_dir_configured_is_unavailable():
    scheduled = ScheduledSampler(InspectorSampler(None), 1.0, StartupPolicy.IGNORE)
    assert not scheduled.probe() and scheduled.state == "unavailable"


def test_lines_that_are_not_records_are_counted_by_reason(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    write_lines(
        d / "h-pid1.log",
        "this is not json",
        '{"header": {"id": "0x1"}, "metadata": {}}',  # an object, but no coll_perf/p2p_perf
        "{",  # a pretty-printed object its writer never finished ...
        '  "header": {',
        DEFAULT_FORM,  # ... abandoned when the next object starts
    )
    # NCCL_INSPECTOR_PROM_DUMP=1 output pointed at by mistake (inspector_prom.cc:456-458)
    (d / "nccl_inspector_metrics_GPU0.prom").write_text(
        'nccl_bus_bandwidth_gbs{version="v5.1",node="n1",gpu="GPU0"} 678.263\n'
    )
    s = InspectorSampler(d)
    s.probe()
    assert [r["coll_sn"] for r in s.sample(0)["nccl_collectives"]] == [1407]
    assert s.skipped_by_reason == {
        "not_json": 1,
        "not_an_inspector_record": 1,
        "torn_object": 1,
        "prometheus_textfile": 1,
    }
    assert s.records_skipped == 4
