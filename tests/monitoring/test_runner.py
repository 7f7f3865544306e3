"""The session end to end in process (a DecisionEngine logs to a real store, the session detects, the hook
hears), and the options of ``run_monitor``."""

import pytest

from rlops_plugin import EnvSpec
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor.model import LoadedModel
from rlops_plugin.monitoring.config import MonitorConfig, MonitorConfigError, ReportMode
from rlops_plugin.monitoring.drift import DriftMonitor
from rlops_plugin.monitoring.reference import production_reference, rollout_reference
from rlops_plugin.monitoring.runner import MonitorOptions, MonitorSession
from rlops_plugin.monitoring.triggers import TriggerEngine, parse_rules
from rlops_plugin.serving.engine import DecisionEngine
from rlops_plugin.simulation.traffic import simulate
from tests.monitoring.conftest import EngineClient


@pytest.fixture
def served(cartpole_bundle, tmp_path):
    store = open_store(tmp_path / "store.db")
    engine = DecisionEngine("policy", LoadedModel(cartpole_bundle, "models:/cart/3", "cart", "3"), seed=0)
    yield EngineClient(engine, store), engine.policies()[0]
    store.close()


def test_reward_drift_in_logged_decisions_reaches_the_rlops_on_trigger_hook(served, trigger_hook):
    client, version = served
    env = EnvSpec(id="CartPole-v1")
    simulate(client, env, 2500, seed=0, episode_prefix="ref")
    reference, pending, last_seq = production_reference(client.store, version, 2500)
    assert reference["reward"].eq(1.0).all() and reference["episode_return"].notna().sum() > 50
    config = MonitorConfig(window=250)
    engine = TriggerEngine(parse_rules(["drift:rewards:2"], config.monitors), model="cart")
    session = MonitorSession(client.store, DriftMonitor(reference, config), policy_version=version,
                             model_name="cart", triggers=engine, since_seq=last_seq, pending=pending, reports="never")
    simulate(client, env, 500, seed=100, episode_prefix="ok")
    before = session.tick()
    assert len(before) == 2 and all(s.signals["rewards"].status == "ok" for s in before)
    assert trigger_hook == []
    simulate(client, env, 500, seed=200, episode_prefix="shifted", reward_transform=lambda r: 0.9 * r)
    after = session.tick()
    assert [s.signals["rewards"].status for s in after] == ["drift", "drift"]
    (event,) = trigger_hook
    assert event.rule == "drift:rewards:2" and event.model == "cart" and event.policy_version == version
    assert event.window == after[1].index == 3 and event.evidence["windows"] == [2, 3]
    assert event.results == [{"handled": "drift:rewards:2"}] and after[1].triggers == [event]
    assert after[1].reward_mean == pytest.approx(0.9) and len(session.pending) == 36  # batches of 16


def test_rollout_reference_matches_served_traffic(served, cartpole_bundle):
    client, version = served
    reference = rollout_reference(cartpole_bundle, 5000, seed=3)
    assert len(reference) == 5000 and reference["episode_return"].notna().sum() > 100
    assert {"obs_0", "obs_3", "action", "prob_1", "entropy", "reward", "episode_end"} <= set(reference.columns)
    simulate(client, EnvSpec(id="CartPole-v1"), 1000, seed=9)
    config = MonitorConfig(window=250)
    session = MonitorSession(client.store, DriftMonitor(reference, config), policy_version=version,
                             reports="never")
    summaries = session.tick()
    assert len(summaries) == 4 and all(s.status == "ok" for s in summaries), [s.to_dict() for s in summaries]


def test_monitor_options_defaults_are_the_commands_and_errors_name_the_field():
    options = MonitorOptions()
    assert options.reference == "rollouts" and options.triggers == ("drift:*:2",) and options.actions == ()
    assert options.reports == ReportMode.DRIFT == "drift" and options.experiment == "rlops-monitoring"
    assert options.config == MonitorConfig() and options.use_mlflow and options.every_s is None
    assert MonitorOptions(triggers=["drift:any:1"], actions=["log"]).triggers == ("drift:any:1",)
    assert options.replace(max_triggers=1).max_triggers == 1
    for changes, field in [({"reports": "sometimes"}, "reports"), ({"max_triggers": 0}, "max_triggers"),
                           ({"every_s": -1.0}, "every_s"), ({"triggers": "drift:*:2"}, "triggers"),
                           ({"config": {"window": 10}}, "config"), ({"reference": ""}, "reference"),
                           ({"on_window": "print"}, "on_window"), ({"max_ticks": -1}, "max_ticks")]:
        with pytest.raises(MonitorConfigError, match=f"MonitorOptions.{field}"):
            MonitorOptions(**changes)
