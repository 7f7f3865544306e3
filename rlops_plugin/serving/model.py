"""``PolicyModel``: a ``kserve.Model`` that serves a registered policy and logs every decision.

Each response row carries the action, its propensity under the policy actually executed, the
decision id and the policy version; the response is sent only after the decision batch is
committed to the experience store, so an acknowledged decision is never lost.
"""

from __future__ import annotations

import logging
from typing import Any

import kserve
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from rlops_plugin import plugins
from rlops_plugin.errors import BrokenPolicyError, InvalidObservationError, RLOpsError
from rlops_plugin.experience.store import ExperienceStore
from rlops_plugin.flavor.model import LoadedModel, load_model_with_source
from rlops_plugin.serving.engine import DecisionEngine, Decisions
from rlops_plugin.serving.exploration import ExplorationConfig
from rlops_plugin.serving.routing import RoutingConfig

logger = logging.getLogger(__name__)


class IdempotencyConflict(RLOpsError):
    """An ``Idempotency-Key`` reused for a different request (answered 409)."""


def _idempotency_key(headers: dict[str, str] | None) -> str | None:
    """The request's ``Idempotency-Key`` header (any case), checked; ``None`` when absent."""
    for name, value in (headers or {}).items():
        if name.lower() == "idempotency-key":
            if not value or len(value) > 256 or not value.isprintable():
                raise InvalidInput("header Idempotency-Key: 1 to 256 printable characters")
            return value
    return None
DEFAULT_MAX_BATCH = 4096


class PolicyModel(kserve.Model):
    """Serve ``model_uri`` (champion) and optionally a challenger in shadow or canary mode."""

    def __init__(self, name: str, model_uri: str, store: ExperienceStore | None = None,
                 challenger_uri: str | None = None, exploration: ExplorationConfig | None = None,
                 routing: RoutingConfig | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 seed: int | None = None, champion: LoadedModel | None = None) -> None:
        super().__init__(name)
        self.model_uri = model_uri
        self.challenger_uri = challenger_uri
        self.store = store
        self.exploration = exploration or ExplorationConfig()
        self.routing = routing or RoutingConfig()
        self.max_batch = max_batch
        self.seed = seed
        self.decider: DecisionEngine | None = None
        self._preloaded = champion

    def load(self) -> bool:
        """Load champion (and challenger) with every integrity check; then mark ready."""
        champion = self._preloaded or load_model_with_source(self.model_uri)
        self._preloaded = None
        challenger = load_model_with_source(self.challenger_uri) if self.challenger_uri else None
        self.decider = self._build_engine(champion, challenger, self.exploration, self.routing)
        self.ready = True
        return self.ready

    def _build_engine(self, champion: LoadedModel, challenger: LoadedModel | None,
                      exploration: ExplorationConfig, routing: RoutingConfig) -> DecisionEngine:
        kind = plugins.policy_kinds().get(champion.bundle.kind).value  # the kind owns parsing and deciding
        return kind.engine(self.name, champion, challenger, exploration, routing, seed=self.seed)

    def reconfigure(self, challenger_uri: str | None = None, routing: RoutingConfig | None = None,
                    exploration: ExplorationConfig | None = None, model_uri: str | None = None) -> dict[str, Any]:
        """Swap models or change routing without a restart; in-flight requests finish on the old engine."""
        if self.decider is None:
            raise RLOpsError(f"model {self.name} is not loaded yet")
        champion = load_model_with_source(model_uri) if model_uri else self.decider.champion
        if challenger_uri == "":
            challenger = None
        elif challenger_uri is not None:
            challenger = load_model_with_source(challenger_uri)
        else:
            challenger = self.decider.challenger
        routing = routing or self.decider.routing
        if challenger is None:
            routing = RoutingConfig()
        exploration = exploration or self.decider.exploration
        self.decider = self._build_engine(champion, challenger, exploration, routing)
        self.model_uri = model_uri or self.model_uri
        self.challenger_uri = None if challenger is None else (challenger_uri or self.challenger_uri)
        return self.status()

    def status(self) -> dict[str, Any]:
        """What this model serves right now."""
        engine = self.decider
        if engine is None:
            return {"model": self.name, "ready": False}
        return {
            "model": self.name, "ready": self.ready, "policies": engine.policies(),
            "champion_uri": self.model_uri, "challenger_uri": self.challenger_uri,
            "exploration": engine.exploration.to_dict(), "routing": engine.routing.to_dict(),
            "logging": self.store is not None, "fallbacks": dict(engine.fallbacks.counts),
        }

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        """Decide, log durably, then answer (v1 dict or v2 ``InferResponse``)."""
        engine = self.decider
        if engine is None:
            raise InvalidInput(f"model {self.name} is not loaded")
        try:
            if isinstance(payload, InferRequest):
                request = engine.parse_v2(payload, self.max_batch)
            else:
                request = engine.parse_v1(payload, self.max_batch)
            decisions = engine.decide(request)
        except InvalidObservationError as exc:
            raise InvalidInput(str(exc)) from None
        except BrokenPolicyError:
            raise  # 503 (serving.app): the policy, not the request, is at fault
        except RLOpsError as exc:
            raise InvalidInput(f"{type(exc).__name__}: {exc}") from None
        key = _idempotency_key(headers)
        if self.store is not None and key is not None:
            decisions = await self._log_once(decisions, key)
        elif self.store is not None:
            await self.store.log_decisions_async(decisions.batch)
        if isinstance(payload, InferRequest):
            return self._v2_response(payload, decisions)
        return {"predictions": decisions.response_rows()}

    async def _log_once(self, decisions: Decisions, key: str) -> Decisions:
        """Log under an ``Idempotency-Key``: a retry gets the first attempt's decisions back, and logs nothing."""
        batch = decisions.batch
        held_by = await self.store.log_decisions_keyed_async(batch, f"{self.name}:{key}")
        if held_by == batch.batch_id:
            return decisions
        first = self.store.get_batches([held_by])[held_by]
        if first.obs.shape != batch.obs.shape or not (first.obs == batch.obs).all():
            raise IdempotencyConflict(f"Idempotency-Key {key!r} was used for a different request "
                                      f"(batch {held_by}); use a new key for new observations")
        return Decisions(first, first.decision_ids())

    def _v2_response(self, payload: InferRequest, decisions: Decisions) -> InferResponse:
        b = decisions.batch
        n = b.n
        if b.actions.ndim == 1:
            action_out = InferOutput("action", [n], "INT64", b.actions.tolist())
        else:
            action_out = InferOutput("action", list(b.actions.shape), "FP32", b.actions.reshape(-1).tolist())
        outputs = [
            action_out,
            InferOutput("propensity", [n], "FP64", b.propensities.tolist()),
            InferOutput("decision_id", [n], "BYTES", decisions.decision_ids),
            InferOutput("policy_version", [n], "BYTES", [b.policy_of(i) for i in range(n)]),
        ]
        return InferResponse(response_id=payload.id or b.batch_id, model_name=self.name, infer_outputs=outputs)
