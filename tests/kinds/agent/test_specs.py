"""The agent bundle's env and reward parts: TaskEnvSpec (tools, tasks) and GraderSpec (graders, combination)."""

from __future__ import annotations

import json

import pytest

from rlops_plugin.bundle.hashing import sha256_file
from rlops_plugin.bundle.references import module_source_path
from rlops_plugin.errors import ConfigError
from rlops_plugin.kinds.agent import graders as builtin
from rlops_plugin.kinds.agent import triage
from rlops_plugin.kinds.agent.specs import GraderSpec, TaskEnvSpec

ROUTE = {"name": "route", "ref": "rlops_plugin.kinds.agent.triage:route"}
EXPECTED = {"name": "expected_call", "ref": "rlops_plugin.kinds.agent.graders:expected_tool_call"}
VALID = {"name": "valid_call", "ref": "rlops_plugin.kinds.agent.graders:valid_tool_call"}
TASK = {"id": "t1", "messages": [{"role": "user", "content": "my invoice is wrong"}],
        "expected": {"tool_calls": [{"name": "route", "arguments": {"queue": "billing"}}]}}


def test_json_round_trip_keeps_the_hashes():
    env, graders = triage.task_env(), triage.grader_spec()
    for spec, cls in ((env, TaskEnvSpec), (graders, GraderSpec)):
        restored = cls.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert restored == spec and restored.sha256() == spec.sha256()
    assert env.tools[0]["sha256"] == sha256_file(module_source_path("rlops_plugin.kinds.agent.triage"))
    assert env.name == "ticket-triage" and len(env.tasks) == 24
    assert graders.ref == "graders:expected_call+valid_call+no_refund"
    assert graders.params == {"combine": "weighted_mean"}
    assert set(graders.bundle_sources()) == {"rlops_plugin.kinds.agent.graders.py"}


def test_the_hash_covers_tools_tasks_and_graders():
    env = TaskEnvSpec(name="e", tools=(ROUTE,), tasks=(TASK,))
    assert TaskEnvSpec(name="e", tools=(ROUTE,)).sha256() != env.sha256()
    assert TaskEnvSpec(name="e", tools=({**ROUTE, "sha256": "1" * 64},), tasks=(TASK,)).sha256() != env.sha256()
    weighted = GraderSpec(graders=(EXPECTED, VALID))
    assert GraderSpec(graders=(EXPECTED, VALID), combine="min").sha256() != weighted.sha256()
    assert GraderSpec(graders=(EXPECTED, {**VALID, "weight": 0.0})).sha256() != weighted.sha256()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "has space"}, r"task_env.name: letters, digits"),
    ({"name": "e", "tools": ({"name": "route"},)}, r"task_env.tools\[0\].ref: required"),
    ({"name": "e", "tools": ({**ROUTE, "code": "x"},)}, r"task_env.tools\[0\]: unknown fields \['code'\]"),
    ({"name": "e", "tools": ({**ROUTE, "sha256": "abc"},)}, r"task_env.tools\[0\].sha256: a sha256 hex digest"),
    ({"name": "e", "tools": ({"name": "x", "ref": "not a ref"},)}, "is not of the form 'package.module:function'"),
    ({"name": "e", "tasks": ({"id": "a", "messages": []},)}, r"task_env.tasks\[0\].messages: a non-empty list"),
    ({"name": "e", "tasks": (TASK, TASK)}, r"task_env.tasks\[1\].id: 't1' appears twice"),
    ({"name": "e", "params": {"x": float("nan")}}, "task_env.params.x: nan is not a finite number"),
])
def test_task_env_errors_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TaskEnvSpec(**kwargs)


@pytest.mark.parametrize(("graders", "combine", "match"), [
    ((), "weighted_mean", "graders: at least one grader"),
    ((EXPECTED,), "max", r"graders.combine: one of \['weighted_mean', 'min'\]"),
    (({**EXPECTED, "type": "vibes"},), "min", r"graders\[0\].type: one of"),
    (({**EXPECTED, "weight": -1},), "min", r"graders\[0\].weight: a number >= 0"),
    (({**EXPECTED, "weight": True},), "min", r"graders\[0\].weight: a number >= 0"),
    ((EXPECTED, EXPECTED), "min", r"graders\[1\].name: a unique name"),
    (({"name": "judge", "type": "llm_judge"},), "min", r"graders\[0\].model_uri: required"),
    (({"name": "rm", "type": "reward_model", "model_uri": "models:/rm/1", "ref": "x:y"},), "min",
     r"graders\[0\]: unknown fields \['ref'\]"),
])
def test_grader_errors_name_the_field(graders, combine, match):
    with pytest.raises(ConfigError, match=match):
        GraderSpec(graders=graders, combine=combine)


def test_format_version_is_checked():
    with pytest.raises(ConfigError, match="task_env: unsupported format_version"):
        TaskEnvSpec.from_dict({**triage.task_env().to_dict(), "format_version": 99})
    with pytest.raises(ConfigError, match="graders: unsupported format_version"):
        GraderSpec.from_dict({**triage.grader_spec().to_dict(), "format_version": 99})


def test_grading_combines_code_graders_and_leaves_judges_to_their_runner():
    call = {"content": None, "tool_calls": [{"name": "route", "arguments": {"queue": "billing"}}]}
    wrong = {"content": None, "tool_calls": [{"name": "route", "arguments": {"queue": "nowhere"}}]}
    judge = {"name": "judge", "type": "llm_judge", "model_uri": "models:/judge/1", "prompt": "Is it polite?"}
    weighted = GraderSpec(graders=(EXPECTED, {**VALID, "weight": 3.0}, judge))
    assert weighted.grade(call, TASK, tools=triage.TOOLS) == {"expected_call": 1.0, "valid_call": 1.0, "combined": 1.0}
    assert weighted.grade(wrong, TASK, tools=triage.TOOLS) == {"expected_call": 0.0, "valid_call": 0.0,
                                                              "combined": 0.0}
    text = {"content": "billing", "tool_calls": []}
    assert weighted.grade(text, TASK, tools=triage.TOOLS) == {"expected_call": 0.0, "valid_call": 1.0,
                                                             "combined": 0.75}
    assert GraderSpec(graders=(EXPECTED, VALID), combine="min").grade(text, TASK, tools=triage.TOOLS)["combined"] == 0.0
    assert builtin.expected_tool_call({"content": " hi "}, {"expected": {"content": "hi"}}) == 1.0
    assert builtin.valid_tool_call({"tool_calls": [{"name": "search", "arguments": {}}]}, None, triage.TOOLS) == 0.0


def test_a_grader_out_of_range_is_refused(tmp_path, monkeypatch):
    (tmp_path / "generous_graders.py").write_text("def generous(choice, task, tools=None):\n    return 2.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = GraderSpec(graders=({"name": "generous", "ref": "generous_graders:generous"},))
    with pytest.raises(ConfigError, match=r"grader 'generous' returned 2.0; graders score in \[0, 1\]"):
        spec.grade({"content": "x"})
