"""Train on a cluster: one Kubeflow Trainer ``TrainJob`` running ``torchrun -m rlops_plugin.cli train``.

The use case behind the ``train_distributed`` component. It checks the trainer against the init policy's
kind here (a misspelt trainer fails before any pod starts) and uploads a local dataset to MLflow (the pods
cannot see this machine's disk). Then it submits the job, waits for it, and reads back what rank 0 logged:
the run tagged ``rlops.trainjob=<job>``, its model and, with ``register_as``, the version it registered.
Registration and its audit event happen in the pod, through :func:`rlops_plugin.lifecycle.train`. A pipeline
keeps today's in-process ``train_policy`` step for one node of one process; it decides, not this function.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlops_plugin.defaults import EVAL_EPISODES, EXPERIMENT
from rlops_plugin.deploy.manifests import DEFAULT_IMAGE
from rlops_plugin.deploy.trainjob import (
    DEFAULT_RUNTIME,
    JobResult,
    TrainJobs,
    TrainJobSpec,
    check_name,
    job_name,
    produced_model,
    training_args,
    trainjob,
)
from rlops_plugin.errors import ConfigError

DATASET_TAG = "rlops.trainjob_input"
"""Tag of the run holding a TrainJob's uploaded dataset (not ``rlops.trainjob``: that names the training run)."""
REMOTE_SCHEMES = ("runs:/", "mlflow-artifacts:/", "models:/", "s3://", "gs://", "wasbs://", "abfss://", "hdfs://")
"""Dataset URIs a pod can download from MLflow's artifact store as they are."""


def init_kind(init_uri: str) -> Any:
    """The registered ``PolicyKind`` of the rlops model at ``init_uri``, read from its MLmodel alone."""
    from rlops_plugin.flavor.model import remote_policy_kind
    from rlops_plugin.kinds.base import get_kind

    try:
        return get_kind(remote_policy_kind(init_uri))
    except ConfigError as exc:
        raise ConfigError(f"init {exc}") from exc


def upload_dataset(path: str | Path, job: str, experiment: str) -> str:
    """Log the dataset directory ``path`` to MLflow for TrainJob ``job``; return its ``runs:/`` URI."""
    import mlflow

    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"dataset {path}: not a directory (a dataset folder, or a runs:/ or mlflow-artifacts:/ URI)")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    experiment_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=f"dataset for {job}", tags={DATASET_TAG: job})
    try:
        client.log_artifacts(run.info.run_id, str(folder), "dataset")
    except Exception:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id)
    return f"runs:/{run.info.run_id}/dataset"


def train_distributed(trainer: str, init: str, dataset_uri: str | Path | None = None,
                      config: Mapping[str, Any] | None = None, *, register_as: str | None = None,
                      num_nodes: int = 1, nproc_per_node: int = 1,
                      resources: Mapping[str, str | int | float] | None = None, namespace: str = "default",
                      runtime: str = DEFAULT_RUNTIME, image: str = DEFAULT_IMAGE, timeout_s: float = 3600.0,
                      poll_s: float = 10.0, eval_episodes: int = EVAL_EPISODES, experiment: str = EXPERIMENT,
                      tracking_uri: str | None = None, env: Mapping[str, str] | None = None,
                      name: str | None = None, active_deadline_s: int | None = None,
                      simulator_ignores_dataset: bool = False, kubeconfig: str | None = None,
                      client: Any = None) -> JobResult:
    """Train ``trainer`` from ``init`` in a TrainJob of ``num_nodes`` x ``nproc_per_node``; return what it logged.

    ``dataset_uri``: a dataset folder (uploaded to MLflow first) or an MLflow artifact URI. ``tracking_uri``
    (default ``MLFLOW_TRACKING_URI``) must be reachable from the pods. A ``Failed`` job raises ``TrainJobError``
    with its conditions and a ``kubectl logs`` hint; one still running after ``timeout_s`` is deleted and raises
    ``TrainJobTimeout``.
    """
    from rlops_plugin.lifecycle.train import resolve_trainer

    tracking = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not tracking or tracking.startswith(("sqlite:", "file:")) or "://" not in tracking:
        raise ConfigError(f"tracking_uri {tracking!r}: a TrainJob needs an MLflow server the pods can reach "
                          "(http(s)://...), set it or MLFLOW_TRACKING_URI")
    if not isinstance(init, str) or not init.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        raise ConfigError(f"init {init!r}: a TrainJob starts from a model URI the pods can load (models:/NAME@alias)")
    spec = TrainJobSpec(num_nodes=num_nodes, nproc_per_node=nproc_per_node,
                        resources=dict(resources) if resources is not None else None, namespace=namespace,
                        runtime=runtime, image=image, env=dict(env or {}), active_deadline_s=active_deadline_s)
    spec.validate()
    trainer, trainer_cls = resolve_trainer(trainer, init_kind(init))
    model = re.match(r"models:/([^/@]+)", init)
    name = check_name(name) if name else job_name(register_as or (model.group(1) if model else trainer))
    if trainer_cls.data_kind == "simulator" and dataset_uri is not None:
        if not simulator_ignores_dataset:
            raise ConfigError(f"trainer {trainer!r} learns in the simulator and reads no dataset; drop it")
        dataset_uri = None
    if trainer_cls.data_kind != "simulator" and dataset_uri is None:
        raise ConfigError(f"trainer {trainer!r} learns from a {trainer_cls.data_kind} dataset: pass dataset_uri")
    if dataset_uri is not None and not str(dataset_uri).startswith(REMOTE_SCHEMES):
        dataset_uri = upload_dataset(dataset_uri, name, experiment)
    body = trainjob(name, training_args(trainer, init, str(dataset_uri) if dataset_uri else None, config,
                                        register_as=register_as, eval_episodes=eval_episodes,
                                        experiment=experiment),
                    spec, tracking_uri=tracking, labels={"rlops.io/trainer": trainer})
    jobs = TrainJobs(namespace, kubeconfig=kubeconfig, client=client)
    jobs.create(body)
    jobs.wait(name, timeout_s, poll_s=poll_s)
    result = produced_model(name, experiment, register_as, namespace=namespace)
    result.dataset_uri = str(dataset_uri) if dataset_uri else None
    return result
