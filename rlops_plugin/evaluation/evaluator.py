"""``mlflow.models.evaluate(uri, data, model_type="rlops", evaluators=["rlops"])``: RL evaluation in MLflow.

Episodes, scenarios, the gate and off-policy estimates, logged to the evaluation run.

Registered through the ``mlflow.model_evaluator`` entry point. ``evaluator_config={"rlops": {...}}``
takes ``episodes``, ``seed``, ``scenarios`` (suite names or files), ``champion`` (a model URI: runs
the full :func:`rlops_plugin.evaluation.gate.gate` and logs its verdict) and ``gate_policy``
(a GatePolicy dict). When ``data`` holds logged decisions (columns ``obs_0..obs_{d-1}``,
``action``, ``propensity``, ``reward``), bandit off-policy estimates of the model are added.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.defaults import CONFIDENCE, EVAL_EPISODES, EVAL_SEED
from rlops_plugin.errors import ConfigError, to_mlflow_exception

CONFIG_KEYS = {"episodes", "seed", "scenarios", "champion", "gate_policy", "confidence"}


class RLOpsEvaluator(ModelEvaluator):
    """Evaluates rlops policies by rollouts in their EnvSpec, not by a labelled dataset."""

    @classmethod
    def can_evaluate(cls, *, model_type: str | None, evaluator_config: dict[str, Any] | None, **kwargs: Any) -> bool:
        """Any rlops model (``model_type`` None, ``"rlops"`` or ``"reinforcement-learning"``)."""
        return model_type in (None, "rlops", "reinforcement-learning")

    def evaluate(self, *, model_type: str | None, dataset: Any, run_id: str, evaluator_config: dict[str, Any],
                 model: Any = None, **kwargs: Any) -> EvaluationResult:
        """Roll out, run scenarios (and the gate), estimate from logged data; log to ``run_id``."""
        from mlflow import MlflowClient

        from rlops_plugin.errors import RLOpsError

        try:
            return self._evaluate(dataset, run_id, dict(evaluator_config or {}), model, MlflowClient())
        except RLOpsError as exc:
            raise to_mlflow_exception(exc) from exc

    def _evaluate(self, dataset: Any, run_id: str, config: dict[str, Any], model: Any, client: Any) -> EvaluationResult:
        from rlops_plugin.evaluation.evaluate import evaluate_policy
        from rlops_plugin.evaluation.gate import GatePolicy, gate

        check_keys(config, CONFIG_KEYS, "evaluator_config['rlops']", noun="keys")
        bundle = _bundle_of(model)
        episodes, seed = int(config.get("episodes", EVAL_EPISODES)), int(config.get("seed", EVAL_SEED))
        confidence = float(config.get("confidence", CONFIDENCE))
        evaluation = evaluate_policy(bundle, episodes=episodes, seed=seed, scenarios=config.get("scenarios", []),
                                     confidence=confidence)
        metrics = evaluation.metrics()
        out: dict[str, Any] = {"rollouts": evaluation.rollouts, "bundle_sha": bundle.bundle_sha}
        if evaluation.scenarios:
            out["scenarios"] = evaluation.scenarios
        if config.get("champion"):
            policy = GatePolicy.from_dict({"episodes": episodes, "seed": seed, "confidence": confidence,
                                           **config.get("gate_policy", {})})
            verdict = gate(bundle, config["champion"], policy)
            out["gate"] = verdict.to_dict()
            metrics.update(verdict.metrics())
        logged = _logged_decisions(dataset, bundle.policy.obs_dim)
        if logged is not None:
            from rlops_plugin.evaluation.offpolicy import target_probabilities
            from rlops_plugin.evaluation.ope import evaluate_bandit

            obs, actions, props, rewards = logged
            estimates = evaluate_bandit(rewards, actions, props, target_probabilities(bundle.policy, obs),
                                        contexts=obs, confidence=confidence)
            out["ope"] = {k: v.to_dict() for k, v in estimates.items()}
            for name, est in estimates.items():
                metrics.update({f"ope/{name}/value": est.value, f"ope/{name}/ci_low": est.ci_low,
                                f"ope/{name}/ci_high": est.ci_high, f"ope/{name}/ess": est.ess})
        finite = {k: v for k, v in metrics.items() if np.isfinite(v)}
        for key, value in finite.items():
            client.log_metric(run_id, key, value)
        client.log_text(run_id, json.dumps(out, indent=2, default=str), "rlops_evaluation.json")
        return EvaluationResult(metrics=finite, artifacts={}, run_id=run_id)


def _bundle_of(model: Any) -> PolicyBundle:
    raw = model.get_raw_model() if model is not None and hasattr(model, "get_raw_model") else model
    if not isinstance(raw, PolicyBundle):
        raise ConfigError("the rlops evaluator needs an rlops model (logged with rlops_plugin.flavor)")
    return raw


def _logged_decisions(dataset: Any, obs_dim: int) -> tuple[np.ndarray, ...] | None:
    frame = getattr(dataset, "features_data", None)
    if frame is None or not hasattr(frame, "columns"):
        return None
    obs_cols = [f"obs_{i}" for i in range(obs_dim)]
    needed = {"action", "propensity", "reward", *obs_cols}
    if not needed <= set(frame.columns):
        return None
    return (frame[obs_cols].to_numpy(np.float32), frame["action"].to_numpy(np.int64),
            frame["propensity"].to_numpy(float), frame["reward"].to_numpy(float))
