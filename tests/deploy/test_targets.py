"""Deployment targets through mlflow.deployments: typed errors survive, unknown targets are named."""

from __future__ import annotations

import pytest

from rlops_plugin.deploy.local import DeploymentError
from rlops_plugin.deploy.targets import deploy_client, route
from rlops_plugin.errors import ConfigError


def test_route_raises_the_targets_typed_error(tmp_path):
    """rlops-local wraps its errors for `mlflow deployments`; the controller and the CLI get DeploymentError back."""
    client = deploy_client(f"rlops-local:{tmp_path / 'state'}")
    with pytest.raises(DeploymentError, match="no local deployment named 'missing'"):
        route(client, "missing", "models:/m/1", None, "off", 0.0)
    with pytest.raises(ConfigError, match="mode: 'blue' is not one of"):
        route(client, "missing", "models:/m/1", "models:/m/2", "blue", 0.5)


def test_an_unknown_target_is_named():
    with pytest.raises(ConfigError, match="deployment target 'rlops-nowhere'"):
        deploy_client("rlops-nowhere")
