"""The ``vector`` kind: a torch network over flat float observations, Discrete or Box actions.

Today's policies, unchanged: files ``policy/config.json`` + ``policy/weights.safetensors``, the
serving :class:`~rlops_plugin.serving.engine.DecisionEngine`, transitions and preference datasets,
and every trainer that does not declare another kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlops_plugin.bundle.bundle import POLICY_CONFIG_FILE, POLICY_WEIGHTS_FILE
from rlops_plugin.bundle.hashing import canonical_json
from rlops_plugin.bundle.policy import Policy
from rlops_plugin.bundle.storage import read_json, sniff_safetensors
from rlops_plugin.kinds.base import DEFAULT_KIND


class VectorKind:
    """Torch networks built from a registered architecture name + JSON config; weights in safetensors."""

    name = DEFAULT_KIND
    policy_files = (POLICY_CONFIG_FILE, POLICY_WEIGHTS_FILE)

    def save_policy(self, policy: Policy) -> dict[str, bytes]:
        """Config as canonical JSON, weights as safetensors."""
        return {POLICY_CONFIG_FILE: canonical_json(policy.describe()), POLICY_WEIGHTS_FILE: policy.weights_bytes()}

    def load_policy(self, paths: Mapping[str, Path]) -> Policy:
        """Build the network from its JSON description, then load the (sniffed) safetensors weights."""
        policy = Policy.from_description(read_json(paths[POLICY_CONFIG_FILE], POLICY_CONFIG_FILE))
        policy.load_weights_bytes(sniff_safetensors(paths[POLICY_WEIGHTS_FILE], POLICY_WEIGHTS_FILE),
                                  POLICY_WEIGHTS_FILE)
        return policy

    def engine(self, model_name: str, champion: Any, challenger: Any, exploration: Any, routing: Any,
               seed: int | None = None) -> Any:
        """The vectorised decision engine (exploration, shields, shadow/canary routing, propensities)."""
        from rlops_plugin.serving.engine import DecisionEngine

        return DecisionEngine(model_name, champion, challenger, exploration, routing, seed=seed)

    def kserve_model(self, name: str, champion: Any, store: Any, options: Any) -> Any:
        """The v1/v2 predictor (``PolicyModel``) around an already loaded champion."""
        from rlops_plugin.serving.exploration import ExplorationConfig
        from rlops_plugin.serving.model import PolicyModel
        from rlops_plugin.serving.routing import RoutingConfig

        o = options
        return PolicyModel(name, champion.model_uri, store=store, challenger_uri=o.challenger_uri,
                           exploration=ExplorationConfig(o.exploration, o.epsilon, o.temperature, o.max_epsilon,
                                                         getattr(o, "safe_action", None)),
                           routing=RoutingConfig(o.routing, o.canary_fraction), max_batch=o.max_batch, seed=o.seed,
                           champion=champion)

    def dataset_builders(self) -> dict[str, Callable[..., Any]]:
        """Transitions for offline RL, preference pairs from corrections and ratings."""
        from rlops_plugin.experience.dataset import build_preferences, build_transitions

        return {"transitions": build_transitions, "preferences": build_preferences}

    def trainer_applies(self, trainer_cls: type) -> bool:
        """Trainers that do not name another kind (CQL, BC, DPO, PPO) train vector policies."""
        return getattr(trainer_cls, "policy_kind", DEFAULT_KIND) == self.name

    def rollout(self, policy: Policy, env_spec: Any, seeds: Any, *, reward_spec: Any) -> Any:
        """Greedy episodes on ``seeds`` in the simulator (:func:`rlops_plugin.simulation.rollouts.rollout`)."""
        from rlops_plugin.simulation.rollouts import rollout

        return rollout(policy, env_spec, seeds, reward_spec=reward_spec)

    def run_suite(self, policy: Policy, env_spec: Any, ref: Any, reward_spec: Any,
                  episodes_scale: float = 1.0) -> tuple[str, str, list[Any]]:
        """``(name, sha256, results)`` of scenario suite ``ref`` (registered name or JSON file)."""
        from rlops_plugin.simulation.scenarios import ScenarioSuite, run_suite

        suite = ScenarioSuite.load(ref)
        return suite.name, suite.sha256(), run_suite(policy, env_spec, suite, reward_spec, episodes_scale)

    def check_comparable(self, candidate: Policy, champion: Policy) -> None:
        """Candidate and champion observe and act in the same spaces."""
        from rlops_plugin.bundle.spaces import check_same_space

        check_same_space(candidate.observation_space, champion.observation_space,
                         "candidate and champion observation spaces")
        check_same_space(candidate.action_space, champion.action_space, "candidate and champion action spaces")

    def validate_dataset(self, data: Any, bundle: Any) -> tuple[Any, dict[str, int]]:
        """Drop (and count) unusable transitions or pairs for this policy's action space."""
        from rlops_plugin.experience.dataset import validate_preferences, validate_transitions

        if data.kind == "transitions":
            return validate_transitions(data, bundle.policy.discrete)
        return validate_preferences(data, bundle.policy.n_actions)

    def log_position(self, store: Any) -> int:
        """The highest decision-batch sequence number."""
        return int(store.max_seq())

    def canary_samples(self, store: Any, *, model: str | None, since: int, champion: str, challenger: str,
                       metric: str, join: Any) -> Any:
        """Per-decision rewards by deciding version, or returns of complete single-policy episodes."""
        import numpy as np

        from rlops_plugin.experience.join import join_feedback
        from rlops_plugin.kinds.base import CanarySamples

        frame = join_feedback(store, join, model=model, since_seq=since).decisions
        shadow_seen = int((frame["shadow_policy"] == challenger).sum())
        versions = frame["policy_version"].to_numpy()
        decided = int((versions == challenger).sum())
        if metric == "episode":
            returns = episode_returns(frame)
            return CanarySamples(returns.get(champion, np.array([])), returns.get(challenger, np.array([])),
                                 shadow_seen, decided)
        rewards = frame["reward"].to_numpy(dtype=float)
        return CanarySamples(rewards[versions == champion], rewards[versions == challenger], shadow_seen, decided)


def episode_returns(frame: Any) -> dict[str, Any]:
    """Returns of complete episodes decided by a single policy version, grouped by that version.

    An episode counts once its terminal reward arrived (``episode_end``) and every step has a reward;
    episodes whose decisions came from two policies (non-sticky routing) are left out.
    """
    episodic = frame[frame["episode_id"].notna()]
    if episodic.empty:
        return {}
    grouped = episodic.groupby("episode_id").agg(
        versions=("policy_version", "nunique"), version=("policy_version", "first"),
        ended=("episode_end", lambda s: s.notna().any()), missing=("reward", lambda s: s.isna().any()),
        total=("reward", "sum"))
    complete = grouped[(grouped["versions"] == 1) & grouped["ended"] & ~grouped["missing"]]
    return {version: group["total"].to_numpy(dtype=float) for version, group in complete.groupby("version")}


VECTOR = VectorKind()
