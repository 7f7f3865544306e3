"""Trigger rules, events, delivery to rlops_on_trigger implementations, and trigger actions."""

import json
import logging
import types

import numpy as np
import pytest

from rlops_plugin import hookimpl, plugins
from rlops_plugin.errors import PluginError
from rlops_plugin.monitoring.config import MonitorConfigError, TriggerError
from rlops_plugin.monitoring.results import DRIFT, INSUFFICIENT, OK, ColumnResult, MonitorResult, WindowSummary
from rlops_plugin.monitoring.triggers import (
    ActionSpec,
    DriftStreakRule,
    RewardBelowRule,
    ScheduleRule,
    TriggerEngine,
    TriggerEvent,
    deliver,
    parse_duration,
    parse_rule,
    parse_rules,
    register_trigger_action,
    resolve_action,
    trigger_actions,
    unregister_trigger_action,
)


def window(index, obs=OK, rewards=OK, reward_mean=1.0, reward_std=0.0, n=1000, end_ts=None, status=None):
    column = ColumnResult("obs_2", "jensenshannon", obs, 0.1, score=0.3 if obs == DRIFT else 0.01)
    signals = {"observations": MonitorResult("observations", obs, [column]),
               "rewards": MonitorResult("rewards", rewards, [])}
    statuses = {obs, rewards}
    overall = status or (DRIFT if DRIFT in statuses else OK if OK in statuses else INSUFFICIENT)
    return WindowSummary(index, overall, n, signals, policy_version="m/1@abc", model="m",
                         reward_mean=reward_mean, reward_std=reward_std, reward_n=n,
                         start_ts=(end_ts or 0) - 10, end_ts=end_ts)


def test_drift_streak_fires_once_per_streak_and_resets():
    rule = DriftStreakRule("observations", 2)
    fired = [rule.check(window(i, obs)) for i, obs in enumerate([DRIFT, OK, DRIFT, DRIFT, DRIFT, INSUFFICIENT,
                                                                 DRIFT, DRIFT])]
    assert [i for i, e in enumerate(fired) if e] == [3, 7]
    assert fired[3]["windows"] == [2, 3] and fired[3]["drifted_columns"] == ["obs_2"]
    assert fired[3]["scores"]["obs_2"]["threshold"] == 0.1


def test_reward_below_uses_an_upper_confidence_bound_and_rearms():
    rule = RewardBelowRule(0.95, confidence=0.95)
    assert rule.check(window(0, reward_mean=0.94, reward_std=0.5, n=100)) is None  # bound 1.02 >= 0.95
    evidence = rule.check(window(1, reward_mean=0.9, reward_std=0.1, n=1000))
    assert evidence["upper_bound"] == pytest.approx(0.9 + 1.6449 * 0.1 / np.sqrt(1000), rel=1e-4)
    assert rule.check(window(2, reward_mean=0.9, reward_std=0.1)) is None  # fired already: waits to re-arm
    assert rule.check(window(3, reward_mean=1.0)) is None
    assert rule.check(window(4, reward_mean=0.5)) is not None
    assert rule.check(window(5, reward_mean=0.1, n=10)) is None  # too few rewards
    assert RewardBelowRule(0.9).check(window(6, reward_mean=0.1, status=INSUFFICIENT)) is None


def test_schedule_fires_on_decision_time():
    rule = ScheduleRule(parse_duration("1h"))
    times = [100.0, 1800.0, 3700.0, 3800.0, 7400.0]
    assert [bool(rule.check(window(i, end_ts=t))) for i, t in enumerate(times)] == [False, False, True, False, True]


@pytest.mark.parametrize(("text", "names"), [
    ("drift:*:3", ["drift:observations:3", "drift:rewards:3"]),
    ("drift:any", ["drift:any:2"]),
    ("reward-below:0.9", ["reward-below:0.9:0.95:reward"]),
    ("reward-below:150:0.99:return", ["reward-below:150:0.99:return"]),
    ("schedule:90m", ["schedule:5400s"]),
])
def test_rules_parse(text, names):
    assert [r.name for r in parse_rule(text, ["observations", "rewards"])] == names


@pytest.mark.parametrize(("text", "match"), [
    ("drift:colour:2", "signal 'colour' is not monitored"),
    ("drift:rewards:x", "invalid literal"),
    ("reward-below", "expected reward-below:THRESHOLD"),
    ("reward-below:1:1.5", "confidence must lie in"),
    ("reward-below:1:0.9:money", "column must be 'reward' or 'return'"),
    ("schedule:soon", "duration 'soon'"),
    ("retrain-now", "rules are drift:SIGNAL:K"),
])
def test_bad_rules_name_the_problem(text, match):
    with pytest.raises(MonitorConfigError, match=match):
        parse_rule(text, ["observations", "rewards"])


def test_event_to_dict_is_json_even_with_numpy_and_nan():
    event = TriggerEvent("drift:rewards:2", "m", "m/1@abc", 4, {"score": np.float64(0.4), "gap": float("nan"),
                                                                 "cols": ("a",)}, results=[object()])
    data = json.loads(json.dumps(event.to_dict()))
    assert data["evidence"] == {"score": 0.4, "gap": None, "cols": ["a"]} and data["window"] == 4
    assert data["results"][0].startswith("<object")


def test_engine_delivers_to_every_rlops_on_trigger_and_each_action(trigger_hook, tmp_path, caplog):
    second = types.SimpleNamespace(rlops_on_trigger=hookimpl(lambda event: None))  # None answers are dropped
    plugins.get_plugin_manager().register(second, name="test-silent-hook")
    path = tmp_path / "events.jsonl"
    engine = TriggerEngine(parse_rules(["drift:observations:2"], ["observations"]), model="m",
                           actions=["log", f"jsonl:{path}"])
    with caplog.at_level(logging.WARNING, logger="rlops.monitoring.triggers"):
        assert engine.observe(window(0, DRIFT)) == []
        (event,) = engine.observe(summary := window(1, DRIFT))
    assert trigger_hook == [event] and summary.triggers == [event]
    assert event.results == [{"handled": "drift:observations:2"}]
    assert event.actions == {"log": "logged", f"jsonl:{path}": str(path)}
    assert json.loads(path.read_text())["rule"] == "drift:observations:2"
    assert "rlops trigger" in caplog.text and event.id in caplog.text


def test_a_failing_hook_is_a_trigger_error():
    def rlops_on_trigger(event):
        raise KeyError("pipeline endpoint")

    plugins.get_plugin_manager().register(types.SimpleNamespace(rlops_on_trigger=hookimpl(rlops_on_trigger)),
                                          name="test-broken-hook")
    with pytest.raises(TriggerError, match="failed on drift:any:2 .*KeyError"):
        deliver(TriggerEvent("drift:any:2", "m", "m/1@abc", 0, {}))


def test_action_registry():
    calls = []
    register_trigger_action("page-oncall", lambda event, arg: calls.append((event.rule, arg)) or "paged",
                            "page a person")
    try:
        assert "page-oncall" in trigger_actions() and "log" in trigger_actions()
        assert resolve_action("page-oncall:team-a")(TriggerEvent("r", None, None, 0, {})) == "paged"
        assert calls == [("r", "team-a")]
        with pytest.raises(MonitorConfigError, match="already registered"):
            register_trigger_action("log", print)
    finally:
        unregister_trigger_action("page-oncall")
    with pytest.raises(MonitorConfigError, match="unknown trigger action 'page-oncall'; available: jsonl, log"):
        resolve_action("page-oncall")
    with pytest.raises(MonitorConfigError, match="jsonl action needs a file"):
        TriggerEngine([], actions=["jsonl"])


def test_max_events_caps_delivery_and_on_fire_runs_before_the_actions(tmp_path):
    seen = []
    path = tmp_path / "events.jsonl"
    engine = TriggerEngine(parse_rules(["drift:observations:1"], ["observations"]), model="m",
                           actions=[f"jsonl:{path}"], max_events=1,
                           on_fire=lambda event: seen.append(path.exists()))
    fired = [engine.observe(window(i, DRIFT if i != 1 else OK)) for i in range(4)]
    assert [len(f) for f in fired] == [1, 0, 0, 0] and engine.suppressed == 1  # window 2 starts a new streak
    assert seen == [False]  # called before the jsonl action wrote its file
    assert len(path.read_text().splitlines()) == 1
    with pytest.raises(MonitorConfigError, match="max triggers must be >= 1"):
        TriggerEngine([], max_events=0)


def test_a_third_party_action_registered_through_rlops_register_trigger_actions_gets_its_settings(tmp_path):
    calls = []

    def page(event, arg=None, *, team="ops", urgent=False):
        calls.append((event.rule, arg, team, urgent))
        return f"paged {team}"

    def rlops_register_trigger_actions(register):
        register("page", page, description="page a person", settings=("team", "urgent"))

    plugins.get_plugin_manager().register(types.SimpleNamespace(
        rlops_register_trigger_actions=hookimpl(rlops_register_trigger_actions)), name="test-pager")
    assert plugins.trigger_actions().get("page").plugin == "test-pager" and "page" in trigger_actions()
    spec = ActionSpec("page", "primary", {"team": "ml", "urgent": True})
    engine = TriggerEngine(parse_rules(["drift:observations:1"], ["observations"]), model="m",
                           actions=[spec, {"name": "page"}, "log"])
    (event,) = engine.observe(window(0, DRIFT))
    assert calls == [("drift:observations:1", "primary", "ml", True), ("drift:observations:1", None, "ops", False)]
    assert event.actions == {"page:primary": "paged ml", "page": "paged ops", "log": "logged"}
    with pytest.raises(MonitorConfigError, match="trigger action 'page': unknown setting 'teem'; accepted: team"):
        TriggerEngine([], actions=[ActionSpec("page", settings={"teem": "ml"})])


def test_builtin_actions_take_their_own_settings_and_refuse_unknown_keys(caplog):
    with caplog.at_level(logging.INFO, logger="rlops.monitoring.triggers"):
        assert resolve_action(ActionSpec("log", settings={"level": "INFO"}))(TriggerEvent("r", None, None, 0, {})) \
            == "logged"
    assert caplog.records[-1].levelno == logging.INFO
    with pytest.raises(MonitorConfigError, match="trigger action 'log': unknown setting 'levl'; accepted: level"):
        resolve_action({"name": "log", "settings": {"levl": "INFO"}})
    with pytest.raises(MonitorConfigError, match="trigger action 'jsonl': unknown setting 'path'; accepted: none"):
        resolve_action(ActionSpec("jsonl", "x.jsonl", {"path": "y"}))
    with pytest.raises(MonitorConfigError, match=r"unknown keys \['setting'\]"):
        ActionSpec.parse({"name": "log", "setting": {}})
    with pytest.raises(MonitorConfigError, match="unknown trigger action 'nope'") as info:
        resolve_action("nope")
    assert isinstance(info.value.__cause__, PluginError) and "run-pipeline" in str(info.value)
