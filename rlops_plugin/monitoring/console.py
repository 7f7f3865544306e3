"""Readable console output of a monitoring session (rich): one table per window, trigger events."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rlops_plugin.monitoring.results import DRIFT, OK
from rlops_plugin.monitoring.summary import WindowSummary

STATUS_STYLE = {DRIFT: "bold red", OK: "green", "insufficient": "yellow", "error": "magenta"}


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
                note = column.message if self.columns else ("" if result.status in (DRIFT, OK) else result.message)
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
    label = {DRIFT: "yes", OK: "no"}.get(status, status)
    return f"[{style}]{label}[/{style}]" if style else label


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"
