"""Which connections of a plan stock NCCL's even split can carry, and which need weighted QPs.

Stock NCCL (src/transport/net_ib, NCCL_IB_SPLIT_DATA_ON_QPS=1) opens NCCL_IB_QPS_PER_CONNECTION
QPs per device of a merged NIC, QP k on device k % devices, and splits every message evenly
over all of them: each NIC port carries the same share and every QP the same bytes. A plan
piece that is m such QPs on one path is fine (the source-port hook gives them the same path),
so a connection is carried as planned when its live NIC ports carry equal shares and each
piece is a whole number of QPs (1/Q of a port's share, for some Q up to 128). The min-max LP's unequal pieces, and pieces the
repair moved to the other port, are not: they need a net plugin that weights its QPs.
"""

from __future__ import annotations

from collections import defaultdict

from c4.traffic.planner import Plan

#: relative tolerance on byte shares
TOLERANCE = 1e-6
#: NCCL_IB_QPS_PER_CONNECTION's upper limit (NCCL env docs: range 1-128)
MAX_QPS = 128


def uneven_connections(plan: Plan) -> list[int]:
    """Indices of the plan's flows whose pieces stock NCCL's even split over QPs and ports cannot carry."""
    topo = plan.topo
    pieces = defaultdict(list)
    for p in plan.pieces:
        pieces[p.flow].append(p)
    out = []
    for i, f in enumerate(plan.flows):
        ps = pieces.get(i, [])
        ports = [x.name for x in topo.hosts[f.src].nics[f.src_nic] if topo.live(x.name, x.leaf)]
        share: dict[str, float] = dict.fromkeys(ports, 0.0)
        for p in ps:
            share[p.src_port.name] = share.get(p.src_port.name, 0.0) + p.bytes
        even = all(abs(b - f.bytes / len(share)) <= TOLERANCE * f.bytes for b in share.values())
        if not (even and _whole_qps(f.bytes / len(share), [p.bytes for p in ps])):
            out.append(i)
    return out


def _whole_qps(port_bytes: float, sizes: list[float]) -> bool:
    """Some Q <= MAX_QPS QPs per port of port_bytes / Q each make every piece a whole number of QPs."""
    for q in range(1, MAX_QPS + 1):
        unit = port_bytes / q
        if all(abs(b / unit - round(b / unit)) <= TOLERANCE * max(1.0, b / unit) for b in sizes):
            return True
    return False
