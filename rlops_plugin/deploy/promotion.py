"""The progressive-delivery controller: shadow -> canary steps -> promote, or roll back.

It reads rewards by policy version from the log, as the policies' kind measures them
(``canary_samples``: vector decisions and episodes; agent interactions and sessions, shadow answers
and their failures counted), feeds them to
:class:`~rlops_plugin.deploy.analysis.CanaryAnalysis`, and applies each decision to a deployment
target (any ``mlflow.deployments`` target: ``rlops-local`` servers, KServe InferenceServices, a
third party's; see :mod:`rlops_plugin.deploy.targets`) and to the registry aliases:

* promotion moves ``champion`` to the challenger (the old champion stays as ``previous`` for
  ``rlops rollback``) and removes ``challenger``;
* rollback sets traffic back to the champion and removes ``challenger``;
* a ``challenger`` alias that moves mid-analysis restarts the analysis for the new version;
* no rewards, or NaN rewards, mean hold — never a promotion; nor do rewards that cannot tell the
  policies apart (constant or too rare) or that lie outside the declared ``reward_range``
  (clipped, counted in the audit metrics).

Every state change is an audit event (an MLflow run with metrics, decision and reason).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlops_plugin.audit.events import AuditEvent, current_actor, record_event
from rlops_plugin.deploy.analysis import (
    AWAITING_APPROVAL,
    AWAITING_CANARY_APPROVAL,
    CANARY,
    FINAL,
    INCONCLUSIVE,
    PROMOTED,
    ROLLED_BACK,
    SHADOW,
    Action,
    CanaryAnalysis,
    PromotionPolicy,
)
from rlops_plugin.deploy.targets import deploy_client, route
from rlops_plugin.errors import ConfigError, RegistryError
from rlops_plugin.experience.join import JoinConfig
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor import registry
from rlops_plugin.flavor.model import load_model_with_source
from rlops_plugin.flavor.refs import ModelRef
from rlops_plugin.kinds.base import CanarySamples, get_kind
from rlops_plugin.kinds.vector import episode_returns

logger = logging.getLogger(__name__)


@dataclass
class _Side:
    version: str
    uri: str
    policy_version: str
    kind: str = "vector"


class PromotionController:
    """Drives one challenger of a registered model through shadow and canary to a verdict."""

    def __init__(self, model_name: str, deployment: str, target: str | Any, store: str,
                 policy: PromotionPolicy | None = None, served_model: str | None = None,
                 join: JoinConfig | None = None, clock: Callable[[], float] = time.time,
                 actor: str | None = None) -> None:
        self.model_name = model_name
        self.deployment = deployment
        # a target URI (``rlops-local:/state``), or a deployment client already built for one
        self.target = deploy_client(target) if isinstance(target, str) else target
        self.store_url = store
        self.policy = policy or PromotionPolicy()
        self.served_model = served_model
        self.join = join or JoinConfig()
        self.clock = clock
        self.actor = actor or current_actor()
        self.analysis: CanaryAnalysis | None = None
        self.champion: _Side | None = None
        self.challenger: _Side | None = None
        self.since_seq = 0
        self.kind: Any = None
        self.last_samples: CanarySamples | None = None
        self.events: list[AuditEvent] = []

    # ----- lifecycle -----------------------------------------------------------------------
    def _side(self, alias: str) -> _Side:
        version = registry.get_alias_version(self.model_name, alias)
        if version is None:
            raise RegistryError(f"{self.model_name} has no {alias!r} alias")
        uri = ModelRef.of(self.model_name, version=version).uri
        loaded = load_model_with_source(uri)
        return _Side(version, uri, loaded.policy_version, loaded.bundle.kind)

    def start(self) -> Action:
        """Resolve champion and challenger, reset the analysis, route the challenger to shadow."""
        self.champion, self.challenger = self._side("champion"), self._side("challenger")
        if self.champion.version == self.challenger.version:
            raise ConfigError(f"{self.model_name}: challenger and champion are the same version "
                              f"{self.champion.version}")
        if self.champion.kind != self.challenger.kind:
            raise ConfigError(f"{self.model_name}: the challenger is a {self.challenger.kind} policy, the champion "
                              f"a {self.champion.kind} one; a canary compares policies of one kind")
        self.kind = get_kind(self.champion.kind)
        for method in ("log_position", "canary_samples"):
            if not hasattr(self.kind, method):
                raise ConfigError(f"policy kind {self.champion.kind!r} has no {method}(): it cannot say how its "
                                  "canary is measured")
        with open_store(self.store_url) as store:
            self.since_seq = self.kind.log_position(store)
        self.analysis = CanaryAnalysis(self.policy, self.clock())
        action = Action(self.analysis.state, self.analysis.fraction, True,
                        f"version {self.challenger.version} challenges champion {self.champion.version}")
        self._route(action.state, action.fraction)
        self._audit("canary_step", "started", action.reason, {"fraction": action.fraction})
        return action

    def poll(self) -> Action:
        """Look at the log once and act; returns what was decided."""
        if self.analysis is None or self.challenger is None:
            return self.start()
        if self.analysis.state in FINAL:
            return Action(self.analysis.state, self.analysis.fraction, False, "analysis finished")
        current = registry.get_alias_version(self.model_name, "challenger")
        if current != self.challenger.version:
            self._audit("canary_step", "restarted", f"challenger alias moved from {self.challenger.version} to "
                                                    f"{current}: analysis restarts", {})
            if current is None:
                return self._finish(Action(ROLLED_BACK, 0.0, True, "challenger alias removed"), remove_alias=False)
            return self.start()
        samples = self._rewards()
        self.last_samples = samples
        approved = registry.approval_of(self.model_name, self.challenger.version) is not None
        action = self.analysis.update(samples.challenger, samples.champion, self.clock(), samples.shadow_seen,
                                      approved, challenger_decisions=samples.challenger_decisions)
        if action.changed:
            if action.state in FINAL:
                return self._finish(action)
            self._route(action.state, action.fraction)
            metrics = {"fraction": action.fraction, **_test_metrics(action), **self._shadow_metrics()}
            self._audit("canary_step", action.state, action.reason, metrics)
        return action

    def run(self, max_polls: int | None = None, sleep: Callable[[float], None] = time.sleep,
            on_action: Callable[[Action], None] | None = None) -> Action:
        """Start, then poll every ``poll_interval_s`` until a final verdict (or ``max_polls``)."""
        action = self.start()
        polls = 0
        while action.state not in FINAL and (max_polls is None or polls < max_polls):
            sleep(self.policy.poll_interval_s)
            action = self.poll()
            polls += 1
            if on_action is not None:
                on_action(action)
        return action

    # ----- internals -----------------------------------------------------------------------
    def _sides(self) -> tuple[_Side, _Side]:
        if self.champion is None or self.challenger is None:
            raise ConfigError("the promotion controller has not been started")
        return self.champion, self.challenger

    def _rewards(self) -> CanarySamples:
        """Champion and challenger samples since the start, as the policies' kind measures them."""
        champ, chal = self._sides()
        with open_store(self.store_url) as store:
            return self.kind.canary_samples(store, model=self.served_model, since=self.since_seq,
                                            champion=champ.policy_version, challenger=chal.policy_version,
                                            metric=self.policy.metric, join=self.join)

    def _shadow_metrics(self) -> dict[str, float]:
        s = self.last_samples
        if s is None:
            return {}
        return {"shadow_answers": float(s.shadow_seen), "shadow_failures": float(s.shadow_failures),
                **{k: float(v) for k, v in s.details.items() if isinstance(v, (int, float))}}

    def _route(self, state: str, fraction: float) -> None:
        champ, chal = self._sides()
        mode = "shadow" if state in (SHADOW, AWAITING_CANARY_APPROVAL) else \
            "canary" if state in (CANARY, AWAITING_APPROVAL) else "off"
        route(self.target, self.deployment, champ.uri, chal.uri if mode != "off" else None, mode, fraction)

    def _finish(self, action: Action, remove_alias: bool = True) -> Action:
        champ, chal = self._sides()
        metrics = {**_test_metrics(action), **self._shadow_metrics()}
        if action.state == PROMOTED:
            replaced = registry.promote(self.model_name, chal.version)
            registry.delete_alias(self.model_name, "challenger")
            route(self.target, self.deployment, chal.uri, None, "off", 0.0)
            self._audit("promotion", "promoted", action.reason, metrics,
                        {"previous_champion": replaced, "new_champion": chal.version})
        else:
            route(self.target, self.deployment, champ.uri, None, "off", 0.0)
            if action.state == ROLLED_BACK and remove_alias:
                registry.delete_alias(self.model_name, "challenger")
            if action.state == ROLLED_BACK:
                self._audit("rollback", action.state, action.reason, metrics,
                            {"from": chal.version, "to": champ.version})
            else:
                self._audit("canary_step", action.state, action.reason, metrics)
        return action

    def _audit(self, kind: str, decision: str, reason: str, metrics: dict[str, float],
               details: dict[str, Any] | None = None) -> None:
        version = self.challenger.version if self.challenger else None
        event = AuditEvent(kind=kind, model_name=self.model_name, model_version=version, actor=self.actor,
                           decision=decision, reason=reason, metrics=metrics,
                           details={"deployment": self.deployment, "policy": self.policy.to_dict(),
                                    "champion": self.champion.__dict__ if self.champion else None,
                                    "challenger": self.challenger.__dict__ if self.challenger else None,
                                    **(details or {})})
        try:
            self.events.append(record_event(event))
        except Exception as exc:  # noqa: BLE001 - the deployment change already happened; keep it visible
            logger.error("could not record audit event %s/%s: %s", kind, decision, exc)
            self.events.append(event)
        logger.info("%s %s: %s", kind, decision, reason)


def _test_metrics(action: Action) -> dict[str, float]:
    t = action.test
    if t is None:
        return {}
    return {"reward_diff": t.difference, "reward_diff_ci_low": t.ci_low, "reward_diff_ci_high": t.ci_high,
            "challenger_decisions": float(t.n_challenger), "champion_decisions": float(t.n_champion),
            "challenger_reward_mean": t.challenger_mean, "champion_reward_mean": t.champion_mean,
            "effective_samples": t.effective_samples, "challenger_rewards_clipped": float(t.clipped_challenger),
            "champion_rewards_clipped": float(t.clipped_champion)}


__all__ = ["AWAITING_APPROVAL", "AWAITING_CANARY_APPROVAL", "CANARY", "INCONCLUSIVE", "PROMOTED", "ROLLED_BACK",
           "SHADOW", "PromotionController", "PromotionPolicy", "episode_returns"]
