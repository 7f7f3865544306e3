"""The Evidently HTML report of a window: one ``ValueDrift`` per tested column, same test, same threshold.

Built on demand (or for drifting windows): a full ``Report`` costs 0.2-0.5 s, two orders of
magnitude more than the per-window decision, which calls the same Evidently stat tests directly.
Because the metrics use the monitor's stat test and calibrated threshold per column, and the same
reference sample, the report's verdicts equal the monitor's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rlops_plugin.monitoring.errors import MonitorError
from rlops_plugin.monitoring.results import TESTED
from rlops_plugin.monitoring.stattests import CATEGORICAL
from rlops_plugin.monitoring.summary import WindowSummary


def build_report(reference: pd.DataFrame, current: pd.DataFrame, summary: WindowSummary,
                 path: str | Path | None = None) -> Any:
    """Run an Evidently ``Report`` over the window's tested columns; save it as HTML when ``path`` is given."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    metrics, numerical, categorical = [], [], []
    for result in summary.signals.values():
        for column in result.columns:
            if column.status not in TESTED or column.column in numerical + categorical:
                continue
            (categorical if column.kind == CATEGORICAL else numerical).append(column.column)
            metrics.append(ValueDrift(column=column.column, method=column.stattest, threshold=column.threshold))
    if not metrics:
        raise MonitorError(f"window {summary.index}: no column was tested ({summary.message or summary.status}); "
                           "there is nothing to report")
    columns = numerical + categorical
    definition = DataDefinition(numerical_columns=numerical or None, categorical_columns=categorical or None)
    cur = _clean(current, numerical, categorical)
    ref = _clean(reference, numerical, categorical)
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(cur[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(ref[columns], data_definition=definition))
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(path))
    return snapshot


def report_verdicts(snapshot: Any) -> dict[str, bool]:
    """``column -> drifted`` as the Evidently report's tests decided it."""
    prefix = "Value Drift for column "
    return {test["name"][len(prefix):]: test["status"] == "FAIL"
            for test in snapshot.dict().get("tests", []) if str(test.get("name", "")).startswith(prefix)}


def _clean(frame: pd.DataFrame, numerical: list[str], categorical: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for column in numerical:
        values = pd.to_numeric(frame[column], errors="coerce").astype(float) if column in frame else float("nan")
        out[column] = values
    for column in categorical:
        out[column] = frame[column] if column in frame else None
    return out.reset_index(drop=True)
