"""One policy update end to end: warm start, checks, training, evaluation, lineage, registry.

``train("cql", init="models:/cartpole@champion", dataset="datasets/v1")`` loads the deployed
bundle, refuses data built under another env or reward (unless told otherwise), trains, evaluates
old and new policy on the same episode seeds, and logs one MLflow run (params ``trainer.*``,
metrics ``train/...`` with steps and ``eval/...``, the dataset as a run input) whose model is
logged with ``rlops.parent_version``, the dataset digest and the trainer in its lineage.
Registration and its audit event are the lifecycle's (:func:`rlops_plugin.lifecycle.train`).

Under torchrun every rank trains (:mod:`rlops_plugin.training.distributed`); after a barrier that every rank must
reach, rank 0 alone evaluates and logs the run (with ``distributed.*`` params), and the other ranks return an
outcome with their ``rank`` and nothing recorded.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlops_plugin import plugins
from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.spaces import space_to_json
from rlops_plugin.defaults import EVAL_EPISODES, EXPERIMENT, TRAIN_EVAL_SEED
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import Dataset, DatasetError
from rlops_plugin.flavor.lineage import TAG_CALIBRATION, calibration_label
from rlops_plugin.flavor.model import LoadedModel, as_loaded
from rlops_plugin.kinds.base import kind_of
from rlops_plugin.simulation.stats import paired_difference
from rlops_plugin.training import distributed
from rlops_plugin.training.base import Progress, config_to_dict, make_config

DEFAULT_EXPERIMENT = EXPERIMENT
TRAINJOB_ENV = "RLOPS_TRAINJOB_NAME"
"""Environment variable naming the Kubeflow TrainJob a run belongs to (recorded as tag ``rlops.trainjob``)."""
TAG_TRAINJOB = "rlops.trainjob"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


@dataclass
class TrainOutcome:
    """The trained bundle and where it was recorded."""

    bundle: PolicyBundle
    metrics: dict[str, float]
    run_id: str | None = None
    model_uri: str | None = None
    registered_name: str | None = None
    version: str | None = None
    dataset_digest: str | None = None
    rank: int = 0
    """The process's rank under torchrun: only rank 0's outcome is evaluated, recorded and registered."""


def check_compatible(bundle: PolicyBundle, data: Dataset, allow_mismatch: bool) -> list[str]:
    """Refuse data whose spaces differ; refuse other env/reward hashes unless ``allow_mismatch``."""
    manifest = data.manifest
    check_policy_kind(bundle, data)
    if manifest.get("action_space") and manifest["action_space"] != space_to_json(bundle.policy.action_space):
        raise DatasetError(f"action space mismatch: dataset {manifest['action_space']}, policy "
                           f"{space_to_json(bundle.policy.action_space)}")
    obs = data.columns.get("obs")
    if obs is not None and obs.shape[1] != bundle.policy.obs_dim:
        raise DatasetError(f"observation size mismatch: dataset {obs.shape[1]}, policy {bundle.policy.obs_dim}")
    hashes = bundle.hashes()
    problems = [f"{part} hash: dataset built under {manifest.get(key, 'unknown')[:12]}, init policy has "
                f"{hashes[part][:12]}" for part, key in (("env", "env_sha"), ("reward", "reward_sha"))
                if manifest.get(key) != hashes[part]]
    if problems and not allow_mismatch:
        raise DatasetError("dataset and init policy disagree on " + "; ".join(problems)
                           + " (rebuild the dataset with this bundle, or pass allow_mismatch=True)")
    return problems


def check_policy_kind(bundle: PolicyBundle, data: Dataset) -> None:
    """Refuse a dataset built from another kind of policy's log (agent interactions vs vector decisions)."""
    built, wanted = data.manifest.get("policy_kind", "vector"), getattr(bundle.policy, "kind", "vector")
    if built != wanted:
        raise DatasetError(f"the dataset was built from {built} policies' logs; the init policy is a {wanted} policy")


def train(trainer: str, init: str | LoadedModel | PolicyBundle, dataset: str | Path | Dataset | None = None,
          config: dict[str, Any] | Any | None = None, allow_mismatch: bool = False,
          eval_episodes: int = EVAL_EPISODES, eval_seed: int = TRAIN_EVAL_SEED, log_to_mlflow: bool = True,
          experiment: str | None = DEFAULT_EXPERIMENT, run_name: str | None = None,
          progress: Progress | None = None, calibration: dict[str, Any] | None = None,
          env_spec: Any = None, tags: dict[str, str] | None = None) -> TrainOutcome:
    """Train ``trainer`` from ``init`` and record the update (see the module docstring).

    ``dataset`` is a local directory or an MLflow artifact URI (``runs:/``, ``models:/``, ``mlflow-artifacts:/``,
    ``s3://``, ...; downloaded first: a pod on a cluster cannot see a local path). ``tags`` are added to the run's
    tags (e.g. ``{"mlflow.parentRunId": ...}`` makes it a child run of a tuning study).

    ``calibration`` (a :class:`~rlops_plugin.simulation.calibration.Calibration`'s dict) says which
    fitted physics the simulator trained on; it goes into the lineage, the run and the audit event.
    ``env_spec`` replaces the environment part of the candidate (an agent's task suite updated after its
    world changed): the dataset is checked against the init's, the before/after evaluation and the
    candidate bundle use the new one, and the lineage keeps the init's bundle hash.
    """
    entry = plugins.trainers().get(trainer)
    trainer_cls = entry.value
    cfg = config if isinstance(config, trainer_cls.Config) else make_config(trainer_cls.Config, config)
    loaded = as_loaded(init)
    base = loaded.bundle
    data, source, mismatch, dropped = _load_data(trainer_cls.data_kind, dataset, base, allow_mismatch)
    if env_spec is not None:
        base = PolicyBundle(base.policy, env_spec, base.reward_spec, dict(base.lineage))
    seeds = list(range(eval_seed, eval_seed + eval_episodes))
    kind = kind_of(base)
    dist = distributed.init()
    main = dist.rank == 0
    before = kind.rollout(base.policy, base.env_spec, seeds, reward_spec=base.reward_spec) \
        if eval_episodes and main else None
    result = trainer_cls().train(base, data, cfg, progress if main else None)
    distributed.barrier()  # every rank finished training: only then is anything recorded
    child = base.with_policy(result.policy, **_lineage(loaded, trainer, cfg, data, calibration))
    metrics = dict(result.metrics)
    if before is not None:
        after = kind.rollout(child.policy, child.env_spec, seeds, reward_spec=child.reward_spec)
        metrics.update(_eval_metrics(before, after))
    for reason, count in dropped.items():
        metrics[f"data/excluded_{reason}"] = float(count)
    outcome = TrainOutcome(child, metrics, dataset_digest=child.lineage.get("dataset_digest"), rank=dist.rank)
    if log_to_mlflow and main:
        _record(outcome, trainer, cfg, loaded, data, source, result.history, mismatch, experiment, run_name,
                extra_tags=tags, dist=dist)
    return outcome


def is_artifact_uri(dataset: str | Path) -> bool:
    """``dataset`` names an artifact by URI (``scheme:/...``) rather than a local path."""
    return isinstance(dataset, str) and bool(_URI.match(dataset)) and not Path(dataset).exists()


def fetch_dataset(uri: str) -> Path:
    """Download a dataset directory named by an MLflow artifact URI into a fresh temporary directory."""
    import tempfile

    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri,
                                                    dst_path=tempfile.mkdtemp(prefix="rlops-dataset-"))
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds (MlflowException, OSError, botocore's)
        raise DatasetError(f"cannot download the dataset {uri}: {type(exc).__name__}: {exc}") from exc
    return Path(local)


def _lineage(loaded: LoadedModel, trainer: str, cfg: Any, data: Dataset | None,
             calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Lineage of a new policy: its registered ancestor, the data it saw since, the trainers applied.

    A chained update (offline RL on logs, then simulator fine-tuning of that unregistered result)
    keeps the registered parent version and dataset digest of the first stage, so the version
    that is finally registered still names the champion it came from and the logs it learned from.
    """
    inherited = dict(loaded.bundle.lineage) if loaded.version is None and loaded.bundle.lineage.get(
        "parent_version") else {}
    earlier = list(inherited.get("trainer_chain") or ([inherited["trainer"]] if inherited.get("trainer") else []))
    lineage = {"parent_version": loaded.version or inherited.get("parent_version"),
               "parent_bundle_sha": loaded.bundle.bundle_sha,
               "dataset_digest": data.digest if data is not None else inherited.get("dataset_digest"),
               "trainer": trainer, "trainer_chain": [*earlier, trainer], "trainer_config": config_to_dict(cfg)}
    if data is not None and data.manifest.get("judges"):
        lineage["judges"] = list(data.manifest["judges"])
    calibration = calibration or inherited.get("calibration")
    if calibration:
        lineage["calibration"] = dict(calibration)
    return lineage


def _load_data(kind: str, dataset: str | Path | Dataset | None, bundle: PolicyBundle,
               allow_mismatch: bool) -> tuple[Dataset | None, str | None, list[str], dict[str, int]]:
    if kind == "simulator":
        if dataset is not None:
            raise ConfigError("this trainer learns in the simulator; do not pass a dataset")
        return None, None, [], {}
    if dataset is None:
        raise ConfigError(f"this trainer needs a {kind} dataset (rlops dataset build ...)")
    source = None
    if not isinstance(dataset, Dataset) and is_artifact_uri(dataset):
        source = str(dataset)
        dataset = Dataset.load(fetch_dataset(source))
    elif not isinstance(dataset, Dataset):
        source = str(Path(dataset).resolve())
        dataset = Dataset.load(dataset)
    if dataset.kind != kind:
        raise DatasetError(f"this trainer needs a {kind} dataset, got {dataset.kind}")
    check_policy_kind(bundle, dataset)
    dataset, dropped = kind_of(bundle).validate_dataset(dataset, bundle)
    mismatch = check_compatible(bundle, dataset, allow_mismatch)
    if mismatch:
        warnings.warn("training across a mismatch: " + "; ".join(mismatch), UserWarning, stacklevel=3)
    return dataset, source, mismatch, {k: v for k, v in dropped.items() if v}


def _eval_metrics(before: Any, after: Any) -> dict[str, float]:
    b, a = before.summary(), after.summary()
    diff = paired_difference(after.returns, before.returns)
    extra = {f"eval/{k}": float(v) for k, v in a.items() if k == "pass_rate" or k.startswith("grader/")}
    if "pass_rate" in b:
        extra["eval/init_pass_rate"] = float(b["pass_rate"])
    return {**extra, "eval/return_mean": a["return_mean"], "eval/return_ci_low": a["return_ci_low"],
            "eval/return_ci_high": a["return_ci_high"], "eval/length_mean": a["length_mean"],
            "eval/init_return_mean": b["return_mean"], "eval/return_delta": diff.estimate,
            "eval/return_delta_ci_low": diff.low, "eval/return_delta_ci_high": diff.high}


def _record(outcome: TrainOutcome, trainer: str, cfg: Any, loaded: LoadedModel, data: Dataset | None,
            source: str | None, history: list[tuple[int, dict[str, float]]], mismatch: list[str],
            experiment: str | None, run_name: str | None, extra_tags: dict[str, str] | None = None,
            dist: distributed.DistEnv | None = None) -> None:
    import mlflow
    from mlflow.entities import Metric

    from rlops_plugin.flavor.model import log_model

    if experiment:
        mlflow.set_experiment(experiment)
    parent = f"{loaded.name}/{loaded.version}" if loaded.version else loaded.model_uri
    tags = {"rlops.trainer": trainer, "rlops.parent": parent,
            "rlops.parent_version": outcome.bundle.lineage.get("parent_version") or "", "rlops.event": "policy_update"}
    if mismatch:
        tags["rlops.mismatch_allowed"] = "; ".join(mismatch)
    calibration = outcome.bundle.lineage.get("calibration")
    if calibration:
        tags[TAG_CALIBRATION] = calibration_label(calibration)
    if os.environ.get(TRAINJOB_ENV):
        tags[TAG_TRAINJOB] = os.environ[TRAINJOB_ENV]
    tags.update(extra_tags or {})  # the caller's tags (a tuning trial's parent run, ...) win
    with mlflow.start_run(run_name=run_name or f"{trainer} from {parent}", tags=tags) as run:
        params = {f"trainer.{k}": json.dumps(v) if isinstance(v, (list, dict)) else v
                  for k, v in config_to_dict(cfg).items()}
        params["init_model_uri"] = loaded.model_uri
        params.update((dist or distributed.env()).params())
        if data is not None:
            params["dataset_digest"] = data.digest
            params["dataset_rows"] = len(data)
        mlflow.log_params(params)
        if calibration:
            mlflow.log_dict(calibration, "calibration.json")
        if data is not None:
            if source is None:  # an in-memory dataset: keep a copy with the run so the input resolves
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    mlflow.log_artifacts(str(data.save(Path(tmp) / "dataset")), "dataset")
                source = mlflow.get_artifact_uri("dataset")
            else:
                mlflow.log_dict(data.manifest, "dataset/manifest.json")
            mlflow.log_input(data.mlflow_dataset(source), context="training")
        client = mlflow.MlflowClient()
        timestamp = int(1000 * time.time())
        batch = [Metric(key, float(value), timestamp, step) for step, values in history
                 for key, value in values.items() if np.isfinite(value)]
        for start in range(0, len(batch), 900):
            client.log_batch(run.info.run_id, metrics=batch[start:start + 900])
        mlflow.log_metrics({k: v for k, v in outcome.metrics.items() if np.isfinite(v)})
        info = log_model(outcome.bundle, name="policy")
        outcome.run_id = run.info.run_id
        outcome.model_uri = info.model_uri
