"""A dependency-free writer of C4's training-step trace (docs/step-trace.md) for a training loop to call.

Standard library only: it never imports torch. Times come from ``time.time()`` (Unix epoch seconds);
for a GPU op the caller must synchronize (``torch.cuda.synchronize()``) before the op ends, or record
CUDA events and pass their times to :meth:`StepTraceWriter.op`, otherwise the duration measures only
the kernel launch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Every op the trace may name (docs/step-trace.md), in the order of a training step.
OPS: tuple[str, ...] = (
    "data_load",
    "forward",
    "backward",
    "send_forward",
    "recv_forward",
    "send_backward",
    "recv_backward",
    "reduce_scatter",
    "all_gather",
    "all_reduce",
    "all_to_all",
    "optimizer",
    "checkpoint",
)

#: Default size at which a trace file is rotated (renamed to ``<name>.<n>.jsonl``).
DEFAULT_ROTATE_BYTES = 64 * 1024 * 1024


class StepTraceWriter:
    """Appends one JSON line per op of one rank to ``<dir>/<job>-rank<rank>.jsonl``; whole lines only."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        job: str,
        rank: int,
        dp_rank: int,
        pp_stage: int,
        tp_rank: int,
        host: str | None = None,
        local_rank: int | None = None,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
    ) -> None:
        if not job:
            raise ValueError("job must be a non-empty string")
        for name, value in (
            ("rank", rank),
            ("dp_rank", dp_rank),
            ("pp_stage", pp_stage),
            ("tp_rank", tp_rank),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if rotate_bytes <= 0:
            raise ValueError(f"rotate_bytes must be positive, got {rotate_bytes}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"{job}-rank{rank}.jsonl"
        self.rotate_bytes = rotate_bytes
        self._identity: dict[str, Any] = {
            "job": job,
            "rank": rank,
            "dp_rank": dp_rank,
            "pp_stage": pp_stage,
            "tp_rank": tp_rank,
        }
        if host is not None:
            self._identity["host"] = host
        if local_rank is not None:
            self._identity["local_rank"] = local_rank
        self._pending: list[str] = []
        self._step: int | None = None

    def op(
        self,
        step: int,
        op: str,
        start_s: float,
        duration_s: float,
        microbatch: int | None = None,
        comm: str | None = None,
    ) -> None:
        """Record one op (start in Unix epoch seconds, duration in seconds); a new step flushes the last."""
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; one of {', '.join(OPS)}")
        if duration_s < 0:
            raise ValueError(f"duration_s must be >= 0, got {duration_s}")
        if self._step is not None and step != self._step:
            self.flush()
        self._step = step
        record: dict[str, Any] = {
            **self._identity,
            "step": int(step),
            "op": op,
            "start_s": float(start_s),
            "duration_s": float(duration_s),
        }
        if microbatch is not None:
            record["microbatch"] = int(microbatch)
        if comm is not None:
            record["comm"] = str(comm)
        self._pending.append(json.dumps(record, separators=(",", ":")) + "\n")

    @contextmanager
    def timed(
        self, step: int, op: str, microbatch: int | None = None, comm: str | None = None
    ) -> Iterator[None]:
        """Time the block with time.time() and record it as one op (synchronize the GPU inside for GPU ops)."""
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; one of {', '.join(OPS)}")
        start_s = time.time()
        try:
            yield
        finally:
            self.op(step, op, start_s, max(0.0, time.time() - start_s), microbatch=microbatch, comm=comm)

    def flush(self) -> None:
        """Append the pending lines in one write (a reader tailing the file sees whole lines), rotating first."""
        if not self._pending:
            return
        data = "".join(self._pending).encode()
        self._pending = []
        if self.path.exists() and self.path.stat().st_size + len(data) > self.rotate_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def close(self) -> None:
        """Flush what is pending."""
        self.flush()

    def __enter__(self) -> StepTraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rotate(self) -> None:
        n = 1
        while self.path.with_name(f"{self.path.stem}.{n}.jsonl").exists():
            n += 1
        self.path.rename(self.path.with_name(f"{self.path.stem}.{n}.jsonl"))
