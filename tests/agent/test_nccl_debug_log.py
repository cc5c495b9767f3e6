"""nccl_debug_log on real NCCL_DEBUG=INFO lines: prefixes, init forms, transports, direction, split comms.

Lines marked "real" are copied from the conformance corpus (tests/conformance/nccl_debug_log/, sources
in each SOURCE.md). Lines marked "derived" expand a format string of NCCL's source at the tag, file
and line named next to them, for forms no public log in the corpus shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from c4.agent import cli as agent_cli
from c4.agent.nccl_debug_log import DebugLogParser, DebugLogSampler
from c4.agent.nccl_log_line import read_line

CORPUS = Path(__file__).resolve().parents[1] / "conformance" / "nccl_debug_log"

# real: issue1605-split-ibext
SPLIT_CONN = (
    "myhost:2261199:2261301 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [receive] via NET/IBext_v8/0/GDRDMA"
)


def rows_of(lines: list[str]) -> tuple[list[dict], DebugLogParser]:
    """All rows of some lines, waiting lines flushed at the end (as at the end of a file)."""
    p = DebugLogParser()
    rows = [r for line in lines for r in p.parse(line)]
    return rows + p.flush(), p


@pytest.mark.parametrize(
    "prefix",
    [
        "",  # none
        "[1,3]<stdout>:",  # mpirun --tag-output (real form: k8stester454-mpirun-2.18)
        "3: ",  # srun --label (documented form "<task>: ")
        "[rank3]:",  # torchrun --tee / --redirects
        "[default3]:",  # torchrun's local-worker tag
        "rdma-gpu-train-worker-0: ",  # pdsh / DeepSpeed (real form: issue1029-pdsh-ibext)
        "[3] ",  # per-rank bracket (real form: issue690-rankbracket-socket)
        "  | 2024-12-04T05:27:48.128Z | ",  # CloudWatch export (real form: ofi715-cloudwatch-ts-efa)
        "2024-12-04T05:27:48.128456789Z stdout F ",  # Kubernetes CRI log
        "[2025-12-28 16:04:25] ",  # NCCL_DEBUG_TIMESTAMP_FORMAT default (v2.26.2-1:src/debug.cc)
        "Dec  4 05:27:48 node7 python[18059]: ",  # syslog
        "2024-12-04 05:27:48,128 [1,3]<stdout>:",  # a timestamp in front of a launcher tag
    ],
)
def test_every_launcher_prefix_reads_the_same_line(prefix):
    rows, p = rows_of([prefix + SPLIT_CONN])
    assert [(r["rank"], r["peer_rank"], r["direction"], r["nic_index"], r["hostname"]) for r in rows] == [
        (0, 1, "recv", 0, "myhost")
    ]
    assert p.records_skipped == 0


# fmt: off
INIT_FORMS = [
    # real, NCCL <= 2.15 (issue629-old-init)
    ("A03-R28-I49-3-9000018:193027:193119 [7] NCCL INFO comm 0x7fdf08000d00 rank 15 nranks 16 cudaDev 7 busId e7000 - Init COMPLETE",
     {"rank": 15, "n_ranks": 16, "cuda_dev": 7, "nvml_dev": None, "bus_id": "e7000", "comm_id": "0x7fdf08000d00"}),
    # derived, 2.16/2.17: v2.16.5-1:src/init.cc:1109
    ("h:1:2 [2] NCCL INFO comm 0x55e0 rank 2 nranks 16 cudaDev 2 busId 201c0 commId 0x1a2b3c4d5e6f7081 - Init COMPLETE",
     {"rank": 2, "n_ranks": 16, "cuda_dev": 2, "nvml_dev": None, "bus_id": "201c0", "comm_id": "0x1a2b3c4d5e6f7081"}),
    # real, 2.18-2.20 (k8stester454-mpirun-2.18)
    ("[1,22]<stdout>:bert-mpi-training-worker-2:27:568 [6] NCCL INFO comm 0x5648da365f80 rank 22 nranks 32 cudaDev 6 nvmlDev 6 busId 1d0 commId 0x837dd0976e1b4338 - Init START",
     {"rank": 22, "n_ranks": 32, "cuda_dev": 6, "nvml_dev": 6, "bus_id": "1d0", "comm_id": "0x837dd0976e1b4338"}),
    # real, 2.21/2.22 (issue1412-ib-2.21)
    ("swat1-04:2017630:2017675 [6] NCCL INFO ncclCommInitRank comm 0x8ec0ac0 rank 6 nranks 16 cudaDev 6 nvmlDev 6 busId c8000 commId 0x49bbd7790311d5eb - Init COMPLETE",
     {"rank": 6, "n_ranks": 16, "cuda_dev": 6, "nvml_dev": 6, "bus_id": "c8000", "comm_id": "0x49bbd7790311d5eb"}),
    # real, 2.23+ any call (eks-socket-split-2.27)
    ("llama-3-8b-node-0-0:152:386 [0] NCCL INFO ncclCommInitRankConfig comm 0x562b2c1973d0 rank 0 nranks 4 cudaDev 0 nvmlDev 0 busId 36000 commId 0xbc42413ad5ab3a45 - Init START",
     {"rank": 0, "n_ranks": 4, "cuda_dev": 0, "nvml_dev": 0, "bus_id": "36000", "comm_id": "0xbc42413ad5ab3a45"}),
    # derived, 2.29+: "[Rank %d] %s comm %p ..." v2.29.7-1:src/init.cc:1699, funcName ncclCommInitRankScalable
    ("h:1:2 [3] NCCL INFO [Rank 3] ncclCommInitRankScalable comm 0x7f00 rank 3 nranks 8 cudaDev 3 nvmlDev 5 busId 9b000 commId 0xfeed - Init START",
     {"rank": 3, "n_ranks": 8, "cuda_dev": 3, "nvml_dev": 5, "bus_id": "9b000", "comm_id": "0xfeed"}),
    # derived, ncclCommInitAll through the same line (v2.30.7-1:src/init.cc:1945, funcName = __func__ at 2631)
    ("h:1:2 [1] NCCL INFO ncclCommInitAll comm 0x7f10 rank 1 nranks 2 cudaDev 1 nvmlDev 1 busId 2000 commId 0xbeef - Init COMPLETE",
     {"rank": 1, "n_ranks": 2, "cuda_dev": 1, "nvml_dev": 1, "bus_id": "2000", "comm_id": "0xbeef"}),
]
# fmt: on


@pytest.mark.parametrize(("line", "want"), INIT_FORMS)
def test_init_line_of_every_release_gives_the_rank_identity(line, want):
    rows, p = rows_of([line])
    assert len(rows) == 1 and rows[0]["kind"] == "init"
    assert {k: rows[0][k] for k in want} == want
    assert p.records_skipped == 0


def test_start_and_complete_of_one_comm_are_one_init_row():
    lines = (CORPUS / "eks-socket-split-2.27" / "nccl.log").read_text().splitlines()
    rows, _ = rows_of(lines)
    inits = [(r["comm_id"], r["rank"]) for r in rows if r["kind"] == "init"]
    assert inits == [("0xbc42413ad5ab3a45", 0), ("0xbc42413ad5ab3a45/1/2003953581", 0)]


def test_old_format_topology_waits_for_its_init_complete():
    # derived from v2.9.9-1: src/graph/rings.cc:35 (ring, rank 0 only), src/init.cc:724 (Trees),
    # src/transport/net.cc:120 (send), src/transport/p2p.cc:172 (P2P/IPC), src/init.cc:870 (Init COMPLETE)
    lines = [
        "n1:10:11 [0] NCCL INFO Channel 00/02 :    0   1   2   3",
        "n1:10:11 [0] NCCL INFO Trees [0] 1/-1/-1->0->-1 [1] -1/-1/-1->0->1",
        "n1:10:11 [0] NCCL INFO Channel 00 : 0[101c0] -> 1[101d0] via P2P/IPC",
        "n1:10:11 [0] NCCL INFO Channel 01 : 0[101c0] -> 3[a01d0] [send] via NET/IB/1/GDRDMA",
        "n1:10:11 [0] NCCL INFO comm 0x7f01 rank 0 nranks 4 cudaDev 0 busId 101c0 - Init COMPLETE",
    ]
    p = DebugLogParser()
    before = [r for line in lines[:-1] for r in p.parse(line)]
    assert before == [] and p.pending() == 4
    rows = p.parse(lines[-1])
    assert {r["comm_id"] for r in rows} == {"0x7f01"} and {r["n_ranks"] for r in rows} == {4}
    ring = {(r["rank"], r["peer_rank"]) for r in rows if r["kind"] == "ring"}
    assert ring == {(0, 1), (1, 2), (2, 3), (3, 0)}
    assert {(r["channel"], r["peer_rank"]) for r in rows if r["kind"] == "tree"} == {(0, None), (1, 1)}
    conn = {(r["rank"], r["peer_rank"], r["direction"], r["transport"]) for r in rows if r["kind"] == "conn"}
    assert conn == {(0, 1, "send", "P2P"), (0, 3, "send", "NET")}


def test_lines_still_waiting_at_end_of_file_are_flushed_by_the_sampler(tmp_path):
    f = tmp_path / "nccl.log"
    f.write_text(
        "n1:10:11 [0] NCCL INFO comm 0x7f01 rank 0 nranks 4 cudaDev 0 busId 101c0 - Init COMPLETE\n"
        "n1:10:12 [0] NCCL INFO Channel 01 : 0[101c0] -> 3[a01d0] [send] via NET/IB/1/GDRDMA\n"
    )
    s = DebugLogSampler(None, log_file=f)
    s.probe()
    rows = s.sample(0)["nccl_topology"]
    assert [(r["kind"], r["comm_id"]) for r in rows] == [("init", "0x7f01"), ("conn", "0x7f01")]


@pytest.mark.parametrize(
    ("line", "want"),
    [
        # real (issue527-efa-2.9.9): a plugin name with a space
        (
            "ip-10-216-178-255:416481:416522 [3] NCCL INFO Channel 03/0 : 19[201d0] -> 26[201c0] [send] via NET/AWS Libfabric/0/GDRDMA",
            (19, 26, "send", "NET", "AWS Libfabric", 0, True),
        ),
        # real (ofi715-cloudwatch-ts-efa): proxy rank and /Shared
        (
            "algo-1:18060:20786 [3] NCCL INFO Channel 04/1 : 3[3] -> 10[2] [send] via NET/AWS Libfabric/1(2)/GDRDMA/Shared",
            (3, 10, "send", "NET", "AWS Libfabric", 1, True),
        ),
        # real (eks-efa-split-2.27): aws-ofi-nccl >= 1.1x names itself Libfabric
        (
            "llama-3-8b-node-0-0:188:764 [0] NCCL INFO Channel 01/0 : 0[0] -> 2[0] [send] via NET/Libfabric/0/GDRDMA",
            (0, 2, "send", "NET", "Libfabric", 0, True),
        ),
        # real (issue690-rankbracket-socket): sockets, seen by the receiver
        (
            "node2:22555:22555 [0] NCCL INFO Channel 00/0 : 2[1] -> 1[0] [receive] via NET/Socket/0",
            (1, 2, "recv", "NET", "Socket", 0, False),
        ),
        # real (issue1412-ib-2.21): IB (also what RoCE ports print) without GDR
        (
            "swat1-04:2017630:2017700 [4] NCCL INFO Channel 03/0 : 13[5] -> 4[4] [receive] via NET/IB/3",
            (4, 13, "recv", "NET", "IB", 3, False),
        ),
        # derived: GDR over PCI, v2.30.7-1:src/transport/net.cc:324 ("/GDRDMA" then "(PCI)")
        (
            "h:1:2 [0] NCCL INFO Channel 02/0 : 0[0] -> 8[0] [send] via NET/IB/5/GDRDMA(PCI)",
            (0, 8, "send", "NET", "IB", 5, True),
        ),
    ],
)
def test_net_connection_keeps_nic_and_gdr(line, want):
    (row,), _ = rows_of([line])
    got = (row["rank"], row["peer_rank"], row["direction"], row["transport"], row["net_name"])
    assert got + (row["nic_index"], row["gdr"]) == want


@pytest.mark.parametrize(
    "line",
    [
        # real: issue527-efa-2.9.9 (2.9 form, bus ids), issue1412-ib-2.21, ofi715-cloudwatch-ts-efa,
        # issue690-rankbracket-socket; all printed by the sender (p2p.cc p2pSendSetup, shm.cc shmSendSetup)
        "ip-10-216-179-119:416601:416650 [0] NCCL INFO Channel 01 : 24[101c0] -> 31[a01d0] via P2P/IPC/read",
        "swat1-04:2017630:2017697 [7] NCCL INFO Channel 00/0 : 24[7] -> 31[6] via P2P/direct pointer/read",
        "algo-1:18063:18133 [6] NCCL INFO Channel 03/0 : 24[6] -> 31[5] via P2P/CUMEM/read",
        "node0:13572:13572 [1] NCCL INFO Channel 00 : 24[1] -> 31[0] via SHM/direct/direct",
    ],
)
def test_p2p_and_shm_lines_belong_to_the_sender(line):
    (row,), _ = rows_of([line])
    assert (row["rank"], row["peer_rank"], row["direction"]) == (24, 31, "send")
    assert row["transport"] in ("P2P", "SHM") and row["nic_index"] is None


def test_old_bus_id_and_new_device_forms_both_parse():
    old = "10-90-43-152:120890:121563 [3] NCCL INFO Channel 01 : 3[ca000] -> 2[c7000] [send] via NET/IB/2/GDRDMA"
    new = "llama-3-8b-node-0-0:152:510 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/Socket/0"
    rows, p = rows_of([old, new])
    assert [(r["rank"], r["peer_rank"], r["channel"]) for r in rows] == [(3, 2, 1), (0, 1, 0)]
    assert p.records_skipped == 0


def test_split_comm_lines_are_keyed_by_the_child_not_the_parent():
    lines = (CORPUS / "eks-efa-4proc-split-2.27" / "nccl.log").read_text().splitlines()
    rows, _ = rows_of(lines)
    split = "0x81dca7568efe26d7/1/1734919490"
    inits = {
        (r["hostname"], r["pid"], r["comm_id"], r["parent_comm_id"]) for r in rows if r["kind"] == "init"
    }
    assert ("llama-3-8b-node-0-0", 191, split, "0x81dca7568efe26d7") in inits
    members = {r["rank"] for r in rows if r["kind"] == "init" and r["comm_id"] == split}
    assert members == {0, 1, 2, 3}  # the four processes of the node agree on the split's id
    # the split's rings (printed by rank 0 in the split's init thread) belong to the split
    assert {r["comm_id"] for r in rows if r["kind"] == "ring" and r["tid"] == 1160} == {split}


def test_runtime_connections_of_two_comms_of_one_rank_go_to_both_comms():
    # real: eks-socket-split-2.27. NCCL >= 2.22 connects rings/trees lazily, in one thread per comm
    # (v2.27.3-1:src/group.cc:135 ncclCollPreconnectFunc, job->comm) and only once per comm
    # (v2.27.3-1:src/enqueue.cc:462 initAlgoChannels): the parent and the split, both rank 0 here, each
    # print the same ring connections, from two threads that printed no init line.
    lines = (CORPUS / "eks-socket-split-2.27" / "nccl.log").read_text().splitlines()
    rows, _ = rows_of(lines)
    parent, split = "0xbc42413ad5ab3a45", "0xbc42413ad5ab3a45/1/2003953581"
    conn = [r for r in rows if r["kind"] == "conn"]
    by_thread = {}
    for r in conn:
        by_thread.setdefault(r["tid"], set()).add(r["comm_id"])
    assert all(len(ids) == 1 for ids in by_thread.values())  # one preconnect thread, one comm
    assert {next(iter(by_thread[t])) for t in (510, 512)} == {parent, split}  # the two ring sets
    assert {next(iter(by_thread[t])) for t in (529, 532)} == {parent, split}  # the two tree sets
    for comm_id in (parent, split):  # each comm holds each of its connections once
        keys = [(r["channel"], r["peer_rank"], r["direction"]) for r in conn if r["comm_id"] == comm_id]
        assert sorted(keys) == sorted(set(keys)) and len(keys) == 7


def test_a_preconnect_thread_keeps_one_comm_for_all_its_lines():
    # derived from the same formats (v2.27.3-1:src/transport/net.cc:218/264): thread 21's first line is
    # one the split already has, so thread 21 connects the parent; its second line, new to both comms,
    # stays with the parent (one preconnect job, one comm)
    lines = [
        "h:7:8 [0] NCCL INFO ncclCommInitRankConfig comm 0x5500 rank 0 nranks 4 cudaDev 0 nvmlDev 0 busId 36000 commId 0xabc - Init START",
        "h:7:9 [0] NCCL INFO ncclCommSplit comm 0x5600 rank 0 nranks 4 cudaDev 0 nvmlDev 0 busId 36000 parent 0x5500 splitCount 1 color 5 key 0- Init START",
        "h:7:20 [0] NCCL INFO Channel 00/0 : 3[0] -> 0[0] [receive] via NET/Socket/0",
        "h:7:21 [0] NCCL INFO Channel 00/0 : 3[0] -> 0[0] [receive] via NET/Socket/0",
        "h:7:21 [0] NCCL INFO Channel 00/0 : 0[0] -> 2[0] [send] via NET/Socket/0",
    ]
    rows, _ = rows_of(lines)
    conn = [(r["tid"], r["comm_id"]) for r in rows if r["kind"] == "conn"]
    assert conn == [(20, "0xabc/1/5"), (21, "0xabc"), (21, "0xabc")]
    # a tid reused by a later job (Linux recycles ids) that repeats a connection of its old comm is a new job
    rows, _ = rows_of([*lines, "h:7:21 [0] NCCL INFO Channel 00/0 : 0[0] -> 2[0] [send] via NET/Socket/0"])
    assert [r["comm_id"] for r in rows if r["kind"] == "conn"][-1] == "0xabc/1/5"


def _ring_line_2_23(nranks: int) -> str:
    """dumpLine of v2.23.4-1:src/graph/rings.cc: a 128-byte buffer, " %*d" per rank, "..." when cut."""
    width = len(str(nranks - 1))
    line = "Channel 00/02 :" + "".join(f" {r:>{width}}" for r in range(nranks))
    return line if len(line) <= 127 else line[:124] + "..."


def test_a_ring_cut_at_20_ranks_before_2_23_does_not_close_on_rank_0():
    # derived: v2.22.3-1:src/graph/rings.cc dumpLine prints at most MAXWIDTH (20) ranks, " %3d" each, no mark
    lines = [
        "h:7:8 [0] NCCL INFO ncclCommInitRank comm 0x5500 rank 0 nranks 32 cudaDev 0 nvmlDev 0 busId 7000 commId 0xabc - Init START",
        "h:7:8 [0] NCCL INFO Channel 00/02 : " + "".join(f" {r:3d}" for r in range(20)),
    ]
    rows, p = rows_of(lines)
    ring = [(r["rank"], r["peer_rank"]) for r in rows if r["kind"] == "ring"]
    assert ring == [(r, r + 1) for r in range(19)]  # rank 19's successor is past the cut, not rank 0
    assert {r["n_ranks"] for r in rows if r["kind"] == "ring"} == {32}
    assert p.records_skipped == 0


def test_a_ring_cut_with_dots_from_2_23_keeps_the_successors_it_shows():
    # derived: v2.23.4-1:src/graph/rings.cc dumpLine, 64 ranks: the line ends in "..." after rank 35
    line = _ring_line_2_23(64)
    assert line.endswith(" 34 35 ...")
    lines = [
        "h:7:8 [0] NCCL INFO ncclCommInitRankConfig comm 0x5500 rank 0 nranks 64 cudaDev 0 nvmlDev 0 busId 7000 commId 0xabc - Init START",
        "h:7:8 [0] NCCL INFO " + line,
        "h:7:9 [0] NCCL INFO ncclCommInitRankConfig comm 0x5600 rank 0 nranks 16 cudaDev 0 nvmlDev 0 busId 7000 commId 0xdef - Init START",
        "h:7:9 [0] NCCL INFO " + _ring_line_2_23(16),  # fits: closes on rank 0
    ]
    rows, p = rows_of(lines)
    ring = [(r["rank"], r["peer_rank"]) for r in rows if r["kind"] == "ring"]
    assert ring[:35] == [(r, r + 1) for r in range(35)]
    assert ring[35:] == [(r, (r + 1) % 16) for r in range(16)]
    assert p.records_skipped == 0


def test_split_with_commid_of_2_21_keeps_it():
    lines = (CORPUS / "issue1605-split-ibext" / "nccl.log").read_text().splitlines()
    rows, _ = rows_of(lines)
    assert {r["comm_id"] for r in rows} == {"0x5a16c3838ce6f1f8"}
    init = next(r for r in rows if r["kind"] == "init")
    assert (
        init["parent_comm_id"] == "myhost:2261199:0x5951213c0f90"
    )  # the parent's init is not in the excerpt


def test_shrunk_comm_is_named_after_its_parent():
    # derived: v2.28.3-1:src/init.cc:1516/1548 (parent line), funcName "ncclCommShrink" (__func__, init.cc)
    lines = [
        "h:7:8 [1] NCCL INFO ncclCommInitRank comm 0x5500 rank 1 nranks 4 cudaDev 1 nvmlDev 1 busId 2000 commId 0xabc - Init START",
        "h:7:9 [1] NCCL INFO ncclCommShrink comm 0x5600 rank 1 nranks 3 cudaDev 1 nvmlDev 1 busId 2000 parent 0x5500 splitCount 0 color 0 key 1- Init START",
        "h:7:9 [1] NCCL INFO Channel 00/0 : 1[1] -> 2[2] via P2P/CUMEM",
    ]
    rows, _ = rows_of(lines)
    shrunk = [r for r in rows if r["tid"] == 9]
    assert {r["comm_id"] for r in shrunk} == {"0xabc/0/0"}
    assert {r["parent_comm_id"] for r in shrunk} == {"0xabc"}
    assert [r["n_ranks"] for r in shrunk if r["kind"] == "conn"] == [3]


def test_unparsable_lines_are_counted_per_reason_and_other_lines_are_not():
    lines = [
        "algo-1:18059:18146 [2] NCCL INFO NET/OFI Global registrations supported",  # real, not topology
        "2020-12-04 00:05:43.144250: I tensorflow/core/nccl/nccl_manager.cc:306] 3 $$$$$$$$$$$$$$1",  # real app line
        "h:1:2 [0] NCCL INFO comm 0x1 rank x nranks 4 cudaDev 0 busId 1 - Init COMPLETE",  # init, torn
        "h:1:2 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] [send] via NET/IB/x",  # conn, torn NIC
        "h:1:2 [0] NCCL INFO Channel 00/02 : zero one",  # ring, torn
        "h:1:2 [0] NCCL INFO Trees [0] broken",  # trees, torn
        "h:1:2:3 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/IPC",  # header torn by interleaving
    ]
    rows, p = rows_of(lines)
    assert rows == []
    assert dict(p.skipped_by_reason) == {"init": 1, "conn": 1, "ring": 1, "trees": 1, "header": 1}


def test_sampler_exposes_skips_per_reason(tmp_path):
    f = tmp_path / "x.log"
    f.write_text("h:1:2 [0] NCCL INFO Trees [0] broken\nh:1:2 [0] NCCL INFO Using network IB\n")
    s = DebugLogSampler(None, log_file=f)
    s.sample(0)
    assert s.records_skipped == 1 and s.skipped_by_reason == {"trees": 1}


def test_read_line_leaves_foreign_lines_alone():
    assert read_line("[default0]:libfabric:78:1775102137::core:core:cuda_gdrcopy_hmem_init():201") is None
    assert read_line("") is None


def test_nccl_log_flag_points_the_sampler_at_one_file(tmp_path):
    f = tmp_path / "nccl.log"
    f.write_text((CORPUS / "issue707-ib-busid-2.11" / "nccl.log").read_text())
    parser = argparse.ArgumentParser()
    agent_cli.configure(parser)
    args = parser.parse_args(["--test", "--samplers", "nccl_debug_log", "--nccl-log", str(f)])
    cfg = agent_cli.agent_config(args)
    assert cfg.samplers["nccl_debug_log"]["log_file"] == str(f)
    s = DebugLogSampler.from_options(DebugLogSampler.Options(log_file=f), None)
    s.probe()
    assert len(s.sample(0)["nccl_topology"]) == 12


def test_log_dir_and_log_file_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        DebugLogSampler.Options(log_dir=tmp_path, log_file=tmp_path / "x")


def test_a_live_directory_holds_old_format_lines_one_quiet_tick(tmp_path):
    # real lines (efa-eks-mpirun-2.9.9): a 2.9 rank's connection, its Init COMPLETE written a tick later
    conn = (
        "[1,1]<stdout>:nccl-tests-efa-16-worker-0:26:68 [1] NCCL INFO Channel 00 : 1[101d0] -> 8[101c0] "
        "[send] via NET/AWS Libfabric/1/GDRDMA\n"
    )
    done = (
        "[1,1]<stdout>:nccl-tests-efa-16-worker-0:26:68 [1] NCCL INFO comm 0x7fb6f8000f60 rank 1 nranks 16 "
        "cudaDev 1 busId 101d0 - Init COMPLETE\n"
    )
    d = tmp_path / "logs"
    d.mkdir()
    f = d / "rank1.log"
    f.write_text(conn)
    s = DebugLogSampler(d)
    assert s.sample(0)["nccl_topology"] == []  # read, waiting for its init line
    with f.open("a") as fh:
        fh.write(done)
    rows = s.sample(1)["nccl_topology"]
    assert [(r["kind"], r["comm_id"]) for r in rows] == [
        ("init", "0x7fb6f8000f60"),
        ("conn", "0x7fb6f8000f60"),
    ]
