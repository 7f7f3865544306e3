import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from rlops_plugin import EnvSpec, PolicyBundle, __version__, flavor
from rlops_plugin.errors import ConfigError


@pytest.fixture
def saved(tmp_path, cartpole_bundle):
    path = tmp_path / "model"
    flavor.save_model(cartpole_bundle, path)
    return path


def test_mlmodel_records_hashes_and_pyfunc_loader(saved, cartpole_bundle):
    mlmodel = yaml.safe_load((saved / "MLmodel").read_text())
    conf = mlmodel["flavors"][flavor.FLAVOR_NAME]
    assert conf[flavor.FlavorKey.BUNDLE_SHA] == cartpole_bundle.bundle_sha
    assert conf[flavor.FlavorKey.ENV_ID] == "CartPole-v1"
    assert conf[flavor.FlavorKey.RLOPS_VERSION] == __version__
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "rlops_plugin.flavor"
    reqs = (saved / "requirements.txt").read_text()
    assert f"rlops-plugin=={__version__}" in reqs and "torch==" in reqs and "safetensors==" in reqs


def test_load_local_round_trip(saved, cartpole_bundle):
    loaded = flavor.load_local_model(saved)
    assert loaded.hashes() == cartpole_bundle.hashes()


def test_pyfunc_accepts_ndarray_and_dataframe(saved, cartpole_bundle):
    model = mlflow.pyfunc.load_model(str(saved))
    obs = np.random.default_rng(0).normal(size=(10, 4))
    out = model.predict(obs)
    assert list(out.columns) == ["action", "prob_0", "prob_1"]
    expected_actions, expected_probs = cartpole_bundle.policy.act(obs, deterministic=True)
    assert (out["action"].to_numpy() == expected_actions).all()
    assert np.allclose(out[["prob_0", "prob_1"]].to_numpy(), expected_probs)
    out_df = model.predict(pd.DataFrame(obs))
    assert out_df.equals(out)
    sampled = model.predict(np.tile(obs[:1], (2000, 1)), params={"deterministic": False})
    assert 0 < sampled["action"].mean() < 1
    assert model.metadata.signature.params.to_dict()[0]["name"] == "deterministic"


def test_pyfunc_box_policy(tmp_path):
    import gymnasium as gym

    from rlops_plugin import Policy

    bundle = PolicyBundle.create(EnvSpec(id="rlops/ChainWalk-v0"))
    box = Policy("mlp", {}, bundle.policy.observation_space, gym.spaces.Box(-1, 1, shape=(2,)))
    flavor.save_model(PolicyBundle(box, bundle.env_spec, bundle.reward_spec), tmp_path / "m")
    out = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(np.eye(6)[:3])
    assert list(out.columns) == ["action_0", "action_1", "density"]
    assert (out[["action_0", "action_1"]].abs().to_numpy() <= 1).all()


def test_version_mismatch_warns(saved):
    mlmodel_path = saved / "MLmodel"
    text = mlmodel_path.read_text().replace(f"rlops_version: {__version__}", "rlops_version: 9.9.0")
    mlmodel_path.write_text(text)
    with pytest.warns(UserWarning, match=r"saved with rlops-plugin 9\.9\.0.*install rlops-plugin==9\.9\.0"):
        flavor.load_local_model(saved)


def test_not_an_rlops_model(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors:\n  sklearn: {pickled_model: model.pkl}\n")
    with pytest.raises(ConfigError, match="has no 'rlops' flavor"):
        flavor.load_local_model(tmp_path)
    with pytest.raises(ConfigError, match="expects a PolicyBundle"):
        flavor.save_model(object(), tmp_path / "x")


def test_weights_whose_header_length_starts_like_a_pickle_still_load(tmp_path):
    """The first byte of a safetensors file is part of its header length: 0x80 must not read as a pickle."""
    bundle = PolicyBundle.create(EnvSpec(id="CartPole-v1"), config={"hidden_sizes": []})
    assert bundle.policy.weights_bytes()[:1] == b"\x80"
    flavor.save_model(bundle, tmp_path / "m")
    assert flavor.load_local_model(tmp_path / "m").hashes() == bundle.hashes()
