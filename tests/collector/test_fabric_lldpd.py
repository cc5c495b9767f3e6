"""Debian's real lldpd in network namespaces joined by veth cables: the agent's lldp sampler reads each
namespace's lldpd, the rows go into a real store, and the collector's fabric_topology equals the wiring
the test built; a miswired cable is then flagged. Needs root, iproute2 and lldpd (``make sysdeps``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from c4.agent.batcher import convert_rows, utc_from_ns
from c4.agent.lldp_json import neighbor_rows
from c4.agent.registry import SamplerContext, build_sampler
from c4.catalogue import load
from c4.collector.fabric import discover, pass_rows
from c4.collector.store import PendingBatch, Store
from c4.traffic.spec import from_spec

CATALOGUE = load()
HOSTS = ("h0", "h1", "h2")
LEAVES = ("leaf0", "leaf1")
SPINE = "spine0"
#: How long lldpd may take to see every neighbour (it sends every second here).
SETTLE_S = 60.0
#: Rail-optimized: every host's eth0 on leaf0 and eth1 on leaf1 (host i on port swp<i+1>); swp4 up to the spine.
WIRING = {
    ((h, f"eth{r}"), (leaf, f"swp{i + 1}")) for i, h in enumerate(HOSTS) for r, leaf in enumerate(LEAVES)
} | {
    (("leaf0", "swp4"), (SPINE, "swp1")),
    (("leaf1", "swp4"), (SPINE, "swp2")),
}


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


class NamespaceFabric:
    """Namespaces as systems, veth pairs as cables, one lldpd per namespace on its own control socket."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.prefix = f"c4f{os.getpid() % 100000}-"
        self.systems: list[str] = []
        self.procs: dict[str, subprocess.Popen] = {}

    def ns(self, system: str) -> str:
        """The namespace of a system."""
        return self.prefix + system

    def sock(self, system: str) -> str:
        """Its lldpd control socket."""
        return str(self.dir / f"{system}.sock")

    def add(self, system: str) -> None:
        """A namespace for the system, loopback up."""
        _run("ip", "netns", "add", self.ns(system))
        self.systems.append(system)
        _run("ip", "-n", self.ns(system), "link", "set", "lo", "up")

    def cable(self, a: tuple[str, str], b: tuple[str, str]) -> None:
        """A veth pair from a's port to b's port, both up."""
        _run(
            "ip",
            "-n",
            self.ns(a[0]),
            "link",
            "add",
            a[1],
            "type",
            "veth",
            "peer",
            "name",
            b[1],
            "netns",
            self.ns(b[0]),
        )
        _run("ip", "-n", self.ns(a[0]), "link", "set", a[1], "up")
        _run("ip", "-n", self.ns(b[0]), "link", "set", b[1], "up")

    def unplug(self, a: tuple[str, str]) -> None:
        """Remove the cable at a (both ends of the veth go)."""
        _run("ip", "-n", self.ns(a[0]), "link", "del", a[1])

    def start_lldpd(self, system: str, switch: bool) -> None:
        """lldpd in the namespace, named ``system``, sending every second; switches announce Bridge and Router.

        The settings go in the file lldpd hands its own lldpcli before it starts sending (``-O``): set
        afterwards, a daemon may already have announced the machine's hostname and keep it for a while."""
        conf = self.dir / f"{system}.conf"
        lines = [f"configure system hostname {system}", "configure lldp tx-interval 1"]
        if switch:
            lines.append("configure system capabilities enabled bridge,router")
        conf.write_text("\n".join(lines) + "\n")
        log = open(self.dir / f"{system}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[system] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(system), "lldpd", "-d", "-O", str(conf),
             "-u", self.sock(system), "-p", str(self.dir / f"{system}.pid"), "-I", "swp*" if switch else "eth*"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 10
        while True:  # until its control socket answers
            try:
                self.lldpcli(system, "show", "configuration")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def lldpcli(self, system: str, *args: str) -> str:
        """lldpcli against the system's lldpd."""
        return _run("lldpcli", "-u", self.sock(system), *args)

    def neighbors(self, system: str) -> set[tuple[str, str, str]]:
        """(interface, neighbour name, neighbour port) triples lldpd reports now, read as the agent reads them."""
        text = self.lldpcli(system, "-f", "json", "show", "neighbors", "details")
        rows = neighbor_rows(text, system, Counter())
        return {(r["interface"], r["system_name"], r["neighbor_port"]) for r in rows}

    def wait_for(self, wiring: set) -> None:
        """Until every system's lldpd sees exactly the neighbours the wiring gives it, ports included: a swap
        keeps each side's neighbour name and changes only its port (names alone once passed on a leaf still
        showing the old port, and the assembly then found both cables)."""
        want: dict[str, set] = {s: set() for s in self.systems}
        for (a, pa), (b, pb) in wiring:
            want[a].add((pa, b, pb))
            want[b].add((pb, a, pa))
        deadline = time.monotonic() + SETTLE_S
        while True:
            seen = {s: self.neighbors(s) for s in self.systems}
            if seen == want:
                print(f"lldpd converged in {SETTLE_S - (deadline - time.monotonic()):.1f} s")
                return
            if time.monotonic() > deadline:
                dead = {s: p.returncode for s, p in self.procs.items() if p.poll() is not None}
                logs = {
                    s: (self.dir / f"{s}.log").read_text()[-2000:] for s in self.systems if seen[s] != want[s]
                }
                raise AssertionError(
                    f"lldpd did not converge in {SETTLE_S} s: {seen} vs {want}; exited: {dead}; logs: {logs}"
                )
            time.sleep(0.5)

    def close(self) -> None:
        """Stop every lldpd and delete every namespace (their veths go with them)."""
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for system in self.systems:
            subprocess.run(["ip", "netns", "del", self.ns(system)], capture_output=True, timeout=30)


@pytest.fixture
def fabric():
    missing = [tool for tool in ("ip", "lldpd", "lldpcli") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: install iproute2 and Debian's lldpd (make sysdeps does)"
        )
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root (ip netns add)")
    # lldpd's sockets and pid files where its unprivileged user can reach them (pytest's tmp is root-only)
    workdir = Path(tempfile.mkdtemp(prefix="c4-lldpd-"))
    workdir.chmod(0o755)
    f = NamespaceFabric(workdir)
    try:
        for system in (*HOSTS, *LEAVES, SPINE):
            f.add(system)
        for a, b in WIRING:
            f.cable(a, b)
        for system in (*HOSTS, *LEAVES, SPINE):
            f.start_lldpd(system, switch=system not in HOSTS)
        f.wait_for(WIRING)
        yield f
    finally:
        f.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "c4.duckdb", CATALOGUE)
    yield s
    s.close()


def sample_into(store: Store, fabric: NamespaceFabric, fmt: str = "json") -> list[dict]:
    """Every system's agent runs the lldp sampler against its lldpd once; its rows go into the store."""
    out = []
    now_ns = time.time_ns()
    for system in fabric.systems:
        ctx = SamplerContext(node=system, job="", labels={})
        command = ["lldpcli", "-u", fabric.sock(system), "-f", fmt, "show", "neighbors", "details"]
        sampler = build_sampler("lldp", {"source": "lldpd", "command": command, "poll_every_ticks": 1}, ctx)
        sampler.probe()
        rows = sampler.sample(now_ns)["fabric_neighbors"]
        assert sampler.records_skipped == 0, sampler.skipped_by_reason
        sampler.close()
        defaults = {"ts": utc_from_ns(now_ns), "node": system, "job": ""}
        converted = convert_rows(CATALOGUE, "fabric_neighbors", rows, defaults)
        assert converted.dropped == 0, converted.first_error
        [result] = store.commit(
            [PendingBatch.internal(CATALOGUE["fabric_neighbors"], converted.table.to_pylist())]
        )
        assert not result.error
        out += converted.table.to_pylist()
    return out


def assemble_pass(store: Store, expected=None):
    """A collector discovery pass over the store, stored like the collector's periodic task stores it."""
    now = datetime.now(UTC).replace(tzinfo=None)
    cur = store.cursor()
    try:
        found = discover(cur, now, 300.0, expected)
    finally:
        cur.close()
    for table, rows in pass_rows(found, now).items():
        if rows:
            [result] = store.commit([PendingBatch.internal(CATALOGUE[table], rows)])
            assert not result.error
    return found


def stored_cables(store: Store) -> set:
    rows = store.con.execute(
        "SELECT a_system, a_port, b_system, b_port, tier, seen_from FROM fabric_topology_current"
    ).fetchall()
    return {((a, pa), (b, pb)) for a, pa, b, pb, _, _ in rows}, {(r[4], r[5]) for r in rows}


def frames_in(fabric: NamespaceFabric, system: str) -> list[dict]:
    """The lldp sampler reading raw LLDP frames inside the system's namespace (no lldpd asked)."""
    code = (
        "import json, time\n"
        "from c4.agent.registry import SamplerContext, build_sampler\n"
        f"s = build_sampler('lldp', {{'source': 'frames', 'interfaces': ['eth0', 'eth1'], 'poll_every_ticks': 1}},"
        f" SamplerContext(node={system!r}, job='', labels={{}}))\n"
        "s.probe()\n"
        "rows = []\n"
        "for _ in range(100):\n"
        "    rows = s.sample(0).get('fabric_neighbors', [])\n"
        "    if len(rows) == 2: break\n"
        "    time.sleep(0.1)\n"
        "s.close()\n"
        "print(json.dumps({'rows': rows, 'skipped': s.records_skipped}))\n"
    )
    out = _run("ip", "netns", "exec", fabric.ns(system), sys.executable, "-c", code)
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["skipped"] == 0
    return doc["rows"]


def test_discovered_fabric_equals_the_wiring_then_a_swapped_cable_is_flagged(fabric, store):
    rows = sample_into(store, fabric)
    assert {r["source"] for r in rows} == {"lldpd"}
    found = assemble_pass(store)
    assert found.cables() == WIRING
    cables, tiers = stored_cables(store)
    assert cables == WIRING
    assert tiers == {("host_leaf", "both"), ("leaf_spine", "both")}
    assert found.roles == {**{h: "host" for h in HOSTS}, "leaf0": "leaf", "leaf1": "leaf", SPINE: "spine"}
    assert found.contradictions == []

    # lldpd's json0 shape gives the same rows as its json shape
    by_json = {(r["local_system"], r["interface"], r["system_name"], r["neighbor_port"]) for r in rows}
    again = sample_into(Store(fabric.dir / "json0.duckdb", CATALOGUE), fabric, fmt="json0")
    assert {
        (r["local_system"], r["interface"], r["system_name"], r["neighbor_port"]) for r in again
    } == by_json

    # where lldpd is absent, the frames it sends give the same neighbours
    framed = frames_in(fabric, "h1")
    assert {(r["interface"], r["system_name"], r["neighbor_port"], r["neighbor_kind"]) for r in framed} == {
        ("eth0", "leaf0", "swp2", "switch"),
        ("eth1", "leaf1", "swp2", "switch"),
    }

    # swap h2's two cables: eth0 now on leaf1, eth1 on leaf0 (the same leaf ports)
    fabric.unplug(("h2", "eth0"))
    fabric.unplug(("h2", "eth1"))
    fabric.cable(("h2", "eth0"), ("leaf1", "swp3"))
    fabric.cable(("h2", "eth1"), ("leaf0", "swp3"))
    swapped = (WIRING - {(("h2", "eth0"), ("leaf0", "swp3")), (("h2", "eth1"), ("leaf1", "swp3"))}) | {
        (("h2", "eth0"), ("leaf1", "swp3")),
        (("h2", "eth1"), ("leaf0", "swp3")),
    }
    fabric.wait_for(swapped)
    sample_into(store, fabric)
    yaml = from_spec(
        {
            "leaves": list(LEAVES),
            "spines": [SPINE],
            "hosts": {
                h: {
                    "nics": [
                        {"leaf": leaf, "ip": f"10.{r}.0.{i + 1}", "ifname": f"eth{r}"}
                        for r, leaf in enumerate(LEAVES)
                    ]
                }
                for i, h in enumerate(HOSTS)
            },
            "links": [[leaf, SPINE, 400] for leaf in LEAVES],
        }
    )
    found = assemble_pass(store, yaml)
    assert found.cables() == swapped
    flagged = {(c.kind, c.system, c.port) for c in found.contradictions}
    assert flagged == {
        ("rail_mismatch", "h2", "eth0"),  # leaf1's other hosts reach it by eth1
        ("rail_mismatch", "h2", "eth1"),
        ("unexpected_neighbor", "h2", "eth0"),  # the YAML says eth0 goes to leaf0
        ("unexpected_neighbor", "h2", "eth1"),
        ("vanished", "h2", "eth0"),  # the previous pass's h2/eth0 - leaf0/swp3
        ("vanished", "h2", "eth1"),
    }
    stored = store.con.execute("SELECT kind, system, port FROM fabric_contradictions_current").fetchall()
    assert set(stored) == flagged
