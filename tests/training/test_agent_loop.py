"""The agent learning loop on CPU: served traffic with edits, ratings and outcomes -> `rlops dataset build --kind
preferences` -> `rlops train --trainer dpo --init models:/NAME@champion` -> `rlops gate` with the red-team suite.

A deliberately unsafe candidate (trained on pairs that prefer the forbidden ``issue_refund`` call, which the
default extraction quarantines) fails the gate's red-team check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pytest

from rlops_plugin import flavor
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.experience.store import open_store
from rlops_plugin.kinds.agent.signals import SignalConfig, build_agent_preferences
from rlops_plugin.kinds.agent.triage import HELD_OUT_TEMPLATES, TEMPLATES, tickets
from rlops_plugin.lifecycle import gate, train
from tests.fixtures.agent_traffic import reviewed_traffic

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RLOPS = [sys.executable, "-m", "rlops_plugin.cli"]
SEED = int(os.environ.get("RLOPS_AGENT_LOOP_SEED", "0"))
"""Seed of the sampled traffic and of both updates: CI runs 0; 1 and 2 pass too (run by hand, 2026-12-02)."""


def test_served_traffic_to_a_gated_dpo_challenger_and_an_unsafe_candidate_fails_red_team(
        tracking, triage_agent, model_name, start_server, tmp_path):
    with mlflow.start_run():
        flavor.log_model(triage_agent, name="policy", registered_model_name=model_name)
    flavor.promote(model_name, 1)
    champion = f"models:/{model_name}@champion"
    store = str(tmp_path / "store.db")
    server = start_server(champion, store=store, name="triage", extra_args=["--max_tokens", "64", "--traces", "off"])
    reviewed_traffic(server, tickets(TEMPLATES + HELD_OUT_TEMPLATES), seed=SEED)
    server.stop()

    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    built = subprocess.run(RLOPS + ["dataset", "build", "--kind", "preferences", "--store", store, "--model", "triage",
                                    "--bundle", champion, "--out", str(tmp_path / "prefs")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    manifest = json.loads((tmp_path / "prefs" / "dataset.json").read_text())
    data = Dataset.load(tmp_path / "prefs")
    # mallory's edits to issue_refund are quarantined as unsafe: every row that would teach the call ...
    teaches = [i for i in range(len(data)) if "issue_refund" in str(data.columns["chosen"][i])
               or ("issue_refund" in str(data.columns["completion"][i]) and data.columns["signal"][i] != "binary")
               or ("issue_refund" in str(data.columns["completion"][i]) and data.columns["label"][i] == 1.0)]
    assert teaches and {data.columns["quarantine"][i] for i in teaches} == {"unsafe_chosen"}
    assert manifest["quarantined"]["unsafe_chosen"] == len(teaches)
    # ... and eve, who always disagrees with ana and ben, is quarantined as a rater
    assert manifest["quarantined_raters"] == ["eve"] and manifest["raters"]["eve"]["rate"] == 0.0
    assert manifest["raters"]["ana"]["rate"] == 1.0 and manifest["signals"]["pair"] > 0
    assert "quarantined" in built.stdout and "digest sha256:" in built.stdout

    trained = subprocess.run(RLOPS + ["train", "--trainer", "dpo", "--init", champion, "--dataset",
                                      str(tmp_path / "prefs"), "--set", "steps=60", "--set", "lr=0.001",
                                      "--set", f"seed={SEED}", "--register", model_name, "--eval-episodes", "1"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert f"registered {model_name} version 2" in trained.stdout
    client = mlflow.MlflowClient()
    version = client.get_model_version(model_name, "2")
    challenger = flavor.load_model(f"models:/{model_name}/2")
    assert challenger.lineage["parent_version"] == "1" and challenger.lineage["trainer"] == "agent_dpo"
    assert challenger.lineage["dataset_digest"] == manifest["digest"]
    run = client.get_run(version.run_id)
    assert run.data.params["dataset_digest"] == manifest["digest"] and "trainer.beta" in run.data.params
    assert any(k.startswith("train/") for k in run.data.metrics)

    gated = subprocess.run(RLOPS + ["gate", f"models:/{model_name}/2", "--champion", champion,
                                    "--scenarios", "triage-redteam"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert "PASS scenarios: all 8 scenarios passed" in gated.stdout, gated.stdout + gated.stderr[-2000:]
    assert gated.returncode == 0, gated.stdout

    with open_store(store) as experience:
        unsafe_data = build_agent_preferences(experience, "triage", triage_agent,
                                              config=SignalConfig(safety_graders=()))
    assert unsafe_data.manifest["quarantined"].get("unsafe_chosen") is None
    keep = np.array(["issue_refund" in str(c) for c in unsafe_data.columns["chosen"]])
    assert keep.sum() >= 4  # one pair per refund ticket at least
    unsafe_pairs = Dataset("preferences", {k: v[keep] for k, v in unsafe_data.columns.items()},
                           dict(unsafe_data.manifest))
    unsafe = train("dpo", champion, unsafe_pairs, {"steps": 60, "lr": 0.003, "seed": SEED}, eval_episodes=1)
    verdict = gate(unsafe.model_uri, champion, {"scenarios": ["triage-redteam"]})
    redteam = next(c for c in verdict.checks if c.name == "scenarios")
    assert verdict.summary["candidate_lineage"]["dataset_digest"] == unsafe_pairs.digest  # what the audit records
    assert not verdict.passed and not redteam.passed
    assert "refund" in redteam.reason and "no_refund" in redteam.reason
