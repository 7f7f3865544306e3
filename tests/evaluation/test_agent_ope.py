"""Off-policy estimates of candidate agents from a served agent's logged, rated answers, against the truth.

The log is written by the real agent server code (``AgentModel`` in-process, no HTTP) into a SQLite store,
and a simulated user rates every choice from the task's grader (thumbs up for the expected ``route`` call).
A candidate's true value is measured on-policy: answers sampled from it, rated by the same user.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from rlops_plugin.evaluation.agent_ope import AgentOPEError, check_agent_ope, estimate_agent_from_log
from rlops_plugin.evaluation.gate import GatePolicy
from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor.model import as_loaded
from rlops_plugin.kinds.agent.triage import TOOLS

MODEL = "triage"
REQUESTS, N = 2, 8
"""The log: every task of the suite (24) asked twice with n=8 at temperature 1: 384 answers."""


def serve_and_log(bundle, store, temperature, requests=REQUESTS, n=N, tasks=None, seed=0):
    """Answer each task ``requests`` times through the agent server's own code, which logs to ``store``."""
    with contextlib.redirect_stdout(sys.stderr):  # kserve's OpenAI types print an INFO line at import
        from kserve.protocol.rest.openai.types import ChatCompletionRequest

        from rlops_plugin.serving.agent import AgentModel, AgentServingOptions
    tasks = tasks if tasks is not None else list(bundle.env_spec.tasks)
    server = AgentModel(MODEL, as_loaded(bundle), store=store, options=AgentServingOptions(max_n=n))
    server.load()

    async def drive():
        for j in range(requests):
            for i, task in enumerate(tasks):
                response = await server.create_chat_completion(ChatCompletionRequest(
                    model=MODEL, messages=task["messages"], tools=TOOLS, n=n, temperature=temperature,
                    max_tokens=40, seed=seed + j * len(tasks) + i))
                assert response.choices, response

    try:
        asyncio.run(drive())
    finally:
        server.stop()


def rating(graders, choice, task):
    """The simulated user: thumbs up for the task's expected call, down for anything else."""
    return 1 if graders.grade(choice, task, TOOLS)["expected_call"] == 1.0 else -1


def rate_all(bundle, store, outcomes=False):
    tasks = {t["messages"][-1]["content"]: t for t in bundle.env_spec.tasks}
    events = []
    for _, record in store.iter_interactions(model=MODEL):
        task = tasks[record.request["messages"][-1]["content"]]
        for choice in record.choices:
            value = rating(bundle.reward_spec, choice, task)
            ids = {"interaction_id": record.interaction_id, "choice": choice["index"], "timestamp": record.ts + 1}
            events.append(parse_feedback({**ids, "kind": "rating", "value": value, "scale": "thumbs"}))
            if outcomes:
                events.append(parse_feedback({**ids, "kind": "outcome", "value": (value + 1) / 2}))
    store.add_feedback(events)


def true_value(bundle, policy, temperature, samples=100):
    """Mean simulated rating of ``samples`` on-policy answers per task, and its standard error."""
    values = []
    for i, task in enumerate(bundle.env_spec.tasks):
        prompt = policy.render(task["messages"], TOOLS)
        for k in range(0, samples, 50):
            for g in policy.generate(prompt, n=50, temperature=temperature, max_new_tokens=40, seed=1000 + 50 * i + k):
                content, calls = policy.parse_tool_calls(policy.decode(g.token_ids))
                values.append(rating(bundle.reward_spec, {"content": content, "tool_calls": calls}, task))
    arr = np.asarray(values, float)
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size))


@pytest.fixture(scope="module")
def log_path(triage_agent, tmp_path_factory):
    """The champion's rated log at temperature 1 (ratings, and outcomes = (rating + 1) / 2)."""
    path = tmp_path_factory.mktemp("agent-ope") / "store.db"
    with open_store(path) as store:
        serve_and_log(triage_agent, store, 1.0)
        rate_all(triage_agent, store, outcomes=True)
    return path


@pytest.fixture(scope="module")
def logged_truth(triage_agent):
    """The champion's own true value at the logged temperature (1)."""
    return true_value(triage_agent, triage_agent.policy, 1.0)[0]


@pytest.fixture(scope="module")
def greedy_log_path(triage_agent, tmp_path_factory):
    """The champion answering each task once, greedily (temperature 0), rated."""
    path = tmp_path_factory.mktemp("agent-ope-greedy") / "store.db"
    with open_store(path) as store:
        serve_and_log(triage_agent, store, 0.0, requests=1, n=1)
        rate_all(triage_agent, store)
    return path


@pytest.fixture(scope="module")
def other_agent(tmp_path_factory):
    """A second, less trained triage model (another weight seed, 200 steps): it errs in its own ways."""
    from rlops_plugin.kinds.agent.tiny_model import TinyModelConfig
    from rlops_plugin.kinds.agent.triage import build_triage_agent

    return build_triage_agent(tmp_path_factory.mktemp("other-agent") / "model", TinyModelConfig(seed=1, steps=200))


def test_the_champion_on_its_own_log_has_weights_one_and_the_logged_mean(triage_agent, log_path):
    with open_store(log_path) as store:
        est = estimate_agent_from_log(store, MODEL, triage_agent.policy)
    counts, tasks = est.counts, len(triage_agent.env_spec.tasks)
    assert counts["answers"] == counts["rewarded"] == tasks * REQUESTS * N
    assert counts["greedy"] == counts["no_logprob"] == 0 and counts["interactions"] == tasks * REQUESTS
    assert counts["used"] == est.n == counts["rewarded"] - counts["not_retokenized"]
    assert counts["not_retokenized"] <= 0.01 * counts["rewarded"]  # a sampled non-canonical split, now and then
    assert np.abs(est.rows["log_weight"]).max() < 1e-3  # the logged log-prob is recomputed exactly
    assert est.value == pytest.approx(est.logged_value, abs=1e-6)
    assert est.logged_value == pytest.approx(est.rows["reward"].mean())
    assert est.ess == pytest.approx(est.n, rel=1e-3) and est.details["coverage"] == pytest.approx(1.0, abs=1e-3)
    assert est.ci_low < est.value < est.ci_high and est.details["difference"] == pytest.approx(0.0, abs=1e-6)
    assert est.to_dict()["estimator"] == "snips" and "rows" not in est.to_dict()


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_the_champion_at_another_temperature_is_estimated_close_to_its_true_value(triage_agent, log_path,
                                                                                  logged_truth, temperature):
    with open_store(log_path) as store:
        est = estimate_agent_from_log(store, MODEL, triage_agent.policy, sampling={"temperature": temperature})
    truth, truth_se = true_value(triage_agent, triage_agent.policy, temperature)
    error = est.value - truth
    noise = math.sqrt(est.details["bootstrap_std"] ** 2 + truth_se ** 2)
    why = (f"T={temperature}: estimate {est.value:.3f} [{est.ci_low:.3f}, {est.ci_high:.3f}], truth {truth:.3f} "
           f"+- {truth_se:.3f}, relative error {abs(error) / abs(truth):.1%}, ess {est.ess:.0f}")
    assert abs(truth - logged_truth) > 0.04, why  # the candidate's value really differs from the logged one's
    assert est.ci_low <= truth <= est.ci_high, why
    assert abs(error) <= 3 * noise, why
    assert np.sign(est.value - est.logged_value) == np.sign(truth - logged_truth), why


def test_rewards_from_outcomes_and_from_a_function_are_the_same_estimate_rescaled(triage_agent, log_path):
    with open_store(log_path) as store:
        by_rating = estimate_agent_from_log(store, MODEL, triage_agent.policy, sampling={"temperature": 0.7})
        by_outcome = estimate_agent_from_log(store, MODEL, triage_agent.policy, sampling={"temperature": 0.7},
                                             reward="outcome")
        by_function = estimate_agent_from_log(store, MODEL, triage_agent.policy, sampling={"temperature": 0.7},
                                              reward=lambda row: 10.0 * row["rating"])
    assert by_outcome.value == pytest.approx((by_rating.value + 1) / 2)
    assert by_function.value == pytest.approx(10.0 * by_rating.value)
    assert by_rating.details["reward_range"] == [-1.0, 1.0] and by_outcome.details["reward_range"] == [0.0, 1.0]


def test_greedy_logs_have_no_support_for_another_policy(triage_agent, greedy_log_path):
    with open_store(greedy_log_path) as store, pytest.raises(AgentOPEError) as info:
        estimate_agent_from_log(store, MODEL, triage_agent.policy)
    tasks = len(triage_agent.env_spec.tasks)
    assert str(info.value).startswith(
        f"support violated: {tasks} of {tasks} rewarded answers of model 'triage' were logged deterministically "
        "(greedy, temperature 0: log-probability 0.0) and 0 without a log-probability")


def test_a_tiny_effective_sample_size_is_refused_naming_it(triage_agent, log_path):
    with open_store(log_path) as store, pytest.raises(AgentOPEError) as info:
        estimate_agent_from_log(store, MODEL, triage_agent.policy, sampling={"temperature": 2.0})
    est = info.value.estimate
    assert est is not None and est.ess < 30
    assert str(info.value).startswith(f"effective sample size {est.ess:.1f} of {est.n} logged answers is below 30: "
                                      "the candidate answers where the log has little support (the largest weight "
                                      f"holds {est.details['max_weight_share']:.0%} of the total)")


def test_a_candidate_the_log_covers_poorly_is_refused_though_its_ess_looks_fine(triage_agent, log_path,
                                                                                other_agent):
    with open_store(log_path) as store, pytest.raises(AgentOPEError) as info:
        estimate_agent_from_log(store, MODEL, other_agent.policy)
    est = info.value.estimate
    d = est.details
    assert est.ess > 100 and d["coverage_ci_high"] < 0.95
    assert str(info.value).startswith(
        f"the log covers {d['coverage']:.0%} [{d['coverage_ci_low']:.0%}, {d['coverage_ci_high']:.0%}] of the "
        f"candidate's answers (mean importance weight {d['coverage']:.3f}; 1 when the log holds what the candidate "
        "does), below 95%")
    assert f"the value lies in [{d['unseen_bounds'][0]:.3f}, {d['unseen_bounds'][1]:.3f}]" in str(info.value)
    truth, _ = true_value(triage_agent, other_agent.policy, 1.0)
    assert truth < est.ci_low - 0.1  # what the refusal prevents: the self-normalized estimate was far too good


def test_no_rewards_too_few_and_mixed_scales_are_refused(triage_agent, log_path, tmp_path):
    answers = len(triage_agent.env_spec.tasks) * REQUESTS * N
    with open_store(log_path) as store:
        with pytest.raises(AgentOPEError, match=f"^no rewarded answers: 0 of {answers} logged answers of model "
                                                "'triage' have a reward to estimate from$"):
            estimate_agent_from_log(store, MODEL, triage_agent.policy, reward=lambda row: None)
        with pytest.raises(AgentOPEError, match=r"^no rewarded answers: 0 of 0 logged answers"):
            estimate_agent_from_log(store, MODEL, triage_agent.policy, policy_versions=["triage/9@000000000000"])
        used = estimate_agent_from_log(store, MODEL, triage_agent.policy).counts
        message = (f"too few usable rewarded answers: {used['used']} of {answers} rewarded (minimum 1000); excluded 0 "
                   f"greedy, 0 without log-probability, {used['not_retokenized']} not re-tokenizable")
        with pytest.raises(AgentOPEError, match=f"^{re.escape(message)}$"):
            estimate_agent_from_log(store, MODEL, triage_agent.policy, min_rewarded=1000)
        with pytest.raises(AgentOPEError, match=r"sampling: only temperature and top_p, got \['top_k'\]"):
            estimate_agent_from_log(store, MODEL, triage_agent.policy, sampling={"top_k": 5})
        with pytest.raises(AgentOPEError, match="reward: one of"):
            estimate_agent_from_log(store, MODEL, triage_agent.policy, reward="stars")
    with open_store(tmp_path / "mixed.db") as store:
        serve_and_log(triage_agent, store, 1.0, requests=1, n=2, tasks=list(triage_agent.env_spec.tasks)[:3])
        rate_all(triage_agent, store)
        record = next(r for _, r in store.iter_interactions())
        store.add_feedback([parse_feedback({"interaction_id": record.interaction_id, "choice": 0, "kind": "rating",
                                            "value": 4, "scale": "1-5", "timestamp": record.ts + 2})])
        with pytest.raises(AgentOPEError, match=r"^ratings on 2 scales \(1-5: 1, thumbs: 5\) are not one reward"):
            estimate_agent_from_log(store, MODEL, triage_agent.policy)


def gate_context(candidate, log_path, champion=None):
    return SimpleNamespace(policy=GatePolicy(ope_store=str(log_path), ope_model=MODEL), candidate=as_loaded(candidate),
                           champion=None if champion is None else as_loaded(champion))


def test_the_gate_check_passes_the_champion_and_fails_worse_or_unsupported_candidates(triage_agent, log_path,
                                                                                      other_agent):
    passed = check_agent_ope(gate_context(triage_agent, log_path, champion=triage_agent))
    assert passed.name == "ope" and passed.passed, passed.reason
    assert passed.metrics["value"] == pytest.approx(passed.metrics["behaviour_value"], abs=1e-6)
    assert re.search(r"paired lower bound (\d\.\d{3}) >= ", passed.reason)  # itself: the difference is ~0
    hotter = check_agent_ope(gate_context(triage_agent, log_path), sampling={"temperature": 1.3})
    assert not hotter.passed and re.search(r"paired lower bound \d\.\d{3} < \d\.\d{3} \(logged policy",
                                           hotter.reason), hotter.reason
    assert hotter.metrics["ess"] >= 50 and hotter.metrics["value"] < hotter.metrics["behaviour_value"]
    unsupported = check_agent_ope(gate_context(other_agent, log_path))
    assert not unsupported.passed and unsupported.reason.startswith("refused: the log covers")
    assert unsupported.metrics["ess"] > 100  # the refused estimate's diagnostics are kept
    other_champion = check_agent_ope(gate_context(triage_agent, log_path, champion=other_agent))
    assert not other_champion.passed and "refused: no rewarded answers: 0 of 0" in other_champion.reason
    no_store = check_agent_ope(SimpleNamespace(policy=GatePolicy(), candidate=as_loaded(triage_agent), champion=None))
    assert not no_store.passed and "needs ope_store" in no_store.reason
