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


def build_plugin(out_dir: Path | str, debug: bool = False) -> Path:
    """Compile libnccl-profiler-c4.so into out_dir; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / PLUGIN_NAME
    flags = ["-O1", "-g"] if debug else []
    _run(
        [
            compiler(),
            *CFLAGS,
            *flags,
            "-fPIC",
            "-shared",
            "-fvisibility=hidden",
            "-pthread",
            "-o",
            str(target),
            str(SOURCE_DIR / "c4_profiler.c"),
        ]
    )
    return target


def build_empty(out_dir: Path | str) -> Path:
    """Compile the do-nothing baseline plugin used by `c4 bench plugin`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / EMPTY_NAME
    _run(
        [
            compiler(),
            *CFLAGS,
            "-fPIC",
            "-shared",
            "-fvisibility=hidden",
            "-o",
            str(target),
            str(SOURCE_DIR / "empty_profiler.c"),
        ]
    )
    return target


def build_driver(out_dir: Path | str) -> Path:
    """Compile the driver that calls a plugin the way NCCL does (tests and the benchmark)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / DRIVER_NAME
    _run([compiler(), *CFLAGS, "-o", str(target), str(SOURCE_DIR / "driver.c"), "-ldl"])
    return target
