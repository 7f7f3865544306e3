"""Agent learning benchmark: which update recipe teaches a triage agent a changed world from human reviews.

The example triage task (``rlops_plugin.kinds.agent.triage``) after its world change (``QUEUES_V2``: two new
departments, ``security`` and ``shipping``, and ``login`` tickets moved to security). For each seed:

1. **Champion**: the tiny triage agent trained on world 1 (``build_triage_agent`` with ``--champion-config``,
   weights seeded by the seed) is the deployed model. Its world-1 success is measured and reported (training
   tickets and the held-out phrasing separately).
2. **Traffic and review**: the champion is served through the real agent server code (``AgentModel``
   in-process, no HTTP: the records are what ``rlops serve`` writes) into a SQLite experience store. Every
   world-2 ticket of the training phrasings (``TEMPLATES``, 30 tickets) is asked in rounds, in a seeded order,
   with ``n=4`` answers at temperature 1. A simulated reviewer goes through the answers in logged order: a right
   ``route`` call gets a thumbs up, anything else a correction (the right ``route`` call) and a thumbs down,
   until the wanted number of corrections is reached. The levels (``--corrections``) are nested: the reviews of
   the 250-correction level include those of 100, as a reviewer who kept going would. Every answer reviewed is
   counted (the same review effort for every recipe).
3. **Signal**: ``build_agent_preferences`` extracts the dataset at each level (its manifest counts are reported).
   The init bundle of every update is the champion's policy with the world-2 environment (``task_env(QUEUES_V2)``)
   and the triage graders, so the dataset's env/reward hashes match it.
4. **Updates**: ``rlops_plugin.training.train.train`` (no MLflow) with each recipe: ``sft_all`` (``agent_sft`` on
   approved answers + corrections: the default recipe), ``sft_corrections`` (``agent_sft`` on corrections only),
   ``dpo_sft`` (``agent_dpo``, DPO with its SFT term), ``kto`` (``agent_kto``), and plain ``dpo`` in the grid.
5. **Metrics** of every policy (greedy, the deployed decoding): held-out success on the new world (world-2
   tickets in the held-out phrasing ``HELD_OUT_TEMPLATES``, 10 tasks, never reviewed or trained on), success on
   the unchanged part of the old world (world-1 tickets whose keyword's queue did not move, every phrasing, 20
   tasks), the red-team pass rate (``triage-redteam``, 8 cases) and the update's wall time (``train`` call:
   model load, TRL setup, optimisation, save). Also ``new_world_reviewed``: the 30 world-2 tickets of the
   reviewed phrasings (what was learnt, apart from how it generalises). The champion's values are "no update".

Tuning is fair and kept apart from the reported numbers: on ``--tune-seed`` (its own champion and reviewer) each
recipe runs a small grid at the largest correction level; among the settings without a red-team regression (a
gate would refuse the others) the one with the best ``new + old`` success is kept, ties to the lower lr; the
chosen settings then run on the evaluation seeds (``--seeds`` seeds from 1: champion init, reviewer sampling and
trainer seed). Also reported: the agreement with held-out human labels of a reward model trained on the reviewed
pairs (``rlops_plugin.training.agent_reward``) and of a tiny pairwise LLM judge served by the agent server
(``rlops_plugin.kinds.agent.judges``), and the OPE error from ``bench/results/agent_ope.json`` when that file
exists (not rerun here). Prints one JSON object. Usage:
``python bench/agent_learning.py [--quick] [--seeds 3] [--corrections 100,250,500] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
MODEL_NAME = "triage"
MAX_TOKENS = 40
ANSWERS_PER_REQUEST = 4
REVIEWER = "reviewer"
DEFAULT_RECIPE = "sft_all"
TARGETS = {"new_world_gain_min": 0.30, "old_world_drop_max": 0.02, "redteam_regression_max": 0.0,
           "train_wall_s_max": 180.0, "corrections_max": 500}
"""Issue 16: >= +30 points on the new world from <= 500 corrections, old-world drop <= 2 points, no red-team
regression, < 3 min of CPU training (for the default recipe)."""

CHAMPION_CONFIG = {"hidden_size": 128, "layers": 4, "heads": 4, "steps": 600, "lr": 1e-3}
"""The champion: the feasibility run's size (0.93M parameters). Measured while writing this bench (seeds 0-2, 600
steps, full batch): every setting answers the 18 world-1 training tickets 18/18, none reliably generalises to the
held-out phrasing ``urgent: {} issue`` (6 world-1 tickets): lr 3e-3 got 0, 0 and 2 of 6, lr 1e-3 4, 2 and 2 of 6
(1000 steps at 1e-3: 4 of 6 on seed 0; the default 64x2 model: 6, 2, 0 and 0 of 6 on seeds 0-3; a 300-token
vocabulary: 3 of 6). lr 1e-3 is kept; each seed's world-1 success is in the JSON (``champion_world1``)."""

COMMON = {"steps": 160, "batch_size": 8}
SFT_LRS, PREFERENCE_LRS = (3e-4, 1e-3, 3e-3), (1e-4, 3e-4, 1e-3)
GRID: dict[str, list[dict[str, Any]]] = {
    "sft_all": [{"trainer": "agent_sft", "lr": lr, "sources": ["approved", "correction"]} for lr in SFT_LRS],
    "sft_corrections": [{"trainer": "agent_sft", "lr": lr, "sources": ["correction"]} for lr in SFT_LRS],
    "dpo_sft": [{"trainer": "agent_dpo", "lr": lr, "beta": 0.1, "sft_weight": 1.0} for lr in PREFERENCE_LRS],
    "kto": [{"trainer": "agent_kto", "lr": lr, "beta": 0.1} for lr in PREFERENCE_LRS],
    "dpo": [{"trainer": "agent_dpo", "lr": lr, "beta": 0.1, "sft_weight": 0.0} for lr in PREFERENCE_LRS[:2]],
}
"""Each recipe's grid (160 steps, batch 8 for all, three learning rates each): SFT from the trainer's default
3e-4 to the lead's 3e-3; DPO and KTO from 1e-4 to 1e-3 (STACK.md: 1e-4..1e-3 works on CPU; in this bench's trial
runs lr 1e-3 already broke the 128x4 model's held-out answers under both). Plain ``dpo`` (STACK.md: it never
improved) is tuned and reported from the grid only, on its two lower rates."""
ALL_LEVELS = ("sft_all", "dpo_sft")
"""Recipes run at every correction level; the others at the largest level only (the time budget)."""
MAX_LEVEL_ONLY = ("sft_corrections", "kto")


# ----- the task's parts -------------------------------------------------------------------------------
def world_tasks() -> dict[str, list[dict[str, Any]]]:
    """The evaluation suites (each task tagged with its ``group``).

    ``new_world``: world-2 tickets in the held-out phrasing (never reviewed, never trained on); ``old_world``:
    world-1 tickets whose keyword's queue did not move, every phrasing; ``new_world_reviewed``: the 30 world-2
    tickets of the reviewed phrasings (what the reviewer saw: learning, not generalisation).
    """
    from rlops_plugin.kinds.agent.triage import HELD_OUT_TEMPLATES, QUEUES, QUEUES_V2, TEMPLATES, task

    new = [dict(task(f"new-{word}-{i}", t.format(word), queue), group=_group(word))
           for word, queue in QUEUES_V2.items() for i, t in enumerate(HELD_OUT_TEMPLATES)]
    old = [dict(task(f"old-{word}-{i}", t.format(word), queue), group="held_out" if t in HELD_OUT_TEMPLATES
                else "reviewed_phrasing")
           for word, queue in QUEUES.items() if QUEUES_V2[word] == queue
           for i, t in enumerate(TEMPLATES + HELD_OUT_TEMPLATES)]
    reviewed = [dict(task(f"reviewed-{word}-{i}", t.format(word), queue), group=_group(word))
                for word, queue in QUEUES_V2.items() for i, t in enumerate(TEMPLATES)]
    return {"new_world": new, "old_world": old, "new_world_reviewed": reviewed}


def _group(word: str) -> str:
    from rlops_plugin.kinds.agent.triage import QUEUES, QUEUES_V2

    return "new_keyword" if word not in QUEUES else "moved" if QUEUES[word] != QUEUES_V2[word] else "unchanged"


def world2_bundle(champion: Any) -> Any:
    """The champion's policy with the world-2 environment: the init bundle of every update."""
    from rlops_plugin.bundle.bundle import PolicyBundle
    from rlops_plugin.kinds.agent.triage import QUEUES_V2, grader_spec, task_env

    return PolicyBundle(champion.policy, task_env(QUEUES_V2, name="ticket-triage-v2"), grader_spec())


# ----- measuring a policy -----------------------------------------------------------------------------
def measure(policy: Any, bundle: Any, suites: dict[str, list[dict[str, Any]]], redteam: Any) -> dict[str, Any]:
    """Greedy success on each suite (with per-group rates) and the red-team pass rate.

    A ticket in several suites (the unchanged keywords are in the old and the new world alike, with the same
    expected call) is answered once: greedy answers are deterministic.
    """
    from rlops_plugin.kinds.agent.redteam import run_redteam
    from rlops_plugin.kinds.agent.tasks import run_tasks

    started = time.perf_counter()
    unique: dict[str, dict[str, Any]] = {}
    for tasks in suites.values():
        for t in tasks:
            text = t["messages"][-1]["content"]
            if text in unique and unique[text]["expected"] != t["expected"]:
                raise ValueError(f"{text!r} expects different calls in two suites")
            unique.setdefault(text, {k: v for k, v in t.items() if k != "group"})
    report, answers = run_tasks(policy, bundle.env_spec, bundle.reward_spec, list(unique.values()))
    by_text = dict(zip(unique, answers, strict=True))
    out: dict[str, Any] = {}
    for name, tasks in suites.items():
        graded = [(t["group"], by_text[t["messages"][-1]["content"]].scores) for t in tasks]
        out[name] = float(sum(s["expected_call"] for _, s in graded) / len(graded))
        groups: dict[str, list[float]] = {}
        for group, s in graded:
            groups.setdefault(group, []).append(s["expected_call"])
        out[f"{name}_by_group"] = {g: float(sum(v) / len(v)) for g, v in sorted(groups.items())}
        out[f"{name}_valid_call"] = float(sum(s["valid_call"] for _, s in graded) / len(graded))
    results = run_redteam(policy, redteam)
    out["redteam"] = sum(r.passed for r in results) / len(results)
    out["redteam_failed"] = [r.scenario for r in results if not r.passed]
    out["eval_s"] = time.perf_counter() - started
    return out


# ----- traffic and the simulated reviewer -------------------------------------------------------------
def serve_rounds(champion: Any, store: Any, tickets: list[tuple[str, str]], rounds: int, first_round: int,
                 seed: int) -> int:
    """Ask every ticket once per round (seeded order per round, ``n`` answers at temperature 1) via ``AgentModel``."""
    from kserve.protocol.rest.openai.types import ChatCompletionRequest

    from rlops_plugin.flavor.model import as_loaded
    from rlops_plugin.kinds.agent.triage import TOOLS
    from rlops_plugin.serving.agent import AgentModel, AgentServingOptions

    server = AgentModel(MODEL_NAME, as_loaded(champion), store=store,
                        options=AgentServingOptions(max_n=ANSWERS_PER_REQUEST))
    server.load()

    async def drive() -> int:
        count = 0
        for r in range(first_round, first_round + rounds):
            order = list(range(len(tickets)))
            random.Random(seed * 7919 + r).shuffle(order)
            for i in order:
                request = ChatCompletionRequest(
                    model=MODEL_NAME, messages=[{"role": "user", "content": tickets[i][0]}], tools=TOOLS,
                    n=ANSWERS_PER_REQUEST, temperature=1.0, max_tokens=MAX_TOKENS,
                    seed=seed * 1_000_003 + r * len(tickets) + i)
                response = await server.create_chat_completion(request)
                if not hasattr(response, "choices"):
                    raise RuntimeError(f"the agent server refused a request: {response}")
                count += 1
        return count

    try:
        return asyncio.run(drive())
    finally:
        server.stop()


@dataclass
class Review:
    """One answer as the reviewer saw it, and what the reviewer did."""

    interaction_id: str
    choice: int
    ts: float
    queue: str
    right: bool
    corrections_so_far: int = 0


@dataclass
class Reviewer:
    """The simulated reviewer: the answers in logged order, the events already sent, the levels reached."""

    graders: Any
    queue_of: dict[str, str]
    queue_list: list[Review] = field(default_factory=list)
    sent: int = 0

    def read(self, store: Any) -> None:
        """Every logged answer, in order, graded by the task's expected call."""
        from rlops_plugin.kinds.agent.triage import TOOLS

        self.queue_list, corrections = [], 0
        for _, record in store.iter_interactions(model=MODEL_NAME):
            text = record.request["messages"][-1]["content"]
            queue = self.queue_of[text]
            expected = {"expected": {"tool_calls": [{"name": "route", "arguments": {"queue": queue}}]}}
            for choice in record.choices:
                right = self.graders.grade(choice, expected, TOOLS)["expected_call"] == 1.0
                corrections += not right
                self.queue_list.append(Review(record.interaction_id, int(choice["index"]), record.ts, queue, right,
                                              corrections))

    def corrections_available(self) -> int:
        return self.queue_list[-1].corrections_so_far if self.queue_list else 0

    def review_until(self, store: Any, corrections: int) -> dict[str, int]:
        """Send the reviews of the next answers until ``corrections`` corrections in all; the effort so far."""
        from rlops_plugin.experience.feedback import parse_feedback

        end = next(i for i, r in enumerate(self.queue_list) if r.corrections_so_far >= corrections) + 1
        events = []
        for r in self.queue_list[self.sent:end]:
            ids = {"interaction_id": r.interaction_id, "choice": r.choice, "timestamp": r.ts + 1, "rater": REVIEWER}
            events.append(parse_feedback({**ids, "kind": "rating", "value": 1 if r.right else -1, "scale": "thumbs"}))
            if not r.right:
                events.append(parse_feedback({**ids, "kind": "correction", "response": {
                    "tool_calls": [{"name": "route", "arguments": {"queue": r.queue}}]}}))
        if events:
            store.add_feedback(events)
        self.sent = end
        reviewed = self.queue_list[:end]
        return {"answers_reviewed": end, "corrections": sum(not r.right for r in reviewed),
                "approved": sum(r.right for r in reviewed)}


# ----- one seed's data --------------------------------------------------------------------------------
def prepare_seed(seed: int, levels: list[int], args: argparse.Namespace, workdir: Path,
                 suites: dict[str, list[dict[str, Any]]], redteam: Any) -> dict[str, Any]:
    """Champion, its measurements, logged and reviewed traffic, and the dataset at each correction level."""
    from rlops_plugin.experience.store import open_store
    from rlops_plugin.kinds.agent.signals import build_agent_preferences
    from rlops_plugin.kinds.agent.tiny_model import TinyModelConfig
    from rlops_plugin.kinds.agent.triage import HELD_OUT_TEMPLATES, QUEUES, QUEUES_V2, TEMPLATES, build_triage_agent
    from rlops_plugin.kinds.agent.triage import tickets as triage_tickets

    started = time.perf_counter()
    champion = build_triage_agent(workdir / f"champion-{seed}", TinyModelConfig(**args.champion, seed=seed))
    build_s = time.perf_counter() - started
    bundle = world2_bundle(champion)
    world1 = {name: [dict(t, group=name) for t in tasks] for name, tasks in {
        "world1_reviewed_phrasing": _tasks(triage_tickets(TEMPLATES, QUEUES)),
        "world1_held_out_phrasing": _tasks(triage_tickets(HELD_OUT_TEMPLATES, QUEUES))}.items()}
    champion_world1 = {k: v for k, v in measure(champion.policy, bundle, world1, redteam).items()
                       if k in world1}
    baseline = measure(champion.policy, bundle, suites, redteam)
    tickets = triage_tickets(TEMPLATES, QUEUES_V2)
    reviewer = Reviewer(bundle.reward_spec, dict(tickets))
    datasets, effort = {}, {}
    with open_store(workdir / f"store-{seed}.db") as store:
        started = time.perf_counter()
        requests, rounds = 0, 0
        while True:
            reviewer.read(store)
            if reviewer.corrections_available() >= max(levels):
                break
            # enough rounds for the corrections still wanted, judged by the error rate seen so far (2 at first)
            seen = len(reviewer.queue_list)
            rate = reviewer.corrections_available() / seen if seen else 0.0
            missing = max(levels) - reviewer.corrections_available()
            more = 2 if not seen else max(1, min(20, round(missing / max(rate, 0.05) / (len(tickets) *
                                                                                       ANSWERS_PER_REQUEST) + 0.5)))
            requests += serve_rounds(champion, store, tickets, more, rounds, seed)
            rounds += more
            if rounds > 200:
                raise RuntimeError(f"seed {seed}: {reviewer.corrections_available()} wrong answers in {rounds} rounds")
        serve_s = time.perf_counter() - started
        for level in levels:
            started = time.perf_counter()
            effort[level] = reviewer.review_until(store, level)
            datasets[level] = build_agent_preferences(store, MODEL_NAME, bundle)
            effort[level]["dataset_build_s"] = time.perf_counter() - started
            m = datasets[level].manifest
            effort[level].update(signals=m["signals"], sources=m["sources"], excluded=m["excluded"],
                                 quarantined=m["quarantined"])
    traffic = {"requests": requests, "rounds": rounds, "answers_logged": len(reviewer.queue_list),
               "wrong_rate": reviewer.corrections_available() / len(reviewer.queue_list), "serve_s": serve_s}
    return {"champion": champion, "bundle": bundle, "datasets": datasets,
            "report": {"champion_build_s": build_s, "champion_world1": champion_world1, "no_update": baseline,
                       "traffic": traffic, "levels": {str(k): v for k, v in effort.items()}}}


def _tasks(items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    from rlops_plugin.kinds.agent.triage import task

    return [task(f"t{i}", text, queue) for i, (text, queue) in enumerate(items)]


# ----- one update -------------------------------------------------------------------------------------
def run_update(setting: dict[str, Any], data: Any, bundle: Any, seed: int, steps: int,
               suites: dict[str, list[dict[str, Any]]], redteam: Any) -> dict[str, Any]:
    """Train one recipe setting from the champion on ``data``; its measurements and where the time went."""
    from rlops_plugin.training.train import train

    config = {**COMMON, "steps": steps, **{k: v for k, v in setting.items() if k != "trainer"}, "seed": seed}
    logged: list[tuple[int, dict[str, float]]] = []
    started = time.perf_counter()
    outcome = train(setting["trainer"], bundle, data, config, log_to_mlflow=False, eval_episodes=0,
                    progress=lambda step, total, values: logged.append((step, dict(values))))
    wall = time.perf_counter() - started
    steps_logged = [(step, v) for step, v in logged if "trl/train_runtime" not in v]
    last = steps_logged[-1][1] if steps_logged else {}
    runtime = outcome.metrics.get("train/train_runtime")
    row = measure(outcome.bundle.policy, bundle, suites, redteam)
    row.update(train_wall_s=wall, trl_train_runtime_s=runtime,
               setup_and_save_s=None if runtime is None else wall - runtime,
               s_per_step=None if runtime is None else runtime / max(outcome.metrics.get("train/steps", 1), 1),
               rows=outcome.metrics.get("data/rows"), train_loss=outcome.metrics.get("train/loss"),
               last_logged_step={k.removeprefix("trl/"): v for k, v in last.items()
                                 if any(s in k for s in ("logps", "rewards", "kl", "loss"))})
    return row


def score(row: dict[str, Any], champion: dict[str, Any]) -> tuple[bool, float]:
    """The tuning criterion: no red-team regression against the champion first (a gate would refuse the candidate),
    then new-world + old-world success (each in [0, 1])."""
    return row["redteam"] >= champion["redteam"], row["new_world"] + row["old_world"]


# ----- judges ---------------------------------------------------------------------------------------
def human_pairs(templates: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """Held-out human labels: on each world-2 ticket, the right ``route`` call preferred to each wrong one."""
    from rlops_plugin.kinds.agent.triage import ALL_QUEUES, QUEUES_V2, TOOLS
    from rlops_plugin.kinds.agent.triage import tickets as triage_tickets

    def call(queue: str) -> dict[str, Any]:
        return {"content": None, "tool_calls": [{"name": "route", "arguments": {"queue": queue}}]}

    return [([{"role": "user", "content": text}], call(queue), call(wrong), TOOLS)
            for text, queue in triage_tickets(templates, QUEUES_V2) for wrong in ALL_QUEUES if wrong != queue]


def reward_model_agreement(bundle: Any, data: Any, seed: int, steps: int) -> dict[str, Any]:
    """A reward model trained on the reviewed pairs, its agreement with held-out human labels."""
    from rlops_plugin.kinds.agent.triage import HELD_OUT_TEMPLATES
    from rlops_plugin.training import agent_reward

    started = time.perf_counter()
    result = agent_reward.train_reward_model(bundle, data, agent_reward.RewardModelConfig(
        steps=steps, seed=seed, holdout_fraction=0))
    train_s = time.perf_counter() - started
    agreement = agent_reward.reward_model_agreement(agent_reward.RewardModelScorer(result.directory),
                                                    human_pairs(HELD_OUT_TEMPLATES))
    return {**agreement.to_dict(), "train_s": train_s, "pairs_trained": result.metrics["data/pairs"],
            "steps": steps, "held_out": "world-2 tickets in the held-out phrasing: right route call vs each wrong one"}


JUDGE_PROMPT = "{conversation}\nA: {a}\nB: {b}"
"""The tiny judge's prompt (the default prompt doubles the tokens and the judge's training time)."""


def llm_judge_agreement(workdir: Path, seed: int, steps: int) -> dict[str, Any]:
    """A tiny pairwise LLM judge (trained on reviewed-phrasing world-2 judgements) served by ``AgentModel`` and
    asked through ``PairwiseLLMJudge`` (both orders); its agreement with held-out human labels."""
    import httpx
    from kserve.protocol.rest.openai.types import ChatCompletionRequest

    from rlops_plugin.bundle.references import reference_of
    from rlops_plugin.flavor.model import as_loaded
    from rlops_plugin.kinds.agent.create import agent_bundle
    from rlops_plugin.kinds.agent.graders import expected_tool_call
    from rlops_plugin.kinds.agent.judges import JudgeSpec, judge_agreement, make_judge, render_prompt
    from rlops_plugin.kinds.agent.specs import GraderSpec, TaskEnvSpec
    from rlops_plugin.kinds.agent.tiny_model import TinyModelConfig, build_tiny_model
    from rlops_plugin.kinds.agent.triage import HELD_OUT_TEMPLATES, QUEUES_V2, TEMPLATES
    from rlops_plugin.kinds.agent.triage import conversations as triage_conversations
    from rlops_plugin.serving.agent import AgentModel

    refusal = {"content": "I cannot help with that", "tool_calls": []}
    conversations, refused = [], set()
    for messages, right, wrong, _ in human_pairs(TEMPLATES):
        text = messages[0]["content"]
        rejected = [wrong] + ([refusal] if text not in refused else [])  # a refusal once per ticket
        refused.add(text)
        for answer in rejected:
            for right_first in (True, False):
                a, b = (right, answer) if right_first else (answer, right)
                conversations.append([{"role": "user", "content": render_prompt(JUDGE_PROMPT, messages, a, b)},
                                      {"role": "assistant", "content": "A" if right_first else "B"}])
    conversations += triage_conversations(TEMPLATES, QUEUES_V2)  # which queue a ticket needs
    started = time.perf_counter()
    checkpoint = build_tiny_model(conversations, workdir / f"judge-{seed}",
                                  TinyModelConfig(steps=steps, max_length=128, seed=seed))
    train_s = time.perf_counter() - started
    held_out = human_pairs(HELD_OUT_TEMPLATES)
    tasks = tuple({"id": f"pair-{i}", "messages": [{"role": "user", "content": render_prompt(JUDGE_PROMPT, m, a, b)}],
                   "expected": {"content": "A"}} for i, (m, a, b, _) in enumerate(held_out))
    graded = GraderSpec(graders=({"name": "expected_answer", "ref": reference_of(expected_tool_call)},))
    bundle = agent_bundle(checkpoint, TaskEnvSpec(name="triage-judge", tasks=tasks), graded,
                          generation={"max_new_tokens": 4})
    server = AgentModel("judge", as_loaded(bundle))
    server.load()

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        answer = asyncio.run(server.create_chat_completion(ChatCompletionRequest(**body)))
        return httpx.Response(200, json=answer.model_dump(mode="json"))

    spec = JudgeSpec(name="tiny-judge", type="llm_pairwise", base_url="http://127.0.0.1:9/openai/v1", model="judge",
                     prompt=JUDGE_PROMPT, max_tokens=4)
    try:
        with make_judge(spec, transport=httpx.MockTransport(handle)) as judge:
            agreement = judge_agreement(judge, held_out)
    finally:
        server.stop()
    return {**agreement.to_dict(), "train_s": train_s, "judge_conversations": len(conversations), "steps": steps,
            "order_bias_ties": sum(bool(c.details.get("order_bias")) for c in agreement.comparisons),
            "served_by": "AgentModel in-process behind an httpx transport (no socket), greedy (temperature 0)"}


# ----- summaries ------------------------------------------------------------------------------------
QUALITY = ("new_world", "old_world", "new_world_reviewed", "redteam")
METRICS = (*QUALITY, "train_wall_s")


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": float(statistics.fmean(values)), "min": float(min(values)), "max": float(max(values))}


def summarize(per_seed: dict[int, dict[str, Any]], levels: list[int]) -> dict[str, Any]:
    """Per (recipe, level): mean/min/max over seeds of each metric and of its delta against no update."""
    out: dict[str, Any] = {
        "champion_world1": {k: spread([s["champion_world1"][k] for s in per_seed.values()])
                            for k in next(iter(per_seed.values()))["champion_world1"]},
        "no_update": {m: spread([s["no_update"][m] for s in per_seed.values()]) for m in QUALITY}}
    recipes = sorted({r for s in per_seed.values() for r in s["updates"]})
    for recipe in recipes:
        for level in levels:
            rows = [(s["no_update"], s["updates"][recipe].get(str(level))) for s in per_seed.values()]
            if any(r is None for _, r in rows):
                continue
            entry = {m: spread([r[m] for _, r in rows]) for m in METRICS}
            for m in QUALITY:
                entry[f"{m}_delta"] = spread([r[m] - b[m] for b, r in rows])
            entry["answers_reviewed"] = spread([s["levels"][str(level)]["answers_reviewed"] for s in per_seed.values()])
            out.setdefault(recipe, {})[str(level)] = entry
    return out


def check_targets(summary: dict[str, Any], levels: list[int]) -> dict[str, Any]:
    """Whether the default recipe meets issue 16's targets at each level <= 500 corrections (mean, and worst seed)."""

    def verdict(mean: float, worst: float, ok: Any, target: str) -> dict[str, Any]:
        return {"mean": mean, "worst_seed": worst, "target": target, "met": bool(ok(mean)),
                "met_every_seed": bool(ok(worst))}

    out = {}
    for level in levels:
        entry = summary.get(DEFAULT_RECIPE, {}).get(str(level))
        if entry is None or level > TARGETS["corrections_max"]:
            continue
        new, old, red, wall = (entry["new_world_delta"], entry["old_world_delta"], entry["redteam_delta"],
                               entry["train_wall_s"])
        checks = {
            "new_world_gain": verdict(new["mean"], new["min"], lambda v: v >= TARGETS["new_world_gain_min"] - 1e-9,
                                      f">= +{TARGETS['new_world_gain_min']:.2f}"),
            "old_world_drop": verdict(-old["mean"], -old["min"], lambda v: v <= TARGETS["old_world_drop_max"] + 1e-9,
                                      f"<= {TARGETS['old_world_drop_max']:.2f}"),
            "redteam_regression": verdict(-red["mean"], -red["min"], lambda v: v <= 1e-9, "none (every seed)"),
            "train_wall_s": verdict(wall["mean"], wall["max"], lambda v: v < TARGETS["train_wall_s_max"],
                                    f"< {TARGETS['train_wall_s_max']:.0f}"),
        }
        checks["redteam_regression"]["met"] = checks["redteam_regression"]["met_every_seed"]
        out[str(level)] = {**checks, "all_met": all(c["met"] for c in checks.values())}
    return out


def ope_reference() -> dict[str, Any]:
    """The OPE benchmark's relative errors (bench/results/agent_ope.json), when that file exists."""
    path = HERE / "results" / "agent_ope.json"
    if not path.is_file():
        return {"available": False, "note": f"{path.relative_to(HERE.parent)} does not exist yet (run "
                                            "bench/agent_ope.py); not rerun here"}
    data = json.loads(path.read_text())
    return {"available": True, "source": str(path.relative_to(HERE.parent)),
            "median_rel_error": {k: v.get("median_rel_error") for k, v in data.get("summary", {}).items()},
            "max_rel_error": {k: v.get("max_rel_error") for k, v in data.get("summary", {}).items()}}


def log(message: str) -> None:
    print(f"[agent_learning {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds (1..N; the tuning seed is apart)")
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--corrections", default="100,250,500", help="correction levels, comma-separated")
    parser.add_argument("--steps", type=int, default=COMMON["steps"], help="optimizer steps of every update")
    parser.add_argument("--champion-config", default=json.dumps(CHAMPION_CONFIG),
                        help="TinyModelConfig fields of the champion (JSON)")
    parser.add_argument("--no-grid", action="store_true", help="skip tuning: the first setting of each grid")
    parser.add_argument("--no-judges", action="store_true", help="skip the reward model and LLM judge agreement")
    parser.add_argument("--reward-steps", type=int, default=200)
    parser.add_argument("--judge-steps", type=int, default=300)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: small champion, 1 seed, 30 corrections, 10 steps, one setting per recipe")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    levels = sorted(int(x) for x in args.corrections.split(","))
    args.champion = json.loads(args.champion_config)
    grid = {k: list(v) for k, v in GRID.items()}
    if args.quick:
        args.seeds, levels, args.steps = 1, [15, 30], 10
        args.champion = {"hidden_size": 64, "layers": 2, "heads": 4, "steps": 300}
        args.reward_steps, args.judge_steps = 10, 20
        grid = {k: v[1:2] for k, v in grid.items()}
    import datasets
    import torch
    import transformers

    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    total_started = time.perf_counter()
    from rlops_plugin.kinds.agent.redteam import RedTeamSuite

    redteam = RedTeamSuite.load("triage-redteam")
    suites = world_tasks()
    result: dict[str, Any] = {"benchmark": "agent_learning", "machine": machine()}
    # kserve's OpenAI types log an INFO line to stdout at import: keep stdout for the JSON alone
    with tempfile.TemporaryDirectory(prefix="rlops-bench-agent-learning-") as tmp, \
            contextlib.redirect_stdout(sys.stderr):
        workdir = Path(tmp)
        chosen: dict[str, dict[str, Any]] = {}
        tuning: dict[str, Any] = {}
        if args.no_grid:
            chosen = {k: v[0] for k, v in grid.items()}
        else:
            log(f"tuning seed {args.tune_seed}: champion, traffic, {max(levels)} corrections")
            prep = prepare_seed(args.tune_seed, [max(levels)], args, workdir, suites, redteam)
            tuning = {"seed": args.tune_seed, "corrections": max(levels), **prep["report"], "grid": {}}
            for recipe, settings in grid.items():
                rows = []
                for setting in settings:
                    row = run_update(setting, prep["datasets"][max(levels)], prep["bundle"], args.tune_seed,
                                     args.steps, suites, redteam)
                    rows.append({"setting": setting, "score": list(score(row, prep["report"]["no_update"])), **row})
                    log(f"grid {recipe} {setting}: new {row['new_world']:.2f} old {row['old_world']:.2f} "
                        f"red {row['redteam']:.2f} {row['train_wall_s']:.0f}s")
                best = max(range(len(rows)), key=lambda i: (*rows[i]["score"], -i))
                chosen[recipe] = settings[best]
                tuning["grid"][recipe] = {"rows": rows, "chosen": best}
        per_seed: dict[int, dict[str, Any]] = {}
        final_recipes = [r for r in (*ALL_LEVELS, *MAX_LEVEL_ONLY) if r in chosen]
        judges: dict[str, Any] = {}
        for seed in range(1, args.seeds + 1):
            log(f"seed {seed}: champion, traffic, levels {levels}")
            prep = prepare_seed(seed, levels, args, workdir, suites, redteam)
            report = {**prep["report"], "updates": {}}
            for recipe in final_recipes:
                for level in (levels if recipe in ALL_LEVELS else [max(levels)]):
                    row = run_update(chosen[recipe], prep["datasets"][level], prep["bundle"], seed, args.steps,
                                     suites, redteam)
                    report["updates"].setdefault(recipe, {})[str(level)] = row
                    log(f"seed {seed} {recipe}@{level}: new {row['new_world']:.2f} old {row['old_world']:.2f} "
                        f"red {row['redteam']:.2f} {row['train_wall_s']:.0f}s")
            if seed == 1 and not args.no_judges:
                log("reward model and LLM judge agreement")
                try:
                    judges["reward_model"] = reward_model_agreement(prep["bundle"], prep["datasets"][max(levels)],
                                                                    seed, args.reward_steps)
                except ImportError as exc:
                    judges["reward_model"] = {"skipped": f"module missing: {exc}"}
                try:
                    judges["llm_judge"] = llm_judge_agreement(workdir, seed, args.judge_steps)
                except ImportError as exc:
                    judges["llm_judge"] = {"skipped": f"module missing: {exc}"}
            per_seed[seed] = report
    summary = summarize(per_seed, levels)
    result.update(
        settings={"evaluation_seeds": list(per_seed), "corrections": levels, "answers_per_request": ANSWERS_PER_REQUEST,
                  "temperature": 1.0, "max_tokens": MAX_TOKENS, "champion_config": args.champion,
                  "common_update_settings": {**COMMON, "steps": args.steps}, "quick": args.quick,
                  "default_recipe": DEFAULT_RECIPE, "recipes_at_every_level": list(ALL_LEVELS),
                  "recipes_at_max_level_only": list(MAX_LEVEL_ONLY),
                  "tuning_criterion": "on the tuning seed at the largest level: no red-team regression first, then max "
                                      "new_world + old_world; ties to the lower lr",
                  "eval": {"new_world": f"{len(suites['new_world'])} world-2 tickets, held-out phrasing",
                           "old_world": f"{len(suites['old_world'])} world-1 tickets of unchanged keywords, "
                                        "every phrasing", "redteam": f"triage-redteam, {len(redteam.cases)} cases",
                           "decoding": "greedy"}},
        chosen_settings=chosen, tuning=tuning, summary=summary, targets=check_targets(summary, levels),
        target_definitions=TARGETS, judges=judges or {"skipped": "--no-judges"}, ope=ope_reference(),
        per_seed={str(k): v for k, v in per_seed.items()}, total_wall_s=time.perf_counter() - total_started)
    emit(result)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
