"""InfiniBand links from ``ibnetdiscover`` (the command, or a topology file an operator or cron writes)
into fabric_neighbors: the subnet's view of every cable, from any one host of the fabric.

A sweep touches every node of the subnet, so it runs rarely (``poll_every_ticks``, default 60) and on
one or a few hosts, not every node; the file form reads ``ibnetdiscover > FILE`` when it changes.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Annotated

from c4.agent.ibnetdiscover import topology_rows
from c4.agent.lldp import read_changed, run_command, too_large
from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows, SourceUnavailable
from c4.options import Meta, field
from c4.options import Options as SectionOptions

log = logging.getLogger("c4.agent.ib_fabric")


class IbNetDiscoverSampler:
    """Every link of the InfiniBand subnet, as ibnetdiscover reports it."""

    name = "ibnetdiscover"
    tables = ("fabric_neighbors",)

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.ibnetdiscover]``."""

        command: list[str] = field(default_factory=lambda: ["ibnetdiscover"])
        path: Path | None = None  # a saved ibnetdiscover output, read when it changes
        timeout_s: Annotated[float, Meta(gt=0)] = 120.0
        poll_every_ticks: Annotated[int, Meta(ge=1)] = 60

    def __init__(self, opts: IbNetDiscoverSampler.Options) -> None:
        self.opts = opts
        self.skipped_by_reason: Counter = Counter()
        self.amended_by_reason: Counter = Counter()  # links kept with their text made safe, per reason
        self._seen: tuple[int, int] | None = None
        self._rows: list[dict] = []  # the saved file's rows, sent every poll until it changes
        self._ticks = 0
        self.errors = 0
        self._failing = ""

    @classmethod
    def from_options(cls, opts: IbNetDiscoverSampler.Options, ctx: SamplerContext) -> IbNetDiscoverSampler:
        """Build from validated options."""
        return cls(opts)

    @property
    def records_skipped(self) -> int:
        """Lines of the topology that could not be read."""
        return sum(self.skipped_by_reason.values())

    @property
    def source_error(self) -> str:
        """Why the configured topology file cannot be read now ('' when it can, or when none is configured)."""
        return self._failing if self.opts.path is not None else ""

    def probe(self) -> None:
        """The command must exist (a file is waited for)."""
        if self.opts.path is None and not shutil.which(self.opts.command[0]):
            raise SourceUnavailable(f"{self.opts.command[0]} not found (install infiniband-diags)")

    def sample(self, now_ns: int) -> Rows:
        """Every link, every poll_every_ticks ticks (a saved file's, re-read when it changed, until it goes)."""
        tick, self._ticks = self._ticks, self._ticks + 1
        if tick % self.opts.poll_every_ticks:
            return {}
        try:
            if self.opts.path is not None:
                data, self._seen = read_changed(self.opts.path, self._seen)
                if data is None:
                    return {"fabric_neighbors": self._rows} if self._rows else {}
            else:
                data = run_command(self.opts.command, self.opts.timeout_s)
        except OSError as exc:
            self.errors += 1
            self._rows, self._seen = [], None
            if str(exc) != self._failing:
                log.warning("ibnetdiscover not readable error=%s", exc)
            self._failing = str(exc)
            return {}
        self._failing = ""
        skipped: Counter = Counter()
        rows = self._rows = self._parse(data, skipped)
        if skipped:
            self.skipped_by_reason.update(skipped)
            log.warning("ibnetdiscover lines skipped reasons=%s", dict(skipped))
        return {"fabric_neighbors": rows} if rows else {}

    def _parse(self, data: bytes, skipped: Counter) -> list[dict]:
        """The links of one topology; none (counted) when it is over MAX_REPORT_BYTES."""
        if too_large(data, skipped):
            return []
        return topology_rows(data.decode("utf-8", "replace"), skipped, self.amended_by_reason)

    def close(self) -> None:
        """Nothing held open."""
