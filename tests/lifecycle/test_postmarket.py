"""The post-market report over a real history: real registry, real audit events, real monitoring runs, real store.

One history is built per module on the session's MLflow server, through the functions that write each record in
production: ``lifecycle.train``/``register``/``crown``/``gate``/``approve``/``deploy``/``promote``/``rollback``/
``record_cycle``, the in-process deployment target driven by ``mlflow.deployments``, a shield plugin vetoing
actions in the real serving engine, and ``MonitoringRun`` logging windows and a trigger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import mlflow
import numpy as np
import pytest
from mlflow.deployments import get_deploy_client
from mlflow.deployments.interface import plugin_store

from rlops_plugin import flavor, hookimpl, plugins
from rlops_plugin.audit.events import list_events
from rlops_plugin.errors import ConfigError, RegistryError
from rlops_plugin.evaluation.gate import GatePolicy
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.experience.records import InteractionRecord, new_batch_id
from rlops_plugin.experience.store import open_store
from rlops_plugin.lifecycle import approve, crown, deploy, gate, promote, record_cycle, register, rollback, train
from rlops_plugin.lifecycle.postmarket import (
    REGISTRY_LANE,
    count_vetoes,
    parse_when,
    post_market_report,
    to_html,
    to_json,
)
from rlops_plugin.monitoring.results import WindowSummary
from rlops_plugin.monitoring.runner import MonitoringRun
from rlops_plugin.monitoring.triggers import TriggerEvent
from rlops_plugin.serving.guards import Veto
from tests.deploy.test_promotion import BANDIT, FAST, bandit_policy
from tests.deploy.test_throwaway_target import TARGET, traffic

pytestmark = pytest.mark.integration
RLOPS = [sys.executable, "-m", "rlops_plugin.cli"]
GATE = GatePolicy(checks=["lineage", "regression", "min_return"], episodes=40)
APPROVER = "alice <script>alert(1)</script>"


class _LeftEdgeShield:
    """A user's shield: vetoes action 0 where the first context feature is large, substituting action 1."""

    @hookimpl
    def rlops_shield(self, observation, action, context):
        if action == 0 and observation[0] > 0.8:
            return Veto(1, "action 0 is unsafe at the left edge")
        return None


def _monitor(name: str, version: str, statuses: list[str], trigger: bool) -> str:
    """A monitoring run of ``version`` with one window per status (and a trigger on the last), as run_monitor logs."""
    sha = flavor.load_model(f"models:/{name}/{version}").bundle_sha[:12]
    tracker = MonitoringRun(policy_version=f"{name}/{version}@{sha}", model_name=name, model_version=version)
    tracker.start({"window": 100})
    for index, status in enumerate(statuses):
        now = time.time()
        tracker.log_window(WindowSummary(index, status, 100, policy_version=f"{name}/{version}@{sha}", model=name,
                                         start_ts=now - 1, end_ts=now, message=f"window {index} {status}"))
    if trigger:
        tracker.audit_trigger(TriggerEvent("drift_streak", name, f"{name}/{version}@{sha}", len(statuses) - 1,
                                           {"drift_share": 0.75, "windows": 2}))
    tracker.end()
    return tracker.run_id


@pytest.fixture(scope="module")
def history(mlflow_server, tmp_path_factory):
    """A model's life: v1 crowned and deployed, v2 trained on logs, gated, approved, canaried and promoted; then a
    drift trigger on v1's watch, v2's monitoring, a manual rollback to v1, a cycle and a rejected candidate."""
    root = tmp_path_factory.mktemp("postmarket")
    name = f"pm-policy-{uuid.uuid4().hex[:8]}"
    store_url = str(root / "store.db")
    marks: dict[str, float] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mp.setenv("RLOPS_ACTOR", "user:ci")
        mlflow.set_tracking_uri(mlflow_server.url)
        mlflow.set_registry_uri(mlflow_server.url)
        plugin_store.register(TARGET, "tests.fixtures.throwaway.inprocess_target")
        plugins.get_plugin_manager().register(_LeftEdgeShield(), name="left-edge-shield")
        client, env, rng = None, BANDIT.make().unwrapped, np.random.default_rng(0)
        try:
            with mlflow.start_run():
                first = flavor.log_model(bandit_policy(False), name="policy")
            register(first.model_uri, name, alias=None)
            crown(name, "1", "initial champion: nothing to compare against")
            deploy(TARGET, "bandit", f"models:/{name}@champion", {"store": store_url})
            client = get_deploy_client(TARGET)
            traffic(client, store_url, env, rng, 200)
            _monitor(name, "1", ["ok", "drift", "drift"], trigger=True)
            contexts = np.random.default_rng(5).normal(size=(2000, 5)).astype(np.float32)
            best = env.expected_reward(contexts).argmax(1).astype(np.int64)
            hashes = flavor.load_model(f"models:/{name}/1").hashes()
            data = Dataset("transitions", {"obs": contexts, "action": best, "reward": np.ones(len(best)),
                                           "propensity": np.ones(len(best)), "next_obs": contexts,
                                           "done": np.ones(len(best), bool)},
                           {"env_sha": hashes["env"], "reward_sha": hashes["reward"]})
            outcome = train("bc", f"models:/{name}@champion", data, {"steps": 600, "lr": 3e-3}, register_as=name,
                            alias="challenger", eval_episodes=20)
            assert outcome.version == "2"
            gate(f"models:/{name}/2", f"models:/{name}@champion", GATE)
            approve(name, "2", actor=APPROVER, note="reviewed the <gate> & canary plan")
            final, _ = promote(name, "bandit", TARGET, store_url, FAST, served_model="policy", max_polls=80,
                               on_action=lambda action: traffic(client, store_url, env, rng, 120))
            assert final.state == "promoted", final.reason
            time.sleep(0.05)
            marks["cut"] = time.time()
            time.sleep(0.05)
            traffic(client, store_url, env, rng, 200)
            _monitor(name, "2", ["ok", "ok"], trigger=False)
            rollback(name, deployment="bandit", target=TARGET)
            record_cycle(name, "Succeeded", pipeline_run="run-42")
            with mlflow.start_run():
                rejected = flavor.log_model(bandit_policy(False), name="policy")
            gate(rejected.model_uri, f"models:/{name}@champion", GatePolicy(checks=["min_return"], episodes=5,
                                                                              min_return=1e6))
        finally:
            if client is not None:
                for state in client.list_deployments():
                    client.delete_deployment(state["name"])
            plugin_store.registry.pop(TARGET, None)
            plugins.reset()
    return {"name": name, "store": store_url, "cut": marks["cut"], "dataset": data.digest}


def _intervals(report, lane):
    return [(iv.version, iv.role, iv.end is None) for iv in report.service if iv.lane == lane]


def test_full_report_lists_every_event_service_intervals_and_evidence(history, tracking):
    name = history["name"]
    report = post_market_report(name, 0.0, store=history["store"])
    trail = list_events(name)
    assert [e["event_id"] for e in report.events] == [e.event_id for e in trail]
    assert {e.kind for e in trail} >= {"policy_update", "promotion", "deployment", "trigger", "gate", "approval",
                                       "canary_step", "rollback", "pipeline_cycle"}
    assert report.policy_kinds == ["vector"] and [v.version for v in report.versions] == ["1", "2"]
    # the champion alias: v1 crowned, v2 promoted by the canary, v1 restored by the manual rollback
    assert _intervals(report, REGISTRY_LANE) == [("1", "champion", False), ("2", "champion", False),
                                                 ("1", "champion", True)]
    lane = _intervals(report, "deployment bandit")
    assert lane[0] == ("1", "champion", False) and lane[-2:] == [("2", "champion", False), ("1", "champion", True)]
    canaries = [iv for iv in report.service if iv.role == "canary"]
    assert canaries and {iv.version for iv in canaries} == {"2"} and {iv.fraction for iv in canaries} <= {0.2, 0.5}
    registry_lane = [iv for iv in report.service if iv.lane == REGISTRY_LANE]
    assert registry_lane[0].end == registry_lane[1].start and registry_lane[1].end == registry_lane[2].start
    assert "promotion promoted" in registry_lane[1].opened_by and "rollback" in registry_lane[1].closed_by
    v1, v2 = report.versions
    assert v1.aliases == ["champion"] and v2.aliases == ["previous"] and v2.parent_version == "1"
    assert v2.seconds_in_service > 0 and v1.seconds_in_service > 0
    # monitoring: three windows of v1 (one ok, two drift), two of v2
    assert v1.window_verdicts == {"ok": 1, "drift": 2} and v2.window_verdicts == {"ok": 2}
    assert len(report.monitoring_runs) == 2 and len(report.windows) == 5
    # incidents: the trigger, the rollback, the vetoes of both versions
    kinds = [(i.kind, i.version) for i in report.incidents]
    assert ("trigger", "1") in kinds and ("rollback", "1") in kinds
    vetoes = {i.version: i.count for i in report.incidents if i.kind == "guard_veto"}
    assert vetoes == {"1": v1.vetoes, "2": v2.vetoes} and v1.vetoes > 0 and v2.vetoes > 0
    with open_store(history["store"]) as store:
        total = sum(len(b.extra.get("vetoes") or []) for _, b in store.iter_batches())
        decided = sum(b.n for _, b in store.iter_batches())
    assert v1.vetoes + v2.vetoes == total and v1.decisions + v2.decisions == decided
    # the update: before/after, the transitions dataset, the safety evaluation, the canary, who approved
    (update,) = [u for u in report.updates if u.kind == "policy_update" and u.version == "2"]
    assert update.dataset_digest == history["dataset"] and update.parent_version == "1" and update.trainer == "bc"
    assert any(k.startswith("eval/") for k in update.before_after)
    assert update.safety[0]["decision"] == "passed"
    assert {c["name"] for c in update.safety[0]["checks"]} == {"lineage", "regression", "min_return"}
    assert update.outcome == "promoted -> rolled back" and update.canary and update.canary[0]["decision"] == "started"
    assert [a["by"] for a in update.approvals] == [APPROVER]
    (rejected,) = [u for u in report.updates if u.kind == "rejected_candidate"]
    assert rejected.version is None and rejected.safety[0]["checks"][0]["passed"] is False
    assert report.vetoes_counted and not report.notes


def test_since_filters_events_intervals_windows_and_vetoes(history, tracking):
    name, cut = history["name"], history["cut"]
    report = post_market_report(name, cut, store=history["store"])
    trail = list_events(name)
    assert [e["event_id"] for e in report.events] == [e.event_id for e in trail if e.time >= cut]
    assert {e["kind"] for e in report.events} == {"rollback", "pipeline_cycle", "gate"}
    # v1's first reign and the canary ended before the cut; v2's reign spans it; v1 is back after the rollback
    assert _intervals(report, REGISTRY_LANE) == [("2", "champion", False), ("1", "champion", True)]
    assert _intervals(report, "deployment bandit") == [("2", "champion", False), ("1", "champion", True)]
    assert all(iv.start < cut for iv in report.service if iv.version == "2")
    assert len(report.windows) == 2 and {w.model_version for w in report.windows} == {"2"}
    v1, v2 = report.versions
    assert v1.window_verdicts == {} and v2.window_verdicts == {"ok": 2}
    assert [i.kind for i in report.incidents if i.kind != "guard_veto"] == ["rollback"]
    assert v1.decisions == 0 and v2.decisions == 200 and v2.vetoes > 0
    assert [u.kind for u in report.updates] == ["rejected_candidate"]
    full = post_market_report(name, 0.0, store=history["store"])
    assert full.versions[1].vetoes > v2.vetoes


def test_without_a_store_vetoes_are_not_counted_and_the_report_says_so(history, tracking):
    report = post_market_report(history["name"], 0.0)
    assert not report.vetoes_counted and all(v.vetoes is None for v in report.versions)
    assert not [i for i in report.incidents if i.kind == "guard_veto"]
    assert any("vetoes were not counted" in note for note in report.notes)
    page = to_html(report)
    assert "<b>not counted</b>" in page


def test_html_escapes_and_has_every_section_and_json_is_valid(history, tracking):
    report = post_market_report(history["name"], 0.0, store=history["store"])
    page = to_html(report, tracking_uri=tracking)
    for section in ("summary", "versions", "monitoring", "incidents", "updates", "events"):
        assert f'<section id="{section}">' in page
    assert "<script>alert(1)</script>" not in page and "alice &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "the &lt;gate&gt; &amp; canary plan" in page
    assert page.count("<tr class='rollback'>") == 2  # once as an incident, once in the event list
    audit_id = mlflow.get_experiment_by_name("rlops-audit").experiment_id
    assert f"{tracking}/#/experiments/{audit_id}/runs/{report.events[0]['run_id']}" in page
    assert report.audit_chain["verified"] and report.audit_chain["chained"] == len(list_events(history["name"]))
    assert 'Audit trail hash chain: <b class="pass">verified</b>' in page
    data = json.loads(to_json(report))
    assert data["model_name"] == history["name"] and len(data["events"]) == len(report.events)
    assert data["service"][0]["lane"] == REGISTRY_LANE and data["updates"][0]["kind"] == "policy_update"


def test_unknown_model_and_bad_period_are_typed_errors(tracking):
    with pytest.raises(RegistryError, match="no registered model named 'no-such-policy'"):
        post_market_report("no-such-policy", 0.0)
    with pytest.raises(ConfigError, match="ends .* before it starts"):
        post_market_report("no-such-policy", 10.0, 5.0)


def test_parse_when_reads_dates_and_datetimes_as_utc():
    assert parse_when("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert parse_when("2026-12-01T08:30:00") == datetime(2026, 12, 1, 8, 30, tzinfo=UTC).timestamp()
    assert parse_when("2026-12-01T08:30:00Z") == parse_when("2026-12-01T10:30:00+02:00")
    with pytest.raises(ConfigError, match="--until: 'yesterday' is not an ISO date"):
        parse_when("yesterday", "--until")


def test_agent_choices_vetoes_are_counted_per_version(tmp_path):
    """Agent interactions: each choice is a decision, the tool-call guard's vetoes are on the choice."""
    store_url = str(tmp_path / "agent.db")

    def record(version: str, vetoes: list[int], ts: float) -> InteractionRecord:
        choices = [{"index": i, "content": "", "tool_calls": [], "finish_reason": "stop", "logprob": -1.0,
                    "vetoes": [{"tool": "refund", "arguments": "{}", "reason": "over limit"}] * n}
                   for i, n in enumerate(vetoes)]
        return InteractionRecord(new_batch_id(), ts, "triage", f"triage/{version}@abcdef123456", "chat.completions",
                                 {"messages": []}, choices)

    with open_store(store_url) as store:
        store.log_interactions([record("3", [1, 0], 100.0), record("3", [2], 200.0), record("4", [0, 0, 0], 200.0),
                                record("3", [5], 900.0)])
        store.log_interactions([InteractionRecord(new_batch_id(), 150.0, "triage", "other/3@abcdef123456",
                                                  "chat.completions", {"messages": []}, [{"vetoes": [{}]}])])
    assert count_vetoes(store_url, "triage", 0.0, 500.0) == {"3": (3, 3), "4": (3, 0)}
    assert count_vetoes(store_url, "triage", 150.0, 1000.0) == {"3": (2, 7), "4": (3, 0)}


def _rlops(args, tracking, check=True):
    proc = subprocess.run(RLOPS + args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": tracking})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_cli_post_market_json_html_and_errors(history, tracking, tmp_path):
    name = history["name"]
    since = datetime.fromtimestamp(history["cut"], UTC).isoformat()
    data = json.loads(_rlops(["report", "post-market", name, "--since", since, "--store", history["store"]],
                             tracking).stdout)
    assert [e["kind"] for e in data["events"]] == [e.kind for e in list_events(name) if e.time >= history["cut"]]
    assert data["vetoes_counted"] is True
    out = tmp_path / "pm.html"
    proc = _rlops(["report", "post-market", name, "--since", "2020-01-01", "--format", "html", "--out", str(out)],
                  tracking)
    assert f"wrote {out}" in proc.stdout and '<section id="updates">' in out.read_text()
    bad = _rlops(["report", "post-market", name, "--since", "last week"], tracking, check=False)
    assert bad.returncode == 2 and "Invalid value for '--since'" in bad.stderr and "Traceback" not in bad.stderr
    missing = _rlops(["report", "post-market", "no-such-policy", "--since", "2026-01-01"], tracking, check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "error: RegistryError: no registered model named 'no-such-policy'" in missing.stderr


def test_a_tampered_trail_is_reported_broken(tracking, model_name, cartpole_bundle):
    """The report states whether the trail verified: a deleted event makes it say BROKEN with the next link."""
    from rlops_plugin.audit.events import AuditEvent, record_event

    with mlflow.start_run():
        flavor.log_model(cartpole_bundle, name="policy", registered_model_name=model_name)
    for decision in ("failed", "failed", "passed"):
        record_event(AuditEvent("gate", model_name, "1", decision=decision))
    events = list_events(model_name)
    mlflow.MlflowClient().delete_run(events[1].run_id)
    report = post_market_report(model_name, 0.0)
    assert not report.audit_chain["verified"] and report.audit_chain["first_break"]["run_id"] == events[2].run_id
    assert '<b class="fail">BROKEN</b>' in to_html(report, tracking_uri=tracking)
