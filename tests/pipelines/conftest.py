"""A small live loop for pipeline tests: registered champion, local deployment, logged rewarded traffic."""

from __future__ import annotations

import uuid

import mlflow
import pytest

from rlops_plugin import EnvSpec, PolicyBundle, flavor
from rlops_plugin.deploy.local import LocalDeployments
from rlops_plugin.simulation.traffic import DecisionClient, simulate


@pytest.fixture(scope="module")
def world(mlflow_server, tmp_path_factory):
    """Champion v1 of a fresh model name, served by rlops-local with 3,000 rewarded decisions logged."""
    root = tmp_path_factory.mktemp("world")
    name = f"pipeline-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mlflow.set_tracking_uri(mlflow_server.url)
        mlflow.set_registry_uri(mlflow_server.url)
        with mlflow.start_run():
            flavor.log_model(PolicyBundle.create(EnvSpec(id="CartPole-v1"), seed=0), name="policy",
                             registered_model_name=name)
        flavor.promote(name, 1)
        deployments = LocalDeployments(root / "state")
        state = deployments.create("policy-server", f"models:/{name}@champion", store=str(root / "store.db"),
                                   extra_args=["--exploration", "epsilon", "--epsilon", "0.3", "--seed", "1"])
        try:
            client = DecisionClient(state["url"])
            simulate(client, EnvSpec(id="CartPole-v1"), 3000, n_envs=16, seed=0)
            client.close()
            yield {"name": name, "store": str(root / "store.db"), "state_root": str(root / "state"),
                   "target": f"rlops-local:{root / 'state'}", "deployment": "policy-server", "url": state["url"],
                   "tracking": mlflow_server.url, "root": root}
        finally:
            for dep in deployments.list():
                deployments.delete(dep["name"])
