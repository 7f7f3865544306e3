"""Monitor configuration: validation, defaults and overrides."""

import pytest

from rlops_plugin.monitoring.config import DEFAULT_MONITORS, MonitorConfig, MonitorConfigError, SignalConfig


def test_defaults_cover_every_builtin_signal():
    config = MonitorConfig()
    assert config.window == 1000 and set(config.monitors) == set(DEFAULT_MONITORS)
    assert config.signal("observations").stattest == "jensenshannon"
    assert config.signal("returns").stattest == "ks" and config.signal("returns").min_samples == 30
    assert config.signal("not-configured") == SignalConfig()


def test_overrides_replace_test_and_threshold_per_signal():
    config = MonitorConfig().with_overrides(stattests={"observations": "psi"}, thresholds={"rewards": 0.3},
                                            window=500)
    assert config.window == 500
    assert config.signal("observations").stattest == "psi" and config.signal("observations").threshold is None
    assert config.signal("rewards").threshold == 0.3 and config.signal("actions").threshold == 0.05
    assert config.to_dict()["signals"]["observations"]["stattest"] == "psi"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"threshold": -1.0}, "threshold must be a finite number"),
    ({"min_samples": 1}, "min_samples must be an int >= 2"),
    ({"drift_share": 1.5}, r"drift_share must lie in \[0, 1\]"),
    ({"stattest": ""}, "stattest must be an Evidently stat-test name"),
])
def test_signal_config_errors_name_the_field(kwargs, match):
    with pytest.raises(MonitorConfigError, match=match):
        SignalConfig(**kwargs)


def test_unknown_keys_and_bad_monitor_config_are_refused():
    with pytest.raises(MonitorConfigError, match=r"unknown keys \['treshold'\]"):
        SignalConfig.from_dict({"treshold": 0.1})
    with pytest.raises(MonitorConfigError, match="window must be an int >= 2"):
        MonitorConfig(window=1)
    with pytest.raises(MonitorConfigError, match="false_alarm_rate"):
        MonitorConfig(false_alarm_rate=0.0)
    with pytest.raises(MonitorConfigError, match="name at least one monitor"):
        MonitorConfig(monitors=())


def test_signal_settings_are_passed_on_only_when_given():
    assert "settings" not in SignalConfig().to_dict()
    assert "settings" not in MonitorConfig().to_dict()["signals"]["rewards"]
    config = MonitorConfig(signals={"latency": {"threshold": 0.2, "settings": {"column": "latency_ms"}}})
    assert config.signal("latency").to_dict()["settings"] == {"column": "latency_ms"}
    assert config.to_dict()["signals"]["latency"]["settings"] == {"column": "latency_ms"}
    with pytest.raises(MonitorConfigError, match="setting names must be identifiers"):
        SignalConfig(settings={"bad key": 1})
    with pytest.raises(MonitorConfigError, match="write a mapping of setting names"):
        SignalConfig(settings=["column"])
