"""What a person reads: the Evidently HTML report of a window, and the console output of a session.

**The HTML report**: one ``ValueDrift`` per tested column, same test, same threshold. Built on
demand (or for drifting windows): a full ``Report`` costs 0.2-0.5 s, two orders of magnitude more
than the per-window decision, which calls the same Evidently stat tests directly. Because the
metrics use the monitor's stat test and calibrated threshold per column, and the same reference
sample, the report's verdicts equal the monitor's.

**The console** (rich): one table per window (signal, statistic, score, threshold, drifted?), then
its trigger events.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from rlops_plugin.monitoring.config import MonitorError
from rlops_plugin.monitoring.results import TESTED, ColumnKind, Status, WindowSummary


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
            (categorical if column.kind == ColumnKind.CATEGORICAL else numerical).append(column.column)
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


# --- Console output -------------------------------------------------------------------------------

STATUS_STYLE = {Status.DRIFT: "bold red", Status.OK: "green", Status.INSUFFICIENT: "yellow", Status.ERROR: "magenta"}


class ConsolePrinter:
    """Prints each window: signal, statistic, score, threshold, drifted?; then its trigger events."""

    def __init__(self, console: Any = None, columns: bool = False) -> None:
        from rich.console import Console

        self.console = console or Console()
        self.columns = columns

    def line(self, text: str) -> None:
        """Print one line of markup."""
        self.console.print(text, soft_wrap=True, highlight=False)

    def window(self, summary: WindowSummary) -> None:
        """The window's header, its table and its trigger events."""
        from rich.table import Table

        style = STATUS_STYLE.get(summary.status, "")
        when = (dt.datetime.fromtimestamp(summary.end_ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                if summary.end_ts else "-")
        reward = f"reward mean {summary.reward_mean:.4g} (n={summary.reward_n})" if summary.reward_mean is not None \
            else "no rewards yet"
        self.line(f"[bold]window {summary.index}[/bold]  seq {summary.start_seq}-{summary.end_seq}  {when}  "
                  f"{summary.n_decisions} decisions, {summary.n_episodes} episodes, {reward}  "
                  f"[{style}]{summary.status.upper()}[/{style}]")
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name in ("signal", "column", "statistic", "score", "threshold", "drifted?"):
            table.add_column(name, no_wrap=True, justify="right" if name in ("score", "threshold") else "left")
        table.add_column("note", overflow="fold")
        for name, result in summary.signals.items():
            worst = result.worst()
            rows = result.columns if self.columns else [worst] if worst else []
            if not rows:
                table.add_row(name, "-", "-", "-", "-", _status(result.status), result.message)
                continue
            tested = result.tested()
            for column in rows:
                several = not self.columns and len(tested) > 1
                share = f" {len(result.drifted_columns())}/{len(tested)}" if several else ""
                note = column.message if self.columns else ("" if result.status in TESTED else result.message)
                table.add_row(name, column.column, column.stattest, _fmt(column.score),
                              _fmt(column.threshold) + ("*" if column.calibrated else ""),
                              _status(column.status if self.columns else result.status) + share, note)
        self.console.print(table)
        if summary.report_path:
            self.line(f"  report: {summary.report_path}")
        for event in summary.triggers:
            self.trigger(event)

    def trigger(self, event: Any) -> None:
        """One trigger event with what the hooks and actions returned."""
        evidence = ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in event.evidence.items()
                             if k != "scores")
        self.line(f"  [bold red]TRIGGER[/bold red] {event.rule} on window {event.window} "
                  f"({event.policy_version}): {evidence}")
        if event.results or event.actions:
            self.line(f"    hooks -> {event.results}  actions -> {event.actions}")


def _status(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    label = {Status.DRIFT: "yes", Status.OK: "no"}.get(status, status)
    return f"[{style}]{label}[/{style}]" if style else label


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"
