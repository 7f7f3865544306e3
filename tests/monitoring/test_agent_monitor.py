"""Drift monitors for agents: the same monitor, session, triggers and MLflow run over an agent's interactions.

Traffic is the triage world's tickets answered by ``route(queue)`` calls, written as ``InteractionRecord``s and
feedback events through the real store API (SQLite in ``tmp_path``), read back by the monitor as a vector
policy's decisions are.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.records import InteractionRecord, new_batch_id
from rlops_plugin.experience.store import open_store
from rlops_plugin.kinds.agent.triage import QUEUES, TEMPLATES, TOOLS, tickets
from rlops_plugin.monitoring.agent import (
    InteractionFrames,
    agent_frame,
    keyword_vocabulary,
    load_interactions,
    production_interactions,
    vocabulary_of,
)
from rlops_plugin.monitoring.config import AGENT_MONITORS, MonitorConfig
from rlops_plugin.monitoring.drift import DriftMonitor
from rlops_plugin.monitoring.runner import MonitorOptions, MonitorSession, run_monitor
from rlops_plugin.monitoring.triggers import TriggerEngine, parse_rules

VERSION = "triage/1@abc123def456"
WINDOW = 200
NEW_PRODUCTS = {"delivery": "shipping", "package": "shipping"}
"""A new product line: shipping tickets, routed to a queue the reference never saw."""


def traffic(store, n, seed, *, queues=QUEUES, p_up=0.85, p_rated=0.5, p_refuse=0.03, role="champion",
            version=VERSION, vetoed=0.0):
    """``n`` answered tickets (10% routed to a wrong queue, ``p_refuse`` refused), ``p_rated`` of them rated."""
    rng = np.random.default_rng(seed)
    pool = tickets(TEMPLATES, queues)
    names = sorted(set(queues.values()))
    records, events = [], []
    for i in range(n):
        text, queue = pool[rng.integers(len(pool))]
        if rng.random() < p_refuse:
            choice = {"index": 0, "content": "Sorry, I can't help with that.", "tool_calls": [], "vetoes": []}
        else:
            routed = queue if rng.random() >= 0.1 else names[rng.integers(len(names))]
            choice = {"index": 0, "content": None, "vetoes": [],
                      "tool_calls": [{"id": f"call_{seed}_{i}", "name": "route", "arguments": {"queue": routed}}]}
        if rng.random() < vetoed:
            choice["vetoes"] = [{"tool": "route", "arguments": {}, "reason": "test"}]
        record = InteractionRecord(interaction_id=new_batch_id(), ts=time.time(), model="triage",
                                   policy_version=version, endpoint="chat.completions",
                                   request={"messages": [{"role": "user", "content": text}], "tools": TOOLS,
                                            "sampling": {"n": 1, "temperature": 1.0}},
                                   choices=[choice], role=role, session_id=f"s{seed}-{i // 3}")
        records.append(record)
        if rng.random() < p_rated:
            events.append(parse_feedback({"interaction_id": record.interaction_id, "choice": 0, "kind": "rating",
                                          "scale": "thumbs", "value": 1 if rng.random() < p_up else -1}))
    store.log_interactions(records)
    if events:
        store.add_feedback(events)
    return records


def session_for(store, windows=20, *, config=None, rules=(), version=VERSION):
    """A session over ``version``'s interactions after a production reference of ``windows`` windows."""
    config = (config or MonitorConfig(window=WINDOW)).for_kind("agent")
    reference, pending, last_seq = production_interactions(store, version, windows * config.window)
    frames = InteractionFrames(store, version, vocabulary=vocabulary_of(reference))
    engine = TriggerEngine(parse_rules(rules, config.monitors), model="triage") if rules else None
    return MonitorSession(store, DriftMonitor(reference, config, unit=frames.unit), policy_version=version,
                          model_name="triage", triggers=engine, since_seq=last_seq, pending=pending, frames=frames,
                          reports="never")


def test_one_row_per_production_choice_with_its_features_and_feedback(tmp_path):
    from rlops_plugin.kinds.agent.graders import valid_tool_call
    from rlops_plugin.kinds.agent.judges import JudgeSpec, make_judge

    with open_store(tmp_path / "store.db") as store:
        answered, _ = traffic(store, 2, seed=0, p_refuse=0.0, p_rated=0.0)
        store.log_interactions([InteractionRecord(
            interaction_id=new_batch_id(), ts=time.time(), model="triage", policy_version=VERSION,
            endpoint="chat.completions", request={"messages": [
                {"role": "system", "content": "You route tickets."},
                {"role": "user", "content": "delivery problem today"}], "tools": TOOLS},
            choices=[{"index": 0, "content": "Sorry, I cannot route that.", "tool_calls": [], "vetoes": [{}]}])])
        traffic(store, 5, seed=1, role="shadow")  # a challenger's shadow answers: never production traffic
        store.add_feedback([
            parse_feedback({"interaction_id": answered.interaction_id, "kind": "rating", "value": 4, "scale": "1-5"}),
            parse_feedback({"interaction_id": answered.interaction_id, "kind": "outcome", "value": 0.0})])
        rows, last_seq = load_interactions(store, policy_version=VERSION)
        assert len(rows) == 3 and last_seq >= 3 and set(rows["role"]) == {"champion"}
        frames = InteractionFrames(store, VERSION, vocabulary=["problem", "today"],
                                   judge=make_judge(JudgeSpec.from_function("valid", valid_tool_call)))
        frame = frames.complete(rows)
    first, third = frame.iloc[0], frame.iloc[2]
    assert first["tool"] == "route" and first["action"].startswith("route(queue=") and first["n_tool_calls"] == 1
    assert first["rating"] == pytest.approx(0.75) and first["outcome"] == 0.0 and first["reward"] == 0.0
    assert first["refusal"] == 0.0 and first["vetoed"] == 0.0 and first["judge_score"] == 1.0
    assert first["prompt_words"] == len(first["user_text"].split()) and first["prompt_turns"] == 1
    assert (third["tool"], third["action"], third["refusal"], third["vetoed"]) == ("none", "none", 1.0, 1.0)
    assert third["prompt_chars"] == len("delivery problem today")  # the system prompt is not the user's
    assert (third["topic_problem"], third["topic_today"], third["topic_oov"]) == (1.0, 1.0, pytest.approx(1 / 3))
    assert np.isnan(third["rating"]) and np.isnan(third["reward"])
    assert vocabulary_of(frame) == ["problem", "today"]


def test_the_topic_vocabulary_is_the_references_most_frequent_words_without_stop_words():
    texts = ["my invoice is wrong", "my login is wrong", "help with invoice", "my crash problem", "refund?"]
    assert keyword_vocabulary(texts, size=3) == ["invoice", "is", "wrong"]  # 'my' is in 60% of the messages
    assert keyword_vocabulary(texts, size=3) == keyword_vocabulary(list(reversed(texts)), size=3)
    frame = agent_frame(pd.DataFrame({"messages": [[{"role": "user", "content": t}] for t in texts]}))
    assert [c for c in frame.columns if c.startswith("topic_")] == ["topic_invoice", "topic_is", "topic_wrong",
                                                                    "topic_oov"]
    assert frame["topic_oov"].tolist()[-1] == 1.0 and frame["tool"].eq("none").all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_windows_from_the_reference_distribution_do_not_drift(tmp_path, seed):
    with open_store(tmp_path / "store.db") as store:
        traffic(store, 30 * WINDOW, seed)
        session = session_for(store, 30, rules=["drift:*:1"])
        traffic(store, 2 * WINDOW, seed + 100)
        summaries = session.tick()
    assert [s.status for s in summaries] == ["ok", "ok"], [s.drifted_columns() for s in summaries]
    assert set(summaries[0].signals) == set(AGENT_MONITORS) and session.triggers.events == []
    assert all(r.status == "ok" for r in summaries[0].signals.values()
               if r.signal not in ("outcomes",)), summaries[0].to_dict()
    assert summaries[0].signals["outcomes"].status == "insufficient"  # no outcome was reported


def test_a_new_product_line_routed_elsewhere_drifts_the_tool_calls_and_fires_drift_tools(tmp_path, trigger_hook):
    with open_store(tmp_path / "store.db") as store:
        traffic(store, 20 * WINDOW, seed=0)
        session = session_for(store, rules=["drift:tools:2"])
        traffic(store, 2 * WINDOW, seed=1)
        traffic(store, 100, seed=2, role="shadow", queues=NEW_PRODUCTS)  # shadow answers are not traffic
        before = session.tick()
        heard_before = list(trigger_hook)
        traffic(store, 2 * WINDOW, seed=3, queues={**QUEUES, **NEW_PRODUCTS})
        after = session.tick()
    assert [s.signals["tools"].status for s in before] == ["ok", "ok"] and heard_before == []
    assert [s.signals["tools"].status for s in after] == ["drift", "drift"]
    assert "action" in after[0].signals["tools"].drifted_columns()
    assert after[0].signals["topics"].status == "drift" and "topic_oov" in after[0].drifted_columns()
    (event,) = trigger_hook
    assert event.rule == "drift:tools:2" and event.window == 3 and event.evidence["windows"] == [2, 3]
    assert event.policy_version == VERSION and "action" in event.evidence["scores"]
    assert after[1].triggers == [event] and session.pending.empty


def test_a_drop_in_ratings_drifts_the_ratings_and_fires_reward_below(tmp_path, trigger_hook):
    with open_store(tmp_path / "store.db") as store:
        traffic(store, 20 * WINDOW, seed=0)
        session = session_for(store, rules=["drift:ratings:2", "reward-below:0.75"])
        traffic(store, WINDOW, seed=1)
        traffic(store, 2 * WINDOW, seed=2, p_up=0.55)
        summaries = session.tick()
    assert [s.signals["ratings"].status for s in summaries] == ["ok", "drift", "drift"]
    assert [s.signals["tools"].status for s in summaries] == ["ok", "ok", "ok"]
    assert summaries[2].reward_mean < 0.65 < 0.8 < summaries[0].reward_mean
    assert sorted(e.rule for e in trigger_hook) == ["drift:ratings:2", "reward-below:0.75:0.95:reward"]


def test_a_window_with_too_few_interactions_is_insufficient_data_and_never_triggers(tmp_path, trigger_hook):
    config = MonitorConfig(window=40, min_window_decisions=100)
    with open_store(tmp_path / "store.db") as store:
        traffic(store, 2000, seed=0)
        session = session_for(store, 50, config=config, rules=["drift:any:1", "drift:tools:1", "reward-below:0.9"])
        traffic(store, 80, seed=1, queues=NEW_PRODUCTS, p_up=0.0)  # drifted in every way, but too little of it
        summaries = session.tick()
    assert [s.status for s in summaries] == ["insufficient", "insufficient"]
    assert summaries[0].message == "insufficient data: 40 interactions, need 100"
    assert all(r.status == "insufficient" for r in summaries[0].signals.values())
    assert trigger_hook == [] and summaries[0].to_dict()["status"] == "insufficient"
    sparse = MonitorConfig(window=WINDOW)
    with open_store(tmp_path / "sparse.db") as store:
        traffic(store, 20 * WINDOW, seed=0)
        session = session_for(store, config=sparse)
        traffic(store, WINDOW, seed=1, p_rated=0.05)
        (summary,) = session.tick()
    ratings = summary.signals["ratings"]
    assert ratings.status == "insufficient" and "values, need 30" in ratings.message
    assert summary.status == "ok"  # the other signals still give their verdict


def test_guard_vetoes_appearing_drift_the_vetoes_signal(tmp_path):
    with open_store(tmp_path / "store.db") as store:
        traffic(store, 20 * WINDOW, seed=0)
        session = session_for(store)
        traffic(store, WINDOW, seed=1, vetoed=0.05)
        (summary,) = session.tick()
    assert summary.signals["vetoes"].status == "drift" and summary.signals["tools"].status == "ok"


def test_run_monitor_dispatches_on_the_agent_kind_and_a_task_suite_reference(triage_agent, triage_model_dir,
                                                                              tmp_path):
    from rlops_plugin.monitoring.runner import resolve_policy

    policy = resolve_policy(triage_model_dir)
    assert policy.kind == "agent"
    with open_store(tmp_path / "store.db") as store:
        traffic(store, 240, seed=0, version=policy.policy_version)
    outcome = run_monitor(triage_model_dir, str(tmp_path / "store.db"), MonitorOptions(
        reference="rollouts:480", config=MonitorConfig(window=120), triggers=["drift:tools:2"], use_mlflow=False,
        reports="never"))
    assert len(outcome.summaries) == 2 and set(outcome.summaries[0].signals) == set(AGENT_MONITORS)
    first = outcome.summaries[0]
    assert first.signals["tools"].status in ("ok", "drift") and first.signals["tools"].columns[0].n_reference == 480
    assert first.signals["ratings"].status == "insufficient"  # a task suite has no ratings


@pytest.mark.integration
def test_the_cli_records_an_agent_monitor_to_mlflow(tracking, triage_model_dir, tmp_path, trigger_hook):
    import mlflow
    from click.testing import CliRunner

    from rlops_plugin.monitoring.cli import monitor
    from rlops_plugin.monitoring.runner import resolve_policy

    version = resolve_policy(triage_model_dir).policy_version
    store = tmp_path / "store.db"
    with open_store(store) as experience:
        traffic(experience, 20 * WINDOW, seed=0, version=version)
        traffic(experience, 2 * WINDOW, seed=1, version=version)
        traffic(experience, 2 * WINDOW, seed=2, version=version, queues={**QUEUES, **NEW_PRODUCTS})
    result = CliRunner().invoke(monitor, [
        "--model", triage_model_dir, "--store", str(store), "--reference", f"production:{20 * WINDOW}",
        "--window", str(WINDOW), "--trigger", "drift:tools:2", "--experiment", "agent-monitor-test"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "TRIGGER drift:tools:2 on window 3" in result.output and ", agent)" in result.output
    (event,) = trigger_hook
    assert event.policy_version == version

    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("agent-monitor-test").experiment_id])
    assert run.data.tags["rlops.policy_kind"] == "agent" and run.data.tags["rlops.policy_version"] == version
    assert run.data.params["monitors"] == ",".join(AGENT_MONITORS) and run.info.status == "FINISHED"
    tools = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "monitor/tools/drift")}
    assert tools == {0: 0.0, 1: 0.0, 2: 1.0, 3: 1.0}
    assert client.get_metric_history(run.info.run_id, "monitor/tools/action/score")
    summary = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/windows/000003/summary.json")
    assert summary["signals"]["tools"]["status"] == "drift" and summary["triggers"][0]["rule"] == "drift:tools:2"
    window3 = {a.path for a in client.list_artifacts(run.info.run_id, "windows/000003")}
    assert "windows/000003/window-000003.html" in window3  # the Evidently report of a drifting window
    assert [a.path for a in client.list_artifacts(run.info.run_id, "triggers")] == \
        ["triggers/000003-drift_tools_2.json"]
    calibration = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/calibration.json")
    assert calibration["tools"]["action"]["calibrated"] is True
    assert json.loads(json.dumps(summary))["n_decisions"] == WINDOW
