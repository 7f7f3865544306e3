"""Off-policy evaluation (OPE): the value of a target policy estimated from a behaviour policy's logs.

One-step (contextual bandit) estimators take the logged decisions as arrays: ``rewards`` (n,),
``actions`` (n,), ``propensities`` (n,) = behaviour probability of the logged action (what
serving logs), and ``target_probs`` (n, k) = the target policy's distribution in each logged
context: :func:`ips`, :func:`snips`, :func:`direct_method`, :func:`doubly_robust`
(:func:`evaluate_bandit` runs all four). Episodic estimators: per-decision weighted importance
sampling (:func:`per_decision_wis`) and fitted Q evaluation (:func:`fitted_q_evaluation`);
:func:`evaluate_episodic` runs both on a list of :class:`Episode`.

Inputs are checked before anything is computed and refused with :class:`OPEError` naming the
problem and the number of offending rows; rows are never dropped silently.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from statistics import NormalDist
from typing import Any

import numpy as np

from rlops_plugin.errors import RLOpsError

PROB_TOL = 1e-6
"""Tolerance on probability rows summing to one and on logged vs full-distribution propensities."""


class OPEError(RLOpsError, ValueError):
    """Logged data cannot support an off-policy estimate: the message names the problem and the row count."""


@dataclass(frozen=True)
class OPEEstimate:
    """A value estimate with its confidence interval and importance-weight diagnostics."""

    estimator: str
    """``"ips"``, ``"snips"``, ``"dm"``, ``"dr"``, ``"pdwis"`` or ``"fqe"``."""
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    ess: float
    """Effective sample size of the importance weights, (sum w)^2 / sum w^2; ``n`` for DM and FQE."""
    n: int
    """Decisions (bandit) or episodes (episodic)."""
    details: dict = field(default_factory=dict)
    """Estimator-specific facts: std error, CI method, max weight, clipped count, reward-model fit."""

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


# ----- validation --------------------------------------------------------------------------------

def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise OPEError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _array(name: str, values: Any, ndim: int) -> np.ndarray:
    """``values`` as float64 with ``ndim`` dimensions; None becomes NaN (and is refused later)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise OPEError(f"{name} is not numeric: {err}") from err
    if arr.ndim != ndim:
        raise OPEError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    return arr


def _same_length(**lengths: int | None) -> int:
    given = {k: v for k, v in lengths.items() if v is not None}
    if len(set(given.values())) > 1:
        raise OPEError(f"arrays have mismatched lengths: {given}")
    n = next(iter(given.values()))
    if n == 0:
        raise OPEError("no rows to evaluate: n == 0")
    return n


def _refuse(count: int, total: int, what: str, unit: str = "rows") -> None:
    if count:
        raise OPEError(f"{count} of {total} {unit} {what}")


def _check_finite(name: str, arr: np.ndarray) -> None:
    rows = ~np.isfinite(arr).reshape(len(arr), -1).all(axis=1)
    _refuse(int(rows.sum()), len(arr), f"have non-finite {name} (NaN/None/inf)")


def _check_propensities(p: np.ndarray, unit: str = "rows") -> None:
    _refuse(int(np.isnan(p).sum()), p.size, "have missing propensities (NaN/None)", unit)
    _refuse(int(((p <= 0) | (p > 1)).sum()), p.size, "have propensities outside (0, 1]", unit)


def _check_distributions(name: str, probs: np.ndarray) -> None:
    """Each row of ``probs`` (n, k) must be a probability distribution."""
    n = len(probs)
    _refuse(int((~np.isfinite(probs)).any(axis=1).sum()), n, f"have missing {name} (NaN/None/inf)")
    _refuse(int((probs < 0).any(axis=1).sum()), n, f"have negative {name}")
    bad_sum = np.abs(probs.sum(axis=1) - 1.0) > PROB_TOL
    _refuse(int(bad_sum.sum()), n, f"have {name} that do not sum to 1 (tolerance {PROB_TOL:g})")


def _check_actions(a: np.ndarray, n_actions: int) -> np.ndarray:
    bad = ~np.isfinite(a) | (a != np.round(a)) | (a < 0) | (a >= n_actions)
    _refuse(int(bad.sum()), a.size, f"have actions that are not integers in [0, {n_actions})")
    return a.astype(np.int64)


@dataclass(frozen=True)
class _BanditLog:
    rewards: np.ndarray
    actions: np.ndarray
    propensities: np.ndarray
    target_probs: np.ndarray

    @property
    def n(self) -> int:
        return self.rewards.size

    def target_logged(self) -> np.ndarray:
        return self.target_probs[np.arange(self.n), self.actions]


def _validate_bandit(rewards: Any, actions: Any, propensities: Any, target_probs: Any,
                     behavior_probs: Any = None) -> _BanditLog:
    """Shape, range and support checks shared by every one-step estimator."""
    r = _array("rewards", rewards, 1)
    p = _array("propensities", propensities, 1)
    pi = _array("target_probs", target_probs, 2)
    a = _array("actions", actions, 1)
    b = None if behavior_probs is None else _array("behavior_probs", behavior_probs, 2)
    _same_length(rewards=r.size, actions=a.size, propensities=p.size,
                 target_probs=len(pi), behavior_probs=None if b is None else len(b))
    if pi.shape[1] == 0 or (b is not None and b.shape[1] != pi.shape[1]):
        raise OPEError(f"target_probs and behavior_probs must have the same k >= 1 actions, got {pi.shape}"
                       f"{'' if b is None else f' and {b.shape}'}")
    a = _check_actions(a, pi.shape[1])
    _check_finite("rewards", r)
    _check_propensities(p)
    _check_distributions("target_probs", pi)
    if b is not None:
        _check_distributions("behavior_probs", b)
        off = np.abs(b[np.arange(a.size), a] - p) > PROB_TOL
        _refuse(int(off.sum()), a.size, "have propensities that differ from behavior_probs at the logged action")
        unsupported = ((pi > 0) & (b == 0)).any(axis=1)
        _refuse(int(unsupported.sum()), a.size,
                "violate support: the target policy gives probability > 0 to an action the behaviour policy "
                "never takes")
    return _BanditLog(r, a, p, pi)


# ----- one-step estimators ------------------------------------------------------------------------

def _weights(log: _BanditLog, clip: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    w = log.target_logged() / log.propensities
    info: dict[str, Any] = {"max_weight": float(w.max()), "clip": clip, "clipped": 0}
    if clip is not None:
        if not clip > 0:
            raise OPEError(f"clip must be > 0, got {clip}")
        info["clipped"] = int((w > clip).sum())
        w = np.minimum(w, clip)
    return w, info


def _ess(w: np.ndarray) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 (0 when every weight is 0)."""
    sq = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sq if sq > 0 else 0.0


def _normal_estimate(name: str, value: float, terms: np.ndarray, confidence: float, ess: float,
                     details: dict[str, Any]) -> OPEEstimate:
    """Normal-approximation interval value +- z * sd(terms) / sqrt(n) (infinite for n == 1)."""
    n = terms.size
    se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    half = _z(confidence) * se
    return OPEEstimate(name, float(value), float(value - half), float(value + half), confidence, float(ess), n,
                       {"ci_method": "normal", **details, "std_error": se})


def ips(rewards: Any, actions: Any, propensities: Any, target_probs: Any, behavior_probs: Any = None,
        confidence: float = 0.95, clip: float | None = None) -> OPEEstimate:
    """Inverse propensity scoring: mean of w_i r_i with w = pi(a|x) / mu(a|x); unbiased without clipping.

    CI: normal approximation from the per-sample terms w_i r_i. ``clip`` caps weights (biased, lower variance).
    """
    log = _validate_bandit(rewards, actions, propensities, target_probs, behavior_probs)
    w, info = _weights(log, clip)
    terms = w * log.rewards
    return _normal_estimate("ips", terms.mean(), terms, confidence, _ess(w), info)


def snips(rewards: Any, actions: Any, propensities: Any, target_probs: Any, behavior_probs: Any = None,
          confidence: float = 0.95, clip: float | None = None) -> OPEEstimate:
    """Self-normalized IPS: sum(w r) / sum(w); slightly biased, invariant to weight scale, lower variance.

    CI: delta method, normal approximation from the linearized terms w_i (r_i - V) / mean(w).
    """
    log = _validate_bandit(rewards, actions, propensities, target_probs, behavior_probs)
    w, info = _weights(log, clip)
    if w.sum() <= 0:
        raise OPEError(f"{log.n} of {log.n} rows have importance weight 0: the target policy never takes a logged "
                       "action, so SNIPS is undefined")
    value = float(np.sum(w * log.rewards) / np.sum(w))
    terms = w * (log.rewards - value) / w.mean()
    return _normal_estimate("snips", value, terms, confidence, _ess(w), {**info, "ci_method": "delta method"})


def fit_reward_model(contexts: Any, actions: Any, rewards: Any, n_actions: int, l2: float = 1.0, folds: int = 1,
                     seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-action ridge regression of reward on contexts (closed form); returns q_hat (n, k) and fit info.

    With ``folds >= 2`` each row is predicted by models fitted on the other folds (cross-fitting),
    which keeps DR free of own-observation overfitting bias. The intercept is not penalized; an
    action with no training rows in a fold is predicted by that fold's mean reward.
    """
    x = _array("contexts", contexts, 2)
    r, a = _array("rewards", rewards, 1), _array("actions", actions, 1)
    _same_length(contexts=len(x), actions=a.size, rewards=r.size)
    _check_finite("contexts", x)
    _check_finite("rewards", r)
    a = _check_actions(a, n_actions)
    if folds < 1 or folds > r.size or l2 < 0:
        raise OPEError(f"need 1 <= folds <= n and l2 >= 0, got folds={folds}, l2={l2}, n={r.size}")
    fold = np.empty(r.size, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(r.size)] = np.arange(r.size) % folds
    q_hat = np.empty((r.size, n_actions))
    empty = 0
    for f in range(folds):
        train = fold != f if folds > 1 else np.ones(r.size, dtype=bool)
        test = fold == f
        for k in range(n_actions):
            rows = train & (a == k)
            empty += int(not rows.any())
            q_hat[test, k] = _ridge_predict(x[rows], r[rows], x[test], l2, fallback=float(r[train].mean()))
    resid = r - q_hat[np.arange(r.size), a]
    return q_hat, {"reward_model": "ridge", "l2": l2, "folds": folds, "empty_action_fits": empty,
                   "reward_model_rmse": float(np.sqrt(np.mean(resid**2)))}


def _ridge_predict(x: np.ndarray, y: np.ndarray, x_new: np.ndarray, l2: float, fallback: float) -> np.ndarray:
    if y.size == 0:
        return np.full(len(x_new), fallback)
    mx, my = x.mean(axis=0), y.mean()
    xc = x - mx
    gram = xc.T @ xc + l2 * np.eye(x.shape[1])
    beta = np.linalg.lstsq(gram, xc.T @ (y - my), rcond=None)[0]
    return my + (x_new - mx) @ beta


def _reward_model(log: _BanditLog, q_hat: Any, contexts: Any, folds: int, l2: float,
                  seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    if q_hat is not None:
        q = _array("q_hat", q_hat, 2)
        if q.shape != log.target_probs.shape:
            raise OPEError(f"q_hat must have shape {log.target_probs.shape} like target_probs, got {q.shape}")
        _check_finite("q_hat", q)
        return q, {"reward_model": "given"}
    if contexts is None:
        raise OPEError("the direct method and doubly robust need q_hat (n, k) or contexts (n, d) to fit a reward model")
    return fit_reward_model(contexts, log.actions, log.rewards, log.target_probs.shape[1], l2, folds, seed)


def direct_method(rewards: Any, actions: Any, propensities: Any, target_probs: Any, q_hat: Any = None,
                  contexts: Any = None, behavior_probs: Any = None, confidence: float = 0.95, l2: float = 1.0,
                  seed: int = 0) -> OPEEstimate:
    """Direct method: mean over contexts of sum_a pi(a|x) q_hat(x, a); low variance, biased if q_hat is wrong.

    ``q_hat`` is used as given, else a ridge model is fitted on all rows (:func:`fit_reward_model`).
    CI: normal approximation from the per-context terms; it ignores the reward model's own error.
    """
    log = _validate_bandit(rewards, actions, propensities, target_probs, behavior_probs)
    q, info = _reward_model(log, q_hat, contexts, 1, l2, seed)
    terms = np.sum(log.target_probs * q, axis=1)
    return _normal_estimate("dm", terms.mean(), terms, confidence, float(log.n), info)


def doubly_robust(rewards: Any, actions: Any, propensities: Any, target_probs: Any, q_hat: Any = None,
                  contexts: Any = None, behavior_probs: Any = None, confidence: float = 0.95,
                  clip: float | None = None, l2: float = 1.0, folds: int = 2, seed: int = 0) -> OPEEstimate:
    """Doubly robust: DM plus the importance-weighted residual w (r - q_hat(x, a)); unbiased if propensities are right.

    Without ``q_hat`` the ridge reward model is cross-fitted over ``folds`` folds. CI: normal
    approximation from the per-sample terms sum_a pi q_hat + w (r - q_hat(x, a)).
    """
    log = _validate_bandit(rewards, actions, propensities, target_probs, behavior_probs)
    w, info = _weights(log, clip)
    q, fit = _reward_model(log, q_hat, contexts, folds, l2, seed)
    residual = log.rewards - q[np.arange(log.n), log.actions]
    terms = np.sum(log.target_probs * q, axis=1) + w * residual
    return _normal_estimate("dr", terms.mean(), terms, confidence, _ess(w), {**info, **fit})


def evaluate_bandit(rewards: Any, actions: Any, propensities: Any, target_probs: Any, contexts: Any = None,
                    behavior_probs: Any = None, q_hat: Any = None, confidence: float = 0.95,
                    clip: float | None = None, l2: float = 1.0, seed: int = 0) -> dict[str, OPEEstimate]:
    """IPS, SNIPS, DM and DR on the same logs (DM fits in-sample, DR cross-fits, unless ``q_hat`` is given).

    Needs ``contexts`` or ``q_hat`` for DM and DR (refused otherwise); call :func:`ips`/:func:`snips` without them.
    """
    common = dict(rewards=rewards, actions=actions, propensities=propensities, target_probs=target_probs,
                  behavior_probs=behavior_probs, confidence=confidence)
    model = dict(q_hat=q_hat, contexts=contexts, l2=l2, seed=seed)
    return {"ips": ips(**common, clip=clip), "snips": snips(**common, clip=clip),
            "dm": direct_method(**common, **model), "dr": doubly_robust(**common, **model, clip=clip)}


# ----- episodic estimators ------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Episode:
    """One logged episode; a plain dict with these keys is accepted too.

    PDWIS needs the first three fields; FQE also needs ``obs``, ``actions`` and ``target_probs``.
    """

    rewards: Any
    """(T,) reward after each step."""
    propensities: Any
    """(T,) behaviour probability of each logged action."""
    target_action_probs: Any
    """(T,) target policy's probability of each logged action."""
    obs: Any = None
    """(T + 1, d) observations, the final one included (FQE bootstraps from it unless ``terminated``)."""
    actions: Any = None
    """(T,) logged discrete actions."""
    target_probs: Any = None
    """(T + 1, k) target policy's distribution at every observation in ``obs``."""
    terminated: bool = True
    """False when the episode was cut by a time limit (truncated): FQE then bootstraps past its end."""


def _as_episode(item: Any, i: int) -> Episode:
    if isinstance(item, Episode):
        return item
    if isinstance(item, Mapping):
        unknown = set(item) - {f.name for f in fields(Episode)}
        if unknown:
            raise OPEError(f"episode {i}: unknown keys {sorted(unknown)}")
        return Episode(**item)
    raise OPEError(f"episode {i} is a {type(item).__name__}, expected an Episode or a dict")


def _episode_arrays(episodes: Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Validated (rewards, propensities, target_action_probs) per episode."""
    eps = [_as_episode(e, i) for i, e in enumerate(episodes)]
    if not eps:
        raise OPEError("no episodes to evaluate: n == 0")
    arrays = [(_array("rewards", e.rewards, 1), _array("propensities", e.propensities, 1),
               _array("target_action_probs", e.target_action_probs, 1)) for e in eps]
    mismatched = [i for i, (r, p, q) in enumerate(arrays) if not r.size == p.size == q.size]
    if mismatched:
        i = mismatched[0]
        raise OPEError(f"{len(mismatched)} of {len(eps)} episodes have mismatched lengths of rewards/propensities/"
                       f"target_action_probs (first: episode {i}: {[a.size for a in arrays[i]]})")
    _refuse(sum(r.size == 0 for r, _, _ in arrays), len(eps), "have no steps", "episodes")
    r, p, q = (np.concatenate(col) for col in zip(*arrays, strict=True))
    _check_finite("rewards", r)
    _check_propensities(p, "steps")
    _refuse(int((~np.isfinite(q) | (q < 0) | (q > 1)).sum()), q.size,
            "have target_action_probs missing (NaN/None) or outside [0, 1]", "steps")
    return arrays


def _pdwis_value(counts: np.ndarray, wr: np.ndarray, w: np.ndarray, disc: np.ndarray) -> np.ndarray:
    """WPDIS for each row of episode multiplicities ``counts`` (B, N)."""
    num, den = counts @ wr, counts @ w
    ratio = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return ratio @ disc


def per_decision_wis(episodes: Sequence[Episode | Mapping[str, Any]], gamma: float, confidence: float = 0.95,
                     n_bootstrap: int = 1000, seed: int = 0) -> OPEEstimate:
    """Per-decision weighted IS (Precup 2000; Thomas 2015): sum_t gamma^t sum_i rho_it r_it / sum_i rho_it.

    rho_it is the cumulative ratio prod_{s<=t} pi/mu of episode i; an episode that has ended keeps its
    last weight and earns 0 (absorbing state), so episodes of unequal length stay consistent.
    CI: percentile bootstrap over episodes (``n_bootstrap`` resamples, fixed ``seed``).
    """
    if not 0.0 <= gamma <= 1.0 or n_bootstrap < 2:
        raise OPEError(f"need gamma in [0, 1] and n_bootstrap >= 2, got gamma={gamma}, n_bootstrap={n_bootstrap}")
    _z(confidence)
    arrays = _episode_arrays(episodes)
    n, horizon = len(arrays), max(r.size for r, _, _ in arrays)
    w = np.empty((n, horizon))
    wr = np.zeros((n, horizon))
    for i, (r, p, q) in enumerate(arrays):
        rho = np.cumprod(q / p)
        w[i, : r.size], w[i, r.size:] = rho, rho[-1]
        wr[i, : r.size] = rho * r
    disc = gamma ** np.arange(horizon)
    value = float(_pdwis_value(np.ones((1, n)), wr, w, disc)[0])
    rng = np.random.default_rng(seed)
    boots = np.concatenate([_pdwis_value(rng.multinomial(n, np.full(n, 1.0 / n), size=min(100, n_bootstrap - b)),
                                         wr, w, disc) for b in range(0, n_bootstrap, 100)])
    alpha = (1.0 - confidence) / 2.0
    step_ess = w.sum(axis=0) ** 2 / np.maximum((w * w).sum(axis=0), np.finfo(float).tiny)
    details = {"ci_method": f"percentile bootstrap over episodes ({n_bootstrap} resamples, seed {seed})",
               "gamma": gamma, "horizon": horizon, "steps": int(sum(r.size for r, _, _ in arrays)),
               "max_weight": float(w.max()), "min_step_ess": float(step_ess.min()),
               "zero_weight_steps": int((w.sum(axis=0) == 0).sum()), "bootstrap_std": float(boots.std(ddof=1))}
    return OPEEstimate("pdwis", value, float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha)),
                       confidence, _ess(w[:, -1]), n, details)


@dataclass(frozen=True)
class FQEConfig:
    """Fitted Q evaluation settings; the defaults fit 50k CartPole transitions in a few CPU seconds."""

    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the Q-network MLP (ReLU)."""
    iterations: int = 600
    """Fitted-Q iterations: the regression target network is refreshed this many times."""
    steps_per_iteration: int = 3
    """Adam minibatch steps per iteration."""
    batch_size: int = 512
    lr: float = 1e-3
    seed: int = 0
    """Seeds the network initialization, minibatch sampling and bootstrap refits."""
    num_threads: int | None = 1
    """torch intra-op threads during the fit (restored after); tiny networks run fastest on one. None: leave as is."""
    bootstrap_refits: int = 0
    """When > 0 (``episode_ids`` needed): refits on episodes resampled with replacement; their spread widens the CI."""


def _validate_fqe(obs: Any, actions: Any, rewards: Any, next_obs: Any, dones: Any, target_probs_next: Any,
                  initial_obs: Any, initial_target_probs: Any, gamma: float) -> dict[str, np.ndarray]:
    if not 0.0 <= gamma < 1.0:
        raise OPEError(f"FQE needs gamma in [0, 1), got {gamma}")
    data = {"obs": _array("obs", obs, 2), "actions": _array("actions", actions, 1),
            "rewards": _array("rewards", rewards, 1), "next_obs": _array("next_obs", next_obs, 2),
            "dones": _array("dones", dones, 1),
            "target_probs_next": _array("target_probs_next", target_probs_next, 2),
            "initial_obs": _array("initial_obs", initial_obs, 2),
            "initial_target_probs": _array("initial_target_probs", initial_target_probs, 2)}
    _same_length(obs=len(data["obs"]), actions=data["actions"].size, rewards=data["rewards"].size,
                 next_obs=len(data["next_obs"]), dones=data["dones"].size,
                 target_probs_next=len(data["target_probs_next"]))
    _same_length(initial_obs=len(data["initial_obs"]), initial_target_probs=len(data["initial_target_probs"]))
    k, d = data["target_probs_next"].shape[1], data["obs"].shape[1]
    if data["initial_target_probs"].shape[1] != k or {data["next_obs"].shape[1], data["initial_obs"].shape[1]} != {d}:
        raise OPEError("obs/next_obs/initial_obs must share d and target_probs_next/initial_target_probs must share k")
    data["actions"] = _check_actions(data["actions"], k)
    for name in ("obs", "rewards", "next_obs", "initial_obs"):
        _check_finite(name, data[name])
    _refuse(int(((data["dones"] != 0) & (data["dones"] != 1)).sum()), data["dones"].size, "have dones not 0/1")
    _check_distributions("target_probs_next", data["target_probs_next"])
    _check_distributions("initial_target_probs", data["initial_target_probs"])
    return data


def _fit_q(data: dict[str, np.ndarray], gamma: float, cfg: FQEConfig, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`_fit_q_inner` with ``cfg.num_threads`` torch threads (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _fit_q_inner(data, gamma, cfg, seed)
    finally:
        torch.set_num_threads(before)


def _fit_q_inner(data: dict[str, np.ndarray], gamma: float, cfg: FQEConfig, seed: int) -> tuple[np.ndarray, dict]:
    """Iterated regression of Q(s, a) onto r + gamma (1 - done) sum_a' pi(a'|s') Q_old(s', a')."""
    import torch
    from torch import nn

    t = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in data.items() if k != "actions"}
    acts = torch.as_tensor(data["actions"]).unsqueeze(1)
    both = torch.cat([t["obs"], t["next_obs"]])
    mean, std = both.mean(0), both.std(0).clamp_min(1e-6)
    scale = max(float(np.abs(data["rewards"]).max()), 1e-8) / (1.0 - min(gamma, 0.99))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sizes = [data["obs"].shape[1], *cfg.hidden]
        layers = [m for i, o in zip(sizes, sizes[1:], strict=False) for m in (nn.Linear(i, o), nn.ReLU())]
        net = nn.Sequential(*layers, nn.Linear(sizes[-1], data["target_probs_next"].shape[1]))
    with torch.no_grad():  # start at "the mean reward forever": fewer iterations to propagate long horizons
        net[-1].bias.fill_(float(data["rewards"].mean()) / (1.0 - gamma) / scale)
    target = copy.deepcopy(net)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    obs, nxt = (t["obs"] - mean) / std, (t["next_obs"] - mean) / std
    r, cont, pi_next = t["rewards"] / scale, gamma * (1.0 - t["dones"]), t["target_probs_next"]
    n = obs.shape[0]
    for _ in range(cfg.iterations):
        target.load_state_dict(net.state_dict())
        for _ in range(cfg.steps_per_iteration):
            idx = torch.randint(n, (min(cfg.batch_size, n),), generator=gen)
            with torch.no_grad():
                y = r[idx] + cont[idx] * (target(nxt[idx]) * pi_next[idx]).sum(1)
            loss = torch.mean((net(obs[idx]).gather(1, acts[idx]).squeeze(1) - y) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        y = r + cont * (net(nxt) * pi_next).sum(1)
        resid = (net(obs).gather(1, acts).squeeze(1) - y) * scale
        v0 = (net((t["initial_obs"] - mean) / std) * t["initial_target_probs"]).sum(1) * scale
    info = {"bellman_rmse": float(resid.pow(2).mean().sqrt()), "q_scale": scale}
    return v0.double().numpy(), info


def fitted_q_evaluation(obs: Any, actions: Any, rewards: Any, next_obs: Any, dones: Any, target_probs_next: Any,
                        initial_obs: Any, initial_target_probs: Any, gamma: float, confidence: float = 0.95,
                        config: FQEConfig | None = None, episode_ids: Any = None) -> OPEEstimate:
    """Fitted Q evaluation with a small torch MLP; value = mean over initial states of sum_a pi(a|s0) Q(s0, a).

    ``dones`` marks terminations only (a time-limit truncation is not done). Deterministic given
    ``config.seed``. CI: normal interval over the initial-state values, conditional on the fitted Q;
    with ``config.bootstrap_refits`` > 0 and ``episode_ids``, the variance of refits on resampled
    episodes is added (see details["ci_method"]).
    """
    cfg = config or FQEConfig()
    z = _z(confidence)
    data = _validate_fqe(obs, actions, rewards, next_obs, dones, target_probs_next, initial_obs,
                         initial_target_probs, gamma)
    if cfg.bootstrap_refits > 0:
        if episode_ids is None:
            raise OPEError("bootstrap_refits needs episode_ids (one per transition) to resample whole episodes")
        _same_length(episode_ids=np.asarray(episode_ids).size, transitions=data["rewards"].size)
    v0, info = _fit_q(data, gamma, cfg, cfg.seed)
    value, m = float(v0.mean()), v0.size
    se = float(v0.std(ddof=1)) / math.sqrt(m) if m > 1 else 0.0
    info.update(initial_state_std_error=se,
                ci_method="normal over initial-state values, conditional on the fitted Q (Q-fitting error excluded)")
    var = se**2
    if cfg.bootstrap_refits > 0:
        refits = _refit_values(data, gamma, cfg, np.asarray(episode_ids))
        refit_std = float(np.std(refits, ddof=1)) if refits.size > 1 else 0.0
        var += refit_std**2
        info.update(refit_values=[float(v) for v in refits], refit_std=refit_std,
                    ci_method=f"normal; initial-state variance plus the variance of {refits.size} refits on "
                              "episodes resampled with replacement")
    half = z * math.sqrt(var)
    return OPEEstimate("fqe", value, value - half, value + half, confidence, float(m), m,
                       {**info, "transitions": int(data["rewards"].size), "gamma": gamma,
                        "iterations": cfg.iterations, "hidden": list(cfg.hidden)})


def _refit_values(data: dict[str, np.ndarray], gamma: float, cfg: FQEConfig, ids: np.ndarray) -> np.ndarray:
    """FQE values refitted on episodes resampled with replacement (initial states kept)."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    members = [np.flatnonzero(inverse == j) for j in range(uniq.size)]
    rng = np.random.default_rng(cfg.seed)
    values = []
    for b in range(cfg.bootstrap_refits):
        rows = np.concatenate([members[j] for j in rng.integers(0, uniq.size, uniq.size)])
        part = {k: (v[rows] if k not in ("initial_obs", "initial_target_probs") else v) for k, v in data.items()}
        values.append(float(_fit_q(part, gamma, cfg, cfg.seed + b + 1)[0].mean()))
    return np.asarray(values)


def episodes_to_transitions(episodes: Sequence[Episode | Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Flatten episodes with ``obs``/``actions``/``target_probs`` into :func:`fitted_q_evaluation` arguments."""
    eps = [_as_episode(e, i) for i, e in enumerate(episodes)]
    if not eps:
        raise OPEError("no episodes to evaluate: n == 0")
    missing = sum(e.obs is None or e.actions is None or e.target_probs is None for e in eps)
    _refuse(missing, len(eps), "lack obs, actions or target_probs, which FQE needs", "episodes")
    keys = ("obs", "actions", "rewards", "next_obs", "dones", "target_probs_next", "episode_ids", "logged_target")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    bad = 0
    for i, e in enumerate(eps):
        o, a = _array("obs", e.obs, 2), _array("actions", e.actions, 1)
        pi, r = _array("target_probs", e.target_probs, 2), _array("rewards", e.rewards, 1)
        if not (len(o) == len(pi) == r.size + 1 == a.size + 1):
            bad += 1
            continue
        done = np.zeros(r.size)
        done[-1] = float(bool(e.terminated))
        logged = _array("target_action_probs", e.target_action_probs, 1)
        for key, val in zip(keys, (o[:-1], a, r, o[1:], done, pi[1:], np.full(r.size, i), logged), strict=True):
            parts[key].append(val)
    _refuse(bad, len(eps), "need obs and target_probs with T + 1 rows for T rewards and actions", "episodes")
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["initial_obs"] = np.stack([_array("obs", e.obs, 2)[0] for e in eps])
    out["initial_target_probs"] = np.stack([_array("target_probs", e.target_probs, 2)[0] for e in eps])
    logged = out.pop("logged_target")
    first = np.concatenate([_array("target_probs", e.target_probs, 2)[:-1] for e in eps])
    acts = _check_actions(out["actions"], first.shape[1])
    off = np.abs(first[np.arange(acts.size), acts] - logged) > PROB_TOL
    _refuse(int(off.sum()), acts.size, "have target_action_probs that differ from target_probs at the logged action",
            "steps")
    return out


def evaluate_episodic(episodes: Sequence[Episode | Mapping[str, Any]], gamma: float, confidence: float = 0.95,
                      n_bootstrap: int = 1000, seed: int = 0,
                      fqe_config: FQEConfig | None = None) -> dict[str, OPEEstimate]:
    """PDWIS and FQE on the same episodes (FQE needs each episode's obs, actions and target_probs)."""
    pdwis = per_decision_wis(episodes, gamma, confidence, n_bootstrap, seed)
    tr = episodes_to_transitions(episodes)
    ids = tr.pop("episode_ids")
    return {"pdwis": pdwis, "fqe": fitted_q_evaluation(**tr, gamma=gamma, confidence=confidence, config=fqe_config,
                                                       episode_ids=ids)}
