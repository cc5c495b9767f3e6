"""Names from YAML that end up in shell scripts and scheduler files: host names, switch names, label values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from c4.traffic.topology import TopologyError

#: RFC 1123 host name (dotted labels of letters, digits, '-'), plus '_' as generated names use it; max 253
_HOST_RE = re.compile(
    r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*"
)
#: Kubernetes label value: up to 63 of letters, digits, '-', '_', '.', starting and ending alphanumeric
_LABEL_RE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")


def is_host_name(name: object) -> bool:
    """True for a string that is a valid host name (RFC 1123, '_' allowed), at most 253 characters."""
    return isinstance(name, str) and len(name) <= 253 and _HOST_RE.fullmatch(name) is not None


def is_label_value(name: object) -> bool:
    """True for a non-empty string that is a valid Kubernetes label value."""
    return isinstance(name, str) and bool(name) and _LABEL_RE.fullmatch(name) is not None


def is_job_name(name: object) -> bool:
    """True for a non-empty printable string of at most 128 characters (no newline or other control character)."""
    return isinstance(name, str) and 0 < len(name) <= 128 and name.isprintable()


def check_host(name: object, where: str, what: str = "host") -> str:
    """The host name, or TopologyError naming where and the bad name."""
    if not is_host_name(name):
        raise TopologyError(
            f"{where}: {what} name {name!r} is not a valid host name (letters, digits, '-', '_', '.'; max 253)"
        )
    return str(name)


def check_label(name: object, where: str, what: str) -> str:
    """The switch/fabric name, or TopologyError unless it is a valid Kubernetes label value."""
    if not is_label_value(name):
        raise TopologyError(
            f"{where}: {what} name {name!r} is not a valid Kubernetes label value "
            "(letters, digits, '-', '_', '.'; alphanumeric at both ends; max 63)"
        )
    return str(name)


def check_topology_names(topo: Any, where: str) -> None:
    """Refuse a fabric, switch or host name that is unsafe in generated scripts and scheduler files."""
    check_label(topo.name, where, "fabric")
    for kind, names in (("leaf", topo.leaves), ("spine", topo.spines), ("core", topo.cores)):
        for n in names:
            check_label(n, where, kind)
    for h in topo.hosts:
        check_host(h, where)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with the same key twice."""

    where = "YAML"


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """Build a mapping; a repeated key raises TopologyError naming the file, line and key."""
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            dup = key in seen
        except TypeError:
            continue
        if dup:
            raise TopologyError(f"{loader.where}: line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_unique(path: Path | str) -> Any:
    """YAML from a file, refusing duplicate mapping keys; TopologyError naming the file on any problem."""
    try:
        loader = _UniqueKeyLoader(Path(path).read_text())
        loader.where = str(path)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TopologyError(f"{path}: {exc}") from None
