"""The NVML facade: the only module that talks to NVML (pynvml or a stand-in with its call surface).

A lost GPU becomes GpuLost; any other NVML error (not supported, function not found on an older
driver, unknown, reset required, no permission, ...) makes only that value None, counted by reason
and logged once per GPU, value and reason. Every per-tick read of field counters is one batched
nvmlDeviceGetFieldValues call per GPU.
"""

from __future__ import annotations

import ctypes
import logging
import struct
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

from c4.agent.gpu_fields import FieldCatalogue, load_fields

log = logging.getLogger("c4.agent.nvml")

#: Reasons a value is missing that say "this GPU or driver does not have it" (not an error).
ABSENT = frozenset({"not_supported", "function_not_found"})

#: Calls newer drivers renamed: if the new name is missing (an older driver), the old one answers.
FALLBACKS = {"nvmlDeviceGetCurrentClocksEventReasons": "nvmlDeviceGetCurrentClocksThrottleReasons"}

#: nvmlValueType_t -> member of the value union
_VALUE_MEMBER = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


class NvmlUnavailable(Exception):
    """NVML cannot start here: no driver, no library, no permission."""


class GpuLost(Exception):
    """The GPU fell off the bus (NVML_ERROR_GPU_IS_LOST)."""

    def __init__(self, index: int, where: str) -> None:
        super().__init__(f"GPU {index} is lost ({where})")
        self.index = index


@dataclass
class Device:
    """One GPU as enumerated at start."""

    index: int
    handle: Any
    uuid: str
    pci_bus_id: str
    name: str
    memory_total_bytes: int
    nvlinks: int
    arch: int | None = None

    @property
    def key(self) -> int:
        """The handle's address: equal for every pointer NVML hands out to this GPU."""
        return handle_key(self.handle)


class GpuProcess(NamedTuple):
    """One compute process on a GPU, as NVML lists it."""

    pid: int
    used_memory_bytes: int | None  # None: NVML cannot tell (NVML_VALUE_NOT_AVAILABLE)


#: usedGpuMemory when NVML cannot tell (NVML_VALUE_NOT_AVAILABLE as an unsigned long long).
_NOT_AVAILABLE_ULL = (1 << 64) - 1


class Reading(NamedTuple):
    """One field value with NVML's own timestamp (microseconds)."""

    value: float | int | None
    timestamp_us: int


def handle_key(handle: Any) -> int:
    """The device a handle points at: pynvml returns a new ctypes pointer object per call and per event."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value or 0
    except (TypeError, ctypes.ArgumentError):
        return id(handle)  # not a ctypes pointer: only the identical object matches


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def normalize_bus_id(bus_id: str) -> str:
    """'00000000:2B:00.0' / '0000:2b:00' -> '0000:2b:00.0' (the kernel's sysfs form)."""
    bus_id = bus_id.strip().lower()
    parts = bus_id.split(":")
    if len(parts) == 2:  # bus:device.function without a domain
        parts = ["0000", *parts]
    domain, bus, devfn = parts[-3], parts[-2], parts[-1]
    if "." not in devfn:
        devfn += ".0"
    return f"{int(domain, 16):04x}:{bus}:{devfn}"


#: c_nvmlFieldValue_t as nvml.h lays it out: fieldId, scopeId, timestamp, latencyUsec, valueType,
#: nvmlReturn, value (an 8-byte union, read as the unsigned long long almost every field is); used only
#: when the array's element type has exactly this layout
_FIELD_VALUE = struct.Struct("@IIqqIIQ")
_ULL = struct.Struct("@Q")
_FIELD_OFFSETS = (
    ("fieldId", 0),
    ("scopeId", 4),
    ("timestamp", 8),
    ("latencyUsec", 16),
    ("valueType", 24),
    ("nvmlReturn", 28),
    ("value", 32),
)
#: nvmlValueType_t -> the union member's C type, decoded from the union's bytes
_UNION = tuple(struct.Struct(f) for f in ("@d", "@I", "@L", "@Q", "@q", "@i", "@H"))
_layout_ok: dict[type, bool] = {}


def _packed_ok(elem: Any) -> bool:
    """True when a ctypes element type is laid out as nvml.h's c_nvmlFieldValue_t (checked once per type)."""
    ok = _layout_ok.get(elem)
    if ok is None:
        try:
            ok = ctypes.sizeof(elem) == _FIELD_VALUE.size and all(
                getattr(elem, name).offset == off for name, off in _FIELD_OFFSETS
            )
        except (TypeError, AttributeError):
            ok = False
        _layout_ok[elem] = ok
    return ok


#: valueType NVML_VALUE_TYPE_UNSIGNED_LONG_LONG (3) with nvmlReturn NVML_SUCCESS (0), as one 8-byte word
_ULL_SUCCESS = 3


def _packed_words(values: Any, n: int) -> memoryview | None:
    """A ctypes c_nvmlFieldValue_t array as 8-byte words (5 per field: ids, timestamp, latency,
    valueType | nvmlReturn << 32, value), so whole members are sliced out at C speed; None when the array
    is not laid out as nvml.h's (or the host is not little-endian)."""
    if sys.byteorder != "little" or not _packed_ok(getattr(values, "_type_", None)) or len(values) != n:
        return None
    raw = memoryview(values).cast("B")
    return raw.cast("Q") if raw.nbytes == 40 * n else None


_PLANNED: dict[int, tuple[list, list[tuple[int, int]], list[tuple[int, int]]]] = {}


def _planned(request: list[tuple[str, int, int, int]]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The (field id, scope id) list NVML is asked with and the (position, scale) of the items whose unit
    NVML gives scaled (KiB -> bytes), made once per request list (a sampler asks with the same list each tick)."""
    hit = _PLANNED.get(id(request))
    if hit is None or hit[0] is not request:
        ids = [(fid, scope) for _, fid, scope, _ in request]
        hit = (request, ids, [(i, scale) for i, (_c, _f, _s, scale) in enumerate(request) if scale != 1])
        if len(_PLANNED) > 256:
            _PLANNED.clear()
        _PLANNED[id(request)] = hit
    return hit[1], hit[2]


def _union_value(value_type: int, raw: bytes) -> float | int:
    """The union member valueType names, from the union's bytes."""
    return _UNION[value_type if 0 <= value_type < len(_UNION) else 3].unpack_from(raw)[0]


def field_value(fv: Any) -> float | int:
    """Decode a c_nvmlFieldValue_t's value union by its valueType (double stays float, the rest int)."""
    vt = int(fv.valueType)
    member = _VALUE_MEMBER[vt] if 0 <= vt < len(_VALUE_MEMBER) else "ullVal"
    return getattr(fv.value, member)


class Nvml:
    """NVML behind one narrow, exception-tidy surface. ``lib`` is pynvml or a stand-in with its API."""

    def __init__(self, lib: ModuleType | Any | None = None) -> None:
        self._lib = lib
        self.fields: FieldCatalogue = load_fields()
        self.codes = self.fields.codes
        self._lost = self.codes["NVML_ERROR_GPU_IS_LOST"]
        self._ok = self.codes["NVML_SUCCESS"]
        self._logged: set[tuple[int, str, str]] = set()
        self._absent_seen: set[tuple[int, str, int, str]] = set()
        self._missing: set[str] = set()  # functions this driver does not have
        self._event_set: Any = None
        #: values NVML did not give, by reason (not_supported, function_not_found, unknown, ...);
        #: absent ones once per GPU and value, errors each time
        self.skipped_by_reason: dict[str, int] = {}

    @property
    def lib(self) -> Any:
        """The NVML binding in use (imported lazily so a node without pynvml still starts)."""
        if self._lib is None:
            import pynvml  # lazy: a node without the NVML binding still starts (its GPU sampler reports unavailable)

            self._lib = pynvml
        return self._lib

    @property
    def errors_by_reason(self) -> dict[str, int]:
        """The part of skipped_by_reason that is an error, not a value the GPU or driver lacks."""
        return {k: v for k, v in self.skipped_by_reason.items() if k not in ABSENT}

    def reason(self, code: Any) -> str:
        """NVML return code -> reason name."""
        return self.fields.code_names.get(code, f"nvml_error_{code}")

    def skip(self, index: int, what: str, reason: str, n: int = 1, detail: Any = "", scope: int = 0) -> None:
        """Count n missing values of one reason and log the first for this GPU, value and reason.

        An error counts every time; a value the GPU or driver lacks (not supported, function not
        found) counts once per GPU, value and scope: it is a fact about the node, not a loss per tick.
        """
        if reason not in ABSENT or (index, what, scope, reason) not in self._absent_seen:
            if reason in ABSENT:
                self._absent_seen.add((index, what, scope, reason))
            self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + n
        if (index, what, reason) not in self._logged:
            self._logged.add((index, what, reason))
            level = logging.INFO if reason in ABSENT else logging.WARNING
            log.log(
                level,
                "NVML value missing, reported as NULL gpu=%d field=%s reason=%s %s",
                index,
                what,
                reason,
                detail,
            )

    def init(self) -> None:
        """nvmlInit; raises NvmlUnavailable with NVML's reason."""
        try:
            self.lib.nvmlInit()
        except self.lib.NVMLError as exc:
            raise NvmlUnavailable(f"NVML init failed: {exc}") from None
        except OSError as exc:  # libnvidia-ml.so missing
            raise NvmlUnavailable(f"NVML library not loadable: {exc}") from None

    def shutdown(self) -> None:
        """nvmlShutdown, ignoring errors."""
        try:
            self.lib.nvmlShutdown()
        except Exception:  # noqa: BLE001 - best effort at close
            pass

    def devices(self) -> list[Device]:
        """Every GPU NVML can open, with its identity; one it cannot is skipped, counted and logged."""
        lib = self.lib
        out = []
        for i in range(lib.nvmlDeviceGetCount()):
            try:
                h = lib.nvmlDeviceGetHandleByIndex(i)
                uuid = _text(lib.nvmlDeviceGetUUID(h))
                bus = normalize_bus_id(_text(lib.nvmlDeviceGetPciInfo(h).busId))
            except lib.NVMLError as exc:
                self.skip(i, "device", "device_" + self.reason(getattr(exc, "value", None)), detail=exc)
                continue
            dev = Device(i, h, uuid, bus, "", 0, 0)
            try:
                dev.name = _text(self.call(dev, "nvmlDeviceGetName") or "")
                mem = self.call(dev, "nvmlDeviceGetMemoryInfo")
                dev.memory_total_bytes = int(mem.total) if mem is not None else 0
                dev.arch = self.call(dev, "nvmlDeviceGetArchitecture")
                (count,) = self.read_fields(dev, [("nvlink_count", 91, 0, 1)])
                dev.nvlinks = int(count.value or 0)
            except GpuLost:
                self.skip(i, "device", "device_gpu_is_lost")
                continue
            out.append(dev)
        return out

    def call(self, dev: Device, fn_name: str, *args: Any) -> Any:
        """A non-field NVML call on one GPU: its value, or None (counted) when NVML does not give it."""
        if fn_name in self._missing and fn_name in FALLBACKS:
            fn_name = FALLBACKS[fn_name]
        fn = getattr(self.lib, fn_name, None)
        if fn is None:  # a binding older than the call
            return self._absent(
                dev, fn_name, args, self.codes["NVML_ERROR_FUNCTION_NOT_FOUND"], "not in binding"
            )
        try:
            return fn(dev.handle, *args)
        except self.lib.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == self._lost:
                raise GpuLost(dev.index, fn_name) from None
            return self._absent(dev, fn_name, args, code, exc)

    def _absent(self, dev: Device, fn_name: str, args: tuple, code: Any, detail: Any) -> None:
        reason = self.reason(code)
        if reason == "function_not_found":
            self._missing.add(fn_name)
            if fn_name in FALLBACKS:  # an older driver: ask under the old name from now on
                log.info("NVML has no %s, using %s", fn_name, FALLBACKS[fn_name])
                return self.call(dev, fn_name, *args)
        self.skip(dev.index, fn_name, reason, detail=detail)
        return None

    def compute_processes(self, dev: Device) -> list[GpuProcess] | None:
        """NVML's compute processes on one GPU (pid, memory); None when NVML will not say (unsupported, no
        permission: counted by reason like any other value; the GPU's other readings still count)."""
        procs = self.call(dev, "nvmlDeviceGetComputeRunningProcesses")
        if procs is None:
            return None
        out = []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            ok = used is not None and int(used) != _NOT_AVAILABLE_ULL
            out.append(GpuProcess(int(p.pid), int(used) if ok else None))
        return out

    def read_fields(self, dev: Device, request: list[tuple[str, int, int, int]]) -> list[Reading]:
        """One batched nvmlDeviceGetFieldValues for (column, field id, scope id, scale) items; a Reading each."""
        values, stamps = self.read_values(dev, request)
        return [Reading(v, t) for v, t in zip(values, stamps, strict=True)]

    def read_values(
        self, dev: Device, request: list[tuple[str, int, int, int]]
    ) -> tuple[list[float | int | None], list[int]]:
        """As ``read_fields``, as two lists: the values (None where NVML did not give one) and NVML's
        timestamps (µs). The common answer, every field a success holding an unsigned long long, is
        decoded with one struct unpack and slices: no Python step per field."""
        n = len(request)
        if not n:
            return [], []
        ids, scaled_items = _planned(request)
        try:
            values = self.lib.nvmlDeviceGetFieldValues(dev.handle, list(ids))
        except self.lib.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == self._lost:
                raise GpuLost(dev.index, "nvmlDeviceGetFieldValues") from None
            self.skip(dev.index, "nvmlDeviceGetFieldValues", self.reason(code), n, exc)
            return [None] * n, [0] * n
        words = _packed_words(values, n)
        if words is None:  # a stand-in's own objects: read them attribute by attribute
            rows = [(0, 0, fv.timestamp, 0, int(fv.valueType), fv.nvmlReturn, fv) for fv in values]
            return self._decode(dev, request, rows)
        out = words[4::5].tolist()  # the value union, as the unsigned long long almost every field is
        status = words[3::5].tolist()  # valueType | nvmlReturn << 32
        if status.count(_ULL_SUCCESS) != n:
            odd = [i for i, st in enumerate(status) if st != _ULL_SUCCESS]
            rows = [_FIELD_VALUE.unpack_from(words.obj, 40 * i) for i in odd]
            decoded, _ = self._decode(dev, [request[i] for i in odd], rows)
            for i, v in zip(odd, decoded, strict=True):
                out[i] = v
            odd_set = set(odd)
            scaled = [(i, scale) for i, scale in scaled_items if i not in odd_set]  # _decode scaled those
        else:
            scaled = scaled_items
        for i, scale in scaled:
            out[i] *= scale
        return out, words[1::5].tolist()

    def _decode(
        self, dev: Device, request: list[tuple[str, int, int, int]], rows: list
    ) -> tuple[list, list[int]]:
        """Field values one by one: other value types, and fields NVML refused (None, counted by reason)."""
        ok = self._ok
        out: list[float | int | None] = []
        stamps: list[int] = []
        for (column, fid, scope, scale), (_f, _s, ts, _lat, vt, ret, raw) in zip(request, rows, strict=True):
            stamps.append(ts)
            if ret == ok:
                if vt == 3 and type(raw) is int:  # NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: almost every counter
                    v = raw
                elif type(raw) is int:  # another member of the union, from its 8 bytes
                    v = _union_value(vt, _ULL.pack(raw))
                else:
                    v = field_value(raw)
                out.append(v * scale if scale != 1 else v)
                continue
            if ret == self._lost:
                raise GpuLost(dev.index, column)
            self.skip(
                dev.index, column, self.reason(ret), detail=f"nvml_field={fid} scope={scope}", scope=scope
            )
            out.append(None)
        return out, stamps

    # --- Xid events ---------------------------------------------------------
    def watch_xids(self, devs: list[Device]) -> bool:
        """Register every GPU for Xid critical-error events; False if NVML cannot."""
        lib = self.lib
        try:
            self._event_set = lib.nvmlEventSetCreate()
        except lib.NVMLError as exc:
            log.info("NVML events unavailable, kernel log only reason=%s", exc)
            self._event_set = None
            return False
        for d in devs:
            try:
                lib.nvmlDeviceRegisterEvents(d.handle, self.codes["NVML_EVENT_TYPE_XID"], self._event_set)
            except lib.NVMLError as exc:
                log.info("Xid events not supported gpu=%d reason=%s", d.index, exc)
        return True

    def poll_xids(self, max_events: int = 256) -> list[tuple[int, int]]:
        """Pending Xid events as (device handle key, xid), without blocking."""
        if self._event_set is None:
            return []
        lib = self.lib
        out = []
        for _ in range(max_events):
            try:
                data = lib.nvmlEventSetWait_v2(self._event_set, 0)
            except lib.NVMLError as exc:
                code = getattr(exc, "value", None)
                if code != self.codes["NVML_ERROR_TIMEOUT"]:
                    self.skip(-1, "nvmlEventSetWait_v2", self.reason(code), detail=exc)
                break
            if int(data.eventType) & self.codes["NVML_EVENT_TYPE_XID"]:
                out.append((handle_key(data.device), int(data.eventData)))
        return out
