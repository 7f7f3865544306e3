"""A deployment target defined only in a test fixture package takes a challenger to promotion.

The target is registered with MLflow's own plugin store (what an ``mlflow.deployments`` entry point
does); ``lifecycle.deploy`` and ``lifecycle.promote`` reach it only through
``mlflow.deployments.get_deploy_client``: shadow -> canary -> promote, with the registry aliases
and the audit trail, and the deployment event written by the lifecycle for a target that does not
audit itself.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.deployments import get_deploy_client
from mlflow.deployments.interface import plugin_store

from rlops_plugin import flavor
from rlops_plugin.audit.events import list_events
from rlops_plugin.deploy.analysis import CANARY, PROMOTED, SHADOW
from rlops_plugin.experience.records import FeedbackEvent
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor import registry
from rlops_plugin.lifecycle import deploy, promote
from tests.deploy.test_promotion import BANDIT, FAST, bandit_policy

pytestmark = pytest.mark.integration
TARGET = "rlops-inprocess"


@pytest.fixture
def inprocess_target():
    plugin_store.register(TARGET, "tests.fixtures.throwaway.inprocess_target")
    yield TARGET
    client = get_deploy_client(TARGET)
    for state in client.list_deployments():
        client.delete_deployment(state["name"])
    plugin_store.registry.pop(TARGET, None)


def traffic(client, store_url: str, env, rng: np.random.Generator, n: int) -> None:
    """``n`` one-step bandit episodes through the target's predict, rewards posted to the store."""
    contexts = rng.normal(size=(n, 5)).astype(np.float32)
    rows = client.predict("bandit", contexts.tolist())["predictions"]
    means = env.expected_reward(contexts)
    rewards = means[np.arange(n), [r["action"] for r in rows]] + rng.normal(0, 0.1, n)
    with open_store(store_url) as store:
        store.add_feedback([FeedbackEvent(r["decision_id"], "reward", f"r-{r['decision_id']}", value=float(v))
                            for r, v in zip(rows, rewards, strict=True)])


def test_shadow_canary_promote_through_a_third_party_target(inprocess_target, tracking, model_name, tmp_path):
    for best in (False, True):
        with mlflow.start_run():
            flavor.log_model(bandit_policy(best), name="policy", registered_model_name=model_name)
    flavor.set_alias(model_name, "champion", 1)
    flavor.set_alias(model_name, "challenger", 2)
    store_url = str(tmp_path / "store.db")
    state = deploy(TARGET, "bandit", f"models:/{model_name}@champion", {"store": store_url})
    assert state["policies"] == [f"{model_name}/1@{flavor.load_model(f'models:/{model_name}/1').bundle_sha[:12]}"]
    client, env, rng, seen = get_deploy_client(TARGET), BANDIT.make().unwrapped, np.random.default_rng(0), []

    def on_action(action):
        seen.append(action.state)
        traffic(client, store_url, env, rng, 120)

    traffic(client, store_url, env, rng, 120)
    final, controller = promote(model_name, "bandit", TARGET, store_url, FAST, served_model="policy",
                                max_polls=80, on_action=on_action)
    assert final.state == PROMOTED, final.reason
    assert seen[0] == SHADOW and CANARY in seen, seen
    assert registry.get_alias_version(model_name, "champion") == "2"
    assert registry.get_alias_version(model_name, "challenger") is None
    served = client.get_deployment("bandit")
    assert served["champion_uri"] == f"models:/{model_name}/2" and served["challenger_uri"] is None
    kinds = [e.kind for e in list_events(model_name)]
    assert kinds[0] == "deployment" and "canary_step" in kinds and kinds[-1] == "promotion"
    (event,) = list_events(model_name, kinds=["deployment"])
    assert event.details["target"] == TARGET and event.decision == "created" and event.model_version == "1"
