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

from rlops_plugin.bundle.hashing import canonical_json
from rlops_plugin.bundle.storage import read_json
from rlops_plugin.errors import ConfigError
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
        """``agent.json`` as canonical JSON and the checkpoint files as they are (JSON, safetensors)."""
        return {AGENT_FILE: canonical_json(policy.agent),
                **{MODEL_PREFIX + name: path.read_bytes() for name, path in policy.files.items()}}

    def load_policy(self, paths: Mapping[str, Path]) -> AgentPolicy:
        """The agent policy over the verified files (the model itself loads on first use)."""
        files = {name[len(MODEL_PREFIX):]: path for name, path in paths.items() if name.startswith(MODEL_PREFIX)}
        for name in files:
            if "/" in name:
                raise ConfigError(f"{MODEL_PREFIX}{name}: checkpoint files lie directly under {MODEL_PREFIX}")
        return AgentPolicy(files, read_json(paths[AGENT_FILE], AGENT_FILE))

    def engine(self, model_name: str, champion: Any, challenger: Any, exploration: Any, routing: Any,
               seed: int | None = None) -> Any:
        """Agents answer OpenAI requests, not v1/v2 observation vectors."""
        raise ConfigError("agent policies are served on the OpenAI data plane (/openai/v1/chat/completions); "
                          "the v1/v2 observation protocol is for vector policies")

    def kserve_model(self, name: str, champion: Any, store: Any, options: Any) -> Any:
        """The KServe model that serves ``champion``: an OpenAI generative model that logs every interaction."""
        from rlops_plugin.serving.agent import AgentModel

        return AgentModel(name, champion, store=store, options=options)

    def dataset_builders(self) -> dict[str, Callable[..., Any]]:
        """Preference and demonstration datasets from interactions come with the agent training signal."""
        return {}

    def trainer_applies(self, trainer_cls: type) -> bool:
        """Trainers that declare ``policy_kind = "agent"`` (the TRL trainers)."""
        return getattr(trainer_cls, "policy_kind", None) == self.name


AGENT = AgentKind()
