"""``AgentPolicy.sequence_logprob``: a given completion scored as ``generate`` would have sampled it."""

from __future__ import annotations

import math

import pytest

from rlops_plugin.errors import ConfigError
from rlops_plugin.kinds.agent.policy import AgentPolicy
from rlops_plugin.kinds.agent.triage import TOOLS, tickets

TOL = 1e-4
"""One forward pass vs generate's cached decoding: float32 sums agree to ~1e-5 on the tiny model."""


def prompts(policy, count=6):
    return [policy.render([{"role": "user", "content": text}], TOOLS) for text, _ in tickets()[:count]]


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9), (1.3, 0.8), (1.6, 1.0)])
def test_it_equals_the_logprob_generate_reports_for_sampled_completions(triage_agent, temperature, top_p):
    policy = triage_agent.policy
    checked = 0
    for i, prompt in enumerate(prompts(policy)):
        for g in policy.generate(prompt, n=4, temperature=temperature, top_p=top_p, max_new_tokens=40, seed=i):
            assert policy.sequence_logprob(prompt, g.token_ids, temperature, top_p) == pytest.approx(g.logprob,
                                                                                                     abs=TOL)
            assert policy.sequence_logprob(prompt, g.token_ids) == pytest.approx(g.model_logprob, abs=TOL)
            checked += 1
    assert checked == 24


def test_the_settings_matter_so_the_equality_is_not_trivial(triage_agent):
    policy = triage_agent.policy
    prompt = prompts(policy, 1)[0]
    g = policy.generate(prompt, n=1, temperature=1.6, max_new_tokens=40, seed=3)[0]
    cooler = policy.sequence_logprob(prompt, g.token_ids, 0.7, 0.9)
    assert abs(g.logprob - g.model_logprob) > 1e-2 and abs(cooler - g.logprob) > 1e-2


def test_greedy_scores_zero_for_the_greedy_answer_and_minus_infinity_for_others(triage_agent):
    policy = triage_agent.policy
    prompt = prompts(policy, 1)[0]
    greedy = policy.generate(prompt, temperature=0.0, max_new_tokens=40)[0]
    assert greedy.logprob == 0.0 and policy.sequence_logprob(prompt, greedy.token_ids, 0.0) == 0.0
    other = [g for g in policy.generate(prompt, n=16, temperature=2.0, max_new_tokens=40, seed=0)
             if g.token_ids != greedy.token_ids][0]
    assert policy.sequence_logprob(prompt, other.token_ids, 0.0) == -math.inf


def test_a_checkpoint_s_own_generation_defaults_apply_as_in_generate(triage_agent):
    fresh = AgentPolicy(triage_agent.policy.files, triage_agent.policy.agent)  # not the shared loaded model
    model, _ = fresh.load()
    model.generation_config.repetition_penalty = 1.5  # generate merges the checkpoint's defaults in
    prompt = prompts(fresh, 1)[0]
    for g in fresh.generate(prompt, n=4, temperature=1.0, max_new_tokens=40, seed=1):
        assert abs(g.logprob - g.model_logprob) > 1e-2  # the penalty changed what was sampled from
        assert fresh.sequence_logprob(prompt, g.token_ids) == pytest.approx(g.logprob, abs=TOL)


def test_edges_and_bad_settings(triage_agent):
    policy = triage_agent.policy
    prompt = prompts(policy, 1)[0]
    assert policy.sequence_logprob(prompt, []) == 0.0
    with pytest.raises(ConfigError, match="prompt_ids is empty"):
        policy.sequence_logprob([], [5])
    with pytest.raises(ConfigError, match=r"top_p in \(0, 1\], got 1.0, 0.0"):
        policy.sequence_logprob(prompt, [5], 1.0, 0.0)
    with pytest.raises(ConfigError, match="temperature >= 0"):
        policy.sequence_logprob(prompt, [5], -1.0)
