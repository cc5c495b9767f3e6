"""The NVML field catalogue (gpu_fields.toml) as typed data, shared by the facade and the fake."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

FIELDS_FILE = Path(__file__).parent / "gpu_fields.toml"


@dataclass(frozen=True)
class FieldCatalogue:
    """Field ids per column for GPUs and NVLinks, plus NVML codes."""

    gpu: dict[str, int]  # column -> field id
    gpu_kinds: dict[str, str]
    nvlink_scoped: dict[str, int]  # column -> field id, scopeId = link
    nvlink_per_link: dict[str, list[int]]  # column -> field id per link (links 0..11)
    nvlink_scoped_fallback: dict[str, int]  # column -> scoped id for links past the per-link ids
    codes: dict[str, int]

    def nvlink_request(self, link: int) -> list[tuple[str, int, int]]:
        """(column, field id, scope id) to read for one link."""
        out = [(col, fid, link) for col, fid in self.nvlink_scoped.items()]
        for col, ids in self.nvlink_per_link.items():
            if link < len(ids):
                out.append((col, ids[link], 0))
            elif col in self.nvlink_scoped_fallback:
                out.append((col, self.nvlink_scoped_fallback[col], link))
        return out

    @functools.cached_property
    def column_of(self) -> dict[int, str]:
        """field id -> column (per-GPU and per-link ids)."""
        out = {fid: col for col, fid in self.gpu.items()}
        out.update({fid: col for col, fid in self.nvlink_scoped.items()})
        out.update({fid: col for col, fid in self.nvlink_scoped_fallback.items()})
        for col, ids in self.nvlink_per_link.items():
            out.update({fid: col for fid in ids})
        return out

    @functools.cached_property
    def link_of_legacy_id(self) -> dict[int, int]:
        """Per-link field id -> the link it belongs to."""
        return {fid: link for ids in self.nvlink_per_link.values() for link, fid in enumerate(ids)}


@functools.cache
def load_fields() -> FieldCatalogue:
    """Parse gpu_fields.toml once."""
    raw = tomllib.loads(FIELDS_FILE.read_text())
    return FieldCatalogue(
        gpu={k: v["id"] for k, v in raw["gpu"].items()},
        gpu_kinds={k: v["kind"] for k, v in raw["gpu"].items()},
        nvlink_scoped={k: v["id"] for k, v in raw["nvlink_scoped"].items()},
        nvlink_per_link={k: list(v["ids"]) for k, v in raw["nvlink_per_link"].items()},
        nvlink_scoped_fallback={
            k: v["scoped_id"] for k, v in raw["nvlink_per_link"].items() if "scoped_id" in v
        },
        codes=dict(raw["codes"]),
    )
