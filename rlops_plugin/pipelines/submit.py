"""Submit one pipeline run to a Kubeflow Pipelines host: ``rlops monitor --on-trigger submit-pipeline:PARAMS.json``.

``run-pipeline`` runs a cycle here (``kfp.local``); ``submit-pipeline`` hands it to a cluster: it
compiles the pipeline (one of :data:`~rlops_plugin.pipelines.run.PIPELINES`, with the real kfp
compiler) or takes a compiled package, and starts one run of it with the real ``kfp.Client``
(``GET/POST /apis/v2beta1/experiments``, then ``POST /apis/v2beta1/runs`` with the pipeline spec
inline). The action returns at once with the run's id and URL, which the trigger's audit event
records (it is a dispatch action: :func:`rlops_plugin.monitoring.triggers.dispatch_action`).

``PARAMS.json``: the pipeline's parameters (``store`` at least; ``model_name`` defaults to the
triggering model) plus these keys, each with an environment fallback:

======================  =========================================================================
``host``                KFP API URL (``KFP_HOST``, then kfp's ``KF_PIPELINES_ENDPOINT``); required
``namespace``           profile namespace of a multi-user KFP (``KFP_NAMESPACE``); none: kfp's context
``experiment``          experiment display name, made when missing (``KFP_EXPERIMENT``; ``rlops``)
``pipeline``            a name in ``PIPELINES`` (default ``continuous_improvement``) or the path of a
                        compiled package (``.yaml``/``.yml``/``.json``)
``run_name``            run display name (default ``rlops-<pipeline>-<model>-<event id[:8]>``)
``pipeline_root``       where the run's artifacts go (default: the host's)
``service_account``     Kubernetes service account of the run's pods
``token_env``           environment variable holding a bearer token (default ``KFP_TOKEN``)
``token_file``          file holding a bearer token, re-read on every request (kfp's
                        ``KF_PIPELINES_SA_TOKEN_PATH``); used when the ``token_env`` variable is unset
``ui_host``             base URL of the KFP UI for the run's link (``KF_PIPELINES_UI_ENDPOINT``; ``host``)
``timeout_s``           connect and read timeout of each request (default 30)
======================  =========================================================================

Tokens are never written to the result or the audit trail. A refused or unreachable host raises
:class:`SubmitError` naming the host and the HTTP status.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlops_plugin.errors import ConfigError
from rlops_plugin.pipelines.run import PIPELINES, PipelineError, pipeline_function

logger = logging.getLogger("rlops.pipelines.submit")

HOST_ENV, NAMESPACE_ENV, EXPERIMENT_ENV, TOKEN_ENV = "KFP_HOST", "KFP_NAMESPACE", "KFP_EXPERIMENT", "KFP_TOKEN"
"""Our environment variables: the KFP API URL, namespace, experiment, and the default bearer-token variable."""
KFP_ENDPOINT_ENV, KFP_UI_ENV, KFP_TOKEN_PATH_ENV = (
    "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_SA_TOKEN_PATH")
"""kfp's own conventions (``kfp.client``), honoured as fallbacks."""
DEFAULT_EXPERIMENT = "rlops"
DEFAULT_TIMEOUT_S = 30.0
"""Per request: long enough for a loaded API server, short enough that a trigger does not hang a monitor."""
PACKAGE_SUFFIXES = (".yaml", ".yml", ".json")
SETTINGS = ("host", "namespace", "experiment", "pipeline", "run_name", "pipeline_root", "service_account",
            "token_env", "token_file", "ui_host", "timeout_s")
"""``PARAMS.json`` keys that configure the submission; every other key is a pipeline parameter."""


class SubmitError(PipelineError):
    """Kubeflow Pipelines refused the submission or could not be reached; names the host and HTTP status."""

    def __init__(self, message: str, *, host: str, status: int | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.status = status
        """HTTP status of the refusal; ``None`` when no answer came (unreachable, timed out)."""


class SubmitConfigError(PipelineError, ConfigError):
    """``PARAMS.json`` or the environment does not say where and what to submit; the message names the key."""


@dataclass(frozen=True)
class KfpTarget:
    """Where and how to submit: host, namespace, experiment, auth and request timeout."""

    host: str
    """KFP API URL, ``http(s)://...`` (what ``kfp.Client(host=...)`` takes)."""
    namespace: str | None = None
    """Profile namespace (multi-user KFP); ``None``: kfp's context, asking ``healthz`` when it has none."""
    experiment: str = DEFAULT_EXPERIMENT
    """Experiment display name; created when the host has none of that name."""
    token: str | None = None
    """Bearer token sent as ``Authorization: Bearer ...`` (never recorded)."""
    token_file: str | None = None
    """File holding a bearer token, re-read on every request (a projected service-account token rotates)."""
    ui_host: str | None = None
    """Base URL of the KFP UI, for the run's link (default: ``host``)."""
    service_account: str | None = None
    """Kubernetes service account of the run's pods."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    """Connect and read timeout of each request, in seconds."""

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^/\s]+", self.host or ""):
            raise SubmitConfigError(f"submit-pipeline: host {self.host!r} is not an http(s):// URL")
        if not (isinstance(self.timeout_s, (int, float)) and math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise SubmitConfigError(f"submit-pipeline: timeout_s must be a positive number, got {self.timeout_s!r}")
        if not self.experiment:
            raise SubmitConfigError("submit-pipeline: experiment must be a non-empty name")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> KfpTarget:
        """From ``PARAMS.json``'s submission keys, falling back to the environment (see the module docstring)."""
        env = os.environ if environ is None else environ
        host = settings.get("host") or env.get(HOST_ENV) or env.get(KFP_ENDPOINT_ENV)
        if not host:
            raise SubmitConfigError(f"submit-pipeline needs a host: 'host' in PARAMS.json or {HOST_ENV}")
        token_env = settings.get("token_env") or TOKEN_ENV
        token = env.get(token_env) or None
        if settings.get("token_env") and not token:
            raise SubmitConfigError(f"submit-pipeline: token_env names {token_env}, which is not set")
        token_file = None if token else (settings.get("token_file") or env.get(KFP_TOKEN_PATH_ENV) or None)
        if token_file is not None and not Path(token_file).is_file():
            raise SubmitConfigError(f"submit-pipeline: token_file {token_file} does not exist")
        return cls(host=str(host).rstrip("/"), namespace=settings.get("namespace") or env.get(NAMESPACE_ENV) or None,
                   experiment=settings.get("experiment") or env.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT,
                   token=token, token_file=token_file, ui_host=settings.get("ui_host") or env.get(KFP_UI_ENV),
                   service_account=settings.get("service_account"),
                   timeout_s=settings.get("timeout_s", DEFAULT_TIMEOUT_S))

    def run_url(self, run_id: str) -> str:
        """The run's page in the KFP UI (kfp's own link: ``<ui host>/#/runs/details/<run id>``)."""
        return f"{(self.ui_host or self.host).rstrip('/')}/#/runs/details/{run_id}"


@dataclass(frozen=True)
class SubmittedRun:
    """What a submission started: the KFP run and where to see it (what the trigger's audit event records)."""

    run_id: str
    run_url: str
    run_name: str
    host: str
    experiment: str
    experiment_id: str
    pipeline: str
    """The pipeline's name in ``PIPELINES`` or the package path submitted."""
    namespace: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored on the trigger event under the action spec)."""
        return asdict(self)


def submit_run(pipeline: str, arguments: Mapping[str, Any], target: KfpTarget, run_name: str,
               pipeline_root: str | None = None) -> SubmittedRun:
    """Start one run of ``pipeline`` (a name in ``PIPELINES`` or a compiled package path) on ``target``.

    The arguments are checked against the pipeline's inputs before anything is sent; the experiment is
    looked up by name and created when missing, then the run is created with the pipeline spec inline.
    """
    with _package(pipeline) as package:
        _check_arguments(package, arguments, pipeline)
        client = _connect(target)
        with _kfp_errors(target, "looking up the experiment"), _quiet():
            experiment = client.create_experiment(target.experiment, namespace=target.namespace)
        with _kfp_errors(target, "creating the run"), _quiet():
            run = client.run_pipeline(experiment_id=experiment.experiment_id, job_name=run_name,
                                      pipeline_package_path=str(package), params=dict(arguments),
                                      service_account=target.service_account,
                                      pipeline_root=pipeline_root or None)
    return SubmittedRun(run_id=run.run_id, run_url=target.run_url(run.run_id), run_name=run_name, host=target.host,
                        experiment=target.experiment, experiment_id=experiment.experiment_id, pipeline=pipeline,
                        namespace=target.namespace)


def trigger_action(event: Any, arg: str | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``rlops monitor --on-trigger submit-pipeline:PARAMS.json``: one KFP run for the triggering model.

    ``PARAMS.json`` holds the pipeline parameters and the submission keys (module docstring); returns
    :meth:`SubmittedRun.to_dict` (run id, run URL, experiment, ...).
    """
    import json

    if not arg:
        raise SubmitConfigError("submit-pipeline needs a parameters file: --on-trigger submit-pipeline:PARAMS.json")
    try:
        params = json.loads(Path(arg).read_text())
    except (OSError, ValueError) as exc:
        raise SubmitConfigError(f"submit-pipeline: cannot read {arg}: {exc}") from exc
    if not isinstance(params, dict):
        raise SubmitConfigError(f"submit-pipeline: {arg} must hold a JSON object, got {type(params).__name__}")
    settings = {k: params.pop(k) for k in SETTINGS if k in params}
    params.setdefault("model_name", getattr(event, "model", None))
    if not params.get("model_name"):
        raise SubmitConfigError("submit-pipeline: no model_name in PARAMS.json and the event names no model")
    target = KfpTarget.from_settings(settings, environ)
    pipeline = str(settings.get("pipeline") or "continuous_improvement")
    run_name = settings.get("run_name") or default_run_name(pipeline, params["model_name"],
                                                            getattr(event, "id", "") or "")
    return submit_run(pipeline, params, target, run_name, settings.get("pipeline_root")).to_dict()


def default_run_name(pipeline: str, model_name: str, event_id: str) -> str:
    """``rlops-<pipeline>-<model>-<event id[:8]>``: one name per trigger, telling which pipeline and model."""
    label = Path(pipeline).stem if pipeline not in PIPELINES else pipeline
    return "-".join(p for p in ("rlops", label.replace("_", "-"), model_name, event_id[:8]) if p)


# --- pieces ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _package(pipeline: str) -> Iterator[Path]:
    """A compiled package of ``pipeline``: compiled now for a name in ``PIPELINES``, else the file named."""
    if pipeline in PIPELINES:
        from kfp import compiler

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{pipeline}.yaml"
            compiler.Compiler().compile(pipeline_function(pipeline), str(path))
            yield path
        return
    path = Path(pipeline)
    if path.suffix not in PACKAGE_SUFFIXES or not path.is_file():
        raise SubmitConfigError(f"submit-pipeline: pipeline {pipeline!r} is neither one of {list(PIPELINES)} nor a "
                                f"compiled package file ({', '.join(PACKAGE_SUFFIXES)})")
    yield path


def _check_arguments(package: Path, arguments: Mapping[str, Any], pipeline: str) -> None:
    """Refuse parameters the pipeline does not take and required ones missing (KFP would answer 400 later)."""
    import yaml

    try:
        spec = next(iter(yaml.safe_load_all(package.read_text())))
        declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    except (yaml.YAMLError, StopIteration, KeyError, TypeError, AttributeError) as exc:
        raise SubmitConfigError(f"submit-pipeline: {package} is not a compiled pipeline ({exc})") from exc
    given = set(arguments)
    unknown = sorted(given - set(declared))
    if unknown:
        raise SubmitConfigError(f"submit-pipeline: {pipeline} takes no parameter {', '.join(map(repr, unknown))}; "
                                f"it takes: {', '.join(sorted(declared))}")
    missing = sorted(k for k, v in declared.items()
                     if not v.get("isOptional") and "defaultValue" not in v and k not in given)
    if missing:
        raise SubmitConfigError(f"submit-pipeline: {pipeline} needs {', '.join(missing)} in PARAMS.json")


def _connect(target: KfpTarget) -> Any:
    """The real ``kfp.Client`` for ``target``, with one ``healthz`` attempt and a timeout on every request."""
    import kfp
    import urllib3
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    timeout = (target.timeout_s, target.timeout_s)

    class _Client(kfp.Client):
        """kfp.Client whose constructor's ``healthz`` (asked when no namespace is known) is tried once, with the
        timeout, instead of 5 times 5 s apart: a refused host is reported at once."""

        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            """One ``GET /apis/v2beta1/healthz``."""
            return self._healthz_api.healthz_service_get_healthz(_request_timeout=timeout)

    credentials = ServiceAccountTokenVolumeCredentials(target.token_file) if target.token_file else None
    with _kfp_errors(target, "connecting"), warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore", FutureWarning)  # "This client only works with KFP v2.0.0-beta.2 and later"
        client = _Client(host=target.host, namespace=target.namespace or "kubeflow", existing_token=target.token,
                         credentials=credentials, ui_host=target.ui_host)
    # kfp.Client takes no timeout: every service API shares one urllib3 PoolManager, whose pools take it
    client._run_api.api_client.rest_client.pool_manager.connection_pool_kw["timeout"] = urllib3.Timeout(
        connect=target.timeout_s, read=target.timeout_s)
    return client


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """kfp.Client prints its links to stdout; send them to our logger so ``rlops monitor --json`` stays JSON."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            logger.info("kfp: %s", line)


@contextlib.contextmanager
def _kfp_errors(target: KfpTarget, doing: str) -> Iterator[None]:
    """Turn kfp/urllib3 failures into :class:`SubmitError` naming the host, the step and the HTTP status."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        status = int(exc.status) if exc.status else None
        if status is None:  # TLS failures come as status 0
            raise SubmitError(f"Kubeflow Pipelines at {target.host} is unreachable ({doing}): {exc.reason}",
                              host=target.host) from exc
        raise SubmitError(f"Kubeflow Pipelines at {target.host} answered {status} {exc.reason or ''} ({doing})"
                          f"{_body_message(exc.body)}".replace("  ", " "), host=target.host, status=status) from exc
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        # NewConnectionError (refused, no such host) subclasses ConnectTimeoutError: test it first
        if isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
                reason, urllib3.exceptions.NewConnectionError):
            raise SubmitError(f"Kubeflow Pipelines at {target.host} did not answer within {target.timeout_s:g} s "
                              f"({doing})", host=target.host) from exc
        raise SubmitError(f"Kubeflow Pipelines at {target.host} is unreachable ({doing}): "
                          f"{type(reason).__name__}: {reason}", host=target.host) from exc
    except ValueError as exc:  # kfp: several experiments of that name, a package it cannot read
        raise SubmitError(f"Kubeflow Pipelines at {target.host}: {exc} ({doing})", host=target.host) from exc


def _body_message(body: Any) -> str:
    """``: <message>`` from a KFP error body (``{"error", "code", "message"}``), or nothing."""
    import json

    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        data = json.loads(text)
    except ValueError:
        return f": {text[:300]}"
    message = data.get("message") or data.get("error") if isinstance(data, dict) else None
    return f": {str(message)[:300]}" if message else ""


__all__ = ["DEFAULT_EXPERIMENT", "SETTINGS", "KfpTarget", "SubmitConfigError", "SubmitError", "SubmittedRun",
           "default_run_name", "submit_run", "trigger_action"]
