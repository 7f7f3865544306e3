"""The ``agent_improvement`` pipeline: one improvement cycle of a deployed LLM agent from its own traffic.

(monitor ->) extract the training signal from the logged answers and their feedback (optionally labelled
by a judge) -> train from the champion (``dpo``, ``kto``, ``sft`` or ``grpo``; LoRA optional) -> evaluate
on the task suite and the red-team suites -> gate (paired regression on the task suite, red team,
off-policy estimate from the champion's rated answers) -> if passed: register as challenger ->
shadow -> canary -> promote or roll back (only with a ``deployment``). An exit handler records the
cycle whatever happens. Every step is a component of ``components/``: the same ones as
``continuous_improvement``, which dispatch on the policy kind; this pipeline only chooses the agent's
inputs (a preferences dataset, a trainer alias of the agent kind, the suites and the OPE store).
"""

from kfp import dsl  # no ``from __future__ import annotations``: kfp reads the real annotation types

from components.build_dataset.component import build_dataset
from components.deploy_policy.component import deploy_policy
from components.evaluate_policy.component import evaluate_policy
from components.gate_policy.component import gate_policy
from components.monitor_policy.component import monitor_policy
from components.record_cycle.component import record_cycle
from components.register_policy.component import register_policy
from components.train_distributed.component import train_distributed
from components.train_policy.component import train_policy
from rlops_plugin.defaults import JOIN_WINDOW_S, MONITOR_REFERENCE, MONITOR_WINDOW
from rlops_plugin.pipelines.monitor_and_improve import _triggered

PIPELINE_NAME = "rlops-agent-improvement"
CYCLE_NAME = "agent-improvement"
"""The cycle's name in its ``pipeline_cycle`` audit event."""
AGENT_EVAL_EPISODES = 1
"""An agent answers its whole task suite greedily whatever the episode count (seeds change nothing); 0 skips
the training run's before/after evaluation."""


@dsl.pipeline(name="rlops-agent-cycle", description="Extract, train, evaluate, gate, register and canary an agent.")
def agent_cycle(
    model_name: str,
    store: str,
    tracking_uri: str = "",
    served_model: str = "policy",
    judge: str = "",
    judge_min_agreement: float = 0.0,
    join_window_s: float = JOIN_WINDOW_S,
    trainer: str = "dpo",
    trainer_config_json: str = "",
    lora: bool = False,
    env_json: str = "",
    eval_episodes: int = AGENT_EVAL_EPISODES,
    redteam_json: str = "[]",
    ope_store: str = "",
    gate_policy_json: str = "",
    deployment: str = "",
    target: str = "rlops-local",
    promotion_json: str = "",
    num_nodes: int = 1,
    nproc_per_node: int = 1,
    trainjob_json: str = "",
) -> None:
    """The cycle itself, without the monitor (``agent_improvement``'s parameters)."""
    champion = f"models:/{model_name}@champion"
    with dsl.ExitHandler(record_cycle(name=model_name, tracking_uri=tracking_uri, pipeline=CYCLE_NAME)):
        data = build_dataset(store=store, bundle_uri=champion, served_model=served_model, kind="preferences",
                             window_s=join_window_s, judge=judge, judge_min_agreement=judge_min_agreement,
                             tracking_uri=tracking_uri)
        distributed = {"trainer": trainer, "init_uri": champion, "dataset": data.outputs["dataset"],
                       "config_json": trainer_config_json, "lora": lora, "env_json": env_json,
                       "num_nodes": num_nodes, "nproc_per_node": nproc_per_node, "trainjob_json": trainjob_json,
                       "eval_episodes": eval_episodes, "tracking_uri": tracking_uri}
        with dsl.If(num_nodes > 1, name="multi-node"):
            nodes = train_distributed(**distributed)
        with dsl.Elif(nproc_per_node > 1, name="multi-process"):
            procs = train_distributed(**distributed)
        with dsl.Else(name="in-process"):
            local = train_policy(trainer=trainer, init_uri=champion, dataset=data.outputs["dataset"],
                                 config_json=trainer_config_json, lora=lora, env_json=env_json,
                                 eval_episodes=eval_episodes, tracking_uri=tracking_uri)
        model_uri = dsl.OneOf(nodes.outputs["model_uri"], procs.outputs["model_uri"], local.outputs["model_uri"])
        evaluate_policy(model_uri=model_uri, episodes=eval_episodes, scenarios_json=redteam_json,
                        tracking_uri=tracking_uri)
        verdict = gate_policy(candidate_uri=model_uri, champion_uri=champion,
                              policy_json=gate_policy_json, scenarios_json=redteam_json, ope_store=ope_store,
                              ope_model=served_model, tracking_uri=tracking_uri)
        with dsl.If(verdict.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 - kfp condition syntax
            registered = register_policy(model_uri=model_uri, name=model_name,
                                         gate_result=verdict.outputs["result"], tracking_uri=tracking_uri)
            with dsl.If(deployment != "", name="has-deployment"):
                deploy_policy(name=model_name, deployment=deployment, store=store, target=target,
                              promotion_json=promotion_json, served_model=served_model,
                              tracking_uri=tracking_uri).after(registered)


@dsl.pipeline(name=PIPELINE_NAME, description="Improve a deployed LLM agent from its rated and corrected answers: "
                                              "preference training, red-team and OPE gate, canary, promote or "
                                              "roll back.")
def agent_improvement(
    model_name: str,
    store: str,
    tracking_uri: str = "",
    served_model: str = "policy",
    monitor: bool = False,
    reference: str = MONITOR_REFERENCE,
    window: int = MONITOR_WINDOW,
    triggers_json: str = "",
    judge: str = "",
    judge_min_agreement: float = 0.0,
    join_window_s: float = JOIN_WINDOW_S,
    trainer: str = "dpo",
    trainer_config_json: str = "",
    lora: bool = False,
    env_json: str = "",
    eval_episodes: int = AGENT_EVAL_EPISODES,
    redteam_json: str = "[]",
    ope_store: str = "",
    gate_policy_json: str = "",
    deployment: str = "",
    target: str = "rlops-local",
    promotion_json: str = "",
    num_nodes: int = 1,
    nproc_per_node: int = 1,
    trainjob_json: str = "",
) -> None:
    """One cycle for the agent ``model_name`` (the champion is ``models:/<model_name>@champion``).

    ``served_model``: the KServe model name its answers were logged under. ``monitor``: run the drift
    monitor first (``reference``, ``window``, ``triggers_json``) and improve only when a trigger fires;
    off, the cycle always runs (a schedule or ``rlops monitor --on-trigger`` started it). ``judge``: a
    registered judge that labels unreviewed answers once it agrees with the people at least
    ``judge_min_agreement`` (0: 0.8). ``trainer``: ``dpo``, ``kto``, ``sft`` or ``grpo`` (the agent kind's
    aliases of ``agent_*``; ``grpo`` learns in the task environment, the dataset is then only recorded),
    settings in ``trainer_config_json``, ``lora`` for an adapter, ``env_json`` the candidate's task suite when
    the world changed (a TaskEnvSpec JSON or file; pair it with ``"compare_under": "candidate"`` in
    ``gate_policy_json`` so the gate compares both policies on it). ``redteam_json``: suites the evaluation
    reports and the gate requires (e.g. ``["triage-redteam"]``). ``ope_store``: adds the gate's off-policy
    check on the champion's rated answers in that store. ``deployment`` empty: register the challenger
    and stop; else shadow, canary and promote or roll back on ``target`` with ``promotion_json``.
    ``num_nodes`` or ``nproc_per_node`` > 1 trains in a Kubeflow Trainer TrainJob (``train_distributed``;
    ``trainjob_json``: namespace, runtime, image, resources, env, timeout_s; ``env_json`` is then refused).
    """
    cycle = {"model_name": model_name, "store": store, "tracking_uri": tracking_uri, "served_model": served_model,
             "judge": judge, "judge_min_agreement": judge_min_agreement, "join_window_s": join_window_s,
             "trainer": trainer, "trainer_config_json": trainer_config_json, "lora": lora, "env_json": env_json,
             "eval_episodes": eval_episodes, "redteam_json": redteam_json, "ope_store": ope_store,
             "gate_policy_json": gate_policy_json, "deployment": deployment, "target": target,
             "promotion_json": promotion_json, "num_nodes": num_nodes, "nproc_per_node": nproc_per_node,
             "trainjob_json": trainjob_json}
    with dsl.If(monitor == True, name="monitored"):  # noqa: E712 - kfp condition syntax
        watch = monitor_policy(model=f"{model_name}@champion", store=store, reference=reference, window=window,
                               triggers_json=triggers_json, tracking_uri=tracking_uri)
        fired = _triggered(events_json=watch.outputs["events_json"])
        with dsl.If(fired.output == True, name="trigger-fired"):  # noqa: E712 - kfp condition syntax
            agent_cycle(**cycle)
    with dsl.Else(name="unmonitored"):
        agent_cycle(**cycle)
