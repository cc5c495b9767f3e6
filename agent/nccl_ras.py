"""NCCL RAS: poll the local RAS service (default localhost:28028) for communicator and rank health.

Protocol (NCCL's ncclras client): send `CLIENT PROTOCOL <v>`, read `SERVER PROTOCOL <v>`, then
`SET FORMAT json` (NCCL >= 2.27, answered `OK`) and `VERBOSE STATUS`; the server writes the report
and closes the connection. A RAS that is not listening is "no data", logged once per state change.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

from pydantic import BaseModel, ConfigDict

from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows

log = logging.getLogger("c4.agent.nccl_ras")
CLIENT_PROTOCOL = 2
MAX_REPORT_BYTES = 16 << 20


class RasError(RuntimeError):
    """The RAS service answered something unexpected."""


def query_ras(address: str, timeout_s: float) -> dict[str, Any]:
    """One VERBOSE STATUS report as JSON (raises OSError when RAS is not there)."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host or "localhost", int(port)), timeout=timeout_s) as sock:
        f = sock.makefile("rwb")
        f.write(f"CLIENT PROTOCOL {CLIENT_PROTOCOL}\n".encode())
        f.flush()
        hello = f.readline().decode(errors="replace").strip()
        if not hello.startswith("SERVER PROTOCOL"):
            raise RasError(f"unexpected RAS greeting {hello!r}")
        f.write(b"SET FORMAT json\n")
        f.flush()
        ok = f.readline().decode(errors="replace").strip()
        if ok != "OK":
            raise RasError(f"RAS refused JSON format ({ok!r}): NCCL older than 2.27?")
        f.write(b"VERBOSE STATUS\n")
        f.flush()
        data = f.read(MAX_REPORT_BYTES)
    try:
        report = json.loads(data.decode("utf-8", "replace"))
    except json.JSONDecodeError as exc:
        raise RasError(f"RAS report is not JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting too deep
        raise RasError(f"RAS report is not JSON we can read: {type(exc).__name__}") from None
    if not isinstance(report, dict):
        raise RasError(f"RAS report is a JSON {type(report).__name__}, not an object")
    return report


def _ranks(v: Any) -> list[int]:
    if isinstance(v, list):
        return [int(x) for x in v if isinstance(x, int) or (isinstance(x, str) and x.isdecimal())] + [
            int(x["rank"]) for x in v if isinstance(x, dict) and isinstance(x.get("rank"), int)
        ]
    return []


def status_rows(report: dict[str, Any], skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per communicator (missing/dead ranks listed) and one per rank with its collective count.

    A communicator whose entry cannot be read is left out alone, its error appended to ``skipped``."""
    rows = []
    comms = report.get("communicators") or report.get("comms") or []
    for c in comms if isinstance(comms, list) else []:
        if not isinstance(c, dict):
            continue
        try:
            rows += _communicator_rows(c)
        except Exception as exc:  # one odd communicator never loses the others
            if skipped is not None:
                skipped.append(f"communicator {str(c.get('hash', '?'))[:40]}: {type(exc).__name__}: {exc}")
    return rows


def _communicator_rows(c: dict[str, Any]) -> list[dict[str, Any]]:
    """The communicator's row and its ranks' rows."""
    rows = []
    comm = str(c.get("hash") or c.get("comm_hash") or c.get("id") or "")
    missing = _ranks(c.get("missing_ranks") or c.get("missing"))
    dead = _ranks(c.get("dead_ranks") or c.get("dead"))
    rows.append(
        {
            "comm_hash": comm,
            "scope": "communicator",
            "rank": None,
            "n_ranks": c.get("size") or c.get("nranks"),
            "status": str(c.get("status", "")),
            "errors": str(c.get("errors", "") or ""),
            "coll_count": None,
            "missing_ranks": ",".join(map(str, missing)),
            "dead_ranks": ",".join(map(str, dead)),
            "n_missing": len(missing),
            "n_dead": len(dead),
        }
    )
    for r in c.get("ranks") or []:
        if isinstance(r, dict) and isinstance(r.get("rank"), int):
            rows.append(
                {
                    "comm_hash": comm,
                    "scope": "rank",
                    "rank": r["rank"],
                    "n_ranks": c.get("size") or c.get("nranks"),
                    "status": str(r.get("status", "")),
                    "errors": str(r.get("errors", "") or ""),
                    "coll_count": r.get("coll_count", r.get("collectives")),
                    "missing_ranks": "",
                    "dead_ranks": "",
                    "n_missing": None,
                    "n_dead": None,
                    "host": str(r.get("host", "") or ""),
                    "pid": r.get("pid"),
                    "gpu": r.get("gpu"),
                }
            )
    return rows


class RasSampler:
    """Polls NCCL RAS every few ticks; absence of RAS is not an error."""

    name = "nccl_ras"
    tables = ("nccl_ras_status",)

    class Options(BaseModel):
        """Config keys of ``[agent.samplers.nccl_ras]``."""

        model_config = ConfigDict(extra="forbid")
        address: str = "localhost:28028"
        timeout_s: float = 2.0
        poll_every_ticks: int = 10

    def __init__(
        self, address: str = "localhost:28028", timeout_s: float = 2.0, poll_every_ticks: int = 10
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.poll_every_ticks = max(1, poll_every_ticks)
        self._ticks = 0
        self.available: bool | None = None
        self.errors = 0
        self.records_skipped = 0  # communicators in reports that could not be read

    @classmethod
    def from_options(cls, opts: RasSampler.Options, ctx: SamplerContext) -> RasSampler:
        """Build from validated options."""
        return cls(opts.address, opts.timeout_s, opts.poll_every_ticks)

    def probe(self) -> None:
        """Nothing to check up front: RAS comes and goes with the training job."""

    def sample(self, now_ns: int) -> Rows:
        """A status report every poll_every_ticks ticks; nothing when RAS is down."""
        tick, self._ticks = self._ticks, self._ticks + 1
        if tick % self.poll_every_ticks:
            return {}
        try:
            report = query_ras(self.address, self.timeout_s)
        except (OSError, RasError) as exc:
            if self.available is not False:  # log state changes, not every poll
                log.info("NCCL RAS not reachable, no data address=%s reason=%s", self.address, exc)
            self.available = False
            self.errors += 1
            return {}
        if self.available is not True:
            log.info("NCCL RAS reachable address=%s", self.address)
        self.available = True
        skipped: list[str] = []
        rows = status_rows(report, skipped)
        if skipped:
            self.records_skipped += len(skipped)
            log.warning(
                "RAS communicators skipped count=%d first=%s skipped_total=%d",
                len(skipped),
                skipped[0],
                self.records_skipped,
            )
        return {"nccl_ras_status": rows}

    def close(self) -> None:
        """Nothing held open between polls."""
