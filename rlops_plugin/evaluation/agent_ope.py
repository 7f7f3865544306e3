"""Off-policy estimate of a candidate agent from the served agent's logged, rated answers.

The statistics first. Each logged choice is an answer ``a`` sampled from the served policy ``mu`` for a
prompt ``x``, logged with ``log mu(a|x)`` under the sampling distribution that drew it (temperature and
top-p applied). The candidate ``pi`` scores the same answer in one forward pass
(:meth:`AgentPolicy.sequence_logprob`) under the same sampling settings (or those given in ``sampling``),
and the importance weight is ``w = exp(log pi(a|x) - log mu(a|x))``, capped at ``clip`` when one is set.

* Estimate: self-normalized importance sampling, ``V = sum w r / sum w``. It stays inside the reward range,
  ignores a common scale of the weights (sequence weights are ratios of tiny probabilities) and is consistent;
  its O(1/n) bias is far below its variance at these sample sizes. A candidate evaluated on its own logs has
  every weight 1 and ``V`` equal to the logged mean.
* Interval: percentile bootstrap over interactions (the ``n`` choices of one request share its prompt and are
  resampled together), ``n_bootstrap`` resamples with a fixed ``seed``. The same resamples give an interval
  for the difference from the logged mean (paired: it is much tighter than the two intervals apart).
* Effective sample size: Kish's ``(sum w)^2 / sum w^2`` of the weights used. Below ``min_ess`` a few answers
  carry the estimate (the candidate answers where the log has little support) and it is refused.
* Coverage: the mean weight ``(1/n) sum w`` estimates the share of the candidate's probability mass on answers
  the log can show (its expectation is 1 when it does). Self-normalization divides it away, so a candidate
  that often answers in ways the served policy rarely did is scored on the answers they share only, and
  looks as good as those: measured on the triage task (``bench/agent_ope.py``), a second tiny model with
  coverage 0.72 [0.64, 0.81] and a healthy effective sample size (557 of 767) was estimated at 0.95 for a
  true 0.42. An estimate whose coverage interval lies below ``min_coverage`` is refused, with the bounds
  ``IPS + (1 - coverage) * [r_min, r_max]`` that hold whatever the unseen answers earn; ``r_min``/``r_max``
  are the rating's scale (thumbs -1..1, ``"1-5"``), else the observed range. Coverage uses unclipped weights.
* Support: answers logged greedily (temperature 0: log-probability 0.0 by convention, the served policy was
  deterministic) or without a log-probability (a guard replaced the answer, or the log predates log-probs)
  cannot be reweighted: a candidate that answers differently has no logged support there. They are excluded
  and counted; a log made only of them is refused. Answers logged with ``top_p < 1`` cover only the served
  nucleus: a candidate's mass outside it is invisible to the estimate (counted in ``truncated_logging``).

What the log keeps of an answer is its text: ``content``, parsed ``tool_calls``, ``finish_reason`` and the
number of generated tokens (``completion_tokens``), not the token ids. The answer is re-tokenized the way the
candidate writes it: its tool calls in the candidate's own tool-call format (the call is the action, the
exact characters are not), a prefilled start (``tool_choice`` required or forced) removed, and the stop
token appended when the answer ended on one. Sampled answers that the tokenizer does not split canonically
(or that decoded to invalid UTF-8) re-tokenize to a different length than was generated; with
``check_token_count`` (default) those rows are excluded and counted as ``not_retokenized``, since their
logged log-probability belongs to other tokens. Turn the check off for a candidate whose tokenizer differs
from the served one's (the logged count then says nothing about the candidate's tokens). The logged
messages are used as they were served, system prompt included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rlops_plugin.evaluation.ope import OPEError
from rlops_plugin.experience.feedback import THUMBS
from rlops_plugin.experience.interactions import join_interactions
from rlops_plugin.experience.join import JoinConfig
from rlops_plugin.experience.records import decision_id, finite_or_none
from rlops_plugin.experience.store import ExperienceStore
from rlops_plugin.kinds.agent.policy import AgentPolicy

if TYPE_CHECKING:  # gate.py may import this module to wire the check in: no import cycle at runtime
    from rlops_plugin.evaluation.gate import CheckResult

REWARDS = ("rating", "outcome")
STOP_REASONS = ("stop", "tool_calls")
"""Finish reasons of answers that ended on the stop token (``tool_calls`` is a stop with a parsed call)."""


class AgentOPEError(OPEError):
    """The logged answers cannot support an estimate of this candidate; the message names the numbers."""

    def __init__(self, message: str, estimate: AgentOPEEstimate | None = None) -> None:
        super().__init__(message)
        self.estimate = estimate
        """The refused estimate (effective sample size or coverage too low), else None."""


@dataclass
class AgentOPEEstimate:
    """The candidate's estimated value with its interval, the logged policy's value, diagnostics and counts."""

    value: float
    """Self-normalized importance-sampling estimate of the candidate's mean reward."""
    ci_low: float
    ci_high: float
    confidence: float
    ess: float
    """Kish effective sample size of the importance weights used."""
    n: int
    """Logged answers used (rewarded, reweightable)."""
    logged_value: float
    """Mean reward of the logged answers used: the served policy's own value on the same rows."""
    counts: dict[str, int] = field(default_factory=dict)
    """``answers`` logged, ``rewarded``, excluded ``no_logprob``, ``greedy``, ``not_retokenized``, ``used``,
    ``interactions`` used, ``clipped`` weights, ``truncated_logging`` (rows logged with top_p < 1)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Interval method, difference from the logged value with its interval, weight extremes, settings."""
    rows: pd.DataFrame | None = None
    """Per answer used: decision_id, interaction_id, reward, logged and candidate log-probabilities, weight."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (without the per-row frame)."""
        return {"estimator": "snips", "value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "confidence": self.confidence, "ess": self.ess, "n": self.n, "logged_value": self.logged_value,
                "counts": dict(self.counts), "details": dict(self.details)}


def estimate_agent_from_log(store: ExperienceStore, model: str, candidate: AgentPolicy, *,
                            policy_versions: list[str] | None = None,
                            reward: str | Callable[[Mapping[str, Any]], float | None] = "rating",
                            sampling: Mapping[str, float] | None = None, confidence: float = 0.95,
                            clip: float | None = None, min_ess: float = 30.0, min_coverage: float | None = 0.95,
                            min_rewarded: int = 30, n_bootstrap: int = 2000, seed: int = 0,
                            check_token_count: bool = True,
                            join: JoinConfig | None = None, now: float | None = None) -> AgentOPEEstimate:
    """Estimate ``candidate``'s mean reward from ``model``'s logged, rewarded answers (see the module docstring).

    ``reward``: ``"rating"`` (the latest rating; one scale across rows), ``"outcome"`` (the outcome's value)
    or a function of the joined row returning a float or None. ``sampling``: ``{"temperature", "top_p"}`` the
    candidate would be served with; None scores it under each answer's logged settings. ``clip`` caps the
    importance weights (biased, lower variance). Raises :class:`AgentOPEError` when the log cannot support
    an estimate: no or too few (``min_rewarded``) usable rewarded answers, no logged support, an effective
    sample size below ``min_ess``, or a coverage interval below ``min_coverage`` (None turns that check off).
    """
    if not 0.0 < confidence < 1.0:
        raise AgentOPEError(f"confidence must be in (0, 1), got {confidence}")
    if clip is not None and not clip > 0:
        raise AgentOPEError(f"clip must be > 0, got {clip}")
    if n_bootstrap < 100:
        raise AgentOPEError(f"n_bootstrap: at least 100 resamples, got {n_bootstrap}")
    override = _check_sampling(sampling)
    reward_of = _reward_function(reward)
    frame = join_interactions(store, join, model=model, now=now).decisions
    if policy_versions is not None:
        frame = frame[frame["policy_version"].isin(policy_versions)]
    rows = frame.to_dict("records")
    rewards = [reward_of(row) for row in rows]
    rewarded = [(row, r) for row, r in zip(rows, rewards, strict=True) if r is not None]
    counts = {"answers": len(rows), "rewarded": len(rewarded)}
    if not rewarded:
        what = reward if isinstance(reward, str) else "reward"
        raise AgentOPEError(f"no rewarded answers: 0 of {len(rows)} logged answers of model {model!r} have a "
                            f"{what} to estimate from")
    if reward == "rating":
        _check_one_scale(row for row, _ in rewarded)
    raw = _logged_choices(store, model, {row["interaction_id"] for row, _ in rewarded})
    usable, excluded = _reweightable(rewarded, raw, candidate, override, check_token_count)
    counts.update(excluded)
    counts["used"] = len(usable)
    _check_support(counts, model)
    if len(usable) < min_rewarded:
        raise AgentOPEError(f"too few usable rewarded answers: {len(usable)} of {counts['rewarded']} rewarded "
                            f"(minimum {min_rewarded}); excluded {_excluded_text(counts)}")
    table = pd.DataFrame(usable)
    counts["interactions"] = int(table["interaction_id"].nunique())
    counts["truncated_logging"] = int((table["logged_top_p"] < 1.0).sum())
    return _snips(table, counts, _reward_range(reward, rewarded), confidence, clip, min_ess, min_coverage,
                  n_bootstrap, seed)


def check_agent_ope(ctx: Any, reward: str | Callable[[Mapping[str, Any]], float | None] = "rating",
                    sampling: Mapping[str, float] | None = None) -> CheckResult:
    """Gate check (contract of ``check_ope``): the candidate agent's estimate from the champion's logs is not worse.

    Passes when the paired lower bound (the logged value plus the lower end of the candidate-minus-logged
    difference, both from the same bootstrap resamples over interactions) is not below the logged value minus
    ``ope_margin`` of it. Paired, because the answers of one request are correlated: the unpaired interval of
    the estimate alone carries that between-request variance, which both policies share, and made even the
    champion fail against its own log when few requests were logged. An effective sample size below
    ``ope_min_ess``, poor coverage or any other refusal fails with the reason.
    The candidate is scored under each answer's logged sampling settings unless ``sampling`` says otherwise.
    """
    from rlops_plugin.evaluation.gate import CheckResult
    from rlops_plugin.experience.store import open_store

    p = ctx.policy
    if not p.ope_store:
        return CheckResult("ope", False, "the ope check needs ope_store (logged answers of the champion)")
    policy = ctx.candidate.bundle.policy
    if not isinstance(policy, AgentPolicy):
        return CheckResult("ope", False, f"the agent ope check needs an agent policy, got {type(policy).__name__}")
    versions = [ctx.champion.policy_version] if ctx.champion is not None else None
    try:
        with open_store(p.ope_store) as store:
            est = estimate_agent_from_log(store, p.ope_model, policy, policy_versions=versions, reward=reward,
                                          sampling=sampling, confidence=p.confidence, min_ess=p.ope_min_ess)
    except AgentOPEError as exc:
        metrics = _metrics(exc.estimate) if exc.estimate is not None else {}
        return CheckResult("ope", False, f"refused: {exc}", metrics)
    floor = est.logged_value - p.ope_margin * abs(est.logged_value)
    lower = est.logged_value + float(est.details["difference_ci_low"])
    passed = lower >= floor
    verdict = ">=" if passed else "<"
    return CheckResult("ope", passed, f"snips estimate {est.value:.3f} [{est.ci_low:.3f}, {est.ci_high:.3f}], paired "
                                      f"lower bound {lower:.3f} {verdict} {floor:.3f} (logged policy "
                                      f"{est.logged_value:.3f} minus "
                                      f"margin; {est.n} answers, effective sample size {est.ess:.0f}; excluded "
                                      f"{_excluded_text(est.counts)})", _metrics(est))


# ----- rewards --------------------------------------------------------------------------------------
def _reward_function(reward: Any) -> Callable[[Mapping[str, Any]], float | None]:
    if callable(reward):
        def call(row: Mapping[str, Any]) -> float | None:
            value = reward(row)
            return None if value is None else finite_or_none(value)
        return call
    if reward == "rating":
        return lambda row: finite_or_none(row.get("rating"))
    if reward == "outcome":
        return lambda row: finite_or_none((row.get("outcome") or {}).get("value"))
    raise AgentOPEError(f"reward: one of {list(REWARDS)} or a function of the joined row, got {reward!r}")


def _reward_range(reward: Any, rewarded: list[tuple[dict[str, Any], float]]) -> tuple[float, float]:
    """The range rewards can take: a rating's declared scale (thumbs -1..1, ``"1-5"``), else the observed range."""
    if reward == "rating":
        scale = rewarded[0][0].get("rating_scale")
        if scale == THUMBS:
            return -1.0, 1.0
        low, sep, high = str(scale).partition("-") if isinstance(scale, str) else ("", "", "")
        if sep and low.isdigit() and high.isdigit():
            return float(low), float(high)
    values = [r for _, r in rewarded]
    return float(min(values)), float(max(values))


def _check_one_scale(rows: Any) -> None:
    """Ratings on different scales (thumbs and 1-5) are not one reward: refuse, naming them."""
    scales: dict[str, int] = {}
    for row in rows:
        scale = row.get("rating_scale")
        key = "unspecified" if scale is None or (isinstance(scale, float) and math.isnan(scale)) else str(scale)
        scales[key] = scales.get(key, 0) + 1
    if len(scales) > 1:
        named = ", ".join(f"{k}: {v}" for k, v in sorted(scales.items()))
        raise AgentOPEError(f"ratings on {len(scales)} scales ({named}) are not one reward: pass reward= a "
                            "function putting them on one scale")


def _check_sampling(sampling: Mapping[str, float] | None) -> dict[str, float] | None:
    if sampling is None:
        return None
    unknown = sorted(set(sampling) - {"temperature", "top_p"})
    if unknown:
        raise AgentOPEError(f"sampling: only temperature and top_p, got {unknown}")
    out = {"temperature": float(sampling.get("temperature", 1.0)), "top_p": float(sampling.get("top_p", 1.0))}
    if not 0.0 <= out["temperature"] or not 0.0 < out["top_p"] <= 1.0:
        raise AgentOPEError(f"sampling: temperature >= 0 and top_p in (0, 1], got {out}")
    return out


# ----- re-tokenizing the logged answers ----------------------------------------------------------------
def _logged_choices(store: ExperienceStore, model: str,
                    interactions: set[str]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """``decision_id -> (request, choice)`` as stored (the join's frame drops ``completion_tokens``)."""
    out = {}
    for _, record in store.iter_interactions(model=model):
        if record.interaction_id in interactions:
            for choice in record.choices:
                out[decision_id(record.interaction_id, choice["index"])] = (record.request, choice)
    return out


def _reweightable(rewarded: list[tuple[dict[str, Any], float]], raw: dict[str, tuple[dict, dict]],
                  candidate: AgentPolicy, override: dict[str, float] | None,
                  check_token_count: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows that can be reweighted, with both log-probabilities; counts of those that cannot, by reason."""
    _, tokenizer = candidate.load()
    excluded = {"no_logprob": 0, "greedy": 0, "not_retokenized": 0}
    prompts: dict[str, list[int]] = {}
    scores: dict[tuple[Any, ...], float] = {}
    usable = []
    for row, reward in rewarded:
        request, choice = raw[row["decision_id"]]
        logged = finite_or_none(choice.get("logprob"))
        settings = request.get("sampling") or {}
        temperature = float(settings.get("temperature", 1.0))
        top_p = float(settings.get("top_p", 1.0))
        if logged is None:
            excluded["no_logprob"] += 1
            continue
        if temperature == 0.0:
            excluded["greedy"] += 1
            continue
        prefix = _prefix(candidate, request)
        completion = _completion_ids(candidate, tokenizer, request, choice, prefix)
        if completion is None or (check_token_count and choice.get("completion_tokens") is not None
                                  and len(completion) != int(choice["completion_tokens"])):
            excluded["not_retokenized"] += 1
            continue
        key = json.dumps([request.get("messages"), request.get("prompt"), request.get("tools"), prefix],
                         sort_keys=True, default=str)
        if key not in prompts:
            prompts[key] = _prompt_ids(candidate, tokenizer, request, prefix)
        target = override or {"temperature": temperature, "top_p": top_p}
        score_key = (key, tuple(completion), target["temperature"], target["top_p"])
        if score_key not in scores:
            scores[score_key] = candidate.sequence_logprob(prompts[key], completion, **target)
        usable.append({"decision_id": row["decision_id"], "interaction_id": row["interaction_id"],
                       "reward": float(reward), "logged_logprob": logged, "candidate_logprob": scores[score_key],
                       "logged_temperature": temperature, "logged_top_p": top_p})
    return usable, excluded


def _prefix(candidate: AgentPolicy, request: Mapping[str, Any]) -> str:
    """The text the server prefilled to honour ``tool_choice`` (a forced call starts the answer)."""
    choice = request.get("tool_choice")
    if choice == "required":
        return candidate.call_prefix(None)
    if isinstance(choice, Mapping):
        return candidate.call_prefix((choice.get("function") or {}).get("name"))
    return ""


def _prompt_ids(candidate: AgentPolicy, tokenizer: Any, request: Mapping[str, Any], prefix: str) -> list[int]:
    if request.get("messages") is not None:
        return candidate.render(request["messages"], request.get("tools") or None, prefix)
    return tokenizer(request.get("prompt") or "", add_special_tokens=False)["input_ids"]


def _completion_ids(candidate: AgentPolicy, tokenizer: Any, request: Mapping[str, Any], choice: Mapping[str, Any],
                    prefix: str) -> list[int] | None:
    """The answer's tokens as the candidate writes it (None when the logged text cannot be the model's)."""
    calls = [{"name": c["name"], "arguments": c.get("arguments", {})} for c in choice.get("tool_calls") or []]
    text = (choice.get("content") or "") + (candidate.format_tool_calls(calls) if calls else "")
    if not text.startswith(prefix):
        return None
    ids = tokenizer(text[len(prefix):], add_special_tokens=False)["input_ids"]
    if choice.get("finish_reason") in STOP_REASONS:
        ids.append(tokenizer.eos_token_id)
    return ids or None


def _check_support(counts: dict[str, int], model: str) -> None:
    unsupported = counts["greedy"] + counts["no_logprob"]
    if counts["used"] == 0 and unsupported:
        raise AgentOPEError(
            f"support violated: {counts['greedy']} of {counts['rewarded']} rewarded answers of model {model!r} "
            f"were logged deterministically (greedy, temperature 0: log-probability 0.0) and {counts['no_logprob']} "
            "without a log-probability; a candidate that answers differently has no logged support. Log answers "
            "sampled at temperature > 0 to estimate another policy")
    if counts["used"] == 0:
        raise AgentOPEError(f"none of the {counts['rewarded']} rewarded answers of model {model!r} could be "
                            f"re-tokenized to the length the model generated ({counts['not_retokenized']} excluded)")


def _excluded_text(counts: Mapping[str, int]) -> str:
    return (f"{counts.get('greedy', 0)} greedy, {counts.get('no_logprob', 0)} without log-probability, "
            f"{counts.get('not_retokenized', 0)} not re-tokenizable")


# ----- the estimate -----------------------------------------------------------------------------------
def _snips(table: pd.DataFrame, counts: dict[str, int], reward_range: tuple[float, float], confidence: float,
           clip: float | None, min_ess: float, min_coverage: float | None, n_bootstrap: int,
           seed: int) -> AgentOPEEstimate:
    """Self-normalized IS with a bootstrap over interactions; weights handled in log space (they overflow)."""
    raw_log_w = (table["candidate_logprob"] - table["logged_logprob"]).to_numpy(float)
    counts["clipped"] = int((raw_log_w > math.log(clip)).sum()) if clip is not None else 0
    log_w = np.minimum(raw_log_w, math.log(clip)) if clip is not None else raw_log_w
    finite = log_w[np.isfinite(log_w)]
    if finite.size == 0:
        raise AgentOPEError(f"the candidate gives probability 0 to every one of the {len(table)} usable logged "
                            "answers: no logged support for what it does")
    shift = float(finite.max())
    w = np.exp(log_w - shift)  # SNIPS and ESS ignore a common scale
    raw_shift = float(raw_log_w[np.isfinite(raw_log_w)].max())
    raw_w = np.exp(raw_log_w - raw_shift)  # coverage and IPS need the scale, and weights before any clip
    scale = math.exp(raw_shift) if raw_shift < 700.0 else math.inf
    r = table["reward"].to_numpy(float)
    value = float(np.sum(w * r) / np.sum(w))
    ess = float(np.sum(w) ** 2 / np.sum(w * w))
    logged_value = float(r.mean())
    table = table.assign(log_weight=log_w, weight=np.exp(log_w))
    clusters, index = np.unique(table["interaction_id"].to_numpy(), return_inverse=True)
    cw, cwr, cr, craw = (np.bincount(index, weights=x, minlength=clusters.size) for x in (w, w * r, r, raw_w))
    cn = np.bincount(index, minlength=clusters.size).astype(float)
    rng = np.random.default_rng(seed)
    boots, diffs, means = [], [], []
    for start in range(0, n_bootstrap, 200):
        m = rng.multinomial(clusters.size, np.full(clusters.size, 1.0 / clusters.size),
                            size=min(200, n_bootstrap - start)).astype(float)
        den = m @ cw
        est = np.divide(m @ cwr, den, out=np.full(len(m), np.nan), where=den > 0)
        boots.append(est)
        diffs.append(est - (m @ cr) / (m @ cn))
        means.append((m @ craw) / (m @ cn))
    boot, diff, mean_w = np.concatenate(boots), np.concatenate(diffs), np.concatenate(means) * scale
    alpha = (1.0 - confidence) / 2.0
    low, high = (float(q) for q in np.nanquantile(boot, [alpha, 1 - alpha]))
    d_low, d_high = (float(q) for q in np.nanquantile(diff, [alpha, 1 - alpha]))
    c_low, c_high = (float(q) for q in np.quantile(mean_w, [alpha, 1 - alpha]))
    coverage = float(raw_w.mean()) * scale
    ips = float(np.mean(raw_w * r)) * scale
    unseen = max(0.0, 1.0 - coverage)
    low_r, high_r = reward_range
    bounds = (min(max(ips + unseen * low_r, low_r), high_r), max(min(ips + unseen * high_r, high_r), low_r))
    details = {"ci_method": f"percentile bootstrap over {clusters.size} interactions ({n_bootstrap} resamples, "
                            f"seed {seed})",
               "difference": value - logged_value, "difference_ci_low": d_low, "difference_ci_high": d_high,
               "coverage": coverage, "coverage_ci_low": c_low, "coverage_ci_high": c_high, "ips": ips,
               "reward_range": list(reward_range), "unseen_bounds": list(bounds),
               "max_log_weight": float(finite.max()), "min_log_weight": float(log_w.min()),
               "max_weight_share": float(w.max() / w.sum()), "zero_weights": int((w == 0).sum()),
               "clip": clip, "bootstrap_std": float(np.nanstd(boot, ddof=1)),
               "undefined_resamples": int(np.isnan(boot).sum())}
    estimate = AgentOPEEstimate(value, low, high, confidence, ess, len(table), logged_value, counts, details,
                                table)
    if ess < min_ess:
        raise AgentOPEError(
            f"effective sample size {ess:.1f} of {len(table)} logged answers is below {min_ess:g}: the candidate "
            f"answers where the log has little support (the largest weight holds {details['max_weight_share']:.0%} "
            "of the total); log more answers, at a higher temperature, or evaluate a candidate closer to the "
            "logged policy", estimate)
    if min_coverage is not None and c_high < min_coverage:
        raise AgentOPEError(
            f"the log covers {coverage:.0%} [{c_low:.0%}, {c_high:.0%}] of the candidate's answers (mean importance "
            f"weight {coverage:.3f}; 1 when the log holds what the candidate does), below {min_coverage:.0%}: it "
            "answers in ways the logged policy rarely did, which self-normalized IS cannot score (its estimate "
            f"{value:.3f} speaks only for the answers the log shares). Whatever the unseen answers earn, the value "
            f"lies in [{bounds[0]:.3f}, {bounds[1]:.3f}]; log answers at a higher temperature or evaluate a "
            "candidate closer to the logged policy", estimate)
    return estimate


def _metrics(est: AgentOPEEstimate) -> dict[str, float]:
    return {"value": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high, "ess": est.ess,
            "behaviour_value": est.logged_value, "n": float(est.n),
            "difference_ci_low": float(est.details.get("difference_ci_low", float("nan"))),
            "excluded_greedy": float(est.counts.get("greedy", 0)),
            "excluded_no_logprob": float(est.counts.get("no_logprob", 0)),
            "excluded_not_retokenized": float(est.counts.get("not_retokenized", 0))}


__all__ = ["AgentOPEError", "AgentOPEEstimate", "check_agent_ope", "estimate_agent_from_log"]
