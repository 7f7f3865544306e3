"""``rlops demo``: the whole improvement loop on one machine, with the real servers and pipeline.

1. start an MLflow server (SQLite under the demo folder) or use the one given;
2. train a small initial champion in the simulator, register it, make it ``@champion``;
3. deploy it with ``rlops-local`` (a real ``kserve.ModelServer`` process with epsilon exploration);
4. send nominal traffic through the predictor, rewards arriving a few batches late;
5. change the world (a heavier cart by default) and keep the traffic coming;
6. monitor the decision log: drift is detected and the trigger runs the Kubeflow pipeline
   locally (dataset from the logs -> calibration of the simulator's physics on the newest
   logs -> CQL -> simulator fine-tuning around the fitted physics -> evaluation -> gate ->
   register -> shadow -> canary -> approval -> promote or roll back);
7. evaluate the initial and the final champion on the same seeds, in the old and the new world;
8. write the HTML report (plots, gate, canary, links) and the audit trail;
9. stop everything it started (always, also on errors and Ctrl-C).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlops_plugin.demo.config import DemoConfig
from rlops_plugin.demo.console import DemoConsole
from rlops_plugin.errors import ConfigError

DEPLOYMENT = "cartpole"
MARKER = ".rlops-demo"
OWNED = ("mlflow", "deployments", "kfp", "monitoring", "report", "experience.db", "experience.db-wal",
         "experience.db-shm", "pipeline.log", "pipeline-params.json")
QUIET = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
"""No "View run" lines per audit event while a demo runs."""
APPROVER = "demo-operator (automatic in the demo; in production a person runs `rlops approve`)"


@dataclass
class DemoResult:
    """What happened, for the report, the CLI's last lines and the tests."""

    model_name: str
    tracking_uri: str
    root: str
    store: str
    initial_version: str = ""
    challenger_version: str = ""
    final_version: str = ""
    outcome: str = "not run"
    """``promoted``, ``rolled_back``, ``gate_failed``, ``inconclusive`` or ``no_trigger``."""
    outcome_reason: str = ""
    triggered: bool = False
    trigger_window: int | None = None
    trigger_rule: str = ""
    gate_passed: bool | None = None
    returns: dict[str, dict[str, float]] = field(default_factory=dict)
    """``{"initial"|"final": {"nominal": mean, "shifted": mean}}`` on the same seeds."""
    event_kinds: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    pipeline_wall_s: float = 0.0
    report_path: str = ""
    audit_path: str = ""
    monitoring_run_id: str = ""
    failed_stage: str = ""
    """The stage that raised, when one did (the report then says which and why)."""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``result.json`` next to the report)."""
        return dict(self.__dict__)


def prepare_root(root: Path, owned: tuple[str, ...] = OWNED) -> None:
    """Create the demo folder, or clear what an earlier demo left there (only the demo's own files, ``owned``)."""
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise ConfigError(f"{root} is not empty and not a demo folder (no {MARKER}); pick another --root")
    if root.exists():
        for name in (*owned, MARKER):
            path = root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("created by `rlops demo`; the demo clears its own files here on the next run\n")


class DemoSession:
    """What every demo shares around its stages: quiet MLflow output, the MLflow server and the deployments it
    started, the last stage that stops them by PID (on success, errors and Ctrl-C alike; a failure names its
    stage), and ``report/result.json``."""

    def __init__(self, root: Path, result: Any, out: DemoConsole, title: str = "rlops demo",
                 server_label: str = "policy server", env_keys: tuple[str, ...] = ()) -> None:
        self.root, self.result, self.out, self.title, self.server_label = root, result, out, title, server_label
        self.env_keys = ("MLFLOW_TRACKING_URI", QUIET, *env_keys)
        self.server: Any = None
        self.deployments: Any = None
        self.started = time.perf_counter()

    def __enter__(self) -> DemoSession:
        self.saved_env = {key: os.environ.get(key) for key in self.env_keys}
        os.environ[QUIET] = "true"
        import mlflow  # noqa: F401  (importing mlflow configures its loggers; quieten them after that)

        self.mlflow_logger = logging.getLogger("mlflow")
        self.saved_level = self.mlflow_logger.level
        self.mlflow_logger.setLevel(logging.WARNING)  # the stages say what happened
        return self

    def start_mlflow(self, tracking_uri: str | None) -> str:
        """The given MLflow server, or a real one started on SQLite under ``ROOT/mlflow``; made the current one."""
        if tracking_uri is None:
            from rlops_plugin.local.mlflow_server import LocalMlflowServer

            self.server = LocalMlflowServer(self.root / "mlflow")
            tracking_uri = self.server.start()
            self.out.say(f"    MLflow UI: {tracking_uri}  (sqlite {self.root / 'mlflow' / 'mlflow.db'})")
        use_tracking(tracking_uri)
        return tracking_uri

    def elapsed(self) -> float:
        """Seconds since the session started."""
        return time.perf_counter() - self.started

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        result, out = self.result, self.out
        if exc is not None:
            result.failed_stage = out.failed_stage or "before the first stage"
            result.error = f"{type(exc).__name__}: {exc}"
            result.outcome, result.outcome_reason = "failed", f"{result.failed_stage} failed: {result.error}"
        with out.stage(9, "Stop everything the demo started") as info:
            stopped = []
            if self.deployments is not None:
                for dep in self.deployments.list():
                    self.deployments.delete(dep["name"])
                    stopped.append(f"{self.server_label} pid {dep['pid']}")
            if self.server is not None:
                stopped.append(f"MLflow server pid {self.server.process.pid if self.server.process else '?'}")
                self.server.stop()
            self.mlflow_logger.setLevel(self.saved_level)
            for key, value in self.saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            info["detail"] = ", ".join(stopped) or "nothing to stop"
        result.wall_s = self.elapsed()
        result.stage_seconds = dict(out.timings)
        if result.failed_stage:  # also on errors: say which stage failed and why, next to the report
            result.report_path = str(failure_report(self.root / "report", result, self.title))
        Path(result.report_path).with_name("result.json").write_text(json.dumps(result.to_dict(), indent=2,
                                                                                 default=str))


def run_demo(root: str | Path = ".rlops/demo", config: DemoConfig | None = None, tracking_uri: str | None = None,
             store: str | None = None, console: DemoConsole | None = None) -> DemoResult:
    """Run the loop end to end; returns the :class:`DemoResult` (also saved as ``report/result.json``)."""
    config = config or DemoConfig()
    out = console or DemoConsole()
    root = Path(root).resolve()
    check_shift(config)  # an unknown --shift attribute fails here, before anything starts
    prepare_root(root)
    result = DemoResult(config.model_name, tracking_uri or "", str(root), store or str(root / "experience.db"))
    monitoring = None
    with DemoSession(root, result, out) as session:
        with out.stage(1, "MLflow tracking server and model registry") as info:
            tracking_uri = session.start_mlflow(tracking_uri)
            name = fresh_name(config.model_name)
            store = store or str(root / "experience.db")
            _require_empty_store(store)
            info["detail"] = f"{tracking_uri}, model {name!r}, store {store}"
        result.model_name, result.tracking_uri, result.store = name, tracking_uri, store
        with out.stage(2, "Initial champion: PPO in the simulator, registered with env and reward") as info:
            result.initial_version = _initial_champion(name, config, out)
            info["detail"] = f"{name} version {result.initial_version} is @champion"
        with out.stage(3, "Deploy the champion (KServe ModelServer, epsilon-greedy exploration)") as info:
            from rlops_plugin.deploy.local import LocalDeployments
            from rlops_plugin.flavor import ModelRef
            from rlops_plugin.lifecycle import deploy

            session.deployments = LocalDeployments(root / "deployments")  # the last stage stops it, whatever happens
            state = deploy(f"rlops-local:{root / 'deployments'}", DEPLOYMENT, ModelRef.of(name, alias="champion").uri,
                           {"store": store, "exploration": "epsilon", "epsilon": config.epsilon, "seed": config.seed})
            info["detail"] = f"{state['url']} (pid {state['pid']}), decisions logged to {store}"
        spec = _env_spec(config)
        with out.stage(4, "Production traffic in the nominal world (delayed rewards)") as info:
            nominal = config.reference_decisions + config.nominal_decisions
            stats = _traffic(state["url"], spec, nominal, config, "nominal", out, seed=config.seed)
            info["detail"] = f"{stats.decisions} decisions, {stats.episodes} episodes, mean return " \
                             f"{stats.mean_return:.1f}"
        with out.stage(5, f"The world changes: {config.shift}") as info:
            shifted = spec.replace(params=config.shift)
            stats = _traffic(state["url"], shifted, config.shifted_decisions, config, "shifted", out,
                             seed=config.seed + 1_000_000)
            info["detail"] = f"{stats.decisions} decisions, {stats.episodes} episodes, mean return " \
                             f"{stats.mean_return:.1f}"
        with out.stage(6, "Monitor drift; the trigger runs the Kubeflow pipeline (kfp.local)") as info:
            params = _pipeline_params(name, store, root, config)
            monitoring = _monitor(name, store, root, config, params, out, result)
            result.monitoring_run_id = monitoring.run_id or ""
            read_outcome(name, result)
            info["detail"] = f"outcome: {result.outcome} ({result.outcome_reason})"
        with out.stage(7, "Evaluate the initial and the final champion on the same seeds") as info:
            result.final_version = _champion_version(name)
            result.returns = _compare(name, result.initial_version, result.final_version, spec, shifted, config)
            info["detail"] = ", ".join(f"{who} v{v}: nominal {r['nominal']:.1f}, changed world {r['shifted']:.1f}"
                                       for who, v, r in (("initial", result.initial_version,
                                                          result.returns["initial"]),
                                                         ("final", result.final_version, result.returns["final"])))
        with out.stage(8, "Report and audit trail") as info:
            from rlops_plugin.demo.report import write_report

            result.stage_seconds = dict(out.timings)
            result.wall_s = session.elapsed()
            paths = write_report(result, config, monitoring, root / "report")
            result.report_path, result.audit_path = str(paths["report"]), str(paths["audit"])
            info["detail"] = result.report_path
    return result


def failure_report(folder: Path, result: Any, title: str = "rlops demo") -> Path:
    """A plain page naming the failed stage, the error and the stages that completed."""
    import html

    folder.mkdir(parents=True, exist_ok=True)
    done = "".join(f"<li>{html.escape(k)}: {v:.1f} s</li>" for k, v in result.stage_seconds.items())
    page = folder / "index.html"
    page.write_text(f"<html><head><meta charset='utf-8'><title>{html.escape(title)}: failed</title></head><body>"
                    f"<h1>{html.escape(title)} failed at {html.escape(result.failed_stage)}</h1>"
                    f"<p><code>{html.escape(result.error)}</code></p><h2>Stages completed</h2><ul>{done}</ul>"
                    f"<p>Demo folder {html.escape(result.root)}; every process the demo started was stopped.</p>"
                    "</body></html>")
    return page


# ----- stages ----------------------------------------------------------------------------------
def use_tracking(uri: str) -> None:
    import mlflow

    os.environ["MLFLOW_TRACKING_URI"] = uri  # the pipeline's component subprocesses inherit it
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def fresh_name(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... when the registry already has it (a shared server)."""
    from mlflow.exceptions import MlflowException

    from rlops_plugin.flavor import registry

    client = registry.client()
    candidate, n = base, 1
    while True:
        try:
            client.get_registered_model(candidate)
        except MlflowException:
            return candidate
        n += 1
        candidate = f"{base}-{n}"


def _require_empty_store(url: str) -> None:
    from rlops_plugin.experience.store import open_store

    with open_store(url) as store:
        if store.stats()["decisions"]:
            raise ConfigError(f"experience store {url} already holds decisions; the demo measures drift against "
                              "its own traffic, so give it an empty store")


def _initial_champion(name: str, config: DemoConfig, out: DemoConsole) -> str:
    from rlops_plugin import PolicyBundle
    from rlops_plugin.lifecycle import crown, train

    bundle = PolicyBundle.create(_env_spec(config), "env", seed=config.seed)
    with out.progress() as bar:
        task = bar.add_task("PPO steps", total=config.champion_steps, info="")

        def progress(step: int, total: int, metrics: dict[str, float]) -> None:
            ret = metrics.get("train/episode_return")
            bar.update(task, completed=step, total=total, info=f"return {ret:.0f}" if ret else "")

        outcome = train("sim_finetune", bundle, None, {"total_steps": config.champion_steps, "lr": 1e-3,
                                                       "seed": config.seed},
                        register_as=name, alias=None, eval_episodes=config.eval_episodes, experiment="rlops-demo",
                        run_name="initial champion", progress=progress)
    version = str(outcome.version)
    crown(name, version, "initial champion: the first version, nothing to compare against",
          {k: v for k, v in outcome.metrics.items() if k.startswith("eval/")})
    out.say(f"    evaluation return {outcome.metrics.get('eval/return_mean', float('nan')):.1f} "
            f"over {config.eval_episodes} episodes (MLflow run {outcome.run_id})")
    return version


def _env_spec(config: DemoConfig) -> Any:
    from rlops_plugin import EnvSpec

    return EnvSpec(id=config.env_id, calibration=config.calibration)


def _traffic(url: str, spec: Any, decisions: int, config: DemoConfig, prefix: str, out: DemoConsole,
             seed: int) -> Any:
    from rlops_plugin.simulation.traffic import DecisionClient, simulate

    client = DecisionClient(url)
    try:
        with out.progress() as bar:
            task = bar.add_task(f"{prefix} decisions", total=decisions, info="")

            def on_step(stats: Any) -> None:
                if stats.steps % 10 == 0 or stats.decisions >= decisions:
                    info = f"{stats.episodes} episodes, return {stats.mean_return:.0f}" if stats.returns else ""
                    bar.update(task, completed=min(stats.decisions, decisions), info=info)

            return simulate(client, spec, decisions, n_envs=config.n_envs, seed=seed,
                            feedback_delay=config.feedback_delay, episode_prefix=prefix, on_step=on_step)
    finally:
        client.close()


def check_shift(config: DemoConfig) -> None:
    """Refuse a world change naming an attribute the env does not have (before anything starts)."""
    env = _env_spec(config).make()
    try:
        unknown = sorted(key for key in config.shift if not hasattr(env.unwrapped, key))
    finally:
        env.close()
    if unknown:
        raise ConfigError(f"shift: {config.env_id} has no attribute {', '.join(unknown)}")


def _pipeline_params(name: str, store: str, root: Path, config: DemoConfig) -> Path:
    """The ``run-pipeline`` trigger action's parameters (what a user writes for ``rlops monitor``)."""
    promotion = {**config.promotion, "require_approval": True}
    params = {
        "model_name": name, "store": store, "deployment": DEPLOYMENT,
        "target": f"rlops-local:{root / 'deployments'}", "trainer": "cql",
        "trainer_config_json": json.dumps({"steps": config.cql_steps}),
        "finetune_steps": config.finetune_steps,
        "finetune_config_json": json.dumps({**config.finetune_config, "seed": config.seed + 1}),
        "calibration_window": config.calibration_window,
        "eval_episodes": config.eval_episodes, "scenarios_json": json.dumps(["cartpole-safety"]),
        "gate_policy_json": json.dumps({"episodes": config.eval_episodes,
                                        "regression_margin": config.regression_margin,
                                        "scenarios": ["cartpole-safety"]}),
        "promotion_json": json.dumps(promotion), "simulate_traffic": True,
        "traffic_env_json": json.dumps({"params": config.shift}), "pipeline_root": str(root / "kfp"),
    }
    path = root / "pipeline-params.json"
    path.write_text(json.dumps(params, indent=2))
    return path


def _monitor(name: str, store: str, root: Path, config: DemoConfig, params: Path, out: DemoConsole,
             result: DemoResult) -> Any:
    return monitor_and_run(name, store, root, params, out, result, reference=f"production:{config.reference_decisions}",
                           window=config.window, trigger=config.trigger, unit="decisions",
                           pipeline="continuous-improvement pipeline")


def monitor_and_run(name: str, store: str, root: Path, params: Path, out: DemoConsole, result: Any, *,
                    reference: str, window: int, trigger: str, unit: str, pipeline: str) -> Any:
    """``rlops monitor`` over the log with a ``run-pipeline`` trigger action, while a stand-in operator approves
    what waits for approval; each window and the trigger are shown, the pipeline's output goes to its log."""
    from rlops_plugin.lifecycle import monitor
    from rlops_plugin.monitoring import Status

    def on_window(summary: Any) -> None:
        drifted = [n for n, r in summary.signals.items() if r.status == Status.DRIFT]
        mark = "[red]drift[/red] " + ",".join(drifted) if drifted else f"[green]{summary.status}[/green]"
        out.say(f"    window {summary.index}: {summary.n_decisions} {unit}, {mark}")

    def on_fire(event: Any) -> None:
        result.triggered, result.trigger_window = True, event.window
        result.trigger_rule = event.rule
        out.say(f"    [bold yellow]TRIGGER[/bold yellow] {event.rule} on window {event.window}: running the "
                f"{pipeline} (component output in pipeline.log)")

    stop_approver = threading.Event()
    approver = threading.Thread(target=approver_loop, args=(name, stop_approver, out), daemon=True)
    approver.start()
    try:
        with out.pipeline_log(root / "pipeline.log"):
            outcome = monitor(f"{name}@champion", store, reference=reference, window=window, triggers=[trigger],
                              report_dir=root / "monitoring", actions=[f"run-pipeline:{params}"], served_name="policy",
                              experiment="rlops-monitoring", on_window=on_window, on_trigger=on_fire,
                              max_triggers=1, echo=lambda text: out.say(f"    {text}"))
    finally:
        stop_approver.set()
        approver.join(timeout=10)
    for event in outcome.events:
        for spec, value in event.actions.items():
            if spec.startswith("run-pipeline") and isinstance(value, dict):
                result.pipeline_wall_s = float(value.get("wall_s", 0.0))
    return outcome


def approver_loop(name: str, stop: threading.Event, out: DemoConsole) -> None:
    """Stand-in for the person who approves: approves a challenger that waits for approval (before its canary
    or before its promotion)."""
    from rlops_plugin.audit.events import list_events
    from rlops_plugin.flavor import registry
    from rlops_plugin.lifecycle import approve

    approved: set[str] = set()
    while not stop.wait(1.0):
        try:
            waiting = [e for e in list_events(name, kinds=["canary_step"])
                       if e.decision in ("awaiting_approval", "awaiting_canary_approval")]
            for event in waiting:
                version = event.model_version
                if version and version not in approved and registry.approval_of(name, version) is None:
                    note = ("shadow answers reviewed; the canary may start" if event.decision ==
                            "awaiting_canary_approval" else "canary met the promotion policy")
                    approve(name, version, actor=APPROVER, note=f"{note}; approved by the demo's stand-in operator")
                    approved.add(version)
                    out.say(f"    [bold]approval[/bold] of version {version} recorded (who, when, why)")
        except Exception as exc:  # noqa: BLE001 - keep polling; the controller times out if nobody approves
            out.say(f"    [red]approver: {type(exc).__name__}: {exc}[/red]")


def read_outcome(name: str, result: Any) -> None:
    """What the cycle decided, from the audit trail."""
    from rlops_plugin.audit.events import list_events

    events = list_events(name)
    result.event_kinds = sorted({e.kind for e in events})
    if not result.triggered:
        result.outcome, result.outcome_reason = "no_trigger", "the monitor saw no drift; nothing to retrain"
        return
    gates = [e for e in events if e.kind == "gate"]
    if gates:
        result.gate_passed = gates[-1].decision == "passed"
    updates = [e for e in events if e.kind == "policy_update" and e.model_version != result.initial_version]
    if updates:
        result.challenger_version = updates[-1].model_version or ""
    final = [e for e in events if e.kind in ("promotion", "rollback") and e.model_version == result.challenger_version
             and result.challenger_version]
    stuck = [e for e in events if e.kind == "canary_step" and e.decision == "inconclusive"]
    if final:
        result.outcome, result.outcome_reason = final[-1].decision, final[-1].reason
    elif result.gate_passed is False:
        result.outcome, result.outcome_reason = "gate_failed", gates[-1].reason
    elif stuck:
        result.outcome, result.outcome_reason = "inconclusive", stuck[-1].reason
    else:
        result.outcome, result.outcome_reason = "unknown", "the pipeline left no verdict in the audit trail"


def _champion_version(name: str) -> str:
    from rlops_plugin.flavor import get_alias_version

    return str(get_alias_version(name, "champion"))


def _compare(name: str, initial: str, final: str, nominal: Any, shifted: Any,
             config: DemoConfig) -> dict[str, dict[str, float]]:
    import numpy as np

    from rlops_plugin.flavor import ModelRef, load_model
    from rlops_plugin.simulation.rollouts import rollout

    seeds = range(50_000, 50_000 + config.final_eval_episodes)
    out: dict[str, dict[str, float]] = {}
    for who, version in (("initial", initial), ("final", final)):
        policy = load_model(ModelRef.of(name, version=version).uri).policy
        out[who] = {world: float(np.mean(rollout(policy, spec, seeds).returns))
                    for world, spec in (("nominal", nominal), ("shifted", shifted))}
    return out
