"""Round trip through a real MLflow server: log, register, alias, load as bundle and pyfunc."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from rlops_plugin import flavor
from rlops_plugin.errors import IntegrityError, RegistryError
from rlops_plugin.flavor import registry

pytestmark = pytest.mark.integration


def _log(bundle, name):
    with mlflow.start_run():
        return flavor.log_model(bundle, name="policy", registered_model_name=name)


def test_two_versions_champion_round_trip(tracking, model_name, cartpole_bundle):
    info1 = _log(cartpole_bundle, model_name)
    improved = cartpole_bundle.policy.clone()
    with torch.no_grad():
        for p in improved.parameters():
            p.add_(0.05)
    child = cartpole_bundle.with_policy(improved, parent_version=str(info1.registered_model_version),
                                        parent_bundle_sha=cartpole_bundle.bundle_sha,
                                        dataset_digest="sha256:feedbeef", trainer="cql")
    info2 = _log(child, model_name)
    assert (str(info1.registered_model_version), str(info2.registered_model_version)) == ("1", "2")

    assert flavor.promote(model_name, 1) is None
    assert flavor.promote(model_name, 2) == "1"
    assert flavor.get_alias_version(model_name, "champion") == "2"
    assert flavor.get_alias_version(model_name, "previous") == "1"

    loaded = flavor.load_model_with_source(f"models:/{model_name}@champion")
    assert (loaded.name, loaded.version, loaded.alias) == (model_name, "2", "champion")
    assert loaded.bundle.hashes() == child.hashes()
    assert loaded.policy_version == f"{model_name}/2@{child.bundle_sha[:12]}"
    obs = np.random.default_rng(42).normal(size=(100, 4))
    expected, _ = child.policy.act(obs, deterministic=True)
    got, _ = loaded.bundle.policy.act(obs, deterministic=True)
    assert (got == expected).all()

    pyfunc = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    assert (pyfunc.predict(obs)["action"].to_numpy() == expected).all()

    mv = registry.client().get_model_version(model_name, "2")
    hashes = child.hashes()
    assert mv.tags["rlops.bundle_sha"] == hashes["bundle"]
    assert mv.tags["rlops.policy_sha"] == hashes["policy"]
    assert mv.tags["rlops.env_sha"] == hashes["env"]
    assert mv.tags["rlops.reward_sha"] == hashes["reward"]
    assert mv.tags["rlops.env_id"] == "CartPole-v1"
    assert mv.tags["rlops.reward_ref"] == "env"
    assert mv.tags["rlops.parent_version"] == "1"
    assert mv.tags["rlops.dataset_digest"] == "sha256:feedbeef"
    assert "Trained from version 1" in mv.description and "sha256:feedbeef" in mv.description
    assert "CartPole-v1" in mv.description
    assert registry.client().get_model_version(model_name, "1").description.endswith(
        f"Bundle sha256 {cartpole_bundle.bundle_sha}.")

    assert flavor.rollback(model_name) == "1"
    assert flavor.get_alias_version(model_name, "champion") == "1"
    assert flavor.get_alias_version(model_name, "previous") == "2"


def test_register_bundle_from_a_logged_model(tracking, model_name, cartpole_bundle):
    with mlflow.start_run():
        info = flavor.log_model(cartpole_bundle, name="policy")
    mv = flavor.register_bundle(info.model_uri, model_name)
    assert mv.tags["rlops.bundle_sha"] == cartpole_bundle.bundle_sha
    flavor.set_alias(model_name, "challenger", mv.version)
    with pytest.raises(RegistryError, match="points to version 1, expected 7"):
        flavor.set_alias(model_name, "challenger", mv.version, expected_current="7")


def test_missing_alias_and_bad_uri_are_registry_errors(tracking, model_name, cartpole_bundle):
    _log(cartpole_bundle, model_name)
    with pytest.raises(RegistryError, match="champion"):
        flavor.load_model(f"models:/{model_name}@champion")
    with pytest.raises(RegistryError, match="models:/NAME/VERSION"):
        flavor.load_model(f"models:/{model_name}/Production")
    with pytest.raises(RegistryError, match="no 'previous' alias"):
        flavor.rollback(model_name)


def test_fully_resealed_artifact_is_caught_by_the_registry_tag(tracking, mlflow_server, model_name,
                                                                cartpole_bundle):
    """An attacker who rewrites every hash inside the artifact still can't match the registry tag."""
    from tests.flavor.test_tamper import reseal

    info = _log(cartpole_bundle, model_name)
    model_id = info.model_id
    matches = [p for p in Path(mlflow_server.artifacts).rglob("env_spec.json") if model_id in str(p)]
    assert len(matches) == 1
    env_path = matches[0]
    model_dir = env_path.parent.parent
    data = json.loads(env_path.read_text())
    data["params"] = {"length": 3.0}
    env_path.write_text(json.dumps(data))
    reseal(model_dir, hashes=True)
    assert flavor.load_local_model(model_dir).env_spec.params == {"length": 3.0}
    with pytest.raises(IntegrityError, match="differs from the registry tag rlops.bundle_sha"):
        flavor.load_model(f"models:/{model_name}/1")


class _CrashOn:
    """Make the n-th alias write fail as if the MLflow server died mid-call (the client raises on a dropped link)."""

    def __init__(self, monkeypatch, n: int) -> None:
        self.calls, self.n = 0, n
        real = registry.client().__class__.set_registered_model_alias

        def failing(client, *args, **kwargs):
            self.calls += 1
            if self.calls == self.n:
                raise ConnectionError("MLflow server went away")
            return real(client, *args, **kwargs)

        monkeypatch.setattr(registry.client().__class__, "set_registered_model_alias", failing)


def _three_versions(model_name, bundle):
    for _ in range(3):
        _log(bundle, model_name)
    flavor.promote(model_name, 1)
    flavor.promote(model_name, 2)  # champion 2, previous 1


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_promotion_that_crashes_between_alias_writes_is_completed_by_the_next_call(
        tracking, model_name, cartpole_bundle, monkeypatch, crash_at):
    """Killed mid-promotion: a re-run (or a rollback) finishes it, so previous never stays equal to champion."""
    _three_versions(model_name, cartpole_bundle)
    with monkeypatch.context() as patch:
        _CrashOn(patch, crash_at)
        with pytest.raises(ConnectionError):
            flavor.promote(model_name, 3)
    assert registry.complete_alias_moves(model_name) == [("previous", "2"), ("champion", "3")]
    assert (flavor.get_alias_version(model_name, "champion"), flavor.get_alias_version(model_name, "previous")) \
        == ("3", "2")
    assert flavor.promote(model_name, 3) == "2"  # re-running a finished promotion changes nothing
    assert flavor.rollback(model_name) == "2"
    assert flavor.get_alias_version(model_name, "previous") == "3"


def test_rollback_after_a_crashed_promotion_rolls_back_to_the_right_version(tracking, model_name,
                                                                           cartpole_bundle, monkeypatch):
    _three_versions(model_name, cartpole_bundle)
    with monkeypatch.context() as patch:
        _CrashOn(patch, 2)  # previous already moved to 2, champion still 2: the state the issue saw
        with pytest.raises(ConnectionError):
            flavor.promote(model_name, 3)
    assert flavor.get_alias_version(model_name, "previous") == flavor.get_alias_version(model_name, "champion")
    assert flavor.rollback(model_name) == "2"  # the pending move completes first: champion 3 -> back to 2
    assert (flavor.get_alias_version(model_name, "champion"), flavor.get_alias_version(model_name, "previous")) \
        == ("2", "3")


def test_a_crashed_rollback_is_completed_too(tracking, model_name, cartpole_bundle, monkeypatch):
    _three_versions(model_name, cartpole_bundle)
    with monkeypatch.context() as patch:
        _CrashOn(patch, 2)
        with pytest.raises(ConnectionError):
            flavor.rollback(model_name)
    flavor.promote(model_name, 1)  # any later move finishes the rollback first
    assert (flavor.get_alias_version(model_name, "champion"), flavor.get_alias_version(model_name, "previous")) \
        == ("1", "2")
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        flavor.set_alias(model_name, "previous", "1")
        flavor.rollback(model_name)
