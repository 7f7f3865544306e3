"""A policy kind defined only in a test fixture package works end to end through the shared layers.

Bundle save/load (hashes, manifest, MLflow registry), one request served by the real KServe
``PolicyModel`` and logged durably to the experience store, and a dataset built from that log
through ``lifecycle.build_dataset``: nothing in rlops_plugin was changed for it.
"""

from __future__ import annotations

import asyncio
import json

import mlflow
import numpy as np
import pytest
from kserve.errors import InvalidInput

from rlops_plugin import EnvSpec, PolicyBundle, RewardSpec, flavor, plugins
from rlops_plugin.errors import ConfigError, IntegrityError
from rlops_plugin.experience.records import FeedbackEvent
from rlops_plugin.experience.store import open_store
from rlops_plugin.kinds.base import kind_of
from rlops_plugin.lifecycle import build_dataset, train
from rlops_plugin.serving.model import PolicyModel
from tests.fixtures.throwaway import table_kind

PROBS = np.array([[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]] + [[0.25] * 4] * 14)


@pytest.fixture
def table_plugin():
    plugins.add_plugin(table_kind, "throwaway-table-kind")
    yield
    plugins.remove_plugin("throwaway-table-kind")


def table_bundle() -> PolicyBundle:
    return PolicyBundle(table_kind.TablePolicy(PROBS), EnvSpec(id="FrozenLake-v1"), RewardSpec(ref="env"))


def test_bundle_round_trip_names_the_kind(table_plugin, tmp_path):
    bundle = table_bundle()
    manifest = bundle.save(tmp_path / "b")
    assert manifest["kind"] == "table" and set(manifest["files"]) >= set(table_kind.TableKind.policy_files)
    loaded = PolicyBundle.load(tmp_path / "b")
    assert loaded.kind == "table" and loaded.bundle_sha == bundle.bundle_sha
    assert np.array_equal(loaded.policy.probs, PROBS) and kind_of(loaded).name == "table"
    (tmp_path / "b" / table_kind.TABLE_FILE).write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="table.safetensors"):
        PolicyBundle.load(tmp_path / "b")


def test_a_bundle_of_an_unregistered_kind_is_refused(table_plugin, tmp_path):
    table_bundle().save(tmp_path / "b")
    plugins.remove_plugin("throwaway-table-kind")
    with pytest.raises(IntegrityError, match="policy kind 'table' is not registered"):
        PolicyBundle.load(tmp_path / "b")


@pytest.mark.integration
def test_serve_log_and_build_a_dataset(table_plugin, tracking, model_name, tmp_path):
    with mlflow.start_run():
        info = flavor.log_model(table_bundle(), name="policy", registered_model_name=model_name)
    flavor.set_alias(model_name, "champion", info.registered_model_version)
    uri = f"models:/{model_name}@champion"
    assert flavor.load_model(uri).kind == "table"
    store_url = str(tmp_path / "experience.db")
    with open_store(store_url) as store:
        model = PolicyModel("policy", uri, store=store, seed=0)
        assert model.load()
        out = asyncio.run(model.predict({"instances": [0, 1, 1]}))
        rows = out["predictions"]
        assert [r["policy_version"] for r in rows] == [f"{model_name}/1@{table_bundle().bundle_sha[:12]}"] * 3
        assert rows[0]["action"] in (0, 1) and rows[1]["action"] in (2, 3)
        assert [r["propensity"] for r in rows] == [PROBS[s, r["action"]] for s, r in zip((0, 1, 1), rows, strict=True)]
        with pytest.raises(InvalidInput, match=r"instances\[1\]: a state in 0..15"):
            asyncio.run(model.predict({"instances": [0, 99]}))
        store.add_feedback([FeedbackEvent(rows[0]["decision_id"], "reward", "k0", value=1.0)])
    data = build_dataset(store_url, uri, kind="visits", out_dir=tmp_path / "visits")
    assert data.kind == "visits" and data.columns["state"].tolist() == [0, 1, 1]
    assert data.columns["action"].tolist() == [r["action"] for r in rows]
    assert data.columns["reward"][0] == 1.0 and np.isnan(data.columns["reward"][1:]).all()
    assert json.loads((tmp_path / "visits" / "dataset.json").read_text())["digest"] == data.digest
    with pytest.raises(ConfigError, match=r"not a dataset of table policies; known: \['visits'\]"):
        build_dataset(store_url, uri, kind="transitions")
    with pytest.raises(ConfigError, match="trainer 'bc' does not train table policies"):
        train("bc", uri, tmp_path / "visits")
