"""The rank_identity view: which GPU each rank of each communicator runs on, from NCCL and NVML."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from c4.agent.nccl_debug_log import DebugLogParser
from c4.agent.nvml import normalize_bus_id
from c4.catalogue import load
from c4.collector.store import Store

T0 = datetime(2026, 1, 1)
CATALOGUE = load()

#: Init lines of NCCL 2.26.5 from NVIDIA/nccl-tests#321 (two H20 hosts, two GPUs each): CUDA numbers the
#: GPUs in the other order than NVML, so rank 0 runs on NVML GPU 1 (busId 33000), not GPU 0.
REMAPPED = """\
vm-host40:34002:34044 [1] NCCL INFO ncclCommInitRank comm 0x2725f60 rank 1 nranks 4 cudaDev 1 nvmlDev 0 busId 23000 commId 0x5bfdf821d2742f21 - Init START
vm-host40:34001:34043 [0] NCCL INFO ncclCommInitRank comm 0x3a73f80 rank 0 nranks 4 cudaDev 0 nvmlDev 1 busId 33000 commId 0x5bfdf821d2742f21 - Init START
vm-host38:33958:33999 [1] NCCL INFO ncclCommInitRank comm 0x1faf350 rank 3 nranks 4 cudaDev 1 nvmlDev 0 busId 23000 commId 0x5bfdf821d2742f21 - Init START
vm-host38:33957:34000 [0] NCCL INFO ncclCommInitRank comm 0x1fa2830 rank 2 nranks 4 cudaDev 0 nvmlDev 1 busId 33000 commId 0x5bfdf821d2742f21 - Init START
"""
#: Init lines of an NCCL without nvmlDev (NVIDIA/nccl#629): only the busId tells the GPU.
NO_NVMLDEV = """\
A03-R28-I49-3-9000018:193027:193119 [7] NCCL INFO comm 0x7fdf08000d00 rank 15 nranks 16 cudaDev 7 busId e7000 - Init COMPLETE
A03-R28-I49-3-9000018:193027:193112 [0] NCCL INFO comm 0x7fdf24000d00 rank 8 nranks 16 cudaDev 0 busId 25000 - Init COMPLETE
"""


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "c4.duckdb", CATALOGUE)
    yield s
    s.close()


def insert(store: Store, table: str, rows: list[dict]) -> None:
    """Rows into a table through Arrow, every other column NULL."""
    rows = [{"ts": T0, "job": "", **r} for r in rows]
    data = pa.Table.from_pylist(rows, schema=CATALOGUE[table].arrow_schema)
    store.con.register("_rows", data)
    store.con.execute(f'INSERT INTO "{table}" SELECT * FROM _rows')
    store.con.unregister("_rows")


def init_rows(text: str, node_of=lambda host: host) -> list[dict]:
    """What the NCCL debug log sampler reads from the lines, as its agent on each host would store them."""
    parser = DebugLogParser()
    return [{"node": node_of(r["hostname"]), **r} for line in text.splitlines() for r in parser.parse(line)]


def gpus(node: str, buses: list[str], ts: datetime = T0) -> list[dict]:
    """gpu_samples rows: NVML index i has PCI address buses[i] (as the facade normalizes NVML's busId)."""
    return [
        {
            "ts": ts,
            "node": node,
            "gpu_index": i,
            "gpu_uuid": f"GPU-{node}-{i}",
            "pci_bus_id": normalize_bus_id(b),
        }
        for i, b in enumerate(buses)
    ]


def identity(store: Store) -> dict[tuple[str, int], tuple]:
    rows = store.con.execute(
        "SELECT comm_id, rank, node, pid, gpu_index, gpu_from, pci_bus_id, gpu_uuid FROM rank_identity"
    ).fetchall()
    return {(r[0], r[1]): r[2:] for r in rows}


def test_rank_runs_on_the_gpu_its_bus_id_names_not_rank_mod_8(store):
    insert(store, "nccl_topology", init_rows(REMAPPED))
    for host in ("vm-host40", "vm-host38"):
        insert(store, "gpu_samples", gpus(host, ["00000000:23:00.0", "00000000:33:00.0"]))
    got = identity(store)
    comm = "0x5bfdf821d2742f21"
    assert got[(comm, 0)] == ("vm-host40", 34001, 1, "bus_id", "0000:33:00.0", "GPU-vm-host40-1")
    assert got[(comm, 1)][:4] == ("vm-host40", 34002, 0, "bus_id")
    assert got[(comm, 2)][:4] == ("vm-host38", 33957, 1, "bus_id")  # rank 2 % 8 = 2: a GPU the host lacks
    assert got[(comm, 3)][:4] == ("vm-host38", 33958, 0, "bus_id")


def test_nvml_dev_names_the_gpu_when_nvml_has_not_reported(store):
    insert(store, "nccl_topology", init_rows(REMAPPED))
    got = identity(store)
    assert got[("0x5bfdf821d2742f21", 0)][2:4] == (1, "nvml_dev")
    assert got[("0x5bfdf821d2742f21", 0)][4] == "0000:33:00.0"  # from NCCL's busId alone


def test_without_nvml_dev_the_bus_id_alone_places_the_rank(store):
    host = "A03-R28-I49-3-9000018"
    # the values of the two lines, as nccl_topology holds them (this parser reads only ncclCommInitRank lines)
    line = {"node": host, "hostname": host, "kind": "init", "n_ranks": 16, "pid": 193027}
    insert(
        store,
        "nccl_topology",
        [
            {**line, "comm_id": "0x7fdf08000d00", "rank": 15, "cuda_dev": 7, "bus_id": "e7000"},
            {**line, "comm_id": "0x7fdf24000d00", "rank": 8, "cuda_dev": 0, "bus_id": "25000"},
        ],
    )
    buses = ["0000:25:00.0", "0000:2b:00.0", "0000:64:00.0", "0000:69:00.0"]
    buses += ["0000:a2:00.0", "0000:a7:00.0", "0000:e1:00.0", "0000:e7:00.0"]
    insert(store, "gpu_samples", gpus(host, buses))
    got = identity(store)
    assert got[("0x7fdf08000d00", 15)][2:5] == (7, "bus_id", "0000:e7:00.0")
    assert got[("0x7fdf24000d00", 8)][2:5] == (0, "bus_id", "0000:25:00.0")


def _nccl_busid(pci: str) -> str:
    """NCCL's busIdToInt64 then %lx (src/misc/utils.cc): the address's hex digits as one number."""
    return f"{int(''.join(c for c in pci if c not in ':.'), 16):x}"


@pytest.mark.parametrize(
    "nvml_bus",
    ["00000000:20:1C.0", "00000000:04:00.0", "00000000:E7:00.0", "00000001:00:00.0", "00010000:C1:00.1"],
)
def test_nccl_short_bus_id_matches_nvml_long_form(store, nvml_bus):
    short = _nccl_busid(nvml_bus)
    insert(
        store,
        "nccl_topology",
        [{"node": "h", "kind": "init", "comm_id": "0x1", "rank": 0, "n_ranks": 1, "bus_id": short, "pid": 7}],
    )
    insert(store, "gpu_samples", gpus("h", ["00000000:01:00.0", nvml_bus]))
    (row,) = identity(store).values()
    assert row[2:5] == (1, "bus_id", normalize_bus_id(nvml_bus)), short


def test_ranks_without_init_lines_take_their_process_gpu(store):
    """A split communicator logs no commId; its Inspector records name the process, whose init line names the GPU."""
    insert(store, "nccl_topology", init_rows(REMAPPED))
    insert(store, "gpu_samples", gpus("vm-host40", ["0000:23:00.0", "0000:33:00.0"]))
    sub = {"comm_id": "0xdpgroup", "n_ranks": 2, "kind": "coll", "node": "vm-host40", "hostname": "vm-host40"}
    insert(store, "nccl_collectives", [{**sub, "rank": 1, "pid": 34001}, {**sub, "rank": 0, "pid": 34002}])
    got = identity(store)
    assert got[("0xdpgroup", 1)][2:4] == (1, "process_init")
    assert got[("0xdpgroup", 0)][2:4] == (0, "process_init")


def test_nvml_process_list_places_ranks_without_any_nccl_log(store):
    """NCCL_DEBUG off: Inspector's pid and NVML's compute processes; a stray context on GPU 0 does not count."""
    sub = {"comm_id": "0xc", "n_ranks": 16, "kind": "coll", "node": "n1", "hostname": "n1"}
    insert(store, "nccl_collectives", [{**sub, "rank": 8, "pid": 501}, {**sub, "rank": 9, "pid": 502}])
    insert(store, "gpu_samples", gpus("n1", ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0"]))
    procs = [
        (0, 501, 500 << 20),
        (2, 501, 70 << 30),
        (0, 502, 500 << 20),
        (1, 502, 71 << 30),
        (0, 777, 1 << 30),
    ]
    insert(
        store,
        "gpu_processes",
        [{"node": "n1", "gpu_index": g, "pid": p, "used_memory_bytes": m} for g, p, m in procs],
    )
    got = identity(store)
    assert got[("0xc", 8)][2:4] == (2, "nvml_process") and got[("0xc", 8)][4] == "0000:3a:00.0"
    assert got[("0xc", 9)][2:4] == (1, "nvml_process")


def test_unknown_gpu_is_null_and_newest_init_wins(store):
    sub = {"comm_id": "0xc", "n_ranks": 16, "kind": "coll", "node": "n1", "hostname": "n1", "pid": 9}
    insert(store, "nccl_collectives", [{**sub, "rank": 3}])
    old = {"node": "n2", "kind": "init", "comm_id": "0xd", "rank": 0, "n_ranks": 2, "pid": 1, "nvml_dev": 5}
    insert(store, "nccl_topology", [old, {**old, "ts": T0 + timedelta(seconds=60), "nvml_dev": 6}])
    got = identity(store)
    assert got[("0xc", 3)][2:4] == (None, None)
    assert got[("0xd", 0)][2:4] == (6, "nvml_dev")


def test_twin_with_a_remapped_node_is_placed_right_end_to_end(store, tmp_path):
    """The twin's host1 runs CUDA_VISIBLE_DEVICES=7,...,0: its init lines, NVML and Inspector agree on it."""
    from testkit.twin import frames, run_twin

    order = [7, 6, 5, 4, 3, 2, 1, 0]
    twin, rows = run_twin(tmp_path / "twin", [], steps=3, nodes=2, cuda_visible_devices={"host1": order})
    for table, df in frames(
        rows, ["nccl_topology", "gpu_samples", "gpu_processes", "nccl_collectives"]
    ).items():
        assert df.height, table
        store.con.register("_rows", df.to_arrow())
        store.con.execute(f'INSERT INTO "{table}" SELECT * FROM _rows')
        store.con.unregister("_rows")
    got = store.con.execute(
        "SELECT node, rank, gpu_index, gpu_from, cuda_dev, nvml_dev, pci_bus_id, pid FROM rank_identity"
    ).fetchall()
    assert len(got) == 16
    nvml = {(r["node"], r["gpu_index"]): r["pci_bus_id"] for r in rows["gpu_samples"]}
    procs = {(r["node"], r["pid"]): r["gpu_index"] for r in rows["gpu_processes"]}
    for node, rank, gpu, src, cuda_dev, nvml_dev, bus, pid in got:
        local = rank % 8
        want = order[local] if node == "host1" else local
        assert (gpu, src, nvml_dev, cuda_dev) == (want, "bus_id", want, local), (node, rank)
        assert bus == nvml[(node, want)] and procs[(node, pid)] == want
    inspected = {(r["node"], r["rank"], r["pid"]) for r in rows["nccl_collectives"]}
    assert ("host1", 8, twin.pid_of("host1", 0)) in inspected  # rank 8 is local rank 0, on GPU 7


def test_twin_refuses_a_cuda_order_that_is_not_its_gpus():
    from c4.sim.twin import ClusterTwin

    with pytest.raises(ValueError, match="cuda_visible_devices"):
        ClusterTwin(nodes=2, leaves=1, spines=1, cuda_visible_devices={"host1": [0, 1]})
    with pytest.raises(ValueError, match="host9"):
        ClusterTwin(nodes=2, leaves=1, spines=1, cuda_visible_devices={"host9": list(range(8))})


def test_a_node_whose_clock_runs_ahead_hides_no_other_nodes_gpus(store):
    """Rows up to the skew ahead of the clock are accepted; the newest 2 minutes end at the clock, not at them."""
    now = datetime.now(UTC).replace(tzinfo=None)
    line = {"ts": now, "kind": "init", "comm_id": "0xc", "n_ranks": 16, "bus_id": "2a000"}
    insert(
        store,
        "nccl_topology",
        [{**line, "node": "n1", "rank": 0, "pid": 1}, {**line, "node": "n2", "rank": 8}],
    )
    insert(store, "gpu_samples", gpus("n1", ["0000:18:00.0", "0000:2a:00.0"], now - timedelta(seconds=10)))
    insert(store, "gpu_samples", gpus("n2", ["0000:18:00.0", "0000:2a:00.0"], now + timedelta(seconds=290)))
    got = identity(store)
    assert got[("0xc", 0)][2:4] == (1, "bus_id") and got[("0xc", 8)][2:4] == (1, "bus_id")
