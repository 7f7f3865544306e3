"""The Kubeflow components' adapter over the lifecycle: one plain, testable function per component.

Each takes what a KFP component can pass (strings, numbers, JSON text, artifact paths), points
MLflow at ``tracking_uri`` (or ``MLFLOW_TRACKING_URI``), calls one :mod:`rlops_plugin.lifecycle`
step and returns a dict of outputs. Components in ``components/<verb_noun>/component.py`` only
import this module and call one function; the steps themselves live in the lifecycle.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from rlops_plugin.defaults import (
    CHALLENGER,
    CHAMPION,
    EVAL_EPISODES,
    EXPERIMENT,
    JOIN_GRACE_S,
    JOIN_WINDOW_S,
    MONITOR_REFERENCE,
    MONITOR_WINDOW,
)
from rlops_plugin.errors import ConfigError

# the KFP executor logs at INFO; one line per HTTP request of the traffic simulator drowns the step's own lines
logging.getLogger("httpx").setLevel(logging.WARNING)


def _use_tracking(tracking_uri: str) -> None:
    if tracking_uri:
        import mlflow

        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _json(text: str, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: a JSON object is required")
    return value


def build_dataset(store: str, bundle_uri: str, out_dir: str, served_model: str = "policy",
                  kind: str = "transitions", window_s: float = JOIN_WINDOW_S, grace_s: float = JOIN_GRACE_S,
                  tracking_uri: str = "", judge: str = "", judge_min_agreement: float = 0.0) -> dict[str, Any]:
    """Extract transitions or preference pairs from the decision (or interaction) log into ``out_dir``.

    ``judge`` ('' for none) is a registered judge that labels unreviewed agent answers once it agrees
    with the log's human pairs at least ``judge_min_agreement`` of the time (0: the extractor's default).
    """
    from rlops_plugin.lifecycle import build_dataset as build

    if judge_min_agreement < 0 or judge_min_agreement > 1:
        raise ConfigError(f"judge_min_agreement: a share in [0, 1] (0: the default) is required, "
                          f"got {judge_min_agreement}")
    _use_tracking(tracking_uri)
    data = build(store, bundle_uri, kind=kind, served_model=served_model, window_s=window_s, grace_s=grace_s,
                 out_dir=out_dir, judge=judge or None, judge_min_agreement=judge_min_agreement or None)
    return {"rows": len(data), "digest": data.digest, "excluded": data.manifest["excluded"],
            "judges": list(data.manifest.get("judges") or [])}


def calibrate_env(dataset_dir: str, bundle_uri: str, recent: int = 0, params_json: str = "",
                  result_path: str = "", tracking_uri: str = "") -> dict[str, Any]:
    """Fit the simulator's declared physics to the newest ``recent`` logged transitions (0: skip).

    Returns ``calibration_json`` ('' when skipped) for :func:`train_policy`, which centres the
    fine-tuning's domain randomization on the fit and records it in the candidate's lineage.
    """
    from rlops_plugin.lifecycle import calibrate

    if recent < 0:
        raise ConfigError(f"recent: a number of transitions >= 0 is required, got {recent}")
    if recent == 0:
        return {"calibration_json": "", "summary": "not calibrated (recent=0)"}
    _use_tracking(tracking_uri)
    fitted = calibrate(dataset_dir, bundle_uri, recent=recent, params=_json(params_json, "params_json") or None)
    text = json.dumps(fitted.to_dict())
    if result_path:
        Path(result_path).parent.mkdir(parents=True, exist_ok=True)
        Path(result_path).write_text(text)
    return {"calibration_json": text, "summary": fitted.summary()}


def train_policy(trainer: str, init_uri: str, dataset_dir: str = "", config_json: str = "",
                 finetune_steps: int = 0, eval_episodes: int = EVAL_EPISODES, model_dir: str = "",
                 experiment: str = EXPERIMENT, tracking_uri: str = "",
                 finetune_config_json: str = "", calibration_json: str = "", lora: bool = False,
                 env_json: str = "") -> dict[str, Any]:
    """Train from the deployed checkpoint (then optionally fine-tune in the simulator); log to MLflow.

    ``trainer`` may be an alias of the champion's kind (``dpo``, ``grpo`` on an agent: the lifecycle
    resolves it). Simulator trainers ignore ``dataset_dir`` (a pipeline always wires the dataset step
    in). ``lora`` sets the trainer config's ``lora`` field (agent trainers: train a LoRA adapter).
    ``env_json`` (inline JSON or a file) replaces the candidate's environment part (an agent's updated
    task suite).
    """
    from rlops_plugin import flavor
    from rlops_plugin.lifecycle import train
    from rlops_plugin.simulation.calibration import Calibration

    _use_tracking(tracking_uri)
    calibration = Calibration.from_dict(_json(calibration_json, "calibration_json")) if calibration_json else None
    config = _json(config_json, "config_json")
    if lora:
        config["lora"] = True
    outcome = train(trainer, init_uri, dataset_dir or None, config,
                    finetune_steps=finetune_steps, finetune_config=_json(finetune_config_json, "finetune_config_json"),
                    calibration=calibration, eval_episodes=eval_episodes, experiment=experiment,
                    simulator_ignores_dataset=True,
                    env_spec=(_json(env_json, "env_json") if env_json.lstrip().startswith("{") else env_json) or None)
    if model_dir:
        flavor.save_model(outcome.bundle, model_dir)
    return {"model_uri": outcome.model_uri, "run_id": outcome.run_id, "bundle_sha": outcome.bundle.bundle_sha,
            "dataset_digest": outcome.dataset_digest or "", "metrics": outcome.metrics}


def evaluate_policy(model_uri: str, episodes: int = EVAL_EPISODES, scenarios_json: str = "", html_path: str = "",
                    tracking_uri: str = "") -> dict[str, Any]:
    """Roll the policy out (and through scenario suites); write an HTML summary."""
    from rlops_plugin.lifecycle import evaluate

    _use_tracking(tracking_uri)
    evaluation = evaluate(model_uri, episodes=episodes, scenarios=json.loads(scenarios_json or "[]"),
                          html_path=html_path or None)
    return {"return_mean": evaluation.rollouts["return_mean"], "summary": evaluation.rollouts,
            "scenarios": evaluation.scenarios}


def gate_policy(candidate_uri: str, champion_uri: str, policy_json: str = "", result_path: str = "",
                tracking_uri: str = "", scenarios_json: str = "", ope_store: str = "",
                ope_model: str = "") -> dict[str, Any]:
    """The promotion gate; writes the full result JSON to ``result_path``.

    ``scenarios_json`` (a JSON list of suites, e.g. a red-team suite) adds to the policy's scenarios;
    ``ope_store`` adds the ``ope`` check on that store's logs of ``ope_model``.
    """
    from rlops_plugin.lifecycle import gate

    scenarios = json.loads(scenarios_json or "[]")
    if not isinstance(scenarios, list) or not all(isinstance(s, str) for s in scenarios):
        raise ConfigError("scenarios_json: a JSON list of scenario suite names or files is required")
    _use_tracking(tracking_uri)
    result = gate(candidate_uri, champion_uri or None, _json(policy_json, "policy_json"),
                  result_path=result_path or None, scenarios=scenarios, ope_store=ope_store or None,
                  ope_model=ope_model or None)
    return {"passed": result.passed, "reasons": result.reasons, "result": result.to_dict()}


def register_policy(model_uri: str, name: str, alias: str = CHALLENGER, gate_json: str = "",
                    tracking_uri: str = "") -> dict[str, Any]:
    """Register a trained model with lineage tags, set ``alias`` and record the policy update."""
    from rlops_plugin.lifecycle import register

    _use_tracking(tracking_uri)
    return {"version": register(model_uri, name, alias=alias, gate=_json(gate_json, "gate_json") or None)}


def deploy_policy(name: str, deployment: str, store: str, target: str = "rlops-local", promotion_json: str = "",
                  served_model: str = "policy", simulate_traffic: bool = False, traffic_envs: int = 16,
                  tracking_uri: str = "", traffic_env_json: str = "") -> dict[str, Any]:
    """Shadow -> canary -> promote or roll back ``name@challenger`` on a deployment.

    With ``simulate_traffic`` (local runs and the demo) a background thread drives the deployment
    with episodes of the champion's EnvSpec (changed by ``traffic_env_json``, e.g. ``{"params":
    {"length": 0.75}}`` for a world that moved) while the controller decides; on a cluster, real
    traffic does.
    """
    from rlops_plugin.bundle.env_spec import EnvSpec
    from rlops_plugin.lifecycle import promote

    overrides = _json(traffic_env_json, "traffic_env_json")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(EnvSpec)}
    if unknown:
        raise ConfigError(f"traffic_env_json: unknown EnvSpec fields {sorted(unknown)}")
    _use_tracking(tracking_uri)
    stop = threading.Event()
    driver = None
    if simulate_traffic:
        driver = threading.Thread(target=_drive_traffic, args=(name, deployment, target, traffic_envs, stop,
                                                               overrides), daemon=True)
        driver.start()
    try:
        action, controller = promote(name, deployment, target, store, _json(promotion_json, "promotion_json"),
                                     served_model=served_model)
    finally:
        stop.set()
        if driver is not None:
            driver.join(timeout=60)
    return {"state": action.state, "reason": action.reason,
            "champion": controller.challenger.version if action.state == "promoted" and controller.challenger
            else (controller.champion.version if controller.champion else "")}


def _drive_traffic(name: str, deployment: str, target: str, n_envs: int, stop: threading.Event,
                   overrides: dict[str, Any] | None = None) -> None:
    """Simulated production traffic (``n_envs`` concurrent episodes) for a local deployment until ``stop``."""
    from rlops_plugin.deploy.local import LocalDeployments
    from rlops_plugin.flavor import ModelRef, load_model
    from rlops_plugin.simulation.traffic import DecisionClient, simulate

    if not target.startswith("rlops-local"):
        return
    root = target.partition(":")[2] or None
    url = LocalDeployments(root).get(deployment)["url"]
    spec = load_model(ModelRef.of(name, alias=CHAMPION).uri).env_spec
    if overrides:
        spec = spec.replace(**overrides)
    client = DecisionClient(url)
    try:
        simulate(client, spec, None, n_envs=n_envs, seed=0, episode_prefix=f"canary-{uuid.uuid4().hex[:6]}",
                 stop=stop.is_set)
    finally:
        client.close()


def record_cycle(name: str, status: str, error: str = "", pipeline_run: str = "", tracking_uri: str = "",
                 pipeline: str = "continuous-improvement") -> str:
    """Record one improvement cycle (of ``pipeline``) as an audit event, whatever happened (the exit handler)."""
    from rlops_plugin.lifecycle import record_cycle as record

    _use_tracking(tracking_uri)
    return record(name, status, error, pipeline_run, pipeline).run_id or ""


def monitor_policy(model: str, store: str, reference: str = MONITOR_REFERENCE, window: int = MONITOR_WINDOW,
                   triggers_json: str = "", report_dir: str = "", tracking_uri: str = "") -> dict[str, Any]:
    """Evaluate every full drift window of ``model`` (e.g. ``NAME@champion``) once; report triggers."""
    from rlops_plugin.lifecycle.monitor import monitor

    _use_tracking(tracking_uri)
    outcome = monitor(model, store, reference=reference, window=window,
                      triggers=json.loads(triggers_json) if triggers_json else None, report_dir=report_dir or None)
    last = outcome.summaries[-1].to_dict() if outcome.summaries else {}
    return {"triggered": outcome.triggered, "windows": len(outcome.summaries), "run_id": outcome.run_id or "",
            "events": [e.to_dict() for e in outcome.events], "last_window": last,
            "report_dir": str(outcome.report_dir) if outcome.report_dir else ""}


TRAINJOB_KEYS = {"namespace", "runtime", "image", "resources", "env", "timeout_s", "poll_s", "active_deadline_s"}
"""What ``trainjob_json`` may set for :func:`train_distributed` (``rlops_plugin.lifecycle.train_distributed``)."""


def train_distributed(trainer: str, init_uri: str, dataset_dir: str = "", config_json: str = "",
                      num_nodes: int = 1, nproc_per_node: int = 1, trainjob_json: str = "",
                      eval_episodes: int = EVAL_EPISODES, experiment: str = EXPERIMENT, tracking_uri: str = "",
                      finetune_steps: int = 0, calibration_json: str = "", lora: bool = False,
                      env_json: str = "") -> dict[str, Any]:
    """Train in a Kubeflow Trainer TrainJob (``num_nodes`` x ``nproc_per_node`` torchrun workers); log to MLflow.

    The dataset folder is logged to MLflow first and the job reads it from there. ``trainjob_json`` sets the
    namespace (default: this pod's), runtime, image (default: ``RLOPS_COMPONENT_IMAGE``, else the rlops image of
    this version), per-node ``resources``,
    extra ``env``, ``timeout_s``, ``poll_s`` and ``active_deadline_s``. The job does not register: the gate
    decides that later, as after :func:`train_policy`. The simulator fine-tuning, calibration and ``env_json``
    of :func:`train_policy` are not part of ``rlops train`` and are refused here rather than ignored.
    """
    from rlops_plugin.lifecycle import train_distributed as train
    from rlops_plugin.pipelines.images import component_image

    if finetune_steps or calibration_json or env_json:
        raise ConfigError("train_distributed: finetune_steps, calibration_json and env_json are in-process only "
                          "(num_nodes=1, nproc_per_node=1)")
    options = _json(trainjob_json, "trainjob_json")
    unknown = set(options) - TRAINJOB_KEYS
    if unknown:
        raise ConfigError(f"trainjob_json: unknown keys {sorted(unknown)}; known: {sorted(TRAINJOB_KEYS)}")
    _use_tracking(tracking_uri)
    config = _json(config_json, "config_json")
    if lora:
        config["lora"] = True
    options.setdefault("namespace", _pod_namespace())
    options.setdefault("image", component_image())  # RLOPS_COMPONENT_IMAGE in the pod, else rlops-plugin:<version>
    result = train(trainer, init_uri, dataset_dir or None, config, num_nodes=num_nodes,
                   nproc_per_node=nproc_per_node, eval_episodes=eval_episodes, experiment=experiment,
                   simulator_ignores_dataset=True, **options)
    return {"model_uri": result.model_uri, "run_id": result.run_id, "job_name": result.job_name,
            "dataset_uri": result.dataset_uri or "", "metrics": result.metrics}


def _pod_namespace() -> str:
    """The namespace this pod runs in (its service account's), else ``default`` (outside a cluster)."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.is_file() else "default"


def tune_policy(space_json: str, init_uri: str, dataset_dir: str = "", trials: int = 0, seed: int = 0,
                sampler: str = "tpe", eval_episodes: int = EVAL_EPISODES, experiment: str = EXPERIMENT,
                tracking_uri: str = "") -> dict[str, Any]:
    """Tune the trainer config over a search space (inline JSON or a YAML/JSON file) with Optuna, in this pod.

    Every trial is an MLflow child run of one tuning run (``rlops_plugin.lifecycle.tune``); simulator trainers
    ignore ``dataset_dir``. ``trials`` 0 keeps the space's budget. ``best_config_json`` is what
    :func:`train_policy`'s ``config_json`` takes.
    """
    from rlops_plugin.lifecycle import tune

    _use_tracking(tracking_uri)
    result = tune(space_json, init_uri, dataset_dir or None, n_trials=trials or None, seed=seed, sampler=sampler,
                  eval_episodes=eval_episodes, experiment=experiment, simulator_ignores_dataset=True)
    return {"best_config_json": json.dumps(result.best_config, sort_keys=True), "run_id": result.run_id,
            "best_value": result.best_value, "default_value": result.default_value,
            "best_model_uri": result.best_model_uri or "", "summary": result.to_dict()}
