"""The search space: parsing, the checks that run before any trial, and the declared metrics against real runs."""

from __future__ import annotations

import json

import pytest

from rlops_plugin import EnvSpec, PolicyBundle
from rlops_plugin.errors import ConfigError, PluginError
from rlops_plugin.training.expert import heuristic_transitions
from rlops_plugin.training.search_space import EVAL_METRICS, SearchSpace, logged_metrics


def space(**overrides):
    base = {"trainer": "bc", "objective": {"metric": "eval/return_mean", "direction": "maximize"},
            "intermediate": {"metric": "train/loss", "direction": "minimize"}, "trials": 6,
            "fixed": {"steps": 200},
            "parameters": {"lr": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True},
                           "batch_size": {"type": "categorical", "choices": [64, 256]},
                           "temperature": {"type": "float", "low": 0.5, "high": 2.0}}}
    base.update(overrides)
    return base


def test_round_trip_yaml_json_and_baseline(tmp_path):
    import yaml

    path = tmp_path / "space.yaml"
    # YAML 1.1 reads 1e-4 (no dot) as a string: accepted as the number it spells
    path.write_text(yaml.safe_dump(space(), sort_keys=False).replace("0.0001", "1e-4"))
    assert yaml.safe_load(path.read_text())["parameters"]["lr"]["low"] == "1e-4"
    loaded = SearchSpace.load(path).validate(eval_episodes=5)
    assert loaded.parameters[0].low == 1e-4 and isinstance(loaded.parameters[0].low, float)
    assert loaded.baseline() == {"lr": 1e-3, "batch_size": 256, "temperature": 1.0}  # BCConfig's defaults
    assert loaded.config({"lr": 0.01}) == {"steps": 200, "lr": 0.01}
    again = tmp_path / "space.json"
    again.write_text(json.dumps(loaded.to_dict()))
    assert SearchSpace.load(again).to_dict() == loaded.to_dict()
    assert SearchSpace.coerce(json.dumps(space())).to_dict() == loaded.to_dict()


def test_parameter_default_sets_the_baseline():
    s = SearchSpace.from_dict(space(parameters={"steps": {"type": "int", "low": 50, "high": 400, "default": 100}},
                                    fixed={})).validate(5)
    assert s.baseline() == {"steps": 100}


@pytest.mark.parametrize("overrides, match", [
    ({"parameters": {"learning_rate": {"type": "float", "low": 0.1, "high": 1.0}}},
     r"\['learning_rate'\] are not fields of bc's BCConfig"),
    ({"fixed": {"stepz": 10}}, r"fixed \['stepz'\] are not fields"),
    ({"fixed": {"lr": 0.1}}, r"\['lr'\] are both fixed and searched"),
    ({"parameters": {"lr": {"type": "float", "low": 0.1, "high": 0.01}}}, "inverted range, low 0.1 > high 0.01"),
    ({"parameters": {"lr": {"type": "float", "low": 0.01, "high": 0.01}}}, "empty range"),
    ({"parameters": {"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}, "log range needs low > 0"),
    ({"parameters": {"lr": {"type": "float", "low": "fast", "high": 0.1}}}, "lr'.low must be a finite number"),
    ({"parameters": {"lr": {"type": "double", "low": 0.001, "high": 0.1}}}, "type must be one of"),
    ({"parameters": {"batch_size": {"type": "categorical", "choices": []}}}, "choices must be a non-empty list"),
    ({"parameters": {"batch_size": {"type": "categorical", "choices": [64, "big"]}}},
     "choice 'big' is not a int"),
    ({"parameters": {"steps": {"type": "float", "low": 10, "high": 4000}}, "fixed": {}},
     "type float, but the field's default is int"),
    ({"parameters": {"lr": {"type": "int", "low": 1, "high": 3}}}, "type int, but the field's default is float"),
    ({"parameters": {"steps": {"type": "int", "low": 10.5, "high": 400}}, "fixed": {}}, "must be an integer"),
    ({"parameters": {"lr": {"type": "float", "low": 0.01, "high": 0.1}}}, "baseline value 0.001"),
    ({"parameters": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "bounds": 1}}}, r"unknown keys \['bounds'\]"),
    ({"objective": {"metric": "eval/retrun_mean"}}, "objective metric 'eval/retrun_mean' is never logged"),
    ({"objective": {"metric": "eval/return_mean", "direction": "up"}}, "maximize or minimize"),
    ({"intermediate": {"metric": "eval/return_mean"}}, "intermediate metric 'eval/return_mean' is not reported"),
    ({"intermediate": {"metric": "train/td_loss"}}, "intermediate metric 'train/td_loss'"),
    ({"trials": 0}, "trials must be an integer >= 1"),
    ({"parameters": {}}, "at least one config field"),
    ({"budget": 3}, r"unknown keys \['budget'\]"),
])
def test_refused_before_any_trial(overrides, match):
    with pytest.raises(ConfigError, match=match):
        SearchSpace.from_dict(space(**overrides)).validate(eval_episodes=5)


def test_eval_metrics_need_eval_episodes():
    with pytest.raises(ConfigError, match="eval metrics need eval_episodes > 0"):
        SearchSpace.from_dict(space()).validate(eval_episodes=0)
    trained = SearchSpace.from_dict(space(objective={"metric": "train/loss", "direction": "minimize"}))
    assert trained.validate(eval_episodes=0).objective.name == "train/loss"


def test_unknown_trainer_is_a_plugin_error():
    with pytest.raises(PluginError, match="nope"):
        SearchSpace.from_dict(space(trainer="nope")).validate()


def test_a_trainer_can_declare_its_metrics():
    class Declared:
        logged_metrics = ("train/custom",)

    class Undeclared:
        pass

    assert logged_metrics(Declared) == ("train/custom",)
    assert logged_metrics(Undeclared) == ()
    assert "eval/return_mean" in EVAL_METRICS


@pytest.mark.parametrize("name, config", [("bc", {"steps": 100}), ("cql", {"steps": 100})])
def test_declared_trainer_metrics_are_what_a_real_run_reports(name, config):
    """The static table is honest: the metrics a short real run reports are exactly the declared ones."""
    from rlops_plugin import plugins
    from rlops_plugin.training.base import make_config

    bundle = PolicyBundle.create(EnvSpec(id="CartPole-v1"), config={"hidden_sizes": [16]}, seed=0)
    cls = plugins.trainers().get(name).value
    reported: set[str] = set()
    cls().train(bundle, heuristic_transitions(bundle, episodes=2), make_config(cls.Config, config),
                lambda step, total, metrics: reported.update(metrics))
    assert reported == set(cls.logged_metrics) == set(logged_metrics(cls))


def test_the_shipped_example_space_validates():
    from tests.conftest import REPO_ROOT

    example = SearchSpace.load(REPO_ROOT / "docs" / "examples" / "tune_bc.yaml").validate(eval_episodes=20)
    assert example.trainer == "bc" and example.intermediate is not None
    assert (REPO_ROOT / "docs" / "tuning.md").read_text().count("docs/examples/tune_bc.yaml") >= 1
