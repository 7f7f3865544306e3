"""The functions behind the Kubeflow components: one plain, testable function per component.

Each takes plain parameters (and artifact paths), uses the MLflow server named by
``tracking_uri`` (or ``MLFLOW_TRACKING_URI``), and returns a dict of outputs. Components in
``components/<verb_noun>/component.py`` only import this module and call one function, so the same
logic runs from the CLI, a notebook, ``kfp.local`` or a cluster.
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
                  kind: str = "transitions", window_s: float = 3600.0, grace_s: float = 300.0,
                  tracking_uri: str = "") -> dict[str, Any]:
    """Extract transitions or preference pairs from the decision log into ``out_dir``."""
    from rlops_plugin.experience.dataset import build_preferences, build_transitions
    from rlops_plugin.experience.join import JoinConfig
    from rlops_plugin.experience.store import open_store
    from rlops_plugin.flavor import load_model

    _use_tracking(tracking_uri)
    bundle = load_model(bundle_uri)
    build = build_transitions if kind == "transitions" else build_preferences
    with open_store(store) as experience:
        data = build(experience, served_model, bundle, join=JoinConfig(window_s=window_s, grace_s=grace_s))
    data.save(out_dir)
    return {"rows": len(data), "digest": data.digest, "excluded": data.manifest["excluded"]}


def calibrate_env(dataset_dir: str, bundle_uri: str, recent: int = 0, params_json: str = "",
                  result_path: str = "", tracking_uri: str = "") -> dict[str, Any]:
    """Fit the simulator's declared physics to the newest ``recent`` logged transitions (0: skip).

    Returns ``calibration_json`` ('' when skipped) for :func:`train_policy`, which centres the
    fine-tuning's domain randomization on the fit and records it in the candidate's lineage.
    """
    from rlops_plugin.experience.dataset import Dataset
    from rlops_plugin.flavor import load_model
    from rlops_plugin.simulation.calibration import calibrate_dataset

    if recent < 0:
        raise ConfigError(f"recent: a number of transitions >= 0 is required, got {recent}")
    if recent == 0:
        return {"calibration_json": "", "summary": "not calibrated (recent=0)"}
    _use_tracking(tracking_uri)
    bundle = load_model(bundle_uri)
    fitted = calibrate_dataset(bundle.env_spec, Dataset.load(dataset_dir), recent=recent,
                               params=_json(params_json, "params_json") or None)
    text = json.dumps(fitted.to_dict())
    if result_path:
        Path(result_path).parent.mkdir(parents=True, exist_ok=True)
        Path(result_path).write_text(text)
    return {"calibration_json": text, "summary": fitted.summary()}


def train_policy(trainer: str, init_uri: str, dataset_dir: str = "", config_json: str = "",
                 finetune_steps: int = 0, eval_episodes: int = 20, model_dir: str = "",
                 experiment: str = "rlops-training", tracking_uri: str = "",
                 finetune_config_json: str = "", calibration_json: str = "") -> dict[str, Any]:
    """Train from the deployed checkpoint (then optionally fine-tune in the simulator); log to MLflow.

    Simulator trainers ignore ``dataset_dir`` (a pipeline always wires the dataset step in). With a
    ``calibration_json`` from :func:`calibrate_env` the simulator stage randomizes the fitted
    parameters around their fitted values (overriding configured ranges of the same names).
    """
    from rlops_plugin import flavor, plugins
    from rlops_plugin.simulation.calibration import Calibration
    from rlops_plugin.training.train import train

    _use_tracking(tracking_uri)
    calibration = Calibration.from_dict(_json(calibration_json, "calibration_json")) if calibration_json else None
    simulator = plugins.trainers().get(trainer).value.data_kind == "simulator"
    if simulator:
        dataset_dir = ""
    config = _json(config_json, "config_json")
    if calibration is not None and simulator:
        config = _calibrated(config, calibration)
    outcome = train(trainer, init_uri, dataset_dir or None, config, eval_episodes=eval_episodes,
                    experiment=experiment, calibration=calibration.to_dict() if calibration and simulator else None)
    if finetune_steps > 0:
        base_return = outcome.metrics.get("eval/init_return_mean")
        finetune = {**_json(finetune_config_json, "finetune_config_json"), "total_steps": finetune_steps}
        if calibration is not None:
            finetune = _calibrated(finetune, calibration)
        outcome = train("sim_finetune", outcome.model_uri or init_uri, None, finetune, eval_episodes=eval_episodes,
                        experiment=experiment, calibration=calibration.to_dict() if calibration else None)
        if base_return is not None:
            outcome.metrics["eval/init_return_mean"] = base_return
    if model_dir:
        flavor.save_model(outcome.bundle, model_dir)
    return {"model_uri": outcome.model_uri, "run_id": outcome.run_id, "bundle_sha": outcome.bundle.bundle_sha,
            "dataset_digest": outcome.dataset_digest or "", "metrics": outcome.metrics}


def _calibrated(config: dict[str, Any], calibration: Any) -> dict[str, Any]:
    """``config`` with ``extra_randomization`` centred on the calibration's fitted values."""
    return {**config, "extra_randomization": {**(config.get("extra_randomization") or {}),
                                              **calibration.randomization()}}


def evaluate_policy(model_uri: str, episodes: int = 20, scenarios_json: str = "", html_path: str = "",
                    tracking_uri: str = "") -> dict[str, Any]:
    """Roll the policy out (and through scenario suites); write an HTML summary."""
    from rlops_plugin.simulation.rollouts import rollout
    from rlops_plugin.simulation.scenarios import ScenarioSuite, run_suite
    from rlops_plugin.flavor import load_model_with_source

    _use_tracking(tracking_uri)
    loaded = load_model_with_source(model_uri)
    bundle = loaded.bundle
    summary = rollout(bundle.policy, bundle.env_spec, range(20_000, 20_000 + episodes),
                      reward_spec=bundle.reward_spec).summary()
    scenarios: dict[str, Any] = {}
    for ref in json.loads(scenarios_json or "[]"):
        suite = ScenarioSuite.load(ref)
        scenarios[suite.name] = [r.to_dict() for r in run_suite(bundle.policy, bundle.env_spec, suite,
                                                                  bundle.reward_spec)]
    if html_path:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"<tr><td>{s}/{r['scenario']}</td><td>{'pass' if r['passed'] else 'FAIL'}</td>"
                       f"<td>{r['return_mean']:.1f}</td><td>{'; '.join(r['failures'])}</td></tr>"
                       for s, results in scenarios.items() for r in results)
        Path(html_path).write_text(
            f"<html><body><h1>{loaded.policy_version}</h1><p>return {summary['return_mean']:.1f} "
            f"[{summary['return_ci_low']:.1f}, {summary['return_ci_high']:.1f}] over {episodes} episodes</p>"
            f"<table><tr><th>scenario</th><th>verdict</th><th>return</th><th>failures</th></tr>{rows}</table>"
            "</body></html>")
    return {"return_mean": summary["return_mean"], "summary": summary, "scenarios": scenarios}


def gate_policy(candidate_uri: str, champion_uri: str, policy_json: str = "", result_path: str = "",
                tracking_uri: str = "") -> dict[str, Any]:
    """The promotion gate; writes the full result JSON to ``result_path``."""
    from rlops_plugin.evaluation.gate import audit_gate, gate
    from rlops_plugin.flavor import get_alias_version

    _use_tracking(tracking_uri)
    champion: str | None = champion_uri or None
    if champion and champion.startswith("models:/") and "@" in champion:
        name, alias = champion[len("models:/"):].split("@", 1)
        if get_alias_version(name, alias) is None:
            champion = None  # first version: nothing to compare against
    result = gate(candidate_uri, champion, _json(policy_json, "policy_json"))
    if champion_uri.startswith("models:/"):
        model_name = champion_uri[len("models:/"):].split("@", 1)[0].split("/", 1)[0]
        audit_gate(result, model_name, candidate_uri=candidate_uri)
    if result_path:
        Path(result_path).parent.mkdir(parents=True, exist_ok=True)
        Path(result_path).write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return {"passed": result.passed, "reasons": result.reasons, "result": result.to_dict()}


def register_policy(model_uri: str, name: str, alias: str = "challenger", gate_json: str = "",
                    tracking_uri: str = "") -> dict[str, Any]:
    """Register a trained model with lineage tags, set ``alias`` and record the policy update."""
    from rlops_plugin.audit.events import AuditEvent, record_event
    from rlops_plugin.evaluation.gate import GateResult, record_gate
    from rlops_plugin.flavor import load_model, register_bundle, registry, set_alias
    from rlops_plugin.flavor.registry import calibration_label, trainer_label

    _use_tracking(tracking_uri)
    bundle = load_model(model_uri)
    version = str(register_bundle(model_uri, name, bundle).version)
    set_alias(name, alias, version)
    gate_result = _json(gate_json, "gate_json")
    if gate_result:
        record_gate(GateResult.from_dict(gate_result), name, version)
    run_id = registry.client().get_model_version(name, version).run_id
    metrics = registry.client().get_run(run_id).data.metrics if run_id else {}
    # before/after: the training run's evaluation and the gate's paired champion-vs-candidate returns
    before_after = {k: v for k, v in metrics.items() if k.startswith(("eval/", "gate/regression/"))}
    calibration = bundle.lineage.get("calibration")
    reason = f"trained by {trainer_label(bundle.lineage)} from version {bundle.lineage.get('parent_version')}"
    if calibration:  # the physics the simulator was fitted to, in numbers an auditor can read
        before_after.update({f"calibration/{k}": float(v) for k, v in calibration["params"].items()})
        reason += f" in a simulator calibrated from production logs ({calibration_label(calibration)})"
    record_event(AuditEvent("policy_update", name, version, decision=f"registered as {alias}", reason=reason,
                            metrics=before_after,
                            details={"lineage": bundle.lineage, "hashes": bundle.hashes(), "run_id": run_id,
                                     "model_uri": model_uri, "dataset_digest": bundle.lineage.get("dataset_digest"),
                                     "calibration": calibration, "gate": gate_result}))
    return {"version": version}


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
    from rlops_plugin.deploy.analysis import PromotionPolicy
    from rlops_plugin.deploy.promotion import PromotionController, target_for

    overrides = _json(traffic_env_json, "traffic_env_json")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(EnvSpec)}
    if unknown:
        raise ConfigError(f"traffic_env_json: unknown EnvSpec fields {sorted(unknown)}")
    _use_tracking(tracking_uri)
    controller = PromotionController(name, deployment, target_for(target), store,
                                     PromotionPolicy(**_json(promotion_json, "promotion_json")),
                                     served_model=served_model)
    stop = threading.Event()
    driver = None
    if simulate_traffic:
        driver = threading.Thread(target=_drive_traffic, args=(name, deployment, target, traffic_envs, stop,
                                                               overrides), daemon=True)
        driver.start()
    try:
        action = controller.run()
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
    from rlops_plugin.flavor import load_model
    from rlops_plugin.simulation.traffic import DecisionClient, simulate

    if not target.startswith("rlops-local"):
        return
    root = target.partition(":")[2] or None
    url = LocalDeployments(root).get(deployment)["url"]
    spec = load_model(f"models:/{name}@champion").env_spec
    if overrides:
        spec = spec.replace(**overrides)
    client = DecisionClient(url)
    try:
        simulate(client, spec, None, n_envs=n_envs, seed=0, episode_prefix=f"canary-{uuid.uuid4().hex[:6]}",
                 stop=stop.is_set)
    finally:
        client.close()


def record_cycle(name: str, status: str, error: str = "", pipeline_run: str = "", tracking_uri: str = "") -> str:
    """Record one improvement cycle as an audit event, whatever happened (the exit handler)."""
    from rlops_plugin.audit.events import AuditEvent, record_event
    from rlops_plugin.flavor import get_alias_version

    _use_tracking(tracking_uri)
    champion = get_alias_version(name, "champion")
    event = record_event(AuditEvent("pipeline_cycle", name, champion, decision=status.lower(),
                                    reason=error or f"continuous-improvement cycle {status.lower()}",
                                    details={"pipeline_run": pipeline_run, "champion_after": champion,
                                             "challenger_after": get_alias_version(name, "challenger")}))
    return event.run_id or ""


def monitor_policy(model: str, store: str, reference: str = "rollouts:20000", window: int = 1000,
                   triggers_json: str = "", report_dir: str = "", tracking_uri: str = "") -> dict[str, Any]:
    """Evaluate every full drift window of ``model`` (e.g. ``NAME@champion``) once; report triggers."""
    from rlops_plugin.monitoring.config import DEFAULT_RULES, MonitorConfig
    from rlops_plugin.monitoring.runner import run_monitor

    _use_tracking(tracking_uri)
    rules = json.loads(triggers_json) if triggers_json else list(DEFAULT_RULES)
    outcome = run_monitor(model, store, reference=reference, config=MonitorConfig(window=window), triggers=rules,
                          reports="drift", report_dir=report_dir or None)
    last = outcome.summaries[-1].to_dict() if outcome.summaries else {}
    return {"triggered": outcome.triggered, "windows": len(outcome.summaries), "run_id": outcome.run_id or "",
            "events": [e.to_dict() for e in outcome.events], "last_window": last,
            "report_dir": str(outcome.report_dir) if outcome.report_dir else ""}
