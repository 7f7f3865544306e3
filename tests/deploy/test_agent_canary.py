"""Shadow and canary for agents: a real agent server (rlops-local), real traffic and reviews, the real controller.

The reviewer rates by the changed world's routing (``QUEUES_V2``), which the champion (trained on the first
world) half knows; a challenger trained on the new world is better, one trained on a scrambled routing worse.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from rlops_plugin import flavor
from rlops_plugin.audit.events import list_events
from rlops_plugin.bundle.references import reference_of
from rlops_plugin.deploy.analysis import CANARY, FINAL, INCONCLUSIVE, PROMOTED, ROLLED_BACK, SHADOW, PromotionPolicy
from rlops_plugin.deploy.local import LocalDeployments
from rlops_plugin.deploy.promotion import PromotionController
from rlops_plugin.experience.interactions import interactions_frame
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor import registry
from rlops_plugin.kinds.agent.canary import shadow_comparison
from rlops_plugin.kinds.agent.graders import expected_tool_call
from rlops_plugin.kinds.agent.judges import JudgeSpec, make_judge
from rlops_plugin.kinds.agent.triage import QUEUES, QUEUES_V2, TOOLS, build_triage_agent, task, traffic
from rlops_plugin.simulation.agent_traffic import AgentClient, simulate_agent

pytestmark = pytest.mark.integration
POLICY = PromotionPolicy(steps=[0.5], shadow_decisions=20, min_decisions_per_step=40, min_samples=20,
                         max_duration_s=3600, poll_interval_s=0)
SCRAMBLED = {word: {"billing": "technical", "accounts": "billing", "technical": "accounts"}.get(queue, "billing")
             for word, queue in QUEUES.items()}


@pytest.fixture(scope="module")
def agents(triage_agent, tmp_path_factory):
    """The first-world champion, a new-world (better) and a scrambled (worse) challenger."""
    root = tmp_path_factory.mktemp("canary-agents")
    return {"v1": triage_agent, "v2": build_triage_agent(root / "v2", queues=QUEUES_V2),
            "scrambled": build_triage_agent(root / "scrambled", queues=SCRAMBLED)}


@pytest.fixture
def canary(tracking, model_name, agents, tmp_path):
    """Register the champion (v1) and ``challenger``, deploy the champion with rlops-local; yield a factory."""
    deployments = LocalDeployments(tmp_path / "state")
    store = str(tmp_path / "store.db")

    def make(challenger: str, policy: PromotionPolicy = POLICY, clock=None) -> tuple[PromotionController, str]:
        for kind in ("v1", challenger):
            with mlflow.start_run():
                flavor.log_model(agents[kind], name="policy", registered_model_name=model_name)
        flavor.set_alias(model_name, "champion", 1)
        flavor.set_alias(model_name, "challenger", 2)
        state = deployments.create("triage", f"models:/{model_name}@champion", store=store,
                                   extra_args=["--traces", "off", "--seed", "0"])
        extra = {"clock": clock} if clock else {}
        controller = PromotionController(model_name, "triage", f"rlops-local:{tmp_path / 'state'}", store, policy,
                                         served_model="policy", **extra)
        return controller, state["url"]

    yield make
    for state in deployments.list():
        deployments.delete(state["name"])


def drive(controller, url, polls=30, tickets=40, rating=None, on_poll=None):
    """Start the controller; then alternate a batch of reviewed tickets and a poll until a final state."""
    client = AgentClient(url, "policy")
    action = controller.start()
    states = [action.state]
    try:
        for i in range(polls):
            simulate_agent(client, traffic(tickets, QUEUES_V2, seed=100 + i), tools=TOOLS, rating=rating,
                           seed=i, session_prefix=f"poll{i}")
            action = controller.poll()
            states.append(action.state)
            if on_poll is not None:
                on_poll(i, action)
            if action.state in FINAL:
                break
    finally:
        client.close()
    return action, states


def test_a_better_agent_goes_shadow_then_canary_then_is_promoted(canary, model_name, tmp_path):
    controller, url = canary("v2")
    action, states = drive(controller, url)
    assert action.state == PROMOTED, action.reason
    assert states[0] == SHADOW and CANARY in states
    assert registry.get_alias_version(model_name, "champion") == "2"
    assert registry.get_alias_version(model_name, "challenger") is None
    with open_store(str(tmp_path / "store.db")) as store:
        served = interactions_frame(store, model="policy")
        shadow = interactions_frame(store, model="policy", include_shadow=True)
    chal = controller.challenger.policy_version
    shadow_rows = shadow[shadow["role"] == "shadow"]
    assert len(shadow_rows) >= POLICY.shadow_decisions and set(shadow_rows["policy_version"]) == {chal}
    assert (served["role"] != "shadow").all()  # shadow answers are never production rows
    canary_rows = served[served["role"] == "challenger"]
    assert len(canary_rows) >= POLICY.min_decisions_per_step and set(canary_rows["policy_version"]) == {chal}
    sessions = served.groupby("session_id")["policy_version"].nunique()
    assert (sessions == 1).all()  # sticky: a conversation meets one policy
    promotion = list_events(model_name, kinds=["promotion"])[0]
    assert promotion.metrics["reward_diff"] > 0 and promotion.metrics["shadow_answers"] >= POLICY.shadow_decisions
    assert promotion.metrics["shadow_failures"] == 0
    # RLAIF on the shadow answers: a code judge that knows the new routing prefers the challenger's
    def task_of(messages):
        text = messages[-1]["content"]
        return task("t", text, next(queue for word, queue in QUEUES_V2.items() if word in text))

    judge = make_judge(JudgeSpec(name="routes-v2", ref=reference_of(expected_tool_call)))
    with open_store(str(tmp_path / "store.db")) as store:
        verdict = shadow_comparison(store, judge, model="policy", challenger=chal, task_of=task_of)
    assert verdict.pairs == len(shadow_rows) and verdict.failed == 0 and verdict.shadow_failures == 0
    assert verdict.challenger_wins > verdict.champion_wins and verdict.win_rate_ci[0] > 0.5, verdict


def test_a_worse_agent_is_rolled_back_before_full_traffic(canary, model_name):
    controller, url = canary("scrambled")
    action, states = drive(controller, url)
    assert action.state == ROLLED_BACK, action.reason
    assert PROMOTED not in states and action.test.ci_high < 0
    assert registry.get_alias_version(model_name, "champion") == "1"
    assert registry.get_alias_version(model_name, "challenger") is None
    rollback = list_events(model_name, kinds=["rollback"])[0]
    assert rollback.details["from"] == "2" and rollback.details["to"] == "1"


def test_constant_ratings_never_promote_and_the_canary_ends_inconclusive(canary, model_name):
    now = [0.0]
    controller, url = canary("v2", clock=lambda: now[0])

    def tick(i, action):
        now[0] += 200.0  # a fake clock: 3600 s of analysis pass after 18 polls

    action, states = drive(controller, url, polls=25, rating=lambda ok: 1, on_poll=tick)
    assert action.state == INCONCLUSIVE, action.reason
    assert PROMOTED not in states and ROLLED_BACK not in states
    held = [e for e in list_events(model_name, kinds=["canary_step"]) if e.decision == CANARY]
    assert held and np.isclose(controller.last_samples.champion, 1.0).all()
    assert registry.get_alias_version(model_name, "champion") == "1"
