"""Sampler registry as data: config name -> class path, built lazily from options."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Annotated, Any

from c4.agent.sampler import Sampler, StartupPolicy
from c4.options import Meta, Options, OptionsError

#: sampler name -> "module:Class". The class has an ``Options`` section (c4.options: unknown keys
#: refused) and ``from_options(options, ctx) -> Sampler``.
SAMPLERS: dict[str, str] = {
    "host": "c4.agent.host:HostSampler",
    "heartbeat": "c4.agent.heartbeat:HeartbeatSampler",
    "gpu": "c4.agent.gpu:GpuSampler",
    "xid_kmsg": "c4.agent.xid_kmsg:KmsgXidSampler",
    "nic": "c4.agent.nic:NicSampler",
    "nccl_inspector": "c4.agent.nccl_inspector:InspectorSampler",
    "nccl_ras": "c4.agent.nccl_ras:RasSampler",
    "nccl_debug_log": "c4.agent.nccl_debug_log:DebugLogSampler",
    "nccl_conn": "c4.agent.nccl_conn:ConnRecordSampler",
    "step_trace": "c4.agent.step_trace:StepTraceSampler",
    "lldp": "c4.agent.lldp:LldpSampler",
    "ibnetdiscover": "c4.agent.ib_fabric:IbNetDiscoverSampler",
}


@dataclass(frozen=True)
class SamplerContext:
    """What every sampler may need besides its own options."""

    node: str
    job: str
    labels: dict[str, str]


class SamplerSettings(Options):
    """Options every sampler accepts, besides its own."""

    enabled: bool = True
    interval_s: Annotated[float, Meta(gt=0)] | None = None
    startup: StartupPolicy = StartupPolicy.IGNORE

    @classmethod
    def split(cls, name: str, raw: dict[str, Any]) -> tuple[SamplerSettings, dict[str, Any]]:
        """A sampler's section -> (the common keys checked, the sampler's own keys)."""
        common = {k: v for k, v in raw.items() if k in cls.field_names()}
        own = {k: v for k, v in raw.items() if k not in cls.field_names()}
        try:
            return cls.model_validate(common, f"agent.samplers.{name}"), own
        except OptionsError as exc:
            raise SamplerConfigError.of(exc) from None


class SamplerConfigError(ValueError):
    """A sampler section of the config is wrong; the message names the sampler and key."""

    @classmethod
    def of(cls, exc: OptionsError) -> SamplerConfigError:
        """``[agent.samplers.NAME] key: problem``."""
        return cls(f"[{exc.section}] {exc.key}: {exc.detail}" if exc.key else str(exc))


def build_sampler(name: str, options: dict[str, Any], ctx: SamplerContext) -> Sampler:
    """Instantiate sampler ``name`` from its own options (common keys already removed)."""
    if name not in SAMPLERS:
        raise SamplerConfigError(f"unknown sampler {name!r}; known: {', '.join(sorted(SAMPLERS))}")
    module_name, _, cls_name = SAMPLERS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    try:
        opts = cls.Options.model_validate(options, f"agent.samplers.{name}")
    except OptionsError as exc:
        raise SamplerConfigError.of(exc) from None
    return cls.from_options(opts, ctx)
