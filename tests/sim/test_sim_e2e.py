"""`c4 sim` drives real agents into a real collector: the fault's signature and its ground truth are stored."""

from testkit.procs import CollectorProc, run_sim

from c4.query import query_arrow


def test_sim_streams_fault_signature_and_ground_truth(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: e2e\ncluster: {nodes: 2, gpus: 8, nics: 8, leaves: 2, spines: 2, seed: 3}\n"
        "faults:\n  - {kind: nic_degraded, at_s: 8, duration_s: 100, node: host1, nic: 2}\n"
    )
    col = CollectorProc(tmp_path).start()
    try:
        run_sim(col.address, scenario, tmp_path / "sim", 30, speed=6, timeout_s=180)
        rates, _ = query_arrow(
            col.address,
            "SELECT DISTINCT rate_bps FROM ib_port_samples "
            "WHERE node = 'host1' AND device = 'mlx5_2' ORDER BY 1",
        )
        assert rates.column(0).to_pylist() == [200e9, 400e9]
        truth, _ = query_arrow(col.address, "SELECT fault, component, expected_class FROM sim_ground_truth")
        assert truth.to_pylist() == [
            {"fault": "nic_degraded", "component": "host1/nic2", "expected_class": "hardware"}
        ]
        n, _ = query_arrow(col.address, "SELECT count(DISTINCT node) FROM gpu_samples")
        assert n.column(0)[0].as_py() == 2
        colls, _ = query_arrow(col.address, "SELECT count(DISTINCT rank) FROM nccl_collectives")
        assert colls.column(0)[0].as_py() == 16
    finally:
        col.stop()
