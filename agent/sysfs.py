"""Small, crash-proof readers of sysfs attribute files."""

from __future__ import annotations

import os
import re
from pathlib import Path

RATE = re.compile(r"^\s*([\d.]+)\s*([GMK]?)b/sec", re.IGNORECASE)
UNIT = {"G": 1_000_000_000, "M": 1_000_000, "K": 1_000, "": 1}


class SysfsError(ValueError):
    """A sysfs file exists but does not hold what it should."""


def read_text(path: Path | str) -> str | None:
    """File contents stripped, or None when missing, unreadable or a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode("utf-8", "replace").strip()
    except OSError:  # EISDIR, or EINVAL/EIO from a driver that refuses the read
        return None
    finally:
        os.close(fd)


def read_counter(path: str) -> int | None:
    """Fast path for a counter file: os.open/os.read, int() on the bytes; None when missing or not a number."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 64)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return int(data)
    except ValueError:
        return parse_counter(data.decode("utf-8", "replace"))


def parse_counter(text: str | None) -> int | None:
    """'12345' -> 12345; 'N/A (no PMA)', '' or garbage -> None."""
    if text is None:
        return None
    token = text.split()[0] if text.split() else ""
    if token.isdigit():
        return int(token)
    if token.lower().startswith("0x"):
        try:
            return int(token, 16)
        except ValueError:
            return None
    return None


def parse_state(text: str | None) -> tuple[int | None, str]:
    """'4: ACTIVE' -> (4, 'ACTIVE'); 'LinkUp' -> (None, 'LinkUp')."""
    if not text:
        return None, ""
    code, sep, name = text.partition(":")
    if sep and code.strip().isdigit():
        return int(code), name.strip()
    return None, text.strip()


def parse_rate_bps(text: str | None) -> int | None:
    """'25 Gb/sec (1X EDR)' -> 25_000_000_000; '2.5 Gb/sec' -> 2_500_000_000."""
    if not text:
        return None
    m = RATE.match(text)
    if not m:
        return None
    return int(float(m.group(1)) * UNIT[m.group(2).upper()])


def resolve_entry(class_dir: Path, name: str) -> Path | None:
    """A /sys/class/<x>/<name> entry as a directory: a real symlink, a directory, or a captured
    tree where the symlink was saved as a text file holding its target."""
    p = class_dir / name
    if p.is_dir():
        return p
    if p.is_file():
        target = read_text(p)
        if target and "/" in target and len(target) < 1024:
            resolved = (class_dir / target).resolve()
            if resolved.is_dir():
                return resolved
    return None
