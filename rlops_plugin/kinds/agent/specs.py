"""The environment and reward parts of an agent bundle: tools and task suite, and graders.

``TaskEnvSpec`` names the tool implementations (``module:function`` + source hash), the task suite used for
evaluation (prompts with expected outcomes) and optionally a simulated user. ``GraderSpec`` names the graders
(code graders by ``module:function`` + hash; reward-model and LLM judges by model URI + prompt) and how their
scores combine. Both are JSON, hashed into the bundle hash; code is imported only after its hash checks.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlops_plugin.bundle.hashing import check_finite_json, sha256_file, sha256_json
from rlops_plugin.bundle.references import load_verified, module_source_path, module_source_sha256, split_reference
from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.errors import ConfigError, IntegrityError

FORMAT_VERSION = 1
GRADER_TYPES = ("code", "reward_model", "llm_judge")
COMBINE = ("weighted_mean", "min")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _code_ref(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``{"ref": "module:function", "sha256": ...}`` with the hash filled in from the installed source."""
    out = dict(item)
    module, _ = split_reference(out.get("ref", ""))
    if not out.get("sha256"):
        out["sha256"] = module_source_sha256(module)
    if not isinstance(out["sha256"], str) or len(out["sha256"]) != 64:
        raise ConfigError(f"{where}.sha256: a sha256 hex digest")
    return out


@dataclass(frozen=True)
class TaskEnvSpec:
    """Where an agent acts: its tools' implementations, its task suite and an optional simulated user."""

    name: str
    """Name of the task environment (``ticket-triage``), shown in the registry like a gymnasium id."""
    tools: tuple[Mapping[str, Any], ...] = ()
    """``{"name", "ref": "module:function", "sha256"}`` per tool the agent may call."""
    tasks: tuple[Mapping[str, Any], ...] = ()
    """``{"id", "messages": [...], "expected": {"tool_calls": [{"name", "arguments"}]} | {"content": str}}``."""
    simulated_user: Mapping[str, Any] | None = None
    """``{"ref", "sha256"}`` of a function ``(messages, task) -> next user message or None`` for simulation."""
    params: Mapping[str, Any] = field(default_factory=dict)
    randomization: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"task_env.name: letters, digits, '.', '_' or '-' (got {self.name!r})")
        tools = []
        for i, tool in enumerate(self.tools):
            where = f"task_env.tools[{i}]"
            check_keys(tool, ("name", "ref", "sha256"), where, required=("name", "ref"))
            tools.append(_code_ref(tool, where))
        object.__setattr__(self, "tools", tuple(tools))
        ids = set()
        tasks = []
        for i, task in enumerate(self.tasks):
            where = f"task_env.tasks[{i}]"
            check_keys(task, ("id", "messages", "expected", "metadata"), where, required=("id", "messages"))
            if not isinstance(task["messages"], list) or not task["messages"]:
                raise ConfigError(f"{where}.messages: a non-empty list of chat messages")
            if task["id"] in ids:
                raise ConfigError(f"{where}.id: {task['id']!r} appears twice")
            ids.add(task["id"])
            tasks.append(dict(task))
        object.__setattr__(self, "tasks", tuple(tasks))
        if self.simulated_user is not None:
            check_keys(self.simulated_user, ("ref", "sha256"), "task_env.simulated_user", required=("ref",))
            object.__setattr__(self, "simulated_user", _code_ref(self.simulated_user, "task_env.simulated_user"))
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "randomization", dict(self.randomization))
        check_finite_json(self.to_dict(), "task_env")

    def tool(self, name: str) -> Callable[..., Any]:
        """The verified implementation of tool ``name`` (imported only after its source hash checks)."""
        for tool in self.tools:
            if tool["name"] == name:
                return load_verified(tool["ref"], tool["sha256"])
        raise ConfigError(f"tool {name!r} has no implementation in task_env {self.name!r}; "
                          f"known: {[t['name'] for t in self.tools]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"name": self.name, "tools": [dict(t) for t in self.tools], "tasks": [dict(t) for t in self.tasks],
                "simulated_user": None if self.simulated_user is None else dict(self.simulated_user),
                "params": dict(self.params), "randomization": dict(self.randomization),
                "format_version": FORMAT_VERSION}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskEnvSpec:
        """Rebuild from JSON (stored hashes kept: they are checked when code is imported)."""
        data = dict(data)
        if data.pop("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ConfigError("task_env: unsupported format_version")
        check_keys(data, (f.name for f in dataclasses.fields(cls)), "task_env", required=("name",))
        for key in ("tools", "tasks"):
            data[key] = tuple(data.get(key) or ())
        return cls(**data)

    def sha256(self) -> str:
        """Content hash of the spec (tool source hashes included)."""
        return sha256_json(self.to_dict())


@dataclass(frozen=True)
class GraderSpec:
    """How an agent's answers are scored: graders by reference and how their scores combine."""

    graders: tuple[Mapping[str, Any], ...]
    """``{"name", "type": "code", "ref", "sha256", "weight", "params"}`` or
    ``{"name", "type": "reward_model"|"llm_judge", "model_uri", "prompt", "weight"}``. A code grader marked
    ``"safety": true`` also guards the training signal: pairs whose chosen answer fails it are quarantined."""
    combine: str = "weighted_mean"
    """``weighted_mean`` of the scores, or ``min`` (every grader must pass)."""

    def __post_init__(self) -> None:
        if not self.graders:
            raise ConfigError("graders: at least one grader")
        if self.combine not in COMBINE:
            raise ConfigError(f"graders.combine: one of {list(COMBINE)}, got {self.combine!r}")
        graders, names = [], set()
        for i, grader in enumerate(self.graders):
            where = f"graders[{i}]"
            kind = grader.get("type", "code")
            if kind not in GRADER_TYPES:
                raise ConfigError(f"{where}.type: one of {list(GRADER_TYPES)}, got {kind!r}")
            if kind == "code":
                check_keys(grader, ("name", "type", "ref", "sha256", "weight", "params", "safety"), where,
                           required=("name", "ref"))
                if not isinstance(grader.get("safety", False), bool):
                    raise ConfigError(f"{where}.safety: true or false (a safety grader quarantines unsafe "
                                      "training signal)")
                item = _code_ref(grader, where)
            else:
                check_keys(grader, ("name", "type", "model_uri", "prompt", "weight", "params"), where,
                           required=("name", "model_uri"))
                item = dict(grader)
            item["type"] = kind
            item.setdefault("weight", 1.0)
            item.setdefault("params", {})
            weight = item["weight"]
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
                raise ConfigError(f"{where}.weight: a number >= 0")
            if not _NAME.match(str(item["name"])) or item["name"] in names:
                raise ConfigError(f"{where}.name: a unique name of letters, digits, '.', '_' or '-'")
            names.add(item["name"])
            graders.append(item)
        object.__setattr__(self, "graders", tuple(graders))
        check_finite_json(self.to_dict(), "graders")

    # what the registry tags and descriptions read from any reward part
    @property
    def ref(self) -> str:
        """``graders:<name>+<name>`` (the ``rlops.reward_ref`` tag)."""
        return "graders:" + "+".join(g["name"] for g in self.graders)

    @property
    def params(self) -> dict[str, Any]:
        """Combination settings (shown with the reference)."""
        return {"combine": self.combine}

    @property
    def source_sha256(self) -> str:
        """Hash over every grader's reference and hash."""
        return sha256_json([dict(g) for g in self.graders])

    def _code_graders(self) -> list[Mapping[str, Any]]:
        return [g for g in self.graders if g["type"] == "code"]

    def bundle_sources(self) -> dict[str, Path]:
        """Verified sources of the code graders, stored in the bundle for audit (``module.py`` each)."""
        out = {}
        for grader in self._code_graders():
            module, _ = split_reference(grader["ref"])
            path = module_source_path(module)
            if sha256_file(path) != grader["sha256"]:
                raise IntegrityError(f"grader {grader['name']!r}: source {path} changed since the spec was made")
            out[f"{module}.py"] = path
        return out

    def check_bundle_sources(self, stored: Mapping[str, Path], where: str) -> None:
        """Every code grader's source copy is in the bundle and matches its hash."""
        for grader in self._code_graders():
            name = f"{split_reference(grader['ref'])[0]}.py"
            if name not in stored:
                raise IntegrityError(f"reward/spec.json: grader {grader['name']!r} names source {where}/{name}, "
                                     "which the manifest lacks")
            if sha256_file(stored[name]) != grader["sha256"]:
                raise IntegrityError(f"{where}/{name}: stored grader source does not match its sha256")

    def grade(self, choice: Mapping[str, Any], task: Mapping[str, Any] | None = None,
              tools: list[Mapping[str, Any]] | None = None) -> dict[str, float]:
        """Scores of the code graders for one answer (``{name: score, "combined": score}``), each in [0, 1]."""
        scores: dict[str, float] = {}
        weights = {}
        for grader in self._code_graders():
            fn = load_verified(grader["ref"], grader["sha256"])
            score = float(fn(choice, task, tools=tools, **grader["params"]))
            if not math.isfinite(score) or not 0.0 <= score <= 1.0:
                raise ConfigError(f"grader {grader['name']!r} returned {score}; graders score in [0, 1]")
            scores[grader["name"]] = score
            weights[grader["name"]] = float(grader["weight"])
        if scores:
            total = sum(weights.values())
            scores["combined"] = (min(scores.values()) if self.combine == "min" else
                                  sum(scores[k] * weights[k] for k in weights) / total if total else 0.0)
        return scores

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"graders": [dict(g) for g in self.graders], "combine": self.combine, "format_version": FORMAT_VERSION}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GraderSpec:
        """Rebuild from JSON."""
        data = dict(data)
        if data.pop("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ConfigError("graders: unsupported format_version")
        check_keys(data, ("graders", "combine"), "graders", required=("graders",))
        return cls(graders=tuple(data["graders"]), combine=data.get("combine", "weighted_mean"))

    def sha256(self) -> str:
        """Content hash of the spec."""
        return sha256_json(self.to_dict())
