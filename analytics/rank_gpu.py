"""Which GPU a rank runs on: the rank_identity view's answer, else rank % GPUs per node, said so.

A communicator's rank number has no fixed relation to a GPU (sub-communicators, non-contiguous
placement, CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER renumber devices), so detectors name a rank's
GPU from what NCCL and NVML reported (the ``rank_identity`` view) and guess only when nothing did.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

#: GPUs per node assumed when NVML reported none for the node (an 8-GPU HGX/DGX board).
DEFAULT_GPUS_PER_NODE = 8


@dataclass(frozen=True)
class RankGpu:
    """Where one rank runs: its node, its GPU and how that GPU is known."""

    node: str
    gpu: int
    gpu_from: str  # a rank_identity source (bus_id, nvml_dev, ...) or the rank % n guess

    @property
    def component(self) -> str:
        """The GPU as faults name it: "host3/gpu5"."""
        return f"{self.node}/gpu{self.gpu}"

    @property
    def evidence(self) -> dict[str, str]:
        """What a finding says about how its GPU was found."""
        return {"gpu_from": self.gpu_from}


class RankPlaces:
    """(communicator, rank) -> node and GPU, from a rank_identity frame; guesses rank % GPUs per node without one."""

    def __init__(self, identity: pl.DataFrame | None = None, gpus: pl.DataFrame | None = None) -> None:
        self._known: dict[tuple[str, int], tuple[str, int | None, str | None]] = {}
        self._world: dict[int, tuple[str, int | None, str | None]] = {}
        if identity is not None and not identity.is_empty():
            rows = identity.sort("n_ranks", nulls_last=False)  # the largest communicator last: the world
            for comm, rank, node, gpu, src in rows.select(
                ["comm_id", "rank", "node", "gpu_index", "gpu_from"]
            ).iter_rows():
                self._known[(comm, rank)] = (node, gpu, src)
                self._world[rank] = (node, gpu, src)
        self._gpus_per_node: dict[str, int] = {}
        if gpus is not None and not gpus.is_empty():
            for node, n in gpus.group_by("node").agg(pl.col("gpu_index").n_unique()).iter_rows():
                self._gpus_per_node[node] = int(n)

    def _guess(self, node: str, rank: int, why: str) -> RankGpu:
        per = self._gpus_per_node.get(node, DEFAULT_GPUS_PER_NODE)
        return RankGpu(node, rank % per, f"rank % {per} ({why})")

    def _place(self, known, host: str | None, rank: int, hint: tuple[int, str] | None) -> RankGpu | None:
        node, gpu, src = known or (None, None, None)
        node = node or host
        if gpu is not None:
            return RankGpu(node, int(gpu), src or "rank_identity")
        if node and hint is not None:
            return RankGpu(node, int(hint[0]), hint[1])
        if node:
            return self._guess(
                node, rank, "its GPU is not known" if known else "no identity of this rank known"
            )
        return None

    def of(
        self, comm: str, rank: int, host: str | None, hint: tuple[int, str] | None = None
    ) -> RankGpu | None:
        """The GPU of ``rank`` in communicator ``comm``, whose host a detector saw as ``host``.

        ``hint`` is a detector's own (GPU, source), used when the identity does not know the GPU; None
        when neither the identity nor the detector knows the rank's host.
        """
        return self._place(self._known.get((comm, rank)), host, rank, hint)

    def of_global(self, rank: int, host: str | None) -> RankGpu | None:
        """The GPU of a global rank (the largest communicator's); None when neither it nor its host is known."""
        return self._place(self._world.get(rank), host, rank, None)
