"""The strict loader shared by every from_dict: unknown, missing and mistyped fields are named."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from rlops_plugin.bundle.env_spec import EnvSpec
from rlops_plugin.bundle.reward_spec import RewardSpec
from rlops_plugin.bundle.strict import check_keys, load_dataclass, type_problem
from rlops_plugin.errors import ConfigError, InvalidObservationError


@dataclass(frozen=True)
class Example:
    name: str
    count: int = 0
    rate: float | None = None
    tags: tuple[str, ...] = ()
    ranges: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: Any = None


def test_valid_mapping_builds_the_dataclass():
    built = load_dataclass(Example, {"name": "a", "count": 2, "rate": 1, "tags": ["x"], "ranges": {"l": {"low": 0}},
                                     "extra": [1, {"k": None}]}, "example")
    assert built == Example("a", 2, 1, ["x"], {"l": {"low": 0}}, [1, {"k": None}])


@pytest.mark.parametrize("data, message", [
    ([1], r"example: must be a JSON object, got list"),
    ({"name": "a", "cuont": 1}, r"example: unknown fields \['cuont'\]; known: \['count', 'extra', 'name'"),
    ({"count": 1}, r"example\.name: required"),
    ({"name": 1}, r"example\.name: expected str, got int"),
    ({"name": "a", "count": True}, r"example\.count: expected int, got bool"),
    ({"name": "a", "count": 1.5}, r"example\.count: expected int, got float"),
    ({"name": "a", "rate": "0.5"}, r"example\.rate: expected float or null, got str"),
    ({"name": "a", "tags": "xy"}, r"example\.tags: expected list, got str"),
    ({"name": "a", "tags": ["x", 2]}, r"example\.tags\[1\]: expected str, got int"),
    ({"name": "a", "ranges": {"l": []}}, r"example\.ranges\['l'\]: expected object, got list"),
    ({"name": "a", "ranges": {"l": {"low": "0"}}}, r"example\.ranges\['l'\]\['low'\]: expected float, got str"),
])
def test_errors_name_the_field(data, message):
    with pytest.raises(InvalidObservationError, match=message):
        load_dataclass(Example, data, "example", InvalidObservationError)


def test_check_keys_noun_and_required():
    assert check_keys({"a": 1}, ("a", "b"), "cfg") == {"a": 1}
    with pytest.raises(ConfigError, match=r"cfg: unknown keys \['c'\]; known: \['a', 'b'\]"):
        check_keys({"c": 1}, ("a", "b"), "cfg", noun="keys")
    with pytest.raises(ConfigError, match=r"cfg\.b: required"):
        check_keys({"a": 1}, ("a", "b"), "cfg", required=("b",))
    assert type_problem((1, "a"), tuple[int, str], "t") is None
    assert type_problem([1], tuple[int, str], "t") == "t: expected list of 2, got list"


def test_specs_load_strictly():
    spec = EnvSpec.from_dict({**EnvSpec(id="CartPole-v1").to_dict(), "wrappers": None})
    assert spec.wrappers == ()
    with pytest.raises(ConfigError, match=r"env_spec\.max_episode_steps: expected int or null, got str"):
        EnvSpec.from_dict({"id": "CartPole-v1", "max_episode_steps": "500"})
    with pytest.raises(ConfigError, match=r"env_spec\.kwargs: expected object, got list"):
        EnvSpec.from_dict({"id": "CartPole-v1", "kwargs": []})
    stored = RewardSpec(ref="env").to_dict()
    assert RewardSpec.from_dict(stored) == RewardSpec(ref="env")
    with pytest.raises(ConfigError, match=r"reward_spec: unknown fields \['sorce_file'\]"):
        RewardSpec.from_dict({**stored, "sorce_file": "x.py"})
    with pytest.raises(ConfigError, match=r"reward_spec\.params: expected object, got list"):
        RewardSpec.from_dict({**stored, "params": [1]})


def test_python_callers_may_pass_numpy_scalars_and_paths():
    """A JSON number may come from numpy in Python code, a string as a Path; bools stay bools."""
    import dataclasses
    from pathlib import Path

    import numpy as np

    @dataclasses.dataclass
    class Settings:
        n: int = 1
        x: float = 0.0
        flag: bool = False
        where: str | None = None

    settings = load_dataclass(Settings, {"n": np.int64(5), "x": np.float32(0.5), "flag": np.bool_(True),
                                         "where": Path("s.db")}, "settings")
    assert settings.n == 5 and settings.flag
    for bad, message in (({"n": True}, "settings.n: expected int, got bool"),
                         ({"x": np.bool_(True)}, "settings.x: expected float, got numpy.bool"),
                         ({"flag": 1}, "settings.flag: expected bool, got int")):
        with pytest.raises(ConfigError, match=message):
            load_dataclass(Settings, bad, "settings")
