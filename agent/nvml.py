"""The NVML facade: the only module that talks to NVML (pynvml or the fake with its call surface).

"Not supported" becomes None (logged once per GPU and field), a lost GPU becomes GpuLost,
and every per-tick read of field counters is one batched nvmlDeviceGetFieldValues call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

from c4.agent.gpu_fields import FieldCatalogue, load_fields

log = logging.getLogger("c4.agent.nvml")


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


class Nvml:
    """NVML behind one narrow, exception-tidy surface. ``lib`` is pynvml or a fake with its API."""

    def __init__(self, lib: ModuleType | Any | None = None) -> None:
        self._lib = lib
        self.fields: FieldCatalogue = load_fields()
        self.codes = self.fields.codes
        self._unsupported: set[tuple[int, str]] = set()
        self._event_set: Any = None
        self._id_lists: dict[int, list[tuple[int, int]]] = {}  # request list -> (field id, scope) list

    @property
    def lib(self) -> Any:
        """The NVML binding in use (imported lazily so a node without pynvml still starts)."""
        if self._lib is None:
            import pynvml  # lazy: a node without the NVML binding still starts (its GPU sampler reports unavailable)

            self._lib = pynvml
        return self._lib

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
        """Every GPU with its identity."""
        lib = self.lib
        out = []
        for i in range(lib.nvmlDeviceGetCount()):
            h = lib.nvmlDeviceGetHandleByIndex(i)
            mem = lib.nvmlDeviceGetMemoryInfo(h)
            pci = lib.nvmlDeviceGetPciInfo(h)
            links = self._value(
                lambda h=h: _nvlink_count(lib.nvmlDeviceGetFieldValues(h, [91])[0]), i, "nvlink_count"
            )
            out.append(
                Device(
                    i,
                    h,
                    _text(lib.nvmlDeviceGetUUID(h)),
                    normalize_bus_id(_text(pci.busId)),
                    _text(lib.nvmlDeviceGetName(h)),
                    int(mem.total),
                    int(links or 0),
                )
            )
        return out

    def _unsupported_once(self, index: int, what: str) -> None:
        if (index, what) not in self._unsupported:
            self._unsupported.add((index, what))
            log.info("not supported by NVML, reported as missing gpu=%d field=%s", index, what)

    def _value(self, fn: Callable[[], Any], index: int, what: str) -> Any:
        try:
            return fn()
        except self.lib.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == self.codes["NVML_ERROR_GPU_IS_LOST"]:
                raise GpuLost(index, what) from None
            if code == self.codes["NVML_ERROR_NOT_SUPPORTED"]:
                self._unsupported_once(index, what)
                return None
            raise

    def call(self, dev: Device, fn_name: str, *args: Any) -> Any:
        """A non-field NVML call on one GPU: value, or None when not supported."""
        fn = getattr(self.lib, fn_name)
        return self._value(lambda: fn(dev.handle, *args), dev.index, fn_name)

    def compute_processes(self, dev: Device) -> list[GpuProcess] | None:
        """NVML's compute processes on one GPU (pid, memory); None when NVML will not say (unsupported, no permission)."""
        try:
            procs = self.call(dev, "nvmlDeviceGetComputeRunningProcesses")
        except (
            self.lib.NVMLError
        ) as exc:  # e.g. NVML_ERROR_NO_PERMISSION: the GPU's other readings still count
            self._unsupported_once(dev.index, f"nvmlDeviceGetComputeRunningProcesses ({exc})")
            return None
        if procs is None:
            return None
        out = []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            ok = used is not None and int(used) != _NOT_AVAILABLE_ULL
            out.append(GpuProcess(int(p.pid), int(used) if ok else None))
        return out

    def read_fields(self, dev: Device, request: list[tuple[str, int, int]]) -> list[Reading]:
        """One batched nvmlDeviceGetFieldValues; a Reading per request item (value None if unsupported)."""
        values = self._value(
            lambda: self.lib.nvmlDeviceGetFieldValues(
                dev.handle, [(fid, scope) for _, fid, scope in request]
            ),
            dev.index,
            "nvmlDeviceGetFieldValues",
        )
        if values is None:
            return [Reading(None, 0)] * len(request)
        ok, lost = self.codes["NVML_SUCCESS"], self.codes["NVML_ERROR_GPU_IS_LOST"]
        out = []
        ull = 3  # NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: almost every counter, decoded inline
        for (column, _fid, scope), fv in zip(request, values, strict=True):
            ret = fv.nvmlReturn
            if ret == ok:
                out.append(
                    Reading(fv.value.ullVal if fv.valueType == ull else _field_value(fv), fv.timestamp)
                )
                continue
            if ret == lost:
                raise GpuLost(dev.index, column)
            self._unsupported_once(dev.index, f"{column}[{scope}]" if scope else column)
            out.append(Reading(None, fv.timestamp))
        return out

    # --- Xid events ---------------------------------------------------------
    def watch_xids(self, devs: list[Device]) -> bool:
        """Register every GPU for Xid critical-error events; False if NVML cannot."""
        lib = self.lib
        try:
            self._event_set = lib.nvmlEventSetCreate()
            for d in devs:
                try:
                    lib.nvmlDeviceRegisterEvents(d.handle, self.codes["NVML_EVENT_TYPE_XID"], self._event_set)
                except lib.NVMLError as exc:
                    log.info("Xid events not supported gpu=%d reason=%s", d.index, exc)
            return True
        except lib.NVMLError as exc:
            log.info("NVML events unavailable, kernel log only reason=%s", exc)
            self._event_set = None
            return False

    def poll_xids(self, max_events: int = 256) -> list[tuple[Any, int]]:
        """Pending Xid events as (device handle, xid), without blocking."""
        if self._event_set is None:
            return []
        lib = self.lib
        out = []
        for _ in range(max_events):
            try:
                data = lib.nvmlEventSetWait_v2(self._event_set, 0)
            except lib.NVMLError as exc:
                if getattr(exc, "value", None) != self.codes["NVML_ERROR_TIMEOUT"]:
                    log.warning("NVML event wait failed reason=%s", exc)
                break
            if int(data.eventType) & self.codes["NVML_EVENT_TYPE_XID"]:
                out.append((data.device, int(data.eventData)))
        return out


#: nvmlValueType_t -> member of the value union
_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def _field_value(fv: Any) -> float | int:
    """Decode a c_nvmlFieldValue_t by its valueType."""
    return getattr(fv.value, _VALUE_MEMBER.get(int(fv.valueType), "ullVal"))


def _nvlink_count(fv: Any) -> int:
    """NVML_FI_DEV_NVLINK_LINK_COUNT, 0 when the GPU has no NVLink."""
    return int(_field_value(fv)) if int(fv.nvmlReturn) == 0 else 0
