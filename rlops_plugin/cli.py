"""The ``rlops`` command line.

Heavy libraries (torch, mlflow, evidently) are imported inside each command, so
``rlops --help`` and ``rlops version`` answer at once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from rlops_plugin._version import __version__
from rlops_plugin.clitypes import KeyValue, json_or_text, number, number_range
from rlops_plugin.defaults import EVAL_EPISODES, EVAL_SEED, EXPERIMENT, JOIN_GRACE_S, JOIN_WINDOW_S
from rlops_plugin.errors import RLOpsError
from rlops_plugin.pipelines.run import PIPELINES  # names only: kfp loads when a pipeline runs


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
    agent = policy.get("agent")
    if agent is not None:  # an LLM agent: tools and system prompt; task environment; graders
        ref = agent.get("system_prompt_ref")
        prompt = (f"{ref['uri']} (sha256 {ref['sha256'][:12]})" if ref else
                  json.dumps(agent["system_prompt"])[:60] if agent.get("system_prompt") else "none")
        base = agent.get("base_model")
        table.add_row("policy", summary["hashes"]["policy"],
                      f"{policy['architecture']} agent"
                      + (f" (LoRA over {base['uri']}, policy {base['policy_sha256'][:12]})" if base else "")
                      + f"; tools {[t['function']['name'] for t in agent.get('tools') or []]}; "
                      f"system prompt {prompt}; tool calls {agent['tool_call_format']}; "
                      f"generation {json.dumps(agent.get('generation') or {})}; files {sorted(policy['files'])}")
        user = env.get("simulated_user")
        table.add_row("env", summary["hashes"]["env"],
                      f"task env {env['name']}: tools "
                      + ", ".join(f"{t['name']}={t['ref']} ({t['sha256'][:12]})" for t in env["tools"])
                      + f"; {len(env['tasks'])} tasks; simulated user {user['ref'] if user else 'none'}")
        table.add_row("reward", summary["hashes"]["reward"],
                      "graders " + ", ".join(f"{g['name']}={g.get('ref') or g.get('model_uri')} ({g['type']}, "
                                             f"weight {g['weight']})" for g in reward["graders"])
                      + f"; combine {reward['combine']}")
    else:
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
                      ("architectures", plugins.architectures()), ("trainers", plugins.trainers()),
                      ("monitors", plugins.monitors()), ("scenario suites", plugins.scenario_suites()),
                      ("gate checks", plugins.gate_checks()), ("trigger actions", plugins.trigger_actions()),
                      ("policy kinds", plugins.policy_kinds()), ("judges", plugins.judges())):
        for entry in reg.entries():
            click.echo(f"  {kind:<16} {entry.name:<28} {entry.plugin}  {entry.description}")


@main.group()
def mlflow() -> None:
    """Run the embedded MLflow server."""


@mlflow.command("start")
@click.option("--root", default=".rlops/mlflow", show_default=True, help="Folder for mlflow.db and artifacts.")
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default: a free one).")
@click.option("--backend-store-uri", default=None, help="SQLAlchemy URI (default: sqlite under --root).")
def mlflow_start(root: str, port: int | None, backend_store_uri: str | None) -> None:
    """Start a real `mlflow server` on 127.0.0.1 and keep it running until Ctrl-C or SIGTERM (which stop it too)."""
    import signal
    import time

    from rlops_plugin.local.mlflow_server import LocalMlflowServer

    def stop_on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM/SIGHUP would otherwise end this process and orphan the server

    server = LocalMlflowServer(root, port=port, backend_store_uri=backend_store_uri)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_on_signal)
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
@click.option("--store", envvar="RLOPS_STORE", required=True, help="Experience store (env RLOPS_STORE).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface (0.0.0.0 only in a pod).")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--durability", type=click.Choice(["normal", "full"]), default="normal", show_default=True)
def collect(store: str, host: str, port: int, durability: str) -> None:
    """Receive feedback and KServe logger CloudEvents into the experience store (no model)."""
    from rlops_plugin.serving.collector import run_collector

    run_collector(store, host, port, durability)


@main.group()
def dataset() -> None:
    """Build training datasets from the decision log."""


@dataset.command("build")
@click.option("--store", required=True, help="Experience store: path, sqlite:///PATH or postgresql://...")
@click.option("--model", "model_name", default="policy", show_default=True, help="Served model name in the log.")
@click.option("--bundle", "bundle_uri", required=True,
              help="Model URI whose EnvSpec/RewardSpec define the data (e.g. models:/NAME@champion).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output dataset directory.")
@click.option("--kind", default="transitions", show_default=True,
              help="A dataset of the bundle's policy kind (vector: transitions, preferences; agent: preferences).")
@click.option("--policy-version", "policy_versions", multiple=True, help="Only decisions of these versions.")
@click.option("--window", "window_s", type=float, default=JOIN_WINDOW_S, show_default=True,
              help="Join window in seconds; later feedback is late.")
@click.option("--grace", "grace_s", type=float, default=JOIN_GRACE_S, show_default=True,
              help="Seconds unknown-id feedback waits before it is orphaned.")
@click.option("--judge", default=None, help="Registered judge that labels unreviewed agent answers (rlops plugins).")
@click.option("--judge-min-agreement", type=float, default=None,
              help="Agreement with the log's human pairs the judge needs first (default 0.8).")
def dataset_build(store: str, model_name: str, bundle_uri: str, out: str, kind: str, policy_versions: tuple[str, ...],
                  window_s: float, grace_s: float, judge: str | None, judge_min_agreement: float | None) -> None:
    """Extract transitions, preference pairs or an agent's training signal; write a versioned Parquet dataset."""
    from rlops_plugin.lifecycle import build_dataset

    data = build_dataset(store, bundle_uri, kind=kind, served_model=model_name,
                         policy_versions=list(policy_versions) or None, window_s=window_s, grace_s=grace_s,
                         judge=judge, judge_min_agreement=judge_min_agreement)
    path = data.save(out)
    m = data.manifest
    if m.get("policy_kind") == "agent":
        click.echo(f"{kind}: {len(data)} rows from {m['reviewed']} reviewed of {m['answers']} answers -> {path}")
        click.echo(f"trainable {json.dumps(m['signals'])}; quarantined {json.dumps(m['quarantined'])}")
    else:
        click.echo(f"{kind}: {len(data)} rows from {m['decisions']} decisions -> {path}")
    click.echo(f"digest {data.digest}; excluded {json.dumps(m['excluded'])}; join {json.dumps(m['join'])}")


@main.command("calibrate")
@click.option("--dataset", "dataset_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Transitions dataset (rlops dataset build); its rows keep the log's order.")
@click.option("--bundle", "bundle_uri", required=True,
              help="Model URI whose EnvSpec declares the calibration parameters (e.g. models:/NAME@champion).")
@click.option("--recent", type=int, default=None, help="Fit only the newest N transitions (default: all).")
@click.option("--param", "params", multiple=True, type=KeyValue(number_range, "NAME=LOW:HIGH", "write NAME=LOW:HIGH"),
              help="Parameter and plausible range to fit instead of the EnvSpec's declaration (repeatable).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write the fit as JSON here.")
def calibrate_cmd(dataset_dir: str, bundle_uri: str, recent: int | None, params: tuple[tuple[str, Any], ...],
                  out: str | None) -> None:
    """Fit the simulator's physics to logged transitions (system identification); print the fit."""
    from rlops_plugin.lifecycle import calibrate

    fit = calibrate(dataset_dir, bundle_uri, recent=recent, params=dict(params) or None)
    text = json.dumps(fit.to_dict(), indent=2)
    if out:
        Path(out).write_text(text)
    click.echo(text if not out else f"{fit.summary()} -> {out}")
    click.echo(f"fine-tuning randomization: {json.dumps(fit.randomization())}")


@main.command("train")
@click.option("--trainer", required=True, help="Registered trainer (rlops trainers lists them).")
@click.option("--init", "init_uri", required=True, help="Warm start, e.g. models:/NAME@champion.")
@click.option("--dataset", "dataset_dir", default=None,
              help="Dataset directory or MLflow artifact URI (runs:/..., models:/..., mlflow-artifacts:/..., "
                   "s3://...); not for simulator trainers.")
@click.option("--set", "settings", multiple=True, type=KeyValue(), help="Trainer config values.")
@click.option("--register", "register_as", default=None, help="Register the result under this model name.")
@click.option("--allow-mismatch", is_flag=True, help="Train on data built under another env or reward hash.")
@click.option("--eval-episodes", type=int, default=EVAL_EPISODES, show_default=True)
@click.option("--experiment", default=EXPERIMENT, show_default=True)
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Train data-parallel in this many processes on this machine (re-runs this command under "
                   "torchrun; rank 0 logs and registers).")
@click.pass_context
def train_cmd(ctx: click.Context, trainer: str, init_uri: str, dataset_dir: str | None,
              settings: tuple[tuple[str, str], ...], register_as: str | None, allow_mismatch: bool,
              eval_episodes: int, experiment: str, nproc: int | None) -> None:
    """Update a policy from the deployed checkpoint and register it with its lineage.

    The last stdout line is ``metrics: name=value ...`` (every final finite metric; Katib's StdOut collector reads
    it). Under torchrun (``torchrun -m rlops_plugin.cli train ...``, or ``--nproc N``) only rank 0 prints.
    """
    from rlops_plugin.training import distributed
    from rlops_plugin.training.train import is_artifact_uri

    if dataset_dir is not None and not is_artifact_uri(dataset_dir) and not Path(dataset_dir).is_dir():
        raise click.BadParameter(f"{dataset_dir!r} is neither a directory nor an artifact URI", param_hint="--dataset")
    if nproc is not None:
        distributed.launch("rlops_plugin.cli", ["train", *_forwarded_args(ctx, drop={"nproc"})], nproc)
        return
    distributed.recorded(_train)(trainer, init_uri, dataset_dir, dict(settings), register_as, allow_mismatch,
                                 eval_episodes, experiment, distributed.is_main())


def _forwarded_args(ctx: click.Context, drop: set[str]) -> list[str]:
    """The command's options as given (defaults included), except ``drop``: what a re-run of it receives."""
    out: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in drop:
            continue
        value = ctx.params[param.name]
        flag = param.opts[0]
        if param.is_flag:
            out += [flag] if value else []
        elif param.multiple:
            for item in value:
                out += [flag, "=".join(map(str, item)) if isinstance(item, tuple) else str(item)]
        elif value is not None:
            out += [flag, str(value)]
    return out


def _train(trainer: str, init_uri: str, dataset_dir: str | None, config: dict[str, Any], register_as: str | None,
           allow_mismatch: bool, eval_episodes: int, experiment: str, main: bool) -> None:
    """The body of ``rlops train`` in one process (rank 0 prints; other ranks train quietly)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from rlops_plugin.lifecycle import train

    if trainer == "reward_model":
        from rlops_plugin.lifecycle import train_reward_model

        if dataset_dir is None:
            raise click.UsageError("--trainer reward_model needs --dataset (human preference pairs)")
        result, uri, version = train_reward_model(init_uri, dataset_dir, config, register_as=register_as,
                                                  allow_mismatch=allow_mismatch, experiment=experiment)
        agreement = {k: round(v, 3) for k, v in result.metrics.items() if k.startswith("eval/")}
        where = f"registered {register_as} version {version} ({uri})" if version else str(result.directory)
        click.echo(f"reward model: held-out agreement {json.dumps(agreement)}; {where}")
        click.echo(_metrics_line(result.metrics))
        return
    if not main:
        train(trainer, init_uri, dataset_dir, config, register_as=register_as, allow_mismatch=allow_mismatch,
              eval_episodes=eval_episodes, experiment=experiment)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn()) as bar:
        task = bar.add_task(trainer, total=None, info="")

        def progress(done: int, total: int, metrics: dict[str, float]) -> None:
            info = "  ".join(f"{k.split('/')[-1]}={v:.3g}" for k, v in list(metrics.items())[:3])
            bar.update(task, completed=done, total=total, info=info)

        outcome = train(trainer, init_uri, dataset_dir, config, register_as=register_as,
                        allow_mismatch=allow_mismatch, eval_episodes=eval_episodes, experiment=experiment,
                        progress=progress)
    m = outcome.metrics
    if "eval/return_mean" in m:
        click.echo(f"eval return {m['eval/init_return_mean']:.1f} -> {m['eval/return_mean']:.1f} "
                   f"(delta {m['eval/return_delta']:+.1f}, 95% CI {m['eval/return_delta_ci_low']:+.1f}.."
                   f"{m['eval/return_delta_ci_high']:+.1f}) over {eval_episodes} paired episodes")
    where = f"registered {outcome.registered_name} version {outcome.version}" if outcome.version else outcome.model_uri
    click.echo(f"{where}; run {outcome.run_id}; bundle {outcome.bundle.bundle_sha[:12]}")
    click.echo(_metrics_line(m))


def _metrics_line(metrics: dict[str, Any]) -> str:
    """``metrics: name=value ...`` of every finite numeric metric (the line Katib's StdOut collector parses)."""
    import math

    pairs = [f"{k}={float(v):.10g}" for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return "metrics: " + " ".join(pairs)


@main.command("evaluate")
@click.argument("model_uri")
@click.option("--episodes", type=int, default=EVAL_EPISODES, show_default=True)
@click.option("--seed", type=int, default=EVAL_SEED, show_default=True, help="First episode seed.")
@click.option("--scenarios", multiple=True, help="Scenario suite (registered name or JSON file); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def evaluate_cmd(model_uri: str, episodes: int, seed: int, scenarios: tuple[str, ...], as_json: bool) -> None:
    """Roll MODEL_URI out on fixed seeds and run scenario suites; print returns with 95% CIs."""
    from rlops_plugin.lifecycle import evaluate

    evaluation = evaluate(model_uri, episodes=episodes, seed=seed, scenarios=scenarios)
    report = evaluation.to_dict()
    summary = evaluation.rollouts
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{evaluation.policy_version}: return {summary['return_mean']:.1f} "
               f"[{summary['return_ci_low']:.1f}, {summary['return_ci_high']:.1f}] over {episodes} episodes, "
               f"length {summary['length_mean']:.1f}")
    for suite, results in report["scenarios"].items():
        for r in results:
            mark = "PASS" if r["passed"] else "FAIL"
            click.echo(f"  {mark} {suite}/{r['scenario']}: return {r['return_mean']:.1f} "
                       + ("; ".join(r["failures"]) if r["failures"] else ""))


@main.command("gate")
@click.argument("candidate_uri")
@click.option("--champion", "champion_uri", default=None, help="Champion model URI (default: none).")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="GatePolicy as JSON.")
@click.option("--scenarios", multiple=True, help="Scenario suites to require; repeatable.")
@click.option("--margin", type=float, default=None, help="Allowed relative regression vs the champion.")
@click.option("--episodes", type=int, default=None, help="Paired evaluation episodes.")
@click.option("--ope-store", default=None, help="Experience store: adds the off-policy check.")
@click.option("--record/--no-record", default=True, show_default=True,
              help="Log the verdict on the candidate's run, tag its model version, add a gate audit event.")
def gate_cmd(candidate_uri: str, champion_uri: str | None, policy_file: str | None, scenarios: tuple[str, ...],
             margin: float | None, episodes: int | None, ope_store: str | None, record: bool) -> None:
    """Decide whether CANDIDATE_URI may replace the champion; exit 1 when it may not."""
    from rlops_plugin.evaluation.gate import GatePolicy
    from rlops_plugin.flavor import load_model_with_source
    from rlops_plugin.lifecycle import gate

    data = json.loads(Path(policy_file).read_text()) if policy_file else {}
    if scenarios:
        data["scenarios"] = list(scenarios)
    if margin is not None:
        data["regression_margin"] = margin
    if episodes is not None:
        data["episodes"] = episodes
    if ope_store:
        data["ope_store"] = ope_store
        data.setdefault("checks", GatePolicy().checks + ["ope"])
    candidate = load_model_with_source(candidate_uri)
    champion = load_model_with_source(champion_uri) if champion_uri else None
    result = gate(candidate, champion, GatePolicy.from_dict(data), record=record)
    for check in result.checks:
        click.echo(f"  {'PASS' if check.passed else 'FAIL'} {check.name}: {check.reason}")
    click.secho(f"gate {'PASSED' if result.passed else 'FAILED'}: {result.candidate} vs {result.champion}",
                fg="green" if result.passed else "red")
    sys.exit(0 if result.passed else 1)


@main.command()
@click.argument("name")
@click.option("--deployment", required=True, help="Deployment serving NAME (local name or InferenceService).")
@click.option("--target", "target_uri", default="rlops-local", show_default=True,
              help="rlops-local[:/state-dir] or rlops-kserve[:/namespace].")
@click.option("--store", envvar="RLOPS_STORE", required=True, help="Experience store with the decision log.")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PromotionPolicy as JSON (steps, alpha, margins, max_duration_s, require_approval, ...).")
@click.option("--served-model", default=None, help="Model name in the decision log (default: all).")
@click.option("--max-polls", type=int, default=None, help="Stop after this many looks (default: until a verdict).")
def promote(name: str, deployment: str, target_uri: str, store: str, policy_file: str | None,
            served_model: str | None, max_polls: int | None) -> None:
    """Take NAME@challenger through shadow and canary steps to promotion or rollback."""
    from rlops_plugin.lifecycle import promote as promote_challenger

    data = json.loads(Path(policy_file).read_text()) if policy_file else {}

    def show(action: Any) -> None:
        if action.changed or action.test is not None:
            click.echo(f"[{action.state} {action.fraction:.0%}] {action.reason}")

    final, _ = promote_challenger(name, deployment, target_uri, store, data, served_model=served_model,
                                  max_polls=max_polls, on_action=show)
    click.secho(f"{name}: {final.state} — {final.reason}", fg="green" if final.state == "promoted" else "yellow")
    sys.exit(0 if final.state in ("promoted", "rolled_back") else 3)


@main.command()
@click.argument("name")
@click.option("--deployment", default=None, help="Also switch this deployment to the restored champion.")
@click.option("--target", "target_uri", default="rlops-local", show_default=True)
def rollback(name: str, deployment: str | None, target_uri: str) -> None:
    """Point NAME@champion back at NAME@previous (one command), and the deployment with it."""
    from rlops_plugin.lifecycle import rollback as rollback_champion

    before, restored = rollback_champion(name, deployment=deployment, target=target_uri)
    click.echo(f"{name}@champion: {before} -> {restored} (previous = {before})")


@main.command()
@click.argument("name")
@click.argument("version")
@click.option("--by", "actor", default=None, help="Who approves (default: RLOPS_ACTOR or the OS user).")
@click.option("--note", default="", help="Why.")
def approve(name: str, version: str, actor: str | None, note: str) -> None:
    """Approve NAME VERSION for full promotion (recorded with who and when)."""
    from rlops_plugin.lifecycle import approve as approve_version

    event = approve_version(name, version, actor, note)
    click.echo(f"{name} version {version} approved by {event.actor} at {event.details['rlops.approval.at']}")


class ExportOrVerify(click.Group):
    """``rlops audit NAME`` exports (as before); ``rlops audit verify NAME`` checks the hash chain."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands:
            args = ["export", *args]
        return super().resolve_command(ctx, args)


@main.group(cls=ExportOrVerify)
def audit() -> None:
    """The audit trail of a registered model: ``rlops audit NAME`` exports it, ``rlops audit verify NAME``
    checks its hash chain."""


@audit.command("verify")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The full verdict as JSON.")
def audit_verify(name: str, as_json: bool) -> None:
    """Verify NAME's audit trail as a hash chain; exit code 1 and the first broken link if it was tampered with."""
    from rlops_plugin.audit.chain import verify_chain

    report = verify_chain(name)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
    if not as_json:
        for note in report.notes:
            click.echo(f"note: {note}")
        if report.first_break:
            click.echo(f"first broken link: run {report.first_break['run_id']}")
    if not report.verified:
        sys.exit(1)


@audit.command("export")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["json", "html"]), default="json", show_default=True)
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
def audit_export(name: str, fmt: str, out: str | None) -> None:
    """Export the audit trail of registered model NAME (updates, gates, canaries, promotions, rollbacks)."""
    from rlops_plugin.audit.export import to_html, to_json

    text = to_json(name) if fmt == "json" else to_html(name, os.environ.get("MLFLOW_TRACKING_URI"))
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {out}")
    else:
        click.echo(text)


class IsoWhen(click.ParamType):
    """An ISO date or datetime option, as unix seconds (naive values are UTC); bad values name the option."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        from rlops_plugin.lifecycle.postmarket import parse_when

        try:
            return parse_when(value, param.opts[0] if param is not None else "value")
        except RLOpsError as exc:
            self.fail(str(exc).split(": ", 1)[-1], param, ctx)


@main.group()
def report() -> None:
    """Reports for reviewers and regulators, read from the audit trail, registry and monitoring runs."""


@report.command("post-market")
@click.argument("name")
@click.option("--since", required=True, type=IsoWhen(), help="Start of the period: 2026-12-01 or 2026-12-01T08:30Z.")
@click.option("--until", default=None, type=IsoWhen(), help="End of the period (default: now).")
@click.option("--store", default=None, help="Experience store: adds decisions and guard vetoes per version.")
@click.option("--format", "fmt", type=click.Choice(["json", "html"]), default="json", show_default=True)
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
def report_post_market(name: str, since: float, until: float | None, store: str | None, fmt: str,
                       out: str | None) -> None:
    """Post-market monitoring report of NAME: versions in service, windows, incidents, updates, approvals."""
    from rlops_plugin.lifecycle.postmarket import post_market_report, to_html, to_json

    result = post_market_report(name, since, until, store=store)
    text = to_json(result) if fmt == "json" else to_html(result, os.environ.get("MLFLOW_TRACKING_URI"))
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {out}")
    else:
        click.echo(text)


@main.group()
def manifests() -> None:
    """Kubernetes manifests (KServe ServingRuntime, InferenceService, collector, RBAC, TrainJob template)."""


@manifests.command("generate")
@click.option("--out", default="manifests/kserve", show_default=True, type=click.Path(file_okay=False))
@click.option("--trainer-out", default="manifests/trainer", show_default=True, type=click.Path(file_okay=False),
              help="Folder of the Kubeflow Trainer TrainJob template.")
@click.option("--namespace", default="rlops", show_default=True)
@click.option("--image", default=None, help="Container image (default rlops-plugin:<version>).")
def manifests_generate(out: str, trainer_out: str, namespace: str, image: str | None) -> None:
    """Write validated manifests for a cluster deployment (KServe, collector, RBAC; the TrainJob template)."""
    import yaml

    from rlops_plugin.deploy.manifests import DEFAULT_IMAGE, write_manifests
    from rlops_plugin.deploy.trainjob import write_trainer_manifests
    from rlops_plugin.deploy.validation import validate_manifest

    for path in [*write_manifests(out, namespace, image or DEFAULT_IMAGE),
                 *write_trainer_manifests(trainer_out, namespace, image or DEFAULT_IMAGE)]:
        for doc in yaml.safe_load_all(path.read_text()):
            validate_manifest(doc)
        click.echo(f"wrote {path}")


@main.group()
def pipeline() -> None:
    """Kubeflow pipelines: compile, run locally with kfp.local, submit to a cluster."""


PIPELINE_ARG = KeyValue(json_or_text, hint="JSON values; *_json parameters take the JSON text as is")


def _pipeline_arguments(model: str, store: str, deployment: str | None, trainer: str | None,
                        args: tuple[str | tuple[str, Any], ...]) -> dict[str, Any]:
    """The pipeline's arguments: the named options plus each ``--arg KEY=VALUE`` (no ``--trainer``: the
    pipeline's default, ``cql`` or ``dpo`` for agent_improvement)."""
    arguments: dict[str, Any] = {"model_name": model, "store": store}
    if trainer:
        arguments["trainer"] = trainer
    if deployment:
        arguments["deployment"] = deployment
    arguments.update(PIPELINE_ARG.convert(item, None, None) for item in args)
    return arguments


@pipeline.command("compile")
@click.option("--out", default="manifests/pipelines", show_default=True, type=click.Path(file_okay=False))
def pipeline_compile(out: str) -> None:
    """Compile every component and pipeline to YAML (generated files, kept fresh by a test)."""
    from rlops_plugin.pipelines.compile import compile_all

    for path in compile_all(out):
        click.echo(f"wrote {path}")


@pipeline.command("run")
@click.option("--local", "local_run", is_flag=True, required=True, help="Run with kfp.local (required here).")
@click.option("--model", "model", required=True, help="Registered model name (its @champion is retrained).")
@click.option("--store", envvar="RLOPS_STORE", required=True)
@click.option("--deployment", default=None, help="Local deployment to canary the challenger on.")
@click.option("--trainer", default=None, help="Trainer (default: the pipeline's, cql; dpo for agent_improvement).")
@click.option("--arg", "args", multiple=True, type=PIPELINE_ARG,
              help="Other pipeline parameters (JSON values; *_json ones take the JSON text as is).")
@click.option("--pipeline-root", default=".rlops/kfp", show_default=True)
@click.option("--pipeline", "pipeline_name", type=click.Choice(PIPELINES), default="continuous_improvement",
              show_default=True, help="monitor_and_improve: monitor first, retrain only when a trigger fires; "
                                      "agent_improvement: the cycle of an LLM agent.")
def pipeline_run(local_run: bool, model: str, store: str, deployment: str | None, trainer: str | None,
                 args: tuple[str, ...], pipeline_root: str, pipeline_name: str) -> None:
    """Run one pipeline run locally (kfp.local) against the local MLflow server and deployment."""
    from rlops_plugin.pipelines.run import run_local

    result = run_local(_pipeline_arguments(model, store, deployment, trainer, args), pipeline_root,
                       pipeline=pipeline_name)
    click.echo(f"pipeline finished in {result['wall_s']:.1f}s; outputs under {result['pipeline_root']}")


@pipeline.command("submit")
@click.option("--host", required=True, help="Kubeflow Pipelines API endpoint.")
@click.option("--model", "model", required=True)
@click.option("--store", envvar="RLOPS_STORE", required=True, help="Store URL reachable from the cluster.")
@click.option("--deployment", default=None)
@click.option("--trainer", default=None, help="Trainer (default: the pipeline's, cql; dpo for agent_improvement).")
@click.option("--arg", "args", multiple=True, type=PIPELINE_ARG)
@click.option("--experiment", default="rlops", show_default=True)
@click.option("--cron", default=None, help="Cron expression: create a recurring run (scheduled retraining).")
@click.option("--namespace", default=None)
@click.option("--service-account", default="rlops-pipeline", show_default=True)
@click.option("--pipeline", "pipeline_name", type=click.Choice(PIPELINES), default="continuous_improvement",
              show_default=True, help="monitor_and_improve: monitor first, retrain only when a trigger fires; "
                                      "agent_improvement: the cycle of an LLM agent.")
def pipeline_submit(host: str, model: str, store: str, deployment: str | None, trainer: str | None,
                    args: tuple[str, ...],
                    experiment: str, cron: str | None, namespace: str | None, service_account: str,
                    pipeline_name: str) -> None:
    """Upload and start the pipeline on a Kubeflow cluster (or schedule it with --cron)."""
    from rlops_plugin.pipelines.run import submit

    out = submit(host, _pipeline_arguments(model, store, deployment, trainer, args), experiment, cron=cron,
                 namespace=namespace, service_account=service_account, pipeline=pipeline_name)
    click.echo(json.dumps(out))


@main.command("trainers")
def trainers_cmd() -> None:
    """List trainers with their config fields, defaults and meaning."""
    import dataclasses

    from rlops_plugin import plugins
    from rlops_plugin.training.base import field_docs

    for entry in plugins.trainers().entries():
        cls = entry.value
        click.echo(f"{entry.name} ({cls.data_kind}): {entry.description}  [{entry.plugin}]")
        docs = field_docs(cls.Config)
        defaults = cls.Config()
        for f in dataclasses.fields(cls.Config):
            click.echo(f"    {f.name} = {getattr(defaults, f.name)!r}  {docs.get(f.name, '')}")


@main.command("tune")
@click.argument("space_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--init", "init_uri", required=True, help="Warm start of every trial, e.g. models:/NAME@champion.")
@click.option("--dataset", "dataset_dir", default=None, help="Dataset directory or artifact URI (not for simulator "
                                                             "trainers; with --katib an URI the pods can read).")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Trial budget (default: the space's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampler.")
@click.option("--sampler", type=click.Choice(["tpe", "random"]), default="tpe", show_default=True)
@click.option("--eval-episodes", type=click.IntRange(min=0), default=EVAL_EPISODES, show_default=True)
@click.option("--experiment", default=EXPERIMENT, show_default=True, help="MLflow experiment of the runs.")
@click.option("--register", "register_as", default=None, help="Register the best trial's model under this name.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write the result (best config) as JSON.")
@click.option("--katib", "katib_out", default=None, type=click.Path(dir_okay=False),
              help="Write a Katib Experiment YAML here instead of tuning on this machine.")
@click.option("--name", "katib_name", default=None, help="Katib Experiment name (default: rlops-tune-<trainer>).")
@click.option("--namespace", default="default", show_default=True, help="Katib Experiment namespace.")
@click.option("--image", default=None, help="Trial image (default: rlops-plugin:<version>).")
@click.option("--tracking-uri", default=None, help="MLflow URI the trial pods use (default: MLFLOW_TRACKING_URI).")
def tune_cmd(space_file: str, init_uri: str, dataset_dir: str | None, trials: int | None, seed: int, sampler: str,
             eval_episodes: int, experiment: str, register_as: str | None, out: str | None, katib_out: str | None,
             katib_name: str | None, namespace: str, image: str | None, tracking_uri: str | None) -> None:
    """Tune a trainer's config over SPACE_FILE (YAML/JSON): Optuna here, or a Katib Experiment with --katib.

    Locally every trial is an MLflow child run of one tuning run; the default config runs first, so the best
    is never worse than it. docs/tuning.md describes the space file.
    """
    from rlops_plugin.training.search_space import SearchSpace

    space = SearchSpace.load(space_file)
    if trials is not None:
        space.trials = trials
    if katib_out:
        from rlops_plugin.deploy import katib
        from rlops_plugin.deploy.manifests import DEFAULT_IMAGE, render

        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise click.UsageError("--katib needs --tracking-uri or MLFLOW_TRACKING_URI (reachable from the pods)")
        name = katib_name or f"rlops-tune-{space.trainer.replace('_', '-')}"
        obj = katib.experiment(space, name=name, init_uri=init_uri, tracking_uri=uri, namespace=namespace,
                               image=image or DEFAULT_IMAGE, dataset_uri=dataset_dir, sampler=sampler, seed=seed,
                               eval_episodes=eval_episodes, mlflow_experiment=experiment)
        Path(katib_out).write_text(render([obj]))
        click.echo(f"Katib Experiment {namespace}/{name} ({space.trials} trials, {sampler}) -> {katib_out}; "
                   f"kubectl apply -f {katib_out}")
        return
    from rlops_plugin.lifecycle import tune
    from rlops_plugin.training.train import is_artifact_uri

    if dataset_dir is not None and not is_artifact_uri(dataset_dir) and not Path(dataset_dir).is_dir():
        raise click.BadParameter(f"{dataset_dir!r} is neither a directory nor an artifact URI", param_hint="--dataset")

    result = tune(space, init_uri, dataset_dir, seed=seed, sampler=sampler, experiment=experiment,
                  register_as=register_as, eval_episodes=eval_episodes)
    click.echo(f"{space.objective.name}: default {result.default_value:.4g} -> best {result.best_value:.4g} "
               f"({len(result.trials)} trials, {result.pruned} pruned; tuning run {result.run_id})")
    click.echo(f"best config: {json.dumps(result.best_config, sort_keys=True)}")
    if result.version:
        click.echo(f"registered {result.registered_name} version {result.version}")
    if out:
        Path(out).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")


@main.command()
@click.option("--root", default=".rlops/quickstart", show_default=True, help="Folder for the local MLflow server.")
@click.option("--tracking-uri", default=None, help="Use this MLflow server instead of starting one.")
def quickstart(root: str, tracking_uri: str | None) -> None:
    """Log, register and reload a CartPole bundle on a local MLflow server (the flavor tour)."""
    from rlops_plugin.quickstart import run_quickstart

    run_quickstart(root, tracking_uri, echo=click.echo)


@main.group(invoke_without_command=True)
@click.option("--fast", is_flag=True, help="Small budgets (CI): the same loop in under 3 minutes.")
@click.option("--root", default=".rlops/demo", show_default=True,
              help="Demo folder (MLflow sqlite, decision log, pipeline root, report); cleared on each run.")
@click.option("--tracking-uri", default=None, help="Use this MLflow server instead of starting one.")
@click.option("--store", default=None, help="Experience store (path or postgresql://...; must be empty). "
                                            "Default: ROOT/experience.db.")
@click.option("--model-name", default="cartpole-demo", show_default=True, help="Registered model name.")
@click.option("--shift", "shift", default="masscart=2.5", show_default=True,
              help="How the world changes halfway: ATTR=VALUE[,ATTR=VALUE] of the environment.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the champion, the traffic and the fine-tuning (bench/demo_robustness.py varies it).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON at the end.")
@click.pass_context
def demo(ctx: click.Context, fast: bool, root: str, tracking_uri: str | None, store: str | None, model_name: str,
         shift: str, seed: int, as_json: bool) -> None:
    """Run the whole improvement loop locally and write an HTML report with an audit trail
    (``rlops demo agent``: the same loop for an LLM agent)."""
    if ctx.invoked_subcommand is not None:
        return
    from rlops_plugin.demo import DemoConfig, run_demo

    shift_item = KeyValue(number, "ATTR=VALUE", "write ATTR=VALUE")
    changes = dict(shift_item.convert(part, None, None) for part in filter(None, shift.split(",")))
    result = run_demo(root, DemoConfig.preset(fast, model_name=model_name, shift=changes, seed=seed), tracking_uri,
                      store)
    r = result.returns
    click.echo("")
    click.secho(f"outcome: {result.outcome} ({result.outcome_reason})", bold=True)
    if r:
        click.echo(f"champion v{result.initial_version} -> v{result.final_version}; mean return in the changed world "
                   f"{r['initial']['shifted']:.1f} -> {r['final']['shifted']:.1f}, nominal "
                   f"{r['initial']['nominal']:.1f} -> {r['final']['nominal']:.1f}")
    click.echo(f"wall time {result.wall_s:.0f} s; report: {result.report_path}")
    click.echo(f"audit trail: {result.audit_path}")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))


@demo.command("agent")
@click.option("--fast", is_flag=True, help="Small budgets (CI): the same loop in under 5 minutes.")
@click.option("--root", default=".rlops/demo-agent", show_default=True,
              help="Demo folder (MLflow sqlite, interaction log, pipeline root, report); cleared on each run.")
@click.option("--tracking-uri", default=None, help="Use this MLflow server instead of starting one.")
@click.option("--model-name", default="triage-demo", show_default=True, help="Registered model name.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the tiny model, the tickets and the reviews.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON at the end.")
def demo_agent(fast: bool, root: str, tracking_uri: str | None, model_name: str, seed: int, as_json: bool) -> None:
    """The loop for an LLM agent: a support-ticket triage agent served on KServe's OpenAI data plane, reviewed
    traffic, a re-organised support, drift, the agent_improvement pipeline, canary, report."""
    from rlops_plugin.demo.agent import run_agent_demo
    from rlops_plugin.demo.config import AgentDemoConfig

    result = run_agent_demo(root, AgentDemoConfig.preset(fast, model_name=model_name, seed=seed), tracking_uri)
    click.echo("")
    click.secho(f"outcome: {result.outcome} ({result.outcome_reason})", bold=True)
    if result.success:
        s = result.success
        click.echo(f"champion v{result.initial_version} -> v{result.final_version}; tickets routed right in the new "
                   f"world {s['initial']['new world']:.0%} -> {s['final']['new world']:.0%} (held-out phrasing "
                   f"{s['initial']['new world, held-out phrasing']:.0%} -> "
                   f"{s['final']['new world, held-out phrasing']:.0%}), old world {s['initial']['old world']:.0%} -> "
                   f"{s['final']['old world']:.0%}")
    click.echo(f"wall time {result.wall_s:.0f} s; report: {result.report_path}")
    click.echo(f"audit trail: {result.audit_path}; post-market report: {result.post_market_path}")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))


def _attach_subcommands() -> None:
    """Commands defined next to their feature (light imports; heavy ones happen inside the command)."""
    from rlops_plugin.experience.feedback_cli import feedback
    from rlops_plugin.monitoring.cli import monitor

    main.add_command(monitor)
    main.add_command(feedback)


_attach_subcommands()


if __name__ == "__main__":
    sys.exit(main())
