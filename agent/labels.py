"""Node, job and rank labels for every row: from config, then the scheduler's environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from c4.agent.nccl_labels import job_from_env, labels_from_env
from c4.agent.registry import SamplerContext
from c4.client_config import AgentConfig


def context_from(cfg: AgentConfig, env: Mapping[str, str] | None = None) -> SamplerContext:
    """The sampler context: config wins over SLURM/Kubernetes/torchrun environment variables."""
    env = os.environ if env is None else env
    labels, job = labels_from_env(env), job_from_env(env)
    labels = {**labels, **cfg.labels, "agent_id": cfg.effective_agent_id}
    return SamplerContext(node=cfg.node, job=cfg.job or job, labels=labels)
