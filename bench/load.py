"""``c4 bench load``: many simulated agents against one real collector on loopback.

Each simulated agent sends what a real 8-GPU, 8-NIC node's agent sends every second: the rows of
one tick of the real samplers (fake NVML, an 8-NIC sysfs tree, /proc, heartbeat), one batch per
table encoded by the agent's own encoder, and its own health rows every ``health_interval_s``, over
its own gRPC connection (Hello, then one PushBundle stream carrying a tick's batches in one
message), as the real agent does with flush_interval_s = 1. Measured while every agent runs: rows/s acknowledged, ack latency
(batch handed to gRPC -> its ack, which the collector sends after the commit), the collector's CPU
and memory, refused batches, batches never acknowledged, and acknowledged rows missing from the
store afterwards (lost). Then the same agents against one and against several collectors writing
one DuckLake (catalog in a throwaway local PostgreSQL), each agent homed by hashing its node name:
shard_speedup is the rows/s of N lake shards over one lake shard, measured in the same run.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import dataclass, field

HELP = "Load: N simulated 8-GPU nodes (1 s sampling, real sampler rows) against one collector on loopback."

#: Tables a node's samplers produce on one tick (plus the agent's health rows).
SAMPLERS = ("host", "heartbeat", "gpu", "nic")
#: The agent's own health tables: written every ``health_interval_s``, not every tick.
HEALTH_TABLES = frozenset({"agent_health", "agent_sampler_health"})


def default_health_interval_s() -> float:
    """The agent's default ``health_interval_s``."""
    from dataclasses import fields

    from c4.client_config import AgentConfig

    return next(f.default for f in fields(AgentConfig) if f.name == "health_interval_s")


def configure(parser: argparse.ArgumentParser) -> None:
    """Benchmark size."""
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents/nodes (default 1000)")
    parser.add_argument(
        "--compare-agents",
        type=int,
        default=1000,
        help="first the same setup with this many agents, reported beside --agents in the same run "
        "(default 1000; 0 or equal to --agents skips it)",
    )
    parser.add_argument(
        "--duration-s",
        type=float,
        default=180.0,
        help="measured seconds (default 180: two or more passes of the collector's minute rollups over "
        "full minutes fall in the window, as in a collector that has run for a while)",
    )
    parser.add_argument("--ramp-s", type=float, default=10.0, help="agents connect over this long first")
    parser.add_argument("--interval-s", type=float, default=1.0, help="sampling interval per agent")
    parser.add_argument(
        "--frozen-rows",
        action="store_true",
        help="every batch repeats the sampled tick as it is, its timestamp and counters included (the "
        "generator before stop 39; default: each tick's rows carry that tick's time, byte and packet "
        "counters climb and float gauges wander, as a real node's do)",
    )
    parser.add_argument(
        "--ticks-per-batch",
        type=int,
        default=1,
        help="ticks an agent gathers into one batch per table before sending, as a real agent with "
        "flush_interval_s = N x the sampling interval does (default 1: every tick sent at once); "
        "the rows offered per second stay the same, the batches per second fall N-fold",
    )
    parser.add_argument(
        "--agent-flush-max-s",
        type=float,
        default=None,
        help="the collector's agent_flush_max_s: the longest flush interval it asks its agents for when its "
        "commits fall behind; the simulated agents follow the advice as agents do (default: the "
        "collector's default, 5; 1: no advice, every agent sends every --ticks-per-batch ticks)",
    )
    parser.add_argument(
        "--agent-flush-wait-max-s",
        type=float,
        default=None,
        help="the agents' flush_wait_max_s: while its last flush is unacknowledged a simulated agent "
        "gathers ticks up to this long, as agents do (default: the agent's default, 5; 0: flush on time)",
    )
    parser.add_argument(
        "--health-interval-s",
        type=float,
        default=default_health_interval_s(),
        help="how often an agent sends its own health rows (agent_health, agent_sampler_health), as "
        "the agent's health_interval_s (default: the agent's default, %(default)g)",
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=64, help="unacknowledged batches per agent (the agent's default)"
    )
    parser.add_argument(
        "--drain-s", type=float, default=60.0, help="after the window, wait at most this long for acks"
    )
    parser.add_argument(
        "--ingest-processes",
        type=int,
        default=0,
        help="then the same agents against one collector with this many ingest processes (receiving and "
        "checking batches beside the process owning the store), side by side with one process; 0 skips it",
    )
    parser.add_argument(
        "--store-threads",
        type=int,
        default=0,
        help="the collector's store_threads (DuckDB threads; 0 = one per core but one)",
    )
    parser.add_argument(
        "--commit-spacing-s",
        type=float,
        default=None,
        help="the collector's group_commit_spacing_s: a busy writer's group commit starts up to this long after "
        "the one before (three times that one's duration, at most this; 0: at once) (default: the collector's "
        "default, 0.25)",
    )
    parser.add_argument(
        "--checkpoint-wal-mib",
        type=int,
        default=0,
        help="the collector's checkpoint_wal_bytes in MiB (0: the collector's default)",
    )
    parser.add_argument(
        "--baseline-c4",
        help="then the same agents against a collector run by this other `c4` executable (e.g. "
        "another checkout's .venv/bin/c4), side by side: the before of a before/after",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --baseline-c4: run the pair this many times, alternating which runs first (this code "
        "first in odd rounds, the baseline first in even ones), and report each setup's ack p99 per round "
        "and their median: one pair cannot tell the code from the order, as the second setup of a pair "
        "has run slower (default 1)",
    )
    parser.add_argument(
        "--compare-fixed-flush",
        action="store_true",
        help="then the same agent counts with the flush fixed as before the flush advice (the collector "
        "advises nothing, agents do not wait for acks), side by side",
    )
    parser.add_argument("--diagnose", action="store_true", help="keep C4D diagnosis on in the collector")
    parser.add_argument("--workdir", help="directory for the database and logs (default: a temp dir)")
    parser.add_argument(
        "--cpus-per-collector",
        type=int,
        default=0,
        help="in the lake setups, pin each collector to this many CPUs of its own (as on separate hosts "
        "of that size; needs shards x N CPUs, the load generator and PostgreSQL float); 0 = no pinning",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=0,
        help="then the same agents against 1 and this many collectors writing one DuckLake on a local "
        "PostgreSQL (Debian's package), for the shard speedup (takes minutes); 0 (default) skips it",
    )


def agent_flush_wait_max_s(args) -> float:
    """How long a simulated agent puts a flush off while the last is unacknowledged (the agent's default)."""
    from c4.config import AgentConfig

    return (
        AgentConfig.flush_wait_max_s if args.agent_flush_wait_max_s is None else args.agent_flush_wait_max_s
    )


def batch_ticks(args) -> list[int]:
    """Every number of ticks a simulated agent's batch may hold: up to its own flush interval, the
    collector's longest advice or the longest wait for an ack, whichever is longest."""
    from c4.config import CollectorConfig

    advice_s = (
        CollectorConfig().agent_flush_max_s if args.agent_flush_max_s is None else args.agent_flush_max_s
    )
    longest_s = max(args.ticks_per_batch * args.interval_s, advice_s, agent_flush_wait_max_s(args))
    return list(range(1, max(args.ticks_per_batch, math.ceil(longest_s / args.interval_s - 1e-9)) + 1))


def node_tick(root) -> dict:
    """table -> ColumnBatch: one tick of the real samplers on a simulated 8-GPU, 8-NIC node."""
    import time

    from c4.agent.labels import context_from
    from c4.agent.runner import Agent, build_samplers
    from c4.bench.agent import build_node
    from c4.config import AgentConfig

    sources = build_node(root)
    cfg = AgentConfig(
        node="load-node",
        spool_dir=root / "spool",
        samplers={k: v for k, v in sources.items() if k in SAMPLERS},
        collector="127.0.0.1:1",
    )
    ctx = context_from(cfg, env={})
    agent = Agent(cfg, build_samplers(cfg, ctx), ctx)
    agent.start_samplers()
    for _ in range(3):  # warm up: the second tick on has rates; keep the last one
        list(agent.buffer.drain())
        now_ns = time.time_ns()
        for s in agent.samplers:
            if s.state == "running":
                agent.sample_one(s, now_ns)
        agent.health_rows(now_ns)
    return dict(agent.buffer.drain())


def payloads_for(tick: dict, name: str, ticks: int = 1) -> list[tuple[str, int, bytes, int]]:
    """(table, schema version, Arrow IPC, rows) per table: ``plans_and_payloads`` as sampled."""
    return [p[:4] for p in plans_and_payloads(tick, name, ticks)]


def plans_and_payloads(
    tick: dict, name: str, ticks: int = 1, moving: bool = False, shared: dict | None = None
) -> list[tuple]:
    """(table, schema version, Arrow IPC, rows, moving plan) per table, with node/agent_id set to ``name``:
    the rows of ``ticks`` ticks in each table's one batch (the tick's rows repeated, as an agent that
    flushes every ``ticks`` ticks sends them), encoded by the agent's own encoder (one record batch per
    payload). The agent's health tables hold one set of rows (it writes them every ``health_interval_s``).
    ``moving``: the moving cells hold sentinels (``load_motion``) and the plan, (rows per tick, moving
    columns), says which; else the plan is None. ``shared``: plans already made for other agents' batches
    of this tick (they do not depend on the name), reused rather than made and held once per agent."""
    from c4.agent.batcher import ColumnBatch
    from c4.bench.load_motion import with_sentinels

    out = []
    for table, one in sorted(tick.items()):
        ticks_here = 1 if table in HEALTH_TABLES else ticks
        columns = [list(values) * ticks_here for values in one.columns]
        plan = None
        if moving:
            made = None if shared is None else shared.get((table, ticks_here))
            if made is None:
                made = with_sentinels(table, one.column_names, columns)
                if shared is not None:
                    shared[(table, ticks_here)] = made
            columns, moving_plan = made
            plan = (one.num_rows, moving_plan)
        columns = [
            [name] * (one.num_rows * ticks_here) if col in ("node", "agent_id") else values
            for col, values in zip(one.column_names, columns, strict=True)
        ]
        batch = ColumnBatch(one.spec, columns, one.num_rows * ticks_here)
        payloads = list(batch.to_ipc(1 << 30))
        out.append((table, one.spec.version, payloads[0], batch.num_rows, plan))
    return out


@dataclass
class LoadStats:
    """What the simulated agents saw."""

    connected: int = 0
    batches_sent: int = 0
    batches_acked: int = 0
    refused: int = 0
    unacked: int = 0
    stream_errors: int = 0
    unacked_agents: int = 0
    hello_retries: int = 0
    batches_made: int = 0
    spooled_at_end: int = 0
    reconnects: int = 0
    rows_acked_in_window: int = 0
    #: rows the simulated agents made during the window (what the generator really offered)
    rows_made_in_window: int = 0
    #: the latest a simulated agent's tick started after it was due, seconds (the generator falling behind)
    max_tick_lag_s: float = 0.0
    acked_rows_by_table: dict[str, int] = field(default_factory=dict)
    sent_rows_by_table: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    #: per acked batch, window or not: (perf_counter time of its ack, its ack latency in seconds)
    acks_at: list[tuple[float, float]] = field(default_factory=list)
    #: per acked batch in the window: from its first tick's sampling to its ack, seconds (the data's age)
    ages_s: list[float] = field(default_factory=list)
    #: ticks per batch -> batches of the agents' tables made with that many
    flushes_by_ticks: Counter[int] = field(default_factory=Counter)
    #: the collector's flush advice each agent last had, seconds -> agents
    advice_at_end: Counter[float] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # kind of failure -> times


def varint(value: int) -> bytes:
    """``value`` as a protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: The PushBundle method, called with bundles already in wire form (the generator's hot path).
PUSH_BUNDLE = "/c4.telemetry.v1.Telemetry/PushBundle"
_SEQ_TAG = b"\x10"  # Batch.seq: field 2, varint
_BATCH_TAG = b"\x0a"  # BatchBundle.batches: field 1, length-delimited
_EPOCH_TAG = b"\x30"  # Batch.spool_epoch: field 6, varint


def batch_templates(name: str, payloads, interval_s: float = 1.0, layouts: dict | None = None) -> list[tuple]:
    """(table, the agent's Batch wire bytes without its seq, rows, moving layout or None) per payload:
    encoded once per agent. A payload made ``moving`` gets the layout of its moving cells, found once per
    shape in ``layouts`` (shared by the agents) and checked against this agent's bytes.

    A batch on the wire is these bytes plus its seq field (protobuf fields may come in any order),
    the same bytes an agent's ``pb.Batch`` serializes to; building a ``pb.Batch`` per batch copied
    the payload and cost the generator a third of its CPU.
    """
    from c4.bench.load_motion import find_layout, fits
    from c4.telemetry.v1 import telemetry_pb2 as pb

    out = []
    for table, version, ipc, rows, plan in payloads:
        wire = pb.Batch(agent_id=name, table=table, schema_version=version, arrow_ipc=ipc).SerializeToString()
        layout = None
        if plan is not None:
            key = (table, rows, len(wire))
            layout = (layouts or {}).get(key)
            if layout is None or not fits(layout, wire):
                rows_per_tick, columns = plan
                layout = find_layout(wire, columns, rows_per_tick, round(interval_s * 1e6))
                if layouts is not None:
                    layouts[key] = layout
        out.append((table, wire, rows, layout))
    return out


def wire_batch(template: bytes, seq: int, epoch_wire: bytes = b"") -> bytes:
    """One Batch in wire form: the agent's template with ``seq`` set (and its spool epoch: ``epoch_field``)."""
    return template + _SEQ_TAG + varint(seq) + epoch_wire


def epoch_field(epoch: int) -> bytes:
    """Batch.spool_epoch in wire form, appended to each of an agent's batches."""
    return _EPOCH_TAG + varint(epoch)


def wire_bundle(batches: list[bytes]) -> bytes:
    """A BatchBundle in wire form holding these Batch messages, in order."""
    return b"".join(_BATCH_TAG + varint(len(b)) + b for b in batches)


async def one_agent(
    address, name, payloads_by_ticks, start_at, window, args, stats: LoadStats, layouts: dict | None = None
) -> None:
    """Connect at ``start_at`` and make one batch per table every interval until the window ends.

    ``payloads_by_ticks``: ticks per batch -> the payloads of that many ticks. As the real agent: it
    flushes every ``--ticks-per-batch`` ticks, or less often when the collector advises it (with
    payloads made for that many ticks); batches go to a spool and at most ``max_in_flight`` are sent unacknowledged;
    Hello with backoff, one PushBundle stream, and after a broken stream a new connection that first
    re-sends what was in flight (the collector drops copies it already committed). Batches are sent
    in the wire form the agent's protobuf messages take (see ``batch_templates``); payloads made moving
    get each batch's times and values (``load_motion.moved``), ``layouts`` shared by the agents.
    """
    import asyncio
    import time
    from collections import deque

    import grpc

    from c4.agent.runner import flush_phase
    from c4.agent.spool import new_epoch
    from c4.bench.load_motion import moved
    from c4.security import channel_options
    from c4.telemetry.v1 import telemetry_pb2 as pb
    from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

    loop = asyncio.get_running_loop()
    every_flush = {
        k: batch_templates(name, [p for p in payloads if p[0] not in HEALTH_TABLES], args.interval_s, layouts)
        for k, payloads in payloads_by_ticks.items()
    }
    health = batch_templates(
        name,
        [p for p in payloads_by_ticks[args.ticks_per_batch] if p[0] in HEALTH_TABLES],
        args.interval_s,
        layouts,
    )
    advice = [0.0]  # the collector's latest flush advice, seconds (0: none)
    link = [False]  # connected (a Hello answered, the stream not broken since)
    wait_max_s = agent_flush_wait_max_s(args)
    oldest: dict[int, float] = {}  # seq -> perf_counter time its batch's first tick was sampled

    phase = flush_phase(name)  # where a new interval starts, as the agent's
    # as the agent's spool: a random non-zero epoch, declared in Hello and carried by every batch
    epoch = new_epoch()
    epoch_wire = epoch_field(epoch)
    most_ticks = max(every_flush)
    rows_per_tick = sum(rows for _, _, rows, _ in every_flush[1])
    unix_minus_loop_s = time.time() - loop.time()  # added to a loop time: seconds since the epoch
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    spool: deque[tuple[int, str, int, bytes]] = deque()  # (seq, table, rows, wire bytes): made, not sent
    in_flight: dict[int, tuple[float, str, int, bytes]] = {}  # seq -> (sent at, table, rows, wire bytes)
    wake = asyncio.Event()
    produced = asyncio.Event()
    sent_rows = stats.sent_rows_by_table

    async def produce() -> None:
        """As the agent's scheduler: a tick every interval; a flush of the ticks gathered when due, put
        off a tick at a time while the last one is unacknowledged (up to the wait's maximum)."""
        seq, next_tick = 0, loop.time()
        next_health = next_tick
        flush_s = args.interval_s * args.ticks_per_batch  # the agent's own flush_interval_s
        every_s, next_flush, last_flush = flush_s, next_tick, next_tick
        gathered, first_sampled = 0, 0.0
        ticks_done, first_tick, first_t = 0, 0, 0.0  # ticks made; the batch's first: its number, its time
        while next_tick < window[1]:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            now = loop.time()
            stats.max_tick_lag_s = max(stats.max_tick_lag_s, now - next_tick)
            t = next_tick
            next_tick += args.interval_s
            if not gathered:
                first_sampled = time.perf_counter()
                first_tick, first_t = ticks_done, t
            gathered += 1
            ticks_done += 1
            if window[0] <= now <= window[1]:  # offered when sampled, whenever it is sent
                stats.rows_made_in_window += rows_per_tick
            want_s = max(flush_s, advice[0])
            if want_s > every_s:  # as the agent: a longer advice moves the next flush out to its phase now
                next_flush, every_s = max(next_flush, last_flush + want_s * phase), want_s
            if t < next_flush - 1e-9:
                continue
            awaiting_acks = link[0] and (spool or in_flight)  # as the agent's _awaiting_acks
            if awaiting_acks and t + args.interval_s - last_flush <= max(wait_max_s, want_s) + 1e-9:
                next_flush = t + args.interval_s  # the last flush is not acknowledged: gather another tick
                continue
            templates = every_flush[min(gathered, most_ticks)]
            if t >= next_health:  # as the agent: its health rows every health_interval_s
                templates = templates + health
                next_health += args.health_interval_s
            first_us = round((first_t + unix_minus_loop_s) * 1e6)
            for table, template, rows, layout in templates:
                seq += 1
                if layout is not None and table in HEALTH_TABLES:  # one tick's rows: the flush's last
                    template = moved(template, layout, ticks_done - 1, round((t + unix_minus_loop_s) * 1e6))
                elif layout is not None:
                    template = moved(template, layout, first_tick, first_us)
                spool.append((seq, table, rows, wire_batch(template, seq, epoch_wire)))
                oldest[seq] = first_sampled
                sent_rows[table] = sent_rows.get(table, 0) + rows
            if window[0] <= now <= window[1]:
                stats.rows_made_in_window += sum(r for tbl, _, r, _ in templates if tbl in HEALTH_TABLES)
            stats.batches_made += len(templates)
            stats.flushes_by_ticks[min(gathered, most_ticks)] += 1
            gathered = 0
            wake.set()
            last_flush = t
            every_s, next_flush = want_s, t + want_s * (1.0 if want_s == every_s else phase)
        produced.set()
        wake.set()

    async def requests():
        while True:
            if spool and len(in_flight) < args.max_in_flight:
                bundle = []  # what is ready and fits the window, in one message (as the agent's Sender)
                now = time.perf_counter()
                while spool and len(in_flight) < args.max_in_flight:
                    seq, table, rows, wire = spool.popleft()
                    in_flight[seq] = (now, table, rows, wire)
                    bundle.append(wire)
                stats.batches_sent += len(bundle)
                yield wire_bundle(bundle)
            if produced.is_set() and not spool:
                return  # half-close: the collector acks what is in flight, then ends the stream
            wake.clear()
            await wake.wait()

    producer = asyncio.create_task(produce())
    backoff_s, connected = 0.2, False
    acked_rows = stats.acked_rows_by_table
    try:
        while True:
            async with grpc.aio.insecure_channel(address, options=channel_options(8 << 20)) as channel:
                stub = pb_grpc.TelemetryStub(channel)
                push_bundle = channel.stream_stream(
                    PUSH_BUNDLE, request_serializer=None, response_deserializer=pb.AckBundle.FromString
                )
                rpc = "Hello"
                try:
                    hello = await stub.Hello(
                        pb.HelloRequest(agent_id=name, hostname=name, spool_epoch=epoch), timeout=120
                    )
                    advice[0] = hello.flush_interval_s
                    link[0] = True
                    if not connected:
                        stats.connected += 1
                        connected = True
                    backoff_s, rpc = 0.2, "PushBundle"
                    async for acks in push_bundle(requests()):
                        advice[0] = acks.flush_interval_s
                        wake.set()
                        now = loop.time()
                        in_window = window[0] <= now <= window[1]
                        acked_at = time.perf_counter()
                        for ack in acks.acks:
                            entry = in_flight.pop(ack.seq, None)
                            if entry is None:
                                continue
                            t_sent, table, rows, _ = entry
                            sampled = oldest.pop(ack.seq, t_sent)
                            if ack.code != 0:
                                stats.refused += 1
                                stats.errors[f"refused: {ack.message}"] += 1
                                continue
                            stats.batches_acked += 1
                            acked_rows[table] = acked_rows.get(table, 0) + rows
                            stats.acks_at.append((acked_at, acked_at - t_sent))
                            if in_window:
                                stats.latencies_s.append(acked_at - t_sent)
                                stats.ages_s.append(acked_at - sampled)
                                stats.rows_acked_in_window += rows
                    if produced.is_set() and not spool and not in_flight:
                        break  # everything made was acknowledged
                except grpc.RpcError as exc:
                    link[0] = False
                    stats.errors[f"{rpc}: {exc.code().name} {exc.details()}"] += 1
                    if rpc == "Hello":
                        stats.hello_retries += 1
                    else:
                        stats.stream_errors += 1
            # re-send what was in flight first, in sequence order
            spool.extendleft((seq, t, r, w) for seq, (_, t, r, w) in sorted(in_flight.items(), reverse=True))
            in_flight.clear()
            await asyncio.sleep(backoff_s)
            backoff_s = min(2 * backoff_s, 10.0)
            stats.reconnects += 1
    finally:  # also when the drain timeout cancels this agent
        stats.advice_at_end[advice[0]] += 1
        producer.cancel()
        stats.unacked += len(in_flight) + len(spool)
        stats.spooled_at_end += len(spool)


class ProcWatch:
    """CPU seconds and peak resident memory of a process and its children (ingest processes), from /proc."""

    def __init__(self, pid: int) -> None:
        import os

        self.pid = pid
        self.tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
        self.peak_rss_bytes = 0

    def pids(self) -> list[int]:
        """The process and its children."""
        from c4.sim.procs import child_pids

        return [self.pid, *child_pids(self.pid)]

    def cpu_split_s(self) -> tuple[float, float]:
        """(user, system) CPU seconds so far (children that exited meanwhile are not counted): system is
        the kernel's share (page faults, syscalls, I/O)."""
        user = system = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            user += int(fields[11])
            system += int(fields[12])
        return user * self.tick_s, system * self.tick_s

    def sample_rss(self) -> None:
        """Note the resident set size now (summed over the processes)."""
        rss = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    rss += next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:")), 0)
            except OSError:
                continue
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of values, None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


async def writer_counters(addresses: list[str]) -> tuple[int, int] | None:
    """The collectors' store transactions and writer busy ms so far (their Stats), None when one does
    not answer."""
    import grpc

    from c4.telemetry.v1 import telemetry_pb2 as pb
    from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

    commits = busy_ms = 0
    for address in addresses:
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                reply = await pb_grpc.TelemetryStub(channel).Stats(pb.StatsRequest(), timeout=10)
        except grpc.aio.AioRpcError:
            return None
        commits += reply.counters.get("commit_transactions", 0)
        busy_ms += reply.counters.get("writer_busy_ms", 0)
    return commits, busy_ms


def _cpu_split_s(watches: list) -> tuple[float, float]:
    """(user, system) CPU seconds of every watched process, each /proc file read once."""
    splits = [w.cpu_split_s() for w in watches]
    return sum(u for u, _ in splits), sum(s for _, s in splits)


async def drive(args, addresses: list[str], watches: list, per_agent: list) -> tuple[LoadStats, dict]:
    """Run every simulated agent against its home collector; measure the collectors over the window."""
    import asyncio
    import sys
    import time

    from tqdm import tqdm

    from c4.bench.agent_process import task_times_ns

    loop = asyncio.get_running_loop()
    stats = LoadStats()
    t0 = loop.time() + 0.5
    measured: dict = {"start_perf": time.perf_counter() + 0.5}
    window = (t0 + args.ramp_s + args.interval_s, t0 + args.ramp_s + args.interval_s + args.duration_s)
    n = len(per_agent)
    from c4.shard import ordered_collectors

    layouts: dict = {}  # where each batch shape's moving cells sit: found once, shared by the agents

    tasks = [
        asyncio.create_task(
            one_agent(
                ordered_collectors(name, addresses)[0],  # the home an agent picks from the collector list
                name,
                payloads,
                t0 + args.ramp_s * i / max(1, n),
                window,
                args,
                stats,
                layouts,
            )
        )
        for i, (name, payloads) in enumerate(per_agent)
    ]
    bar = tqdm(total=round(window[1] - loop.time()), desc="seconds", disable=not sys.stdout.isatty())
    while loop.time() < window[1]:
        await asyncio.sleep(1.0)
        bar.update(1)
        for watch in watches:
            watch.sample_rss()
        now = loop.time()
        if "cpu0" not in measured and now >= window[0]:
            user0, sys0 = _cpu_split_s(watches)
            measured.update(
                cpu0=user0 + sys0,
                sys0=sys0,
                wall0=time.perf_counter(),
                self0=time.process_time(),
                threads0=task_times_ns(watches[0].pid) if watches else {},
            )
            measured["writer0"] = await writer_counters(addresses)
    user1, sys1 = _cpu_split_s(watches)
    measured.update(
        cpu1=user1 + sys1,
        sys1=sys1,
        wall1=time.perf_counter(),
        self1=time.process_time(),
        threads1=task_times_ns(watches[0].pid) if watches else {},
    )
    measured["writer1"] = await writer_counters(addresses)
    bar.close()
    # the agents stop sending at the window's end; give the collector a bounded time to ack the rest
    done, pending = await asyncio.wait(tasks, timeout=args.drain_s)
    for t in done:
        if t.exception() is not None:
            raise t.exception()  # a bug in the simulated agent, not a collector outcome
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stats.unacked_agents = len(pending)
    for watch in watches:
        watch.sample_rss()
    return stats, measured


def run(args: argparse.Namespace) -> int:
    """Start a collector, drive the agents, check the store, print the figures."""
    import os
    import resource
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    from c4.report import emit

    usable_cpus = len(os.sched_getaffinity(0))
    if args.cpus_per_collector and args.shards * args.cpus_per_collector > usable_cpus:
        print(
            f"c4 bench load: --cpus-per-collector {args.cpus_per_collector} x --shards {args.shards} needs "
            f"{args.shards * args.cpus_per_collector} CPUs, this machine lets us use {usable_cpus}",
            file=sys.stderr,
        )
        return 2
    if (
        args.agents < 1
        or args.compare_agents < 0
        or args.duration_s <= 0
        or args.interval_s <= 0
        or args.ramp_s < 0
        or args.max_in_flight < 1
        or args.ticks_per_batch < 1
        or args.health_interval_s <= 0
        or args.ingest_processes < 0
        or args.store_threads < 0
        or args.checkpoint_wal_mib < 0
        or (args.commit_spacing_s is not None and not 0 <= args.commit_spacing_s <= 5)
    ):
        print(
            "c4 bench load: --agents >= 1, --compare-agents >= 0, --duration-s > 0, --interval-s > 0, "
            "--ramp-s >= 0, --max-in-flight >= 1, --ticks-per-batch >= 1, --health-interval-s > 0, "
            "--ingest-processes >= 0, "
            "--store-threads >= 0, "
            "--checkpoint-wal-mib >= 0, 0 <= --commit-spacing-s <= 5",
            file=sys.stderr,
        )
        return 2
    if args.rounds < 1 or args.rounds > 1 and not args.baseline_c4:
        print("c4 bench load: --rounds must be >= 1, and above 1 only with --baseline-c4", file=sys.stderr)
        return 2
    if args.baseline_c4 and not os.access(args.baseline_c4, os.X_OK):
        print(f"c4 bench load: --baseline-c4 {args.baseline_c4!r} is not an executable file", file=sys.stderr)
        return 2
    counts = [args.agents]
    if args.compare_agents and args.compare_agents != args.agents:
        counts.insert(0, args.compare_agents)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # one connection per agent, both ends
    want = min(hard, max(soft, 4 * max(counts) + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="c4-bench-load-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        (work / "node").mkdir(exist_ok=True)
        tick = node_tick(work / "node")
        k = args.ticks_per_batch
        ticks_choices = batch_ticks(args)
        plans: dict = {}  # shared by the agents: their batches' moving cells differ only in the node name
        agents = [
            (
                f"load-{i:04d}",
                {
                    t: plans_and_payloads(tick, f"load-{i:04d}", t, not args.frozen_rows, plans)
                    for t in ticks_choices
                },
            )
            for i in range(max(counts))
        ]
        sample_rows = sum(p[3] for p in agents[0][1][k] if p[0] not in HEALTH_TABLES) // k
        health_rows = sum(p[3] for p in agents[0][1][k] if p[0] in HEALTH_TABLES)
        # per tick on average: the samplers' rows, and the health rows spread over their interval
        rows_per_node_tick = round(sample_rows + health_rows * args.interval_s / args.health_interval_s, 2)

        def collector_toml(
            name: str, ingest_processes: int, flush_max_s: float | None = args.agent_flush_max_s
        ) -> Path:
            path = work / name
            path.write_text(
                "[collector]\n"
                + ("" if args.diagnose else "diagnose_interval_s = 0\n")
                + ("" if flush_max_s is None else f"agent_flush_max_s = {flush_max_s}\n")
                + f"ingest_processes = {ingest_processes}\n"
                + f"store_threads = {args.store_threads}\n"
                + (
                    f"checkpoint_wal_bytes = {args.checkpoint_wal_mib << 20}\n"
                    if args.checkpoint_wal_mib
                    else ""
                )
                + (
                    ""
                    if args.commit_spacing_s is None
                    else f"group_commit_spacing_s = {args.commit_spacing_s!r}\n"
                )
            )
            return path

        cfg = collector_toml("collector.toml", 0)
        # (label, agents, lake shards, config, c4 executable or None for this one[, the generator's args])
        setups: list[tuple] = [("1 collector", n, 0, cfg, None) for n in counts]
        if args.compare_fixed_flush:
            fixed = argparse.Namespace(
                **{**vars(args), "agent_flush_max_s": 1.0, "agent_flush_wait_max_s": 0.0}
            )
            fixed_cfg = collector_toml("collector-fixed.toml", 0, flush_max_s=1.0)
            setups += [("1 collector, fixed flush", n, 0, fixed_cfg, None, fixed) for n in counts]
        if args.baseline_c4:
            # (a c4 from before the flush advice would refuse agent_flush_max_s in its config)
            base_cfg = collector_toml("collector-baseline.toml", 0, flush_max_s=None)
            baseline = [("1 collector (baseline c4)", n, 0, base_cfg, args.baseline_c4) for n in counts]
            this = [setup for setup in setups if setup[0] == "1 collector"]
            setups += baseline
            for round_ in range(2, args.rounds + 1):  # later rounds alternate which runs first
                setups += baseline + this if round_ % 2 == 0 else this + baseline
        if args.ingest_processes:
            setups.append(
                (
                    f"1 collector + {args.ingest_processes} ingest process{'es' if args.ingest_processes > 1 else ''}",
                    args.agents,
                    0,
                    collector_toml("collector-ingest.toml", args.ingest_processes),
                    None,
                )
            )
        if args.shards >= 2:
            setups += [
                ("1 lake shard", args.agents, 1, cfg, None),
                (f"{args.shards} lake shards", args.agents, args.shards, cfg, None),
            ]
        results = []
        runs: Counter = Counter()
        for label, n, shards, setup_cfg, command, *run_args in setups:
            runs[(label, n)] += 1
            print(f"c4 bench load: {label}: {n} agents ...", file=sys.stderr, flush=True)
            r = phase(run_args[0] if run_args else args, work, setup_cfg, label, shards, agents[:n], command)
            r["offered_rows_per_s"] = round(n * rows_per_node_tick / args.interval_s)
            r["round"] = runs[(label, n)]
            results.append(r)
    finally:
        if not args.workdir:  # gigabytes of stores: a temporary one goes, whatever happened
            shutil.rmtree(work, ignore_errors=True)
    one = next(r for r in results if r["setup"] == "1 collector" and r["agents"] == args.agents)
    by = {r["setup"]: r for r in results}
    lake1 = by.get("1 lake shard")
    lakeN = by.get(f"{args.shards} lake shards")
    speedup = lakeN["rows_per_s"] / lake1["rows_per_s"] if lake1 and lakeN and lake1["rows_per_s"] else None
    compared = [r for r in results if r["setup"] == "1 collector" and r["agents"] != args.agents]
    summary = {
        "agents": args.agents,
        "agents_connected": one["agents_connected"],
        "rows_per_node_tick": rows_per_node_tick,
        "ticks_per_batch": k,
        "offered_rows_per_s": one["offered_rows_per_s"],
        **{k: one[k] for k in RESULT_KEYS},
        # the same figures at --compare-agents, measured in this run before the --agents ones
        "compare": {k: compared[0][k] for k in ("agents", "offered_rows_per_s", *RESULT_KEYS)}
        if compared
        else None,
        "shard_speedup": None if speedup is None else round(speedup, 3),
        "cpus_per_collector": args.cpus_per_collector or None,
        "shard_speedup_vs_one_collector": None
        if not lakeN
        else round(lakeN["rows_per_s"] / max(1, one["rows_per_s"]), 3),
        "setups": results,
        "target_met": target_met(one),
        "rounds": baseline_rounds(results, args.agents) if args.baseline_c4 else None,
    }
    if summary["rounds"]:  # printed beside the other figures (the per-round lists are in the JSON)
        for key in ("this_ack_p99_s_median", "baseline_ack_p99_s_median"):
            summary[f"rounds_{key}"] = summary["rounds"][key]
    table = [
        {
            "setup": r["setup"] + (f", round {r['round']}" if args.rounds > 1 else ""),
            "agents": r["agents"],
            "offered rows/s": r["offered_rows_per_s"],
            "made rows/s": r["made_rows_per_s"],
            "rows/s": r["rows_per_s"],
            "ack p50 s": r["ack_p50_s"],
            "ack p99 s": r["ack_p99_s"],
            "data age p99 s": r["data_age_p99_s"],
            "flush advice s: agents": ", ".join(f"{a}: {n}" for a, n in r["flush_advice_at_end"].items()),
            "collectors CPU cores": r["collector_cpu_cores"],
            "of which kernel": r["collector_kernel_cpu_cores"],
            "load gen CPU cores": r["loadgen_cpu_cores"],
            "peak RSS MiB (sum)": r["collector_peak_rss_bytes"] / 2**20,
            "refused": r["refused"],
            "unacked": r["unacked"],
            "lost": r["lost"],
            "duplicated": r["duplicated"],
        }
        for r in results
    ]
    emit(
        f"c4 bench load: simulated 8-GPU nodes ({rows_per_node_tick} rows per {args.interval_s:g} s "
        f"tick, {sum(p[0] not in HEALTH_TABLES for p in agents[0][1][k])} batches"
        + (f" every {k} ticks" if k > 1 else "")
        + f", health rows every {args.health_interval_s:g} s"
        + f"), {args.duration_s:g} s measured per setup, on loopback"
        + (f"; shard speedup {speedup:.2f}x ({args.shards} lake shards / 1)" if speedup else "")
        + (
            f", each lake collector pinned to {args.cpus_per_collector} CPU(s)"
            if args.cpus_per_collector
            else ""
        ),
        table,
        summary,
        args.json,
    )
    return 0


def baseline_rounds(results: list[dict], agents: int) -> dict:
    """Per setup of a ``--baseline-c4`` comparison at ``agents``: ack p99, collector CPU and writer busy share
    of each round (in run order) and their medians, and in which rounds this code ran first."""
    import statistics

    out: dict = {}
    for key, label in (("this", "1 collector"), ("baseline", "1 collector (baseline c4)")):
        mine = [r for r in results if r["setup"] == label and r["agents"] == agents]
        for figure in ("ack_p99_s", "collector_cpu_cores", "writer_busy_share"):
            values = [r.get(figure) for r in mine]
            out[f"{key}_{figure}"] = values
            known = [v for v in values if v is not None]
            out[f"{key}_{figure}_median"] = round(statistics.median(known), 3) if known else None
    rounds = max((r["round"] for r in results), default=1)
    out["this_first_in_rounds"] = [n for n in range(1, rounds + 1) if n % 2 == 1]
    return out


#: The figures of one setup that the summary repeats (for --agents, and for --compare-agents).
RESULT_KEYS = (
    "rows_per_s",
    "made_rows_per_s",
    "generator_max_tick_lag_s",
    "ack_p50_s",
    "ack_p99_s",
    "data_age_p50_s",
    "data_age_p99_s",
    "flush_advice_at_end",
    "collector_cpu_cores",
    "collector_kernel_cpu_cores",
    "collector_threads",
    "collector_peak_rss_bytes",
    "loadgen_cpu_cores",
    "batches_made",
    "batches_sent",
    "spooled_at_end",
    "batches_acked",
    "refused",
    "unacked",
    "lost",
    "duplicated",
    "stream_errors",
    "agents_not_drained",
    "hello_retries",
    "reconnects",
    "window_s",
)


def target_met(r: dict) -> bool:
    """Issue 21's target: ack p99 under 1 s, every batch acknowledged, nothing refused or lost, and
    the rows committed in the window at least 99% of those offered."""
    return bool(
        r["ack_p99_s"] is not None
        and r["ack_p99_s"] < 1.0
        and r["lost"] == 0
        and r["unacked"] == 0
        and not r["refused"]
        and r["rows_per_s"] >= 0.99 * r["offered_rows_per_s"]
    )


def _counts(table) -> dict[str, int]:
    """(t, n) rows -> {t: n}."""
    return dict(zip(*(c.to_pylist() for c in table.columns), strict=True))


def _stored_in_file(db, sql: str) -> dict[str, int]:
    """Row counts from a stopped collector's DuckDB file, opened as the next collector would open it
    (rows a collector killed at its stop timeout left in its side file move in first)."""
    from c4.catalogue import load
    from c4.collector.store import Store

    store = Store(db, load())
    try:
        return _counts(store.con.execute(sql).to_arrow_table())
    finally:
        store.close()


def start_collectors(args, work, cfg, shards: int, command: str | None) -> tuple[list, object]:
    """The setup's collectors (and the lake's PostgreSQL, else None), serving."""
    import subprocess

    from c4.sim.procs import CollectorProcess, free_port, start_collector, wait_serving

    if command:  # another c4 executable: the same command line start_collector uses
        workdir = work / f"{cfg.stem}-baseline"
        workdir.mkdir(parents=True, exist_ok=True)
        address, db = f"127.0.0.1:{free_port()}", workdir / "c4.duckdb"
        with open(workdir / "collector.log", "ab") as log:
            proc = subprocess.Popen(
                [command, "collector", "--listen", address, "--db", str(db), "--config", str(cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_serving(address)
        except TimeoutError:
            proc.kill()
            raise
        return [CollectorProcess(proc, address, db)], None
    if not shards:
        return [start_collector(work / cfg.stem, extra=["--config", str(cfg)])], None
    from c4.sim.postgres import LocalPostgres

    pg = LocalPostgres().start()
    collectors = []
    try:
        for i in range(shards):
            name = f"s{i}"
            extra = [
                "--config",
                str(cfg),
                "--lake",
                pg.url,
                "--lake-data-path",
                str(work / f"lake-{shards}"),
                "--shard",
                name,
            ]
            n = args.cpus_per_collector
            cpus = set(range(i * n, (i + 1) * n)) if n else None
            collectors.append(start_collector(work / f"collector-{shards}-{name}", extra=extra, cpus=cpus))
    except BaseException:
        for c in collectors:
            c.stop()
        pg.stop()
        raise
    return collectors, pg


def phase(args, work, cfg, label: str, shards: int, per_agent: list, command: str | None = None) -> dict:
    """One setup: a collector with its DuckDB file (shards 0), or `shards` collectors writing one fresh
    DuckLake; ``command`` runs the collector with another c4 executable."""
    import asyncio
    import os
    import shutil
    import sys

    from c4.bench.agent_process import thread_shares
    from c4.query import query_arrow

    for old in work.glob("collector*"):  # a fresh store per setup, no earlier setup's left beside it
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    os.sync()  # an earlier setup's writes land before this one starts, not during it
    collectors, pg = start_collectors(args, work, cfg, shards, command)
    try:
        watches = [ProcWatch(c.proc.pid) for c in collectors]
        stats, m = asyncio.run(drive(args, [c.address for c in collectors], watches, per_agent))
        count_sql = (
            " UNION ALL ".join(
                f"SELECT '{t}' AS t, count(*) AS n FROM \"{t}\" WHERE starts_with(node, 'load-')"
                for t in stats.sent_rows_by_table
            )
            or "SELECT 'none' AS t, 0 AS n"
        )
        if shards:  # a lake: what its readers see through a collector
            stored = _counts(query_arrow(collectors[0].address, count_sql, timeout_s=300)[0])
        else:  # the file once the collector stopped: rows it took aside during a checkpoint moved in
            for c in collectors:
                c.stop()
            stored = _stored_in_file(collectors[0].db, count_sql)
    finally:
        for c in collectors:
            c.stop()
        if pg is not None:
            pg.stop()
    lost = sum(max(0, acked - stored.get(t, 0)) for t, acked in stats.acked_rows_by_table.items())
    # more rows stored than were ever sent (each batch once): a batch committed twice
    extra_rows = sum(max(0, stored.get(t, 0) - sent) for t, sent in stats.sent_rows_by_table.items())
    window_s = m["wall1"] - m["wall0"]
    p50, p99 = percentile(stats.latencies_s, 0.50), percentile(stats.latencies_s, 0.99)
    age_p50, age_p99 = percentile(stats.ages_s, 0.50), percentile(stats.ages_s, 0.99)
    by_5s: dict[int, list[float]] = {}
    start = m["start_perf"]
    for at, latency in stats.acks_at:
        by_5s.setdefault(int((at - start) // 5), []).append(latency)
    p99_by_5s = [round(percentile(v, 0.99) or 0.0, 3) for _, v in sorted(by_5s.items())]
    for kind, times in stats.errors.most_common(5):
        print(f"c4 bench load: {label}: {times} x {kind}", file=sys.stderr)
    return {
        "setup": label,
        "agents": len(per_agent),
        "collectors": len(collectors),
        "agents_connected": stats.connected,
        "rows_per_s": round(stats.rows_acked_in_window / window_s),
        # what the generator made in the window, and how late its ticks ran at worst: it kept up
        # when made_rows_per_s is the offered rate and the lag stays well under the interval
        "made_rows_per_s": round(stats.rows_made_in_window / window_s),
        "generator_max_tick_lag_s": round(stats.max_tick_lag_s, 3),
        "ack_p50_s": None if p50 is None else round(p50, 4),
        "ack_p99_s": None if p99 is None else round(p99, 4),
        # from a batch's first tick's sampling to its ack: the ack's latency plus the ticks it waited for
        "data_age_p50_s": None if age_p50 is None else round(age_p50, 4),
        "data_age_p99_s": None if age_p99 is None else round(age_p99, 4),
        # the collector's flush advice as the agents last had it: seconds -> agents (0: none)
        "flush_advice_at_end": {f"{a:g}": n for a, n in sorted(stats.advice_at_end.items())},
        # ack p99 of each 5 s from the first agent's start (ramp, window, drain): how a backlog came and went
        "ack_p99_by_5s": p99_by_5s,
        # ticks per batch -> flushes that held that many (the agents' own, advised, or waiting for acks)
        "flushes_by_ticks": {str(t): n for t, n in sorted(stats.flushes_by_ticks.items())},
        "collector_cpu_cores": round((m["cpu1"] - m["cpu0"]) / window_s, 3),
        # of which in the kernel: page faults, syscalls, fsync
        "collector_kernel_cpu_cores": round((m["sys1"] - m["sys0"]) / window_s, 3),
        # the (first) collector's threads by their OS names: cores each ran on, and the seconds per second each
        # waited runnable for a CPU (the host's contention, which an ack waits out on the writer and the loop)
        "collector_threads": thread_shares(watches[0].pid, m["threads0"], m["threads1"], window_s),
        # store transactions per second over the window (each costs ~26 ms of fixed work), and the share
        # of the window the writer was busy (committing, running jobs): what the flush advice steps on
        "commits_per_s": None
        if m.get("writer0") is None or m.get("writer1") is None
        else round((m["writer1"][0] - m["writer0"][0]) / window_s, 1),
        "writer_busy_share": None
        if m.get("writer0") is None or m.get("writer1") is None
        else round((m["writer1"][1] - m["writer0"][1]) / 1000 / window_s, 3),
        "collector_peak_rss_bytes": sum(w.peak_rss_bytes for w in watches),
        "loadgen_cpu_cores": round((m["self1"] - m["self0"]) / window_s, 3),
        "batches_made": stats.batches_made,
        "batches_sent": stats.batches_sent,
        "spooled_at_end": stats.spooled_at_end,
        "batches_acked": stats.batches_acked,
        "refused": stats.refused,
        "unacked": stats.unacked,
        "lost": lost,
        "duplicated": extra_rows,
        "stream_errors": stats.stream_errors,
        "agents_not_drained": stats.unacked_agents,
        "hello_retries": stats.hello_retries,
        "reconnects": stats.reconnects,
        "window_s": round(window_s, 2),
    }
