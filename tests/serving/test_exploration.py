import numpy as np
import pytest

from rlops_plugin.errors import ConfigError, InvalidObservationError
from rlops_plugin.serving.exploration import (
    ExplorationConfig,
    executed_distribution,
    executed_distribution_row,
    sample_row,
)

LOGITS = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])


def test_modes():
    greedy = executed_distribution(LOGITS, ExplorationConfig("greedy"))
    np.testing.assert_array_equal(greedy, [[1, 0, 0], [0, 0, 1]])
    eps = executed_distribution(LOGITS, ExplorationConfig("epsilon", epsilon=0.3))
    np.testing.assert_allclose(eps[0], [0.7 + 0.1, 0.1, 0.1])
    soft = executed_distribution(LOGITS, ExplorationConfig("softmax"))
    np.testing.assert_allclose(soft[0], np.exp([2, 1, 0]) / np.exp([2, 1, 0]).sum())
    cold = executed_distribution(LOGITS, ExplorationConfig("softmax", temperature=0.1))
    assert cold[0, 0] > 0.9999


def test_mask_removes_actions_in_every_mode():
    mask = np.array([[False, True, True], [True, True, False]])
    for cfg in (ExplorationConfig("greedy"), ExplorationConfig("epsilon", epsilon=0.5), ExplorationConfig()):
        p = executed_distribution(LOGITS, cfg, mask)
        assert (p[~mask] == 0).all() and np.allclose(p.sum(axis=1), 1)
    eps = executed_distribution(LOGITS, ExplorationConfig("epsilon", epsilon=0.5), mask)
    np.testing.assert_allclose(eps[0], [0, 0.75, 0.25])
    with pytest.raises(InvalidObservationError, match=r"instances\[1\].mask forbids every action"):
        executed_distribution(LOGITS, ExplorationConfig(), np.array([[True, False, False], [False, False, False]]))


@pytest.mark.parametrize("cfg", [ExplorationConfig("greedy"), ExplorationConfig("epsilon", epsilon=0.2),
                                 ExplorationConfig("softmax", temperature=0.7)])
@pytest.mark.parametrize("mask", [None, [True, False, True]])
def test_single_row_path_matches_vector_path(cfg, mask):
    vec = executed_distribution(LOGITS[:1], cfg, None if mask is None else np.array([mask]))[0]
    row = executed_distribution_row(LOGITS[0].tolist(), cfg, mask)
    np.testing.assert_allclose(row, vec, rtol=1e-12)


def test_sample_row_follows_probabilities():
    rng = np.random.default_rng(0)
    draws = [sample_row([0.2, 0.0, 0.8], rng.random()) for _ in range(20000)]
    assert 1 not in draws and abs(np.mean(np.array(draws) == 2) - 0.8) < 0.01
    assert sample_row([0.0, 1.0], 0.999999) == 1


def test_guards():
    with pytest.raises(ConfigError, match="epsilon must lie in"):
        ExplorationConfig("epsilon", epsilon=0.6)
    assert ExplorationConfig("epsilon", epsilon=0.6, max_epsilon=0.8).epsilon == 0.6
    with pytest.raises(ConfigError, match="mode 'boltzmann'"):
        ExplorationConfig("boltzmann")
    with pytest.raises(ConfigError, match="temperature"):
        ExplorationConfig(temperature=0)
