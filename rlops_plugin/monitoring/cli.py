"""``rlops monitor``: drift monitoring of a deployed policy's decision log, with retraining triggers.

Attach to the main group with ``main.add_command(monitor)``. Heavy imports (mlflow, evidently,
torch) happen inside the command so ``rlops --help`` stays fast; the command turns its options into
a :class:`~rlops_plugin.monitoring.runner.MonitorOptions` and calls
:func:`rlops_plugin.monitoring.runner.run_monitor`.
"""

from __future__ import annotations

import json
from typing import Any

import click

from rlops_plugin.errors import RLOpsError
from rlops_plugin.monitoring.config import (
    AGENT_MONITORS,
    DEFAULT_MONITORS,
    DEFAULT_RULES,
    MonitorConfigError,
    ReportMode,
)

REFERENCE_HELP = ("rollouts[:N] (the policy's rollouts in its EnvSpec simulator, default 50000 decisions; an "
                  "agent: its task suite), tasks[:N] (an agent's sampled answers to its task suite, default 20 "
                  "windows), production[:N] or production:OFFSET:N (a window of the policy's own traffic, default "
                  "20 windows), or a .parquet/.csv file with the monitoring columns")


@click.command("monitor")
@click.option("--model", "model_ref", required=True,
              help="NAME@ALIAS, NAME/VERSION, models:/... (resolved through the MLflow registry) or a model dir.")
@click.option("--store", required=True, help="Experience store: path, sqlite:///PATH or postgresql://...")
@click.option("--reference", default="rollouts", show_default=True, help=REFERENCE_HELP)
@click.option("--window", type=int, default=1000, show_default=True,
              help="Decisions (agents: answers) per window.")
@click.option("--min-window", type=int, default=100, show_default=True,
              help="A window with fewer decisions or answers is 'insufficient data': no verdict, no trigger.")
@click.option("--once", is_flag=True, help="Evaluate the full windows logged so far, then exit (the default).")
@click.option("--every", default=None, metavar="DURATION", help="Poll for new decisions every DURATION (60s, 5m).")
@click.option("--served-name", default=None, help="Only decisions served under this KServe model name.")
@click.option("--all-versions", is_flag=True,
              help="Watch every policy version in the log (the endpoint), not only --model's: catches a swap.")
@click.option("--monitors", default=",".join(DEFAULT_MONITORS), show_default=True,
              help="Comma-separated registered monitors to run (the default means the policy kind's own: for an "
                   "agent " + ",".join(AGENT_MONITORS) + ").")
@click.option("--judge", default=None, metavar="NAME",
              help="Agents: a registered judge scoring each answer (adds the judge signal).")
@click.option("--stattest", multiple=True, metavar="SIGNAL=TEST", help="Evidently stat test of a signal.")
@click.option("--threshold", multiple=True, metavar="SIGNAL=VALUE", help="Threshold (floor) of a signal.")
@click.option("--no-calibration", is_flag=True, help="Use the thresholds as given, without calibration.")
@click.option("--false-alarm-rate", type=float, default=0.005, show_default=True,
              help="Calibration target: share of stationary windows allowed to alarm.")
@click.option("--trigger", "triggers", multiple=True, default=DEFAULT_RULES, show_default=True,
              metavar="RULE", help="drift:SIGNAL:K, reward-below:THRESHOLD[:CONFIDENCE[:reward|return]], "
                                   "schedule:DURATION (repeatable).")
@click.option("--on-trigger", "actions", multiple=True, metavar="ACTION[:ARG]",
              help="Trigger action, after the rlops_on_trigger hooks (dispatch actions such as submit-pipeline: "
                   "before them and before the audit event): log, jsonl:PATH, run-pipeline:PARAMS.json "
                   "(one local cycle, kfp.local), submit-pipeline:PARAMS.json (one run on Kubeflow Pipelines; "
                   "PARAMS.json: the pipeline's parameters plus host, namespace, experiment, pipeline, run_name, "
                   "pipeline_root, service_account, token_env, token_file, ui_host, timeout_s; env KFP_HOST, "
                   "KFP_NAMESPACE, KFP_EXPERIMENT, KFP_TOKEN, KF_PIPELINES_SA_TOKEN_PATH; the run id goes in "
                   "the trigger's audit event) (repeatable).")
@click.option("--max-triggers", type=int, default=None,
              help="Deliver at most this many trigger events in this session (1: one retraining per session).")
@click.option("--reports", type=click.Choice([mode.value for mode in ReportMode]), default=ReportMode.DRIFT.value,
              show_default=True,
              help="When to build the Evidently HTML report of a window.")
@click.option("--report-dir", default=None, help="Keep HTML reports in this folder too.")
@click.option("--experiment", default="rlops-monitoring", show_default=True, help="MLflow experiment.")
@click.option("--mlflow/--no-mlflow", "use_mlflow", default=True, show_default=True,
              help="Log a monitoring run to MLflow.")
@click.option("--columns", "show_columns", is_flag=True, help="Print every column, not one line per signal.")
@click.option("--json", "as_json", is_flag=True, help="Print each window summary as one JSON line instead.")
@click.option("--exit-code", is_flag=True, help="Exit with status 1 when a trigger fired.")
@click.option("--max-ticks", type=int, default=None, hidden=True)
@click.pass_context
def monitor(ctx: click.Context, **options: Any) -> None:
    """Watch one policy version's decisions for drift in observations, actions and rewards.

    For an agent, its answers: prompts, topics, tool calls, responses, refusals, guard vetoes, ratings,
    outcomes (and judge scores with --judge).

    Each window of --window decisions is compared with the reference using Evidently stat tests;
    drifting windows get an Evidently HTML report; everything is logged to an MLflow run tagged with
    the model version; trigger rules fire rlops_on_trigger hooks and --on-trigger actions.
    """
    try:
        fired = _run(**options)
    except RLOpsError as exc:
        click.secho(f"error: {type(exc).__name__}: {exc}", fg="red", err=True)
        ctx.exit(2)
    if options["exit_code"] and fired:
        ctx.exit(1)


def _run(model_ref: str, store: str, reference: str, window: int, min_window: int, once: bool, every: str | None,
         served_name: str | None, all_versions: bool, monitors: str, judge: str | None, stattest: tuple[str, ...],
         threshold: tuple[str, ...], no_calibration: bool, false_alarm_rate: float, triggers: tuple[str, ...],
         actions: tuple[str, ...], reports: str, report_dir: str | None, experiment: str, use_mlflow: bool,
         show_columns: bool, as_json: bool, exit_code: bool, max_ticks: int | None,
         max_triggers: int | None) -> int:
    import dataclasses

    from rlops_plugin.monitoring.config import MonitorConfig
    from rlops_plugin.monitoring.report import ConsolePrinter
    from rlops_plugin.monitoring.runner import MonitorOptions, run_monitor
    from rlops_plugin.monitoring.triggers import TriggerEngine, parse_duration, parse_rules

    if once and every:
        raise MonitorConfigError("--once and --every exclude each other")
    interval = parse_duration(every) if every else None
    names = tuple(n.strip() for n in monitors.split(",") if n.strip())
    thresholds = {k: _float(v, "--threshold") for k, v in _pairs(threshold, "--threshold").items()}
    config = MonitorConfig(window=window, monitors=names, false_alarm_rate=false_alarm_rate,
                           min_window_decisions=min_window).with_overrides(
        stattests=_pairs(stattest, "--stattest"), thresholds=thresholds)
    if no_calibration:
        config = dataclasses.replace(config, signals={k: dataclasses.replace(v, calibrate=False)
                                                      for k, v in config.signals.items()})
    TriggerEngine(parse_rules(triggers, config.possible_signals()), actions=actions,
                  max_events=max_triggers)  # fail before any work
    printer = ConsolePrinter(columns=show_columns)

    def show(summary: Any) -> None:
        if as_json:
            click.echo(json.dumps(summary.to_dict(), sort_keys=True))
        else:
            printer.window(summary)

    options = MonitorOptions(reference=reference, config=config, triggers=triggers, actions=actions,
                             all_versions=all_versions, served_name=served_name, reports=reports,
                             report_dir=report_dir, experiment=experiment, use_mlflow=use_mlflow, every_s=interval,
                             max_ticks=max_ticks, max_triggers=max_triggers, on_window=show, judge=judge,
                             echo=None if as_json else printer.line)
    outcome = run_monitor(model_ref, store, options)
    return len(outcome.events)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise MonitorConfigError(f"{option} {value!r}: write SIGNAL=VALUE")
        out[key.strip()] = item.strip()
    return out


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise MonitorConfigError(f"{what}: {text!r} is not a number") from None


if __name__ == "__main__":
    monitor()
