"""Build the C4 NCCL profiler plugin (and its test driver) with the system C compiler."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SOURCE_DIR = Path(__file__).parent / "plugin"
PLUGIN_NAME = "libnccl-profiler-c4.so"
EMPTY_NAME = "libnccl-profiler-empty.so"
DRIVER_NAME = "c4-profiler-driver"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]


class BuildError(RuntimeError):
    """The compiler is missing or the build failed; the message holds the compiler output."""


def compiler() -> str:
    """$CC, or cc/gcc/clang from PATH."""
    for name in [os.environ.get("CC", ""), "cc", "gcc", "clang"]:
        if name and shutil.which(name):
            return name
    raise BuildError("no C compiler found: install gcc (Debian: apt-get install gcc) or set CC")


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(args)}\n{proc.stderr.strip()}")


def _compile(
    out_dir: Path | str, name: str, source: str, flags: list[str], libs: tuple[str, ...] = ()
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    _run([compiler(), *CFLAGS, *flags, "-o", str(target), str(SOURCE_DIR / source), *libs])
    return target


SHARED = ["-fPIC", "-shared", "-fvisibility=hidden"]


def build_plugin(out_dir: Path | str, debug: bool = False) -> Path:
    """Compile libnccl-profiler-c4.so into out_dir; returns its path."""
    return _compile(
        out_dir, PLUGIN_NAME, "c4_profiler.c", [*(["-O1", "-g"] if debug else []), *SHARED, "-pthread"]
    )


def build_empty(out_dir: Path | str) -> Path:
    """Compile the do-nothing baseline plugin used by `c4 bench plugin`."""
    return _compile(out_dir, EMPTY_NAME, "empty_profiler.c", SHARED)


def build_driver(out_dir: Path | str) -> Path:
    """Compile the driver that calls a plugin the way NCCL does (tests and the benchmark)."""
    return _compile(out_dir, DRIVER_NAME, "driver.c", [], ("-ldl",))
