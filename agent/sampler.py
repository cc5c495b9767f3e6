"""The Sampler seam: what every telemetry source implements, and its startup policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

#: Rows a sampler returns from one tick: table name -> list of row dicts.
#: ``ts``, ``node`` and ``job`` may be left out; the agent fills them in.
Rows = Mapping[str, Sequence[Mapping[str, Any]]]


class SourceUnavailable(Exception):
    """The source does not exist on this node (no GPU, no RDMA device, no log file)."""


class StartupPolicy(StrEnum):
    """What the agent does when a sampler's probe fails (after Telegraf)."""

    ERROR = "error"  # refuse to start the agent
    IGNORE = "ignore"  # run without this sampler, state 'unavailable'
    RETRY = "retry"  # keep probing every interval until it succeeds


@runtime_checkable
class Sampler(Protocol):
    """A telemetry source. One instance per source per node; no package-level state."""

    #: Short unique name (``host``, ``gpu``, ``nic``, ``nccl_inspector`` ...).
    name: str
    #: Catalogue tables this sampler writes.
    tables: tuple[str, ...]

    def probe(self) -> None:
        """Check the source exists; raise SourceUnavailable (or any error) if not."""
        ...

    def sample(self, now_ns: int) -> Rows:
        """Read the source once and return rows per table. Must not block for long."""
        ...

    def close(self) -> None:
        """Release files, handles and libraries."""
        ...


@dataclass
class Inventory:
    """What a node has, reported to the collector on Hello. Samplers may add to it."""

    gpus: list[dict[str, Any]] = field(default_factory=list)
    nics: list[dict[str, Any]] = field(default_factory=list)


@runtime_checkable
class InventoryProvider(Protocol):
    """A sampler that can describe the hardware it found (GPUs, NIC ports)."""

    def inventory(self, into: Inventory) -> None:
        """Append what this source found to the inventory."""
        ...


@runtime_checkable
class SkipCounter(Protocol):
    """A sampler that parses records (log lines, JSON objects) and counts the ones it had to skip."""

    #: Source records that could not be parsed and were skipped (each alone: its neighbours are kept).
    records_skipped: int


@runtime_checkable
class SkipReasons(Protocol):
    """A skip counter that also says why: records skipped per reason (their sum is ``records_skipped``)."""

    #: reason -> records skipped for it (e.g. ``{"header": 2, "conn": 1}``).
    skipped_by_reason: dict[str, int]
