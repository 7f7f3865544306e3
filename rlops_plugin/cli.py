"""The ``rlops`` command line.

Heavy libraries (torch, mlflow, evidently) are imported inside each command, so
``rlops --help`` and ``rlops version`` answer at once.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from rlops_plugin import __version__
from rlops_plugin.errors import RLOpsError


class RLOpsGroup(click.Group):
    """Turns ``RLOpsError`` into a one-line message and exit code 2 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RLOpsError as exc:
            click.secho(f"error: {type(exc).__name__}: {exc}", fg="red", err=True)
            ctx.exit(2)


@click.group(cls=RLOpsGroup)
@click.version_option(__version__, prog_name="rlops")
def main() -> None:
    """rlops: the reinforcement-learning improvement loop on MLflow, Kubeflow and KServe."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@main.command()
def version() -> None:
    """Print the versions of rlops and of the stack it runs on."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    click.echo(f"rlops-plugin {__version__}")
    for dist in ("mlflow", "kfp", "kserve", "torch", "evidently", "pluggy", "gymnasium"):
        try:
            click.echo(f"{dist} {dist_version(dist)}")
        except PackageNotFoundError:
            click.echo(f"{dist} not installed")


@main.group()
def bundle() -> None:
    """Inspect policy bundles (policy + EnvSpec + RewardSpec)."""


@bundle.command("inspect")
@click.argument("model_uri")
@click.option("--json", "as_json", is_flag=True, help="Print the full summary as JSON.")
def bundle_inspect(model_uri: str, as_json: bool) -> None:
    """Print the three parts of MODEL_URI, their hashes and lineage."""
    from rlops_plugin.flavor import load_model_with_source

    loaded = load_model_with_source(model_uri)
    summary = loaded.bundle.summary()
    summary["source"] = {"model_uri": model_uri, "name": loaded.name, "version": loaded.version,
                         "alias": loaded.alias}
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    src = summary["source"]
    where = f"{src['name']} version {src['version']}" if src["version"] else src["model_uri"]
    console.print(f"[bold]Bundle[/bold] {where}  sha256 {summary['hashes']['bundle']}", soft_wrap=True)
    table = Table("part", "sha256", "what")
    policy = summary["policy"]
    env = summary["env_spec"]
    reward = summary["reward_spec"]
    table.add_row("policy", summary["hashes"]["policy"],
                  f"{policy['architecture']} {json.dumps(policy['config'])}; obs "
                  f"{policy['observation_space']['type']}{policy['observation_space'].get('shape', '')}, "
                  f"actions {json.dumps(policy['action_space'])}")
    table.add_row("env", summary["hashes"]["env"],
                  f"{env.get('id') or env.get('entry_point')} kwargs={json.dumps(env['kwargs'])} "
                  f"params={json.dumps(env['params'])} randomized={sorted(env['randomization'])}")
    table.add_row("reward", summary["hashes"]["reward"],
                  f"{reward['ref']} params={json.dumps(reward['params'])} source "
                  f"{reward['source_file']} ({reward['source_sha256'][:12]})")
    console.print(table)
    lineage = summary["lineage"] or {}
    if not lineage:
        console.print("[bold]Lineage[/bold] none (initial version)")
        return
    lineage_table = Table("lineage", "value")
    for key, value in sorted(lineage.items()):
        lineage_table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    console.print(lineage_table)


@main.command("plugins")
def plugins_cmd() -> None:
    """List loaded plugins and what they register."""
    from rlops_plugin import plugins

    click.echo("plugins: " + ", ".join(plugins.plugin_names()))
    for kind, reg in (("envs", plugins.envs()), ("rewards", plugins.rewards()),
                      ("architectures", plugins.architectures())):
        for entry in reg.entries():
            click.echo(f"  {kind:<14} {entry.name:<28} {entry.plugin}  {entry.description}")


@main.group()
def mlflow() -> None:
    """Run the embedded MLflow server."""


@mlflow.command("start")
@click.option("--root", default=".rlops/mlflow", show_default=True, help="Folder for mlflow.db and artifacts.")
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default: a free one).")
@click.option("--backend-store-uri", default=None, help="SQLAlchemy URI (default: sqlite under --root).")
def mlflow_start(root: str, port: int | None, backend_store_uri: str | None) -> None:
    """Start a real `mlflow server` on 127.0.0.1 and keep it running until Ctrl-C."""
    import time

    from rlops_plugin.local.mlflow_server import LocalMlflowServer

    server = LocalMlflowServer(root, port=port, backend_store_uri=backend_store_uri)
    server.start()
    click.echo(f"MLflow server at {server.url} (pid {server.process.pid if server.process else '?'}); "
               f"export MLFLOW_TRACKING_URI={server.url}")
    try:
        while server.process is not None and server.process.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("model_uri")
@click.option("--port", "http_port", type=int, default=8080, show_default=True, help="HTTP port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 only in a pod).")
@click.option("--name", "model_name", default="policy", show_default=True, help="KServe model name in URLs.")
@click.option("--store", default=None, help="Experience store: path, sqlite:///PATH or postgresql://...")
@click.option("--exploration", type=click.Choice(["greedy", "epsilon", "softmax"]), default="softmax",
              show_default=True)
@click.option("--epsilon", type=float, default=0.0, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--challenger", "challenger_uri", default=None, help="A challenger model URI.")
@click.option("--mode", "routing", type=click.Choice(["off", "shadow", "canary"]), default="off", show_default=True)
@click.option("--canary-fraction", type=float, default=0.0, show_default=True)
@click.pass_context
def serve(ctx: click.Context, model_uri: str, **options: Any) -> None:
    """Serve MODEL_URI with KServe (v1 and v2 REST) and log every decision to --store.

    Extra options are passed to the server as they are (for instance --max_body_bytes,
    --durability full, --seed); see `python -m rlops_plugin.serving --help`.
    """
    from rlops_plugin.serving.server import main as serve_main

    argv = ["--model_uri", model_uri]
    for key, value in options.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    serve_main(argv + list(ctx.args))


@main.command()
@click.option("--root", default=".rlops/quickstart", show_default=True, help="Folder for the local MLflow server.")
@click.option("--tracking-uri", default=None, help="Use this MLflow server instead of starting one.")
def quickstart(root: str, tracking_uri: str | None) -> None:
    """Log, register and reload a CartPole bundle on a local MLflow server (the flavor tour)."""
    from rlops_plugin.quickstart import run_quickstart

    run_quickstart(root, tracking_uri, echo=click.echo)


if __name__ == "__main__":
    sys.exit(main())
