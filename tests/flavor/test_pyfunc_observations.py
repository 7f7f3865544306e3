"""pyfunc input: gymnasium's float32 observations and float64 ones both score; non-numbers are refused."""

from __future__ import annotations

import gymnasium as gym
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException

from rlops_plugin import flavor


@pytest.fixture
def saved(tmp_path, cartpole_bundle):
    path = tmp_path / "model"
    flavor.save_model(cartpole_bundle, path)
    return path


def _env_observations(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """CartPole-v1's own ``reset()`` output, then ``n - 1`` steps' observations (float32)."""
    env = gym.make("CartPole-v1")
    first, _ = env.reset(seed=0)
    rows = [first]
    env.action_space.seed(0)
    while len(rows) < n:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        rows.append(env.reset()[0] if terminated or truncated else obs)
    env.close()
    return first, np.stack(rows)


def test_gymnasium_reset_output_scores_through_pyfunc(saved, cartpole_bundle):
    model = mlflow.pyfunc.load_model(str(saved))
    first, batch = _env_observations()
    assert first.dtype == np.float32 and batch.dtype == np.float32

    out = model.predict(first[None])
    expected_action, expected_probs = cartpole_bundle.policy.act(first, deterministic=True)
    assert out["action"].tolist() == [expected_action]
    assert np.allclose(out[["prob_0", "prob_1"]].to_numpy()[0], expected_probs)
    assert model.predict(first).equals(out)  # a single observation, as reset() returns it

    out32 = model.predict(batch)
    assert len(out32) == len(batch)
    assert out32.equals(model.predict(batch.astype(np.float64)))
    assert out32.equals(model.predict(pd.DataFrame(batch)))
    assert out32.equals(model.predict(batch.tolist()))
    assert out32.equals(model.predict({"obs": batch}))


def test_float32_observations_score_through_a_logged_model(tracking, cartpole_bundle):
    with mlflow.start_run():
        info = flavor.log_model(cartpole_bundle, name="policy")
    model = mlflow.pyfunc.load_model(info.model_uri)
    first, _ = _env_observations(1)
    out = model.predict(first[None])
    assert out["action"].tolist() == [cartpole_bundle.policy.act(first, deterministic=True)[0]]


def test_signature_declares_outputs_and_params_and_mlmodel_the_width(saved):
    model = mlflow.pyfunc.load_model(str(saved))
    signature = model.metadata.signature
    assert signature.inputs is None  # observations are checked by the flavor, not MLflow's schema
    assert signature.outputs.input_names() == ["action", "prob_0", "prob_1"]
    assert signature.params.to_dict()[0]["name"] == "deterministic"
    conf = yaml.safe_load((saved / "MLmodel").read_text())["flavors"][flavor.FLAVOR_NAME]
    assert conf[flavor.FlavorKey.OBS_DIM] == 4


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.array([["a", "b", "c", "d"]]), r"observations must be numbers .*got dtype <U1"),
        (np.array([["0.1", "0.2", "0.3", "0.4"]]), r"observations must be numbers .*got dtype <U3"),
        ([[0.1, "x", 0.3, 0.4]], r"observations must be numbers .*got dtype <U"),
        (np.ones((2, 4), dtype=bool), r"observations must be numbers .*got dtype bool"),
        (np.array([[0.1, None, 0.3, 0.4]], dtype=object), r"observations must be numbers .*got dtype object"),
        (pd.DataFrame({"a": ["x"], "b": [0.0], "c": [0.0], "d": [0.0]}), r"got dtype <U"),
        (np.zeros((2, 4), dtype=np.complex64), r"got dtype complex64"),
        ([[0.1, 0.2, 0.3, 0.4], [0.1]], r"not a rectangular array of numbers"),
        (np.float32(0.5), r"got a scalar"),
        ({"observations": [[0.0] * 4]}, r"exactly the key 'obs'"),
        (np.zeros((2, 5), dtype=np.float32), r"shape \(2, 5\), policy expects \(4,\) or \(batch, 4\)"),
        (np.array([[np.nan, 0, 0, 0]], dtype=np.float32), r"observation\[0\]\[0\] is not finite"),
    ],
)
def test_non_numeric_or_misshapen_input_is_refused(saved, bad, match):
    model = mlflow.pyfunc.load_model(str(saved))
    with pytest.raises(MlflowException, match=r"InvalidObservationError: .*" + match) as info:
        model.predict(bad)
    assert info.value.get_http_status_code() == 400


def test_mlflow_scoring_server_accepts_json_and_refuses_strings(saved):
    """The app behind ``mlflow models serve``: JSON rows score, string rows are a 400."""
    import asyncio

    import httpx
    from mlflow.pyfunc import scoring_server

    _, batch = _env_observations(3)
    app = scoring_server.init(mlflow.pyfunc.load_model(str(saved)))
    expected = mlflow.pyfunc.load_model(str(saved)).predict(batch)["action"].tolist()

    async def post_all(bodies):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://model") as client:
            return [await client.post("/invocations", json=body) for body in bodies]

    good = [{"inputs": batch.tolist()}, {"instances": batch.tolist()},
            {"dataframe_split": {"columns": list(range(4)), "data": batch.tolist()}}]
    *responses, refused = asyncio.run(post_all([*good, {"inputs": [["a", "b", "c", "d"]]}]))
    for resp in responses:
        assert resp.status_code == 200, resp.text
        assert [row["action"] for row in resp.json()["predictions"]] == expected
    assert refused.status_code == 400
    assert "observations must be numbers" in refused.json()["message"]
