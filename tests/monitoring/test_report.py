"""The Evidently HTML report of a window: it opens, names the drifted columns, agrees with the monitor."""

from html.parser import HTMLParser

import pytest

from rlops_plugin.monitoring.config import MonitorConfig, MonitorError
from rlops_plugin.monitoring.drift import DriftMonitor
from rlops_plugin.monitoring.report import report_verdicts
from tests.monitoring.conftest import synthetic_frame


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_names_drifted_columns_and_matches_the_monitor(reference_frame, tmp_path):
    monitor = DriftMonitor(reference_frame, MonitorConfig())
    window = synthetic_frame(1000, seed=21, obs_shift=0.6, reward_scale=0.9)
    summary = monitor.evaluate(window, 2)
    assert set(summary.drifted_columns()) >= {"obs_1", "reward"}
    path = tmp_path / "window-2.html"
    snapshot = monitor.report(window, summary, path)
    parser = _Collect()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert "html" in parser.tags and "script" in parser.tags
    text = "".join(parser.text)
    for column in summary.drifted_columns():
        assert f"Value Drift for column {column}" in text or f"column={column}" in text, column
    tested = {c.column: c.drifted for r in summary.signals.values() for c in r.columns if c.status in ("drift", "ok")}
    assert report_verdicts(snapshot) == tested


def test_a_window_with_nothing_tested_has_no_report(reference_frame, tmp_path):
    monitor = DriftMonitor(reference_frame, MonitorConfig(monitors=("rewards",)))
    window = synthetic_frame(1000, seed=3).assign(reward=float("nan"))
    summary = monitor.evaluate(window)
    with pytest.raises(MonitorError, match="no column was tested"):
        monitor.report(window, summary, tmp_path / "r.html")
