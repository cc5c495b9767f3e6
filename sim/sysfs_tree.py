"""Write realistic sysfs trees (mlx5-like RDMA ports and netdevs): tests, the benchmark and the twin.

Files are replaced atomically (write + rename) so a sampler reading concurrently never sees a
half-written number.
"""

from __future__ import annotations

import os
from pathlib import Path

#: hw_counters an mlx5 RoCE port exposes (with CNP/ECN counters, which the captured fixture lacks)
HW_COUNTERS = (
    "out_of_sequence",
    "packet_seq_err",
    "local_ack_timeout_err",
    "rnr_nak_retry_err",
    "implied_nak_seq_err",
    "duplicate_request",
    "out_of_buffer",
    "roce_adp_retrans",
    "roce_adp_retrans_to",
    "roce_slow_restart",
    "roce_slow_restart_cnps",
    "np_cnp_sent",
    "np_ecn_marked_roce_packets",
    "rp_cnp_handled",
    "rp_cnp_ignored",
    "req_cqe_error",
    "resp_cqe_error",
    "req_cqe_flush_error",
    "resp_cqe_flush_error",
)
COUNTERS = (
    "port_xmit_data",
    "port_rcv_data",
    "port_xmit_packets",
    "port_rcv_packets",
    "unicast_xmit_packets",
    "unicast_rcv_packets",
    "multicast_xmit_packets",
    "multicast_rcv_packets",
    "port_rcv_errors",
    "port_xmit_discards",
    "port_xmit_wait",
    "symbol_error",
    "link_downed",
    "link_error_recovery",
    "local_link_integrity_errors",
    "excessive_buffer_overrun_errors",
    "port_rcv_remote_physical_errors",
    "port_rcv_switch_relay_errors",
    "port_rcv_constraint_errors",
    "port_xmit_constraint_errors",
    "VL15_dropped",
)
NETDEV_STATS = (
    "rx_bytes",
    "tx_bytes",
    "rx_packets",
    "tx_packets",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
    "rx_crc_errors",
    "rx_missed_errors",
    "rx_fifo_errors",
    "tx_carrier_errors",
    "collisions",
    "multicast",
)
STATES = {"ACTIVE": 4, "DOWN": 1, "INIT": 2, "ARMED": 3}
PHYS = {"LinkUp": 5, "Polling": 2, "Disabled": 3, "LinkErrorRecovery": 6}


def write_file(path: Path, value: object) -> None:
    """Atomically replace one attribute file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


def rate_text(gbps: float) -> str:
    """The kernel's rate string for a RoCE/IB port."""
    lanes = 4 if gbps >= 100 else 1
    return f"{gbps:g} Gb/sec ({lanes}X NDR)" if gbps >= 400 else f"{gbps:g} Gb/sec ({lanes}X HDR)"


def write_ib_port(
    root: Path,
    device: str,
    port: int = 1,
    *,
    rate_gbps: float = 400,
    state: str = "ACTIVE",
    phys_state: str = "LinkUp",
    link_layer: str = "Ethernet",
    netdev: str = "",
    counters: dict[str, int] | None = None,
    hw_counters: dict[str, int] | None = None,
    with_hw_counters: bool = True,
) -> Path:
    """Create (or overwrite) one RDMA device port under root/class/infiniband."""
    dev = Path(root) / "class" / "infiniband" / device
    write_file(dev / "fw_ver", "28.39.1002")
    write_file(dev / "board_id", "MT_0000000838")
    write_file(dev / "hca_type", "MT4129")
    write_file(dev / "node_guid", "b83f:d203:00a4:6e10")
    p = dev / "ports" / str(port)
    set_link(root, device, port, state=state, phys_state=phys_state, rate_gbps=rate_gbps)
    write_file(p / "link_layer", link_layer)
    update_counters(root, device, port, {name: 0 for name in COUNTERS} | (counters or {}))
    if with_hw_counters:
        update_counters(
            root, device, port, {name: 0 for name in HW_COUNTERS} | (hw_counters or {}), "hw_counters"
        )
    if netdev:
        write_file(p / "gid_attrs" / "ndevs" / "0", netdev)
    return p


def set_link(
    root: Path,
    device: str,
    port: int = 1,
    *,
    state: str | None = None,
    phys_state: str | None = None,
    rate_gbps: float | None = None,
) -> None:
    """Change a port's state, physical state or rate."""
    p = Path(root) / "class" / "infiniband" / device / "ports" / str(port)
    if state is not None:
        write_file(p / "state", f"{STATES.get(state, 0)}: {state}")
    if phys_state is not None:
        write_file(p / "phys_state", f"{PHYS.get(phys_state, 0)}: {phys_state}")
    if rate_gbps is not None:
        write_file(p / "rate", rate_text(rate_gbps))


COUNTER_WIDTH = 24  # counters are rewritten in place, space-padded to a fixed width


def update_counters(
    root: Path, device: str, port: int, values: dict[str, int], sub: str = "counters"
) -> None:
    """Set counter files (raw sysfs values: data counters in 4-byte words).

    An existing file is overwritten in place with one fixed-width pwrite (a reader sees the old
    or the new number, padded with spaces as int() accepts); creating a new file per update
    costs ~20x more on the simulator's hot path.
    """
    d = f"{root}/class/infiniband/{device}/ports/{port}/{sub}/"
    for name, value in values.items():
        data = str(int(value)).encode().ljust(COUNTER_WIDTH) + b"\n"
        try:
            fd = os.open(d + name, os.O_WRONLY)
        except FileNotFoundError:
            write_file(Path(d + name), int(value))
            continue
        try:
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)


def write_netdev(
    root: Path,
    name: str,
    *,
    speed_mbps: int = 400000,
    operstate: str = "up",
    carrier: int = 1,
    carrier_changes: int = 1,
    mtu: int = 4200,
    stats: dict[str, int] | None = None,
) -> Path:
    """Create (or update) a netdev under root/class/net."""
    n = Path(root) / "class" / "net" / name
    write_file(n / "speed", speed_mbps)
    write_file(n / "operstate", operstate)
    write_file(n / "carrier", carrier)
    write_file(n / "carrier_changes", carrier_changes)
    write_file(n / "mtu", mtu)
    for stat in NETDEV_STATS:
        if stats and stat in stats or not (n / "statistics" / stat).exists():
            write_file(n / "statistics" / stat, (stats or {}).get(stat, 0))
    return n


def eight_nic_node(root: Path, rate_gbps: float = 400) -> Path:
    """A GPU node's 8 x 400G RoCE NICs (mlx5_0..7, one port each, netdevs ens<i>np0) plus a mgmt NIC."""
    root = Path(root)
    for i in range(8):
        write_ib_port(
            root,
            f"mlx5_{i}",
            1,
            rate_gbps=rate_gbps,
            netdev=f"ens{i}np0",
            counters={"port_xmit_data": 10**9 * (i + 1), "port_rcv_data": 10**9 * (i + 2)},
        )
        write_netdev(root, f"ens{i}np0", speed_mbps=int(rate_gbps * 1000))
    write_netdev(root, "eno1", speed_mbps=25000, mtu=1500)
    return root
