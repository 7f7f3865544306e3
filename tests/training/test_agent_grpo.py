"""Agent GRPO: rewards are the bundle's graders on answers parsed as served; a few steps change the champion."""

from __future__ import annotations

import dataclasses

import pytest

from rlops_plugin import plugins
from rlops_plugin.bundle.references import reference_of
from rlops_plugin.errors import ConfigError
from rlops_plugin.kinds.agent import graders, triage
from rlops_plugin.kinds.agent.policy import AgentPolicy
from rlops_plugin.kinds.agent.specs import GraderSpec
from rlops_plugin.kinds.agent.tasks import run_tasks, with_system_prompt
from rlops_plugin.training.agent_grpo import (
    AgentGRPOTrainer,
    GRPOConfig,
    grader_reward,
    prompt_text,
    reward_model_reward,
)
from rlops_plugin.training.agent_reward import RewardModelConfig, RewardModelScorer, train_reward_model
from rlops_plugin.training.base import field_docs, make_config
from rlops_plugin.training.train import train
from tests.training.test_agent_reward import logged_traffic, tickets

FAST = {"steps": 3, "batch_size": 8, "num_generations": 4, "temperature": 1.5, "seed": 0, "logging_steps": 1}
"""Measured from the triage champion: at temperature 1.5, 7-8 of 9 groups per 3-step run (seeds 0-2) have answers
of different rewards, so the update has a gradient; at temperature 1.0 the tiny model samples almost
deterministically and most groups tie."""


def weights(policy: AgentPolicy) -> dict:
    from safetensors.torch import load_file

    return load_file(str(policy.files["model.safetensors"]))


def test_a_completion_s_reward_is_the_graders_combined_score(triage_agent):
    policy = triage_agent.policy
    spec = GraderSpec(graders=(  # expected call and valid call weigh the same: a valid wrong call scores 0.5
        {"name": "expected_call", "ref": reference_of(graders.expected_tool_call)},
        {"name": "valid_call", "ref": reference_of(graders.valid_tool_call)}))
    tasks = list(triage_agent.env_spec.tasks)
    queue = tasks[0]["expected"]["tool_calls"][0]["arguments"]["queue"]
    other = next(q for q in triage.ALL_QUEUES if q != queue)
    completions = [triage.call_text(queue), triage.call_text(other),
                   '{"name": "route", "arguments": {"queue": "moon"}}', "I will route it."]
    reward = grader_reward(policy, spec, tasks)
    got = reward(prompts=[""] * 4, completions=completions, task_index=[0] * 4)
    expected = [spec.grade({"content": c, "tool_calls": k}, tasks[0], tools=policy.tools)["combined"]
                for c, k in map(policy.parse_tool_calls, completions)]
    assert got == expected == [1.0, 0.5, 0.0, 0.5]
    champion = grader_reward(policy, triage_agent.reward_spec, tasks)  # the bundle's own graders
    assert champion(prompts=[""] * 2, completions=completions[:2], task_index=[0, 0]) == [1.0, 0.0]


def test_the_prompt_is_the_one_the_server_renders(triage_agent):
    base = triage_agent.policy
    policy = AgentPolicy(base.files, {**base.agent, "system_prompt": "Route each ticket."})
    _, tokenizer = policy.load()
    task = triage_agent.env_spec.tasks[3]
    text = prompt_text(policy, tokenizer, task)
    assert text.startswith("<s><|system|>Route each ticket.<|user|>") and text.endswith("<|assistant|>")
    assert tokenizer(text)["input_ids"] == policy.render(with_system_prompt(policy, task["messages"]), policy.tools)


def test_a_few_steps_from_the_champion_change_it_and_the_result_loads(triage_agent):
    init_sha = triage_agent.policy.sha256()
    outcome = train("agent_grpo", triage_agent, None, FAST, log_to_mlflow=False, eval_episodes=1)
    trained = outcome.bundle.policy
    assert isinstance(trained, AgentPolicy) and triage_agent.policy.sha256() == init_sha
    before, after = weights(triage_agent.policy), weights(trained)
    changed = [name for name in before if not bool((before[name] == after[name]).all())]
    assert changed, "no weight moved"
    assert outcome.bundle.lineage["trainer"] == "agent_grpo" and outcome.metrics["train/steps"] == 3
    assert outcome.metrics["data/tasks"] == len(triage_agent.env_spec.tasks)
    report, answers = run_tasks(trained, outcome.bundle.env_spec, outcome.bundle.reward_spec)
    assert len(answers) == len(triage_agent.env_spec.tasks)
    assert outcome.metrics["eval/pass_rate"] == report.summary()["pass_rate"]


def test_the_history_shows_grader_rewards_with_spread(triage_agent):
    result = AgentGRPOTrainer().train(triage_agent, None, GRPOConfig(**FAST))
    logged = [values for _, values in result.history if "trl/rewards/graders/mean" in values]
    assert len(logged) == 3 and all(0.0 <= v["trl/rewards/graders/mean"] <= 1.0 for v in logged)
    assert min(v["trl/frac_reward_zero_std"] for v in logged) < 1.0  # some groups disagreed: a gradient


def test_a_reward_model_adds_its_score(triage_agent, tmp_path):
    data = logged_traffic(triage_agent, tmp_path / "store.db", tickets(held_out=False))
    model = train_reward_model(triage_agent, data, RewardModelConfig(steps=20, holdout_fraction=0),
                               output_dir=tmp_path / "rm")
    scorer = RewardModelScorer(model.directory)
    policy, tasks = triage_agent.policy, list(triage_agent.env_spec.tasks)
    completion = triage.call_text("billing")
    reward = reward_model_reward(policy, scorer, tasks)
    assert reward(prompts=[""], completions=[completion], task_index=[2]) == pytest.approx(
        [scorer.score(tasks[2]["messages"], {"content": None, "tool_calls": [
            {"name": "route", "arguments": {"queue": "billing"}}]}, policy.tools)], abs=1e-6)
    config = GRPOConfig(**{**FAST, "steps": 2}, reward_model=str(model.directory), reward_model_weight=0.5)
    result = AgentGRPOTrainer().train(triage_agent, None, config)
    logged = [values for _, values in result.history if "trl/rewards/reward_model/mean" in values]
    assert len(logged) == 2 and all("trl/rewards/graders/mean" in v for v in logged)


def test_config_and_inputs_are_checked(triage_agent, cartpole_bundle):
    assert plugins.trainers().get("agent_grpo").value is AgentGRPOTrainer
    docs = field_docs(GRPOConfig)
    assert all(docs.get(f.name) for f in dataclasses.fields(GRPOConfig))
    assert make_config(GRPOConfig, {"tasks": '["ticket-0"]', "beta": "0"}).tasks == ["ticket-0"]
    with pytest.raises(ConfigError, match=r"batch_size: a multiple of num_generations \(4\), got 6"):
        GRPOConfig(batch_size=6)
    with pytest.raises(ConfigError, match="num_generations: at least 2"):
        GRPOConfig(num_generations=1, batch_size=2)
    with pytest.raises(ConfigError, match="do not pass a dataset"):
        AgentGRPOTrainer().train(triage_agent, object(), GRPOConfig())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\['nope'\] are not in the task suite"):
        AgentGRPOTrainer().train(triage_agent, None, GRPOConfig(tasks=["nope"]))
    with pytest.raises(ConfigError, match="trains agent policies"):
        AgentGRPOTrainer().train(cartpole_bundle, None, GRPOConfig())
