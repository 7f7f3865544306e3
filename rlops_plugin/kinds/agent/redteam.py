"""Red-team suites for agents: prompt injection, forbidden tools, harmful requests, PII leakage.

A suite is JSON: safety graders (code graders by ``module:function`` + source hash, as in a
:class:`GraderSpec`) and cases, each a transcript (user text, or tool results carrying an injection),
the tools offered, the graders that judge it and how many failing answers it tolerates. Suites are
registered through ``rlops_register_scenarios`` like the vector scenario suites; the gate's
``scenarios`` check runs them for agent candidates, and their hash goes into the gate's record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlops_plugin import plugins
from rlops_plugin.bundle.hashing import sha256_json
from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.errors import ConfigError
from rlops_plugin.kinds.agent.policy import AgentPolicy
from rlops_plugin.kinds.agent.specs import GraderSpec
from rlops_plugin.kinds.agent.tasks import TaskReport, answer, with_system_prompt
from rlops_plugin.simulation.scenarios import ScenarioResult

CATEGORIES = ("prompt_injection", "tool_result_injection", "forbidden_tool", "harmful", "pii", "other")


@dataclass(frozen=True)
class RedTeamCase:
    """One adversarial transcript, the safety graders that must pass on it and its failure limit."""

    name: str
    category: str
    messages: tuple[Mapping[str, Any], ...]
    graders: tuple[str, ...]
    tools: tuple[Mapping[str, Any], ...] | None = None
    """Tools offered (default: the agent's own); offer a forbidden tool to test that it is not called."""
    samples: int = 1
    """1: the greedy answer; more: answers sampled at the agent's default temperature on fixed seeds."""
    max_failures: int = 0
    """Answers of ``samples`` that may fail a grader before the case fails."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out = {"name": self.name, "category": self.category, "messages": [dict(m) for m in self.messages],
               "graders": list(self.graders), "samples": self.samples, "max_failures": self.max_failures}
        if self.tools is not None:
            out["tools"] = [dict(t) for t in self.tools]
        return out


@dataclass(frozen=True)
class RedTeamSuite:
    """Named red-team cases sharing a set of safety graders (the agent kind's scenario suite)."""

    name: str
    graders: GraderSpec
    cases: tuple[RedTeamCase, ...]
    version: str = "1"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RedTeamSuite:
        """Validate a suite: known keys, unique case names, graders that exist, limits in range."""
        check_keys(data, ("name", "version", "kind", "description", "graders", "cases"), "red-team suite",
                   required=("name", "graders", "cases"))
        if data.get("kind", "agent") != "agent":
            raise ConfigError(f"red-team suite {data['name']!r}: kind must be 'agent'")
        graders = GraderSpec(graders=tuple(data["graders"]), combine="min")
        if any(g["type"] != "code" for g in graders.graders):
            raise ConfigError(f"red-team suite {data['name']!r}: safety graders are code graders")
        known = {g["name"] for g in graders.graders}
        cases, names = [], set()
        for i, case in enumerate(data["cases"]):
            where = f"red-team suite {data['name']!r}: cases[{i}]"
            check_keys(case, ("name", "category", "messages", "graders", "tools", "samples", "max_failures",
                              "description"), where, required=("name", "messages", "graders"))
            if case["name"] in names:
                raise ConfigError(f"{where}.name: {case['name']!r} appears twice")
            names.add(case["name"])
            category = case.get("category", "other")
            if category not in CATEGORIES:
                raise ConfigError(f"{where}.category: one of {list(CATEGORIES)}, got {category!r}")
            unknown = sorted(set(case["graders"]) - known)
            if unknown or not case["graders"]:
                raise ConfigError(f"{where}.graders: {unknown or 'none'} not among the suite's graders {sorted(known)}")
            samples, limit = int(case.get("samples", 1)), int(case.get("max_failures", 0))
            if samples < 1 or not 0 <= limit < samples:
                raise ConfigError(f"{where}: samples >= 1 and 0 <= max_failures < samples (got {samples}, {limit})")
            if not isinstance(case["messages"], list) or not case["messages"]:
                raise ConfigError(f"{where}.messages: a non-empty list of chat messages")
            tools = case.get("tools")
            cases.append(RedTeamCase(case["name"], category, tuple(dict(m) for m in case["messages"]),
                                     tuple(case["graders"]), None if tools is None else tuple(tools), samples, limit))
        if not cases:
            raise ConfigError(f"red-team suite {data['name']!r} has no cases")
        return cls(str(data["name"]), graders, tuple(cases), str(data.get("version", "1")))

    @classmethod
    def load(cls, ref: str | Path) -> RedTeamSuite:
        """A registered suite name or a JSON file."""
        if isinstance(ref, str) and ref in plugins.scenario_suites():
            suite = plugins.scenario_suites().get(ref).value
            suite = suite() if callable(suite) and not isinstance(suite, RedTeamSuite) else suite
            if not isinstance(suite, RedTeamSuite):
                raise ConfigError(f"scenario suite {ref!r} is for vector policies, not a red-team suite for agents")
            return suite
        path = Path(ref)
        if not path.is_file():
            known = ", ".join(plugins.scenario_suites().names()) or "none"
            raise ConfigError(f"red-team suite {str(ref)!r} is neither a registered suite ({known}) nor a file")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "version": self.version, "kind": "agent",
                "graders": [dict(g) for g in self.graders.graders], "cases": [c.to_dict() for c in self.cases]}

    def sha256(self) -> str:
        """Content hash (graders' source hashes included), recorded with every gate decision that used it."""
        return sha256_json(self.to_dict())


def run_redteam(policy: AgentPolicy, suite: RedTeamSuite, episodes_scale: float = 1.0) -> list[ScenarioResult]:
    """Answer every case (greedy, or ``samples`` seeded samples) and grade it with its safety graders."""
    results = []
    for case in suite.cases:
        samples = max(1, round(case.samples * episodes_scale)) if case.samples > 1 else 1
        limit = min(case.max_failures, samples - 1)
        spec = GraderSpec(graders=tuple(g for g in suite.graders.graders if g["name"] in case.graders),
                          combine="min")
        tools = list(case.tools) if case.tools is not None else policy.tools
        choices = [answer(policy, case.messages, tools)] if samples == 1 else _sampled(policy, case, tools, samples)
        grades = [spec.grade(choice, {"messages": list(case.messages)}, tools=tools) for choice in choices]
        violations = {name: [1.0 - g[name] for g in grades] for name in case.graders}
        failed = sum(g["combined"] < 1.0 for g in grades)
        failures = []
        if failed > limit:
            broken = sorted({n for g in grades for n in case.graders if g[n] < 1.0})
            failures.append(f"{failed} of {samples} answers failed {', '.join(broken)} (limit {limit}); "
                            f"e.g. {_show(choices[next(i for i, g in enumerate(grades) if g['combined'] < 1.0)])}")
        returns = np.asarray([g["combined"] for g in grades], dtype=float)
        report = TaskReport(seeds=list(range(samples)), returns=returns, env_returns=returns,
                            lengths=np.asarray([c.get("tokens", 0) for c in choices], dtype=float),
                            action_counts=np.zeros(0), grades={n: 1.0 - np.asarray(v) for n, v in violations.items()},
                            task_ids=[case.name] * samples)
        results.append(ScenarioResult(case.name, report, violations, failures))
    return results


def _sampled(policy: AgentPolicy, case: RedTeamCase, tools: list[Any], samples: int) -> list[dict[str, Any]]:
    generation = policy.agent.get("generation") or {}
    prompt_ids = policy.render(with_system_prompt(policy, case.messages), tools)
    out = []
    for seed in range(samples):
        g = policy.generate(prompt_ids, n=1, temperature=float(generation.get("temperature", 1.0)),
                            top_p=float(generation.get("top_p", 1.0)),
                            max_new_tokens=int(generation.get("max_new_tokens", 64)), seed=seed)[0]
        content, calls = policy.parse_tool_calls(policy.decode(g.token_ids))
        out.append({"content": content, "tool_calls": calls, "tokens": len(g.token_ids)})
    return out


def _show(choice: Mapping[str, Any]) -> str:
    calls = choice.get("tool_calls") or []
    return ("calls " + json.dumps(calls))[:200] if calls else repr((choice.get("content") or "")[:120])
