"""A fake NVML with pynvml's call surface and pynvml's own objects, driven by a scenario.

It answers as the real library does: handles are ``c_nvmlDevice_t`` pointers (a new pointer object on
every call, and a fresh one in every event's ``c_nvmlEventData_t``), field values come back as an
array of ``c_nvmlFieldValue_t`` with the value type NVML uses for the field, errors are pynvml's
per-code ``NVMLError`` subclasses, and what a GPU supports follows its architecture and the driver:

- A100 (``"arch": "ampere"``): NVLink data throughput 138/139 (KiB, scopeId = link) and the per-link
  error ids 32-58/96-119; no NVLink5 counters.
- H100 (``"hopper"``): 138/139 and 161-163 (scopeId = link); the per-link flit-CRC, replay and
  recovery ids are not supported (NVML change log, R525), nor are the NVLink5 counters.
- B200 (``"blackwell"``): the NVLink5 counters 201-222 (scopeId = link, R560+); 161-163 not
  supported (R565 change log). 138/139 are not answered (not established for Blackwell).
- A field newer than ``driver_version`` is not supported; ``nvmlDeviceGetCurrentClocksEventReasons``
  is missing (``NVMLError_FunctionNotFound``) before R535, as it is in the real library.
- ``nvmlDeviceGetFieldValues`` with no field ids raises ``NVMLError_InvalidArgument`` (the fake's
  choice: the agent must never ask for nothing).

Scenario (dict or JSON file, re-read when its mtime changes so a simulator can drive it)::

    {"start_s": 1764000000.0,                # t = 0 of rates/events (default: when loaded)
     "clock_s": 1764000042.0,                # optional: "now" as a simulator sees it (default: wall clock)
     "driver_version": "580.65.06",          # default 580.65.06
     "gpus": [{"index": 0, "uuid": "GPU-...", "pci_bus_id": "00000000:18:00.0",
               "name": "NVIDIA H100 80GB HBM3", "arch": "hopper", "memory_total_bytes": 85899345920,
               "nvlinks": 18,
               "gauges": {"util_gpu_pct": 97, "power_mw": 650000, ...},
               "counters": {"energy_mj": 1.0e9, "nvlink_tx_bytes": 0, ...},   # values at t = 0
               "rates": {"energy_mj": 650000, "pcie_tx_bytes": 2.0e9, ...},   # increase per second
               "link_counters": {"3": {"replay_errors": 7}},                 # one link's own values
               "not_supported": ["temp_mem_c"],
               "errors": {"nvmlDeviceGetTemperature": "unknown", "temp_mem_c": "no_permission"},
               "value_types": {"temp_mem_c": "double"},
               "processes": [{"pid": 4242, "used_memory_bytes": 7.5e10}],   # compute processes
               "lost_at_s": null}],
     "events": [{"at_s": 30, "gpu": 3, "xid": 79}]}

Per-link quantities (``nvlink_<q>`` in counters/rates applies to every link): tx_bytes, rx_bytes,
crc_flit_errors, crc_data_errors, replay_errors, recovery_errors, link_crc_errors, rx_error_packets,
link_recovery_events, link_recovery_failed_events, symbol_errors. ``errors`` names a pynvml call or a
quantity and the NVML error it answers with (unknown, no_permission, reset_required, ...).
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynvml

#: How an agent's GPU sampler names this library (``nvml_library``; ``nvml_library_arg`` = the scenario).
FAKE_NVML = "c4.sim.fake_nvml:FakeNvml"

NVMLError = pynvml.NVMLError
DEFAULT_DRIVER = "580.65.06"
ARCH_CODES = {
    "ampere": pynvml.NVML_DEVICE_ARCH_AMPERE,
    "hopper": pynvml.NVML_DEVICE_ARCH_HOPPER,
    "blackwell": pynvml.NVML_DEVICE_ARCH_BLACKWELL,
}
VALUE_TYPES = {"double": 0, "uint": 1, "ulong": 2, "ull": 3, "sll": 4, "sint": 5, "ushort": 6}
#: c_nvmlFieldValue_t's bytes: fieldId, scopeId, timestamp, latencyUsec, valueType, nvmlReturn, value union
_FV = struct.Struct("@IIqqII8s")
_DOUBLE = struct.Struct("=d")
_VALUE_AT = 32  # where the value union starts in one c_nvmlFieldValue_t
#: Bits of each integer member of the value union (ctypes keeps the low bits of a value too large).
_UNION_BITS = {"uint": 32, "ulong": 64, "ull": 64, "sll": 64, "sint": 32, "ushort": 16}
assert _FV.size == ctypes.sizeof(pynvml.c_nvmlFieldValue_t) and pynvml.c_nvmlFieldValue_t.value.offset == 32
ALL = frozenset(ARCH_CODES)
#: gpuInstanceId / computeInstanceId of a process on a GPU without MIG.
NO_INSTANCE = 0xFFFFFFFF

#: Per-GPU field id -> (quantity, value type, driver branch that has it)
GPU_FIELDS: dict[int, tuple[str, str, int]] = {
    3: ("ecc_sbe_volatile", "ull", 450),
    4: ("ecc_dbe_volatile", "ull", 450),
    5: ("ecc_sbe_aggregate", "ull", 450),
    6: ("ecc_dbe_aggregate", "ull", 450),
    82: ("temp_mem_c", "uint", 450),
    83: ("energy_mj", "ull", 450),
    91: ("nvlinks", "uint", 450),
    94: ("pcie_replay_count", "uint", 450),
    142: ("remapped_rows_correctable", "uint", 450),
    143: ("remapped_rows_uncorrectable", "uint", 450),
    144: ("remapped_rows_pending", "uint", 450),
    145: ("remapped_rows_failure", "uint", 450),
    186: ("power_mw", "uint", 535),
    197: ("pcie_tx_bytes", "ull", 555),
    198: ("pcie_rx_bytes", "ull", 555),
    230: ("recovery_action", "uint", 565),
}
GAUGE_FIELDS = {"temp_mem_c", "power_mw", "recovery_action"} | {
    q for q, _, _ in GPU_FIELDS.values() if "remapped" in q
}

#: NVLink field id read with scopeId = link -> (quantity, divisor, architectures, driver branch)
SCOPED_LINK_FIELDS: dict[int, tuple[str, int, frozenset, int]] = {
    138: ("tx_bytes", 1024, frozenset({"ampere", "hopper"}), 450),
    139: ("rx_bytes", 1024, frozenset({"ampere", "hopper"}), 450),
    161: ("replay_errors", 1, frozenset({"hopper"}), 520),
    162: ("recovery_errors", 1, frozenset({"hopper"}), 520),
    163: ("link_crc_errors", 1, frozenset({"hopper"}), 520),
    202: ("tx_bytes", 1, frozenset({"blackwell"}), 560),
    204: ("rx_bytes", 1, frozenset({"blackwell"}), 560),
    208: ("rx_error_packets", 1, frozenset({"blackwell"}), 560),
    214: ("link_recovery_failed_events", 1, frozenset({"blackwell"}), 560),
    215: ("link_recovery_events", 1, frozenset({"blackwell"}), 560),
    221: ("symbol_errors", 1, frozenset({"blackwell"}), 560),
}
#: Per-link NVLink error ids (scopeId 0): id -> (quantity, link); A100 only (removed on Hopper in R525)
_LEGACY_IDS = {
    "crc_flit_errors": [32, 33, 34, 35, 36, 37, 96, 97, 98, 99, 100, 101],
    "crc_data_errors": [39, 40, 41, 42, 43, 44, 102, 103, 104, 105, 106, 107],
    "replay_errors": [46, 47, 48, 49, 50, 51, 108, 109, 110, 111, 112, 113],
    "recovery_errors": [53, 54, 55, 56, 57, 58, 114, 115, 116, 117, 118, 119],
}
PER_LINK_FIELDS = {fid: (q, link) for q, ids in _LEGACY_IDS.items() for link, fid in enumerate(ids)}

#: Gauges a GPU reports when the scenario leaves them out.
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


def error(reason: str | int) -> NVMLError:
    """pynvml's own exception for a reason name ('unknown', 'no_permission', ...) or a return code."""
    code = reason if isinstance(reason, int) else getattr(pynvml, "NVML_ERROR_" + reason.upper())
    return NVMLError(code)


_U64_MASK = (1 << 64) - 1


def _union_bytes(vtype: str, value: Any) -> bytes:
    """The 8 bytes of a c_nvmlValue_t holding ``value`` as ``vtype`` (what setting its member writes)."""
    if vtype == "double":
        return _DOUBLE.pack(float(value))
    return (int(value) & ((1 << _UNION_BITS[vtype]) - 1)).to_bytes(8, sys.byteorder)


def _driver_branch(version: str) -> int:
    return int(str(version).split(".")[0])


class FakeNvml:
    """Answers the pynvml calls the facade uses, from a scenario, with pynvml's structures and errors."""

    NVMLError = NVMLError

    def __init__(self, scenario: dict | Path | str, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._path = None if isinstance(scenario, dict) else Path(scenario)
        self._mtime: tuple | float = 0.0
        self._scenario: dict = scenario if isinstance(scenario, dict) else {}
        self._loaded_at = clock()
        self._delivered: set[int] = set()
        self._initialized = False
        self._devices: list[Any] = []  # one struct_c_nvmlDevice_t per GPU: handles point at these
        self._index_of: dict[int, int] = {}
        self._index_of_handle: dict[int, tuple[Any, int | None]] = {}  # id(handle) -> (handle, GPU index)
        self._checked_at = -1.0
        self._plans: dict[tuple, tuple] = {}  # (gpu, field ids) -> nvmlDeviceGetFieldValues' plan
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
            raise error("uninitialized") from None
        # a writer that replaces the file atomically gives it a new inode, even within one mtime tick
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        if force or version != self._mtime:
            self._scenario = json.loads(self._path.read_text())
            self._plans.clear()
            self._mtime = version

    @property
    def gpus(self) -> list[dict]:
        """The scenario's GPUs."""
        return self._scenario.get("gpus", [])

    @property
    def driver(self) -> int:
        """The driver branch the scenario runs (580 for 580.65.06)."""
        return _driver_branch(self._scenario.get("driver_version") or DEFAULT_DRIVER)

    def _now(self) -> float:
        """Epoch seconds: the scenario's own clock when a simulator drives it (clock_s), else the real one."""
        return float(self._scenario.get("clock_s") or self.clock())

    def _t(self) -> float:
        return self._now() - float(self._scenario.get("start_s") or self._loaded_at)

    def _handle(self, index: int) -> Any:
        while len(self._devices) <= index:
            dev = pynvml.struct_c_nvmlDevice_t()
            self._index_of[ctypes.addressof(dev)] = len(self._devices)
            self._devices.append(dev)
        return ctypes.pointer(self._devices[index])  # a new c_nvmlDevice_t object each time, as pynvml

    def _index(self, h: Any) -> int | None:
        """The GPU index a handle points at; a handle object seen before is not cast again (a sampler asks
        with the same handles every tick: the fake's own cost is part of what ``c4 bench agent`` measures)."""
        hit = self._index_of_handle.get(id(h))
        if hit is not None and hit[0] is h:
            return hit[1]
        index = self._index_of.get(ctypes.cast(h, ctypes.c_void_p).value or 0)
        if len(self._index_of_handle) > 1024:
            self._index_of_handle.clear()
        self._index_of_handle[id(h)] = (h, index)  # keeps h alive: its id is not reused meanwhile
        return index

    def _gpu(self, h: Any, call: str = "") -> dict:
        if not self._initialized:
            raise error("uninitialized")
        self._reload()
        index = self._index(h)
        if index is None or index >= len(self.gpus):
            raise error("invalid_argument")
        g = self.gpus[index]
        lost = g.get("lost_at_s")
        if lost is not None and self._t() >= lost:
            raise error("gpu_is_lost")
        if call and call in g.get("errors", {}):
            raise error(g["errors"][call])
        return g

    def _gauge(self, h: Any, column: str, call: str) -> Any:
        g = self._gpu(h, call)
        if column in g.get("not_supported", ()):
            raise error("not_supported")
        if column in g.get("errors", {}):
            raise error(g["errors"][column])
        return g.get("gauges", {}).get(column, DEFAULT_GAUGES.get(column, 0))

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

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        """A c_nvmlDevice_t for GPU ``index`` (a new pointer object per call)."""
        if index >= len(self.gpus):
            raise error("invalid_argument")
        h = self._handle(index)
        self._gpu(h, "nvmlDeviceGetHandleByIndex")
        return h

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        """GPU UUID."""
        return self._gpu(h, "nvmlDeviceGetUUID")["uuid"]

    def nvmlDeviceGetName(self, h: Any) -> str:
        """Product name."""
        return self._gpu(h, "nvmlDeviceGetName").get("name", "NVIDIA H100 80GB HBM3")

    def nvmlDeviceGetArchitecture(self, h: Any) -> int:
        """NVML_DEVICE_ARCH_* of the GPU."""
        return ARCH_CODES[self._gpu(h, "nvmlDeviceGetArchitecture").get("arch", "hopper")]

    def nvmlDeviceGetPciInfo(self, h: Any) -> Any:
        """nvmlPciInfo_t with ``busId`` as NVML formats it."""
        info = pynvml.nvmlPciInfo_t()
        info.busId = self._gpu(h, "nvmlDeviceGetPciInfo")["pci_bus_id"].encode()
        return info

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:
        """c_nvmlMemory_t: framebuffer total/free/used bytes."""
        g = self._gpu(h, "nvmlDeviceGetMemoryInfo")
        total = int(g.get("memory_total_bytes", 85899345920))
        used = int(self._gauge(h, "mem_used_bytes", "nvmlDeviceGetMemoryInfo"))
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        """c_nvmlUtilization_t: GPU and memory utilization percent."""
        call = "nvmlDeviceGetUtilizationRates"
        return pynvml.c_nvmlUtilization_t(
            gpu=int(self._gauge(h, "util_gpu_pct", call)), memory=int(self._gauge(h, "util_mem_pct", call))
        )

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        """GPU temperature, C."""
        return int(self._gauge(h, "temp_gpu_c", "nvmlDeviceGetTemperature"))

    def nvmlDeviceGetClockInfo(self, h: Any, clock_type: int) -> int:
        """SM (1) or memory (2) clock, MHz."""
        return int(
            self._gauge(h, "clock_sm_mhz" if clock_type == 1 else "clock_mem_mhz", "nvmlDeviceGetClockInfo")
        )

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any) -> int:
        """Clock event reason bitmask (R535+; older drivers lack the function)."""
        if self.driver < 535:
            raise error("function_not_found")
        return int(self._gauge(h, "clocks_event_reasons", "nvmlDeviceGetCurrentClocksEventReasons"))

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: Any) -> int:
        """The same bitmask under its pre-R535 name."""
        return int(self._gauge(h, "clocks_event_reasons", "nvmlDeviceGetCurrentClocksThrottleReasons"))

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: Any) -> int:
        """Current PCIe generation."""
        return int(self._gauge(h, "pcie_gen_cur", "nvmlDeviceGetCurrPcieLinkGeneration"))

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: Any) -> int:
        """Maximum PCIe generation."""
        return int(self._gauge(h, "pcie_gen_max", "nvmlDeviceGetMaxPcieLinkGeneration"))

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: Any) -> int:
        """Current PCIe width (lanes)."""
        return int(self._gauge(h, "pcie_width_cur", "nvmlDeviceGetCurrPcieLinkWidth"))

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: Any) -> int:
        """Maximum PCIe width (lanes)."""
        return int(self._gauge(h, "pcie_width_max", "nvmlDeviceGetMaxPcieLinkWidth"))

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        """The GPU's compute processes as pynvml returns them: c_nvmlProcessInfo_v3_t made friendly objects,
        usedGpuMemory None where NVML reports NVML_VALUE_NOT_AVAILABLE."""
        g = self._gpu(h, "nvmlDeviceGetComputeRunningProcesses")
        if "processes" in g.get("not_supported", ()):
            raise error("not_supported")
        out = []
        for p in g.get("processes", ()):
            used = p.get("used_memory_bytes")
            info = pynvml.c_nvmlProcessInfo_v3_t(
                pid=int(p["pid"]),
                usedGpuMemory=pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value if used is None else int(used),
                gpuInstanceId=NO_INSTANCE,
                computeInstanceId=NO_INSTANCE,
            )
            obj = pynvml.nvmlStructToFriendlyObject(info)
            if obj.usedGpuMemory == pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value:
                obj.usedGpuMemory = None
            out.append(obj)
        return out

    def nvmlDeviceGetFieldValues(self, h: Any, field_ids: list) -> Any:
        """An array of c_nvmlFieldValue_t, one per (field id, scope id) or field id, as pynvml returns."""
        if not field_ids:
            raise error("invalid_argument")
        if self._index(h) == 0:
            self._checked_at = -1.0  # a sampler reads GPU 0 first each tick: look for a rewritten scenario
        g = self._gpu(h, "nvmlDeviceGetFieldValues")
        ts_us = int(self._now() * 1e6)
        t = max(0.0, self._t())
        arch = g.get("arch", "hopper")
        nvlinks = int(g.get("nvlinks", 0))
        driver = self.driver
        overrides = g.get("value_types", {})
        n = len(field_ids)
        key = (id(g), tuple(field_ids))
        plan = self._plans.get(key) if self._path is not None else None
        if plan is None:
            plan = self._plan(g, field_ids, arch, nvlinks, driver, overrides)
            if self._path is not None:  # a dict scenario may be changed in place: planned per call
                self._plans[key] = plan
        template, moving = plan
        buf = bytearray(template)  # packed, then copied into pynvml's own structure array
        memoryview(buf).cast("q")[1 :: _FV.size // 8] = array("q", [ts_us]) * n  # every timestamp
        words = memoryview(buf).cast("Q")  # the value unions of unsigned long longs, written in place
        per_field, value_word = _FV.size // 8, _VALUE_AT // 8
        for i, base, rate, divisor, vtype in moving:
            raw = base + rate * t
            value = int(raw) // divisor if divisor else raw
            if vtype == "ull":
                words[i * per_field + value_word] = int(value) & _U64_MASK
            else:
                at = i * _FV.size + _VALUE_AT
                buf[at : at + 8] = _union_bytes(vtype, value)
        words.release()
        return (pynvml.c_nvmlFieldValue_t * n).from_buffer_copy(buf)

    def _plan(self, g: dict, field_ids: list, arch: str, nvlinks: int, driver: int, overrides: dict) -> tuple:
        """(packed answers at t = 0 without timestamps, the items whose value moves with t).

        What a field answers (its error, value type, value at t = 0 and rate) depends only on the
        scenario, so a file-backed fake plans each request once per scenario version: the per-call
        work is then a copy, the timestamps and the moving counters, as cheap as the real library's
        call is next to the agent's own work (``c4 bench agent`` measures the agent, not this fake)."""
        buf = bytearray(_FV.size * len(field_ids))
        moving = []
        for i, item in enumerate(field_ids):
            fid, scope = item if isinstance(item, tuple) else (item, 0)
            try:
                base, rate, divisor, vtype = self._field_parts(g, fid, scope, arch, nvlinks, driver)
            except NVMLError as exc:
                _FV.pack_into(buf, i * _FV.size, fid, scope, 0, 0, 0, exc.value, b"")
                continue
            vtype = overrides.get(self._quantity(fid), vtype) if overrides else vtype
            value = int(base) // divisor if divisor else base
            _FV.pack_into(
                buf, i * _FV.size, fid, scope, 0, 0, VALUE_TYPES[vtype], 0, _union_bytes(vtype, value)
            )
            if rate:
                moving.append((i, base, rate, divisor, vtype))
        return bytes(buf), moving

    @staticmethod
    def _quantity(fid: int) -> str:
        for table in (GPU_FIELDS, SCOPED_LINK_FIELDS, PER_LINK_FIELDS):
            if fid in table:
                return table[fid][0]
        return ""

    def _field_parts(self, g: dict, fid: int, scope: int, arch: str, nvlinks: int, driver: int) -> tuple:
        """(value at t = 0, increase per second, integer divisor or 0, value type) of one field, or the
        NVMLError NVML puts in its nvmlReturn. The value at t is ``base + rate * t`` (as an int divided
        by the divisor when there is one)."""
        if fid in GPU_FIELDS:
            q, vtype, since = GPU_FIELDS[fid]
            if q == "nvlinks":
                return nvlinks, 0, 0, vtype
            self._check(g, q, driver >= since)
            if q in GAUGE_FIELDS:
                return g.get("gauges", {}).get(q, DEFAULT_GAUGES.get(q, 0)), 0, 0, vtype
            return g.get("counters", {}).get(q, 0), g.get("rates", {}).get(q, 0), 0, vtype
        if fid in SCOPED_LINK_FIELDS:
            q, divisor, archs, since = SCOPED_LINK_FIELDS[fid]
            link = scope
        elif fid in PER_LINK_FIELDS:
            (q, link), divisor, archs, since = PER_LINK_FIELDS[fid], 1, frozenset({"ampere"}), 450
        else:
            raise error("not_supported")  # an id this fake does not model
        self._check(g, "nvlink_" + q, arch in archs and driver >= since)
        if link >= nvlinks:
            raise error("invalid_argument")
        own = g.get("link_counters", {}).get(str(link), {})
        if q in own:
            return own[q], 0, divisor, "ull"
        return (
            g.get("counters", {}).get("nvlink_" + q, 0),
            g.get("rates", {}).get("nvlink_" + q, 0),
            divisor,
            "ull",
        )

    @staticmethod
    def _check(g: dict, quantity: str, supported: bool) -> None:
        if (
            not supported
            or quantity in g.get("not_supported", ())
            or quantity.removeprefix("nvlink_") in g.get("not_supported", ())
        ):
            raise error("not_supported")
        if quantity in g.get("errors", {}):
            raise error(g["errors"][quantity])

    def nvmlEventSetCreate(self) -> Any:
        """An event set (an opaque pointer)."""
        return ctypes.c_void_p(1)

    def nvmlDeviceRegisterEvents(self, h: Any, event_types: int, event_set: Any) -> None:
        """Accept registration of Xid events."""
        self._gpu(h, "nvmlDeviceRegisterEvents")

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        """The next scripted Xid whose time has come as c_nvmlEventData_t (a fresh device pointer), else Timeout."""
        self._reload()
        t = self._t()
        for i, ev in enumerate(self._scenario.get("events", [])):
            if i not in self._delivered and t >= float(ev.get("at_s", 0)):
                self._delivered.add(i)
                data = pynvml.c_nvmlEventData_t()
                data.device = self._handle(int(ev["gpu"]))
                data.eventType = pynvml.nvmlEventTypeXidCriticalError
                data.eventData = int(ev["xid"])
                return data
        raise error("timeout")


#: Each GPU model the fake plays: name, architecture, memory, NVLinks, busy power (mW), memory clock
MODELS: dict[str, dict] = {
    "A100": {
        "name": "NVIDIA A100-SXM4-80GB",
        "arch": "ampere",
        "memory_total_bytes": 85899345920,
        "nvlinks": 12,
        "power_mw": 380000,
        "clock_mem_mhz": 1593,
    },
    "H100": {
        "name": "NVIDIA H100 80GB HBM3",
        "arch": "hopper",
        "memory_total_bytes": 85899345920,
        "nvlinks": 18,
        "power_mw": 640000,
        "clock_mem_mhz": 2619,
    },
    "B200": {
        "name": "NVIDIA B200",
        "arch": "blackwell",
        "memory_total_bytes": 193273528320,
        "nvlinks": 18,
        "power_mw": 950000,
        "clock_mem_mhz": 3996,
    },
}


def gpu_entry(index: int, node_seed: int = 0, nvlinks: int | None = None, model: str = "H100") -> dict:
    """One busy GPU of a model (A100, H100, B200) for a scenario."""
    m = MODELS[model]
    bus = [0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB][index % 8]
    return {
        "index": index,
        "uuid": f"GPU-{node_seed:08x}-{index:04x}-4c4c-8000-{index:012x}",
        "pci_bus_id": f"00000000:{bus:02X}:00.0",
        "name": m["name"],
        "arch": m["arch"],
        "memory_total_bytes": m["memory_total_bytes"],
        "nvlinks": m["nvlinks"] if nvlinks is None else nvlinks,
        "gauges": {
            "util_gpu_pct": 97,
            "util_mem_pct": 45,
            "mem_used_bytes": 71 << 30,
            "power_mw": m["power_mw"],
            "temp_gpu_c": 62,
            "temp_mem_c": 71,
            "clock_mem_mhz": m["clock_mem_mhz"],
        },
        "counters": {"energy_mj": 5.0e9},
        "rates": {
            "energy_mj": m["power_mw"],
            "pcie_tx_bytes": 2.0e9,
            "pcie_rx_bytes": 2.0e9,
            "nvlink_tx_bytes": 2.5e10,
            "nvlink_rx_bytes": 2.5e10,
        },
    }


def eight_gpu_scenario(node_seed: int = 0, model: str = "H100", driver_version: str = DEFAULT_DRIVER) -> dict:
    """An 8-GPU node of one model (A100, H100, B200) at full training load."""
    return {
        "start_s": None,
        "driver_version": driver_version,
        "gpus": [gpu_entry(i, node_seed, model=model) for i in range(8)],
        "events": [],
    }
