"""KServe deployments through the Kubernetes API (official ``kubernetes`` client).

Shadow runs inside one predictor (KServe has no mirroring): the pod serves the champion and logs
the challenger's distribution. A canary is routed one of two ways (``canary_strategy``):

* ``in-pod``: one predictor loads champion and challenger and splits inside the pod, sticky per routing
  key (a vector request's ``routing_key``, e.g. the episode id; an agent's session id), so an episode or
  a conversation meets one policy from start to end. Works in every KServe deployment mode
  (RawDeployment/Standard and Serverless).
* ``kserve``: KServe's ``canaryTrafficPercent``: the latest revision serves the challenger, the previous
  one the champion, and each *request* is split at random between them. Needs KServe's Serverless
  (Knative) mode, and is not sticky: an episode or session whose requests meet both revisions is
  dropped from an episode-level canary.
* ``auto`` (default): ``kserve`` when the canary's metric is declared per-decision (``metric="decision"``),
  else ``in-pod`` (``metric`` episode or session, or not declared: sticky routing is right for every metric).

``canary_strategy="kserve"`` with an episode/session metric is refused (:class:`ConfigError`) unless
``force_split`` is given. The metric comes with the call, or from the ``rlops.io/canary-metric``
annotation recorded when the deployment was created with one. Configuration comes from the
kubeconfig (``KUBECONFIG``) or the in-cluster service account.

Agent policies (``kind="agent"``) get the ``rlops-agent`` runtime and answer on KServe's OpenAI data
plane at ``<status.url>/openai/v1``; their in-pod shadow and canary are the agent server's own
(sticky per session id). Changing a deployment's kind in place is refused (delete, recreate).
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

CANARY_STRATEGIES = ("auto", "in-pod", "kserve")
CANARY_METRICS = ("decision", "episode", "session")
"""What a canary compares: per-decision rewards, or whole episodes (vector) / sessions (agents)."""
STICKY_METRICS = ("episode", "session")
"""Metrics that need every decision of an episode or session from one policy (a sticky split)."""
METRIC_ANNOTATION = "rlops.io/canary-metric"
STRATEGY_ANNOTATION = "rlops.io/canary-strategy"


def check_metric(metric: str | None) -> str | None:
    """``metric`` when it is one of :data:`CANARY_METRICS` (or None); otherwise a ConfigError."""
    if metric is not None and metric not in CANARY_METRICS:
        raise ConfigError(f"canary metric must be one of {list(CANARY_METRICS)}, not {metric!r}")
    return metric


def canary_split(strategy: str, metric: str | None, *, force_split: bool = False, name: str = "") -> str:
    """The split a canary uses (``in-pod`` or ``kserve``) for ``strategy`` and the canary's ``metric``.

    ``auto`` is KServe's per-request split only for a declared per-decision metric; KServe's split with
    an episode/session metric would drop every episode that met both revisions, so it needs ``force_split``.
    """
    if strategy not in CANARY_STRATEGIES:
        raise ConfigError(f"canary_strategy must be one of {list(CANARY_STRATEGIES)}, not {strategy!r}")
    check_metric(metric)
    if strategy == "auto":
        return "kserve" if metric == "decision" else "in-pod"
    if strategy == "kserve" and metric in STICKY_METRICS and not force_split:
        raise ConfigError(f"deployment {name!r}: canary_strategy='kserve' splits each request between two "
                          f"revisions at random, so with metric={metric!r} almost every {metric} would mix "
                          "policies and be dropped from the canary analysis; use canary_strategy='in-pod' (or "
                          "'auto'), sticky per routing key, or pass force_split=true to split anyway")
    return strategy


def as_bool(value: Any) -> bool:
    """A config flag given as a bool or as a CLI string (``true``/``false``, ``1``/``0``, ``yes``/``no``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(f"expected true or false, not {value!r}")


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
                 store_uri: str | None = None, logger_url: str | None = None, canary_strategy: str = "auto",
                 client: Any = None) -> None:
        from kubernetes import client as k8s

        if canary_strategy not in CANARY_STRATEGIES:
            raise ConfigError(f"canary_strategy must be one of {list(CANARY_STRATEGIES)}, not {canary_strategy!r}")
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
                 fraction: float = 0.0, *, kind: str = DEFAULT_KIND, metric: str | None = None,
                 force_split: bool = False) -> dict[str, Any]:
        """The InferenceService for a champion (and in-pod shadow/canary challenger) of policy ``kind``."""
        split = canary_split(self.canary_strategy, metric, force_split=force_split, name=name) \
            if mode == "canary" else None
        in_pod = challenger_uri if mode == "shadow" or split == "in-pod" else None
        if kind not in RUNTIMES:
            raise ConfigError(f"no KServe runtime for policy kind {kind!r} (known: {sorted(RUNTIMES)})")
        routing, share = (mode, fraction) if in_pod else ("off", 0.0)
        if kind == AGENT_KIND:
            body = agent_inference_service(name, champion_uri, namespace=self.namespace,
                                           tracking_uri=self.tracking_uri, store_uri=self.store_uri,
                                           challenger_uri=in_pod, routing=routing, canary_fraction=share)
        else:
            body = inference_service(name, champion_uri, namespace=self.namespace, tracking_uri=self.tracking_uri,
                                     store_uri=self.store_uri, challenger_uri=in_pod, routing=routing,
                                     canary_fraction=share, logger_url=self.logger_url)
        annotations = body["metadata"]["annotations"]
        if metric is not None:
            annotations[METRIC_ANNOTATION] = metric
        if in_pod and mode == "canary":
            annotations[STRATEGY_ANNOTATION] = "in-pod"
        return body

    def create(self, name: str, champion_uri: str, challenger_uri: str | None = None, mode: str = "off",
               fraction: float = 0.0, *, kind: str = DEFAULT_KIND, metric: str | None = None) -> dict[str, Any]:
        """Create the InferenceService (a canary on creation is always in-pod: there is no old revision).

        ``metric`` (decision, episode, session) is recorded on the object and picks later canaries' split.
        """
        saved = self.canary_strategy
        self.canary_strategy = "in-pod" if mode == "canary" else saved
        try:
            body = self.manifest(name, champion_uri, challenger_uri, mode, fraction, kind=kind,
                                 metric=check_metric(metric))
        finally:
            self.canary_strategy = saved
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
                  fraction: float = 0.0, *, kind: str = DEFAULT_KIND, metric: str | None = None,
                  force_split: bool = False) -> dict[str, Any]:
        """Patch the InferenceService to serve this champion/challenger/routing of policy ``kind``.

        A canary's split follows :func:`canary_split` for ``metric`` (else the one recorded on the object).
        """
        current = self.get(name)
        if kind_of(current) != kind:  # a merge patch would keep the other kind's logger, args and resources
            raise DeploymentError(f"InferenceService {name!r} serves policy kind {kind_of(current)!r}, not "
                                  f"{kind!r}: delete the deployment and create it again")
        recorded = (current.get("metadata") or {}).get("annotations") or {}
        metric = check_metric(metric) or recorded.get(METRIC_ANNOTATION)
        split = canary_split(self.canary_strategy, metric, force_split=force_split, name=name) \
            if mode == "canary" and challenger_uri else None
        if split == "kserve":
            body = self.manifest(name, challenger_uri or champion_uri, kind=kind, metric=metric)
            predictor = body["spec"]["predictor"]  # the latest revision serves the challenger
            predictor["canaryTrafficPercent"] = int(round(fraction * 100))
            body["metadata"]["annotations"] |= {"rlops.io/champion-uri": champion_uri, STRATEGY_ANNOTATION: "kserve"}
        else:
            body = self.manifest(name, champion_uri, challenger_uri, mode, fraction, kind=kind, metric=metric,
                                 force_split=force_split)
            body["spec"]["predictor"]["canaryTrafficPercent"] = None  # JSON merge patch: remove the field
            for stale in ("rlops.io/champion-uri", STRATEGY_ANNOTATION):  # left by an earlier canary
                if stale in recorded and stale not in body["metadata"]["annotations"]:
                    body["metadata"]["annotations"][stale] = None
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
