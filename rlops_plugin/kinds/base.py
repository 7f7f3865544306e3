"""The ``PolicyKind`` protocol: everything that differs between kinds of policy, behind one interface.

A kind owns the policy part of a bundle (its files, hash and description), how a request is
parsed and decided (the serving engine, which writes the decision record), how datasets are built
from the log, and which trainers apply. Bundle integrity, registry, experience store, deployment
targets, promotion and audit are shared; evaluation, the gate and training's bookkeeping reach a kind
through ``rollout``/``run_suite``/``check_comparable``/``validate_dataset``, the promotion controller
through ``log_position``/``canary_samples``; the monitor reads a vector or an agent frame by the
bundle's kind (``rlops_plugin.monitoring.agent``). A kind is
registered through ``rlops_register_policy_kinds``; bundles name their kind in the manifest (absent
means ``vector``, so older bundles load unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rlops_plugin import plugins
from rlops_plugin.bundle.bundle import DEFAULT_KIND

__all__ = ["DEFAULT_KIND", "CanarySamples", "DecisionEngine", "KindPolicy", "PolicyKind", "get_kind", "kind_of"]


@dataclass
class CanarySamples:
    """What a kind hands the promotion controller from the log since the canary started."""

    champion: Any
    """The champion's reward samples (numpy array: per decision/interaction, or per episode/session)."""
    challenger: Any
    """The challenger's reward samples, in the same unit."""
    shadow_seen: int = 0
    """Requests the challenger answered (or scored) in shadow."""
    challenger_decisions: int = 0
    """Decisions (interactions) the challenger made for users since the start."""
    shadow_failures: int = 0
    """Shadow answers that errored or timed out (never shown to a user; reported in the canary analysis)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Kind-specific counts for the audit trail (e.g. unrewarded interactions)."""


@runtime_checkable
class KindPolicy(Protocol):
    """What shared code reads from any kind's policy object."""

    kind: str
    architecture: str
    observation_space: Any
    action_space: Any

    def sha256(self) -> str:
        """Content hash of the policy part (config and weights)."""

    def describe(self) -> dict[str, Any]:
        """JSON description shown by ``rlops bundle inspect`` and the registry; needs at least
        ``architecture`` and ``action_space`` (a dict with ``type``), which the flavor and the tags read."""


class DecisionEngine(Protocol):
    """What the KServe predictor calls: parse a v1/v2 request, decide, report what is served.

    ``exploration`` and ``routing`` are the ``ExplorationConfig`` and ``RoutingConfig`` it was built
    with (the predictor's status reports their ``to_dict()``); ``champion``/``challenger`` the
    ``LoadedModel``s.
    """

    champion: Any
    challenger: Any
    exploration: Any
    routing: Any

    def parse_v1(self, body: Any, max_batch: int) -> Any:
        """A validated request from a v1 ``{"instances": [...]}`` body; ``InvalidObservationError`` names the field."""

    def parse_v2(self, request: Any, max_batch: int) -> Any:
        """The same from a v2 ``InferRequest``."""

    def decide(self, request: Any) -> Any:
        """A ``serving.engine.Decisions``: the ``DecisionBatch`` (actions, propensities, policies) the
        predictor logs durably before answering, and its decision ids; ``response_rows()`` is the answer."""

    def policies(self) -> list[str]:
        """Versions served (champion first)."""


class PolicyKind(Protocol):
    """One kind of policy (``vector``: torch networks over flat observations; ``agent``: LLM agents; ...).

    Optional attributes: ``kserve_model`` (default: the v1/v2 ``PolicyModel`` over the kind's ``engine``),
    ``describe_version(bundle) -> list[str]`` (the paragraphs the registry's version description opens with),
    ``policy_prefix`` (a folder such as ``policy/model/`` whose every file, each
    hashed in the manifest, belongs to the policy part), ``spec_classes`` (the classes of its env and
    reward parts, default ``(EnvSpec, RewardSpec)``) and ``trainer_aliases`` (trainer names this kind reads
    as others: ``dpo`` on an agent means ``agent_dpo``).
    """

    name: str
    policy_files: tuple[str, ...]
    """Bundle-relative file names of the policy part (``policy/...``), every one hashed in the manifest."""

    def save_policy(self, policy: Any) -> dict[str, bytes]:
        """The policy part as ``{file name: bytes}`` (JSON and safetensors only: no pickle)."""

    def load_policy(self, paths: Mapping[str, Path]) -> Any:
        """Parse the policy from its files, already verified against the manifest's hashes."""

    def engine(self, model_name: str, champion: Any, challenger: Any, exploration: Any, routing: Any,
               seed: int | None = None) -> DecisionEngine:
        """The serving engine for champion (and challenger) ``LoadedModel``s."""

    def kserve_model(self, name: str, champion: Any, store: Any, options: Any) -> Any:
        """The ``kserve.Model`` that serves the loaded ``champion`` (``options``: the server's parsed arguments)."""

    def dataset_builders(self) -> dict[str, Callable[..., Any]]:
        """Dataset kind (``transitions``, ``preferences``, ...) -> ``build(store, model, bundle, **options)``."""

    def trainer_applies(self, trainer_cls: type) -> bool:
        """Whether a registered trainer can update this kind's policies."""

    def rollout(self, policy: Any, env_spec: Any, seeds: Any, *, reward_spec: Any) -> Any:
        """A ``RolloutReport`` of ``policy`` in its environment (vector: simulator episodes on ``seeds``;
        agent: the task suite, graded); the gate pairs two reports by their ``seeds``."""

    def run_suite(self, policy: Any, env_spec: Any, ref: Any, reward_spec: Any,
                  episodes_scale: float = 1.0) -> tuple[str, str, list[Any]]:
        """``(name, sha256, [ScenarioResult])`` of the scenario (vector) or red-team (agent) suite ``ref``."""

    def check_comparable(self, candidate: Any, champion: Any) -> None:
        """Raise when two policies of this kind cannot be compared by the gate."""

    def validate_dataset(self, data: Any, bundle: Any) -> tuple[Any, dict[str, int]]:
        """The dataset a trainer may read and the counts of rows left out, by reason."""

    def log_position(self, store: Any) -> int:
        """Where this kind's log ends now (the canary reads what comes after)."""

    def canary_samples(self, store: Any, *, model: str | None, since: int, champion: str, challenger: str,
                       metric: str, join: Any) -> CanarySamples:
        """Reward samples of both policy versions (``name/version@bundle``) logged after ``since``:
        ``metric`` is ``decision`` (per decision or interaction) or ``episode`` (per episode or session)."""


def get_kind(name: str) -> PolicyKind:
    """The registered kind ``name`` (a ``PluginError`` lists the known ones)."""
    return plugins.policy_kinds().get(name).value


def kind_of(bundle_or_policy: Any) -> PolicyKind:
    """The kind of a bundle (or of a policy object)."""
    policy = getattr(bundle_or_policy, "policy", bundle_or_policy)
    return get_kind(getattr(policy, "kind", DEFAULT_KIND))
