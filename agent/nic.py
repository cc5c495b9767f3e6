"""NIC sampler: RDMA port counters and netdev statistics from sysfs (root injectable)."""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c4.agent.registry import SamplerContext
from c4.agent.sampler import Inventory, Rows, SourceUnavailable
from c4.agent.sysfs import (
    U64_LIMIT,
    HeldFiles,
    in_place_devs,
    parse_counter,
    parse_rate_bps,
    parse_state,
    read_counter,
    read_text,
    resolve_entry,
)
from c4.options import Options as SectionOptions

log = logging.getLogger("c4.agent.nic")
COUNTERS_FILE = Path(__file__).parent / "nic_counters.toml"


@functools.cache
def counter_spec() -> dict[str, Any]:
    """nic_counters.toml."""
    return tomllib.loads(COUNTERS_FILE.read_text())


def regular_files(directory: Path) -> dict[str, bool]:
    """The entries of a directory: name -> whether it is a regular file (symlinks followed); {} when the
    directory cannot be listed. One listing instead of a stat per file a port may have."""
    try:
        with os.scandir(directory) as entries:
            out = {}
            for e in entries:
                try:
                    out[e.name] = e.is_file()
                except OSError:
                    out[e.name] = False
            return out
    except OSError:
        return {}


def sysfs_base(root: Path) -> Path:
    """Accept a root holding class/ (like /sys) or one holding sys/class/ (a captured tree)."""
    root = Path(root)
    if (root / "class").is_dir():
        return root
    if (root / "sys" / "class").is_dir():
        return root / "sys"
    return root


@dataclass
class IbPort:
    """One RDMA device port and the files to read each tick."""

    device: str
    port: int
    path: Path
    netdev: str
    fw_ver: str
    board_id: str
    hca_type: str
    node_guid: str
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # column -> (file, multiplier)
    #: legacy mlx4: column -> (counters/ file, counters_ext/ file, multiplier); the larger value wins
    dual: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    link_layer: str = ""  # fixed for a port: read at discovery
    #: slow tick? -> (columns, paths, multipliers) of ``files`` read on such a tick (made on first use)
    plans: dict[bool, tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """The port directory as a string ending in '/' (cheap path joins per tick)."""
        return f"{self.path}/"


@dataclass
class Netdev:
    """One network interface and its statistics files."""

    name: str
    path: Path
    stats: dict[str, str] = field(default_factory=dict)
    address: str = ""  # hardware address: fixed for an interface, read at discovery
    #: slow tick? -> (columns, paths) of ``stats`` read on such a tick (made on first use)
    plans: dict[bool, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)


#: A netdev's attribute files read as counters each tick, in this order (before its statistics/ files).
NETDEV_ATTR_COUNTERS = ("speed", "carrier", "mtu", "carrier_changes")

#: Regular files the kernel keeps in /sys/class/net beside the interface links (the bonding driver's
#: class attribute): not interfaces, so not warned about.
NET_CLASS_FILES = frozenset({"bonding_masters"})


class NicSampler:
    """Reads /sys/class/infiniband and /sys/class/net; missing or odd files are skipped and counted."""

    name = "nic"
    tables = ("ib_port_samples", "netdev_samples", "nic_events")

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.nic]``. sysfs_root holds class/ (as /sys does) or sys/class/."""

        sysfs_root: Path = Path("/sys")
        include: list[str] | None = None  # RDMA device globs, e.g. ["mlx5_*"]; default all
        netdevs: list[str] | None = None  # netdev globs; default: all except lo
        rediscover_every_ticks: int = 60
        slow_every_ticks: int = (
            5  # rarely-moving error counters ([slow] in nic_counters.toml) are read this often
        )
        # sysfs_root's files change in place and are never replaced by other files, as on sysfs (which is
        # recognised by itself): held files are read with no check for a new file. For a static capture
        # or a benchmark's tree; a tree whose writer replaces files (the twin's) must leave it false
        tree_in_place: bool = False

    def __init__(
        self,
        sysfs_root: Path | str = "/sys",
        include: list[str] | None = None,
        netdevs: list[str] | None = None,
        rediscover_every_ticks: int = 60,
        slow_every_ticks: int = 5,
        tree_in_place: bool = False,
    ) -> None:
        self.base = sysfs_base(Path(sysfs_root))
        self.include = include
        self.netdev_globs = netdevs
        self.rediscover_every_ticks = max(1, rediscover_every_ticks)
        self.slow_every_ticks = max(1, slow_every_ticks)
        spec = counter_spec().get("slow", {})
        self._slow_ib, self._slow_netdev = set(spec.get("ib", ())), set(spec.get("netdev", ()))
        self.ports: list[IbPort] = []
        self.netdevs: list[Netdev] = []
        self.warnings = 0
        self._warned: set[str] = set()
        self._ticks = 0
        self._prev_state: dict[tuple[str, int], tuple[str, str, int | None]] = {}
        self._prev_counters: dict[tuple[str, int], dict[str, int]] = {}
        self._prev_carrier: dict[str, tuple[str, int | None]] = {}
        self.skipped_by_reason: dict[str, int] = {}
        # counter and state files kept open: one pread each a tick
        self._files = HeldFiles(in_place=in_place_devs(sysfs_root) if tree_in_place else None)
        # the port subdirectories nic_counters.toml names files in, listed once each per discovery
        self._counter_dirs = sorted({sub for sub, _f, _m in counter_spec()["ib"].values()} | {"counters_ext"})

    @property
    def records_skipped(self) -> int:
        """Counter values read but not stored (not a number, out of range, unreadable), all reasons."""
        return sum(self.skipped_by_reason.values())

    def _skip(self, path: str) -> bool:
        """Count one counter value that could not be stored, by why; False for the driver's documented
        'N/A (no PMA)', which is not counted."""
        text = read_text(path, 64)
        if text is None:
            reason = "unreadable"
        elif text.startswith("N/A"):
            return False
        elif parse_counter(text) is None:
            reason = "not_a_number"
        else:
            reason = "out_of_range"
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1
        return True

    @classmethod
    def from_options(cls, opts: NicSampler.Options, ctx: SamplerContext) -> NicSampler:
        """Build from validated options."""
        return cls(
            opts.sysfs_root,
            opts.include,
            opts.netdevs,
            opts.rediscover_every_ticks,
            opts.slow_every_ticks,
            opts.tree_in_place,
        )

    def _warn(self, key: str, message: str) -> None:
        self.warnings += 1
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s (warnings_total=%d)", message, self.warnings)

    # --- discovery ------------------------------------------------------------
    def discover(self) -> None:
        """Find RDMA ports and netdevs and the files each has (one listing per counter directory)."""
        spec = counter_spec()
        ports: list[IbPort] = []
        ib_dir = self.base / "class" / "infiniband"
        for dev in sorted(p.name for p in ib_dir.iterdir()) if ib_dir.is_dir() else []:
            if self.include and not any(fnmatch.fnmatch(dev, g) for g in self.include):
                continue
            dpath = resolve_entry(ib_dir, dev)
            if dpath is None or not (dpath / "ports").is_dir():
                self._warn(f"noports:{dev}", f"RDMA device without ports/ skipped device={dev}")
                continue
            attrs = {a: read_text(dpath / a) or "" for a in ("fw_ver", "board_id", "hca_type", "node_guid")}
            for port_dir in sorted((dpath / "ports").iterdir(), key=lambda p: p.name):
                if not port_dir.name.isdigit():
                    continue
                port = IbPort(
                    dev,
                    int(port_dir.name),
                    port_dir,
                    self._netdev_of(dpath, port_dir),
                    **attrs,
                    link_layer=read_text(port_dir / "link_layer") or "",
                )
                if not (port_dir / "counters").is_dir():
                    self._warn(
                        f"nocounters:{dev}", f"RDMA port without counters/ device={dev} port={port.port}"
                    )
                listed = {sub: regular_files(port_dir / sub) for sub in self._counter_dirs}
                for column, (sub, fname, mult) in spec["ib"].items():
                    ext = spec["ib_ext"].get(column)
                    ext_path = port_dir / "counters_ext" / ext if ext else None
                    has_ext = ext_path is not None and listed["counters_ext"].get(ext) is True
                    if has_ext and listed[sub].get(fname) is True:
                        port.dual[column] = (str(port_dir / sub / fname), str(ext_path), mult)
                    elif has_ext:
                        port.files[column] = (str(ext_path), mult)
                    elif listed[sub].get(fname) is True:
                        port.files[column] = (str(port_dir / sub / fname), mult)
                    elif fname in listed[sub]:
                        self._warn(
                            f"notfile:{port_dir / sub / fname}",
                            f"counter is not a readable file, skipped path={port_dir / sub / fname}",
                        )
                ports.append(port)
        netdevs: list[Netdev] = []
        net_dir = self.base / "class" / "net"
        for name in sorted(p.name for p in net_dir.iterdir()) if net_dir.is_dir() else []:
            if name == "lo" or (
                self.netdev_globs and not any(fnmatch.fnmatch(name, g) for g in self.netdev_globs)
            ):
                continue
            npath = resolve_entry(net_dir, name)
            if npath is None and name in NET_CLASS_FILES:
                continue
            if npath is None:
                self._warn(f"netdev:{name}", f"netdev entry not resolvable skipped netdev={name}")
                continue
            nd = Netdev(name, npath, address=read_text(npath / "address") or "")
            listed_stats = regular_files(npath / "statistics")
            for column, fname in spec["netdev"].items():
                if listed_stats.get(fname) is True:
                    nd.stats[column] = str(npath / "statistics" / fname)
            netdevs.append(nd)
        old = {(p.device, p.port) for p in self.ports}
        new = {(p.device, p.port) for p in ports}
        self._changes = (sorted(new - old) if self._ticks else [], sorted(old - new))
        self.ports, self.netdevs = ports, netdevs
        self._files.keep_only(self._paths_read())  # files of ports that went away are not held past it

    def _paths_read(self) -> set[str]:
        """Every file a tick reads of the ports and netdevs found (what stays held across a rediscovery)."""
        paths: set[str] = set()
        for p in self.ports:
            paths.update(path for path, _ in p.files.values())
            paths.update(f"{p.base}{f}" for f in ("state", "phys_state", "rate", "link_layer"))
        for n in self.netdevs:
            paths.update(n.stats.values())
            paths.update(f"{n.path}/{f}" for f in (*NETDEV_ATTR_COUNTERS, "operstate", "duplex"))
        return paths

    def _netdev_of(self, dev_path: Path, port_dir: Path) -> str:
        ndevs = port_dir / "gid_attrs" / "ndevs"
        if ndevs.is_dir():
            for f in sorted(ndevs.iterdir(), key=lambda p: p.name):
                name = read_text(f)
                if name:
                    return name
        net = dev_path / "device" / "net"
        if net.is_dir():
            names = sorted(p.name for p in net.iterdir())
            port_index = int(port_dir.name) - 1
            if names:
                return names[port_index] if port_index < len(names) else names[0]
        return ""

    def probe(self) -> None:
        """There must be at least one RDMA port or netdev under the root."""
        if not (self.base / "class").is_dir():
            raise SourceUnavailable(f"{self.base / 'class'} not found")
        self.discover()
        if not self.ports and not self.netdevs:
            raise SourceUnavailable(f"no RDMA ports or netdevs under {self.base / 'class'}")

    def inventory(self, into: Inventory) -> None:
        """NIC ports for Hello."""
        for p in self.ports:
            into.nics.append(
                {
                    "device": p.device,
                    "port": p.port,
                    "netdev": p.netdev,
                    "rate_bps": parse_rate_bps(read_text(p.path / "rate")) or 0,
                    "link_layer": read_text(p.path / "link_layer") or "",
                }
            )

    # --- sampling ---------------------------------------------------------------
    def sample(self, now_ns: int) -> Rows:
        """One row per RDMA port and per netdev; events for state, rate, carrier and resets."""
        if self._ticks % self.rediscover_every_ticks == 0 and self._ticks:
            self.discover()
        elif not self._ticks and not self.ports and not self.netdevs:
            self.discover()
        self._slow_tick = self._ticks % self.slow_every_ticks == 0
        self._ticks += 1
        self._files.new_pass()
        events: list[dict[str, Any]] = []
        added, removed = getattr(self, "_changes", ([], []))
        for dev, port in added:
            events.append(self._event("device_added", dev, port, "", "", "", "", "RDMA port appeared"))
        for dev, port in removed:
            events.append(self._event("device_removed", dev, port, "", "", "", "", "RDMA port disappeared"))
        self._changes = ([], [])
        ib_rows = [self._sample_port(p, events) for p in self.ports]
        nd_rows = [self._sample_netdev(n, events) for n in self.netdevs]
        return {"ib_port_samples": ib_rows, "netdev_samples": nd_rows, "nic_events": events}

    @staticmethod
    def _event(
        kind: str, device: str, port: int | None, netdev: str, counter: str, old: str, new: str, message: str
    ) -> dict[str, Any]:
        return {
            "kind": kind,
            "device": device,
            "port": port,
            "netdev": netdev,
            "counter": counter,
            "old": old,
            "new": new,
            "message": message,
        }

    def _sample_port(self, p: IbPort, events: list[dict[str, Any]]) -> dict[str, Any]:
        base = p.base
        code, state = parse_state(self._files.read_text(base + "state"))
        _, phys = parse_state(self._files.read_text(base + "phys_state"))
        rate = parse_rate_bps(self._files.read_text(base + "rate"))
        row: dict[str, Any] = dict.fromkeys(counter_spec()["ib"])  # a column the driver lacks stays NULL
        row |= {
            "device": p.device,
            "port": p.port,
            "netdev": p.netdev,
            "link_layer": self._files.read_text(base + "link_layer") or "",
            "state": state,
            "state_code": code,
            "phys_state": phys,
            "rate_bps": rate,
            "fw_ver": p.fw_ver,
            "board_id": p.board_id,
            "hca_type": p.hca_type,
        }
        key = (p.device, p.port)
        prev_state = self._prev_state.get(key)
        if prev_state is not None:
            for kind, old, new in (
                ("link_state", prev_state[0], state),
                ("phys_state", prev_state[1], phys),
                ("rate", prev_state[2], rate),
            ):
                if old != new:
                    events.append(
                        self._event(
                            kind,
                            p.device,
                            p.port,
                            p.netdev,
                            "",
                            str(old),
                            str(new),
                            f"{kind} changed from {old} to {new}",
                        )
                    )
        self._prev_state[key] = (state, phys, rate)
        prev = self._prev_counters.setdefault(key, {})
        reset = []
        plan = p.plans.get(self._slow_tick)
        if plan is None:
            skip = () if self._slow_tick else self._slow_ib
            kept = [(c, path, mult) for c, (path, mult) in p.files.items() if c not in skip]
            plan = p.plans[self._slow_tick] = (
                tuple(c for c, _, _ in kept),
                tuple(path for _, path, _ in kept),
                tuple(mult for _, _, mult in kept),
            )
        columns, paths, mults = plan
        # hot loop: ~20-45 files a port, read in one go; non-blocking, regular files only, 0 <= n < 2^64
        for column, path, mult, value in zip(
            columns, paths, mults, self._files.read_counters(paths), strict=True
        ):
            if value is not None:
                value *= mult
                if value >= U64_LIMIT:
                    value = None
            if value is None:
                self._missing(path, (path,))
                row[column] = None
                continue
            row[column] = value
            if value < prev.get(column, 0):
                reset.append(column)
            prev[column] = value
        skip = () if self._slow_tick else self._slow_ib
        for column, (plain, ext, mult) in p.dual.items():  # legacy mlx4 only
            if column in skip:
                continue
            value = self._larger(plain, ext)
            value = None if value is None or value * mult >= U64_LIMIT else value * mult
            if value is None:
                self._missing(plain, (plain, ext))
            elif value < prev.get(column, 0):
                reset.append(column)
            if value is not None:
                prev[column] = value
            row[column] = value
        if reset:
            events.append(
                self._event(
                    "counter_reset",
                    p.device,
                    p.port,
                    p.netdev,
                    ",".join(reset),
                    "",
                    "",
                    f"counters went backwards (reset): {', '.join(reset)}",
                )
            )
        return row

    @staticmethod
    def _larger(plain: str, ext: str) -> int | None:
        """The larger of a counters/ value and its counters_ext/ twin (a saturated 32-bit value and an
        unfilled 64-bit 0 both lose); None only when neither reads."""
        values = [v for v in (read_counter(plain), read_counter(ext)) if v is not None]
        return max(values) if values else None

    def _missing(self, path: str, paths: tuple[str, ...]) -> None:
        """A counter stored as NULL: count each unreadable value by reason and warn once per file (not for
        a driver that documents the counter as 'N/A (no PMA)')."""
        counted = [self._skip(one) for one in paths]
        if any(counted):
            self._warn(f"val:{path}", f"counter unreadable or out of range, stored as missing file={path}")

    def _sample_netdev(self, n: Netdev, events: list[dict[str, Any]]) -> dict[str, Any]:
        base = f"{n.path}/"
        plan = n.plans.get(self._slow_tick)
        if plan is None:
            skip = () if self._slow_tick else self._slow_netdev
            kept = [(c, path) for c, path in n.stats.items() if c not in skip]
            plan = n.plans[self._slow_tick] = (
                tuple(c for c, _ in kept),
                (*(base + f for f in NETDEV_ATTR_COUNTERS), *(path for _, path in kept)),
            )
        columns, paths = plan
        values = self._files.read_counters(paths)  # the attributes' and the statistics' in one go
        speed, carrier, mtu, carrier_changes = values[: len(NETDEV_ATTR_COUNTERS)]
        speed = speed if speed is not None and speed >= 0 else None  # -1 (unknown) is not a counter: NULL
        operstate = self._files.read_text(base + "operstate") or ""
        row: dict[str, Any] = dict.fromkeys(counter_spec()["netdev"])
        row |= {
            "netdev": n.name,
            "operstate": operstate,
            "duplex": self._files.read_text(base + "duplex") or "",
            "address": n.address,
            "carrier": carrier,
            "speed_mbps": speed,
            "mtu": mtu,
            "carrier_changes": carrier_changes,
        }
        row.update(zip(columns, values[len(NETDEV_ATTR_COUNTERS) :], strict=True))
        prev = self._prev_carrier.get(n.name)
        if prev is not None and prev != (operstate, speed):
            events.append(
                self._event(
                    "netdev_state",
                    "",
                    None,
                    n.name,
                    "",
                    f"{prev[0]} {prev[1]}",
                    f"{operstate} {speed}",
                    f"netdev {n.name} operstate/speed changed",
                )
            )
        self._prev_carrier[n.name] = (operstate, speed)
        return row

    def close(self) -> None:
        """Close the held counter files."""
        self._files.close()
