"""``rlops demo agent``: the improvement loop of an LLM agent on one machine, with the real servers and pipeline.

1. start an MLflow server (SQLite under the demo folder) or use the one given;
2. build the initial champion locally: a tiny support-ticket triage model (tokenizer and weights trained here,
   the tokenizer also on the platform's tool definitions; nothing downloaded) with its tools (``route``;
   ``issue_refund`` offered by the platform and checked by the red team), task suite and graders, registered
   and made ``@champion``;
3. deploy it with ``rlops-local``: a real ``kserve.ModelServer`` on KServe's OpenAI data plane, every
   interaction logged before it is answered, and mirrored to MLflow Tracing;
4. send customer tickets; a simulated reviewer rates every answer by a rule the agent never sees and corrects
   some of the wrong ones (feedback through the server's endpoint);
5. the support organisation changes (two new departments, ``security`` and ``shipping``; ``login`` tickets move
   to ``security``); the support team publishes the updated task suite; traffic and reviews go on;
6. the monitor (prompts, topics, tool calls, ratings, ...) sees the ratings drift and its trigger runs the
   ``agent_improvement`` Kubeflow pipeline (``kfp.local``) while production traffic keeps coming:
   preferences from the reviews -> SFT from the champion -> evaluation on the new task suite and the red team
   -> gate -> register -> shadow -> approval -> canary -> promote or roll back;
7. evaluate the initial and the final champion on the new world's task suite (including a phrasing no
   production ticket used), the old world's and the red team;
8. write the HTML report, the audit trail and the post-market monitoring report;
9. stop everything it started, by PID (always, also on errors and Ctrl-C).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlops_plugin.demo.config import AGENT_TRACE_EXPERIMENT as TRACE_EXPERIMENT
from rlops_plugin.demo.config import AgentDemoConfig
from rlops_plugin.demo.console import DemoConsole
from rlops_plugin.demo.runner import APPROVER, DemoSession, fresh_name, monitor_and_run, prepare_root, read_outcome
from rlops_plugin.errors import ConfigError

DEPLOYMENT = "triage"
SERVED_MODEL = "policy"
"""The KServe model name of an ``rlops-local`` deployment (what the interactions are logged under)."""
OWNED = ("mlflow", "deployments", "kfp", "monitoring", "report", "checkpoints", "suites", "experience.db",
         "experience.db-wal", "experience.db-shm", "pipeline.log", "pipeline-params.json")
SUITES = ("old world", "new world", "new world, held-out phrasing")


@dataclass
class AgentDemoResult:
    """What happened, for the report, the CLI's last lines and the tests."""

    model_name: str
    tracking_uri: str
    root: str
    store: str
    started_at: float = 0.0
    initial_version: str = ""
    challenger_version: str = ""
    final_version: str = ""
    outcome: str = "not run"
    """``promoted``, ``rolled_back``, ``gate_failed``, ``inconclusive``, ``no_trigger`` or ``failed``."""
    outcome_reason: str = ""
    triggered: bool = False
    trigger_window: int | None = None
    trigger_rule: str = ""
    gate_passed: bool | None = None
    world_change_seq: int = 0
    """Interaction sequence number after which the world had changed (the plots mark it)."""
    success: dict[str, dict[str, float]] = field(default_factory=dict)
    """``{"initial"|"final": {suite: pass rate}}`` on the suites of :data:`SUITES`."""
    redteam: dict[str, dict[str, bool]] = field(default_factory=dict)
    """``{"initial"|"final": {case: passed}}`` on the ``triage-redteam`` suite."""
    traffic: dict[str, Any] = field(default_factory=dict)
    """Simulated traffic per stage (tickets, success rate by policy version)."""
    event_kinds: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    pipeline_wall_s: float = 0.0
    report_path: str = ""
    audit_path: str = ""
    post_market_path: str = ""
    monitoring_run_id: str = ""
    failed_stage: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``result.json`` next to the report)."""
        return dict(self.__dict__)


class LiveTraffic:
    """Production traffic that keeps coming (changed world, reviewed) while the monitor and pipeline run."""

    def __init__(self, url: str, config: AgentDemoConfig, seed: int) -> None:
        self.url, self.config, self.seed = url, config, seed
        self.stop_event = threading.Event()
        self.stats: list[Any] = []
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="rlops-demo-traffic", daemon=True)

    def __enter__(self) -> LiveTraffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=120)

    def _run(self) -> None:
        from rlops_plugin.kinds.agent.triage import QUEUES_V2, TOOLS, traffic
        from rlops_plugin.simulation.agent_traffic import AgentClient, simulate_agent

        client = AgentClient(self.url, SERVED_MODEL)
        batch = 0
        try:
            while not self.stop_event.is_set():
                tickets = traffic(self.config.live_batch, QUEUES_V2, seed=self.seed + batch)
                self.stats.append(simulate_agent(
                    client, tickets, tools=TOOLS, correct_share=self.config.correct_share, seed=self.seed + batch,
                    session_prefix=f"live{batch}", temperature=self.config.temperature, concurrency=2))
                batch += 1
                self.stop_event.wait(self.config.live_pause_s)
        except Exception as exc:  # noqa: BLE001 - reported by the stage; the controller then times out
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()

    def summary(self) -> dict[str, Any]:
        """Tickets and success by policy version over the whole run."""
        return _merge(self.stats)


def run_agent_demo(root: str | Path = ".rlops/demo-agent", config: AgentDemoConfig | None = None,
                   tracking_uri: str | None = None, console: DemoConsole | None = None) -> AgentDemoResult:
    """Run the agent loop end to end; returns the :class:`AgentDemoResult` (also ``report/result.json``)."""
    config = config or AgentDemoConfig()
    out = console or DemoConsole()
    root = Path(root).resolve()
    check_config(config)
    prepare_root(root, OWNED)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request of the simulated traffic
    result = AgentDemoResult(config.model_name, tracking_uri or "", str(root), str(root / "experience.db"),
                             started_at=time.time())
    monitoring = None
    with DemoSession(root, result, out, "rlops demo agent", "agent server", ("RLOPS_TRACE_EXPERIMENT",)) as session:
        with out.stage(1, "MLflow tracking server and model registry") as info:
            tracking_uri = session.start_mlflow(tracking_uri)
            result.model_name, result.tracking_uri = fresh_name(config.model_name), tracking_uri
            info["detail"] = f"{tracking_uri}, model {result.model_name!r}, store {result.store}"
        name, store = result.model_name, result.store
        with out.stage(2, "Initial champion: a tiny triage agent built here, registered with tools, tasks, graders"
                       ) as info:
            result.initial_version = _initial_champion(name, root, config, out)
            info["detail"] = f"{name} version {result.initial_version} is @champion"
        with out.stage(3, "Deploy the champion (KServe ModelServer, OpenAI data plane, MLflow Tracing)") as info:
            from rlops_plugin.deploy.local import LocalDeployments
            from rlops_plugin.flavor import ModelRef
            from rlops_plugin.lifecycle import deploy

            os.environ["RLOPS_TRACE_EXPERIMENT"] = TRACE_EXPERIMENT  # the server process reads it
            session.deployments = LocalDeployments(root / "deployments")  # the last stage stops it, whatever happens
            state = deploy(f"rlops-local:{root / 'deployments'}", DEPLOYMENT, ModelRef.of(name, alias="champion").uri,
                           {"store": store, "seed": config.seed})
            info["detail"] = f"{state['url']} (pid {state['pid']}), interactions logged to {store}"
        from rlops_plugin.kinds.agent.triage import QUEUES, QUEUES_V2

        with out.stage(4, "Customer tickets in the first world, every answer reviewed") as info:
            stats = _tickets(state["url"], QUEUES, config.reference_tickets + config.nominal_tickets, config,
                             "nominal", config.seed)
            result.traffic["nominal"] = stats.to_dict()
            info["detail"] = f"{stats.interactions} tickets, {stats.success_rate:.0%} answered right, " \
                             f"{stats.corrections} corrections"
        with out.stage(5, "The support organisation changes: security and shipping queues, login -> security"
                       ) as info:
            result.world_change_seq = _interaction_seq(store)
            suite = _publish_new_suite(root)
            stats = _tickets(state["url"], QUEUES_V2, config.shifted_tickets, config, "changed", config.seed + 10_000)
            result.traffic["changed"] = stats.to_dict()
            info["detail"] = f"{stats.interactions} tickets, {stats.success_rate:.0%} answered right; new task " \
                             f"suite {suite.name}"
        with out.stage(6, "Monitor the agent; the trigger runs the agent_improvement pipeline (kfp.local)") as info:
            params = _pipeline_params(name, store, root, config)
            with LiveTraffic(state["url"], config, config.seed + 20_000) as live:
                monitoring = monitor_and_run(name, store, root, params, out, result,
                                             reference=f"production:{config.reference_tickets}", window=config.window,
                                             trigger=config.trigger, unit="interactions",
                                             pipeline="agent_improvement pipeline while traffic goes on")
            result.traffic["during the cycle"] = live.summary()
            if live.error:
                out.say(f"    [red]live traffic stopped early: {live.error}[/red]")
            result.monitoring_run_id = monitoring.run_id or ""
            read_outcome(name, result)
            info["detail"] = f"outcome: {result.outcome} ({result.outcome_reason})"
        with out.stage(7, "Evaluate the initial and the final champion on the task suites and the red team") as info:
            from rlops_plugin.flavor import get_alias_version

            result.final_version = str(get_alias_version(name, "champion"))
            result.success, result.redteam = _compare(name, result.initial_version, result.final_version)
            info["detail"] = ", ".join(f"{who} v{v}: new world {result.success[who]['new world']:.0%}, old world "
                                       f"{result.success[who]['old world']:.0%}"
                                       for who, v in (("initial", result.initial_version),
                                                      ("final", result.final_version)))
        with out.stage(8, "Report, audit trail and post-market monitoring report") as info:
            from rlops_plugin.demo.agent_report import write_agent_report

            result.stage_seconds = dict(out.timings)
            result.wall_s = session.elapsed()
            paths = write_agent_report(result, config, monitoring, root / "report")
            result.report_path, result.audit_path = str(paths["report"]), str(paths["audit"])
            result.post_market_path = str(paths["post_market"])
            info["detail"] = result.report_path
    return result


# ----- stages ----------------------------------------------------------------------------------
def _initial_champion(name: str, root: Path, config: AgentDemoConfig, out: DemoConsole) -> str:
    """Train the tiny triage model on the first world's tickets, register it, make it champion."""
    import mlflow

    from rlops_plugin import flavor
    from rlops_plugin.kinds.agent.tasks import run_tasks
    from rlops_plugin.kinds.agent.tiny_model import TinyModelConfig
    from rlops_plugin.kinds.agent.triage import PLATFORM_TEXT, build_triage_agent
    from rlops_plugin.lifecycle import crown

    bundle = build_triage_agent(root / "checkpoints" / "initial",
                                TinyModelConfig(steps=config.model_steps, seed=config.seed), corpus=PLATFORM_TEXT)
    report = run_tasks(bundle.policy, bundle.env_spec, bundle.reward_spec)[0]
    mlflow.set_experiment("rlops-demo")
    with mlflow.start_run(run_name="initial champion") as run:
        summary = report.summary()
        mlflow.log_metrics({"eval/pass_rate": summary["pass_rate"], "eval/return_mean": summary["return_mean"]})
        info = flavor.log_model(bundle, name="policy", registered_model_name=name)
    version = str(info.registered_model_version)
    crown(name, version, "initial champion: the first version, nothing to compare against",
          {"eval/pass_rate": summary["pass_rate"]})
    out.say(f"    task suite {bundle.env_spec.name}: {summary['pass_rate']:.0%} of {len(bundle.env_spec.tasks)} "
            f"tickets (MLflow run {run.info.run_id})")
    return version


def _tickets(url: str, queues: dict[str, str], n: int, config: AgentDemoConfig, prefix: str, seed: int) -> Any:
    from rlops_plugin.kinds.agent.triage import TOOLS, traffic
    from rlops_plugin.simulation.agent_traffic import AgentClient, simulate_agent

    client = AgentClient(url, SERVED_MODEL)
    try:
        return simulate_agent(client, traffic(n, queues, seed=seed), tools=TOOLS, correct_share=config.correct_share,
                              seed=seed, session_prefix=prefix, temperature=config.temperature)
    finally:
        client.close()


def _interaction_seq(store_url: str) -> int:
    from rlops_plugin.experience.store import open_store

    with open_store(store_url) as store:
        return store.max_interaction_seq()


def new_world_suite() -> Any:
    """The task suite the support team publishes with the re-organisation (every ticket of the new world)."""
    from rlops_plugin.kinds.agent.triage import QUEUES_V2, task_env

    return task_env(QUEUES_V2, name="ticket-triage-v2")


def _publish_new_suite(root: Path) -> Any:
    suite = new_world_suite()
    path = root / "suites" / f"{suite.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite.to_dict(), indent=2))
    return suite


def _pipeline_params(name: str, store: str, root: Path, config: AgentDemoConfig) -> Path:
    """The ``run-pipeline`` trigger action's parameters (what a user writes for ``rlops monitor``)."""
    params = {
        "pipeline": "agent_improvement", "model_name": name, "store": store, "served_model": SERVED_MODEL,
        "trainer": config.trainer, "trainer_config_json": json.dumps({**config.trainer_config, "seed": config.seed}),
        "env_json": str(root / "suites" / "ticket-triage-v2.json"),
        "redteam_json": json.dumps(["triage-redteam"]),
        "gate_policy_json": json.dumps({"regression_margin": config.regression_margin, "compare_under": "candidate",
                                        "scenarios": ["triage-redteam"]}),
        "deployment": DEPLOYMENT, "target": f"rlops-local:{root / 'deployments'}",
        "promotion_json": json.dumps(config.promotion), "pipeline_root": str(root / "kfp"),
    }
    path = root / "pipeline-params.json"
    path.write_text(json.dumps(params, indent=2))
    return path


def suites() -> dict[str, Any]:
    """The evaluation suites of :data:`SUITES`: the old world's, the new world's, its held-out phrasing."""
    from rlops_plugin.kinds.agent.specs import TaskEnvSpec
    from rlops_plugin.kinds.agent.triage import HELD_OUT_TEMPLATES, QUEUES, QUEUES_V2, task, task_env, tickets

    new = new_world_suite()
    held = [task(f"held-{i}", text, queue) for i, (text, queue) in enumerate(tickets(HELD_OUT_TEMPLATES, QUEUES_V2))]
    return {"old world": task_env(QUEUES), "new world": new,
            "new world, held-out phrasing": TaskEnvSpec(name="ticket-triage-v2-held-out", tools=new.tools,
                                                        tasks=tuple(held))}


def _compare(name: str, initial: str, final: str) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, bool]]]:
    """Pass rates on every suite and red-team verdicts per case, for both champions (greedy answers)."""
    from rlops_plugin.flavor import ModelRef, load_model
    from rlops_plugin.kinds.agent.redteam import RedTeamSuite, run_redteam
    from rlops_plugin.kinds.agent.tasks import run_tasks

    success: dict[str, dict[str, float]] = {}
    redteam: dict[str, dict[str, bool]] = {}
    red = RedTeamSuite.load("triage-redteam")
    for who, version in (("initial", initial), ("final", final)):
        bundle = load_model(ModelRef.of(name, version=version).uri)
        success[who] = {label: float(run_tasks(bundle.policy, env, bundle.reward_spec)[0].summary()["pass_rate"])
                        for label, env in suites().items()}
        redteam[who] = {r.scenario: bool(r.passed) for r in run_redteam(bundle.policy, red)}
    return success, redteam


def _merge(stats: list[Any]) -> dict[str, Any]:
    total: dict[str, Any] = {"interactions": 0, "correct": 0, "errors": 0, "feedback": 0, "corrections": 0,
                             "by_version": {}}
    for s in stats:
        d = s.to_dict()
        for key in ("interactions", "correct", "errors", "feedback", "corrections"):
            total[key] += d[key]
        for version, counts in d["by_version"].items():
            seen = total["by_version"].setdefault(version, {"answers": 0, "correct": 0})
            seen["answers"] += counts["answers"]
            seen["correct"] += counts["correct"]
    total["success_rate"] = total["correct"] / total["interactions"] if total["interactions"] else float("nan")
    return total


def check_config(config: AgentDemoConfig) -> None:
    """Refuse budgets that cannot close the loop (before anything starts)."""
    if config.reference_tickets < config.window:
        raise ConfigError(f"reference_tickets ({config.reference_tickets}) must hold at least one window "
                          f"({config.window})")
    if config.shifted_tickets < 2 * config.window:
        raise ConfigError(f"shifted_tickets ({config.shifted_tickets}) must fill the two windows the trigger "
                          f"needs ({2 * config.window})")


__all__ = ["APPROVER", "AgentDemoResult", "run_agent_demo"]
