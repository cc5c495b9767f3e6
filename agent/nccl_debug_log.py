"""NCCL_DEBUG=INFO logs: communicator init, rings, trees and channel connections -> the topology table."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows, SourceUnavailable
from c4.agent.tail import DEFAULT_MAX_BYTES_PER_TICK, DirectoryTailer

log = logging.getLogger("c4.agent.nccl_debug_log")

PREFIX = re.compile(r"^(?P<host>[^\s:]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\] NCCL INFO (?P<msg>.*)$")
INIT = re.compile(
    r"ncclCommInitRank\w* comm (?P<comm>0x[0-9a-f]+) rank (?P<rank>\d+) nranks (?P<nranks>\d+) cudaDev (?P<cuda>\d+)"
    r"(?: nvmlDev (?P<nvml>\d+))? busId (?P<bus>[0-9a-f]+)(?: commId (?P<commid>0x[0-9a-f]+))?"
)
# `Channel 02/0 : 3[3] -> 11[3] [send] via NET/IB/3/GDRDMA` and the older `15[a01d0] -> 0[7000] [receive]`
CONN = re.compile(
    r"Channel (?P<ch>\d+)(?:/\d+)? : (?P<src>\d+)\[(?P<srcdev>[0-9a-f]+)\] -> (?P<dst>\d+)\[(?P<dstdev>[0-9a-f]+)\]"
    r"(?: \[(?P<dir>send|receive)\])? via (?P<via>\S+)"
)
RING = re.compile(r"^Channel (?P<ch>\d+)/(?P<n>\d+) :\s+(?P<ranks>(?:\d+\s*)+)$")
TREES = re.compile(r"^Trees (?P<trees>(?:\[\d+\] [-\d/>]+\s*)+)$")
TREE = re.compile(r"\[(?P<ch>\d+)\] (?P<spec>[-\d/>]+)")


class DebugLogParser:
    """Stateful parser: lines of one process are attributed to the communicator it last initialized."""

    def __init__(self) -> None:
        self.current: dict[int, dict[str, Any]] = {}  # pid -> {comm, rank, nranks, bus}
        self.garbage = 0

    def parse(self, line: str) -> list[dict[str, Any]]:
        """Topology rows for one log line ([] for lines that carry none)."""
        m = PREFIX.match(line.strip())
        if not m:
            return []
        pid, msg = int(m["pid"]), m["msg"].strip()
        base = {"hostname": m["host"], "pid": pid, "cuda_dev": int(m["dev"])}
        init = INIT.search(msg)
        if init:
            comm = {
                "comm_id": init["commid"] or init["comm"],
                "rank": int(init["rank"]),
                "n_ranks": int(init["nranks"]),
                "bus_id": init["bus"],
                "nvml_dev": int(init["nvml"]) if init["nvml"] else None,
            }
            self.current[pid] = comm
            return [
                {
                    **base,
                    **comm,
                    "kind": "init",
                    "channel": None,
                    "peer_rank": None,
                    "direction": "",
                    "transport": "",
                    "nic_index": None,
                    "gdr": None,
                    "detail": msg,
                }
            ]
        comm = self.current.get(pid, {"comm_id": "", "rank": None, "n_ranks": None, "bus_id": ""})
        conn = CONN.search(msg)
        if conn:
            src, dst, via = int(conn["src"]), int(conn["dst"]), conn["via"]
            me = comm.get("rank")
            direction = {"send": "send", "receive": "recv"}.get(conn["dir"] or "", "")
            if not direction and me is not None:
                direction = "send" if src == me else "recv"
            peer = dst if direction == "send" else src
            parts = via.split("/")
            transport = parts[0]
            nic = None
            if transport == "NET" and len(parts) > 2:
                nic_txt = parts[2].split("(")[0]
                nic = int(nic_txt) if nic_txt.isdigit() else None
            return [
                {
                    **base,
                    **comm,
                    "rank": src if direction == "send" else dst,
                    "kind": "conn",
                    "channel": int(conn["ch"]),
                    "peer_rank": peer,
                    "direction": direction,
                    "transport": transport,
                    "nic_index": nic,
                    "gdr": "GDRDMA" in via,
                    "detail": msg,
                }
            ]
        ring = RING.match(msg)
        if ring and comm.get("rank") is not None:
            order = [int(x) for x in ring["ranks"].split()]
            me = comm["rank"]
            if me in order:
                i = order.index(me)
                return [
                    {
                        **base,
                        **comm,
                        "kind": "ring",
                        "channel": int(ring["ch"]),
                        "peer_rank": order[(i + 1) % len(order)],
                        "direction": "send",
                        "transport": "",
                        "nic_index": None,
                        "gdr": None,
                        "detail": msg,
                    }
                ]
        trees = TREES.match(msg)
        if trees:
            out = []
            for t in TREE.finditer(trees["trees"]):
                out.append(
                    {
                        **base,
                        **comm,
                        "kind": "tree",
                        "channel": int(t["ch"]),
                        "peer_rank": None,
                        "direction": "",
                        "transport": "",
                        "nic_index": None,
                        "gdr": None,
                        "detail": t["spec"],
                    }
                )
            return out
        return []


class DebugLogSampler:
    """Tails NCCL_DEBUG_FILE logs in a directory into nccl_topology rows."""

    name = "nccl_debug_log"
    tables = ("nccl_topology",)

    class Options(BaseModel):
        """Config keys of ``[agent.samplers.nccl_debug_log]``."""

        model_config = ConfigDict(extra="forbid")
        log_dir: Path | None = None  # where NCCL_DEBUG_FILE points (e.g. /var/log/nccl/%h.%p.log)
        pattern: str = "*"
        max_bytes_per_tick: int = Field(DEFAULT_MAX_BYTES_PER_TICK, ge=4096)  # the rest comes next tick

    def __init__(
        self, log_dir: Path | None, pattern: str = "*", max_bytes_per_tick: int = DEFAULT_MAX_BYTES_PER_TICK
    ) -> None:
        self.log_dir = log_dir
        self.tailer = DirectoryTailer(log_dir, pattern) if log_dir else None
        self.max_bytes_per_tick = max_bytes_per_tick
        self.parsers: dict[Path, DebugLogParser] = {}
        self.records_skipped = 0  # lines that looked like NCCL's but could not be parsed

    @classmethod
    def from_options(cls, opts: DebugLogSampler.Options, ctx: SamplerContext) -> DebugLogSampler:
        """Build from validated options."""
        return cls(opts.log_dir, opts.pattern, opts.max_bytes_per_tick)

    def probe(self) -> None:
        """The log directory must be configured and exist."""
        if self.log_dir is None or not self.log_dir.is_dir():
            raise SourceUnavailable(f"NCCL debug log dir {self.log_dir} not found (set log_dir)")

    def sample(self, now_ns: int) -> Rows:
        """Topology rows from every new log line."""
        assert self.tailer is not None
        rows = []
        for path, line in self.tailer.read_lines(self.max_bytes_per_tick):
            try:  # one bad line is skipped alone, whatever it raises
                rows += self.parsers.setdefault(path, DebugLogParser()).parse(line)
            except Exception as exc:
                self.records_skipped += 1
                if self.records_skipped in (1, 10, 100, 1000) or self.records_skipped % 10000 == 0:
                    log.warning(
                        "unparsable NCCL log line skipped file=%s error=%s: %.80s skipped_total=%d",
                        path.name,
                        type(exc).__name__,
                        exc,
                        self.records_skipped,
                    )
        return {"nccl_topology": rows}

    def close(self) -> None:
        """Close the files."""
        if self.tailer:
            self.tailer.close()
