"""GPU sampler on the fake NVML: every column, rates from NVML timestamps, unsupported fields, lost GPUs."""

from __future__ import annotations

import json
import logging
import os
import tomllib

import pyarrow as pa
import pynvml
import pytest

from c4.agent.gpu import GpuSampler
from c4.agent.gpu_fields import FIELDS_FILE, load_fields
from c4.agent.nvml import Nvml, normalize_bus_id
from c4.agent.sampler import SourceUnavailable
from c4.catalogue import load
from c4.sim.fake_nvml import FakeNvml, NVMLError, eight_gpu_scenario, gpu_entry


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sampler(scenario: dict, clock: Clock) -> GpuSampler:
    s = GpuSampler(Nvml(FakeNvml(scenario, clock=clock)))
    s.probe()
    return s


def typed(table: str, rows: list[dict]) -> pa.Table:
    rows = [{"ts": None, "node": "n", "job": "", **r} for r in rows]
    return pa.Table.from_pylist(rows, schema=load().shape(table).arrow_schema)


def link_rows(out: dict, carried: dict | None = None) -> list[dict]:
    """The tick's wide NVLink rows as the nvlink_samples view gives them: one per GPU per link."""
    return load()["nvlink_gpu_samples"].element_rows(out["nvlink_gpu_samples"], carried)


def test_field_ids_match_pynvml():
    f = load_fields()
    raw = tomllib.loads(FIELDS_FILE.read_text())
    for col, spec in raw["gpu"].items():
        assert getattr(pynvml, spec["name"]) == spec["id"], col
    for plan in raw["nvlink"]["plans"].values():
        for col, spec in plan.get("scoped", {}).items():
            assert getattr(pynvml, spec["name"]) == spec["id"], col
        for col, spec in plan.get("per_link", {}).items():
            for link, fid in enumerate(spec["ids"]):
                assert getattr(pynvml, f"{spec['name']}{link}") == fid, (col, link)
    for name, code in f.codes.items():
        if hasattr(pynvml, name):
            assert getattr(pynvml, name) == code, name
    assert pynvml.nvmlEventTypeXidCriticalError == f.codes["NVML_EVENT_TYPE_XID"]
    assert f.arch_plan[pynvml.NVML_DEVICE_ARCH_HOPPER] == "hopper"
    assert f.arch_plan[pynvml.NVML_DEVICE_ARCH_BLACKWELL] == "blackwell"
    assert f.link_plan(pynvml.NVML_DEVICE_ARCH_AMPERE).name == "ampere"


def test_every_column_is_a_catalogue_column():
    f = load_fields()
    link_cols = set(load().shape("nvlink_samples").arrow_schema.names)
    for plan in f.plans.values():
        for col in plan.columns:
            assert col in link_cols, (plan.name, col)
    gpu_cols = set(load()["gpu_samples"].arrow_schema.names)
    assert set(f.gpu) - {"power_mw"} <= gpu_cols


def test_every_gpu_column_is_filled_and_rates_use_nvml_timestamps():
    clock = Clock(1000.0)
    sc = eight_gpu_scenario()
    sc["start_s"] = 1000.0
    s = sampler(sc, clock)
    first = s.sample(0)
    clock.t += 2.5  # an uneven interval: the sampler's own tick time (now_ns) is never used
    out = s.sample(123)
    t = typed("gpu_samples", out["gpu_samples"])
    assert t.num_rows == 8
    for col in t.column_names:
        if col not in ("ts", "rank"):
            assert t.column(col).null_count == 0, f"{col} missing"
    row = out["gpu_samples"][3]
    assert row["pcie_tx_bytes_per_s"] == pytest.approx(2.0e9)
    assert row["power_from_energy_w"] == pytest.approx(640.0)
    assert row["nvml_ts_us"] == 1_002_500_000
    assert row["pci_bus_id"] == "0000:5d:00.0" and row["mem_total_bytes"] == 85899345920
    assert first["gpu_samples"][3]["pcie_tx_bytes_per_s"] is None  # no previous reading yet
    links = typed("nvlink_samples", link_rows(out))
    assert links.num_rows == 8 * 18
    assert set(links.column("link").to_pylist()) == set(range(18))
    assert s.skipped_by_reason == {} and s.records_skipped == 0


# what each GPU reports on its NVLinks: (model, columns present, columns NULL)
LINK_COLUMNS = {
    "A100": (
        {
            "tx_data_bytes",
            "rx_data_bytes",
            "crc_flit_errors",
            "crc_data_errors",
            "replay_errors",
            "recovery_errors",
        },
        {"tx_link_bytes", "link_crc_errors", "rx_error_packets", "symbol_errors"},
    ),
    "H100": (
        {"tx_data_bytes", "rx_data_bytes", "replay_errors", "recovery_errors", "link_crc_errors"},
        {"tx_link_bytes", "rx_link_bytes", "crc_flit_errors", "crc_data_errors", "rx_error_packets"},
    ),
    "B200": (
        {"tx_link_bytes", "rx_link_bytes", "rx_error_packets", "symbol_errors", "link_recovery_events"},
        {"tx_data_bytes", "replay_errors", "recovery_errors", "link_crc_errors", "crc_flit_errors"},
    ),
}


@pytest.mark.parametrize("model", ["A100", "H100", "B200"])
def test_nvlink_throughput_per_architecture(model):
    """Item 6: each architecture is read with the fields it supports; the rest is NULL, never zero."""
    clock = Clock(0.0)
    sc = eight_gpu_scenario(model=model)
    sc["start_s"] = 0.0
    sc["gpus"][0]["link_counters"] = {"5": {"replay_errors": 7, "link_crc_errors": 3, "rx_error_packets": 4}}
    s = sampler(sc, clock)
    carried: dict = {}  # error counters are sent on change: fill the unsent ones as the view does
    link_rows(s.sample(0), carried)
    clock.t = 2.0
    out = s.sample(0)
    links = typed("nvlink_samples", link_rows(out, carried)).to_pylist()
    n_links = {"A100": 12, "H100": 18, "B200": 18}[model]
    assert len(links) == 8 * n_links
    present, null = LINK_COLUMNS[model]
    for r in links:
        assert all(r[c] is not None for c in present), r
        assert all(r[c] is None for c in null), r
    l5 = next(r for r in links if r["gpu_index"] == 0 and r["link"] == 5)
    rate = l5["tx_link_bytes_per_s"] if model == "B200" else l5["tx_data_bytes_per_s"]
    assert rate == pytest.approx(2.5e10, rel=1e-6)  # 138/139 count KiB: scaled to bytes
    assert s.errors_by_reason == {}  # fields the GPU lacks are never even asked for
    if model == "H100":
        assert (l5["replay_errors"], l5["link_crc_errors"]) == (7, 3)
    if model == "B200":
        assert l5["rx_error_packets"] == 4


def test_hopper_does_not_report_nvlink5_byte_counters():
    """The fake answers as the driver does: field 202 is unsupported on H100, 138 is in KiB."""
    fake = FakeNvml(eight_gpu_scenario(model="H100"))
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    v202, v138 = fake.nvmlDeviceGetFieldValues(h, [(202, 0), (138, 0)])
    assert v202.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert (
        v138.nvmlReturn == pynvml.NVML_SUCCESS and v138.valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    )


def test_nvml_xid_events_reach_their_gpu_through_fresh_pointers():
    """Item 5: every event carries a new c_nvmlDevice_t object; the sampler matches it by address."""
    clock = Clock(0.0)
    sc = eight_gpu_scenario()
    sc["start_s"] = 0.0
    sc["events"] = [
        {"at_s": 3, "gpu": 4, "xid": 48},
        {"at_s": 4, "gpu": 1, "xid": 94},
        {"at_s": 99, "gpu": 0, "xid": 13},
    ]
    s = sampler(sc, clock)
    assert s.sample(0)["gpu_events"] == []
    clock.t = 10
    evs = s.sample(0)["gpu_events"]
    assert [(e["xid"], e["gpu_index"], e["action"], e["category"]) for e in evs] == [
        (48, 4, "drain_node", "memory"),
        (94, 1, "restart_job", "memory"),
    ]
    assert evs[0]["pci_bus_id"] == "0000:9a:00.0" and evs[0]["gpu_uuid"] == s.devices[4].uuid
    typed("gpu_events", evs)


def test_fake_event_device_is_a_new_pointer_like_pynvml():
    sc = eight_gpu_scenario()
    sc["start_s"] = 0.0
    sc["events"] = [{"at_s": 0, "gpu": 2, "xid": 79}]
    fake = FakeNvml(sc, clock=Clock(1.0))
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(2)
    data = fake.nvmlEventSetWait_v2(fake.nvmlEventSetCreate(), 0)
    assert isinstance(data, pynvml.c_nvmlEventData_t) and isinstance(data.device, pynvml.c_nvmlDevice_t)
    assert data.device is not h and repr(data.device) != repr(h)
    assert fake.nvmlDeviceGetHandleByIndex(2) is not h  # a new handle object per call, as pynvml


@pytest.mark.parametrize("reason", ["unknown", "reset_required", "no_permission", "insufficient_power"])
def test_other_nvml_errors_cost_only_their_value(reason):
    """Item 7: an error on one call or field of one GPU leaves that value NULL, counted by reason."""
    clock = Clock(0.0)
    sc = eight_gpu_scenario()
    sc["start_s"] = 0.0
    sc["gpus"][2]["errors"] = {
        "nvmlDeviceGetTemperature": reason,
        "temp_mem_c": reason,
        "nvlink_replay_errors": reason,
    }
    s = sampler(sc, clock)
    out = s.sample(0)
    rows = out["gpu_samples"]
    assert len(rows) == 8 and len(link_rows(out)) == 8 * 18
    assert rows[2]["temp_gpu_c"] is None and rows[2]["temp_mem_c"] is None
    assert rows[2]["power_w"] == 640.0 and rows[3]["temp_gpu_c"] == 62
    bad = [r for r in link_rows(out) if r["gpu_index"] == 2]
    assert all(r["replay_errors"] is None and r["link_crc_errors"] == 0 for r in bad)
    assert s.skipped_by_reason == {reason: 2 + 18} and s.errors_by_reason == {reason: 20}
    assert s.records_skipped == 20
    s.sample(0)
    assert s.errors_by_reason == {reason: 40}  # an error counts every time it happens


def test_a_failing_field_call_keeps_the_gpu_row_and_the_other_gpus():
    clock = Clock(0.0)
    sc = eight_gpu_scenario()
    sc["start_s"] = 0.0
    sc["gpus"][5]["errors"] = {"nvmlDeviceGetFieldValues": "unknown"}
    s = sampler(sc, clock)
    out = s.sample(0)
    row = out["gpu_samples"][5]
    assert row["energy_mj"] is None and row["temp_gpu_c"] == 62 and row["util_gpu_pct"] == 97
    assert len(out["gpu_samples"]) == 8
    assert s.skipped_by_reason["unknown"] > 0


def test_old_driver_lacks_clock_event_reasons_and_newer_fields(caplog):
    """Item 7: before R535 nvmlDeviceGetCurrentClocksEventReasons is missing: the old name answers."""
    caplog.set_level(logging.INFO)
    clock = Clock(0.0)
    sc = eight_gpu_scenario(model="A100", driver_version="525.147.05")
    sc["start_s"] = 0.0
    sc["gpus"][0]["gauges"]["clocks_event_reasons"] = 0x40
    s = sampler(sc, clock)
    out = s.sample(0)
    row = out["gpu_samples"][0]
    assert row["clocks_event_reasons"] == 0x40
    assert row["power_w"] is None and row["pcie_tx_bytes"] is None and row["recovery_action"] is None
    assert row["energy_mj"] is not None
    s.sample(0)
    assert (
        caplog.text.count("using nvmlDeviceGetCurrentClocksThrottleReasons") == 1
    )  # asked once by the new name
    assert s.errors_by_reason == {}
    assert s.skipped_by_reason["not_supported"] == 8 * 4  # fields 186, 197, 198, 230 on 8 GPUs, counted once


def test_a_gpu_without_nvlink_asks_nvml_for_no_link_fields():
    """Item 8: no NVLink -> no field request at all (an empty one is an invalid argument)."""
    calls: list[int] = []

    class Counting(FakeNvml):
        def nvmlDeviceGetFieldValues(self, h, field_ids):
            calls.append(len(field_ids))
            return super().nvmlDeviceGetFieldValues(h, field_ids)

    sc = {"start_s": 0.0, "gpus": [gpu_entry(0, nvlinks=0), gpu_entry(1)]}
    s = GpuSampler(Nvml(Counting(sc, clock=Clock(1.0))))
    s.probe()
    out = s.sample(0)
    assert 0 not in calls
    assert [r["gpu_index"] for r in link_rows(out)] == [1] * 18
    assert out["gpu_samples"][0]["energy_mj"] is not None and s.skipped_by_reason == {}


@pytest.mark.parametrize(
    ("vtype", "value"),
    [("double", 71.5), ("uint", 71), ("ulong", 71), ("ull", 71), ("sll", 71), ("sint", 71), ("ushort", 71)],
)
def test_every_value_type_is_decoded(vtype, value):
    """Item 9: the fake returns real c_nvmlFieldValue_t with any valueType; the facade reads each."""
    g = gpu_entry(0)
    g["value_types"] = {"temp_mem_c": vtype}
    g["gauges"]["temp_mem_c"] = value
    s = sampler({"start_s": 0.0, "gpus": [g]}, Clock(1.0))
    assert s.sample(0)["gpu_samples"][0]["temp_mem_c"] == value
    fake = s.nvml.lib
    (fv,) = fake.nvmlDeviceGetFieldValues(fake.nvmlDeviceGetHandleByIndex(0), [82])
    assert isinstance(fv, pynvml.c_nvmlFieldValue_t)


def test_fake_raises_pynvmls_own_error_classes():
    sc = eight_gpu_scenario(driver_version="530.30.02")
    sc["gpus"][0]["errors"] = {"nvmlDeviceGetTemperature": "reset_required"}
    fake = FakeNvml(sc)
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_ResetRequired):
        fake.nvmlDeviceGetTemperature(h, 0)
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        fake.nvmlDeviceGetCurrentClocksEventReasons(h)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetFieldValues(h, [])
    with pytest.raises(pynvml.NVMLError_Timeout):
        fake.nvmlEventSetWait_v2(fake.nvmlEventSetCreate(), 0)
    assert isinstance(fake.nvmlDeviceGetPciInfo(h), pynvml.nvmlPciInfo_t)
    assert fake.nvmlDeviceGetArchitecture(h) == pynvml.NVML_DEVICE_ARCH_HOPPER


def test_not_supported_is_missing_and_logged_once(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock(50.0)
    g = gpu_entry(0)
    g["not_supported"] = ["temp_mem_c", "pcie_tx_bytes", "util_gpu_pct", "tx_bytes"]
    s = sampler({"start_s": 50.0, "gpus": [g]}, clock)
    carried: dict = {}  # error counters are sent on change: fill the unsent ones as the view does
    for _ in range(5):
        clock.t += 1
        out = s.sample(0)
        links = link_rows(out, carried)
    row = out["gpu_samples"][0]
    assert row["temp_mem_c"] is None and row["pcie_tx_bytes"] is None and row["pcie_tx_bytes_per_s"] is None
    assert row["util_gpu_pct"] is None and row["power_w"] == 640.0
    assert all(r["tx_data_bytes"] is None and r["replay_errors"] == 0 for r in links)
    assert (
        caplog.text.count("field=temp_mem_c ") == 1
        and caplog.text.count("nvmlDeviceGetUtilizationRates") == 1
    )
    assert s.skipped_by_reason == {"not_supported": 3 + 18}  # once per GPU and value, not per tick


def test_lost_gpu_becomes_one_event_and_others_continue():
    clock = Clock(0.0)
    sc = eight_gpu_scenario()
    sc["start_s"] = 0.0
    sc["gpus"][2]["lost_at_s"] = 5
    s = sampler(sc, clock)
    assert len(s.sample(0)["gpu_samples"]) == 8
    clock.t = 6
    out = s.sample(0)
    assert [r["gpu_index"] for r in out["gpu_samples"]] == [0, 1, 3, 4, 5, 6, 7]
    (ev,) = out["gpu_events"]
    assert ev["kind"] == "gpu_lost" and ev["gpu_index"] == 2 and ev["action"] == "drain_node"
    clock.t = 7
    again = s.sample(0)
    assert again["gpu_events"] == [] and len(again["gpu_samples"]) == 7
    typed("gpu_events", out["gpu_events"])


def test_a_gpu_lost_before_start_is_skipped_and_counted():
    sc = eight_gpu_scenario()
    sc["start_s"] = 0.0
    sc["gpus"][6]["lost_at_s"] = 0
    s = sampler(sc, Clock(1.0))
    assert [d.index for d in s.devices] == [0, 1, 2, 3, 4, 5, 7]
    assert s.skipped_by_reason == {"device_gpu_is_lost": 1}


def test_scenario_file_is_reread_when_rewritten(tmp_path):
    path = tmp_path / "nvml.json"
    sc = {"start_s": 0.0, "gpus": [gpu_entry(0)]}
    path.write_text(json.dumps(sc))
    clock = Clock(1.0)
    fake = FakeNvml(path, clock=clock)
    s = GpuSampler(Nvml(fake))
    s.probe()
    assert s.sample(0)["gpu_samples"][0]["temp_gpu_c"] == 62
    sc["gpus"][0]["gauges"]["temp_gpu_c"] = 91
    path.write_text(json.dumps(sc))
    os.utime(path, (5, 5))
    fake._checked_at = -1.0  # do not wait for the 0.2 s stat throttle
    assert s.sample(0)["gpu_samples"][0]["temp_gpu_c"] == 91


def test_real_nvml_without_a_driver_is_unavailable():
    s = GpuSampler(Nvml())  # the real pynvml: this machine has no NVIDIA driver
    with pytest.raises(SourceUnavailable, match="NVML"):
        s.probe()


@pytest.mark.parametrize(
    ("raw", "norm"),
    [("00000000:2B:00.0", "0000:2b:00.0"), ("0000:2b:00", "0000:2b:00.0"), ("2b:00.0", "0000:2b:00.0")],
)
def test_bus_id_normalization(raw, norm):
    assert normalize_bus_id(raw) == norm


def test_field_values_as_single_structures_are_read_attribute_by_attribute():
    """A stand-in returning a list of c_nvmlFieldValue_t (not pynvml's array) reads the same."""

    class AsList(FakeNvml):
        def nvmlDeviceGetFieldValues(self, h, field_ids):
            return list(super().nvmlDeviceGetFieldValues(h, field_ids))

    g = gpu_entry(0)
    g["value_types"] = {"temp_mem_c": "double"}
    g["gauges"]["temp_mem_c"] = 70.5
    s = GpuSampler(Nvml(AsList({"start_s": 1.0, "gpus": [g]}, clock=Clock(2.0))))
    s.probe()
    out = s.sample(0)
    assert out["gpu_samples"][0]["temp_mem_c"] == 70.5 and out["gpu_samples"][0]["energy_mj"] > 0
    assert link_rows(out)[0]["tx_data_bytes"] == int(2.5e10) // 1024 * 1024


def test_an_nvml_error_escaping_one_gpu_keeps_the_others(monkeypatch):
    s = sampler(eight_gpu_scenario(), Clock(1.0))
    real = s._sample_links

    def failing(d, *rest):
        if d.index == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        return real(d, *rest)

    monkeypatch.setattr(s, "_sample_links", failing)
    out = s.sample(0)
    assert len({r["gpu_index"] for r in link_rows(out)}) == 7
    assert s.errors_by_reason == {"gpu_sample_unknown": 1}


class _RealProcessObjects(FakeNvml):
    """The fake NVML, but its process list is made of pynvml's own structs (what the real binding returns)."""

    def __init__(self, scenario, clock, procs, error=None):
        super().__init__(scenario, clock=clock)
        self._procs, self._error = procs, error

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        import ctypes

        import pynvml

        if self._error is not None:
            raise NVMLError(self._error)  # the fake's error class, carrying pynvml's code
        index = self._index_of[ctypes.cast(h, ctypes.c_void_p).value]
        out = []
        for pid, used in self._procs.get(index, []):
            c = pynvml.c_nvmlProcessInfo_v3_t()
            c.pid, c.usedGpuMemory = pid, used
            c.gpuInstanceId = c.computeInstanceId = 0xFFFFFFFF
            out.append(pynvml.nvmlStructToFriendlyObject(c))
        return out


def test_compute_processes_become_rows_with_pid_and_memory():
    import pynvml

    clock = Clock(10.0)
    sc = {"start_s": 10.0, "gpus": [gpu_entry(0), gpu_entry(1)]}
    lib = _RealProcessObjects(
        sc, clock, {0: [(4242, 70 << 30)], 1: [(4243, pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value)]}
    )
    s = GpuSampler(Nvml(lib))
    s.probe()
    rows = s.sample(0)["gpu_processes"]
    assert [(r["gpu_index"], r["pid"], r["used_memory_bytes"]) for r in rows] == [
        (0, 4242, 70 << 30),
        (1, 4243, None),  # NVML_VALUE_NOT_AVAILABLE is no amount of memory
    ]
    assert rows[1]["pci_bus_id"] == "0000:2a:00.0" and rows[1]["gpu_uuid"] == s.devices[1].uuid
    typed("gpu_processes", rows)


def test_process_list_refused_leaves_the_gpu_rows(caplog):
    import pynvml

    caplog.set_level(logging.INFO)
    clock = Clock(10.0)
    lib = _RealProcessObjects(
        {"start_s": 10.0, "gpus": [gpu_entry(0)]}, clock, {}, pynvml.NVML_ERROR_NO_PERMISSION
    )
    s = GpuSampler(Nvml(lib))
    s.probe()
    for _ in range(3):
        out = s.sample(0)
    assert out["gpu_processes"] == [] and len(out["gpu_samples"]) == 1
    assert caplog.text.count("nvmlDeviceGetComputeRunningProcesses") == 1


def test_fake_nvml_lists_the_scenario_processes():
    clock = Clock(10.0)
    g0, g1 = gpu_entry(0), gpu_entry(1)
    g0["processes"] = [{"pid": 31, "used_memory_bytes": 1 << 30}, {"pid": 32}]
    g1["not_supported"] = ["processes"]
    s = sampler({"start_s": 10.0, "gpus": [g0, g1]}, clock)
    rows = s.sample(0)["gpu_processes"]
    assert [(r["gpu_index"], r["pid"], r["used_memory_bytes"]) for r in rows] == [
        (0, 31, 1 << 30),
        (0, 32, None),
    ]
    off = GpuSampler(Nvml(FakeNvml({"start_s": 10.0, "gpus": [g0]}, clock=clock)), processes=False)
    off.probe()
    assert off.sample(0)["gpu_processes"] == []


def test_link_capabilities_are_asked_until_answered_then_kept():
    """pcie_gen_max / pcie_width_max are fixed for a device: NVML is asked for them until it answers, then
    never again; the row carries them every tick. The current link values are asked every tick."""
    clock = Clock(0.0)
    sc = eight_gpu_scenario()
    sc["start_s"] = 0.0
    sc["gpus"][1]["errors"] = {"nvmlDeviceGetMaxPcieLinkWidth": "unknown"}
    s = sampler(sc, clock)
    calls: dict[str, int] = {}
    lib = s.nvml._lib

    class Counting:
        def __getattr__(self, name):
            attr = getattr(lib, name)
            if name.startswith("nvmlDeviceGet") and callable(attr):

                def counted(*args):
                    calls[name] = calls.get(name, 0) + 1
                    return attr(*args)

                return counted
            return attr

    s.nvml._lib = Counting()
    first = s.sample(0)["gpu_samples"]
    assert first[1]["pcie_width_max"] is None and first[0]["pcie_width_max"] == 16
    del sc["gpus"][1]["errors"]  # GPU 1 answers from now on
    for _ in range(3):
        rows = s.sample(0)["gpu_samples"]
        assert [r["pcie_gen_max"] for r in rows] == [5] * 8 and [r["pcie_width_max"] for r in rows] == [
            16
        ] * 8
    assert calls["nvmlDeviceGetMaxPcieLinkGeneration"] == 8  # once per GPU
    assert calls["nvmlDeviceGetMaxPcieLinkWidth"] == 8 + 1  # GPU 1 once more: it did not answer at first
    assert calls["nvmlDeviceGetCurrPcieLinkWidth"] == 4 * 8
