"""One hyperparameter search space for local tuning (``rlops tune``, Optuna) and for a Katib Experiment.

A space is a YAML or JSON file::

    trainer: bc
    objective: {metric: eval/return_mean, direction: maximize}
    intermediate: {metric: train/loss, direction: minimize}   # optional: prunes (locally) on it
    trials: 12
    fixed: {steps: 300}
    parameters:
      lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
      batch_size: {type: categorical, choices: [32, 64, 256]}

Everything is checked before any trial runs (:meth:`SearchSpace.validate`): parameter and fixed names
must be fields of the trainer's ``Config``, types must fit the field, ranges must be non-empty, and
the objective must be a metric the trainer run logs. Which metrics are logged is declared statically:
:data:`EVAL_METRICS` (what ``training.train.train`` adds whenever ``eval_episodes > 0``), a trainer's
own ``logged_metrics`` class attribute.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlops_plugin.errors import ConfigError

EVAL_METRICS = ("eval/return_mean", "eval/return_ci_low", "eval/return_ci_high", "eval/length_mean",
                "eval/init_return_mean", "eval/return_delta", "eval/return_delta_ci_low",
                "eval/return_delta_ci_high")
"""Metrics ``rlops_plugin.training.train.train`` logs for every trainer when ``eval_episodes > 0``."""
AGENT_EVAL_METRICS = ("eval/pass_rate", "eval/init_pass_rate")
"""Also logged when the policy is an agent (plus ``eval/grader/<name>`` per grader)."""
AGENT_EVAL_PREFIX = "eval/grader/"
PARAM_TYPES = ("float", "int", "categorical")
DIRECTIONS = ("maximize", "minimize")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Metric:
    """A metric to optimize (or to prune on) and whether larger is better."""

    name: str
    direction: str = "maximize"

    def to_dict(self) -> dict[str, str]:
        """``{"metric": ..., "direction": ...}``, as written in the space file."""
        return {"metric": self.name, "direction": self.direction}


@dataclass(frozen=True)
class Parameter:
    """One searched trainer config field: a float or int range (optionally log-scaled) or a list of choices."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    default: Any = None
    """The value the baseline trial uses (None: the trainer Config's default)."""

    def to_dict(self) -> dict[str, Any]:
        """The parameter as written in the space file (without its name)."""
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out |= {"low": self.low, "high": self.high}
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = self.step
        if self.default is not None:
            out["default"] = self.default
        return out

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's range or choices."""
        if self.type == "categorical":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial suggests for this parameter."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass
class SearchSpace:
    """What to tune: trainer, parameters, objective, optional pruning metric, trial budget, fixed config values."""

    trainer: str
    parameters: list[Parameter]
    objective: Metric
    intermediate: Metric | None = None
    trials: int = 20
    fixed: dict[str, Any] = field(default_factory=dict)
    parallel: int = 1
    """Trials at once on a cluster (Katib ``parallelTrialCount``); local tuning runs one at a time."""
    max_failed: int = 3
    """Failed trials after which a Katib Experiment fails."""
    pruner: dict[str, int] = field(default_factory=dict)
    """``startup_trials`` (default 3) and ``warmup_steps`` (default 0) of the local median pruner."""

    @classmethod
    def from_dict(cls, data: Any) -> SearchSpace:
        """Parse a space from its dict; shape errors raise ``ConfigError`` naming the key."""
        if not isinstance(data, dict):
            raise ConfigError(f"search space: a mapping is required, got {type(data).__name__}")
        known = {"trainer", "parameters", "objective", "intermediate", "trials", "fixed", "parallel",
                 "max_failed", "pruner"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"search space: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        trainer = data.get("trainer")
        if not isinstance(trainer, str) or not trainer:
            raise ConfigError("search space: 'trainer' (a registered trainer name) is required")
        raw_params = data.get("parameters")
        if isinstance(raw_params, dict):
            raw_params = [{"name": k, **(v if isinstance(v, dict) else {"_": v})} for k, v in raw_params.items()]
        if not isinstance(raw_params, list) or not raw_params:
            raise ConfigError("search space: 'parameters' must map at least one config field to its range")
        params = [_parameter(p) for p in raw_params]
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"search space: parameters named twice: {twice}")
        if "objective" not in data:
            raise ConfigError("search space: 'objective' ({metric: NAME, direction: maximize|minimize}) is required")
        fixed = data.get("fixed") or {}
        if not isinstance(fixed, dict):
            raise ConfigError("search space: 'fixed' must map config fields to values")
        pruner = data.get("pruner") or {}
        if not isinstance(pruner, dict) or set(pruner) - {"startup_trials", "warmup_steps"}:
            raise ConfigError("search space: 'pruner' takes only startup_trials and warmup_steps")
        for key, value in pruner.items():
            _positive_int(value, f"pruner.{key}", minimum=0)
        return cls(trainer, params, _metric(data["objective"], "objective"),
                   _metric(data["intermediate"], "intermediate") if data.get("intermediate") else None,
                   _positive_int(data.get("trials", 20), "trials"), dict(fixed),
                   _positive_int(data.get("parallel", 1), "parallel"),
                   _positive_int(data.get("max_failed", 3), "max_failed", minimum=0), dict(pruner))

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """Read a space from a ``.yaml``/``.yml`` or ``.json`` file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"search space: {path} is not a file")
        text = path.read_text()
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except (json.JSONDecodeError, ValueError) as exc:
            raise ConfigError(f"search space: {path} does not parse ({exc})") from None
        return cls.from_dict(data)

    @classmethod
    def coerce(cls, space: SearchSpace | dict[str, Any] | str | Path) -> SearchSpace:
        """A space from itself, its dict, a file path, or inline JSON text."""
        if isinstance(space, SearchSpace):
            return space
        if isinstance(space, dict):
            return cls.from_dict(space)
        if isinstance(space, str) and space.lstrip().startswith("{"):
            try:
                return cls.from_dict(json.loads(space))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"search space: inline JSON does not parse ({exc})") from None
        return cls.load(space)

    def to_dict(self) -> dict[str, Any]:
        """The space as a file would hold it (logged with the tuning run)."""
        out: dict[str, Any] = {"trainer": self.trainer, "objective": self.objective.to_dict(),
                               "trials": self.trials, "parameters": {p.name: p.to_dict() for p in self.parameters}}
        if self.intermediate:
            out["intermediate"] = self.intermediate.to_dict()
        if self.fixed:
            out["fixed"] = dict(self.fixed)
        if self.parallel != 1:
            out["parallel"] = self.parallel
        if self.max_failed != 3:
            out["max_failed"] = self.max_failed
        if self.pruner:
            out["pruner"] = dict(self.pruner)
        return out

    def trainer_class(self) -> type:
        """The registered trainer class (``PluginError`` naming the known ones if it is not registered)."""
        from rlops_plugin import plugins

        return plugins.trainers().get(self.trainer).value

    def validate(self, eval_episodes: int = 1) -> SearchSpace:
        """Refuse, before any trial, what would fail or mislead later; return the space.

        Checks: parameter and fixed names are fields of the trainer's ``Config`` (and not both), each
        type fits the field's default, ranges are non-empty, choices fit the field, the baseline value
        lies in the range, the objective is a logged metric (eval metrics need ``eval_episodes > 0``) and
        the intermediate one a metric the trainer reports while training.
        """
        cls = self.trainer_class()
        config_cls = cls.Config
        fields = {f.name for f in dataclasses.fields(config_cls)}
        defaults = config_cls()
        unknown = sorted({p.name for p in self.parameters} - fields)
        if unknown:
            raise ConfigError(f"search space: {unknown} are not fields of {self.trainer}'s {config_cls.__name__} "
                              f"(known: {sorted(fields)})")
        unknown = sorted(set(self.fixed) - fields)
        if unknown:
            raise ConfigError(f"search space: fixed {unknown} are not fields of {config_cls.__name__} "
                              f"(known: {sorted(fields)})")
        both = sorted(set(self.fixed) & {p.name for p in self.parameters})
        if both:
            raise ConfigError(f"search space: {both} are both fixed and searched; keep one")
        for param in self.parameters:
            _check_against_field(param, getattr(defaults, param.name))
        from rlops_plugin.training.base import make_config

        make_config(config_cls, {**self.fixed, **self.baseline()})  # the baseline config must build
        trainer_metrics = logged_metrics(cls)
        evals = eval_metrics(cls) if eval_episodes > 0 else ()
        name = self.objective.name
        if not (name in trainer_metrics or name in evals or (evals and agent_trainer(cls)
                                                             and name.startswith(AGENT_EVAL_PREFIX))):
            hint = "" if eval_episodes > 0 or not name.startswith("eval/") else " (eval metrics need eval_episodes > 0)"
            raise ConfigError(f"search space: objective metric {name!r} is never logged by trainer "
                              f"{self.trainer!r}{hint}; logged: {sorted({*trainer_metrics, *evals})}")
        if self.intermediate is not None and self.intermediate.name not in trainer_metrics:
            raise ConfigError(f"search space: intermediate metric {self.intermediate.name!r} is not reported by "
                              f"trainer {self.trainer!r} while it trains; reported: {sorted(trainer_metrics)}")
        return self

    def baseline(self) -> dict[str, Any]:
        """The searched parameters' values in the baseline trial: each ``default``, else the Config's default."""
        defaults = self.trainer_class().Config()
        return {p.name: p.default if p.default is not None else getattr(defaults, p.name) for p in self.parameters}

    def suggest(self, trial: Any) -> dict[str, Any]:
        """The parameter values an Optuna trial suggests."""
        return {p.name: p.suggest(trial) for p in self.parameters}

    def config(self, params: dict[str, Any]) -> dict[str, Any]:
        """The trainer config values of a trial: the fixed ones and the trial's parameters."""
        return {**self.fixed, **params}


def logged_metrics(trainer_cls: type) -> tuple[str, ...]:
    """Metrics a trainer reports while training: its ``logged_metrics`` class attribute (none declared: none)."""
    return tuple(getattr(trainer_cls, "logged_metrics", ()))


def agent_trainer(trainer_cls: type) -> bool:
    """Whether the trainer trains agent policies (``policy_kind = "agent"``, as the agent kind decides), whose
    evaluation adds pass rates and grader scores."""
    return getattr(trainer_cls, "policy_kind", None) == "agent"


def eval_metrics(trainer_cls: type) -> tuple[str, ...]:
    """Metrics the training run logs after its evaluation (``eval_episodes > 0``) for this trainer."""
    return EVAL_METRICS + (AGENT_EVAL_METRICS if agent_trainer(trainer_cls) else ())


def _metric(raw: Any, where: str) -> Metric:
    if isinstance(raw, str):
        raw = {"metric": raw}
    if not isinstance(raw, dict) or set(raw) - {"metric", "direction"} or not isinstance(raw.get("metric"), str) \
            or not raw["metric"]:
        raise ConfigError(f"search space: '{where}' is {{metric: NAME, direction: maximize|minimize}}, got {raw!r}")
    direction = raw.get("direction", "maximize")
    if direction not in DIRECTIONS:
        raise ConfigError(f"search space: {where}.direction must be maximize or minimize, got {direction!r}")
    return Metric(raw["metric"], direction)


def _positive_int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"search space: {where} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(value: Any, where: str, integer: bool) -> float | int:
    """A bound as a number; YAML 1.1 reads ``1e-4`` (no dot) as a string, so numeric strings are accepted."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"search space: {where} must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ConfigError(f"search space: {where} must be an integer for an int parameter, got {value!r}")
        return int(value)
    return float(value)


def _parameter(raw: Any) -> Parameter:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ConfigError(f"search space: each parameter needs a name and a mapping of type/range, got {raw!r}")
    name = raw["name"]
    where = f"parameter {name!r}"
    unknown = set(raw) - {"name", "type", "low", "high", "log", "step", "choices", "default"}
    if unknown:
        raise ConfigError(f"search space: {where}: unknown keys {sorted(unknown)} (type, low, high, log, step, "
                          "choices, default)")
    kind = raw.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"search space: {where}: type must be one of {list(PARAM_TYPES)}, got {kind!r}")
    if kind == "categorical":
        choices = raw.get("choices")
        if set(raw) & {"low", "high", "log", "step"}:
            raise ConfigError(f"search space: {where}: a categorical parameter takes choices, not a range")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"search space: {where}: choices must be a non-empty list")
        if any(isinstance(c, (list, dict)) for c in choices):
            raise ConfigError(f"search space: {where}: choices must be numbers, strings, booleans (Optuna's kinds)")
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ConfigError(f"search space: {where}: choices repeat a value")
        return Parameter(name, kind, choices=tuple(choices), default=raw.get("default"))
    if "choices" in raw:
        raise ConfigError(f"search space: {where}: a {kind} parameter takes low/high, not choices")
    if "low" not in raw or "high" not in raw:
        raise ConfigError(f"search space: {where}: a {kind} parameter needs low and high")
    integer = kind == "int"
    low, high = _number(raw["low"], f"{where}.low", integer), _number(raw["high"], f"{where}.high", integer)
    if low > high:
        raise ConfigError(f"search space: {where}: inverted range, low {low} > high {high}")
    if low == high:
        raise ConfigError(f"search space: {where}: empty range, low == high == {low} (put it under 'fixed')")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"search space: {where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"search space: {where}: a log range needs low > 0, got {low}")
    step = raw.get("step")
    if step is not None:
        step = _number(step, f"{where}.step", integer)
        if step <= 0 or step > high - low:
            raise ConfigError(f"search space: {where}: step must be in (0, high - low], got {step}")
        if log:
            raise ConfigError(f"search space: {where}: step and log cannot be combined (Optuna refuses it)")
    default = raw.get("default")
    if default is not None:
        default = _number(default, f"{where}.default", integer)
    return Parameter(name, kind, low, high, log, step, default=default)


def _check_against_field(param: Parameter, default: Any) -> None:
    """Refuse a parameter whose type does not fit the Config field's default, or whose baseline is out of range."""
    where = f"search space: parameter {param.name!r}"
    if param.type == "float" and (isinstance(default, bool) or not isinstance(default, float)):
        raise ConfigError(f"{where}: type float, but the field's default is {type(default).__name__} {default!r}")
    if param.type == "int" and (isinstance(default, bool) or not isinstance(default, int)):
        raise ConfigError(f"{where}: type int, but the field's default is {type(default).__name__} {default!r}")
    if param.type == "categorical" and default is not None:
        for choice in param.choices:
            fits = isinstance(choice, bool) if isinstance(default, bool) else (
                isinstance(choice, (int, float)) and not isinstance(choice, bool) if isinstance(default, float)
                else isinstance(choice, int) and not isinstance(choice, bool) if isinstance(default, int)
                else isinstance(choice, type(default)))
            if not fits:
                raise ConfigError(f"{where}: choice {choice!r} is not a {type(default).__name__} like the field's "
                                  f"default {default!r}")
    baseline = param.default if param.default is not None else default
    if not param.contains(baseline):
        raise ConfigError(f"{where}: the baseline value {baseline!r} (the Config default unless 'default' is set) "
                          f"lies outside {param.to_dict()}: the default configuration runs as the first trial, so "
                          "widen the range or set 'default' inside it")
