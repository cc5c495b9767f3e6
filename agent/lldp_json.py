"""lldpd's JSON (``lldpcli -f json|json0 show neighbors details``) as fabric_neighbors rows.

lldpd's ``json`` shape depends on counts: ``interface`` is an object keyed by interface name when
there is one interface and a list of such objects when there are several; ``chassis`` is keyed by
the system name, or holds the chassis fields directly when the neighbour sends no name; one
management address is a string, several a list. The TTL sits in ``chassis`` up to lldpd 0.9.x and
in ``port`` from 1.0. ``json0`` (lldpd >= 0.9.?, or ``--enable-json0``) always uses lists, with
``name`` inside each interface and every scalar as ``[{"value": ...}]``. All of these are read.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from c4.neighbor_guard import checked_rows

#: LLDP capabilities that make a neighbour a switch.
SWITCH_CAPABILITIES = frozenset({"Bridge", "Router"})
#: Port id subtypes that name the port (rather than a MAC or an address).
NAMED_PORT_TYPES = frozenset({"ifname", "local", "ifalias", "number"})


def _items(value: Any) -> list[Any]:
    """A JSON value that lldpd writes as one item or as a list of them, as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _scalar(value: Any) -> str:
    """A string from lldpd's ``"x"``, ``["x", ...]`` or json0's ``[{"value": "x"}]`` (first item)."""
    for item in _items(value):
        if isinstance(item, dict):
            item = item.get("value")
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            return str(item)
    return ""


def _typed(value: Any) -> tuple[str, str]:
    """(value, type) of an ``id`` field: ``{"type": "mac", "value": ...}`` or json0's list of it."""
    for item in _items(value):
        if isinstance(item, dict):
            return str(item.get("value", "")), str(item.get("type", ""))
        if isinstance(item, str):
            return item, ""
    return "", ""


def _interfaces(lldp: Any, skipped: Counter) -> list[tuple[str, dict]]:
    """(interface name, its object) from json's object/list-of-objects and json0's list with ``name``;
    an ``lldp`` entry that is not an object is counted (entry_not_object)."""
    out: list[tuple[str, dict]] = []
    if lldp is None:
        skipped["entry_not_object"] += 1
    for block in _items(lldp):  # json0: "lldp": [{"interface": [...]}]
        if not isinstance(block, dict):
            skipped["entry_not_object"] += 1
            continue
        for item in _items(block.get("interface")):
            if not isinstance(item, dict):
                out.append(("", {}))
            elif "name" in item and isinstance(item.get("name"), str):  # json0
                out.append((item["name"], item))
            else:  # json: {"eth0": {...}} (one or several keys)
                out.extend((name, obj if isinstance(obj, dict) else {}) for name, obj in item.items())
    return out


def _chassis(raw: Any) -> tuple[str, dict]:
    """(system name, chassis fields): json keys the chassis by its name unless it sent none; json0 has ``name``."""
    for item in _items(raw):
        if not isinstance(item, dict):
            continue
        if "id" in item or "name" in item or "descr" in item:  # nameless json chassis, or json0
            return _scalar(item.get("name")), item
        for name, fields in item.items():
            if isinstance(fields, dict):
                return str(name), fields
    return "", {}


def _capabilities(chassis: dict) -> list[str]:
    """Enabled capability types."""
    out = []
    for cap in _items(chassis.get("capability")):
        if isinstance(cap, dict) and cap.get("enabled") is True and isinstance(cap.get("type"), str):
            out.append(cap["type"])
    return out


def neighbor_kind(capabilities: list[str]) -> str:
    """switch, host or '' from the enabled LLDP capabilities."""
    if SWITCH_CAPABILITIES & set(capabilities):
        return "switch"
    if "Station" in capabilities:
        return "host"
    return ""


def neighbor_port(port_id: str, port_id_type: str, port_descr: str) -> str:
    """The neighbour's port as the fabric names it: a named port id, else the description, else the id."""
    if port_id and port_id_type in NAMED_PORT_TYPES:
        return port_id
    return port_descr.strip() or port_id


def _ttl(port: dict, chassis: dict) -> int | None:
    text = _scalar(port.get("ttl")) or _scalar(chassis.get("ttl"))
    if not text:
        ttl_obj = port.get("ttl")
        if isinstance(ttl_obj, dict):
            text = _scalar(ttl_obj.get("ttl"))
    try:
        return int(text) if text else None
    except ValueError:
        return None


def neighbor_rows(
    text: str, local_system: str, skipped: Counter, amended: Counter | None = None
) -> list[dict[str, Any]]:
    """fabric_neighbors rows from one lldpcli JSON document, checked by neighbor_guard (text it had to
    make safe counted in ``amended``); what cannot be read is counted by reason."""
    if not text.strip():
        skipped["report_empty"] += 1
        return []
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        skipped["report_not_json"] += 1
        return []
    if not isinstance(doc, dict) or "lldp" not in doc:
        skipped["report_not_lldp"] += 1
        return []
    rows = []
    for name, obj in _interfaces(doc["lldp"], skipped):
        chassis_name, chassis = _chassis(obj.get("chassis"))
        port = next((p for p in _items(obj.get("port")) if isinstance(p, dict)), {})
        chassis_id, chassis_type = _typed(chassis.get("id"))
        port_id, port_type = _typed(port.get("id"))
        if not name or not (chassis_id or chassis_name) or not port_id:
            skipped["neighbor_incomplete"] += 1
            continue
        caps = _capabilities(chassis)
        port_descr = _scalar(port.get("descr"))
        rows.append(
            {
                "source": "lldpd",
                "local_system": local_system,
                "interface": name,
                "local_id": "",
                "chassis_id": chassis_id,
                "chassis_id_type": chassis_type,
                "system_name": chassis_name,
                "system_descr": _scalar(chassis.get("descr")),
                "port_id": port_id,
                "port_id_type": port_type,
                "port_descr": port_descr,
                "neighbor_port": neighbor_port(port_id, port_type, port_descr),
                "neighbor_kind": neighbor_kind(caps),
                "capabilities": ",".join(caps),
                "mgmt_ip": _scalar(chassis.get("mgmt-ip")),
                "ttl_s": _ttl(port, chassis),
                "link_rate": "",
            }
        )
    return checked_rows(rows, skipped, Counter() if amended is None else amended)
