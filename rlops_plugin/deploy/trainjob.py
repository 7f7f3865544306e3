"""Distributed training as a Kubeflow Trainer v2 ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``).

The job runs ``torchrun -m rlops_plugin.cli train ...`` in the rlops image on ``numNodes`` nodes of
``numProcPerNode`` processes, under a ``ClusterTrainingRuntime`` (default ``torch-distributed``, installed
with Kubeflow Trainer). That runtime's torch policy sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT``, which torchrun reads. The pod reaches
MLflow through ``MLFLOW_TRACKING_URI``. The job's name goes into ``RLOPS_TRAINJOB_NAME``; rank 0 records it
as the ``rlops.trainjob`` tag of the run that logs (and registers) the model, which is how
:func:`produced_model` finds what the job made.

Why the raw API and not ``kubeflow.trainer.TrainerClient``: ``CustomTrainer`` ships a Python function as an
inline script, while our code is already in the image. ``CustomTrainerContainer`` takes an image but has no
``numProcPerNode``, and command and args only as options. ``train()`` first reads the runtime (one more RBAC
verb and API call), and the client invents the job's name. ``wait_for_job_status`` lists pods and raises a bare
``RuntimeError`` without the job's conditions. So the object is built from the SDK's own models
(``kubeflow_trainer_api``), validated strictly (:func:`~rlops_plugin.deploy.validation.validate_trainjob`), and
sent with ``kubernetes.client.CustomObjectsApi``, configured like the KServe target.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlops_plugin.deploy.kserve import api_client
from rlops_plugin.deploy.local import DeploymentError
from rlops_plugin.deploy.manifests import DEFAULT_IMAGE, write_documents
from rlops_plugin.errors import ConfigError

TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
TRAINJOB_KIND = "TrainJob"
RUNTIME_KIND = "ClusterTrainingRuntime"
DEFAULT_RUNTIME = "torch-distributed"
"""The ``ClusterTrainingRuntime`` Kubeflow Trainer installs for PyTorch (``torchrun``) jobs."""
JOB_ENV = "RLOPS_TRAINJOB_NAME"
"""Environment variable carrying the TrainJob's name into the training pods."""
JOB_TAG = "rlops.trainjob"
"""Run tag rank 0 sets to ``RLOPS_TRAINJOB_NAME`` on the run that logs the model."""
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
"""Pod label naming the JobSet, which carries the TrainJob's name (``kubeflow.trainer`` selects pods by it)."""
NODE_STEP_LABEL = "jobset.sigs.k8s.io/replicatedjob-name=node"
"""The training nodes' ReplicatedJob (``node``; the initializers are ``dataset-initializer``/``model-initializer``)."""
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_RESOURCES = {"cpu": "2", "memory": "4Gi"}
"""Per node: two torch CPU workers of a small policy (the in-process pipeline step measures one such process)."""
TERMINAL = ("Complete", "Failed")
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 40
"""Kubeflow Trainer names pods ``<job>-node-<i>-<j>-<suffix>`` and Services after the job: stay well under 63."""


class TrainJobError(DeploymentError):
    """A TrainJob failed, could not be created, or did not finish in time; carries its conditions and a logs hint."""

    def __init__(self, message: str, *, name: str, namespace: str, conditions: list[dict[str, Any]] | None = None):
        self.name, self.namespace = name, namespace
        self.conditions = list(conditions or [])
        self.logs_hint = logs_hint(name, namespace)
        shown = "; ".join(f"{c.get('type')}={c.get('status')} {c.get('reason') or ''}: {c.get('message') or ''}"
                          for c in self.conditions) or "none"
        super().__init__(f"{message} (conditions: {shown}). Logs: {self.logs_hint}")


class TrainJobTimeout(TrainJobError):
    """A TrainJob reached neither Complete nor Failed within the timeout (it was deleted)."""


def logs_hint(name: str, namespace: str) -> str:
    """The ``kubectl`` command that prints the training nodes' logs of TrainJob ``name``."""
    return f"kubectl logs -n {namespace} -l {JOBSET_NAME_LABEL}={name},{NODE_STEP_LABEL} --prefix --tail=200"


def job_name(model_name: str) -> str:
    """A fresh, valid TrainJob name for training ``model_name`` (DNS-1035 label, ``MAX_NAME`` characters)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")[:MAX_NAME - 15].rstrip("-") or "policy"
    return f"rlops-{stem}-{uuid.uuid4().hex[:8]}"


def check_name(name: str) -> str:
    """``name`` if it is a valid TrainJob name, else a ``ConfigError`` saying why."""
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise ConfigError(f"TrainJob name {name!r}: lowercase letters, digits and '-', starting with a letter, "
                          f"at most {MAX_NAME} characters")
    return name


def resources_per_node(resources: Mapping[str, str | int | float] | None) -> dict[str, dict[str, str]]:
    """Requests = limits per node from ``{"cpu": .., "memory": .., "gpu" or "nvidia.com/gpu": ..}``.

    Requests equal limits: Kubernetes requires it of GPUs, and a guaranteed node keeps torchrun's workers
    from being throttled unevenly (one slow rank stalls every all-reduce).
    """
    from kubernetes.utils import parse_quantity

    out: dict[str, str] = {}
    for key, value in (DEFAULT_RESOURCES if resources is None else resources).items():
        name = GPU_RESOURCE if key == "gpu" else key
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"resources.{key}: a quantity such as '4', '500m' or '8Gi', got {value!r}")
        try:
            quantity = parse_quantity(value)
        except ValueError as exc:
            raise ConfigError(f"resources.{key}: {value!r} is not a Kubernetes quantity ({exc})") from None
        if quantity <= 0:
            raise ConfigError(f"resources.{key}: must be positive, got {value!r}")
        out[name] = str(value)
    return {"requests": dict(out), "limits": dict(out)} if out else {}


def training_args(trainer: str, init_uri: str, dataset_uri: str | None = None, config: Mapping[str, Any] | None = None,
                  *, register_as: str | None = None, eval_episodes: int | None = None,
                  experiment: str | None = None) -> list[str]:
    """torchrun's arguments for ``rlops train``: ``-m rlops_plugin.cli train --trainer T --init URI ...``.

    Config values go through ``--set k=v``: strings as they are, everything else as JSON (the trainer's
    config conversion reads ``true``, numbers, lists and maps back).
    """
    import json

    args = ["-m", "rlops_plugin.cli", "train", "--trainer", trainer, "--init", init_uri]
    if dataset_uri:
        args += ["--dataset", dataset_uri]
    for key, value in (config or {}).items():
        args += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    if register_as:
        args += ["--register", register_as]
    if eval_episodes is not None:
        args += ["--eval-episodes", str(eval_episodes)]
    if experiment:
        args += ["--experiment", experiment]
    return args


@dataclass
class TrainJobSpec:
    """Where and how wide one distributed training job runs."""

    num_nodes: int = 1
    """Training nodes (pods); torchrun's ``--nnodes``."""
    nproc_per_node: int = 1
    """Processes per node; torchrun's ``--nproc-per-node`` (set explicitly: the runtime's ``auto`` would start one
    per CPU core on a CPU node)."""
    resources: dict[str, str | int | float] | None = None
    """Per node: ``cpu``, ``memory``, ``gpu``/``nvidia.com/gpu`` (requests = limits); None: ``DEFAULT_RESOURCES``."""
    namespace: str = "default"
    runtime: str = DEFAULT_RUNTIME
    """The ``ClusterTrainingRuntime`` to run under."""
    image: str = DEFAULT_IMAGE
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the training containers (``MLFLOW_TRACKING_URI`` and ``RLOPS_TRAINJOB_NAME`` are set)."""
    active_deadline_s: int | None = None
    """Kubernetes-side limit of the job's run time (the job then fails with ``DeadlineExceeded``)."""

    def validate(self) -> TrainJobSpec:
        """This spec, or a ``ConfigError`` naming the bad field."""
        for name in ("num_nodes", "nproc_per_node"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: an integer >= 1 is required, got {value!r}")
        if self.active_deadline_s is not None and (not isinstance(self.active_deadline_s, int)
                                                   or self.active_deadline_s < 1):
            raise ConfigError(f"active_deadline_s: a positive integer is required, got {self.active_deadline_s!r}")
        if not self.runtime or not self.image or not self.namespace:
            raise ConfigError("runtime, image and namespace must not be empty")
        clash = {JOB_ENV} & set(self.env)
        if clash:
            raise ConfigError(f"env: {sorted(clash)} is set by rlops")
        resources_per_node(self.resources)
        return self


def trainjob(name: str, args: list[str], spec: TrainJobSpec, *, tracking_uri: str,
             labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``TrainJob`` running ``torchrun <args>`` under ``spec``, as the JSON the API server takes."""
    from kubeflow_trainer_api import models as m

    spec.validate()
    check_name(name)
    if not tracking_uri:
        raise ConfigError("a TrainJob needs an MLflow tracking URI reachable from the cluster (MLFLOW_TRACKING_URI)")
    env = {"MLFLOW_TRACKING_URI": tracking_uri, JOB_ENV: name, **spec.env}
    resources = resources_per_node(spec.resources)
    trainer = m.TrainerV1alpha1Trainer(
        image=spec.image, command=["torchrun"], args=list(args), numNodes=spec.num_nodes,
        numProcPerNode=spec.nproc_per_node, env=[m.IoK8sApiCoreV1EnvVar(name=k, value=v) for k, v in env.items()],
        resourcesPerNode=m.IoK8sApiCoreV1ResourceRequirements(**{
            kind: {k: m.IoK8sApimachineryPkgApiResourceQuantity(v) for k, v in values.items()}
            for kind, values in resources.items()}) if resources else None)
    job = m.TrainerV1alpha1TrainJob(
        apiVersion=f"{TRAINER_GROUP}/{TRAINER_VERSION}", kind=TRAINJOB_KIND,
        metadata=m.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name, namespace=spec.namespace,
            labels={"app.kubernetes.io/part-of": "rlops", **(labels or {})}),
        spec=m.TrainerV1alpha1TrainJobSpec(
            runtimeRef=m.TrainerV1alpha1RuntimeRef(apiGroup=TRAINER_GROUP, kind=RUNTIME_KIND, name=spec.runtime),
            trainer=trainer, activeDeadlineSeconds=spec.active_deadline_s))
    return job.to_dict()


def condition(job: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The job's condition of type ``kind`` when its status is ``True``."""
    for cond in ((job.get("status") or {}).get("conditions") or []):
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


class TrainJobs:
    """Create, watch and delete TrainJobs in one namespace through the Kubernetes API."""

    def __init__(self, namespace: str = "default", *, kubeconfig: str | None = None, client: Any = None) -> None:
        from kubernetes import client as k8s

        self.namespace = namespace
        self.api = k8s.CustomObjectsApi(client or api_client(kubeconfig))

    def _call(self, name: str, fn: Any, *args: Any, hint_404: str = "", **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(TRAINER_GROUP, TRAINER_VERSION, self.namespace, TRAINJOB_PLURAL, *args, **kwargs)
        except ApiException as exc:
            hint = hint_404 if exc.status == 404 else ""
            raise TrainJobError(f"TrainJob {self.namespace}/{name}: Kubernetes API {exc.status} {exc.reason}: "
                                f"{exc.body}{hint}", name=name, namespace=self.namespace) from exc

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the TrainJob ``body`` (validated first: a malformed object never reaches the cluster)."""
        from rlops_plugin.deploy.validation import validate_trainjob

        validate_trainjob(body)
        return self._call(body["metadata"]["name"], self.api.create_namespaced_custom_object, body,
                          hint_404=" (is Kubeflow Trainer installed? its CRD serves trainjobs)")

    def get(self, name: str) -> dict[str, Any]:
        """The TrainJob object with its status."""
        return self._call(name, self.api.get_namespaced_custom_object, name)

    def delete(self, name: str) -> None:
        """Delete the TrainJob (its JobSet and pods go with it)."""
        self._call(name, self.api.delete_namespaced_custom_object, name)

    def wait(self, name: str, timeout_s: float, *, poll_s: float = 10.0,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
             delete_on_timeout: bool = True) -> dict[str, Any]:
        """Poll until the job is ``Complete`` (returned) or ``Failed`` (``TrainJobError``); past ``timeout_s``
        ``TrainJobTimeout``, after deleting the job so it cannot register a model behind the caller's back."""
        if timeout_s < 0 or poll_s <= 0:
            raise ConfigError(f"timeout_s must be >= 0 and poll_s > 0, got {timeout_s}, {poll_s}")
        deadline = clock() + timeout_s
        while True:
            job = self.get(name)
            conditions = list((job.get("status") or {}).get("conditions") or [])
            if condition(job, "Complete"):
                return job
            if condition(job, "Failed"):
                raise TrainJobError(f"TrainJob {self.namespace}/{name} failed", name=name,
                                    namespace=self.namespace, conditions=conditions)
            if clock() >= deadline:
                deleted = ""
                if delete_on_timeout:
                    self.delete(name)
                    deleted = "; deleted it"
                raise TrainJobTimeout(f"TrainJob {self.namespace}/{name} did not finish within {timeout_s:g} s"
                                      f"{deleted}", name=name, namespace=self.namespace, conditions=conditions)
            sleep(min(poll_s, max(deadline - clock(), 0.0)))


@dataclass
class JobResult:
    """What a finished TrainJob produced: its training run, the logged model and (if registered) the version."""

    job_name: str
    run_id: str
    model_uri: str
    registered_name: str | None = None
    version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    dataset_uri: str | None = None


def produced_model(name: str, experiment: str, register_as: str | None = None, *,
                   namespace: str = "default") -> JobResult:
    """The run tagged ``rlops.trainjob=name`` in ``experiment``, its logged model and its version of ``register_as``.

    Several tagged runs (a fine-tuning stage after the update) resolve to the newest; a job that finished without
    such a run (or without registering when asked) is a ``TrainJobError``: the training code did not record it.
    """
    from rlops_plugin.flavor import registry

    client = registry.client()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{check_name(name)}'",
                              order_by=["attributes.start_time DESC"], max_results=5) if exp else []
    if not runs:
        raise TrainJobError(f"TrainJob {name} completed but no run in experiment {experiment!r} carries the tag "
                            f"{JOB_TAG}={name} (the training code records {JOB_ENV} as that tag on rank 0)",
                            name=name, namespace=namespace)
    run = runs[0]
    models = client.search_logged_models([run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'",
                                         order_by=[{"field_name": "creation_time", "ascending": False}])
    if not models:
        raise TrainJobError(f"TrainJob {name}: run {run.info.run_id} logged no model", name=name, namespace=namespace)
    result = JobResult(name, run.info.run_id, models[0].model_uri, metrics=dict(run.data.metrics))
    if register_as:
        versions = client.search_model_versions(f"name = '{register_as}' and run_id = '{run.info.run_id}'")
        if not versions:
            raise TrainJobError(f"TrainJob {name}: run {run.info.run_id} registered no version of {register_as!r}",
                                name=name, namespace=namespace)
        result.registered_name = register_as
        result.version = str(max(int(v.version) for v in versions))
    return result


EXAMPLE_JOB = "rlops-cartpole-distributed"


def example_trainer_manifests(namespace: str = "rlops", image: str = DEFAULT_IMAGE) -> dict[str, list[dict[str, Any]]]:
    """The TrainJob template shipped in ``manifests/trainer``: CQL from ``cartpole@champion`` on 2 nodes x 2 processes.

    ``RUN_ID`` in its dataset URI stands for the run holding the dataset (``rlops_plugin.lifecycle.train_cluster.
    upload_dataset`` logs one); ``RLOPS_TRAINJOB_NAME`` names the job, so a copy under another name finds its own run.
    """
    args = training_args("cql", "models:/cartpole@champion", "runs:/RUN_ID/dataset", {"steps": 2000},
                         register_as="cartpole", eval_episodes=20, experiment="rlops-training")
    spec = TrainJobSpec(num_nodes=2, nproc_per_node=2, resources={"cpu": "2", "memory": "4Gi"}, namespace=namespace,
                        image=image, active_deadline_s=3600)
    return {"trainjob.yaml": [trainjob(EXAMPLE_JOB, args, spec,
                                       tracking_uri="http://mlflow.rlops.svc.cluster.local:5000")]}


def write_trainer_manifests(out_dir: str | Path, namespace: str = "rlops", image: str = DEFAULT_IMAGE) -> list[Path]:
    """Write the TrainJob template (generated, like ``manifests/kserve``); return the files written."""
    return write_documents(out_dir, example_trainer_manifests(namespace, image))
