"""Agent reward models: trained on logged pairs, agreeing with people on held-out pairs, registered, verified."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from rlops_plugin.errors import ConfigError, IntegrityError, RegistryError, UnsafeArtifactError
from rlops_plugin.experience.dataset import Dataset, DatasetError
from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.records import InteractionRecord, new_batch_id
from rlops_plugin.experience.store import open_store
from rlops_plugin.kinds.agent import triage
from rlops_plugin.kinds.agent.signals import build_agent_preferences, trainable_rows
from rlops_plugin.training.agent_reward import (
    MANIFEST_FILE,
    RewardModelConfig,
    RewardModelScorer,
    load_reward_model,
    register_reward_model,
    reward_model_agreement,
    reward_model_scorer,
    train_reward_model,
)

PHRASINGS = triage.TEMPLATES + triage.HELD_OUT_TEMPLATES
QUEUE_NAMES = sorted(set(triage.QUEUES.values()))


def tickets(held_out: bool) -> list[tuple[str, str]]:
    """A Latin square over keywords and phrasings: each keyword's ticket in one phrasing (a different one per
    keyword) is held out, so training sees every keyword and every phrasing but never a held-out combination."""
    return [(phrasing.format(word), queue) for i, (word, queue) in enumerate(triage.QUEUES.items())
            for j, phrasing in enumerate(PHRASINGS) if (j == i % len(PHRASINGS)) == held_out]


def logged_traffic(bundle, path: Path, items: list[tuple[str, str]], answers: int = 3) -> Dataset:
    """Each ticket answered with ``answers`` route calls (the right queue first, then wrong ones) and rated
    thumbs up / down by a person, logged to a store and extracted as the serving path would."""
    records, feedback = [], []
    for text, queue in items:
        queues = [queue] + [q for q in QUEUE_NAMES if q != queue]
        record = InteractionRecord(
            interaction_id=new_batch_id(), ts=time.time(), model="triage", policy_version="triage/1@test",
            endpoint="chat.completions",
            request={"messages": [{"role": "user", "content": text}], "tools": triage.TOOLS,
                     "sampling": {"n": answers, "temperature": 1.0}},
            choices=[{"index": i, "content": None, "tool_calls": [{"name": "route", "arguments": {"queue": q}}],
                      "logprob": -1.0} for i, q in enumerate(queues[:answers])])
        records.append(record)
        feedback += [parse_feedback({"interaction_id": record.interaction_id, "choice": i, "kind": "rating",
                                     "value": 1 if i == 0 else -1, "scale": "thumbs", "rater": "ana"})
                     for i in range(answers)]
    with open_store(path) as store:
        store.log_interactions(records)
        store.add_feedback(feedback)
        return build_agent_preferences(store, "triage", bundle)


def human_pairs(data: Dataset) -> list[tuple]:
    """The dataset's pairs as ``(messages, chosen, rejected, tools)``."""
    return [(r["prompt"], r["chosen"][0], r["rejected"][0], r["tools"]) for r in trainable_rows(data, "pair")]


@pytest.fixture(scope="module")
def traffic(triage_agent, tmp_path_factory):
    """Training pairs (18 tickets x 2 wrong queues) and held-out human pairs (6 unseen tickets, 12 pairs)."""
    root = tmp_path_factory.mktemp("reward-traffic")
    train = logged_traffic(triage_agent, root / "train.db", tickets(held_out=False))
    held = logged_traffic(triage_agent, root / "held.db", tickets(held_out=True))
    return train, human_pairs(held)


@pytest.fixture(scope="module")
def trained(triage_agent, traffic):
    """The reward model of seed 0 (200 steps on every training pair)."""
    return train_reward_model(triage_agent, traffic[0], RewardModelConfig(steps=200, seed=0, holdout_fraction=0))


# Measured (200 steps, lr 1e-3): 12/12 held-out pairs for seeds 0-4; with 100 steps 10-12/12; chance is 6/12.
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reward_model_agrees_with_people_on_unseen_tickets(seed, triage_agent, traffic, trained, capsys):
    train, held = traffic
    assert train.manifest["signals"]["pair"] == 36 and len(held) == 12
    result = trained if seed == 0 else train_reward_model(
        triage_agent, train, RewardModelConfig(steps=200, seed=seed, holdout_fraction=0))
    assert result.metrics["data/pairs"] == 36 and result.metrics["train/steps"] == 200
    agreement = reward_model_agreement(RewardModelScorer(result.directory), held)
    with capsys.disabled():
        print(f"\nreward model seed {seed}: {agreement.describe()}, loss {result.metrics['train/loss']:.3f}")
    assert agreement.n == 12 and agreement.ties == 0
    assert agreement.rate >= 0.75 and agreement.ci_low > 0.5, agreement.describe()


def test_scores_read_logged_choices_and_messages_alike(trained):
    scorer = RewardModelScorer(trained.directory)
    messages = [{"role": "user", "content": "help with invoice"}]
    choice = {"content": None, "tool_calls": [{"name": "route", "arguments": {"queue": "billing"}}]}
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "route", "arguments": json.dumps({"queue": "billing"})}}]}
    wrong = {"content": None, "tool_calls": [{"name": "route", "arguments": {"queue": "technical"}}]}
    right = scorer.score(messages, choice, triage.TOOLS)
    assert right == pytest.approx(scorer.score(messages, message, triage.TOOLS), abs=1e-6)
    assert scorer.scores([(messages, choice, triage.TOOLS), (messages, wrong, triage.TOOLS)]) == pytest.approx(
        [right, scorer.score(messages, wrong, triage.TOOLS)], abs=1e-5)  # batched (padded) = one by one
    comparison = scorer.compare(messages, wrong, choice, triage.TOOLS)
    assert comparison.winner == "b" and comparison.details["scores"]["b"] == pytest.approx(right, abs=1e-5)
    manifest = trained.manifest
    assert manifest["kind"] == "reward_model" and manifest["dataset_digest"].startswith("sha256:")
    assert set(manifest["files"]) == {p.name for p in trained.directory.iterdir()} - {MANIFEST_FILE}
    assert "model.safetensors" in manifest["files"] and not any(
        p.suffix in (".bin", ".pt", ".pkl") for p in trained.directory.iterdir())


def test_held_out_contexts_measure_agreement_during_training(triage_agent, traffic):
    result = train_reward_model(triage_agent, traffic[0], RewardModelConfig(steps=60, seed=0,
                                                                            holdout_fraction=0.25))
    prompts = {json.dumps(p[0]) for p in result.held_out}
    assert len(prompts) == 4 and result.metrics["eval/pairs"] == 8 == len(result.held_out)
    assert result.metrics["data/pairs"] == 28  # the held-out contexts' pairs are not trained on
    again = reward_model_agreement(RewardModelScorer(result.directory), result.held_out)
    assert result.metrics["eval/agreement"] == again.rate and result.manifest["metrics"]["eval/agreement"] == again.rate


@pytest.mark.integration
def test_registration_round_trip_with_lineage_and_verified_hashes(trained, traffic, tracking, mlflow_server,
                                                                  model_name, tmp_path):
    import mlflow

    train, held = traffic
    parent = "models:/triage/3"
    local = RewardModelScorer(trained.directory)
    agreement = reward_model_agreement(local, held)
    uri, version = register_reward_model(trained, model_name, parent, train.digest, agreement=agreement)
    assert uri == f"models:/{model_name}/{version}"
    client = mlflow.MlflowClient()
    mv = client.get_model_version(model_name, version)
    assert mv.tags["rlops.kind"] == "reward_model" and mv.tags["rlops.parent"] == parent
    assert mv.tags["rlops.dataset_digest"] == train.digest
    assert mv.tags["rlops.manifest_sha256"] == local.sha256
    assert mv.tags["rlops.agreement"] == f"{agreement.rate:.3f} on 12 pairs"
    run = client.get_run(mv.run_id)
    assert run.data.params["trl/steps"] == "200" and run.data.params["dataset_digest"] == train.digest
    assert [m.step for m in client.get_metric_history(mv.run_id, "trl/loss")][-1] == 200
    assert run.data.metrics["train/steps"] == 200 and run.data.metrics["eval/agreement"] == agreement.rate

    loaded = load_reward_model(uri, dst=tmp_path / "first")
    assert loaded.model_uri == uri and loaded.as_judge().spec.model_uri == uri
    items = [(m, c, t) for m, c, _, t in held[:4]]
    assert loaded.scores(items) == pytest.approx(local.scores(items), abs=1e-6)
    client.set_registered_model_alias(model_name, "judge", version)
    assert reward_model_scorer(f"models:/{model_name}@judge").model_uri == uri  # the alias pinned to its version
    assert load_reward_model(mv.source, dst=tmp_path / "by-id").sha256 == local.sha256  # models:/m-<id>

    model_id = mv.source.removeprefix("models:/")
    stored = next(p for p in mlflow_server.artifacts.rglob("config.json") if model_id in str(p))
    stored.write_text(stored.read_text() + " ")  # one byte changed in the artifact store
    with pytest.raises(IntegrityError, match=r"config.json: sha256 differs from the manifest"):
        load_reward_model(uri, dst=tmp_path / "tampered")
    manifest_path = stored.parent / MANIFEST_FILE  # ... and the manifest rewritten to match
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["config.json"] = hashlib.sha256(stored.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match=r"manifest.json: sha256 .* recorded at registration"):
        load_reward_model(uri, dst=tmp_path / "rewritten")
    with pytest.raises(RegistryError, match="local directory is RewardModelScorer"):
        load_reward_model(str(trained.directory))
    with pytest.raises(ConfigError, match="was trained on"):
        register_reward_model(trained, model_name, parent, "sha256:" + "0" * 64)


def test_a_directory_that_differs_from_its_manifest_is_refused(trained, tmp_path):
    copy = Path(shutil.copytree(trained.directory, tmp_path / "rm"))
    (copy / "added_tokens.json").write_text("{}")
    with pytest.raises(IntegrityError, match=r"files \['added_tokens.json'\] are not as the manifest lists them"):
        RewardModelScorer(copy)
    (copy / "added_tokens.json").unlink()
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.Model"}}))
    with pytest.raises(IntegrityError, match="config.json: sha256 differs"):
        RewardModelScorer(copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["files"]["config.json"] = hashlib.sha256((copy / "config.json").read_bytes()).hexdigest()
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(UnsafeArtifactError, match="auto_map"):  # consistent but naming remote code
        RewardModelScorer(copy)
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(IntegrityError, match="no manifest.json"):
        RewardModelScorer(copy)


def test_training_refuses_what_it_cannot_learn_from(triage_agent, cartpole_bundle, traffic, tmp_path):
    train, _ = traffic
    with pytest.raises(ConfigError, match="start from an agent policy"):
        train_reward_model(cartpole_bundle, train)
    with pytest.raises(ConfigError, match="needs a preferences dataset, got no dataset"):
        train_reward_model(triage_agent, None)
    thumbs_only = logged_traffic(triage_agent, tmp_path / "one.db", tickets(held_out=True), answers=1)
    with pytest.raises(DatasetError, match="no trainable pair rows"):
        train_reward_model(triage_agent, thumbs_only)
    few = logged_traffic(triage_agent, tmp_path / "few.db", tickets(held_out=True)[:1])
    with pytest.raises(ConfigError, match="holds out 0: give more pairs, or holdout_fraction=0"):
        train_reward_model(triage_agent, few, RewardModelConfig(holdout_fraction=0.2))
    with pytest.raises(ConfigError, match=r"holdout_fraction: in \[0, 1\)"):
        RewardModelConfig(holdout_fraction=1.0)


@pytest.mark.integration
def test_rlops_train_reward_model_registers_the_judge_with_an_audit_event(triage_agent, traffic, tracking,
                                                                         model_name, tmp_path):
    import os
    import subprocess
    import sys

    import mlflow

    from rlops_plugin import flavor
    from rlops_plugin.audit.events import list_events

    with mlflow.start_run():
        flavor.log_model(triage_agent, name="policy", registered_model_name=model_name)
    train_data, _ = traffic
    train_data.save(tmp_path / "pairs")
    judge_name = f"{model_name}-rm"
    out = subprocess.run([sys.executable, "-m", "rlops_plugin.cli", "train", "--trainer", "reward_model", "--init",
                          f"models:/{model_name}/1", "--dataset", str(tmp_path / "pairs"), "--set", "steps=60",
                          "--register", judge_name], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MLFLOW_TRACKING_URI": tracking})
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"registered {judge_name} version 1" in out.stdout and "held-out agreement" in out.stdout
    scorer = load_reward_model(f"models:/{judge_name}/1")
    assert scorer.manifest["dataset_digest"] == train_data.digest
    (event,) = list_events(judge_name, kinds=["judge_update"])
    details = event.details
    assert details["parent"] == f"models:/{model_name}/1" and details["dataset_digest"] == train_data.digest
