"""GPU sampler on the fake NVML: every column, rates from NVML timestamps, unsupported fields, lost GPUs."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pytest

from c4.agent.gpu import GpuSampler
from c4.agent.gpu_fields import load_fields
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
    return pa.Table.from_pylist(rows, schema=load()[table].arrow_schema)


def test_field_ids_match_pynvml():
    import tomllib

    import pynvml

    from c4.agent.gpu_fields import FIELDS_FILE

    f = load_fields()
    raw = tomllib.loads(FIELDS_FILE.read_text())
    for col, spec in raw["gpu"].items():
        assert getattr(pynvml, spec["name"]) == spec["id"], col
    for col, spec in raw["nvlink_per_link"].items():
        for link, fid in enumerate(spec["ids"]):
            assert getattr(pynvml, f"{spec['name']}{link}") == fid, (col, link)
    for name, code in f.codes.items():
        if hasattr(pynvml, name):
            assert getattr(pynvml, name) == code, name
    assert pynvml.nvmlEventTypeXidCriticalError == f.codes["NVML_EVENT_TYPE_XID"]


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
    links = typed("nvlink_samples", out["nvlink_samples"])
    assert links.num_rows == 8 * 18
    assert set(links.column("link").to_pylist()) == set(range(18))
    l5 = [r for r in out["nvlink_samples"] if r["gpu_index"] == 0 and r["link"] == 5][0]
    assert l5["tx_bytes_per_s"] == pytest.approx(2.5e10) and l5["crc_flit_errors"] == 0


def test_not_supported_is_missing_and_logged_once(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock(50.0)
    g = gpu_entry(0)
    g["not_supported"] = ["temp_mem_c", "pcie_tx_bytes", "util_gpu_pct", "nvlink_tx_bytes", "tx_bytes"]
    s = sampler({"start_s": 50.0, "gpus": [g]}, clock)
    for _ in range(5):
        clock.t += 1
        out = s.sample(0)
    row = out["gpu_samples"][0]
    assert row["temp_mem_c"] is None and row["pcie_tx_bytes"] is None and row["pcie_tx_bytes_per_s"] is None
    assert row["util_gpu_pct"] is None and row["power_w"] == 640.0
    assert (
        caplog.text.count("field=temp_mem_c") == 1 and caplog.text.count("nvmlDeviceGetUtilizationRates") == 1
    )


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


def test_nvml_xid_events_carry_the_catalogue():
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
    assert evs[0]["pci_bus_id"] == "0000:9a:00.0" and evs[0]["gpu_uuid"].startswith("GPU-")
    typed("gpu_events", evs)


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
    import os

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


class _RealProcessObjects(FakeNvml):
    """The fake NVML, but its process list is made of pynvml's own structs (what the real binding returns)."""

    def __init__(self, scenario, clock, procs, error=None):
        super().__init__(scenario, clock=clock)
        self._procs, self._error = procs, error

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        import pynvml

        if self._error is not None:
            raise NVMLError(self._error)  # the fake's error class, carrying pynvml's code
        out = []
        for pid, used in self._procs.get(h.index, []):
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
