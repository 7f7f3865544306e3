"""The TRL updates of agent policies: each starts from the deployed checkpoint, reads only its signal's unquarantined
rows, and returns a new agent policy (safetensors) that loads and answers; bad data is refused with counts."""

from __future__ import annotations

import pytest

from rlops_plugin import lifecycle
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import DatasetError
from rlops_plugin.kinds.agent.tasks import answer
from rlops_plugin.kinds.agent.triage import QUEUES_V2, TEMPLATES, tickets
from rlops_plugin.training.train import train
from tests.kinds.agent.test_signals import build, edit, interaction, thumbs

NEW = [(text, queue) for text, queue in tickets(TEMPLATES, QUEUES_V2) if queue in ("security", "shipping")]


def _route(queue):
    return {"name": "route", "arguments": {"queue": queue}}


@pytest.fixture(scope="module")
def world_change(triage_agent, tmp_path_factory):
    """Reviewed answers after the world change: every new-world ticket corrected, old ones approved or rated down."""
    records, events = [], []
    for text, queue in NEW:
        r = interaction(text, [[_route("billing")], [_route("technical")]])
        records.append(r)
        events += [edit(r, 0, [_route(queue)]), thumbs(r, 1, False)]
    for text, queue in tickets(TEMPLATES)[:12]:
        r = interaction(text, [[_route(queue)]])
        records.append(r)
        events.append(thumbs(r, 0, True))
    return build(tmp_path_factory.mktemp("world-change"), triage_agent, records, events)


@pytest.mark.slow
@pytest.mark.parametrize("trainer, config", [
    ("agent_sft", {"steps": 40, "lr": 3e-3}),
    ("agent_dpo", {"steps": 20, "lr": 1e-3}),
    ("agent_kto", {"steps": 20, "lr": 1e-3}),
    ("agent_sft", {"steps": 20, "lr": 3e-3, "lora": True, "lora_r": 4}),
])
def test_each_update_starts_from_the_champion_and_returns_a_loadable_agent(triage_agent, world_change, trainer,
                                                                            config):
    outcome = train(trainer, triage_agent, world_change, config, log_to_mlflow=False, eval_episodes=1)
    policy = outcome.bundle.policy
    assert policy.sha256() != triage_agent.policy.sha256() and policy.agent == triage_agent.policy.agent
    assert set(policy.files) <= {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                                 "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"}
    assert outcome.bundle.lineage["parent_bundle_sha"] == triage_agent.bundle_sha
    assert outcome.bundle.lineage["dataset_digest"] == world_change.digest
    assert outcome.metrics["train/steps"] == config["steps"] and outcome.metrics["data/rows"] > 0
    assert "eval/return_mean" in outcome.metrics and "eval/init_pass_rate" in outcome.metrics
    assert answer(policy, [{"role": "user", "content": "help with invoice"}])["finish_reason"] in ("stop", "length")


def test_sft_on_the_corrections_learns_the_new_world(triage_agent, world_change):
    # measured: 12, 13 and 14 of 15 new-world tickets right for seeds 0-2 (champion: 0)
    outcome = train("agent_sft", triage_agent, world_change, {"steps": 160, "lr": 3e-3}, log_to_mlflow=False,
                    eval_episodes=0)
    policy = outcome.bundle.policy
    right = sum(answer(policy, [{"role": "user", "content": text}])["tool_calls"] == [_route(queue)]
                for text, queue in NEW)
    before = sum(answer(triage_agent.policy, [{"role": "user", "content": text}])["tool_calls"] == [_route(queue)]
                 for text, queue in NEW)
    assert before == 0 and right >= 10, (before, right, len(NEW))


def test_updates_refuse_data_they_cannot_use(triage_agent, world_change, tmp_path):
    only_up = build(tmp_path, triage_agent, [r := interaction("help with invoice", [[_route("billing")]])],
                    [thumbs(r, 0, True)])
    with pytest.raises(DatasetError, match=r"agent_dpo|AgentDPOTrainer: no trainable pair rows.*'binary': 1"):
        train("agent_dpo", triage_agent, only_up, {"steps": 1}, log_to_mlflow=False, eval_episodes=0)
    with pytest.raises(DatasetError, match="KTO needs thumbs up and thumbs down; all 1 rows are up"):
        train("agent_kto", triage_agent, only_up, {"steps": 1, "batch_size": 2}, log_to_mlflow=False,
              eval_episodes=0)
    with pytest.raises(DatasetError, match=r"all \d+ demonstration rows are longer than 5 tokens"):
        train("agent_sft", triage_agent, world_change, {"steps": 1, "max_length": 5}, log_to_mlflow=False,
              eval_episodes=0)
    with pytest.raises(ConfigError, match="trainer 'cql' does not train agent policies"):
        lifecycle.train("cql", triage_agent, world_change, {})
    with pytest.raises(ConfigError, match="a reward model is a judge, not a policy update"):
        lifecycle.train("reward_model", triage_agent, world_change, {})
