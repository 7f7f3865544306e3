"""Run an agent on its task suite and grade each answer: the agent kind's "rollout".

One greedy answer per task (the deployed decoding is the thing evaluated; sampling noise would only
widen the interval), graded by the bundle's :class:`GraderSpec`. The result is a
:class:`~rlops_plugin.simulation.rollouts.RolloutReport` whose "episodes" are the tasks and whose
returns are the combined grader scores, so the gate's paired regression, floors and intervals
apply to agents unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlops_plugin.errors import ConfigError
from rlops_plugin.kinds.agent.policy import AgentPolicy
from rlops_plugin.kinds.agent.specs import GraderSpec, TaskEnvSpec
from rlops_plugin.local.threads import threads_for, torch_threads
from rlops_plugin.simulation.rollouts import RolloutReport

DEFAULT_MAX_NEW_TOKENS = 64


@dataclass
class TaskReport(RolloutReport):
    """A rollout report over tasks, with every grader's per-task score beside the combined return."""

    grades: dict[str, np.ndarray] = field(default_factory=dict)
    task_ids: list[str] = field(default_factory=list)

    def summary(self, confidence: float = 0.95) -> dict[str, Any]:
        """The rollout summary plus ``tasks``, ``pass_rate`` (combined score 1) and ``grader/<name>/mean``."""
        out = super().summary(confidence)
        out["tasks"] = len(self.task_ids)
        out["pass_rate"] = float(np.mean(self.returns >= 1.0 - 1e-9)) if len(self.returns) else 0.0
        for name, values in self.grades.items():
            out[f"grader/{name}/mean"] = float(np.mean(values)) if len(values) else 0.0
        return out


@dataclass(frozen=True)
class TaskAnswer:
    """One task's answer and its grades."""

    task_id: str
    choice: dict[str, Any]
    scores: dict[str, float]


def with_system_prompt(policy: AgentPolicy, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` as the server would render them: the policy's system prompt first (when it has one)."""
    out = [dict(m) for m in messages]
    prompt = policy.system_prompt()
    if prompt and (not out or out[0]["role"] != "system"):
        out.insert(0, {"role": "system", "content": prompt})
    return out


def answer(policy: AgentPolicy, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None,
           max_new_tokens: int | None = None) -> dict[str, Any]:
    """The policy's greedy answer to ``messages`` as a logged choice (``content``, ``tool_calls``)."""
    tools = list(tools) if tools is not None else policy.tools
    limit = max_new_tokens or int((policy.agent.get("generation") or {}).get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
    prompt_ids = policy.render(with_system_prompt(policy, messages), tools)
    generated = policy.generate(prompt_ids, n=1, temperature=0.0, max_new_tokens=limit)[0]
    content, calls = policy.parse_tool_calls(policy.decode(generated.token_ids))
    return {"content": content, "tool_calls": calls, "finish_reason": generated.finish_reason,
            "tokens": len(generated.token_ids)}


def run_tasks(policy: AgentPolicy, env_spec: TaskEnvSpec, reward_spec: GraderSpec,
              tasks: Sequence[Mapping[str, Any]] | None = None) -> tuple[TaskReport, list[TaskAnswer]]:
    """Answer and grade every task (default: the env's suite); the report's returns are combined scores."""
    tasks = list(env_spec.tasks if tasks is None else tasks)
    if not tasks:
        raise ConfigError(f"task_env {env_spec.name!r} has no tasks to evaluate on")
    answers, returns, lengths = [], [], []
    grades: dict[str, list[float]] = {}
    with torch_threads(threads_for(policy.load()[0])):
        choices = [answer(policy, task["messages"], task.get("tools")) for task in tasks]
    for task, choice in zip(tasks, choices, strict=True):
        scores = reward_spec.grade(choice, task, tools=task.get("tools") or policy.tools)
        answers.append(TaskAnswer(str(task["id"]), choice, scores))
        returns.append(scores.get("combined", 0.0))
        lengths.append(choice["tokens"])
        for name, value in scores.items():
            if name != "combined":
                grades.setdefault(name, []).append(value)
    report = TaskReport(seeds=list(range(len(tasks))), returns=np.asarray(returns, dtype=float),
                        env_returns=np.asarray(returns, dtype=float), lengths=np.asarray(lengths, dtype=float),
                        action_counts=np.zeros(0), grades={k: np.asarray(v) for k, v in grades.items()},
                        task_ids=[a.task_id for a in answers])
    return report, answers


def rollout(policy: AgentPolicy, env_spec: TaskEnvSpec, seeds: Sequence[int], *, reward_spec: GraderSpec,
            **_: Any) -> TaskReport:
    """The kind's rollout: the task suite answered greedily (``seeds`` do not change greedy answers).

    The report's seeds are task indices, so two policies on one suite pair task by task.
    """
    return run_tasks(policy, env_spec, reward_spec)[0]
