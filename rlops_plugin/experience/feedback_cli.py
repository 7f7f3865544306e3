"""``rlops feedback``: bring feedback given outside the data plane (reviews of MLflow traces) into the store.

Attach to the main group with ``main.add_command(feedback)``; mlflow is imported inside the command.
"""

from __future__ import annotations

import json

import click

from rlops_plugin.errors import RLOpsError


@click.group("feedback")
def feedback() -> None:
    """Feedback from outside the serving API (reviewers' assessments of mirrored traces)."""


@feedback.command("sync")
@click.option("--store", envvar="RLOPS_STORE", required=True,
              help="Experience store: path, sqlite:///PATH or postgresql://... (env RLOPS_STORE).")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", required=True,
              help="MLflow server holding the mirrored traces (env MLFLOW_TRACKING_URI).")
@click.option("--experiment", default=None,
              help="Experiment of the traces [default: rlops-agent-<model> with --model, else rlops-agent-traces].")
@click.option("--model", default=None, help="Only traces of interactions served under this model name.")
@click.pass_context
def sync(ctx: click.Context, store: str, tracking_uri: str, experiment: str | None, model: str | None) -> None:
    """Store reviewers' assessments of mirrored traces as feedback events and print the counts as JSON.

    Idempotent: each assessment is stored once (key mlflow-assessment:<id>), so running it again adds nothing.
    """
    from rlops_plugin.experience.store import open_store
    from rlops_plugin.experience.traces import sync_assessments

    try:
        with open_store(store) as opened:
            counts = sync_assessments(opened, tracking_uri=tracking_uri, experiment=experiment, model=model)
    except RLOpsError as exc:
        click.secho(f"error: {type(exc).__name__}: {exc}", fg="red", err=True)
        ctx.exit(2)
    click.echo(json.dumps(counts, sort_keys=True))
