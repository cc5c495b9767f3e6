"""C4P's closed loop: a spine link fails in the twin, the collector replans the job that crosses it,
stores the plan with its reason, announces it on a real webhook, and the twin that applies it finishes
its all-reduce within 5% of the spraying bound of the degraded fabric; never twice for one finding."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from c4.agent.batcher import rows_to_table
from c4.agent.labels import context_from
from c4.agent.runner import build_samplers
from c4.analytics.findings import Finding
from c4.catalogue import load
from c4.collector.diagnosis import Diagnosis
from c4.collector.fabric import FabricDiscovery
from c4.collector.ingest import Metrics
from c4.collector.replan import Replanner
from c4.collector.server import Collector as Server
from c4.collector.store import PendingBatch, Store
from c4.collector.writer import Writer
from c4.config import AgentConfig, CollectorConfig
from c4.sim.runner import SimRunner
from c4.sim.twin import ClusterTwin, Fault
from c4.traffic.export import link_rows, plan_rows, plan_run_row
from c4.traffic.planner import Planner
from c4.traffic.routing import lower_bound
from c4.traffic.topology import load_yaml

CATALOGUE = load()
CLUSTER = {"nodes": 16, "leaves": 4, "spines": 4, "seed": 1}  # 8 GPUs x 8 NICs per node, as the library's


class Receiver(BaseHTTPRequestHandler):
    """A webhook on loopback that keeps every replan notice posted to it (C4D's faults come there too)."""

    got: list = []

    def do_POST(self):  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("detector") == "c4p_replan":
            Receiver.got.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    Receiver.got = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook"
    srv.shutdown()


class Collector:
    """The collector's own diagnosis and replan tasks over a real store, writer thread and pool."""

    def __init__(self, tmp_path, fabric_yaml: str, webhook: str, **cfg) -> None:
        self.cfg = CollectorConfig(
            db=tmp_path / "c4.duckdb", fabric_topology=fabric_yaml, alert_webhook_urls=[webhook], **cfg
        )
        self.store = Store(self.cfg.db, CATALOGUE)
        self.writer = Writer(self.store)
        self.pool = ThreadPoolExecutor(2)
        self.metrics = Metrics()
        self.diagnosis = Diagnosis(self.cfg, self.store, self.writer, self.metrics, self.pool)
        self.diagnosis.start()
        self.replanner = Replanner(self.cfg, self.store, self.writer, self.metrics, self.pool)

    def put(self, table: str, rows: list[dict]) -> None:
        [result] = self.store.commit([PendingBatch.internal(CATALOGUE[table], rows)])
        assert not result.error, result.error

    def sql(self, q: str, args=()) -> list[dict]:
        return self.store.con.execute(q, list(args)).to_arrow_table().to_pylist()

    def close(self) -> None:
        self.writer.close()
        self.pool.shutdown()
        self.store.close()


def fabric_yaml(tmp_path) -> str:
    """The twin's fabric as the collector's fabric_topology YAML (the leaf_spine generator's arguments)."""
    path = tmp_path / "fabric.yaml"
    args = {"hosts": CLUSTER["nodes"], "leaves": CLUSTER["leaves"], "spines": CLUSTER["spines"]}
    path.write_text(yaml.safe_dump({"generator": "leaf_spine", "args": args}))
    return str(path)


def store_initial_plan(c: Collector, twin: ClusterTwin, ts: datetime) -> str:
    """Plan the twin's job on the fabric YAML and store it as its first plan (as `c4 plan --collector` would)."""
    topo = load_yaml(c.cfg.fabric_topology)
    assert [(x.name, x.capacity_gbps) for x in topo.links] == [
        (x.name, x.capacity_gbps) for x in twin.topo.links
    ]
    plan = Planner(topo, max_qps=4).plan(twin.flows)
    bound = lower_bound(topo, twin.flows)
    over = plan.max_utilization() / bound
    c.put("plans", [r | {"ts": ts} for r in plan_rows(plan, "plan-initial", over)])
    c.put("plan_links", [r | {"ts": ts} for r in link_rows(plan, "plan-initial")])
    c.put("plan_runs", [plan_run_row(plan, "plan-initial", "dp0", "initial", applied="twin") | {"ts": ts}])
    return "plan-initial"


def plan_of(c: Collector, plan_id: str) -> list[dict]:
    return c.sql("SELECT * FROM plans WHERE plan_id = ? ORDER BY src, dst, channel, qp", [plan_id])


class Feed:
    """Steps the twin and stores what every node's real samplers read, dated from ``epoch_s``."""

    def __init__(self, tmp_path, twin: ClusterTwin, epoch_s: float) -> None:
        self.twin = twin
        self.epoch_s = epoch_s
        self.runner = SimRunner(tmp_path / "sim", twin, "replan", epoch_s=epoch_s)
        self.samplers = {}
        for host, w in self.runner.writers.items():
            cfg = AgentConfig(node=host, samplers=w.sampler_config(), spool_dir=tmp_path / "spool")
            self.samplers[host] = build_samplers(cfg, context_from(cfg, env={}))
            for s in self.samplers[host]:
                s.probe()

    def until(self, c: Collector, t_s: float) -> None:
        while self.twin.t < t_s:
            self.runner.step()
            now = datetime.fromtimestamp(self.epoch_s + self.twin.t, UTC).replace(tzinfo=None)
            by_table: dict[str, list] = {}
            for host, ss in self.samplers.items():
                for s in ss:
                    for table, rs in s.sampler.sample(0).items():
                        by_table.setdefault(table, []).extend({"node": host, **r} for r in rs)
            for table, rs in by_table.items():
                data = rows_to_table(CATALOGUE, table, rs, {"ts": now, "job": ""})
                [res] = c.store.commit([PendingBatch("", 0, CATALOGUE[table], data)])
                assert not res.error, res.error


def within_bound(twin: ClusterTwin, rows: list[dict]) -> tuple[float, float]:
    """(the twin's all-reduce time under these plan rows, the spraying bound of its fabric now)."""
    twin.use_plan(rows)
    return twin.collective_s(), lower_bound(twin.topo, twin.flows)


def test_c4d_finds_a_degraded_spine_link_and_the_replan_restores_the_bound(tmp_path, webhook):
    """The library's spine_link_degraded (leaf0-spine0 at 1/4 rate) through the real samplers and C4D."""
    onset_s, end_s = 8.0, 24.0
    twin = ClusterTwin(**CLUSTER, faults=[Fault("spine_link_degraded", at_s=onset_s, factor=0.25)])
    epoch = time.time() - end_s - 30  # the newest rows lie in the collector's recent past
    # the twin follows what the collector writes, as a NIC hook would: not a dry run
    c = Collector(tmp_path, fabric_yaml(tmp_path), webhook, replan_apply_dir=str(tmp_path / "apply"))
    try:
        initial = store_initial_plan(c, twin, datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None))
        twin.use_plan(plan_of(c, initial))  # the twin applies the stored plan
        healthy_s = twin.collective_s()
        assert healthy_s <= lower_bound(twin.topo, twin.flows) * 1.05
        feed = Feed(tmp_path, twin, epoch)
        asyncio.run(run_until_replanned(c, feed, end_s))
        runs = c.sql("SELECT * FROM plan_runs WHERE reason <> 'initial'")
        assert len(runs) == 1, runs
        run = runs[0]
        assert (run["job"], run["reason"], run["fault_id"], run["link"], run["previous_plan_id"]) == (
            "dp0",
            "link_degraded",
            "slow_switch_link:leaf0<->spine0",
            "leaf0->spine0",
            initial,
        )
        assert run["applied"].startswith("sport-table:") and run["moved_pieces"] > 0
        assert run["ecmp_over_bound"] > 1.05 >= run["max_load_over_bound"] and run["completion_s"] > 0
        new_rows = plan_of(c, run["plan_id"])
        assert len(new_rows) == run["pieces"] and {r["job"] for r in new_rows} == {"dp0"}
        assert c.sql("SELECT count(*) AS n FROM plan_links WHERE plan_id = ?", [run["plan_id"]])[0]["n"] > 0

        # one alert, naming the fault, the link and the old and new load
        assert len(Receiver.got) == 1, Receiver.got
        alert = Receiver.got[0]
        assert alert["fault_id"] == f"replan:{run['plan_id']}"
        assert (
            alert["trigger_fault_id"] == "slow_switch_link:leaf0<->spine0"
            and alert["link"] == "leaf0->spine0"
        )
        assert alert["old_max_load_over_bound"] > 1.5 > alert["new_max_load_over_bound"]
        sent = c.sql("SELECT * FROM actions WHERE fault_id = ?", [alert["fault_id"]])
        assert [(a["sink"], a["outcome"], a["job"]) for a in sent] == [("webhook", "sent", "dp0")]

        # the twin applies it: within 5% of the degraded fabric's bound, where the old plan was not
        new_s, bound_s = within_bound(twin, new_rows)
        old_s, _ = within_bound(twin, plan_of(c, initial))
        assert new_s <= bound_s * 1.05, (new_s, bound_s)
        assert old_s > bound_s * 1.5, (old_s, bound_s)
        twin.use_plan(new_rows)

        # the loop goes on under the new plan: C4D keeps or resolves the fault, and nothing replans twice,
        # neither this collector nor one started anew on the same store
        feed.until(c, end_s + 6)
        asyncio.run(c.diagnosis.diagnose())
        asyncio.run(c.replanner.run())
        asyncio.run(Replanner(c.cfg, c.store, c.writer, c.metrics, c.pool).run())
        assert len(c.sql("SELECT * FROM plan_runs WHERE reason <> 'initial'")) == 1
        assert len(Receiver.got) == 1

        # C4D's fault may resolve once the traffic left the cable: that proves nothing about the cable,
        # so the job does not go back onto it by itself (the operator replans once it is mended)
        asyncio.run(c.replanner.run())
        assert not c.sql("SELECT * FROM plan_runs WHERE reason = 'link_restored'")
    finally:
        c.close()


async def run_until_replanned(c: Collector, feed: Feed, end_s: float) -> None:
    """Feed the twin, with a diagnosis pass and a replan pass every 4 s of simulated time."""
    while feed.twin.t < end_s:
        feed.until(c, feed.twin.t + 4)
        await c.diagnosis.diagnose()
        await c.replanner.run()


def lldp(node: str, itf: str, remote: str, port: str, ts: datetime) -> dict:
    """A switch's LLDP neighbour as the lldp sampler stores it (a switch report in reports_dir)."""
    return {
        "ts": ts,
        "node": node,
        "job": "",
        "source": "lldpd",
        "local_system": node,
        "interface": itf,
        "system_name": remote,
        "chassis_id": f"mac-{remote}",
        "neighbor_port": port,
        "neighbor_kind": "switch",
    }


def spine_cables(topo, ts: datetime, without: tuple[str, str] | None = None) -> list[dict]:
    """Every leaf-spine cable as both switches report it over LLDP, but ``without``."""
    rows = []
    for i, leaf in enumerate(topo.leaves):
        for j, spine in enumerate(topo.spines):
            if (leaf, spine) == without:
                continue
            rows.append(lldp(leaf, f"swp{33 + j}", spine, f"swp{1 + i}", ts))
            rows.append(lldp(spine, f"swp{1 + i}", leaf, f"swp{33 + j}", ts))
    return rows


def test_discovery_sees_a_spine_link_vanish_and_the_replan_moves_the_job_off_it(tmp_path, webhook):
    """spine_link_down: a pinned plan's pieces are re-hashed onto the other spines and collide, which no
    host counter shows; the switches' LLDP loses the cable, discovery reports it vanished, C4 replans."""
    twin = ClusterTwin(**CLUSTER, faults=[Fault("spine_link_down", at_s=1.0)])
    c = Collector(tmp_path, fabric_yaml(tmp_path), webhook, replan_apply_dir=str(tmp_path / "apply"))
    try:
        now = datetime.now(UTC).replace(tzinfo=None)
        initial = store_initial_plan(c, twin, now - timedelta(seconds=60))
        twin.use_plan(plan_of(c, initial))
        twin.step()
        twin.step()  # leaf0 <-> spine0 is down from t = 1 s
        assert twin.topo.link("leaf0", "spine0").state == "down"
        discovery = FabricDiscovery(c.store, c.writer, c.pool, c.cfg.fabric_fresh_s, c.cfg.fabric_topology)
        c.put("fabric_neighbors", spine_cables(twin.topo, now - timedelta(seconds=20)))
        asyncio.run(discovery.run())
        asyncio.run(c.replanner.run())
        assert not c.sql("SELECT * FROM plan_runs WHERE reason <> 'initial'")  # every cable is there
        c.put("fabric_neighbors", spine_cables(twin.topo, now - timedelta(seconds=10), ("leaf0", "spine0")))
        asyncio.run(discovery.run())
        assert {
            (x["kind"], x["system"], x["expected"]) for x in c.sql("SELECT * FROM fabric_contradictions")
        } >= {("vanished", "leaf0", "spine0/swp1")}
        asyncio.run(c.replanner.run())
        [run] = c.sql("SELECT * FROM plan_runs WHERE reason <> 'initial'")
        assert (run["reason"], run["fault_id"], run["link"], run["previous_plan_id"]) == (
            "link_vanished",
            "",
            "leaf0->spine0",
            initial,
        )
        new_rows = plan_of(c, run["plan_id"])
        assert not any("leaf0>spine0" in r["path"] or "spine0>leaf0" in r["path"] for r in new_rows)
        # written with the apply writers where configured, and said so
        out = tmp_path / "apply" / "dp0" / run["plan_id"]
        assert run["applied"] == f"sport-table:{out},switch-routes:{out}"
        table = [json.loads(x) for x in (out / "sport-table.jsonl").read_text().splitlines()]
        assert len(table) == run["pieces"] and {r["plan_id"] for r in table} == {run["plan_id"]}
        [alert] = Receiver.got
        assert alert["reason"] == "link_vanished" and alert["link"] == "leaf0->spine0"
        assert alert["old_max_load_over_bound"] is None and alert["new_max_load_over_bound"] < 1.05
        assert "dead link" in alert["summary"]

        new_s, bound_s = within_bound(twin, new_rows)
        old_s, _ = within_bound(twin, plan_of(c, initial))
        assert new_s <= bound_s * 1.05, (new_s, bound_s)
        assert old_s > bound_s * 1.1, (old_s, bound_s)

        # the next discovery pass no longer lists it as vanished; nothing replans again, after a restart too
        c.put("fabric_neighbors", spine_cables(twin.topo, now - timedelta(seconds=5), ("leaf0", "spine0")))
        asyncio.run(discovery.run())
        asyncio.run(c.replanner.run())
        asyncio.run(Replanner(c.cfg, c.store, c.writer, c.metrics, c.pool).run())
        assert len(c.sql("SELECT * FROM plan_runs WHERE reason <> 'initial'")) == 1
        assert len(Receiver.got) == 1

        # the cable is mended: discovery sees it again and the job goes back onto it, once
        twin.topo.set_state("leaf0", "spine0", "up")
        off_s, healthy_bound_s = within_bound(twin, new_rows)
        assert off_s > healthy_bound_s * 1.05, (off_s, healthy_bound_s)  # spine0 idle: worth going back
        c.put("fabric_neighbors", spine_cables(twin.topo, now - timedelta(seconds=2)))
        asyncio.run(discovery.run())
        asyncio.run(c.replanner.run())
        [back] = c.sql("SELECT * FROM plan_runs WHERE reason = 'link_restored'")
        assert (back["link"], back["previous_plan_id"], back["job"]) == (
            "leaf0->spine0",
            run["plan_id"],
            "dp0",
        )
        back_rows = plan_of(c, back["plan_id"])
        assert any("leaf0>spine0" in r["path"] or "spine0>leaf0" in r["path"] for r in back_rows)
        back_s, _ = within_bound(twin, back_rows)
        assert back_s <= healthy_bound_s * 1.05, (back_s, healthy_bound_s)
        assert [a["reason"] for a in Receiver.got] == ["link_vanished", "link_restored"]
        assert "back onto leaf0->spine0" in Receiver.got[1]["summary"]
        asyncio.run(c.replanner.run())
        asyncio.run(Replanner(c.cfg, c.store, c.writer, c.metrics, c.pool).run())
        assert len(c.sql("SELECT * FROM plan_runs WHERE reason <> 'initial'")) == 2
        assert len(Receiver.got) == 2
    finally:
        c.close()


def test_the_loop_is_on_with_a_fabric_and_writes_only_plan_formats(tmp_path):
    assert not Replanner.enabled(CollectorConfig())  # no fabric YAML: nothing to replan on
    assert Replanner.enabled(CollectorConfig(fabric_topology="fabric.yaml"))
    assert not Replanner.enabled(CollectorConfig(fabric_topology="fabric.yaml", replan_on_link_faults=False))
    with pytest.raises(ValueError, match="hostfile"):  # a replan keeps the host order
        CollectorConfig(replan_apply_formats=["sport-table", "hostfile"])


def test_a_job_that_cannot_be_replanned_is_counted_and_stored_nothing(tmp_path, webhook):
    """A single-port NIC whose link is down leaves its connections no path: the failure is counted and
    logged each pass, no plan is stored and nothing is announced."""
    twin = ClusterTwin(**CLUSTER)
    c = Collector(tmp_path, fabric_yaml(tmp_path), webhook)
    try:
        now = datetime.now(UTC).replace(tzinfo=None)
        store_initial_plan(c, twin, now - timedelta(seconds=60))
        down = Finding(
            "nic_down",
            "hardware",
            "nic_port",
            "host3/mlx5_2p1",
            "host3",
            now,
            now,
            0.95,
            "replace_cable",
            "host3/mlx5_2p1 is DOWN",
            {"state": "DOWN"},
        )
        c.put("faults", [down.row(now)])
        decision = asyncio.run(c.replanner.run())
        assert [job for job, _ in decision.failed] == ["dp0"] and "no live" in decision.failed[0][1]
        assert c.metrics.snapshot()["replan_failures"] == 1
        assert not c.sql("SELECT * FROM plan_runs WHERE reason <> 'initial'") and not Receiver.got
    finally:
        c.close()


def test_a_running_collector_with_a_fabric_runs_the_replan_task(tmp_path):
    """The collector schedules the replan task beside diagnosis when a fabric YAML is configured."""
    cfg = CollectorConfig(
        listen="127.0.0.1:0",
        db=tmp_path / "c4.duckdb",
        fabric_topology=fabric_yaml(tmp_path),
        diagnose_interval_s=0.2,
    )

    async def scenario() -> tuple[str, int]:
        server = Server(cfg)
        await server.start()
        try:
            for _ in range(200):  # a few passes (the task's first run is one period after start)
                health = server.tasks.get("replan")
                if health is not None and health.runs >= 2:
                    break
                await asyncio.sleep(0.05)
            return health.state, health.runs
        finally:
            await server.stop()

    state, runs = asyncio.run(scenario())
    assert state == "ok" and runs >= 2
