"""MLflow deployments target ``rlops-local``: real ``rlops serve`` processes on 127.0.0.1.

    mlflow deployments create -t rlops-local -m models:/cartpole@champion --name cartpole
    mlflow deployments create -t rlops-local -m models:/cartpole@challenger --name cartpole-shadow -C mode=shadow
    mlflow deployments update -t rlops-local --name cartpole -m models:/cartpole@challenger \\
        -C mode=canary -C fraction=0.05
    mlflow deployments predict -t rlops-local --name cartpole --input-path obs.json
    mlflow deployments delete -t rlops-local --name cartpole

Every create, update and delete is a ``deployment`` audit event of the model it serves.
``-C`` options: ``mode`` (off, shadow, canary), ``fraction``, ``champion`` (default
``models:/NAME@champion`` for a shadow/canary challenger), ``store`` (experience store), ``port``,
``exploration``, ``epsilon``, ``seed`` (of the exploration). State lives in
``RLOPS_LOCAL_DEPLOYMENTS`` (or the target URI path, ``rlops-local:/path``).
"""

from __future__ import annotations

from typing import Any

from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException

from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.deploy.local import LocalDeployments, challenger_defaults
from rlops_plugin.deploy.targets import pinned_version, record_deployment
from rlops_plugin.errors import RLOpsError, to_mlflow_exception

CONFIG_KEYS = {"mode", "fraction", "champion", "store", "port", "exploration", "epsilon", "seed"}


def _config(config: dict[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    check_keys(config, CONFIG_KEYS, "rlops-local", invalid_parameter, noun="config keys")
    if config.get("mode", "off") not in ("off", "shadow", "canary"):
        raise MlflowException(f"rlops-local: mode must be off, shadow or canary, got {config['mode']!r}",
                              error_code="INVALID_PARAMETER_VALUE")
    return config


def invalid_parameter(message: str) -> MlflowException:
    """What ``mlflow deployments`` shows for a bad ``-C`` option (INVALID_PARAMETER_VALUE)."""
    return MlflowException(message, error_code="INVALID_PARAMETER_VALUE")


def _instances(inputs: Any) -> list[Any]:
    import numpy as np
    import pandas as pd

    if isinstance(inputs, pd.DataFrame):
        for key in ("instances", "inputs"):  # `mlflow deployments predict --input-path` reads JSON into a frame
            if list(inputs.columns) == [key]:
                return [row.tolist() if hasattr(row, "tolist") else row for row in inputs[key]]
        return inputs.to_numpy(dtype=float).tolist()
    if isinstance(inputs, dict):
        return list(inputs.get("instances") or inputs.get("inputs") or [])
    return np.asarray(inputs, dtype=float).tolist() if not isinstance(inputs, list) else inputs


class RLOpsLocalDeploymentClient(BaseDeploymentClient):
    """Manages local policy servers for ``mlflow deployments`` and ``mlflow.deployments.get_deploy_client``."""

    audits_itself = True
    """Every create, update and delete records its own ``deployment`` audit event."""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        root = target_uri.split(":", 1)[1] if ":" in target_uri else ""
        self.deployments = LocalDeployments(root or None)

    def _wrap(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RLOpsError as exc:
            raise to_mlflow_exception(exc) from exc

    def create_deployment(self, name: str, model_uri: str, flavor: str | None = None,
                          config: dict[str, Any] | None = None, endpoint: str | None = None) -> dict[str, Any]:
        """Start a server: ``model_uri`` is the champion, or the challenger when ``mode`` is shadow/canary."""
        cfg = _config(config)
        mode = cfg.get("mode", "off")
        version = self._wrap(pinned_version, model_uri)
        extra = [f"--{k}={cfg[k]}" for k in ("exploration", "epsilon", "seed") if k in cfg]
        if mode == "off":
            state = self._wrap(self.deployments.create, name, model_uri, store=cfg.get("store"),
                               port=int(cfg["port"]) if "port" in cfg else None, extra_args=extra)
        else:
            champion = cfg.get("champion") or self._wrap(challenger_defaults, model_uri)
            state = self._wrap(self.deployments.create, name, champion, model_uri, mode,
                               float(cfg.get("fraction", 0.0)), store=cfg.get("store"),
                               port=int(cfg["port"]) if "port" in cfg else None, extra_args=extra)
        record_deployment(self.target_uri, name, "created", model_uri, {**cfg, "store": state.get("store")}, version)
        return state

    def update_deployment(self, name: str, model_uri: str | None = None, flavor: str | None = None,
                          config: dict[str, Any] | None = None, endpoint: str | None = None) -> dict[str, Any]:
        """Reconfigure without a restart: new champion (mode off) or challenger with shadow/canary routing."""
        cfg = _config(config)
        mode = cfg.get("mode")
        fraction = float(cfg["fraction"]) if "fraction" in cfg else None
        version = self._wrap(pinned_version, model_uri)
        if mode in ("shadow", "canary"):
            state = self._wrap(self.deployments.configure, name, cfg.get("champion"), model_uri or None, mode,
                               fraction)
        elif mode == "off":
            state = self._wrap(self.deployments.configure, name, model_uri or cfg.get("champion"), "", "off", 0.0)
        else:
            state = self._wrap(self.deployments.configure, name, model_uri, None, None, fraction)
        record_deployment(self.target_uri, name, "updated", model_uri or state.get("model_uri"), cfg, version)
        return state

    def delete_deployment(self, name: str, config: dict[str, Any] | None = None, endpoint: str | None = None) -> None:
        """Stop the server by PID and forget it."""
        state = self._wrap(self.deployments.get, name)
        self._wrap(self.deployments.delete, name)
        record_deployment(self.target_uri, name, "deleted", state.get("model_uri"))

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """All local deployments with their live status."""
        return self._wrap(self.deployments.list)

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        """One deployment's state and status."""
        return self._wrap(self.deployments.get, name)

    def predict(self, deployment_name: str | None = None, inputs: Any = None,
                endpoint: str | None = None) -> PredictionsResponse:
        """Decisions for observations (DataFrame, array, list, or ``{"instances": [...]}``)."""
        rows = self._wrap(self.deployments.predict, deployment_name, _instances(inputs))
        return PredictionsResponse({"predictions": rows})


def run_local(target: str, name: str, model_uri: str, flavor: str | None = None,
              config: dict[str, Any] | None = None) -> None:
    """Serve in the foreground (``mlflow deployments run-local``) until Ctrl-C."""
    from rlops_plugin.serving.server import main

    cfg = _config(config)
    argv = ["--model_uri", model_uri, "--model_name", "policy", "--http_port", str(cfg.get("port", 8080))]
    if cfg.get("store"):
        argv += ["--store", cfg["store"]]
    main(argv)


def target_help() -> str:
    """Shown by ``mlflow deployments help -t rlops-local``."""
    return __doc__ or ""
