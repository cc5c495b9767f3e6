"""Job and rank labels from the scheduler's environment (SLURM, Kubernetes, torchrun)."""

from __future__ import annotations

from collections.abc import Mapping

#: environment variable -> label, first match wins per label
ENV_LABELS: dict[str, tuple[str, ...]] = {
    "rank": ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"),
    "local_rank": ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"),
    "world_size": ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"),
    "node_rank": ("NODE_RANK", "GROUP_RANK", "SLURM_NODEID"),
    "slurm_job_id": ("SLURM_JOB_ID", "SLURM_JOBID"),
    "slurm_job_name": ("SLURM_JOB_NAME",),
    "k8s_pod": ("POD_NAME", "KUBERNETES_POD_NAME"),
    "k8s_namespace": ("POD_NAMESPACE", "KUBERNETES_NAMESPACE"),
    "k8s_job": ("JOB_NAME", "KUBEFLOW_JOB_NAME", "PYTORCHJOB_NAME"),
}


def labels_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Every label whose variable is set."""
    out = {}
    for label, names in ENV_LABELS.items():
        for name in names:
            if env.get(name):
                out[label] = env[name]
                break
    return out


def job_from_env(env: Mapping[str, str]) -> str:
    """The job id: C4_JOB, else the SLURM job id, else the Kubernetes job name, else ''."""
    for name in ("C4_JOB", "SLURM_JOB_ID", "SLURM_JOBID", "JOB_NAME", "KUBEFLOW_JOB_NAME", "PYTORCHJOB_NAME"):
        if env.get(name):
            return env[name]
    return ""
