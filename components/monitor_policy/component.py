"""Evaluate drift windows of a deployed policy with Evidently and say whether a retraining trigger fired."""

from typing import NamedTuple

from kfp import dsl

from rlops_plugin.pipelines.images import component_image


# The defaults are literals because KFP ships this function's source alone; they equal
# rlops_plugin.defaults.MONITOR_REFERENCE and MONITOR_WINDOW (tests/pipelines/test_components.py checks).
@dsl.component(base_image=component_image(), install_kfp_package=False)
def monitor_policy(model: str, store: str, report: dsl.Output[dsl.HTML], metrics: dsl.Output[dsl.Metrics],
                   reference: str = "rollouts:20000", window: int = 1000, triggers_json: str = "",
                   tracking_uri: str = "") -> NamedTuple("Outputs", [("triggered", bool), ("events_json", str)]):
    """Windows are logged to an MLflow monitoring run; ``report`` is the last drifting window's report."""
    import json
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from rlops_plugin.pipelines import steps

    out = steps.monitor_policy(model, store, reference, window, triggers_json, str(Path(report.path).parent / "w"),
                               tracking_uri)
    pages = sorted(Path(out["report_dir"]).glob("*.html")) if out["report_dir"] else []
    if pages:
        shutil.copy(pages[-1], report.path)
    else:
        Path(report.path).write_text("<html><body>No drifting window: no Evidently report.</body></html>")
    metrics.log_metric("windows", float(out["windows"]))
    metrics.log_metric("triggers", float(len(out["events"])))
    return namedtuple("Outputs", ["triggered", "events_json"])(bool(out["triggered"]), json.dumps(out["events"]))
