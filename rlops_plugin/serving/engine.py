"""The decision engine: champion/challenger, exploration, mask, shield, exact propensities.

Pure computation with no I/O: it turns a validated request into a :class:`DecisionBatch`
ready to be logged. The HTTP model (``PolicyModel``) wraps it with parsing and durable logging.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlops_plugin.bundle.policy import Policy, sample_categorical
from rlops_plugin.bundle.spaces import check_same_space
from rlops_plugin.errors import BrokenPolicyError, ConfigError, InvalidObservationError
from rlops_plugin.experience.records import CHALLENGER, DecisionBatch, new_batch_id
from rlops_plugin.flavor.model import LoadedModel
from rlops_plugin.serving.exploration import (
    ExplorationConfig,
    executed_distribution,
    executed_distribution_row,
    sample_row,
)
from rlops_plugin.serving.finite import FallbackLog, check_policy, check_safe_action, nonfinite_rows
from rlops_plugin.serving.guards import ask_shield, shield_active, shield_discrete
from rlops_plugin.serving.requests import DecisionRequest, parse_v1, parse_v2
from rlops_plugin.serving.routing import RoutingConfig, challenger_rows


@dataclass
class Decisions:
    """A logged batch plus what the client gets back."""

    batch: DecisionBatch
    decision_ids: list[str]

    def response_rows(self) -> list[dict[str, Any]]:
        """One dict per decision: action, propensity, decision id, policy version, decided by."""
        b = self.batch
        actions = b.actions.tolist()
        props = b.propensities.tolist()
        if np.isnan(b.propensities).any():
            props = [None if p != p else p for p in props]
        ids = self.decision_ids
        fallbacks = b.extra.get("fallbacks")
        if fallbacks:
            rows = self._rows(actions, props, ids)
            for f in fallbacks:
                rows[f["i"]]["fallback"] = f["to"]
            return rows
        return self._rows(actions, props, ids)

    def _rows(self, actions: list[Any], props: list[Any], ids: list[str]) -> list[dict[str, Any]]:
        b = self.batch
        if not b.decided_by.any():
            version = b.policies[0]
            return [{"action": a, "propensity": p, "decision_id": d, "policy_version": version,
                     "decided_by": "champion"} for a, p, d in zip(actions, props, ids, strict=True)]
        roles = ("champion", "challenger")
        return [{"action": a, "propensity": p, "decision_id": d, "policy_version": b.policies[k],
                 "decided_by": roles[k]}
                for a, p, d, k in zip(actions, props, ids, b.decided_by.tolist(), strict=True)]


def _inference_fn(policy: Policy) -> Any:
    """The network's fast inference path when it offers one (``inference_fn``), else its forward."""
    network = policy.network
    return network.inference_fn() if hasattr(network, "inference_fn") else network


class DecisionEngine:
    """Decides actions for one deployment (champion, optional challenger)."""

    def __init__(self, model_name: str, champion: LoadedModel, challenger: LoadedModel | None = None,
                 exploration: ExplorationConfig | None = None, routing: RoutingConfig | None = None,
                 seed: int | None = None) -> None:
        self.model_name = model_name
        self.champion = champion
        self.challenger = challenger
        self.exploration = exploration or ExplorationConfig()
        self.routing = routing or RoutingConfig()
        self.rng = np.random.default_rng(seed)
        policy = champion.bundle.policy
        self.discrete = policy.discrete
        self.obs_dim = policy.obs_dim
        self.n_actions = policy.n_actions if self.discrete else None
        if self.routing.mode != "off" and challenger is None:
            raise ConfigError(f"routing mode {self.routing.mode!r} needs a challenger model")
        if challenger is not None:
            other = challenger.bundle.policy
            check_same_space(policy.observation_space, other.observation_space, "champion and challenger observations")
            check_same_space(policy.action_space, other.action_space, "champion and challenger actions")
        if not self.discrete and self.exploration.mode == "epsilon":
            raise ConfigError("epsilon exploration needs a Discrete action space; use greedy or softmax for Box")
        check_safe_action(self.exploration.safe_action, policy.action_space)
        check_policy(policy, "champion", champion.policy_version)
        if challenger is not None:
            check_policy(challenger.bundle.policy, "challenger", challenger.policy_version)
        self.fallbacks = FallbackLog(model_name)
        self.use_shield = shield_active()
        self._policies = [champion.policy_version] + ([challenger.policy_version] if challenger else [])
        self._champion_fn = _inference_fn(champion.bundle.policy)
        self._challenger_fn = _inference_fn(challenger.bundle.policy) if challenger else None
        self._exploration_json = self.exploration.to_dict()

    def policies(self) -> list[str]:
        """Policy versions in role order (champion, challenger)."""
        return list(self._policies)

    def parse_v1(self, body: Any, max_batch: int) -> DecisionRequest:
        """Observations (and masks, episode ids, routing keys) from a v1 body, checked against the policy."""
        return parse_v1(body, self.obs_dim, self.n_actions, max_batch)

    def parse_v2(self, request: Any, max_batch: int) -> DecisionRequest:
        """The same from a v2 ``InferRequest``."""
        return parse_v2(request, self.obs_dim, self.n_actions, max_batch)

    def decide(self, request: DecisionRequest) -> Decisions:
        """Choose, log-ready, the actions for every observation in ``request``."""
        n = request.n
        if request.masks is not None and not self.discrete:
            raise InvalidObservationError("mask: masks apply to Discrete action spaces only")
        roles = np.zeros(n, dtype=np.uint8)
        if self.challenger is not None:
            roles[challenger_rows(self.routing, n, request.routing_keys, self.rng)] = CHALLENGER
        obs_t = torch.from_numpy(request.obs)
        contexts = self._contexts(request, roles)
        extra: dict[str, Any] = {"exploration": self._exploration_json, "routing": self.routing.mode}
        for key, values in (("episode_ids", request.episode_ids), ("steps", request.steps),
                            ("routing_keys", request.routing_keys)):
            if values is not None:
                extra[key] = values
        if request.masks is not None:
            extra["masked"] = True
        batch_id = new_batch_id()
        shadow_probs = None
        fallbacks: list[dict[str, Any]] = []
        with torch.inference_mode():
            if self.discrete:
                logits = self._champion_fn(obs_t).numpy().astype(np.float64)
                if roles.any():
                    rows = np.flatnonzero(roles == CHALLENGER)
                    logits[rows] = self._challenger_fn(obs_t[rows]).numpy()
                if n == 1 and not self.use_shield and all(map(math.isfinite, first := logits[0].tolist())):
                    mask = None if request.masks is None else request.masks[0].tolist()
                    row = executed_distribution_row(first, self.exploration, mask)
                    action = sample_row(row, float(self.rng.random()))
                    actions = np.array([action], dtype=np.int64)
                    propensities = np.array([row[action]])
                    probs = np.array([row])
                    vetoes = []
                else:
                    logits, safe_rows, fallbacks = self._fall_back(obs_t, roles, logits)
                    if fallbacks and self.use_shield:
                        contexts = self._contexts(request, roles)
                    probs = executed_distribution(logits, self.exploration, request.masks)
                    if safe_rows.any():
                        probs = self._safe_distribution(probs, safe_rows, request.masks)
                    actions, propensities, probs, vetoes = self._sample_discrete(request.obs, probs, contexts)
                if self.routing.mode == "shadow":
                    shadow_logits = self._challenger_fn(obs_t).numpy().astype(np.float64)
                    broken = nonfinite_rows(shadow_logits)
                    shadow_logits[broken] = 0.0
                    shadow_probs = executed_distribution(shadow_logits, self.exploration, request.masks)
                    if broken.any():  # logged as unknown, never as a made-up distribution
                        shadow_probs[broken] = np.nan
                        extra["shadow_nonfinite"] = np.flatnonzero(broken).tolist()
                        self.fallbacks.record([{"from": "shadow", "to": "none"}] * int(broken.sum()))
            else:
                actions, propensities, vetoes, fallbacks = self._decide_box(obs_t, roles, request.obs, contexts)
                probs = None
        if vetoes:
            extra["vetoes"] = vetoes
        if fallbacks:
            extra["fallbacks"] = fallbacks
            self.fallbacks.record(fallbacks)
        batch = DecisionBatch(
            batch_id=batch_id, ts=time.time(), model=self.model_name, obs=request.obs, actions=actions,
            propensities=propensities, probs=probs, decided_by=roles, policies=self._policies, extra=extra,
            shadow_policy=self.challenger.policy_version if shadow_probs is not None else None,
            shadow_probs=shadow_probs,
        )
        return Decisions(batch, batch.decision_ids())

    def _fall_back(self, obs_t: torch.Tensor, roles: np.ndarray, *outputs: np.ndarray
                   ) -> tuple[Any, np.ndarray, list[dict[str, Any]]]:
        """Rows whose outputs are not finite: a challenger's go to the champion (``roles`` updated in place),
        the champion's to the safe action. Returns the repaired outputs (broken rows zeroed), the rows the safe
        action decides and the fallbacks to flag; raises ``BrokenPolicyError`` when no safe action is declared."""
        bad = nonfinite_rows(*outputs)
        if not bad.any():
            return (outputs[0] if len(outputs) == 1 else outputs), bad, []
        outputs = tuple(o.copy() for o in outputs)
        original = roles.copy()
        moved = np.flatnonzero(bad & (roles == CHALLENGER))
        if moved.size:
            champion = self._champion_fn(obs_t[torch.from_numpy(moved)])
            for out, value in zip(outputs, champion if isinstance(champion, tuple) else (champion,), strict=True):
                out[moved] = value.numpy() if hasattr(value, "numpy") else value
            roles[moved] = 0
        still = nonfinite_rows(*outputs)
        names = ("champion", "challenger")
        fallbacks = [{"i": int(i), "from": "challenger", "to": "champion"} for i in moved if not still[i]]
        if still.any():
            rows = np.flatnonzero(still)
            if self.exploration.safe_action is None:
                self.fallbacks.record([{"from": names[int(original[i])], "to": "refused"} for i in rows])
                raise BrokenPolicyError(
                    f"the champion's outputs are not finite (NaN or inf) for {rows.size} of {len(still)} observations "
                    f"(instances {rows[:5].tolist()}) and this deployment declares no safe_action")
            for out in outputs:
                out[still] = 0.0
            fallbacks += [{"i": int(i), "from": names[int(original[i])], "to": "safe_action"} for i in rows]
        return (outputs[0] if len(outputs) == 1 else outputs), still, fallbacks

    def _safe_distribution(self, probs: np.ndarray, rows: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        """``probs`` with the safe action certain on ``rows`` (propensity 1: the fallback is deterministic)."""
        safe = int(self.exploration.safe_action)  # type: ignore[arg-type]
        if masks is not None and not masks[rows, safe].all():
            raise BrokenPolicyError(f"the champion's outputs are not finite and the mask forbids safe_action {safe}")
        probs = probs.copy()
        probs[rows] = 0.0
        probs[rows, safe] = 1.0
        return probs

    def _contexts(self, request: DecisionRequest, roles: np.ndarray) -> list[dict[str, Any]]:
        if not self.use_shield:
            return []
        versions = self.policies()
        return [{"model": self.model_name, "policy_version": versions[int(roles[i])],
                 "request": (request.contexts[i] if request.contexts else {})} for i in range(request.n)]

    def _sample_discrete(self, obs: np.ndarray, probs: np.ndarray, contexts: list[dict[str, Any]]
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        proposed = sample_categorical(probs, self.rng)
        if not self.use_shield:
            return proposed, probs[np.arange(len(proposed)), proposed], probs, []
        effective, veto_maps = shield_discrete(obs, probs, contexts)
        executed = proposed.copy()
        vetoes = []
        for i, a in enumerate(proposed):
            verdict = veto_maps[i].get(int(a))
            if verdict is not None:
                executed[i] = int(verdict.action)
                vetoes.append({"i": i, "proposed": int(a), "executed": int(verdict.action), "reason": verdict.reason})
        return executed, effective[np.arange(len(executed)), executed], effective, vetoes

    def _decide_box(self, obs_t: torch.Tensor, roles: np.ndarray, obs: np.ndarray, contexts: list[dict[str, Any]]
                    ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]:
        mean, log_std = self.champion.bundle.policy.network(obs_t)
        if roles.any():
            rows = torch.from_numpy(np.flatnonzero(roles == CHALLENGER))
            c_mean, c_log_std = self.challenger.bundle.policy.network(obs_t[rows])
            mean, log_std = mean.clone(), log_std.clone()
            mean[rows], log_std[rows] = c_mean, c_log_std
        (mean_np, log_std_np), safe_rows, fallbacks = self._fall_back(
            obs_t, roles, mean.numpy(), np.broadcast_to(log_std.numpy(), mean.shape))
        if fallbacks:
            mean, log_std = torch.from_numpy(np.ascontiguousarray(mean_np)), torch.from_numpy(
                np.ascontiguousarray(log_std_np))
            if self.use_shield:
                contexts = [{**c, "policy_version": self._policies[int(roles[i])]} for i, c in enumerate(contexts)]
        space = self.champion.bundle.policy.action_space
        if self.exploration.mode == "greedy":
            actions = mean.numpy()
            propensities = np.full(len(actions), np.nan)
        else:
            std = log_std.exp() * self.exploration.temperature
            noise = torch.from_numpy(self.rng.standard_normal(mean.shape).astype(np.float32))
            sample = mean + std * noise
            dist = torch.distributions.Independent(torch.distributions.Normal(mean, std), 1)
            propensities = dist.log_prob(sample).exp().numpy().astype(np.float64)
            actions = sample.numpy()
        actions = np.clip(actions, space.low.reshape(-1), space.high.reshape(-1)).astype(np.float32)
        vetoes = []
        if self.use_shield:
            for i in range(len(actions)):
                verdict = ask_shield(obs[i], actions[i], contexts[i])
                if verdict is not None:
                    vetoes.append({"i": i, "proposed": actions[i].tolist(), "executed": list(verdict.action),
                                   "reason": verdict.reason})
                    actions[i] = np.asarray(verdict.action, dtype=np.float32)
                    propensities[i] = np.nan
        if safe_rows.any():  # deterministic fallback: no density to log, flagged in extra["fallbacks"]
            actions[safe_rows] = np.asarray(self.exploration.safe_action, dtype=np.float32).reshape(actions.shape[1:])
            propensities[safe_rows] = np.nan
        return actions, propensities, vetoes, fallbacks
