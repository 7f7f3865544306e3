import json

import pytest

from rlops_plugin import plugins
from rlops_plugin.errors import ConfigError
from rlops_plugin.simulation.scenarios import ScenarioSuite, run_suite

SUITE = {
    "name": "t", "version": "2",
    "constraints": [{"name": "upright", "type": "observation_bound", "index": 2, "low": -0.1, "high": 0.1,
                     "max_per_episode": 5}],
    "scenarios": [
        {"name": "nominal", "episodes": 3},
        {"name": "long_pole", "env": {"params": {"length": 0.9}}, "episodes": 3, "min_return": 1000},
        {"name": "shove", "initial_state": {"low": [0, 0, 0.15, 0], "high": [0, 0, 0.16, 0]}, "episodes": 2,
         "constraints": [{"name": "no_left_when_falling_right", "type": "forbidden_action", "action": 0,
                          "when": {"index": 2, "above": 0.1}}]},
        {"name": "noisy", "perturbations": {"observation_noise": 0.5, "action_noise": 0.5}, "episodes": 3},
    ],
}


def test_suite_runs_and_reports_reasons(strong_bundle):
    results = {r.scenario: r for r in run_suite(strong_bundle.policy, strong_bundle.env_spec,
                                                ScenarioSuite.from_dict(SUITE))}
    assert results["nominal"].passed
    assert not results["long_pole"].passed
    assert any("below the scenario minimum 1000" in f for f in results["long_pole"].failures)
    assert results["shove"].report.returns.mean() < results["nominal"].report.returns.mean()
    assert results["noisy"].report.returns.mean() < results["nominal"].report.returns.mean()
    assert json.dumps(results["shove"].to_dict())


def test_suite_files_hash_and_round_trip(tmp_path):
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(SUITE))
    suite = ScenarioSuite.load(str(path))
    assert ScenarioSuite.from_dict(suite.to_dict()).sha256() == suite.sha256()
    changed = dict(SUITE, version="3")
    assert ScenarioSuite.from_dict(changed).sha256() != suite.sha256()


def test_builtin_suite_comes_from_the_scenarios_hook():
    entry = plugins.scenario_suites().get("cartpole-safety")  # registered by rlops_register_scenarios
    assert entry.plugin == "rlops_plugin.default_plugins.scenarios"
    assert [s.name for s in ScenarioSuite.load("cartpole-safety").scenarios][0] == "nominal"


@pytest.mark.parametrize("change, message", [
    ({"scenarios": [{"name": "x", "env": {"params": {"pole_length": 2}}}]}, r"'pole_length' is unknown"),
    ({"scenarios": [{"name": "x", "env": {"parms": {}}}]}, r"env: unknown fields \['parms'\]"),
    ({"scenarios": [{"name": "x", "episodes": 0}]}, "episodes: must be at least 1"),
    ({"scenarios": [{"name": "x", "perturbations": {"wind": 1}}]}, "only observation_noise"),
    ({"scenarios": [{"name": "x", "initial_state": {"low": [0], "high": [0]}}]}, "initial_state has 1 values"),
    ({"scenarios": []}, "has no scenarios"),
    ({"constraints": [{"name": "c", "type": "observation_bound", "index": 9, "low": 0}]}, "index 9 outside 0..3"),
    ({"constraints": [{"name": "c", "type": "teleport"}]}, "type must be one of"),
    ({"constraints": [{"name": "c", "type": "forbidden_action", "action": 5}]}, "action 5 outside 0..1"),
])
def test_bad_suites_are_refused_before_running(strong_bundle, change, message):
    with pytest.raises(ConfigError, match=message):
        run_suite(strong_bundle.policy, strong_bundle.env_spec, ScenarioSuite.from_dict({**SUITE, **change}))


def test_unknown_suite_reference():
    with pytest.raises(ConfigError, match="neither a registered suite"):
        ScenarioSuite.load("no-such-suite")
