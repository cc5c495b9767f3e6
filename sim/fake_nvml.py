"""A fake NVML with pynvml's call surface, driven by a scenario: tests and the demo run the real sampler.

Scenario (dict or JSON file, re-read when its mtime changes so a simulator can drive it)::

    {"start_s": 1764000000.0,                # t = 0 of rates/events (default: when loaded)
     "clock_s": 1764000042.0,                # optional: "now" as a simulator sees it (default: wall clock)
     "gpus": [{"index": 0, "uuid": "GPU-...", "pci_bus_id": "00000000:18:00.0",
               "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 85899345920, "nvlinks": 18,
               "gauges": {"util_gpu_pct": 97, "power_mw": 650000, ...},
               "counters": {"energy_mj": 1.0e9, "nvlink_tx_bytes": 0, ...},   # values at t = 0
               "rates": {"energy_mj": 650000, "pcie_tx_bytes": 2.0e9, ...},   # increase per second
               "not_supported": ["temp_mem_c"],            # "processes": the process list too
               "processes": [{"pid": 4242, "used_memory_bytes": 7.5e10}],   # compute processes
               "lost_at_s": null}],
     "events": [{"at_s": 30, "gpu": 3, "xid": 79}]}

Counter columns prefixed ``nvlink_`` apply to every link of the GPU.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from c4.agent.gpu_fields import load_fields

#: How an agent's GPU sampler names this library (``nvml_library``; ``nvml_library_arg`` = the scenario).
FAKE_NVML = "c4.sim.fake_nvml:FakeNvml"

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_GPU_IS_LOST = 15
nvmlEventTypeXidCriticalError = 8
NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
#: gpuInstanceId / computeInstanceId of a process on a GPU without MIG.
NO_INSTANCE = 0xFFFFFFFF


class NVMLError(Exception):
    """Same shape as pynvml.NVMLError: ``value`` holds the NVML return code."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


#: Gauges an H100-like GPU reports when the scenario leaves them out.
DEFAULT_GAUGES: dict[str, float] = {
    "util_gpu_pct": 0,
    "util_mem_pct": 0,
    "mem_used_bytes": 0,
    "power_mw": 70000,
    "temp_gpu_c": 35,
    "temp_mem_c": 40,
    "clock_sm_mhz": 1980,
    "clock_mem_mhz": 2619,
    "clocks_event_reasons": 0,
    "pcie_gen_cur": 5,
    "pcie_gen_max": 5,
    "pcie_width_cur": 16,
    "pcie_width_max": 16,
    "remapped_rows_correctable": 0,
    "remapped_rows_uncorrectable": 0,
    "remapped_rows_pending": 0,
    "remapped_rows_failure": 0,
    "recovery_action": 0,
}


class FieldValue:
    """Same attributes as pynvml's c_nvmlFieldValue_t; ``value`` (the union) is the object itself."""

    __slots__ = (
        "fieldId",
        "scopeId",
        "timestamp",
        "latencyUsec",
        "valueType",
        "nvmlReturn",
        "value",
        "ullVal",
    )

    def __init__(self, field_id: int, scope: int, ts_us: int, ret: int, value: int) -> None:
        self.fieldId, self.scopeId, self.timestamp, self.latencyUsec = field_id, scope, ts_us, 0
        self.valueType, self.nvmlReturn, self.value, self.ullVal = (
            NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
            ret,
            self,
            value,
        )


class FakeHandle:
    """A device handle (pynvml returns an opaque pointer)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"FakeHandle({self.index})"


class FakeNvml:
    """Answers the pynvml subset the facade uses, from a scenario."""

    NVMLError = NVMLError

    def __init__(self, scenario: dict | Path | str, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._path = None if isinstance(scenario, dict) else Path(scenario)
        self._mtime: tuple | float = 0.0
        self._scenario: dict = scenario if isinstance(scenario, dict) else {}
        self._loaded_at = clock()
        self._delivered: set[int] = set()
        self._initialized = False
        self.fields = load_fields()
        self._plans: dict[tuple[int, int], tuple[str, str, int]] = {}
        self._plan_lists: dict[tuple, list[tuple]] = {}
        self._checked_at = -1.0
        self._reload(force=True)

    # --- scenario -----------------------------------------------------------
    def _reload(self, force: bool = False) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if not force and now - self._checked_at < 0.2:  # stat the file at most 5 times a second
            return
        self._checked_at = now
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            raise NVMLError(NVML_ERROR_UNINITIALIZED) from None
        # a writer that replaces the file atomically gives it a new inode, even within one mtime tick
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        if force or version != self._mtime:
            self._scenario = json.loads(self._path.read_text())
            self._mtime = version

    @property
    def gpus(self) -> list[dict]:
        """The scenario's GPUs."""
        return self._scenario.get("gpus", [])

    def _now(self) -> float:
        """Epoch seconds: the scenario's own clock when a simulator drives it (clock_s), else the real one."""
        return float(self._scenario.get("clock_s") or self.clock())

    def _t(self) -> float:
        return self._now() - float(self._scenario.get("start_s") or self._loaded_at)

    def _gpu(self, h: FakeHandle) -> dict:
        if not self._initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self._reload()
        g = self.gpus[h.index]
        lost = g.get("lost_at_s")
        if lost is not None and self._t() >= lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return g

    def _gauge(self, h: FakeHandle, column: str) -> Any:
        g = self._gpu(h)
        if column in g.get("not_supported", ()):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return g.get("gauges", {}).get(column, DEFAULT_GAUGES.get(column, 0))

    def _counter(self, g: dict, column: str) -> float:
        base = g.get("counters", {}).get(column, 0)
        rate = g.get("rates", {}).get(column, 0)
        return base + rate * max(0.0, self._t())

    # --- pynvml surface -----------------------------------------------------
    def nvmlInit(self) -> None:
        """Start (re-reads the scenario file)."""
        self._reload(force=True)
        self._initialized = True

    def nvmlShutdown(self) -> None:
        """Stop."""
        self._initialized = False

    def nvmlDeviceGetCount(self) -> int:
        """Number of GPUs in the scenario."""
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        """Handle of GPU ``index``."""
        self._gpu(FakeHandle(index))
        return FakeHandle(index)

    def nvmlDeviceGetUUID(self, h: FakeHandle) -> str:
        """GPU UUID."""
        return self._gpu(h)["uuid"]

    def nvmlDeviceGetName(self, h: FakeHandle) -> str:
        """Product name."""
        return self._gpu(h).get("name", "NVIDIA H100 80GB HBM3")

    def nvmlDeviceGetPciInfo(self, h: FakeHandle) -> SimpleNamespace:
        """PCI info with ``busId`` as NVML formats it."""
        return SimpleNamespace(busId=self._gpu(h)["pci_bus_id"].encode())

    def nvmlDeviceGetMemoryInfo(self, h: FakeHandle) -> SimpleNamespace:
        """Framebuffer total/used/free bytes."""
        g = self._gpu(h)
        total = int(g.get("memory_total_bytes", 85899345920))
        used = int(self._gauge(h, "mem_used_bytes"))
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, h: FakeHandle) -> SimpleNamespace:
        """GPU and memory utilization percent."""
        return SimpleNamespace(
            gpu=int(self._gauge(h, "util_gpu_pct")), memory=int(self._gauge(h, "util_mem_pct"))
        )

    def nvmlDeviceGetTemperature(self, h: FakeHandle, sensor: int) -> int:
        """GPU temperature, C."""
        return int(self._gauge(h, "temp_gpu_c"))

    def nvmlDeviceGetClockInfo(self, h: FakeHandle, clock_type: int) -> int:
        """SM (1) or memory (2) clock, MHz."""
        return int(self._gauge(h, "clock_sm_mhz" if clock_type == 1 else "clock_mem_mhz"))

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeHandle) -> int:
        """Throttle reason bitmask."""
        return int(self._gauge(h, "clocks_event_reasons"))

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: FakeHandle) -> int:
        """Current PCIe generation."""
        return int(self._gauge(h, "pcie_gen_cur"))

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: FakeHandle) -> int:
        """Maximum PCIe generation."""
        return int(self._gauge(h, "pcie_gen_max"))

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: FakeHandle) -> int:
        """Current PCIe width (lanes)."""
        return int(self._gauge(h, "pcie_width_cur"))

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: FakeHandle) -> int:
        """Maximum PCIe width (lanes)."""
        return int(self._gauge(h, "pcie_width_max"))

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeHandle) -> list[SimpleNamespace]:
        """The GPU's compute processes, as pynvml's friendly objects (usedGpuMemory None when unknown)."""
        g = self._gpu(h)
        if "processes" in g.get("not_supported", ()):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return [
            SimpleNamespace(
                pid=int(p["pid"]),
                usedGpuMemory=None if p.get("used_memory_bytes") is None else int(p["used_memory_bytes"]),
                gpuInstanceId=NO_INSTANCE,
                computeInstanceId=NO_INSTANCE,
            )
            for p in g.get("processes", ())
        ]

    def nvmlDeviceGetFieldValues(self, h: FakeHandle, field_ids: list) -> list[FieldValue]:
        """Field values with NVML timestamps (microseconds), as c_nvmlFieldValue_t-like objects."""
        if h.index == 0:  # a sampler reads GPU 0 first each tick: look for a rewritten scenario once per tick
            self._checked_at = -1.0
        g = self._gpu(h)
        ts_us = int(self._now() * 1e6)
        t = max(0.0, self._t())
        unsupported = g.get("not_supported", ())
        gauges, counters, rates = g.get("gauges", {}), g.get("counters", {}), g.get("rates", {})
        link_counters = g.get("link_counters", {})
        nvlinks = int(g.get("nvlinks", 0))
        out = []
        key = tuple(field_ids)
        plans = self._plan_lists.get(key)
        if plans is None:
            plans = self._plan_lists[key] = [
                (fid, scope, *self._plan(fid, scope))
                for fid, scope in (item if isinstance(item, tuple) else (item, 0) for item in field_ids)
            ]
        for fid, scope, kind, column, link in plans:
            ret, value = NVML_SUCCESS, 0
            if kind == "none" or column in unsupported:
                ret = NVML_ERROR_NOT_SUPPORTED
            elif kind == "nvlink_count":
                value = nvlinks
            elif kind == "gauge":
                value = int(gauges.get(column, DEFAULT_GAUGES.get(column, 0)))
            elif kind == "counter":
                value = int(counters.get(column, 0) + rates.get(column, 0) * t)
            elif link >= nvlinks:
                ret = NVML_ERROR_NOT_SUPPORTED
            else:
                per_link = link_counters.get(str(link)) if link_counters else None
                if per_link and column in per_link:
                    value = int(per_link[column])
                else:
                    name = "nvlink_" + column
                    value = int(counters.get(name, 0) + rates.get(name, 0) * t)
            out.append(FieldValue(fid, scope, ts_us, ret, value))
        return out

    def _plan(self, fid: int, scope: int) -> tuple[str, str, int]:
        """(kind, column, link) of a field id: cached decoding of the field catalogue."""
        key = (fid, scope)
        plan = self._plans.get(key)
        if plan is None:
            f = self.fields
            column = f.column_of.get(fid)
            if fid == 91:
                plan = ("nvlink_count", "", 0)
            elif column is None:
                plan = ("none", "", 0)
            elif column in f.gpu:
                plan = ("gauge" if f.gpu_kinds[column] == "gauge" else "counter", column, 0)
            else:
                plan = ("nvlink", column, f.link_of_legacy_id.get(fid, scope))
            self._plans[key] = plan
        return plan

    def nvmlEventSetCreate(self) -> object:
        """An event set."""
        return object()

    def nvmlDeviceRegisterEvents(self, h: FakeHandle, event_types: int, event_set: object) -> None:
        """Accept registration of Xid events."""
        self._gpu(h)

    def nvmlEventSetWait_v2(self, event_set: object, timeout_ms: int) -> SimpleNamespace:
        """The next scripted Xid whose time has come, else NVML_ERROR_TIMEOUT."""
        self._reload()
        t = self._t()
        for i, ev in enumerate(self._scenario.get("events", [])):
            if i not in self._delivered and t >= float(ev.get("at_s", 0)):
                self._delivered.add(i)
                return SimpleNamespace(
                    device=FakeHandle(int(ev["gpu"])),
                    eventType=nvmlEventTypeXidCriticalError,
                    eventData=int(ev["xid"]),
                    gpuInstanceId=0,
                    computeInstanceId=0,
                )
        raise NVMLError(NVML_ERROR_TIMEOUT)


def gpu_entry(index: int, node_seed: int = 0, nvlinks: int = 18) -> dict:
    """One busy H100-like GPU for a scenario."""
    bus = [0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB][index % 8]
    return {
        "index": index,
        "uuid": f"GPU-{node_seed:08x}-{index:04x}-4c4c-8000-{index:012x}",
        "pci_bus_id": f"00000000:{bus:02X}:00.0",
        "name": "NVIDIA H100 80GB HBM3",
        "memory_total_bytes": 85899345920,
        "nvlinks": nvlinks,
        "gauges": {
            "util_gpu_pct": 97,
            "util_mem_pct": 45,
            "mem_used_bytes": 71 << 30,
            "power_mw": 640000,
            "temp_gpu_c": 62,
            "temp_mem_c": 71,
        },
        "counters": {"energy_mj": 5.0e9},
        "rates": {
            "energy_mj": 640000,
            "pcie_tx_bytes": 2.0e9,
            "pcie_rx_bytes": 2.0e9,
            "nvlink_tx_bytes": 2.5e10,
            "nvlink_rx_bytes": 2.5e10,
        },
    }


def eight_gpu_scenario(node_seed: int = 0) -> dict:
    """An 8 x H100 node (18 NVLinks each) at full training load."""
    return {"start_s": None, "gpus": [gpu_entry(i, node_seed) for i in range(8)], "events": []}
