"""The ``agent`` kind: LLM agents as policies, served on KServe's OpenAI data plane.

Files: ``policy/agent.json`` and the checkpoint under ``policy/model/`` (every file hashed in the manifest);
the environment part is a :class:`TaskEnvSpec` (tools, task suite, simulated user), the reward part a
:class:`GraderSpec`. Requests are OpenAI chat/text completions, answered by
:class:`rlops_plugin.serving.agent.AgentModel`, which logs every interaction before it answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlops_plugin.bundle.hashing import canonical_json, sha256_bytes
from rlops_plugin.bundle.storage import read_json
from rlops_plugin.errors import ConfigError, IntegrityError
from rlops_plugin.kinds.agent.policy import AGENT_FILE, AGENT_KIND, MODEL_PREFIX, AgentPolicy
from rlops_plugin.kinds.agent.specs import GraderSpec, TaskEnvSpec


class AgentKind:
    """LLM agents: a Hugging Face causal LM (or LoRA adapter) with tools, system prompt and chat template."""

    name = AGENT_KIND
    policy_files = (AGENT_FILE,)
    policy_prefix = MODEL_PREFIX
    """Checkpoint files vary (full weights, shards, adapter): any allowed file under this prefix, each hashed."""
    spec_classes = (TaskEnvSpec, GraderSpec)

    def save_policy(self, policy: AgentPolicy) -> dict[str, bytes]:
        """``agent.json`` as canonical JSON and the checkpoint files as they are (JSON, safetensors).

        Each file must still hash as when the policy was made: the policy hash recorded in the manifest
        covers those hashes, so a file changed since would make a bundle that never loads.
        """
        files, recorded = {}, policy.describe()["files"]
        for name, path in policy.files.items():
            data = path.read_bytes()
            if sha256_bytes(data) != recorded[name]:
                raise IntegrityError(f"{MODEL_PREFIX}{name}: {path} changed on disk since the policy was made; "
                                     "create the policy again from the checkpoint")
            files[MODEL_PREFIX + name] = data
        return {AGENT_FILE: canonical_json(policy.agent), **files}

    def load_policy(self, paths: Mapping[str, Path]) -> AgentPolicy:
        """The agent policy over the verified files (the model itself loads on first use).

        transformers reads a checkpoint *directory*, not a file list, so a file the manifest does not
        list may not lie beside the listed ones.
        """
        files = {name[len(MODEL_PREFIX):]: path for name, path in paths.items() if name.startswith(MODEL_PREFIX)}
        for name in files:
            if "/" in name:
                raise ConfigError(f"{MODEL_PREFIX}{name}: checkpoint files lie directly under {MODEL_PREFIX}")
        for directory in {path.parent for path in files.values()}:
            extra = sorted(entry.name for entry in directory.iterdir() if entry.name not in files)
            if extra:
                raise IntegrityError(f"{MODEL_PREFIX}{extra[0]}: in the bundle directory but not in its manifest "
                                     f"(unlisted: {extra}); transformers would read it, so the bundle is refused")
        return AgentPolicy(files, read_json(paths[AGENT_FILE], AGENT_FILE))

    def describe_version(self, bundle: Any) -> list[str]:
        """The registry description's opening sentences: the agent, its task environment and its graders."""
        policy, env, graders = bundle.policy, bundle.env_spec, bundle.reward_spec
        tools = ", ".join(t["function"]["name"] for t in policy.tools) or "no tools"
        ref = policy.agent.get("system_prompt_ref")
        prompt = (f"system prompt {ref['uri']}" if ref else
                  "inline system prompt" if policy.agent.get("system_prompt") else "no system prompt")
        base = policy.agent.get("base_model")
        weights = f"LoRA adapter over {base['uri']}" if base else policy.architecture
        scores = ", ".join(f"{g['name']} ({g['type']}, weight {g['weight']:g})" for g in graders.graders)
        lines = [f"Agent for task environment **{env.name}** ({weights}, tools {tools}; {prompt}; "
                 f"{len(env.tasks)} tasks).",
                 f"Graders: {scores}; combined by {graders.combine} (source sha256 {graders.source_sha256[:12]})."]
        if env.params or env.randomization:
            lines.append(f"Env parameters {dict(env.params)}, randomized {sorted(env.randomization)}.")
        return lines

    def engine(self, model_name: str, champion: Any, challenger: Any, exploration: Any, routing: Any,
               seed: int | None = None) -> Any:
        """Agents answer OpenAI requests, not v1/v2 observation vectors."""
        raise ConfigError("agent policies are served on the OpenAI data plane (/openai/v1/chat/completions); "
                          "the v1/v2 observation protocol is for vector policies")

    def kserve_model(self, name: str, champion: Any, store: Any, options: Any) -> Any:
        """The KServe model that serves ``champion``: an OpenAI generative model that logs every interaction."""
        from rlops_plugin.serving.agent import AgentModel

        return AgentModel(name, champion, store=store, options=options)

    trainer_aliases = {"sft": "agent_sft", "dpo": "agent_dpo", "kto": "agent_kto", "grpo": "agent_grpo"}
    """``rlops train --trainer dpo`` on an agent means TRL's DPO, not the vector DPO of the same name
    (``--trainer reward_model`` trains a judge: :func:`rlops_plugin.lifecycle.train_reward_model`)."""

    def dataset_builders(self) -> dict[str, Callable[..., Any]]:
        """``preferences``: every signal of the joined interactions (pairs, demonstrations, thumbs, rewards)."""
        from rlops_plugin.kinds.agent.signals import build_agent_preferences

        return {"preferences": build_agent_preferences}

    def trainer_applies(self, trainer_cls: type) -> bool:
        """Trainers that declare ``policy_kind = "agent"`` (the TRL trainers)."""
        return getattr(trainer_cls, "policy_kind", None) == self.name

    def rollout(self, policy: AgentPolicy, env_spec: TaskEnvSpec, seeds: Any, *, reward_spec: GraderSpec) -> Any:
        """The task suite answered greedily and graded (:func:`rlops_plugin.kinds.agent.tasks.rollout`)."""
        from rlops_plugin.kinds.agent.tasks import rollout

        return rollout(policy, env_spec, seeds, reward_spec=reward_spec)

    def run_suite(self, policy: AgentPolicy, env_spec: TaskEnvSpec, ref: Any, reward_spec: GraderSpec,
                  episodes_scale: float = 1.0) -> tuple[str, str, list[Any]]:
        """``(name, sha256, results)`` of red-team suite ``ref`` (registered name or JSON file)."""
        from rlops_plugin.kinds.agent.redteam import RedTeamSuite, run_redteam

        suite = RedTeamSuite.load(ref)
        return suite.name, suite.sha256(), run_redteam(policy, suite, episodes_scale)

    def check_comparable(self, candidate: AgentPolicy, champion: AgentPolicy) -> None:
        """Agents compare on the same task suite; their tools and checkpoints may differ."""
        if getattr(champion, "kind", None) != self.name:
            raise ConfigError(f"candidate is an agent, champion a {getattr(champion, 'kind', 'vector')} policy")

    def log_position(self, store: Any) -> int:
        """The highest interaction sequence number."""
        return int(store.max_interaction_seq())

    def canary_samples(self, store: Any, *, model: str | None, since: int, champion: str, challenger: str,
                       metric: str, join: Any) -> Any:
        """Per-interaction (or per-session) rewards, shadow answers and failures (:mod:`.canary`)."""
        from rlops_plugin.kinds.agent.canary import canary_samples

        return canary_samples(store, model=model, since=since, champion=champion, challenger=challenger,
                              metric=metric, join=join)

    def validate_dataset(self, data: Any, bundle: Any) -> tuple[Any, dict[str, int]]:
        """An agent preferences dataset, with its quarantined rows counted (trainers never read them)."""
        from rlops_plugin.experience.dataset import DatasetError
        from rlops_plugin.kinds.agent.signals import signal_counts

        if data.manifest.get("policy_kind") != self.name or "signal" not in data.columns:
            raise DatasetError(f"this {data.kind} dataset was not built from agent interactions "
                               "(rlops dataset build --kind preferences with an agent bundle)")
        return data, {f"quarantined_{k}": v for k, v in signal_counts(data)["quarantined"].items()}


AGENT = AgentKind()
