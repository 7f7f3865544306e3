"""MLflow deployments target ``rlops-kserve``: InferenceServices through the Kubernetes API.

    mlflow deployments create -t rlops-kserve:/NAMESPACE -m models:/cartpole@champion --name cartpole \\
        -C tracking_uri=http://mlflow.rlops:5000 -C store_uri=postgresql://...
    mlflow deployments update -t rlops-kserve:/NAMESPACE --name cartpole -m models:/cartpole@challenger \\
        -C mode=canary -C fraction=0.05

The namespace comes from the target URI (default ``default``); the cluster from ``KUBECONFIG``,
``~/.kube/config`` or the in-cluster service account. ``-C`` options: ``mode`` (off, shadow,
canary), ``fraction``, ``champion``, ``tracking_uri``, ``store_uri`` (defaults: MLFLOW_TRACKING_URI,
RLOPS_STORE), ``logger_url`` (default: the rlops feedback collector service), ``canary_strategy``
(``auto``, the default: ``in-pod`` unless ``metric=decision``; ``in-pod``: one predictor serves both
policies, sticky per routing key (episode or session id), any KServe deployment mode; ``kserve``:
KServe's per-request ``canaryTrafficPercent`` between revisions, Serverless/Knative mode only, not
sticky), ``metric`` (``decision``, ``episode`` or ``session``: what the canary compares; recorded on
the InferenceService at create, and ``kserve`` with ``episode``/``session`` is refused), ``force_split``
(``true``: use KServe's split with an episode/session metric anyway), ``kubeconfig``, ``kind``
(``vector`` or ``agent``; default: read from the model's MLmodel in the caller's registry, one small
file, no bundle download). An agent gets the ``rlops-agent`` runtime and answers OpenAI clients at
``<status.url>/openai/v1`` (model: the deployment name); its in-pod canary is sticky per session id.
Every create, update and delete is a ``deployment`` audit event of the model it serves.
"""

from __future__ import annotations

from typing import Any

from mlflow.deployments import BaseDeploymentClient, PredictionsResponse

from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.deploy.kserve import KServeDeployments, as_bool
from rlops_plugin.deploy.local import challenger_defaults
from rlops_plugin.deploy.manifests import RUNTIMES, kind_of
from rlops_plugin.deploy.mlflow_local import invalid_parameter
from rlops_plugin.deploy.targets import pinned_version, record_deployment
from rlops_plugin.errors import ConfigError, RLOpsError, to_mlflow_exception

CLIENT_KEYS = {"tracking_uri", "store_uri", "logger_url", "canary_strategy", "kubeconfig"}
CONFIG_KEYS = {"mode", "fraction", "champion", "kind", "metric", "force_split"} | CLIENT_KEYS


def policy_kind(model_uri: str) -> str:
    """The policy kind of the rlops model at ``model_uri``, from its MLmodel alone (the bundle stays remote).

    The kind picks the InferenceService's runtime; a wrong guess would start a server that cannot load
    the model, so a model this process cannot read is an error naming the ``kind`` option, not a default.
    """
    from rlops_plugin.flavor.model import remote_policy_kind

    try:
        return remote_policy_kind(model_uri)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; pass -C kind=vector or -C kind=agent to deploy it anyway") from exc


def _split(config: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    config = dict(config or {})
    check_keys(config, CONFIG_KEYS, "rlops-kserve", invalid_parameter, noun="config keys")
    return ({k: v for k, v in config.items() if k in CLIENT_KEYS},
            {k: v for k, v in config.items() if k not in CLIENT_KEYS})


class RLOpsKServeDeploymentClient(BaseDeploymentClient):
    """Manages rlops InferenceServices for ``mlflow deployments``."""

    audits_itself = True
    """Every create, update and delete records its own ``deployment`` audit event."""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        suffix = target_uri.split(":", 1)[1].strip("/") if ":" in target_uri else ""
        self.namespace = suffix or "default"

    def _client(self, client_cfg: dict[str, Any]) -> KServeDeployments:
        try:
            return KServeDeployments(self.namespace, **client_cfg)
        except RLOpsError as exc:
            raise to_mlflow_exception(exc) from exc

    def _kind(self, cfg: dict[str, Any], model_uri: str) -> str:
        """The ``kind`` option, else the kind the model's MLmodel records."""
        kind = cfg.get("kind") or self._wrap(policy_kind, model_uri)
        if kind not in RUNTIMES:
            raise invalid_parameter(f"rlops-kserve: kind must be one of {sorted(RUNTIMES)}, not {kind!r}")
        return str(kind)

    def _wrap(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except RLOpsError as exc:
            raise to_mlflow_exception(exc) from exc
        if isinstance(result, dict) and "metadata" in result:  # what `mlflow deployments` prints
            result = {"name": result["metadata"].get("name"), "flavor": "rlops", **result}
        return result

    def create_deployment(self, name: str, model_uri: str, flavor: str | None = None,
                          config: dict[str, Any] | None = None, endpoint: str | None = None) -> dict[str, Any]:
        """Create an InferenceService; with mode shadow/canary ``model_uri`` is the challenger."""
        client_cfg, cfg = _split(config)
        mode = cfg.get("mode", "off")
        kserve = self._client(client_cfg)
        version = self._wrap(pinned_version, model_uri)
        kind = self._kind(cfg, model_uri)
        metric = cfg.get("metric")
        if mode == "off":
            result = self._wrap(kserve.create, name, model_uri, kind=kind, metric=metric)
        else:
            champion = cfg.get("champion") or self._wrap(challenger_defaults, model_uri)
            result = self._wrap(kserve.create, name, champion, model_uri, mode, float(cfg.get("fraction", 0.0)),
                                kind=kind, metric=metric)
        record_deployment(self.target_uri, name, "created", model_uri, cfg, version)
        return result

    def update_deployment(self, name: str, model_uri: str | None = None, flavor: str | None = None,
                          config: dict[str, Any] | None = None, endpoint: str | None = None) -> dict[str, Any]:
        """Patch the InferenceService: new champion, or a challenger in shadow/canary."""
        client_cfg, cfg = _split(config)
        kserve = self._client(client_cfg)
        mode = cfg.get("mode", "off")
        current = self._wrap(kserve.get, name)
        annotations = current.get("metadata", {}).get("annotations", {})
        champion = cfg.get("champion") or annotations.get("rlops.io/champion-uri") or annotations.get(
            "rlops.io/model-uri")
        version = self._wrap(pinned_version, model_uri or champion)
        kind = self._kind(cfg, model_uri) if model_uri else cfg.get("kind") or kind_of(current)
        routing = {"metric": cfg.get("metric"), "force_split": self._wrap(as_bool, cfg.get("force_split", False))}
        if mode == "off":
            result = self._wrap(kserve.configure, name, model_uri or champion, kind=kind, **routing)
        else:
            result = self._wrap(kserve.configure, name, champion, model_uri, mode, float(cfg.get("fraction", 0.0)),
                                kind=kind, **routing)
        record_deployment(self.target_uri, name, "updated", model_uri or champion, cfg, version)
        return result

    def delete_deployment(self, name: str, config: dict[str, Any] | None = None, endpoint: str | None = None) -> None:
        """Delete the InferenceService."""
        client_cfg, _ = _split(config)
        kserve = self._client(client_cfg)
        annotations = self._wrap(kserve.get, name).get("metadata", {}).get("annotations", {})
        self._wrap(kserve.delete, name)
        record_deployment(self.target_uri, name, "deleted", annotations.get("rlops.io/champion-uri")
                          or annotations.get("rlops.io/model-uri"))

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """rlops InferenceServices in the namespace."""
        return self._wrap(self._client({}).list)

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        """The InferenceService object."""
        return self._wrap(self._client({}).get, name)

    def predict(self, deployment_name: str | None = None, inputs: Any = None,
                endpoint: str | None = None) -> PredictionsResponse:
        """Decisions through the InferenceService URL."""
        from rlops_plugin.deploy.mlflow_local import _instances

        rows = self._wrap(self._client({}).predict, deployment_name, _instances(inputs))
        return PredictionsResponse({"predictions": rows})


def run_local(target: str, name: str, model_uri: str, flavor: str | None = None,
              config: dict[str, Any] | None = None) -> None:
    """Run the same predictor locally (127.0.0.1:8080) for a quick check before deploying."""
    from rlops_plugin.serving.server import main

    main(["--model_uri", model_uri, "--model_name", name, "--http_port", "8080"])


def target_help() -> str:
    """Shown by ``mlflow deployments help -t rlops-kserve``."""
    return __doc__ or ""
