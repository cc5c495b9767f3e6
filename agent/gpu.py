"""GPU sampler: NVML through the facade, per GPU per tick, plus NVML Xid events."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

from c4.agent.nvml import Device, GpuLost, Nvml, NvmlUnavailable, Reading
from c4.agent.registry import SamplerContext
from c4.agent.sampler import Inventory, Rows, SourceUnavailable
from c4.agent.xid import event_row, gpu_lost_row
from c4.catalogue import load as load_catalogue
from c4.options import Meta
from c4.options import Options as SectionOptions

log = logging.getLogger("c4.agent.gpu")

#: non-field device queries: column -> (facade call, args)
QUERIES: dict[str, tuple[str, tuple]] = {
    "temp_gpu_c": ("nvmlDeviceGetTemperature", (0,)),
    "clock_sm_mhz": ("nvmlDeviceGetClockInfo", (1,)),
    "clock_mem_mhz": ("nvmlDeviceGetClockInfo", (2,)),
    "clocks_event_reasons": ("nvmlDeviceGetCurrentClocksEventReasons", ()),
    "pcie_gen_cur": ("nvmlDeviceGetCurrPcieLinkGeneration", ()),
    "pcie_gen_max": ("nvmlDeviceGetMaxPcieLinkGeneration", ()),
    "pcie_width_cur": ("nvmlDeviceGetCurrPcieLinkWidth", ()),
    "pcie_width_max": ("nvmlDeviceGetMaxPcieLinkWidth", ()),
}


#: QUERIES whose answer is fixed for a device (its link capability): asked until NVML gives a value, then kept
STATIC_QUERIES = frozenset({"pcie_gen_max", "pcie_width_max"})

#: NVLink byte counters that also get a per-second rate column
BYTE_COUNTERS = frozenset({"tx_data_bytes", "rx_data_bytes", "tx_link_bytes", "rx_link_bytes"})

#: The wide NVLink table: one row per GPU per tick, a list element per link
NVLINK_TABLE = "nvlink_gpu_samples"
#: Its rarely moving counters (the catalogue's on_change columns): sent on change and on keyframes
NVLINK_ON_CHANGE = tuple(c.name for c in load_catalogue()[NVLINK_TABLE].columns if c.on_change)
#: Default ticks between keyframes (every on-change counter sent): how soon a restarted reader converges
KEYFRAME_TICKS = 60
#: Readers fill an unsent counter from rows at most this old: a keyframe goes out at least twice as often
KEYFRAME_WITHIN_S = load_catalogue()[NVLINK_TABLE].element.keyframe_within_s


def rate_per_s(prev: Reading | None, cur: Reading) -> float | None:
    """Counter increase per second between two readings, by NVML's own timestamps (None on reset)."""
    if prev is None or prev.value is None or cur.value is None or cur.timestamp_us <= prev.timestamp_us:
        return None
    if cur.value < prev.value:
        return None  # counter reset (driver reload): no rate this tick
    return (cur.value - prev.value) * 1e6 / (cur.timestamp_us - prev.timestamp_us)


def rates_per_s(prev: tuple[list, list[int]] | None, cur: tuple[list, list[int]]) -> list[float | None]:
    """``rate_per_s`` element by element for a column of counters: (values, NVML timestamps µs) now and before."""
    if prev is None:
        return [None] * len(cur[0])
    return [
        (v - pv) * 1e6 / (t - pt) if v is not None and pv is not None and t > pt and v >= pv else None
        for v, t, pv, pt in zip(cur[0], cur[1], prev[0], prev[1], strict=True)
    ]


@dataclass(frozen=True)
class LinkLayout:
    """One GPU's NVLink request and where each column's link values sit in its answer (built at probe)."""

    request: list[
        tuple[str, int, int, int]
    ]  # (column, field id, scope id, scale): the GPU's, then link by link
    links: tuple[int, ...]  # the links, in row order
    columns: dict[str, list[int]]  # column -> position in the answer of each link's value (-1: none)
    per_link: list[list[int]]  # link (row order) -> positions of its values
    byte_columns: tuple[str, ...]  # columns that also get a _per_s rate
    # link (row order) -> (start, end) of its values when each link's sit side by side (as requested), else ()
    link_spans: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(
        cls,
        gpu_request: list[tuple[str, int, int, int]],
        request: list[tuple[str, int, int, int]],
        links: list[int],
    ) -> LinkLayout:
        """From the GPU's own fields, the link fields and the link of each: one NVML call reads them all."""
        order = sorted(set(links))
        at = {link: i for i, link in enumerate(order)}
        columns: dict[str, list[int]] = {}
        per_link: list[list[int]] = [[] for _ in order]
        for pos, ((col, _fid, _scope, _scale), link) in enumerate(
            zip(request, links, strict=True), len(gpu_request)
        ):
            columns.setdefault(col, [-1] * len(order))[at[link]] = pos
            per_link[at[link]].append(pos)
        byte = tuple(c for c in columns if c in BYTE_COUNTERS)
        spans = tuple((min(at), max(at) + 1) for at in per_link if at)
        if len(spans) != len(per_link) or any(max(at) - min(at) + 1 != len(at) for at in per_link):
            spans = ()
        return cls([*gpu_request, *request], tuple(order), columns, per_link, byte, spans)


def load_library(spec: str, arg: str):
    """The NVML stand-in a ``module:factory`` names, built with ``arg``; ValueError naming what is wrong.

    A plug-in point (as NCCL_PROFILER_PLUGIN is NCCL's): the agent names no stand-in itself.
    """
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr or "")
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"gpu sampler: nvml_library {spec!r} cannot be loaded: {exc}") from None
    return factory(arg) if arg else factory()


class GpuSampler:
    """Samples every GPU through the NVML facade; a lost GPU becomes an event and is skipped after."""

    name = "gpu"
    tables = ("gpu_samples", NVLINK_TABLE, "gpu_events", "gpu_processes")

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.gpu]``."""

        # "module:factory" of a stand-in with pynvml's call surface ("": the real NVML through pynvml),
        # called with nvml_library_arg; the digital twin names its fake NVML here
        nvml_library: str = ""
        nvml_library_arg: str = ""
        xid_events: bool = True
        # NVML's compute processes per GPU (gpu_processes): which process, hence which rank, runs where
        processes: bool = True
        # NVLink error counters are sent when they move and every this many ticks (a keyframe); 1: always
        keyframe_ticks: Annotated[int, Meta(ge=1)] = KEYFRAME_TICKS

    def __init__(
        self,
        nvml: Nvml,
        xid_events: bool = True,
        rank_of_gpu: dict[int, int] | None = None,
        processes: bool = True,
        keyframe_ticks: int = KEYFRAME_TICKS,
    ) -> None:
        self.nvml = nvml
        self.keyframe_ticks = keyframe_ticks
        # GPU index -> NVLink ticks sampled (a keyframe when tick % keyframe_ticks == 0)
        self._ticks: dict[int, int] = {}
        self._keyframe_at: dict[int, float] = {}  # GPU index -> time.monotonic() of its last keyframe
        self._sent: dict[tuple[int, str], list] = {}  # (GPU index, on-change column) -> the list last sent
        self.xid_events = xid_events
        self.processes = processes
        self.rank_of_gpu = rank_of_gpu or {}
        self.devices: list[Device] = []
        self.lost: set[int] = set()
        self._prev: dict[tuple, Reading] = {}
        self._static: dict[tuple[int, str], Any] = {}  # (GPU index, STATIC_QUERIES column) -> its value
        self._gpu_request = [(col, fid, 0, 1) for col, fid in nvml.fields.gpu.items()]
        self._gpu_columns = [col for col, _fid, _scope, _scale in self._gpu_request]
        self._gpu_at = {col: i for i, col in enumerate(self._gpu_columns)}  # the last, as a dict would keep
        self._link_plans: dict[int, LinkLayout] = {}

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        """Values NVML did not give (NULL in the rows), by reason: not_supported, function_not_found, unknown, ..."""
        return dict(self.nvml.skipped_by_reason)

    @property
    def records_skipped(self) -> int:
        """Every value NVML did not give, all reasons together."""
        return sum(self.nvml.skipped_by_reason.values())

    @property
    def errors_by_reason(self) -> dict[str, int]:
        """The values NVML refused with an error (not merely absent on this GPU or driver), by reason."""
        return self.nvml.errors_by_reason

    @classmethod
    def from_options(cls, opts: GpuSampler.Options, ctx: SamplerContext) -> GpuSampler:
        """Build from validated options (the real NVML unless another library is named)."""
        lib = load_library(opts.nvml_library, opts.nvml_library_arg) if opts.nvml_library else None
        ranks = {
            int(k[len("rank_of_gpu") :]): int(v)
            for k, v in ctx.labels.items()
            if k.startswith("rank_of_gpu") and v.isdigit() and k[len("rank_of_gpu") :].isdigit()
        }
        return cls(Nvml(lib), opts.xid_events, ranks, opts.processes, opts.keyframe_ticks)

    def probe(self) -> None:
        """Start NVML and enumerate GPUs; SourceUnavailable on a node without a driver or GPUs."""
        try:
            self.nvml.init()
            self.devices = self.nvml.devices()
        except NvmlUnavailable as exc:
            raise SourceUnavailable(str(exc)) from None
        if not self.devices:
            raise SourceUnavailable("NVML found no GPUs")
        for d in self.devices:
            request, links = [], []
            plan = self.nvml.fields.link_plan(d.arch)
            for link in range(d.nvlinks):
                items = plan.request(link)
                request += items
                links += [link] * len(items)
            self._link_plans[d.index] = LinkLayout.of(self._gpu_request, request, links)
        if self.xid_events:
            self.nvml.watch_xids(self.devices)

    def inventory(self, into: Inventory) -> None:
        """GPUs for Hello."""
        for d in self.devices:
            into.gpus.append(
                {
                    "index": d.index,
                    "uuid": d.uuid,
                    "pci_bus_id": d.pci_bus_id,
                    "name": d.name,
                    "memory_total_bytes": d.memory_total_bytes,
                }
            )

    def sample(self, now_ns: int) -> Rows:
        """One row per GPU, one wide NVLink row per GPU, one per compute process, and events (Xid, GPU lost)."""
        gpu_rows: list[dict[str, Any]] = []
        link_rows: list[dict[str, Any]] = []
        proc_rows: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        nvml_error = self.nvml.lib.NVMLError
        for d in self.devices:
            if d.index in self.lost:
                continue
            try:
                layout = self._link_plans[d.index]
                values, stamps = self.nvml.read_values(
                    d, layout.request
                )  # one call: the GPU's and its links'
                gpu_rows.append(self._sample_gpu(d, values, stamps))
                link_rows += self._sample_links(d, layout, values, stamps)
                if self.processes:
                    proc_rows += self._sample_processes(d)
            except (
                nvml_error
            ) as exc:  # the facade turns each into NULL: one here is a bug; keep the other GPUs
                reason = "gpu_sample_" + self.nvml.reason(getattr(exc, "value", None))
                self.nvml.skip(d.index, "gpu", reason, detail=exc)
            except GpuLost as exc:
                self.lost.add(d.index)
                log.error("GPU lost gpu=%d uuid=%s bus=%s", d.index, d.uuid, d.pci_bus_id)
                events.append(gpu_lost_row("nvml", str(exc), d.pci_bus_id, d.index, d.uuid))
        by_key = {d.key: d for d in self.devices}
        for key, xid in self.nvml.poll_xids():
            d = by_key.get(key)
            events.append(
                event_row(
                    xid,
                    "nvml",
                    f"NVML Xid critical error event {xid}",
                    d.pci_bus_id if d else "",
                    d.index if d else None,
                    d.uuid if d else "",
                )
            )
        return {
            "gpu_samples": gpu_rows,
            NVLINK_TABLE: link_rows,
            "gpu_events": events,
            "gpu_processes": proc_rows,
        }

    def _sample_gpu(self, d: Device, values: list, stamps: list[int]) -> dict[str, Any]:
        """The GPU's row from its field values (the first of ``values``) and its other NVML calls."""
        nv = self.nvml
        n = len(self._gpu_request)
        at = self._gpu_at  # column -> position in the answer
        row: dict[str, Any] = {
            "gpu_index": d.index,
            "gpu_uuid": d.uuid,
            "pci_bus_id": d.pci_bus_id,
            "gpu_name": d.name,
            "rank": self.rank_of_gpu.get(d.index),
            "mem_total_bytes": d.memory_total_bytes,
        }
        row["nvml_ts_us"] = max(stamps[:n], default=None) or None
        row.update(zip(self._gpu_columns, values[:n], strict=True))
        power_mw = row.pop("power_mw", None)
        row["power_w"] = power_mw / 1000.0 if power_mw is not None else None
        if "energy_mj" in at:
            energy = Reading(values[at["energy_mj"]], stamps[at["energy_mj"]])
            rate = rate_per_s(self._prev.get((d.index, "energy_mj")), energy)
            row["power_from_energy_w"] = rate / 1000.0 if rate is not None else None
            self._prev[(d.index, "energy_mj")] = energy
        for col in ("pcie_tx_bytes", "pcie_rx_bytes"):
            if col in at:
                cur = Reading(values[at[col]], stamps[at[col]])
                row[f"{col}_per_s"] = rate_per_s(self._prev.get((d.index, col)), cur)
                self._prev[(d.index, col)] = cur
        util = nv.call(d, "nvmlDeviceGetUtilizationRates")
        row["util_gpu_pct"] = float(util.gpu) if util is not None else None
        row["util_mem_pct"] = float(util.memory) if util is not None else None
        mem = nv.call(d, "nvmlDeviceGetMemoryInfo")
        if mem is not None:
            row["mem_used_bytes"] = int(mem.used)
        static = self._static
        for col, (fn, args) in QUERIES.items():
            if col in STATIC_QUERIES:
                value = static.get((d.index, col))
                if value is None:
                    value = static[(d.index, col)] = nv.call(d, fn, *args)
                row[col] = value
            else:
                row[col] = nv.call(d, fn, *args)
        return row

    def _sample_processes(self, d: Device) -> list[dict[str, Any]]:
        """One row per compute process NVML lists on the GPU (none when NVML will not say)."""
        return [
            {
                "gpu_index": d.index,
                "gpu_uuid": d.uuid,
                "pci_bus_id": d.pci_bus_id,
                "pid": p.pid,
                "used_memory_bytes": p.used_memory_bytes,
            }
            for p in self.nvml.compute_processes(d) or ()
        ]

    def _sample_links(
        self, d: Device, layout: LinkLayout, values: list, stamps: list[int]
    ) -> list[dict[str, Any]]:
        """The GPU's wide NVLink row: a list per column, element i for link i (none without NVLinks)."""
        if not layout.links:
            return []
        values.append(None)  # position -1 of a link a column has no field for
        stamps.append(0)
        row: dict[str, Any] = {"gpu_index": d.index, "gpu_uuid": d.uuid, "link": list(layout.links)}
        for col, at in layout.columns.items():
            row[col] = [values[i] for i in at]
        # per link, the newest NVML timestamp of a value it gave (the values all given: of its slice)
        if layout.link_spans and None not in values[:-1]:
            row["nvml_ts_us"] = [max(stamps[a:b]) or None for a, b in layout.link_spans]
        else:
            row["nvml_ts_us"] = [
                max((stamps[i] for i in at if values[i] is not None), default=0) or None
                for at in layout.per_link
            ]
        prev = self._prev
        for col in layout.byte_columns:
            at = layout.columns[col]
            cur = (row[col], [stamps[i] for i in at])
            key = (d.index, col)
            row[col + "_per_s"] = rates_per_s(prev.get(key), cur)
            prev[key] = cur
        self._drop_unchanged(d.index, row, len(layout.links))
        return [row]

    def _drop_unchanged(self, index: int, row: dict[str, Any], n: int) -> None:
        """Leave out (NULL list) each on-change counter equal to what was last sent, except on keyframes.

        A carried list always has one element per link (NULL where the GPU does not report it), so a
        NULL list can only mean "not sent: unchanged".
        """
        tick = self._ticks.get(index, 0)
        self._ticks[index] = tick + 1
        now_s = time.monotonic()  # long ticks too: a keyframe within half of what readers look back
        keyframe = (
            tick % self.keyframe_ticks == 0 or now_s - self._keyframe_at[index] >= KEYFRAME_WITHIN_S / 2
        )
        if keyframe:
            self._keyframe_at[index] = now_s
        for col in NVLINK_ON_CHANGE:
            values = row.get(col) or [None] * n
            key = (index, col)
            if keyframe or self._sent.get(key) != values:
                row[col] = values
                self._sent[key] = values
            else:
                row[col] = None

    def close(self) -> None:
        """Shut NVML down."""
        self.nvml.shutdown()
