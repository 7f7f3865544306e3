"""The ``rlops`` MLflow flavor: save, log and load a PolicyBundle; pyfunc for batch scoring.

Layout of a saved model::

    MLmodel                 flavors: rlops (hashes, versions) + python_function
    bundle/                 the PolicyBundle directory (manifest, safetensors, specs, source)
    requirements.txt, python_env.yaml, conda.yaml

Loading checks the MLmodel first (our loader module, no ``code/``), then the manifest hash
recorded in MLmodel, then every file hash, and only then parses anything.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from rlops_plugin._version import __version__
from rlops_plugin.bundle.bundle import DEFAULT_KIND, MANIFEST_FILE, PolicyBundle
from rlops_plugin.bundle.hashing import sha256_file
from rlops_plugin.bundle.storage import safe_path
from rlops_plugin.errors import (
    ConfigError,
    IntegrityError,
    InvalidObservationError,
    RegistryError,
    RLOpsError,
    UnsafeArtifactError,
    to_mlflow_exception,
)
from rlops_plugin.flavor.lineage import tag_model_version
from rlops_plugin.flavor.refs import ModelRef, resolve_model_uri

FLAVOR_NAME = "rlops"
LOADER_MODULE = "rlops_plugin.flavor"
BUNDLE_DATA_PATH = "bundle"
MLMODEL_FILE = "MLmodel"
PYFUNC_PARAM_DETERMINISTIC = "deterministic"


class FlavorKey:
    """Keys of the ``rlops`` flavor section of MLmodel."""

    DATA = "data"
    RLOPS_VERSION = "rlops_version"
    MANIFEST_SHA256 = "manifest_sha256"
    BUNDLE_SHA = "bundle_sha"
    POLICY_SHA = "policy_sha"
    ENV_SHA = "env_sha"
    REWARD_SHA = "reward_sha"
    ENV_ID = "env_id"
    REWARD_REF = "reward_ref"
    ARCHITECTURE = "architecture"
    OBS_DIM = "obs_dim"
    KIND = "kind"
    ACTION_SPACE = "action_space"


def get_default_pip_requirements() -> list[str]:
    """Pinned requirements to load and serve an rlops model (local labels like ``+cpu`` dropped)."""
    from importlib.metadata import version

    pins = [f"{dist}=={version(dist).split('+')[0]}" for dist in ("torch", "safetensors", "gymnasium", "numpy")]
    return pins + [f"rlops-plugin=={__version__}"]


def get_default_conda_env() -> dict[str, Any]:
    """Conda env equivalent of :func:`get_default_pip_requirements`."""
    from mlflow.utils.environment import _mlflow_conda_env

    return _mlflow_conda_env(additional_pip_deps=get_default_pip_requirements())


def infer_signature_for(bundle: PolicyBundle):
    """Model signature: action and probabilities out, the ``deterministic`` param; no input schema.

    Observations are validated by :class:`RLOpsPyfuncModel` instead of MLflow because no MLflow
    input schema admits both float32 (what gymnasium returns) and float64 (what numpy, pandas
    and JSON give): a ``TensorSpec`` needs the exact dtype (MLflow 3.17 ``_enforce_tensor_spec``
    casts in neither direction), and unnamed ``ColSpec`` columns, which do upcast float32 to
    double, also parse numeric strings and silently drop columns beyond the declared count.
    The expected width is recorded as ``obs_dim`` in the MLmodel's ``rlops`` section.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    policy = bundle.policy
    if policy.discrete:
        cols = [ColSpec(DataType.long, "action")] + [
            ColSpec(DataType.double, f"prob_{i}") for i in range(policy.n_actions)
        ]
    else:
        cols = [ColSpec(DataType.double, f"action_{i}") for i in range(policy.n_actions)] + [
            ColSpec(DataType.double, "density")
        ]
    params = ParamSchema([ParamSpec(PYFUNC_PARAM_DETERMINISTIC, DataType.boolean, True)])
    return ModelSignature(inputs=None, outputs=Schema(cols), params=params)


def save_model(bundle: PolicyBundle, path: str | os.PathLike, mlflow_model=None, signature=None,
               input_example=None, pip_requirements=None, extra_pip_requirements=None,
               metadata: dict[str, Any] | None = None) -> None:
    """Save ``bundle`` as an MLflow model directory at ``path``."""
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.models.utils import _save_example
    from mlflow.pyfunc import add_to_model
    from mlflow.utils.environment import (
        _CONDA_ENV_FILE_NAME,
        _PYTHON_ENV_FILE_NAME,
        _REQUIREMENTS_FILE_NAME,
        _process_pip_requirements,
        _PythonEnv,
    )
    from mlflow.utils.model_utils import _validate_and_prepare_target_save_path

    if not isinstance(bundle, PolicyBundle):
        raise ConfigError(f"save_model expects a PolicyBundle, got {type(bundle).__name__}")
    path = os.path.abspath(path)
    _validate_and_prepare_target_save_path(path)
    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    manifest = bundle.save(Path(path) / BUNDLE_DATA_PATH)
    if input_example is not None:
        _save_example(mlflow_model, input_example, path)
    vector = bundle.kind == DEFAULT_KIND  # pyfunc serves flat observations; other kinds serve through KServe
    if vector:
        mlflow_model.signature = signature if signature is not None else infer_signature_for(bundle)
    elif signature is not None:
        mlflow_model.signature = signature
    if metadata:
        mlflow_model.metadata = metadata
    if vector:
        add_to_model(mlflow_model, loader_module=LOADER_MODULE, data=BUNDLE_DATA_PATH,
                     conda_env=_CONDA_ENV_FILE_NAME, python_env=_PYTHON_ENV_FILE_NAME)
    hashes = manifest["hashes"]
    kind_keys = {FlavorKey.OBS_DIM: bundle.policy.obs_dim} if vector else {FlavorKey.KIND: bundle.kind}
    mlflow_model.add_flavor(
        FLAVOR_NAME,
        **{
            FlavorKey.DATA: BUNDLE_DATA_PATH,
            FlavorKey.RLOPS_VERSION: __version__,
            FlavorKey.MANIFEST_SHA256: sha256_file(Path(path) / BUNDLE_DATA_PATH / MANIFEST_FILE),
            FlavorKey.BUNDLE_SHA: hashes["bundle"],
            FlavorKey.POLICY_SHA: hashes["policy"],
            FlavorKey.ENV_SHA: hashes["env"],
            FlavorKey.REWARD_SHA: hashes["reward"],
            FlavorKey.ENV_ID: bundle.env_spec.name,
            FlavorKey.REWARD_REF: bundle.reward_spec.ref,
            FlavorKey.ARCHITECTURE: bundle.policy.architecture,
            **kind_keys,
            FlavorKey.ACTION_SPACE: bundle.policy.describe()["action_space"],
        },
    )
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))
    default_reqs = None if pip_requirements is not None else get_default_pip_requirements()
    conda_env, reqs, _constraints = _process_pip_requirements(
        default_reqs, pip_requirements, extra_pip_requirements
    )
    with open(os.path.join(path, _CONDA_ENV_FILE_NAME), "w") as fh:
        yaml.safe_dump(conda_env, stream=fh, default_flow_style=False)
    Path(path, _REQUIREMENTS_FILE_NAME).write_text("\n".join(reqs) + "\n")
    _PythonEnv.current().to_yaml(os.path.join(path, _PYTHON_ENV_FILE_NAME))


def log_model(bundle: PolicyBundle, name: str = "policy", registered_model_name: str | None = None,
              signature=None, input_example=None, await_registration_for: int = 300,
              pip_requirements=None, extra_pip_requirements=None,
              metadata: dict[str, Any] | None = None, **kwargs: Any):
    """Log ``bundle`` to the active run (``mlflow.models.Model.log``); optionally register it.

    When ``registered_model_name`` is given, the new version gets the ``rlops.*`` lineage tags
    and a readable description (see :func:`rlops_plugin.flavor.registry.tag_model_version`).
    """
    import sys

    from mlflow.models import Model

    hashes = bundle.hashes()
    info = Model.log(
        artifact_path=None, name=name, flavor=sys.modules[LOADER_MODULE],
        registered_model_name=registered_model_name, await_registration_for=await_registration_for,
        bundle=bundle, signature=signature, input_example=input_example,
        pip_requirements=pip_requirements, extra_pip_requirements=extra_pip_requirements,
        metadata=metadata, tags={"rlops.bundle_sha": hashes["bundle"]}, **kwargs,
    )
    if registered_model_name and info.registered_model_version is not None:
        tag_model_version(registered_model_name, str(info.registered_model_version), bundle)
    return info


@dataclass(frozen=True)
class LoadedModel:
    """A bundle with where it came from: the URI, and registry name/version when known."""

    bundle: PolicyBundle
    model_uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None

    @property
    def ref(self) -> ModelRef:
        """Where this bundle came from, as a :class:`~rlops_plugin.flavor.refs.ModelRef`."""
        return ModelRef(self.model_uri, self.name, self.version, self.alias)

    @cached_property
    def policy_version(self) -> str:
        """``name/version@bundle12`` (or just the short bundle hash for unregistered models)."""
        short = self.bundle.bundle_sha[:12]
        return f"{self.name}/{self.version}@{short}" if self.version else short


def as_loaded(model: str | LoadedModel | PolicyBundle) -> LoadedModel:
    """A model given as a URI (``models:/NAME@champion``), a loaded model or an in-memory bundle."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, PolicyBundle):
        return LoadedModel(model, "in-memory")
    return load_model_with_source(model)


def load_model(model_uri: str, dst_path: str | None = None) -> PolicyBundle:
    """Load a bundle from any MLflow model URI after every integrity check."""
    return load_model_with_source(model_uri, dst_path).bundle


def load_model_with_source(model_uri: str, dst_path: str | None = None) -> LoadedModel:
    """Like :func:`load_model`, and report the registry version the alias pointed to."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.model_utils import _download_artifact_from_uri

    resolved = resolve_model_uri(model_uri)
    try:
        local = Path(_download_artifact_from_uri(resolved.download_uri, output_path=dst_path))
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"{model_uri}: cannot download the model: {exc}") from exc
    bundle = load_local_model(local)
    if resolved.version is not None:
        tagged = resolved.tags.get("rlops.bundle_sha")
        if tagged and tagged != bundle.bundle_sha:
            raise IntegrityError(
                f"{model_uri}: artifact bundle hash {bundle.bundle_sha[:12]}... differs from the "
                f"registry tag rlops.bundle_sha={tagged[:12]}... on version {resolved.version}"
            )
    return LoadedModel(bundle, model_uri, resolved.name, resolved.version, resolved.alias)


def remote_policy_kind(model_uri: str) -> str:
    """The policy kind of the rlops model at ``model_uri`` from its MLmodel alone (the bundle stays remote).

    A model this process cannot read, or one without the rlops flavor, is a ``ConfigError``: callers that
    pick something by kind (a serving runtime, a trainer) must not guess.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        mlmodel = Model.load(resolve_model_uri(model_uri).download_uri)
    except (RLOpsError, MlflowException, OSError) as exc:
        raise ConfigError(f"{model_uri}: cannot read its MLmodel ({exc})") from exc
    conf = mlmodel.flavors.get(FLAVOR_NAME)
    if not isinstance(conf, dict):
        raise ConfigError(f"{model_uri}: not an rlops model (no {FLAVOR_NAME!r} flavor in MLmodel)")
    return str(conf.get(FlavorKey.KIND, DEFAULT_KIND))  # vector bundles record obs_dim, not a kind


def read_flavor_config(model_dir: str | Path) -> dict[str, Any]:
    """Check MLmodel for everything rlops refuses, and return the ``rlops`` flavor section."""
    root = Path(model_dir)
    mlmodel_path = safe_path(root, MLMODEL_FILE)
    if not mlmodel_path.is_file():
        raise ConfigError(f"{root}: no MLmodel file; not an MLflow model directory")
    try:
        mlmodel = yaml.safe_load(mlmodel_path.read_text("utf-8"))
    except yaml.YAMLError as exc:
        raise IntegrityError(f"{MLMODEL_FILE}: not valid YAML ({exc})") from exc
    flavors = (mlmodel or {}).get("flavors") if isinstance(mlmodel, dict) else None
    if not isinstance(flavors, dict) or FLAVOR_NAME not in flavors:
        raise ConfigError(f"{root}: MLmodel has no {FLAVOR_NAME!r} flavor; log the bundle with "
                          "rlops_plugin.flavor.log_model")
    pyfunc = flavors.get("python_function")
    if pyfunc is not None and (not isinstance(pyfunc, dict) or pyfunc.get("loader_module") != LOADER_MODULE):
        loader = pyfunc.get("loader_module") if isinstance(pyfunc, dict) else pyfunc
        raise UnsafeArtifactError(
            f"{MLMODEL_FILE}: python_function.loader_module is {loader!r}, expected {LOADER_MODULE!r}; "
            "refusing a model that asks to import other code"
        )
    for flavor_name, conf in flavors.items():
        if isinstance(conf, dict) and conf.get("code"):
            raise UnsafeArtifactError(f"{MLMODEL_FILE}: flavor {flavor_name!r} ships code "
                                      f"({conf['code']!r}); rlops models never carry code")
    if (root / "code").exists():
        raise UnsafeArtifactError(f"{root / 'code'}: rlops models never ship a code/ directory")
    conf = flavors[FLAVOR_NAME]
    if not isinstance(conf, dict) or conf.get(FlavorKey.DATA) != BUNDLE_DATA_PATH:
        raise UnsafeArtifactError(f"{MLMODEL_FILE}: rlops flavor must point at data path "
                                  f"{BUNDLE_DATA_PATH!r}")
    _warn_on_version_mismatch(str(conf.get(FlavorKey.RLOPS_VERSION, "unknown")))
    return conf


def load_local_model(model_dir: str | Path) -> PolicyBundle:
    """Load a bundle from a local MLflow model directory (all checks applied)."""
    root = Path(model_dir)
    conf = read_flavor_config(root)
    return PolicyBundle.load(
        safe_path(root, BUNDLE_DATA_PATH),
        expected_manifest_sha256=str(conf.get(FlavorKey.MANIFEST_SHA256)),
        expected_bundle_sha=str(conf.get(FlavorKey.BUNDLE_SHA)),
    )


def _warn_on_version_mismatch(saved: str) -> None:
    if saved.split(".")[:2] != __version__.split(".")[:2]:
        warnings.warn(
            f"this model was saved with rlops-plugin {saved}; you are running {__version__}. "
            f"If loading or serving misbehaves, install rlops-plugin=={saved}.",
            UserWarning,
            stacklevel=3,
        )


class RLOpsPyfuncModel:
    """pyfunc wrapper: observations in, actions and probabilities out (greedy by default)."""

    def __init__(self, bundle: PolicyBundle) -> None:
        self.bundle = bundle

    def get_raw_model(self) -> PolicyBundle:
        """The underlying bundle."""
        return self.bundle

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Score observations: a DataFrame, an ndarray, a list of rows or ``{"obs": ...}``.

        Any float or integer dtype is accepted (float32 from gymnasium, float64 from numpy,
        pandas and JSON) and cast to the policy's float32; strings, booleans and other
        non-numeric input are refused with an ``MlflowException`` (HTTP 400 when served).
        """
        params = params or {}
        deterministic = bool(params.get(PYFUNC_PARAM_DETERMINISTIC, True))
        policy = self.bundle.policy
        try:
            obs = _numeric_observations(model_input)
            actions, probs = policy.act(obs if obs.ndim > 1 else obs[None, :], deterministic=deterministic)
        except RLOpsError as exc:
            raise to_mlflow_exception(exc) from None
        if policy.discrete:
            out = {"action": actions.astype(np.int64)}
            out.update({f"prob_{i}": probs[:, i] for i in range(policy.n_actions)})
        else:
            out = {f"action_{i}": actions[:, i].astype(np.float64) for i in range(policy.n_actions)}
            out["density"] = probs.astype(np.float64)
        return pd.DataFrame(out)


_NUMERIC_KINDS = frozenset("iuf")  # signed/unsigned integers and floats of any width


def _numeric_observations(model_input: Any) -> np.ndarray:
    """``model_input`` as a numeric ndarray (shape checked later by ``Policy.as_tensor``).

    Checks the dtype before any cast, so ``"0.5"`` or ``True`` is refused rather than parsed.
    """
    if isinstance(model_input, dict):
        if set(model_input) != {"obs"}:
            raise InvalidObservationError(
                f"dict input must have exactly the key 'obs', got {sorted(map(str, model_input))}")
        model_input = model_input["obs"]
    try:
        if isinstance(model_input, pd.DataFrame):
            arr = model_input.infer_objects().to_numpy()
        else:
            arr = np.asarray(model_input)
        if arr.dtype == object:  # e.g. a list of per-row arrays: let numpy infer one element type
            arr = np.asarray(arr.tolist())
    except (TypeError, ValueError) as exc:
        raise InvalidObservationError(f"observations are not a rectangular array of numbers: {exc}") from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidObservationError(
            f"observations must be numbers (float32, float64 or integers), got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise InvalidObservationError("observations must be a row of numbers or a batch of rows, got a scalar")
    return arr


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> RLOpsPyfuncModel:
    """pyfunc entry: ``path`` is the bundle data dir inside the model directory."""
    data_dir = Path(path)
    model_dir = data_dir.parent if (data_dir.parent / MLMODEL_FILE).is_file() else data_dir
    return RLOpsPyfuncModel(load_local_model(model_dir))
