"""Tuning on a cluster: the search space of ``rlops tune`` as a Katib ``Experiment`` (``kubeflow.org/v1beta1``).

Each Katib trial is a ``batch/v1`` Job running ``python -m rlops_plugin.cli train --trainer T --init URI
--set name=${trialParameters.name} ... --eval-episodes N --experiment E`` in the rlops image, with
``MLFLOW_TRACKING_URI`` set, so each trial is also an MLflow run. Katib's StdOut metrics collector reads the
last line ``rlops train`` prints (``metrics: eval/return_mean=187.5 train/loss=0.31 ...``) with a
``metricsFormat`` that accepts ``/`` in metric names (Katib's default format does not). Katib has no
equivalent of the local median pruner on our metrics (the collector sees only the final line), so the
space's ``intermediate`` metric is collected as an additional metric, not used for early stopping.

Why a batch Job and not a TrainJob: Katib 0.19 runs any CRD as a trial, but a TrainJob needs Katib's
controller configured with the trainer's GVK and success conditions; a Job works with a default install.
The object is built as plain JSON, validated strictly against ``kubeflow_katib_api``'s models (unknown
fields fail: :func:`validate_experiment`) with the trial Job checked by the Kubernetes schemas, and sent with
``kubernetes.client.CustomObjectsApi``, configured like the KServe target.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from rlops_plugin.deploy.kserve import api_client
from rlops_plugin.deploy.local import DeploymentError
from rlops_plugin.deploy.manifests import DEFAULT_IMAGE
from rlops_plugin.deploy.trainjob import resources_per_node, training_args
from rlops_plugin.deploy.validation import ManifestError, validate_core, validate_trainer_model
from rlops_plugin.errors import ConfigError
from rlops_plugin.training.search_space import SearchSpace
from rlops_plugin.training.train import is_artifact_uri

KATIB_GROUP, KATIB_VERSION, EXPERIMENT_PLURAL, EXPERIMENT_KIND = "kubeflow.org", "v1beta1", "experiments", "Experiment"
ALGORITHMS = {"tpe": "tpe", "random": "random"}
"""``rlops tune --sampler`` names and Katib's algorithm names (both served by Katib's hyperopt suggestion)."""
PARAMETER_TYPES = {"float": "double", "int": "int", "categorical": "categorical"}
METRICS_FORMAT = r"([\w|\-/.]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
"""Katib's default ``([\\w|-]+)\\s*=\\s*...`` with ``/`` and ``.`` allowed in the name: ``eval/return_mean=187.5``."""
PRIMARY_CONTAINER = "training"
JOB_SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
TERMINAL = ("Succeeded", "Failed")
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 40
"""Katib names trials ``<experiment>-<8 chars>`` and their Jobs' pods after them: stay well under 63."""
_TRIAL_PARAM = re.compile(r"\$\{trialParameters\.([^}]+)\}")


class KatibError(DeploymentError):
    """A Katib Experiment could not be created, failed, or did not finish in time."""


def check_name(name: str) -> str:
    """``name`` if it is a valid Experiment name, else a ``ConfigError`` saying why."""
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise ConfigError(f"Experiment name {name!r}: lowercase letters, digits and '-', starting with a letter, "
                          f"at most {MAX_NAME} characters")
    return name


def _feasible_space(param: Any) -> dict[str, Any]:
    """Katib's ``feasibleSpace`` (every value a string, as the CRD wants) of one search-space parameter."""
    if param.type == "categorical":
        return {"list": [_as_arg(c) for c in param.choices]}
    out: dict[str, Any] = {"min": _as_arg(param.low), "max": _as_arg(param.high)}
    if param.step is not None:
        out["step"] = _as_arg(param.step)
    out["distribution"] = "logUniform" if param.log else "uniform"
    return out


def _as_arg(value: Any) -> str:
    """A value as ``rlops train --set`` reads it back (the trainer's config conversion): strings as they are,
    booleans as ``true``/``false``, numbers in Python's shortest round-trip form, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def experiment(space: SearchSpace | dict[str, Any] | str, *, name: str, init_uri: str, tracking_uri: str,
               namespace: str = "default", image: str = DEFAULT_IMAGE, dataset_uri: str | None = None,
               sampler: str = "tpe", seed: int | None = 0, eval_episodes: int = 20,
               mlflow_experiment: str = "rlops-tuning", resources: dict[str, str | int | float] | None = None,
               env: dict[str, str] | None = None, service_account: str | None = None) -> dict[str, Any]:
    """The Katib Experiment for ``space`` (validated strictly before it is returned).

    ``dataset_uri`` must be reachable from the pods (an MLflow artifact URI, ``s3://``...): a local path is
    not. ``resources`` are the trial pod's requests = limits (default: 2 CPUs, 4Gi). ``seed`` seeds the
    suggestion algorithm (``random_state``).
    """
    space = SearchSpace.coerce(space).validate(eval_episodes)
    check_name(name)
    if sampler not in ALGORITHMS:
        raise ConfigError(f"sampler must be one of {sorted(ALGORITHMS)}, got {sampler!r}")
    if not tracking_uri:
        raise ConfigError("a Katib Experiment needs tracking_uri (MLflow reachable from the cluster)")
    if dataset_uri and not is_artifact_uri(dataset_uri):
        raise ConfigError(f"dataset_uri {dataset_uri!r} is a local path; trial pods need an artifact URI "
                          "(runs:/..., mlflow-artifacts:/..., s3://...)")
    config: dict[str, Any] = dict(space.fixed)
    config.update({p.name: f"${{trialParameters.{p.name}}}" for p in space.parameters})
    args = training_args(space.trainer, init_uri, dataset_uri, config, eval_episodes=eval_episodes,
                         experiment=mlflow_experiment)
    container: dict[str, Any] = {
        "name": PRIMARY_CONTAINER, "image": image, "command": ["python", *args],
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": tracking_uri}, {"name": "OMP_NUM_THREADS", "value": "1"},
                *({"name": k, "value": v} for k, v in (env or {}).items())],
        "resources": resources_per_node(resources)}
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"app.kubernetes.io/part-of": "rlops"}},
                                                     "spec": pod_spec}}}
    additional = [m for m in ("eval/return_mean", "eval/init_return_mean", "eval/return_delta")
                  if m != space.objective.name]
    if space.intermediate is not None and space.intermediate.name not in (space.objective.name, *additional):
        additional.append(space.intermediate.name)
    algorithm: dict[str, Any] = {"algorithmName": ALGORITHMS[sampler]}
    if seed is not None:
        algorithm["algorithmSettings"] = [{"name": "random_state", "value": str(seed)}]
    obj = {
        "apiVersion": f"{KATIB_GROUP}/{KATIB_VERSION}", "kind": EXPERIMENT_KIND,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "rlops", "rlops.io/trainer": space.trainer},
                     "annotations": {"rlops.io/search-space": json.dumps(space.to_dict(), sort_keys=True),
                                     "rlops.io/init-uri": init_uri}},
        "spec": {
            "objective": {"type": space.objective.direction, "objectiveMetricName": space.objective.name,
                          "additionalMetricNames": additional},
            "algorithm": algorithm,
            "parameters": [{"name": p.name, "parameterType": PARAMETER_TYPES[p.type],
                            "feasibleSpace": _feasible_space(p)} for p in space.parameters],
            "maxTrialCount": space.trials, "parallelTrialCount": min(space.parallel, space.trials),
            "maxFailedTrialCount": space.max_failed,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"},
                                     "source": {"filter": {"metricsFormat": [METRICS_FORMAT]}}},
            "trialTemplate": {
                "primaryContainerName": PRIMARY_CONTAINER, "successCondition": JOB_SUCCESS,
                "failureCondition": JOB_FAILURE,
                "trialParameters": [{"name": p.name, "reference": p.name,
                                     "description": f"{space.trainer} config field {p.name}"}
                                    for p in space.parameters],
                "trialSpec": job}}}
    validate_experiment(obj)
    return obj


def validate_experiment(manifest: dict[str, Any]) -> None:
    """Validate an Experiment strictly: ``kubeflow_katib_api``'s models (unknown fields fail), the trial Job by the
    Kubernetes schemas, and the trial parameters against the template (each declared one used, none undeclared)."""
    from kubeflow_katib_api.models import V1beta1Experiment

    if manifest.get("apiVersion") != f"{KATIB_GROUP}/{KATIB_VERSION}" or manifest.get("kind") != EXPERIMENT_KIND:
        raise ManifestError(f"$: expected apiVersion {KATIB_GROUP}/{KATIB_VERSION} and kind {EXPERIMENT_KIND}, got "
                            f"{manifest.get('apiVersion')!r} {manifest.get('kind')!r}")
    validate_trainer_model(manifest, V1beta1Experiment)
    if not (manifest.get("metadata") or {}).get("name"):
        raise ManifestError("$.metadata.name: an Experiment needs a name")
    spec = manifest.get("spec") or {}
    for key in ("objective", "algorithm", "parameters", "trialTemplate"):
        if not spec.get(key):
            raise ManifestError(f"$.spec.{key}: an Experiment needs it")
    if spec["objective"].get("type") not in ("maximize", "minimize") or not spec["objective"].get(
            "objectiveMetricName"):
        raise ManifestError("$.spec.objective: type maximize|minimize and objectiveMetricName are required")
    template = spec["trialTemplate"]
    trial_spec = template.get("trialSpec")
    if not isinstance(trial_spec, dict):
        raise ManifestError("$.spec.trialTemplate.trialSpec: a trial resource (here a batch/v1 Job) is required")
    validate_core({**trial_spec, "metadata": {"name": "trial"}})
    declared = {p.get("name") for p in template.get("trialParameters") or []}
    used = set(_TRIAL_PARAM.findall(json.dumps(trial_spec)))
    if used - declared:
        raise ManifestError("$.spec.trialTemplate: ${trialParameters.X} used but not declared: "
                            f"{sorted(used - declared)}")
    if declared - used:
        raise ManifestError("$.spec.trialTemplate.trialParameters: declared but never used: "
                            f"{sorted(declared - used)}")
    searched = {p.get("name") for p in spec["parameters"]}
    references = {p.get("reference") for p in template.get("trialParameters") or []}
    if references - searched:
        raise ManifestError(f"$.spec.trialTemplate.trialParameters: references {sorted(references - searched)} "
                            "are not parameters of the Experiment")
    containers = trial_spec.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    if template.get("primaryContainerName") not in {c.get("name") for c in containers}:
        raise ManifestError("$.spec.trialTemplate.primaryContainerName: names no container of the trial Job")


def best_trial(obj: dict[str, Any]) -> dict[str, Any] | None:
    """``status.currentOptimalTrial`` as ``{"trial", "params", "metrics"}`` (None before a trial succeeded)."""
    optimal = (obj.get("status") or {}).get("currentOptimalTrial") or {}
    if not optimal.get("bestTrialName"):
        return None
    params = {a["name"]: a.get("value") for a in optimal.get("parameterAssignments") or []}
    metrics: dict[str, float] = {}
    for metric in (optimal.get("observation") or {}).get("metrics") or []:
        value = metric.get("latest") if metric.get("latest") not in (None, "unavailable") else metric.get("max")
        try:
            metrics[metric["name"]] = float(value)
        except (TypeError, ValueError):
            continue
    return {"trial": optimal["bestTrialName"], "params": params, "metrics": metrics}


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The Experiment's condition ``kind`` if it is ``True``."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and str(cond.get("status")) == "True":
            return cond
    return None


class KatibExperiments:
    """Create, read, wait for and delete Katib Experiments through the Kubernetes API."""

    def __init__(self, namespace: str = "default", *, kubeconfig: str | None = None, client: Any = None) -> None:
        from kubernetes import client as k8s

        self.namespace = namespace
        self.api = k8s.CustomObjectsApi(client or api_client(kubeconfig))

    def _call(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(KATIB_GROUP, KATIB_VERSION, self.namespace, EXPERIMENT_PLURAL, *args, **kwargs)
        except ApiException as exc:
            hint = " (is Katib installed? its CRD serves experiments.kubeflow.org)" if exc.status == 404 else ""
            raise KatibError(f"Experiment {self.namespace}/{name}: Kubernetes API {exc.status} {exc.reason}: "
                             f"{exc.body}{hint}") from exc

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Experiment ``body`` (validated first: a malformed object never reaches the cluster)."""
        validate_experiment(body)
        if (body["metadata"].get("namespace") or self.namespace) != self.namespace:
            raise ConfigError(f"Experiment namespace {body['metadata']['namespace']!r} differs from the client's "
                              f"{self.namespace!r}")
        return self._call(body["metadata"]["name"], self.api.create_namespaced_custom_object, body)

    def get(self, name: str) -> dict[str, Any]:
        """The Experiment with its status."""
        return self._call(name, self.api.get_namespaced_custom_object, name)

    def delete(self, name: str) -> None:
        """Delete the Experiment (its trials and Jobs go with it)."""
        self._call(name, self.api.delete_namespaced_custom_object, name)

    def wait(self, name: str, timeout_s: float, *, poll_s: float = 30.0,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
        """Poll until the Experiment is ``Succeeded`` and return :func:`best_trial` of it; ``Failed`` or past
        ``timeout_s`` raise ``KatibError`` (with the best trial so far in the message; the Experiment is kept)."""
        if timeout_s < 0 or poll_s <= 0:
            raise ConfigError(f"timeout_s must be >= 0 and poll_s > 0, got {timeout_s}, {poll_s}")
        deadline = clock() + timeout_s
        while True:
            obj = self.get(name)
            if condition(obj, "Succeeded"):
                best = best_trial(obj)
                if best is None:
                    raise KatibError(f"Experiment {self.namespace}/{name} succeeded without an optimal trial")
                return best
            failed = condition(obj, "Failed")
            if failed:
                raise KatibError(f"Experiment {self.namespace}/{name} failed: {failed.get('reason')}: "
                                 f"{failed.get('message')}; best so far {best_trial(obj)}")
            if clock() >= deadline:
                raise KatibError(f"Experiment {self.namespace}/{name} did not finish within {timeout_s:g} s; best so "
                                 f"far {best_trial(obj)}")
            sleep(min(poll_s, max(deadline - clock(), 0.0)))
