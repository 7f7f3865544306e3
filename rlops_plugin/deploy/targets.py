"""Deployment targets through MLflow's own plugin system (``mlflow.deployments.get_deploy_client``).

A target is one module with a ``BaseDeploymentClient`` subclass, registered under the
``mlflow.deployments`` entry-point group (``rlops-local``, ``rlops-kserve``, or a third party's).
The promotion controller and the lifecycle talk to every target through the same four calls:
``create_deployment``, ``update_deployment(name, model_uri, config={"mode", "fraction", "champion"})``,
``get_deployment`` and ``delete_deployment``. Every change is a ``deployment`` audit event, except
the routing changes made through :func:`route` by a caller that records its own event for them (the
promotion controller's ``canary_step``/``promotion``/``rollback``, a manual rollback): one change, one event.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from rlops_plugin.audit.events import AuditEvent, record_event
from rlops_plugin.deploy.local import DeploymentError
from rlops_plugin.errors import ConfigError, RLOpsError
from rlops_plugin.flavor.refs import ModelRef

logger = logging.getLogger(__name__)

#: routing modes every rlops target understands in ``config["mode"]``
MODES = ("off", "shadow", "canary")

_caller_audits: contextvars.ContextVar[bool] = contextvars.ContextVar("rlops_route_caller_audits", default=False)


def deploy_client(target: str) -> Any:
    """The MLflow deployment client for ``target`` (``rlops-local[:/state]``, ``rlops-kserve[:/ns]``, ...)."""
    from mlflow.deployments import get_deploy_client
    from mlflow.exceptions import MlflowException

    try:
        client = get_deploy_client(target)
    except MlflowException as exc:
        raise ConfigError(f"deployment target {target!r}: {exc.message}") from exc
    if client is None:
        raise ConfigError("no deployment target given (pass one, or set MLFLOW_DEPLOYMENTS_TARGET)")
    return client


def route(client: Any, deployment: str, champion_uri: str, challenger_uri: str | None, mode: str,
          fraction: float) -> Any:
    """Serve ``champion_uri`` alone (``mode`` off) or with ``challenger_uri`` in shadow/canary at ``fraction``."""
    if mode not in MODES:
        raise ConfigError(f"mode: {mode!r} is not one of {MODES}")
    from mlflow.exceptions import MlflowException

    token = _caller_audits.set(True)  # the caller records this change in its own audit event
    try:
        if mode == "off" or challenger_uri is None:
            return client.update_deployment(deployment, model_uri=champion_uri, config={"mode": "off"})
        return client.update_deployment(deployment, model_uri=challenger_uri,
                                        config={"mode": mode, "fraction": float(fraction), "champion": champion_uri})
    except MlflowException as exc:  # rlops' targets wrap their typed errors for `mlflow deployments`: unwrap
        if isinstance(exc.__cause__, RLOpsError):
            raise exc.__cause__ from None
        raise DeploymentError(f"deployment {deployment!r}: {exc.message}") from exc
    finally:
        _caller_audits.reset(token)


def pinned_version(model_uri: str | None) -> str | None:
    """The registry version ``model_uri`` points to now (None when unregistered, unresolvable, or inside
    :func:`route`); a target calls it before a change so the event names the version it deployed."""
    if _caller_audits.get() or not model_uri:
        return None
    ref = ModelRef.parse(model_uri)
    if not ref.registered:
        return None
    if ref.version is not None:
        return ref.version
    from rlops_plugin.flavor.refs import resolve_model_uri

    try:
        return resolve_model_uri(ref).version
    except Exception:  # noqa: BLE001 - the deployment decides whether the URI is usable; the event says unknown
        return None


def record_deployment(target: str, deployment: str, action: str, model_uri: str | None,
                      config: dict[str, Any] | None = None, version: str | None = None) -> AuditEvent | None:
    """The ``deployment`` audit event of a change made through a target (create, update, delete).

    Skipped inside :func:`route` (its caller audits the change). The event belongs to the registered
    model the URI names, at ``version`` (from :func:`pinned_version` before the change; resolved now
    when not given); a deployment of an unregistered model has no trail to join and is only logged.
    """
    if _caller_audits.get():
        return None
    ref = ModelRef.parse(model_uri) if model_uri else None
    if ref is None or not ref.registered:
        logger.info("deployment %s %s of %s: not a registered model, no audit event", deployment, action, model_uri)
        return None
    version = version or pinned_version(model_uri)
    cfg = {k: v for k, v in (config or {}).items() if k in ("mode", "fraction", "champion", "store")}
    mode = cfg.get("mode", "off")
    reason = f"{target} deployment {deployment!r}: {action} with {model_uri}" + (
        f" as {mode} challenger at {float(cfg.get('fraction', 0.0)):.0%}" if mode in ("shadow", "canary") else "")
    event = AuditEvent("deployment", str(ref.name), version, decision=action, reason=reason,
                       details={"target": target, "deployment": deployment, "model_uri": model_uri, "config": cfg})
    try:
        return record_event(event)
    except Exception as exc:  # noqa: BLE001 - the deployment already changed; say so loudly, do not undo it
        logger.error("could not record the deployment audit event of %s (%s): %s", deployment, action, exc)
        return None
