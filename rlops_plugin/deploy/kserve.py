"""KServe deployments through the Kubernetes API (official ``kubernetes`` client).

Shadow runs inside one predictor (KServe has no mirroring): the pod serves the champion and logs
the challenger's distribution. Canaries use KServe's own traffic split by default
(``canary_strategy="kserve"``): the latest revision serves the challenger and receives
``canaryTrafficPercent`` of the traffic, the previous revision keeps serving the champion; each
revision logs decisions under its own policy version into the shared store. ``"in-pod"`` splits
inside one revision instead. Configuration comes from the kubeconfig (``KUBECONFIG``) or the
in-cluster service account.

Agent policies (``kind="agent"``) get the ``rlops-agent`` runtime and answer on KServe's OpenAI data
plane at ``<status.url>/openai/v1``. Their server serves one policy per revision, so an agent canary is
KServe's traffic split only (update a running deployment with ``canary_strategy="kserve"``); shadow
and in-pod canaries are refused, and so is changing a deployment's kind in place (delete, recreate).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import httpx

from rlops_plugin.bundle.bundle import DEFAULT_KIND
from rlops_plugin.deploy.local import DeploymentError
from rlops_plugin.deploy.manifests import (
    ISVC_PLURAL,
    KSERVE_GROUP,
    KSERVE_VERSION,
    RUNTIMES,
    agent_inference_service,
    collector_url,
    inference_service,
    kind_of,
    openai_base_url,
)
from rlops_plugin.errors import ConfigError
from rlops_plugin.kinds.agent.policy import AGENT_KIND


def api_client(kubeconfig: str | None = None) -> Any:
    """A Kubernetes API client from a kubeconfig, ``KUBECONFIG`` or the in-cluster account."""
    from kubernetes import client, config

    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        if os.path.exists(path):  # KUBECONFIG is read here, not at import time, so it can change per call
            return config.new_client_from_config(config_file=path)
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException as exc:
        raise ConfigError(f"no Kubernetes configuration: {exc}") from exc


class KServeDeployments:
    """Create, reconfigure, inspect and delete InferenceServices for rlops policies."""

    def __init__(self, namespace: str = "default", *, kubeconfig: str | None = None, tracking_uri: str | None = None,
                 store_uri: str | None = None, logger_url: str | None = None, canary_strategy: str = "kserve",
                 client: Any = None) -> None:
        from kubernetes import client as k8s

        if canary_strategy not in ("kserve", "in-pod"):
            raise ConfigError("canary_strategy must be 'kserve' or 'in-pod'")
        self.namespace = namespace
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.store_uri = store_uri or os.environ.get("RLOPS_STORE")
        if not self.tracking_uri or not self.store_uri:
            raise ConfigError("KServe deployments need tracking_uri and store_uri (config or MLFLOW_TRACKING_URI "
                              "and RLOPS_STORE) reachable from the cluster")
        self.logger_url = logger_url if logger_url is not None else collector_url(namespace)
        self.canary_strategy = canary_strategy
        self.api = k8s.CustomObjectsApi(client or api_client(kubeconfig))

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(KSERVE_GROUP, KSERVE_VERSION, self.namespace, ISVC_PLURAL, *args, **kwargs)
        except ApiException as exc:
            raise DeploymentError(f"Kubernetes API {exc.status} {exc.reason}: {exc.body}") from exc

    def manifest(self, name: str, champion_uri: str, challenger_uri: str | None = None, mode: str = "off",
                 fraction: float = 0.0, *, kind: str = DEFAULT_KIND) -> dict[str, Any]:
        """The InferenceService for a champion (and in-pod shadow/canary challenger) of policy ``kind``."""
        in_pod = challenger_uri if mode == "shadow" or (mode == "canary" and self.canary_strategy == "in-pod") \
            else None
        if kind not in RUNTIMES:
            raise ConfigError(f"no KServe runtime for policy kind {kind!r} (known: {sorted(RUNTIMES)})")
        if kind == AGENT_KIND:
            if in_pod:
                raise ConfigError(f"agent deployment {name!r}: {mode} inside one pod is not supported (the agent "
                                  "server serves one policy); use mode=canary with canary_strategy=kserve on a "
                                  "running deployment")
            return agent_inference_service(name, champion_uri, namespace=self.namespace,
                                           tracking_uri=self.tracking_uri, store_uri=self.store_uri)
        return inference_service(name, champion_uri, namespace=self.namespace, tracking_uri=self.tracking_uri,
                                 store_uri=self.store_uri, challenger_uri=in_pod, routing=mode if in_pod else "off",
                                 canary_fraction=fraction if in_pod else 0.0, logger_url=self.logger_url)

    def create(self, name: str, champion_uri: str, challenger_uri: str | None = None, mode: str = "off",
               fraction: float = 0.0, *, kind: str = DEFAULT_KIND) -> dict[str, Any]:
        """Create the InferenceService (a canary on creation is always in-pod: there is no old revision)."""
        if mode == "canary" and kind == AGENT_KIND:
            raise ConfigError(f"agent deployment {name!r}: a canary needs a running revision to split traffic "
                              "with; create it with the champion, then update with mode=canary")
        if mode == "canary":
            body = inference_service(name, champion_uri, namespace=self.namespace, tracking_uri=self.tracking_uri,
                                     store_uri=self.store_uri, challenger_uri=challenger_uri, routing="canary",
                                     canary_fraction=fraction, logger_url=self.logger_url)
        else:
            body = self.manifest(name, champion_uri, challenger_uri, mode, fraction, kind=kind)
        return self._call(self.api.create_namespaced_custom_object, body)

    def get(self, name: str) -> dict[str, Any]:
        """The InferenceService object (with status)."""
        return self._call(self.api.get_namespaced_custom_object, name)

    def list(self) -> list[dict[str, Any]]:
        """rlops InferenceServices in the namespace."""
        items = self._call(self.api.list_namespaced_custom_object,
                           label_selector="app.kubernetes.io/part-of=rlops").get("items", [])
        return list(items)

    def configure(self, name: str, champion_uri: str, challenger_uri: str | None = None, mode: str = "off",
                  fraction: float = 0.0, *, kind: str = DEFAULT_KIND) -> dict[str, Any]:
        """Patch the InferenceService to serve this champion/challenger/routing of policy ``kind``."""
        current = self.get(name)
        if kind_of(current) != kind:  # a merge patch would keep the other kind's logger, args and resources
            raise DeploymentError(f"InferenceService {name!r} serves policy kind {kind_of(current)!r}, not "
                                  f"{kind!r}: delete the deployment and create it again")
        if mode == "canary" and self.canary_strategy == "kserve" and challenger_uri:
            body = self.manifest(name, challenger_uri, kind=kind)  # the latest revision serves the challenger
            predictor = body["spec"]["predictor"]
            predictor["canaryTrafficPercent"] = int(round(fraction * 100))
            body["metadata"]["annotations"]["rlops.io/champion-uri"] = champion_uri
        else:
            body = self.manifest(name, champion_uri, challenger_uri, mode, fraction, kind=kind)
            body["spec"]["predictor"]["canaryTrafficPercent"] = None  # JSON merge patch: remove the field
        patch = {"metadata": {"annotations": body["metadata"]["annotations"]}, "spec": body["spec"]}
        if current.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent") is None and \
                patch["spec"]["predictor"].get("canaryTrafficPercent") is None:
            patch = copy.deepcopy(patch)
            patch["spec"]["predictor"].pop("canaryTrafficPercent")
        return self._call(self.api.patch_namespaced_custom_object, name, patch)

    def delete(self, name: str) -> None:
        """Delete the InferenceService."""
        self._call(self.api.delete_namespaced_custom_object, name)

    def predict(self, name: str, instances: list[Any]) -> list[dict[str, Any]]:
        """Decisions through the InferenceService's URL (``status.url``)."""
        isvc = self.get(name)
        url = (isvc.get("status") or {}).get("url")
        if not url:
            raise DeploymentError(f"InferenceService {name!r} has no status.url yet (not ready)")
        if kind_of(isvc) == AGENT_KIND:
            raise DeploymentError(f"{name!r} serves an agent: call it with an OpenAI client, "
                                  f"base_url={openai_base_url(url)!r}, model={name!r}")
        r = httpx.post(f"{url}/v1/models/{name}:predict", json={"instances": instances}, timeout=60)
        if r.status_code != 200:
            raise DeploymentError(f"{name}: {r.status_code} {r.text}")
        return r.json()["predictions"]
