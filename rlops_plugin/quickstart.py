"""The flavor tour behind ``rlops quickstart``: two versions, an alias move, a verified reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rlops_plugin.local.mlflow_server import LocalMlflowServer


def run_quickstart(root: str | Path, tracking_uri: str | None = None,
                   echo: Callable[[str], None] = print) -> dict[str, str]:
    """Run the tour against ``tracking_uri`` or a server started under ``root``; return versions."""
    server = None
    if tracking_uri is None:
        server = LocalMlflowServer(root)
        echo(f"starting MLflow server under {Path(root).resolve()} ...")
        tracking_uri = server.start()
        echo(f"MLflow UI: {tracking_uri}")
    try:
        return _tour(tracking_uri, echo)
    finally:
        if server is not None:
            server.stop()
            echo("MLflow server stopped")


def _tour(tracking_uri: str, echo: Callable[[str], None]) -> dict[str, str]:
    import mlflow
    import numpy as np
    import torch

    from rlops_plugin import EnvSpec, PolicyBundle, flavor

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("rlops-quickstart")
    name = "cartpole-quickstart"
    first = PolicyBundle.create(EnvSpec(id="CartPole-v1"), "env", seed=0)
    with mlflow.start_run(run_name="initial policy"):
        v1 = flavor.log_model(first, name="policy", registered_model_name=name).registered_model_version
    echo(f"registered {name} version {v1}: bundle {first.bundle_sha[:12]}")
    tuned = first.policy.clone()
    with torch.no_grad():
        tuned.network.head.bias.add_(torch.tensor([0.0, 0.5]))
    second = first.with_policy(tuned, parent_version=str(v1), parent_bundle_sha=first.bundle_sha,
                               trainer="manual-bias-tweak")
    with mlflow.start_run(run_name="tweaked policy"):
        v2 = flavor.log_model(second, name="policy", registered_model_name=name).registered_model_version
    echo(f"registered {name} version {v2}: parent {v1}, bundle {second.bundle_sha[:12]}")
    flavor.promote(name, v1)
    replaced = flavor.promote(name, v2)
    echo(f"champion moved {replaced} -> {v2} (previous = {replaced})")
    loaded = flavor.load_model_with_source(flavor.ModelRef.of(name, alias="champion").uri)
    obs = np.random.default_rng(0).normal(size=(100, 4))
    same = bool((loaded.bundle.policy.act(obs, deterministic=True)[0]
                 == second.policy.act(obs, deterministic=True)[0]).all())
    echo(f"reloaded {loaded.policy_version}: hashes verified, same greedy actions on 100 observations: {same}")
    return {"name": name, "v1": str(v1), "v2": str(v2), "champion": str(loaded.version)}
