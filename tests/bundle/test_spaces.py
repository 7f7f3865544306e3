import gymnasium as gym
import numpy as np
import pytest

from rlops_plugin.bundle.spaces import check_same_space, flat_dim, space_from_json, space_to_json
from rlops_plugin.errors import ConfigError, SpaceMismatchError


@pytest.mark.parametrize("space", [
    gym.spaces.Discrete(3),
    gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
    gym.spaces.Box(np.array([-np.inf, 0.0]), np.array([np.inf, 5.0]), dtype=np.float64),
])
def test_round_trip(space):
    rebuilt = space_from_json(space_to_json(space))
    assert space_to_json(rebuilt) == space_to_json(space)
    assert rebuilt.shape == space.shape


def test_unsupported_space_is_refused():
    with pytest.raises(ConfigError, match="not supported"):
        space_to_json(gym.spaces.MultiBinary(3))
    with pytest.raises(ConfigError, match="not supported"):
        space_from_json({"type": "Tuple"})
    with pytest.raises(ConfigError, match="positive integer"):
        space_from_json({"type": "Discrete", "n": 0})


def test_flat_dim_and_mismatch():
    assert flat_dim(gym.spaces.Box(0, 1, shape=(2, 3))) == 6
    with pytest.raises(SpaceMismatchError, match="actions differ"):
        check_same_space(gym.spaces.Discrete(2), gym.spaces.Discrete(3), "actions")
