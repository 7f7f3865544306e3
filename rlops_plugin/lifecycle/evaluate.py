"""Evaluate a registered or logged policy and write its report (JSON metrics, escaped HTML)."""

from __future__ import annotations

from pathlib import Path

from rlops_plugin.audit.export import render_html
from rlops_plugin.defaults import EVAL_EPISODES, EVAL_SEED
from rlops_plugin.evaluation.evaluate import PolicyEvaluation, evaluate_policy
from rlops_plugin.flavor.model import load_model_with_source


def evaluate(model_uri: str, *, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED,
             scenarios: list[str] | tuple[str, ...] = (), html_path: str | Path | None = None) -> PolicyEvaluation:
    """Roll ``model_uri`` out on fixed seeds and through scenario suites; optionally write an HTML summary."""
    loaded = load_model_with_source(model_uri)
    evaluation = evaluate_policy(loaded.bundle, episodes=episodes, seed=seed, scenarios=list(scenarios),
                                 policy_version=loaded.policy_version)
    if html_path:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        Path(html_path).write_text(evaluation_html(evaluation))
    return evaluation


def evaluation_html(evaluation: PolicyEvaluation) -> str:
    """The evaluation as a small HTML page (jinja2, autoescaped: names and reasons are data, not markup)."""
    return render_html("evaluation.html", e=evaluation.to_dict())
