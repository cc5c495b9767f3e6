"""The NVML field catalogue (gpu_fields.toml) as typed data: per-GPU fields, NVLink plans per architecture."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

FIELDS_FILE = Path(__file__).parent / "gpu_fields.toml"


@dataclass(frozen=True)
class LinkPlan:
    """The NVLink fields one GPU architecture reports: scoped ids (scopeId = link) and per-link ids."""

    name: str
    scoped: dict[str, tuple[int, int]]  # column -> (field id, scale)
    per_link: dict[str, list[int]]  # column -> field id of link 0, 1, ... (scopeId 0)

    def request(self, link: int) -> list[tuple[str, int, int, int]]:
        """(column, field id, scope id, scale) to read for one link; a column without an id for it is left out."""
        out = [(col, fid, link, scale) for col, (fid, scale) in self.scoped.items()]
        out += [(col, ids[link], 0, 1) for col, ids in self.per_link.items() if link < len(ids)]
        return out

    @property
    def columns(self) -> list[str]:
        """Every column this plan fills."""
        return [*self.scoped, *self.per_link]


@dataclass(frozen=True)
class FieldCatalogue:
    """Field ids per column for GPUs, NVLink plans per architecture, plus NVML codes."""

    gpu: dict[str, int]  # column -> field id
    gpu_kinds: dict[str, str]
    plans: dict[str, LinkPlan]  # plan name -> plan
    arch_plan: dict[int, str]  # NVML_DEVICE_ARCH_* -> plan name
    codes: dict[str, int]

    def link_plan(self, arch: int | None) -> LinkPlan:
        """The NVLink plan of an architecture code (the Ampere plan for any other, or when unknown)."""
        return self.plans[self.arch_plan.get(arch if arch is not None else -1, "ampere")]

    @functools.cached_property
    def code_names(self) -> dict[int, str]:
        """NVML return code -> reason name ('not_supported', 'unknown', ...)."""
        return {
            v: k[len("NVML_ERROR_") :].lower() for k, v in self.codes.items() if k.startswith("NVML_ERROR_")
        }


def _plan(name: str, raw: dict) -> LinkPlan:
    return LinkPlan(
        name,
        {k: (v["id"], int(v.get("scale", 1))) for k, v in raw.get("scoped", {}).items()},
        {k: list(v["ids"]) for k, v in raw.get("per_link", {}).items()},
    )


@functools.cache
def load_fields() -> FieldCatalogue:
    """Parse gpu_fields.toml once."""
    raw = tomllib.loads(FIELDS_FILE.read_text())
    nv = raw["nvlink"]
    return FieldCatalogue(
        gpu={k: v["id"] for k, v in raw["gpu"].items()},
        gpu_kinds={k: v["kind"] for k, v in raw["gpu"].items()},
        plans={name: _plan(name, p) for name, p in nv["plans"].items()},
        arch_plan={int(k): v for k, v in nv["arch"].items()},
        codes=dict(raw["codes"]),
    )
