"""The demo's own checks, without running the loop: its folder, its world change, names and stores."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest

from rlops_plugin import flavor
from rlops_plugin.demo.config import DemoConfig
from rlops_plugin.demo.runner import (
    MARKER,
    _pipeline_params,
    _require_empty_store,
    check_shift,
    fresh_name,
    prepare_root,
)
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.store import open_store
from tests.experience.test_store import make_batch


def test_prepare_root_clears_only_its_own_files(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    with pytest.raises(ConfigError, match="not a demo folder"):
        prepare_root(foreign)
    assert (foreign / "thesis.tex").read_text() == "mine"

    root = tmp_path / "demo"
    prepare_root(root)
    (root / "report").mkdir()
    (root / "report" / "index.html").write_text("old")
    (root / "experience.db").write_text("old")
    (root / "notes.txt").write_text("kept")
    prepare_root(root)
    assert (root / MARKER).exists() and (root / "notes.txt").read_text() == "kept"
    assert not (root / "report").exists() and not (root / "experience.db").exists()


def test_the_pipeline_is_not_told_what_changed(tmp_path):
    """The fine-tuning's physics come from the calibration step, never from the demo's known shift."""
    config = DemoConfig(shift={"masscart": 3.0})
    params = json.loads(_pipeline_params("m", "store.db", tmp_path, config).read_text())
    text = json.dumps({k: v for k, v in params.items() if k != "traffic_env_json"})  # traffic *is* the world
    assert "3.0" not in text and "extra_randomization" not in text
    assert params["calibration_window"] == config.calibration_window > 0
    assert json.loads(params["traffic_env_json"]) == {"params": {"masscart": 3.0}}
    check_shift(config)
    with pytest.raises(ConfigError, match="CartPole-v1 has no attribute wheels"):
        check_shift(DemoConfig(shift={"wheels": 3}))


def test_fast_preset_keeps_the_stages_and_shrinks_the_budgets():
    full, fast = DemoConfig.preset(), DemoConfig.preset(fast=True, model_name="x")
    assert fast.model_name == "x" and fast.shift == full.shift and fast.trigger == full.trigger
    assert fast.champion_steps < full.champion_steps and fast.window < full.window
    assert fast.reference_decisions // fast.window == full.reference_decisions // full.window


@pytest.mark.integration
def test_shared_servers_get_a_fresh_model_name_and_an_empty_store(tracking, cartpole_bundle, tmp_path):
    with mlflow.start_run():
        flavor.log_model(cartpole_bundle, name="policy", registered_model_name="demo-shared")
    assert fresh_name("demo-shared") == "demo-shared-2"
    assert fresh_name("demo-unused") == "demo-unused"
    url = str(tmp_path / "store.db")
    _require_empty_store(url)
    with open_store(url) as store:
        store.log_decisions(make_batch())
    with pytest.raises(ConfigError, match="already holds decisions"):
        _require_empty_store(url)


def test_cli_refuses_a_bad_shift_before_starting_anything(tmp_path):
    for shift, message in (("masscart", "write ATTR=VALUE"), ("masscart=heavy", "VALUE must be a number"),
                           ("wheels=3", "has no attribute wheels")):
        proc = subprocess.run([sys.executable, "-m", "rlops_plugin.cli", "demo", "--fast", "--root",
                               str(tmp_path / "d"), "--shift", shift], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.integration
def test_a_failed_stage_still_writes_the_report(tracking, tmp_path):
    """The store is not empty: stage 1 fails, the report and result.json say which stage and why."""
    from rlops_plugin.demo.runner import run_demo

    store = str(tmp_path / "busy.db")
    with open_store(store) as experience:
        experience.log_decisions(make_batch())
    root = tmp_path / "demo"
    with pytest.raises(ConfigError, match="already holds decisions"):
        run_demo(root, DemoConfig.preset(fast=True), tracking_uri=tracking, store=store)
    result = json.loads((root / "report" / "result.json").read_text())
    assert result["failed_stage"] == "[1/9] MLflow tracking server and model registry"
    assert result["outcome"] == "failed" and "already holds decisions" in result["error"]
    page = (root / "report" / "index.html").read_text()
    assert "failed at [1/9] MLflow tracking server" in page and "already holds decisions" in page
