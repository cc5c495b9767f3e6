"""NCCL RAS on NCCL's own report formats: JSON (2.28.7+), text (2.24+), over the socket and from a file."""

from __future__ import annotations

import json
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa

from c4.agent.nccl_ras import RasSampler, parse_report
from c4.agent.runner import ScheduledSampler
from c4.agent.sampler import StartupPolicy
from c4.catalogue import load

CORPUS = Path(__file__).resolve().parents[1] / "conformance" / "nccl_ras"
DOC_JSON = (CORPUS / "docs-2.29.1-json" / "ras.json").read_text()
ISSUE_TEXT = (CORPUS / "issue-1911-2.26.2-text" / "ras.txt").read_text()


def typed(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"node": "n", "job": "", **r} for r in rows], schema=load()["nccl_ras_status"].arrow_schema
    )


def by_rank(rows: list[dict]) -> dict[int, dict]:
    return {r["rank"]: r for r in rows if r["scope"] == "rank"}


class _Ras(socketserver.StreamRequestHandler):
    """A RAS server speaking NCCL's client protocol (src/ras/client_support.cc): JSON or, before 2.28.7, text only."""

    report = ""
    knows_json = True
    delay_s = 0.0  # RAS waiting for an unresponsive peer before it answers

    def handle(self) -> None:
        assert self.rfile.readline().startswith(b"CLIENT PROTOCOL")
        self.wfile.write(b"SERVER PROTOCOL 2\n")
        assert self.rfile.readline().startswith(b"TIMEOUT ")
        self.wfile.write(b"OK\n")
        cmd = self.rfile.readline().strip()
        if cmd.upper() == b"SET FORMAT JSON":
            # 2.24 .. 2.28.3 answer an unknown command with this line and keep the connection open
            self.wfile.write(b"OK\n" if self.knows_json else b"ERROR: Unknown command SET FORMAT json\n")
            cmd = self.rfile.readline().strip()
        assert cmd.upper() == b"VERBOSE STATUS"
        time.sleep(self.delay_s)
        self.wfile.write(self.report.encode())


def served(report: str, knows_json: bool = True, delay_s: float = 0.0, **opts) -> list[dict]:
    _Ras.report, _Ras.knows_json, _Ras.delay_s = report, knows_json, delay_s
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Ras) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        s = RasSampler(f"127.0.0.1:{srv.server_address[1]}", poll_every_ticks=1, **opts)
        rows = s.sample(0)["nccl_ras_status"]
        srv.shutdown()
    assert s.records_skipped == 0 and s.skipped_by_reason == {}
    return rows


def test_json_rank_rows_carry_status_count_and_gpu():
    """NCCL's documented JSON report: a rank's status is a word, not a dict; count and GPU are filled."""
    rows = served(DOC_JSON)
    ranks = by_rank(rows)
    assert ranks[0]["status"] == "RUNNING" and ranks[0]["coll_count"] == 0 and ranks[0]["gpu"] == 0
    assert ranks[0]["host"] == "172.16.64.245" and ranks[0]["pid"] == 1524344
    assert ranks[1]["status"] == "UNRESPONSIVE" and ranks[1]["gpu"] == 1  # the missing rank, placed
    comm = next(r for r in rows if r["scope"] == "communicator")
    assert (comm["comm_hash"], comm["missing_ranks"], comm["dead_ranks"]) == ("0xae94423cfbb2ef4a", "1", "")
    typed(rows)


def test_report_slower_than_the_connect_timeout_is_awaited():
    """RAS waits up to TIMEOUT seconds per leg for a hung peer (the documented INCOMPLETE report took 2.05 s)."""
    rows = served(DOC_JSON, delay_s=0.6, timeout_s=0.2, collect_timeout_s=1)
    assert by_rank(rows)[1]["status"] == "UNRESPONSIVE"


def test_json_considered_dead_makes_a_dead_rank():
    """The documented example with its missing rank 60 s later (considered_dead flipped to true)."""
    report = json.loads(DOC_JSON)
    report["communicators"][0]["missing_ranks"][0]["status"]["considered_dead"] = True
    rows = served(json.dumps(report))
    comm = next(r for r in rows if r["scope"] == "communicator")
    assert (comm["dead_ranks"], comm["n_dead"]) == ("1", 1)
    assert by_rank(rows)[1]["status"] == "DEAD"


def test_json_missing_rank_whose_process_answered_is_nocomm_not_missing():
    """NCCL's rule (rasClientRunComms): a responding process that is no member is NOCOMM, not INCOMPLETE."""
    report = json.loads(DOC_JSON)
    report["communicators"][0]["missing_ranks"][0]["status"]["unresponsive"] = False
    rows = served(json.dumps(report))
    comm = next(r for r in rows if r["scope"] == "communicator")
    assert (comm["missing_ranks"], comm["errors"], comm["status"]) == ("", "MISMATCH", "RUNNING")
    assert by_rank(rows)[1]["status"] == "NOCOMM"


def test_json_collective_counts_are_summed_per_rank():
    report = json.loads(DOC_JSON)
    rank = report["communicators"][0]["ranks"][0]
    rank["collective_counts"].update({"AllReduce": 1200, "AllGather": 30})
    rank["status"]["async_error"] = 6
    row = by_rank(served(json.dumps(report)))[0]
    assert row["coll_count"] == 1230 and row["errors"] == "async: Remote process error"


def test_json_of_nccl_2_28_without_its_missing_comma_is_read():
    """Derived from the format string at v2.28.7-1:src/ras/client_support.cc:1963 (``"nvml_dev": %d\\n``,
    no comma before the missing rank's ``"status"``; fixed in 2.29): the documented report in 2.28's form."""
    broken = DOC_JSON.replace('"nvml_dev": 1,\n', '"nvml_dev": 1\n')
    assert broken != DOC_JSON
    skipped: Counter = Counter()
    rows = parse_report(broken, skipped)
    assert not skipped and by_rank(rows)[1]["status"] == "UNRESPONSIVE"


def test_text_report_when_nccl_has_no_json():
    """NCCL 2.24 .. 2.28.3 refuse SET FORMAT json: the sampler reads the text report instead of nothing."""
    ranks = by_rank(served(ISSUE_TEXT, knows_json=False))
    assert {r: (v["coll_count"], v["gpu"], v["pid"]) for r, v in ranks.items()} == {
        12: (641, 4, 323032),
        13: (641, 5, 323033),
    }


def test_text_2_26_missing_rank_in_a_dead_process_is_dead():
    """Derived from the format strings at v2.26.2-1:src/ras/client_support.cc:1231-1232 (DEAD), 1249
    (Process line), 1272-1273 (INCOMPLETE block) and 1284 (Rank line), expanded for one dead process."""
    text = (
        "Errors\n======\n\n"
        "DEAD\n  1 job process is considered dead (unreachable via the RAS network)\n"
        "  Process 3487984 on node 172.16.64.213 managing GPU 5\n\n"
        "#0-0 (cf264af53edbe986) INCOMPLETE\n  Missing communicator data from 2 ranks\n"
        "  Rank 21 -- GPU 5 managed by process 3487984 on node 172.16.64.213\n"
        "  Rank 22 -- GPU 2 (NVML 6) managed by process 3487985 on node 172.16.64.213\n"
    )
    skipped: Counter = Counter()
    rows = parse_report(text, skipped)
    comm = next(r for r in rows if r["scope"] == "communicator")
    assert (comm["missing_ranks"], comm["dead_ranks"]) == ("21,22", "21") and not skipped
    ranks = by_rank(rows)
    assert (ranks[21]["status"], ranks[21]["gpu"]) == ("DEAD", 5)
    assert (ranks[22]["status"], ranks[22]["gpu"]) == ("UNRESPONSIVE", 6)  # the NVML index, not CUDA's


def test_unreadable_parts_are_counted_by_reason():
    skipped: Counter = Counter()
    assert parse_report('{"communicators": [', skipped) == []
    report = json.loads(DOC_JSON)
    report["communicators"].append({"size": 3})  # no hash
    report["communicators"][0]["ranks"].append({"rank": "x"})
    parse_report(json.dumps(report), skipped)
    parse_report("#0-0 (abc) MISMATCH\n  something NCCL never printed\n", skipped)
    assert skipped == {
        "report_not_json": 1,
        "communicator_unreadable": 1,
        "rank_unreadable": 1,
        "text_line_unknown": 1,
    }


def test_report_file_that_appears_later_is_read_and_reread(tmp_path):
    """A report file (ncclras output) is waited for, read when it appears and again when it changes."""
    path = tmp_path / "ras" / "status.json"
    s = RasSampler(path=path, poll_every_ticks=1)
    scheduled = ScheduledSampler(s, 1.0, StartupPolicy.IGNORE)  # the default startup policy
    assert scheduled.probe() and scheduled.state == "running"  # an absent file is not a reason to stop
    assert s.sample(0) == {}
    path.parent.mkdir()
    path.write_text(DOC_JSON)
    assert len(s.sample(1)["nccl_ras_status"]) == 3
    assert s.sample(2) == {}  # unchanged: not read again
    path.write_text(ISSUE_TEXT)
    assert {r["rank"] for r in s.sample(3)["nccl_ras_status"]} == {None, 12, 13}


def test_agent_test_reads_a_ras_file_and_an_inspector_dump_in_one_command():
    """`c4 agent --test --samplers nccl_ras,nccl_inspector --nccl-ras FILE --nccl-inspector FILE`."""
    inspector = CORPUS.parent / "nccl_inspector" / "readme-verbose-v4.0" / "example-hostname-pid438776.log"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "c4.cli",
            "agent",
            "--test",
            "--samplers",
            "nccl_ras,nccl_inspector",
            "--nccl-ras",
            str(CORPUS / "issue-1911-2.26.2-text" / "ras.txt"),
            "--nccl-inspector",
            str(inspector),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "### table nccl_ras_status (3 rows)" in out.stdout and "coll_count=641" in out.stdout
    assert "### table nccl_collectives (1 rows)" in out.stdout and "coll_sn=1231" in out.stdout


def test_text_error_block_names_the_ranks_and_their_errors():
    """Derived from the format strings at v2.30.7-1:src/ras/client_support.cc:1394 (ERROR block), 1400 and 1409
    (error counts) and 1697, 1704, 1708 (rasClientBreakDownErrors), expanded for 3 ranks with errors."""
    text = (
        "#1-0 (00c0ffee00c0ffee) ERROR\n"
        "  Initialization error on 1 rank\n"
        "  Rank 5 reported Internal error -- GPU 5 managed by process 4105 on node 10.0.0.2\n"
        "  Asynchronous errors on 2 ranks\n"
        "  2 ranks reported Remote process error\n"
        "  Rank 8 -- GPU 0 managed by process 4208 on node 10.0.0.3\n"
        "  Rank 9 -- GPU 1 managed by process 4209 on node 10.0.0.3\n"
    )
    skipped: Counter = Counter()
    ranks = by_rank(parse_report(text, skipped))
    assert not skipped
    assert {r: (v["errors"], v["host"], v["gpu"]) for r, v in ranks.items()} == {
        5: ("init: Internal error", "10.0.0.2", 5),
        8: ("async: Remote process error", "10.0.0.3", 0),
        9: ("async: Remote process error", "10.0.0.3", 1),
    }
    assert {r["comm_hash"] for r in ranks.values()} == {"0xc0ffee00c0ffee"}
