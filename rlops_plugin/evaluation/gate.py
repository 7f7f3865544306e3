"""The promotion gate: one function that decides pass/fail with every reason, recorded in MLflow.

``gate(candidate, champion, policy)`` evaluates both policies on the same seeds (and on the
policy's scenario suites), optionally estimates the candidate from the champion's logged
decisions, then runs the named checks (plugins through ``rlops_register_gate_checks``; built-ins:
``lineage``, ``regression``, ``min_return``, ``scenarios``, ``ope``). ``record_gate`` writes the
result as metrics and a JSON artifact on the candidate's run and as tags on its model version;
``audit_gate`` adds the verdict (passed or failed) to the model's audit trail.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from rlops_plugin import plugins
from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.strict import load_dataclass
from rlops_plugin.defaults import CONFIDENCE, EVAL_EPISODES, EVAL_SEED
from rlops_plugin.errors import ConfigError, RLOpsError
from rlops_plugin.evaluation.regression import RegressionResult, compare
from rlops_plugin.flavor.model import LoadedModel
from rlops_plugin.kinds.base import kind_of
from rlops_plugin.simulation.rollouts import RolloutReport
from rlops_plugin.simulation.scenarios import ScenarioResult


class GateError(RLOpsError):
    """The gate cannot compare these models as asked (e.g. different env or reward hashes)."""

BUILTIN_CHECKS = ("lineage", "regression", "min_return", "scenarios", "ope")
"""Checks shipped with rlops (``default_plugins/gates.py``); their settings are GatePolicy fields."""


@dataclass
class GatePolicy:
    """What a candidate must show to be promoted."""

    checks: list[str] = field(default_factory=lambda: ["lineage", "regression", "min_return", "scenarios"])
    """Registered gate checks to run (add ``ope`` when a store of logged decisions is given)."""
    episodes: int = EVAL_EPISODES
    """Paired evaluation episodes for the regression check."""
    seed: int = EVAL_SEED
    """First episode seed; both policies play seeds seed .. seed+episodes-1."""
    confidence: float = CONFIDENCE
    """Confidence of every interval the gate uses."""
    regression_margin: float = 0.05
    """How much worse than the champion the candidate may be (relative unless regression_relative is false)."""
    regression_relative: bool = True
    """Read regression_margin as a fraction of the champion's mean return."""
    non_inferiority: bool = False
    """Require proof of non-inferiority (inconclusive fails) instead of failing only on a proven regression."""
    min_return: float | None = None
    """Absolute floor on the candidate's mean evaluation return."""
    scenarios: list[str] = field(default_factory=list)
    """Scenario suites (registered names or JSON files) every scenario of which the candidate must pass."""
    scenario_episodes_scale: float = 1.0
    """Multiply each scenario's episode count (smaller for quick CI gates)."""
    compare_under: str | None = None
    """When env or reward hashes differ: None refuses; 'candidate' or 'champion' evaluates both under that bundle."""
    ope_store: str | None = None
    """Experience store with the champion's logged decisions, for the ``ope`` check."""
    ope_model: str = "policy"
    """Served model name of those decisions."""
    ope_margin: float = 0.05
    """The candidate's off-policy lower bound may sit this fraction below the logged policy's value."""
    ope_min_ess: float = 50.0
    """Below this effective sample size the off-policy estimate is inconclusive (fails)."""
    check_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Settings of plugin-supplied checks by check name (``GateContext.settings(name)``); built-ins read
    the fields above, so settings for them, or for a check not in ``checks``, are refused."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GatePolicy:
        """Build from JSON; unknown or mistyped fields are refused, naming the field."""
        policy = load_dataclass(cls, data, "gate policy")
        for name, settings in policy.check_settings.items():
            if name in BUILTIN_CHECKS or name not in policy.checks:
                why = "a built-in check reads the gate policy's own fields" if name in BUILTIN_CHECKS else \
                    f"it is not one of the checks {policy.checks}"
                raise ConfigError(f"gate policy: check_settings[{name!r}]: {why}")
            if not isinstance(settings, dict):
                raise ConfigError(f"gate policy: check_settings[{name!r}] must be a JSON object")
        if policy.compare_under not in (None, "candidate", "champion"):
            raise ConfigError("gate policy: compare_under must be null, 'candidate' or 'champion'")
        return policy

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dataclasses.asdict(self)


@dataclass
class CheckResult:
    """One check's verdict."""

    name: str
    passed: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class GateContext:
    """Everything checks may look at."""

    candidate: LoadedModel
    champion: LoadedModel | None
    policy: GatePolicy
    evaluation_bundle: PolicyBundle
    candidate_report: RolloutReport
    champion_report: RolloutReport | None
    scenario_results: dict[str, list[ScenarioResult]] = field(default_factory=dict)
    suite_hashes: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def settings(self, check: str) -> dict[str, Any]:
        """The settings the gate policy gives a plugin-supplied check (empty when none)."""
        return dict(self.policy.check_settings.get(check, {}))


@dataclass
class GateResult:
    """The decision and every reason for it."""

    passed: bool
    checks: list[CheckResult]
    candidate: str
    champion: str | None
    policy: dict[str, Any]
    summary: dict[str, Any]
    decided_at: float = field(default_factory=time.time)

    @property
    def reasons(self) -> list[str]:
        """Reasons of failed checks (empty when passed)."""
        return [f"{c.name}: {c.reason}" for c in self.checks if not c.passed]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        """Inverse of :meth:`to_dict` (the gate result passed between pipeline steps)."""
        checks = [CheckResult(**c) for c in data.get("checks", [])]
        return cls(bool(data["passed"]), checks, data["candidate"], data.get("champion"), data.get("policy", {}),
                   data.get("summary", {}), data.get("decided_at", time.time()))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the artifact ``gate/result.json``)."""
        return {"passed": self.passed, "candidate": self.candidate, "champion": self.champion,
                "decided_at": self.decided_at, "policy": self.policy, "summary": self.summary,
                "checks": [dataclasses.asdict(c) for c in self.checks], "reasons": self.reasons}

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow (``gate/...``)."""
        out = {"gate/passed": float(self.passed)}
        for check in self.checks:
            out[f"gate/{check.name}/passed"] = float(check.passed)
            for key, value in check.metrics.items():
                out[f"gate/{check.name}/{key}"] = float(value)
        return out


def gate(candidate: LoadedModel | PolicyBundle | str, champion: LoadedModel | PolicyBundle | str | None,
         policy: GatePolicy | dict[str, Any] | None = None) -> GateResult:
    """Evaluate ``candidate`` against ``champion`` under ``policy``; pass only if every check passes."""
    from rlops_plugin.flavor.model import as_loaded

    policy = policy if isinstance(policy, GatePolicy) else GatePolicy.from_dict(policy or {})
    cand = as_loaded(candidate)
    champ = as_loaded(champion) if champion is not None else None
    context = _evaluate(cand, champ, policy)
    registry = plugins.gate_checks()
    checks = []
    for name in policy.checks:
        check = registry.get(name).value
        checks.append(check(context))
    lineage = cand.bundle.lineage
    summary = {"candidate": context.candidate_report.summary(policy.confidence), "notes": context.notes,
               "scenario_suites": context.suite_hashes, "evaluation_bundle": context.evaluation_bundle.bundle_sha,
               "candidate_lineage": {k: lineage.get(k) for k in ("parent_version", "dataset_digest", "trainer",
                                                                  "judges") if lineage.get(k) is not None}}
    if context.champion_report is not None:
        summary["champion"] = context.champion_report.summary(policy.confidence)
    return GateResult(all(c.passed for c in checks), checks, cand.policy_version,
                      champ.policy_version if champ else None, policy.to_dict(), summary)


def _evaluate(cand: LoadedModel, champ: LoadedModel | None, policy: GatePolicy) -> GateContext:
    bundle = cand.bundle
    notes = []
    if champ is not None:
        c_hashes, p_hashes = cand.bundle.hashes(), champ.bundle.hashes()
        differ = [part for part in ("env", "reward") if c_hashes[part] != p_hashes[part]]
        if differ and policy.compare_under is None:
            raise GateError(f"candidate and champion differ in their {' and '.join(differ)} hash; they were "
                            "trained for different problems. Set compare_under='candidate' or 'champion' to "
                            "evaluate both under one bundle's env and reward.")
        if differ:
            bundle = cand.bundle if policy.compare_under == "candidate" else champ.bundle
            notes.append(f"{' and '.join(differ)} differ; both evaluated under the {policy.compare_under}'s")
        kind_of(cand.bundle).check_comparable(cand.bundle.policy, champ.bundle.policy)
    if policy.episodes < 1:
        raise ConfigError("gate policy: episodes must be at least 1")
    seeds = list(range(policy.seed, policy.seed + policy.episodes))
    env, reward = bundle.env_spec, bundle.reward_spec
    kind = kind_of(cand.bundle)
    cand_report = kind.rollout(cand.bundle.policy, env, seeds, reward_spec=reward)
    champ_report = kind.rollout(champ.bundle.policy, env, seeds, reward_spec=reward) if champ else None
    context = GateContext(cand, champ, policy, bundle, cand_report, champ_report, notes=notes)
    if "scenarios" in policy.checks:
        for ref in policy.scenarios:
            name, sha, results = kind.run_suite(cand.bundle.policy, env, ref, reward, policy.scenario_episodes_scale)
            context.suite_hashes[name] = sha
            context.scenario_results[name] = results
    return context


# ----- built-in checks (registered in rlops_plugin.default_plugins.gates) -------------------------
def check_lineage(ctx: GateContext) -> CheckResult:
    """Env and reward hashes agree (or the policy said how to compare), and spaces match."""
    if ctx.champion is None:
        return CheckResult("lineage", True, "no champion: nothing to compare against")
    if ctx.notes:
        return CheckResult("lineage", True, ctx.notes[0])
    return CheckResult("lineage", True, "same env and reward hashes as the champion")


def check_regression(ctx: GateContext) -> CheckResult:
    """Paired comparison on identical episodes."""
    if ctx.champion_report is None:
        return CheckResult("regression", True, "no champion: first version")
    p = ctx.policy
    result: RegressionResult = compare(ctx.candidate_report, ctx.champion_report, p.regression_margin,
                                       p.regression_relative, p.confidence, p.non_inferiority)
    d = result.difference
    return CheckResult("regression", result.passed, result.reason,
                       {"return_diff": d.estimate, "return_diff_ci_low": d.low, "return_diff_ci_high": d.high,
                        "candidate_return": result.candidate_mean, "champion_return": result.champion_mean})


def check_min_return(ctx: GateContext) -> CheckResult:
    """The candidate's mean return clears the absolute floor (when one is set)."""
    mean = float(ctx.candidate_report.returns.mean())
    floor = ctx.policy.min_return
    if floor is None:
        return CheckResult("min_return", True, f"no floor set (mean return {mean:.1f})", {"return_mean": mean})
    passed = mean >= floor
    return CheckResult("min_return", passed, f"mean return {mean:.1f} {'>=' if passed else '<'} floor {floor}",
                       {"return_mean": mean})


def check_scenarios(ctx: GateContext) -> CheckResult:
    """Every scenario of every configured suite passes its constraints and return threshold."""
    if not ctx.scenario_results:
        return CheckResult("scenarios", True, "no scenario suites configured")
    failures = [f"{suite}/{r.scenario}: {'; '.join(r.failures)}" for suite, results in ctx.scenario_results.items()
                for r in results if not r.passed]
    total = sum(len(r) for r in ctx.scenario_results.values())
    metrics = {"failed": float(len(failures)), "total": float(total)}
    if failures:
        return CheckResult("scenarios", False, f"{len(failures)} of {total} scenarios failed: " + " | ".join(failures),
                           metrics)
    return CheckResult("scenarios", True, f"all {total} scenarios passed", metrics)


def check_ope(ctx: GateContext) -> CheckResult:
    """The candidate's off-policy estimate from the champion's logs is not worse than the logged value."""
    from rlops_plugin.evaluation.offpolicy import estimate_from_log
    from rlops_plugin.evaluation.ope import OPEError
    from rlops_plugin.experience.store import open_store

    p = ctx.policy
    if not p.ope_store:
        return CheckResult("ope", False, "the ope check needs ope_store (logged decisions of the champion)")
    versions = [ctx.champion.policy_version] if ctx.champion is not None else None
    try:
        with open_store(p.ope_store) as store:
            est = estimate_from_log(store, p.ope_model, ctx.candidate.bundle.policy, policy_versions=versions,
                                    confidence=p.confidence)
    except OPEError as exc:
        return CheckResult("ope", False, f"refused: {exc}")
    name = "dr" if est.kind == "bandit" else "pdwis"
    e = est.estimates[name]
    floor = est.behaviour_value - p.ope_margin * abs(est.behaviour_value)
    metrics = {"value": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high, "ess": e.ess,
               "behaviour_value": est.behaviour_value}
    if e.ess < p.ope_min_ess:
        return CheckResult("ope", False, f"inconclusive: {name} effective sample size {e.ess:.0f} < {p.ope_min_ess:g} "
                                         "(the candidate acts where the log has little support)", metrics)
    passed = e.ci_low >= floor
    verdict = ">=" if passed else "<"
    return CheckResult("ope", passed, f"{name} estimate {e.value:.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}] lower bound "
                                      f"{verdict} {floor:.3f} (logged policy {est.behaviour_value:.3f} minus margin)",
                       metrics)
