"""Update a policy from the deployed checkpoint: offline or simulator training, optional fine-tuning, registration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlops_plugin import plugins
from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.defaults import EVAL_EPISODES, EXPERIMENT
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.flavor.model import LoadedModel, as_loaded
from rlops_plugin.kinds.base import kind_of
from rlops_plugin.lifecycle.register import register
from rlops_plugin.simulation.calibration import Calibration
from rlops_plugin.training import distributed
from rlops_plugin.training.base import Progress
from rlops_plugin.training.train import TrainOutcome
from rlops_plugin.training.train import train as run_trainer

FINETUNE_TRAINER = "sim_finetune"


def train(trainer: str, init: str | LoadedModel | PolicyBundle, dataset: str | Path | Dataset | None = None,
          config: dict[str, Any] | None = None, *, finetune_steps: int = 0,
          finetune_config: dict[str, Any] | None = None, calibration: Calibration | None = None,
          register_as: str | None = None, alias: str | None = None, allow_mismatch: bool = False,
          eval_episodes: int = EVAL_EPISODES, experiment: str | None = EXPERIMENT, run_name: str | None = None,
          progress: Progress | None = None, simulator_ignores_dataset: bool = False,
          env_spec: Any = None, tags: dict[str, str] | None = None) -> TrainOutcome:
    """Train ``trainer`` from ``init``, then fine-tune ``finetune_steps`` in the simulator; log each stage.

    ``trainer`` is a registered name or an alias of the init policy's kind (``dpo`` on an agent is
    ``agent_dpo``), resolved before anything is looked up. Simulator trainers refuse a ``dataset``
    unless ``simulator_ignores_dataset`` (a pipeline always wires its dataset step in). With
    ``calibration`` the simulator stages randomize the fitted physics around their fitted values
    (overriding configured ranges of the same names) and record the fit in the lineage. With
    ``register_as`` the final model is registered (see :func:`~rlops_plugin.lifecycle.register.register`)
    and ``alias`` set on it. ``env_spec`` (a spec of the init's kind, its dict, or a JSON file) becomes the
    candidate's environment part, e.g. an agent's task suite after its world changed (the gate then compares
    both policies under it with ``compare_under="candidate"``). ``dataset`` may be an MLflow artifact URI
    (``runs:/...``, ``models:/...``, ``mlflow-artifacts:/...``, ``s3://...``). ``tags`` go on each stage's run.

    Under torchrun (``rlops train --nproc N``, a TrainJob) every rank trains each stage; rank 0 alone logs and
    registers, after every rank finished (one run per stage, one registered version, as in a single process);
    the other ranks return their outcome (``rank`` > 0) with nothing recorded.
    """
    if trainer == "reward_model":
        raise ConfigError("a reward model is a judge, not a policy update: use lifecycle.train_reward_model "
                          "(rlops train --trainer reward_model does)")
    loaded = as_loaded(init)
    kind = kind_of(loaded.bundle)
    trainer, trainer_cls = resolve_trainer(trainer, kind)
    init = loaded
    simulator = trainer_cls.data_kind == "simulator"
    if simulator and simulator_ignores_dataset:
        dataset = None
    config = dict(config or {})
    if simulator and calibration is not None:
        config = calibrated(config, calibration)
    fitted = calibration.to_dict() if calibration is not None else None
    outcome = run_trainer(trainer, init, dataset, config, allow_mismatch=allow_mismatch,
                          eval_episodes=eval_episodes, experiment=experiment, run_name=run_name, progress=progress,
                          calibration=fitted if simulator else None,
                          env_spec=None if env_spec is None else env_spec_of(kind, env_spec), tags=tags)
    if finetune_steps > 0:
        if not kind.trainer_applies(plugins.trainers().get(FINETUNE_TRAINER).value):
            raise ConfigError(f"trainer {FINETUNE_TRAINER!r} does not train {kind.name} policies")
        base_return = outcome.metrics.get("eval/init_return_mean")
        finetune = {**(finetune_config or {}), "total_steps": finetune_steps}
        if calibration is not None:
            finetune = calibrated(finetune, calibration)
        outcome = run_trainer(FINETUNE_TRAINER, outcome.model_uri or outcome.bundle, None, finetune,
                              eval_episodes=eval_episodes, experiment=experiment, progress=progress,
                              calibration=fitted, tags=tags)
        if base_return is not None:  # before = the deployed checkpoint, not the intermediate stage
            outcome.metrics["eval/init_return_mean"] = base_return
    if register_as and distributed.is_main():
        outcome.version = register(outcome.model_uri, register_as, alias=alias, bundle=outcome.bundle)
        outcome.registered_name = register_as
    return outcome


def env_spec_of(kind: Any, spec: Any) -> Any:
    """``spec`` as the environment spec class of ``kind``: the object itself, its dict, or a JSON file of it."""
    import json

    from rlops_plugin.bundle.env_spec import EnvSpec

    cls = getattr(kind, "spec_classes", (EnvSpec, None))[0]
    if isinstance(spec, cls):
        return spec
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"env_spec: {spec} is not a file (a JSON {cls.__name__})")
        try:
            spec = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"env_spec: {spec} is not JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"env_spec: a {cls.__name__}, its dict or a JSON file, got {type(spec).__name__}")
    return cls.from_dict(spec)


def resolve_trainer(trainer: str, kind: Any) -> tuple[str, type]:
    """``(registered name, trainer class)`` of ``trainer`` for a policy of ``kind``: the kind's alias applies
    first, so ``dpo``/``grpo`` on an agent never resolve to a vector trainer of the same name."""
    name = getattr(kind, "trainer_aliases", {}).get(trainer, trainer)
    trainer_cls = plugins.trainers().get(name).value
    if not kind.trainer_applies(trainer_cls):
        raise ConfigError(f"trainer {name!r} does not train {kind.name} policies")
    return name, trainer_cls


def train_reward_model(init: str | LoadedModel | PolicyBundle, dataset: str | Path | Dataset,
                       config: dict[str, Any] | None = None, *, register_as: str | None = None,
                       allow_mismatch: bool = False, experiment: str | None = EXPERIMENT,
                       progress: Progress | None = None) -> tuple[Any, str | None, str | None]:
    """Train an RLHF reward model (TRL ``RewardTrainer``) from an agent's checkpoint on human preference pairs.

    The reward model is a judge, not a policy: with ``register_as`` it is registered in MLflow with its parent
    and dataset digest and a ``judge_update`` audit event. Returns ``(result, model_uri, version)``.
    """
    from rlops_plugin.audit.events import AuditEvent, record_event
    from rlops_plugin.training.agent_reward import RewardModelConfig, register_reward_model
    from rlops_plugin.training.agent_reward import train_reward_model as fit
    from rlops_plugin.training.base import make_config
    from rlops_plugin.training.train import check_compatible

    loaded = as_loaded(init)
    if kind_of(loaded.bundle).name != "agent":
        raise ConfigError("reward models are trained from agent policies")
    data = dataset if isinstance(dataset, Dataset) else Dataset.load(dataset)
    check_compatible(loaded.bundle, data, allow_mismatch)
    result = fit(loaded.bundle, data, make_config(RewardModelConfig, config), progress)
    if not register_as:
        return result, None, None
    parent = f"models:/{loaded.name}/{loaded.version}" if loaded.version else loaded.model_uri
    uri, version = register_reward_model(result, register_as, parent_model_uri=parent, dataset_digest=data.digest,
                                         experiment=experiment)
    from rlops_plugin.flavor import registry

    run_id = registry.client().get_model_version(register_as, version).run_id
    record_event(AuditEvent("judge_update", register_as, version, decision="registered",
                            reason=f"reward model trained on {data.digest[:19]} from {parent}",
                            metrics={k: v for k, v in result.metrics.items() if isinstance(v, float)},
                            details={"judge_kind": "reward_model", "model_uri": uri, "parent": parent,
                                     "dataset_digest": data.digest, "run_id": run_id,
                                     "agreement": {k: v for k, v in result.metrics.items() if k.startswith("eval/")}}))
    return result, uri, version


def calibrated(config: dict[str, Any], calibration: Calibration) -> dict[str, Any]:
    """``config`` with ``extra_randomization`` centred on the calibration's fitted values."""
    return {**config, "extra_randomization": {**(config.get("extra_randomization") or {}),
                                              **calibration.randomization()}}
