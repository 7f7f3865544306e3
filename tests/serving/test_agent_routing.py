"""Agent routing in-process: a shadow challenger that errors or times out never touches the champion's answer."""

from __future__ import annotations

import asyncio
import time

import pytest
from kserve.protocol.rest.openai.types import ChatCompletionRequest

from rlops_plugin import PolicyBundle, flavor
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.join import JoinConfig
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor.model import load_model_with_source
from rlops_plugin.kinds.agent.canary import canary_samples
from rlops_plugin.kinds.agent.triage import QUEUES_V2, TOOLS, grader_spec, task_env, tickets
from rlops_plugin.serving.agent import AgentModel, AgentServingOptions
from rlops_plugin.serving.routing import RoutingConfig

TICKETS = tickets()[:6]


@pytest.fixture(scope="module")
def two_agents(triage_agent, tmp_path_factory):
    """The triage agent saved twice: as champion, and (with the changed world's task suite) as challenger."""
    root = tmp_path_factory.mktemp("routing-agents")
    flavor.save_model(triage_agent, root / "champion")
    flavor.save_model(PolicyBundle(triage_agent.policy, task_env(QUEUES_V2, "ticket-triage-v2"), grader_spec()),
                      root / "challenger")
    return load_model_with_source(str(root / "champion")), load_model_with_source(str(root / "challenger"))


def ask(model, text, session):
    request = ChatCompletionRequest(model="triage", messages=[{"role": "user", "content": text}], tools=TOOLS,
                                    temperature=0.0, max_tokens=40, user=session)
    return model.create_chat_completion(request)


async def serve_all(model):
    answers = [await ask(model, text, f"s-{i}") for i, (text, _) in enumerate(TICKETS)]
    while model._background:  # the shadow answers run after each answer was sent
        await asyncio.sleep(0.01)
    return answers


def calls(answers):
    return [[(c.function.name, c.function.arguments) for c in a.choices[0].message.tool_calls] for a in answers]


@pytest.mark.parametrize("fault", ["error", "timeout"])
def test_a_failing_shadow_challenger_is_counted_and_never_changes_the_champions_answer(two_agents, tmp_path, fault,
                                                                                      monkeypatch):
    champion, challenger = two_agents
    with open_store(tmp_path / "alone.db") as store:
        alone = AgentModel("triage", champion, store=store)
        alone.load()
        expected = calls(asyncio.run(serve_all(alone)))
    with open_store(tmp_path / "store.db") as store:
        model = AgentModel("triage", champion, store=store, options=AgentServingOptions(time_budget_s=0.5),
                           challenger=challenger, routing=RoutingConfig(mode="shadow"))
        model.load()
        slot = model._roles.challenger

        def broken(*args, **kwargs):  # fault injection: the challenger's generation fails or hangs
            if fault == "timeout":
                time.sleep(6.0)
            raise RuntimeError("challenger out of memory")

        monkeypatch.setattr(slot.policy, "generate", broken)
        answers = asyncio.run(serve_all(model))
        assert calls(answers) == expected  # the champion answered every request, exactly as without a challenger
        assert all(a.model_extra["rlops"]["policy_version"] == champion.policy_version for a in answers)
        assert model.status()["shadow"] == {"answers": 0, "failures": len(TICKETS)}
        records = [r for _, r in store.iter_interactions()]
        shadow = [r for r in records if r.role == "shadow"]
        assert len(shadow) == len(TICKETS) and all(r.choices == [] for r in shadow)
        assert {r.extra["shadow_of"] for r in shadow} == {r.interaction_id for r in records if r.role == "champion"}
        reason = "timeout" if fault == "timeout" else "RuntimeError: challenger out of memory"
        assert all(r.extra["error"].startswith(reason) for r in shadow)
        samples = canary_samples(store, model="triage", since=0, champion=champion.policy_version,
                                 challenger=challenger.policy_version, metric="decision", join=JoinConfig())
        assert (samples.shadow_seen, samples.shadow_failures) == (0, len(TICKETS))


def test_a_working_shadow_challenger_answers_every_request_unseen_and_canary_is_sticky(two_agents, tmp_path):
    champion, challenger = two_agents
    with open_store(tmp_path / "store.db") as store:
        model = AgentModel("triage", champion, store=store, challenger=challenger, routing=RoutingConfig("shadow"))
        model.load()
        asyncio.run(serve_all(model))
        shadow = [r for _, r in store.iter_interactions() if r.role == "shadow"]
        assert len(shadow) == len(TICKETS) and all(r.policy_version == challenger.policy_version for r in shadow)
        assert all(r.choices[0]["logprob"] == 0.0 and r.choices[0]["tool_calls"] for r in shadow)  # greedy: p=1
        model.reconfigure(routing=RoutingConfig(mode="canary", fraction=0.5))
        first = [asyncio.run(ask(model, "help with refund", f"user-{i}")) for i in range(40)]
        again = [asyncio.run(ask(model, "my invoice is wrong", f"user-{i}")) for i in range(40)]
        versions = [a.model_extra["rlops"]["policy_version"] for a in first]
        assert versions == [a.model_extra["rlops"]["policy_version"] for a in again]  # sticky per session
        assert 5 < versions.count(challenger.policy_version) < 35
        status = model.reconfigure(model_uri=challenger.model_uri)  # a promotion: the challenger becomes champion
        assert status["policies"] == [challenger.policy_version] and status["routing"]["mode"] == "off"
        with pytest.raises(ConfigError, match="exploration"):
            model.reconfigure(exploration={"mode": "greedy"})
        with pytest.raises(ConfigError, match="needs a challenger"):
            model.reconfigure(routing=RoutingConfig(mode="shadow"))
