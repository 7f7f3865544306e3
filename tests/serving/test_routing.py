import numpy as np
import pytest

from rlops_plugin.errors import ConfigError
from rlops_plugin.serving.routing import RoutingConfig, challenger_rows


def test_off_and_shadow_never_route_to_the_challenger():
    rng = np.random.default_rng(0)
    assert not challenger_rows(RoutingConfig("off"), 100, None, rng).any()
    assert not challenger_rows(RoutingConfig("shadow", 0.5), 100, None, rng).any()


def test_canary_share_and_stickiness():
    rng = np.random.default_rng(0)
    cfg = RoutingConfig("canary", 0.25)
    assert abs(challenger_rows(cfg, 20000, None, rng).mean() - 0.25) < 0.02
    keys = [f"user-{i}" for i in range(4000)]
    first = challenger_rows(cfg, len(keys), keys, rng)
    again = challenger_rows(cfg, len(keys), keys, np.random.default_rng(99))
    assert (first == again).all() and abs(first.mean() - 0.25) < 0.03
    wider = challenger_rows(RoutingConfig("canary", 0.5), len(keys), keys, rng)
    assert (wider[first]).all()  # growing the canary keeps everyone already on the challenger


def test_bad_config():
    with pytest.raises(ConfigError, match="fraction"):
        RoutingConfig("canary", 1.5)
    with pytest.raises(ConfigError, match="routing mode 'ab'"):
        RoutingConfig("ab")
