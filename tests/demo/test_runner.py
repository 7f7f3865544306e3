"""The demo's own checks, without running the loop: its folder, its world change, names and stores."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest

from rlops_plugin import flavor
from rlops_plugin.demo.config import DemoConfig
from rlops_plugin.demo.runner import MARKER, _fresh_name, _randomization, _require_empty_store, prepare_root
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


def test_world_change_sets_the_fine_tuning_randomization():
    assert _randomization(DemoConfig()) == {"masscart": {"low": 1.0, "high": 2.5}}
    assert _randomization(DemoConfig(shift={"length": 0.25})) == {"length": {"low": 0.25, "high": 0.5}}
    explicit = {"gravity": {"low": 9.0, "high": 11.0}}
    assert _randomization(DemoConfig(finetune_randomization=explicit)) == explicit
    with pytest.raises(ConfigError, match="CartPole-v1 has no attribute wheels"):
        _randomization(DemoConfig(shift={"wheels": 3}))


def test_fast_preset_keeps_the_stages_and_shrinks_the_budgets():
    full, fast = DemoConfig.preset(), DemoConfig.preset(fast=True, model_name="x")
    assert fast.model_name == "x" and fast.shift == full.shift and fast.trigger == full.trigger
    assert fast.champion_steps < full.champion_steps and fast.window < full.window
    assert fast.reference_decisions // fast.window == full.reference_decisions // full.window


@pytest.mark.integration
def test_shared_servers_get_a_fresh_model_name_and_an_empty_store(tracking, cartpole_bundle, tmp_path):
    with mlflow.start_run():
        flavor.log_model(cartpole_bundle, name="policy", registered_model_name="demo-shared")
    assert _fresh_name("demo-shared") == "demo-shared-2"
    assert _fresh_name("demo-unused") == "demo-unused"
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
