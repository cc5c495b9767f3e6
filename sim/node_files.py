"""Writes what a simulated node exposes, where the unchanged production samplers read it.

Per node root: ``sys/`` (RDMA and netdev sysfs tree), ``nvml.json`` (the fake NVML's scenario),
``kmsg.log`` (NVRM Xid lines), ``inspector/`` (NCCL Inspector JSON lines per rank),
``nccl-logs/`` (NCCL_DEBUG=INFO init and connection lines) and ``conn/`` (per-connection
records in the C4 profiler plugin's format). Nodes of a scenario with ``jobs:`` also get
``step_trace/`` (``STEP_TRACE_DIR``): the training-step trace, one ``<job>-rank<r>.jsonl`` per rank
(``c4.sim.job_files``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from c4.sim.fake_nvml import FAKE_NVML, gpu_entry
from c4.sim.faults import FAULT_KINDS
from c4.sim.faults.xid import XID_GPU_LOST
from c4.sim.sysfs_tree import set_link, update_counters, write_ib_port, write_netdev

#: What a healthy GPU's NVML gauges show in every iteration (faults change them through ``expose``).
HEALTHY_GAUGES = {
    "util_gpu_pct": 97.0,
    "power_mw": 650_000,
    "temp_gpu_c": 62.0,
    "clocks_event_reasons": 0,
    "clock_sm_mhz": 1980,
    "pcie_gen_cur": 5,
    "remapped_rows_failure": 0,
}
#: PCI bus of each GPU slot, as the kernel log names it in Xid lines.
PCI_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
#: Xids NVML's event API cannot report (the GPU is gone or its GSP is); only the kernel log has them.
XIDS_NVML_CANNOT_REPORT = (XID_GPU_LOST, 119, 120)
#: ECN-marked packets and CNPs a port counts in one iteration of congestion.
CNPS_PER_CONGESTED_STEP = 5000

#: Where a node of a jobs scenario keeps its training-step trace files (what the step-trace sampler reads).
STEP_TRACE_DIR = "step_trace"

NODE_SAMPLERS = ("heartbeat", "gpu", "xid_kmsg", "nic", "nccl_inspector", "nccl_debug_log", "nccl_conn")


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


class NodeWriter:
    """One simulated node's files, advanced from the twin's step outputs."""

    def __init__(
        self,
        root: Path,
        node: str,
        node_index: int,
        gpus: int,
        nics: int,
        epoch_s: float,
        rate_gbps: float = 400,
    ) -> None:
        self.root = Path(root)
        self.node = node
        self.gpus = gpus
        self.nics = nics
        self.epoch_s = epoch_s  # wall-clock time of simulated t = 0
        self.rate_gbps = rate_gbps
        self.tx_words = [0] * nics
        self.rx_words = [0] * nics
        self.roce_retransmits = [0] * nics
        self.link_downed = [0] * nics
        self.cnp = [0] * nics
        self.nvlink_errors = [0] * gpus
        self.carrier_changes = [1] * nics
        self.energy_mj = [1e9] * gpus
        self.pcie = [0.0] * gpus
        self.nvlink = [0.0] * gpus
        for d in ("inspector", "nccl-logs", "conn"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for n in range(nics):
            write_ib_port(self.root / "sys", f"mlx5_{n}", 1, rate_gbps=rate_gbps, netdev=f"ens{n}np0")
            write_netdev(self.root / "sys", f"ens{n}np0", speed_mbps=int(rate_gbps * 1000))
        self.scenario = {
            "start_s": epoch_s,
            "gpus": [gpu_entry(g, node_index) for g in range(gpus)],
            "events": [],
        }
        for g in self.scenario["gpus"]:
            g["rates"] = {}
            g["counters"] = {}
        _atomic_json(self.root / "nvml.json", self.scenario)
        (self.root / "kmsg.log").touch()

    def sampler_config(self) -> dict[str, dict[str, Any]]:
        """[agent.samplers.*] for an agent reading this node."""
        r = self.root
        return {
            "heartbeat": {},
            "gpu": {"nvml_library": FAKE_NVML, "nvml_library_arg": str(r / "nvml.json")},
            "xid_kmsg": {"kmsg_path": str(r / "kmsg.log"), "from_start": True},
            "nic": {"sysfs_root": str(r / "sys")},
            "nccl_inspector": {"dump_dir": str(r / "inspector")},
            "nccl_debug_log": {"log_dir": str(r / "nccl-logs")},
            "nccl_conn": {"record_dir": str(r / "conn")},
        }

    def wall(self, t: float) -> float:
        """Wall-clock seconds of simulated time t."""
        return self.epoch_s + t

    def write_init_log(self, twin) -> None:
        """NCCL_DEBUG=INFO lines: communicator init and the ring connections of this node's ranks.

        Local rank k is process ``twin.pid_of(node, k)`` on CUDA device k, which is NVML GPU
        ``twin.gpu_of(node, k)`` at that GPU's PCI address (NCCL's short busId form).
        """
        lines = []
        comm, base, size = twin.comm_of(self.node)
        for k in range(self.gpus):
            gpu, p = twin.gpu_of(self.node, k), twin.pid_of(self.node, k)
            lines.append(
                f"{self.node}:{p}:{p} [{k}] NCCL INFO ncclCommInitRank comm 0x{0x55D0 + k:x} rank {base + k} "
                f"nranks {size} cudaDev {k} nvmlDev {gpu} busId {PCI_BUSES[gpu % len(PCI_BUSES)]:x}000 "
                f"commId {comm} - Init START"
            )
        stage = twin.stage_of[self.node]
        order = [
            twin.comm_of(h)[1] for h in twin.job_hosts_in_ring(stage)
        ]  # ring of node-leader ranks, per channel
        for c in range(self.nics):
            ring = "".join(f"{r + c:4d}" for r in order)
            pid = twin.pid_of(self.node, c % self.gpus)  # channel c's ring, as local rank c logs it
            lines.append(f"{self.node}:{pid}:{pid} [{c}] NCCL INFO Channel {c:02d}/{self.nics:02d} :{ring}")
        for f in twin.flows[: twin.dp_flows]:  # pipeline p2p communicators connect lazily, after init
            if f.src == self.node:
                src_rank, dst_rank = twin.comm_of(f.src)[1] + f.src_nic, twin.comm_of(f.dst)[1] + f.dst_nic
                pid = twin.pid_of(self.node, f.src_nic)
                lines.append(
                    f"{self.node}:{pid}:{pid} [{f.src_nic}] NCCL INFO Channel {f.channel:02d}/0 : "
                    f"{src_rank}[{f.src_nic}] -> {dst_rank}[{f.dst_nic}] [send] via NET/IB/{f.src_nic}/GDRDMA"
                )
        (self.root / "nccl-logs" / f"{self.node}.log").write_text("\n".join(lines) + "\n")

    def write_processes(self, twin, used_memory_bytes: int = 71 << 30) -> None:
        """NVML's compute processes: each GPU runs the process of the local rank that drives it."""
        for g, gpu in enumerate(self.scenario["gpus"]):
            pid = twin.pid_of(self.node, twin.local_rank(self.node, g))
            gpu["processes"] = [{"pid": pid, "used_memory_bytes": used_memory_bytes}]
        _atomic_json(self.root / "nvml.json", self.scenario)

    def gpu_gauges(self, gpu: int) -> dict[str, Any]:
        """The GPU's NVML gauges as this iteration will write them (a fault's ``expose`` changes them)."""
        return self.scenario["gpus"][gpu]["gauges"]

    def raise_xid(self, gpu: int, xid: int, at_s: float) -> None:
        """An Xid on one GPU: its NVRM line in the kernel log, and what NVML reports of it."""
        bus = f"0000:{PCI_BUSES[gpu % len(PCI_BUSES)]:02x}:00"
        with open(self.root / "kmsg.log", "a") as f:
            f.write(f"NVRM: Xid (PCI:{bus}): {xid}, pid=4242, name=python, simulated fault\n")
        if xid == XID_GPU_LOST:
            self.scenario["gpus"][gpu]["lost_at_s"] = at_s
        elif xid not in XIDS_NVML_CANNOT_REPORT:  # the kernel log can
            self.scenario["events"].append({"at_s": at_s, "gpu": gpu, "xid": xid})

    def apply(self, twin, out) -> None:
        """Write one step: counters advance with the step's traffic and faults; records per rank/connection."""
        self._reset_gauges(out)
        for fault in twin.faults:
            if fault.node == self.node:
                FAULT_KINDS[fault.kind].expose(self, fault, out)
        self._write_link_changes(out)
        self._write_nic_counters(out)
        self._write_nvml(out)
        self._write_inspector_records(twin, out)
        self._write_connection_records(twin, out)

    def _reset_gauges(self, out) -> None:
        """Every GPU's gauges as a healthy one shows them; while the job is blocked NCCL's kernels spin."""
        for g in range(self.gpus):
            gauges = self.gpu_gauges(g)
            gauges.update(HEALTHY_GAUGES)
            if out.blocked:
                gauges["util_gpu_pct"] = 100.0

    def _write_link_changes(self, out) -> None:
        """Port state, rate and the netdev's carrier for every link of this node that changed."""
        sysroot = self.root / "sys"
        for change in out.link_changes:
            if change.node != self.node:
                continue
            n = change.nic
            down = change.state == "down"
            set_link(
                sysroot,
                f"mlx5_{n}",
                1,
                state="DOWN" if down else "ACTIVE",
                phys_state="Polling" if down else "LinkUp",
                rate_gbps=self.rate_gbps if down else change.rate_gbps,
            )
            if down:
                self.link_downed[n] += 1
                self.carrier_changes[n] += 1
            write_netdev(
                sysroot,
                f"ens{n}np0",
                operstate="down" if down else "up",
                carrier=0 if down else 1,
                carrier_changes=self.carrier_changes[n],
                speed_mbps=int((change.rate_gbps if change.state == "degraded" else self.rate_gbps) * 1000),
            )

    def _write_nic_counters(self, out) -> None:
        """Port and hardware counters: bytes of this step's traffic, retransmissions, ECN marks and CNPs."""
        sysroot = self.root / "sys"
        for n in range(self.nics):
            sent = out.nic_bytes.get((self.node, n), 0.0)
            self.tx_words[n] += int(sent / 4)
            self.rx_words[n] += int(sent / 4)  # ring: every NIC receives what its peer sends
            update_counters(
                sysroot,
                f"mlx5_{n}",
                1,
                {
                    "port_xmit_data": self.tx_words[n],
                    "port_rcv_data": self.rx_words[n],
                    "link_downed": self.link_downed[n],
                },
            )
            if (
                self.node,
                n,
            ) in out.congested_nics:  # ECN marks and CNPs, no errors: the signature of congestion
                self.cnp[n] += CNPS_PER_CONGESTED_STEP
            update_counters(
                sysroot,
                f"mlx5_{n}",
                1,
                {
                    "roce_adp_retrans": self.roce_retransmits[n],
                    "local_ack_timeout_err": self.roce_retransmits[n] // 4,
                    "np_cnp_sent": self.cnp[n],
                    "rp_cnp_handled": self.cnp[n],
                    "np_ecn_marked_roce_packets": self.cnp[n],
                },
                "hw_counters",
            )

    def _write_nvml(self, out) -> None:
        """The fake NVML's scenario: gauges, energy and NVLink/PCIe counters, NVLink errors, the clock."""
        for g, gpu in enumerate(self.scenario["gpus"]):
            self.energy_mj[g] += gpu["gauges"]["power_mw"] / 1000 * out.duration_s * 1000
            self.nvlink[g] += 2.5e10 * out.duration_s
            if self.nvlink_errors[g]:  # Xid 74 comes with CRC/replay errors on the GPU's links
                gpu["link_counters"] = {
                    str(k): {  # what each architecture counts: A100 data CRC, H100 link CRC, B200 packets
                        "crc_data_errors": self.nvlink_errors[g],
                        "link_crc_errors": self.nvlink_errors[g],
                        "rx_error_packets": self.nvlink_errors[g],
                        "replay_errors": self.nvlink_errors[g] * 2,
                    }
                    for k in range(4)
                }
            gpu["counters"] = {
                "energy_mj": self.energy_mj[g],
                "nvlink_tx_bytes": self.nvlink[g],
                "nvlink_rx_bytes": self.nvlink[g],
                "pcie_tx_bytes": self.pcie[g],
                "pcie_rx_bytes": self.pcie[g],
            }
        self.scenario["clock_s"] = self.wall(out.t + max(out.duration_s, 0.0))
        _atomic_json(self.root / "nvml.json", self.scenario)

    def _write_inspector_records(self, twin, out) -> None:
        """NCCL Inspector lines: one per rank's collective and one per pipeline send, when the step finished."""
        node = self.node
        end_us = int(self.wall(out.t + out.duration_s) * 1e6)
        comm, base, size = twin.comm_of(node)
        for r in out.ranks:
            if r.node != node or not r.issued or out.blocked:
                continue
            local = twin.local_rank(node, r.gpu)
            rec = {
                "header": {
                    "id": comm,
                    "rank": base + local,
                    "n_ranks": size,
                    "nnodes": twin.dp,
                },
                "metadata": {
                    "inspector_output_format_version": "v4.0",
                    "dump_timestamp_us": end_us,
                    "hostname": node,
                    "pid": twin.pid_of(node, local),
                },
                "coll_perf": {
                    "coll": "AllReduce",
                    "coll_sn": out.seq,
                    "coll_msg_size_bytes": int(twin.message_bytes),
                    "coll_exec_time_us": r.exec_us,
                    "coll_timing_source": "kernel_gpu",
                    "coll_algobw_gbs": twin.message_bytes / max(r.exec_us, 1) / 1e3,
                    "coll_busbw_gbs": twin.message_bytes / max(r.exec_us, 1) / 1e3 * 2,
                },
            }
            if twin.inspector_verbose:  # NCCL_INSPECTOR_DUMP_VERBOSE=1: the event trace with the start time
                start_us = int(self.wall(r.arrive_s) * 1e6)
                rec["coll_perf"]["event_trace_ts"] = {"coll_start_ts": start_us, "coll_stop_ts": start_us}
            with open(self.root / "inspector" / f"rank{r.rank}.log", "a") as f:
                f.write(json.dumps(rec) + "\n")
        for c in out.conns:  # pipeline sends: one p2p record per sending GPU
            if c.get("kind") != "pp" or c["src"] != node or out.blocked:
                continue
            rank = twin.global_rank(node, c["nic"])  # local rank n sends on NIC n
            rec = {
                "header": {"id": twin.pp_comm(c["src"], c["dst"]), "rank": rank, "n_ranks": 2, "nnodes": 2},
                "metadata": {
                    "inspector_output_format_version": "v4.0",
                    "dump_timestamp_us": end_us,
                    "hostname": node,
                    "pid": twin.pid_of(node, c["nic"]),
                },
                "p2p_perf": {
                    "p2p": "Send",
                    "p2p_sn": out.seq,
                    "p2p_peer": twin.global_rank(c["dst"], c["nic"]),
                    "p2p_msg_size_bytes": int(c["bytes"]),
                    "p2p_exec_time_us": c["net_us"],
                    "p2p_timing_source": "kernel_gpu",
                    "p2p_algobw_gbs": c["bytes"] / max(c["net_us"], 1) / 1e3,
                    "p2p_busbw_gbs": c["bytes"] / max(c["net_us"], 1) / 1e3,
                },
            }
            with open(self.root / "inspector" / f"rank{rank}.log", "a") as f:
                f.write(json.dumps(rec) + "\n")

    def _write_connection_records(self, twin, out) -> None:
        """The C4 profiler plugin's per-connection records of this node's sends."""
        node = self.node
        end_us = int(self.wall(out.t + out.duration_s) * 1e6)
        comm, base, _size = twin.comm_of(node)
        lines = []
        for c in out.conns:
            if c["src"] != node:
                continue
            lines.append(
                json.dumps(
                    {
                        "v": 1,
                        "kind": "conn",
                        "ts_ns": end_us * 1000,
                        "window_ns": int(max(out.duration_s, 1e-3) * 1e9),
                        "pid": twin.pid_of(node, c["nic"]),
                        "comm": twin.pp_comm(c["src"], c["dst"]) if c.get("kind") == "pp" else comm,
                        "rank": twin.global_rank(c["src"], c["nic"])
                        if c.get("kind") == "pp"
                        else base + c["nic"],
                        "peer": twin.global_rank(c["dst"], c["nic"])
                        if c.get("kind") == "pp"
                        else twin.comm_of(c["dst"])[1] + c["nic"],
                        "channel": c["channel"],
                        "dir": "send",
                        "dev": f"mlx5_{c['nic']}",
                        "port": 1,
                        "ops": 1,
                        "steps": max(1, int(c["bytes"] // (4 << 20))),
                        "bytes": int(c["bytes"]),
                        "net_us": c["net_us"],
                        "wait_peer_us": c["wait_peer_us"],
                        "wait_gpu_us": c["wait_gpu_us"],
                    }
                )
            )
        if lines:
            with open(self.root / "conn" / f"c4-conn-{node}.jsonl", "a") as f:
                f.write("\n".join(lines) + "\n")
