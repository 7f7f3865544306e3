"""Creating agent bundles from a local Hugging Face checkpoint or an MLflow ``transformers`` model.

Only JSON, safetensors and Jinja files are taken from the checkpoint; pickled weights (``.bin``, ``.pt``)
and Python files are refused by name, and other files (README, .gitattributes) are left out. The
system prompt is inline or a pinned reference into MLflow's prompt registry (``prompts:/NAME/VERSION``),
whose template hash is recorded and checked again when the agent is served.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.hashing import sha256_json
from rlops_plugin.errors import ConfigError, UnsafeArtifactError
from rlops_plugin.kinds.agent.policy import AgentPolicy, model_file_allowed
from rlops_plugin.kinds.agent.specs import GraderSpec, TaskEnvSpec

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
"""``runs:/``, ``models:/``, ``s3://``...: a model URI for MLflow to download; anything else is a local directory."""
_UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".py", ".msgpack", ".h5")


def checkpoint_files(directory: str | Path) -> dict[str, Path]:
    """The loadable files of a Hugging Face checkpoint directory (pickles and code are refused)."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a Hugging Face checkpoint directory")
    files = {}
    for path in sorted(root.iterdir()):
        if path.is_dir():
            continue
        if path.suffix in _UNSAFE_SUFFIXES:
            raise UnsafeArtifactError(f"{path}: pickled weights or code are not accepted in an agent bundle; "
                                      "save the model with safe_serialization=True (safetensors)")
        if model_file_allowed(path.name):
            files[path.name] = path
    return files


def agent_policy(source: str | Path, *, system_prompt: str | None = None, system_prompt_ref: str | None = None,
                 tools: Sequence[Mapping[str, Any]] | None = None, tool_call_format: str = "json",
                 generation: Mapping[str, Any] | None = None, base_model: Mapping[str, Any] | None = None
                 ) -> AgentPolicy:
    """An :class:`AgentPolicy` from a checkpoint directory or an MLflow ``transformers`` model URI."""
    uri = isinstance(source, str) and _URI.match(source) is not None
    directory = _from_mlflow_transformers(source) if uri else Path(source)
    agent: dict[str, Any] = {"tools": [dict(t) for t in tools or []], "tool_call_format": tool_call_format,
                             "generation": dict(generation or {})}
    if system_prompt is not None:
        agent["system_prompt"] = system_prompt
    if system_prompt_ref is not None:
        agent["system_prompt_ref"] = _pinned_prompt(system_prompt_ref)
    if base_model is not None:
        agent["base_model"] = dict(base_model)
    return AgentPolicy(checkpoint_files(directory), agent)


def agent_bundle(source: str | Path, env: TaskEnvSpec, graders: GraderSpec, **agent: Any) -> PolicyBundle:
    """A versionable agent bundle: the policy from ``source`` (see :func:`agent_policy`), tools and tasks, graders."""
    return PolicyBundle(agent_policy(source, **agent), env, graders)


def _pinned_prompt(uri: str) -> dict[str, Any]:
    """``prompts:/NAME/VERSION`` resolved now, with its template's hash (an alias or ``latest`` is refused)."""
    import mlflow

    parts = uri.removeprefix("prompts:/").split("/")
    if not uri.startswith("prompts:/") or len(parts) != 2 or not parts[1].isdigit():
        raise ConfigError(f"system_prompt_ref: pin a version, prompts:/NAME/VERSION (got {uri!r})")
    template = mlflow.genai.load_prompt(uri).template
    if not isinstance(template, str):
        raise ConfigError(f"system_prompt_ref {uri}: a text prompt is needed, not a chat prompt")
    return {"uri": uri, "sha256": sha256_json(template)}


def _from_mlflow_transformers(uri: str) -> Path:
    """Download an MLflow ``transformers`` model and gather its checkpoint and tokenizer files in one directory."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    model_dir, tokenizer_dir = local / "model", local / "components" / "tokenizer"
    if not model_dir.is_dir():
        raise ConfigError(f"{uri}: not an MLflow transformers model with saved weights (no model/ directory; "
                          "log it with save_pretrained=True)")
    gathered = Path(tempfile.mkdtemp(prefix="rlops-agent-"))
    for directory in (model_dir, tokenizer_dir):
        if directory.is_dir():
            for name, path in checkpoint_files(directory).items():
                shutil.copyfile(path, gathered / name)
    return gathered
