"""Agent OPE benchmark: the off-policy estimate of candidate agents from logs against their true value.

For each of ``--seeds`` seeds: the tiny triage agent (``build_triage_agent``, weights seeded) is the served
champion. It answers every ticket of the triage task suite ``--requests`` times with ``n=--n`` choices at
temperature 1 through the real agent server code (``AgentModel`` in-process, no HTTP: the records are what
``rlops serve`` writes), into a SQLite experience store; a simulated user rates each choice with a thumbs
rating from the task's grader (+1 the expected ``route`` call, -1 anything else). Candidates:

* ``champion``: the champion itself (every weight is 1; the estimate is the logged mean);
* ``champion_t0.7`` and ``champion_t1.3``: the champion served at another temperature;
* ``other_model``: a second tiny model (another weight seed, ``--other-steps`` training steps) at temperature 1.

Each candidate's true value is measured on-policy: ``--truth-samples`` answers per ticket sampled from it,
rated by the same simulated user. ``estimate_agent_from_log`` then estimates it from the champion's log
(self-normalized IS, bootstrap interval over interactions). Prints one JSON object: per candidate and seed
the estimate, interval, effective sample size, exclusions, true value (with its Monte Carlo standard error),
absolute and relative error (``|estimate - truth| / |truth|``) and whether the interval covers the truth;
per candidate the median and largest relative error over seeds. Usage:
``python bench/agent_ope.py [--seeds 3] [--requests 4] [--n 8] [--truth-samples 200] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

MODEL_NAME = "triage"
MAX_TOKENS = 40


def log_champion(bundle: Any, store: Any, tasks: list[dict[str, Any]], requests: int, n: int, temperature: float,
                 seed: int) -> int:
    """Serve every task ``requests`` times through ``AgentModel`` (in-process) into ``store``; interactions logged."""
    from kserve.protocol.rest.openai.types import ChatCompletionRequest

    from rlops_plugin.flavor.model import as_loaded
    from rlops_plugin.kinds.agent.triage import TOOLS
    from rlops_plugin.serving.agent import AgentModel, AgentServingOptions

    server = AgentModel(MODEL_NAME, as_loaded(bundle), store=store, options=AgentServingOptions(max_n=n))
    server.load()

    async def drive() -> int:
        count = 0
        for j in range(requests):
            for i, task in enumerate(tasks):
                request = ChatCompletionRequest(model=MODEL_NAME, messages=task["messages"], tools=TOOLS, n=n,
                                                temperature=temperature, max_tokens=MAX_TOKENS,
                                                seed=seed * 1_000_003 + j * len(tasks) + i)
                response = await server.create_chat_completion(request)
                if not hasattr(response, "choices"):
                    raise RuntimeError(f"the agent server refused a request: {response}")
                count += 1
        return count

    try:
        return asyncio.run(drive())
    finally:
        server.stop()


def rate_log(store: Any, graders: Any, tasks: list[dict[str, Any]]) -> int:
    """The simulated user: a thumbs rating per logged choice from the grader (+1 expected call, else -1)."""
    from rlops_plugin.experience.feedback import parse_feedback
    from rlops_plugin.kinds.agent.triage import TOOLS

    by_text = {t["messages"][-1]["content"]: t for t in tasks}
    events = []
    for _, record in store.iter_interactions(model=MODEL_NAME):
        task = by_text[record.request["messages"][-1]["content"]]
        for choice in record.choices:
            events.append(parse_feedback({"interaction_id": record.interaction_id, "choice": choice["index"],
                                          "kind": "rating", "value": simulated_rating(graders, choice, task, TOOLS),
                                          "scale": "thumbs", "timestamp": record.ts + 1}))
    store.add_feedback(events)
    return len(events)


def simulated_rating(graders: Any, choice: dict[str, Any], task: dict[str, Any], tools: list[dict[str, Any]]) -> int:
    """Thumbs up when the answer is the task's expected tool call, else down."""
    return 1 if graders.grade(choice, task, tools)["expected_call"] == 1.0 else -1


def true_value(policy: Any, graders: Any, tasks: list[dict[str, Any]], temperature: float, samples: int,
               seed: int) -> tuple[float, float]:
    """Mean simulated rating of ``samples`` on-policy answers per task, and its standard error."""
    from rlops_plugin.kinds.agent.triage import TOOLS

    ratings = []
    for i, task in enumerate(tasks):
        prompt = policy.render(task["messages"], TOOLS)
        for k in range(0, samples, 50):
            for g in policy.generate(prompt, n=min(50, samples - k), temperature=temperature,
                                     max_new_tokens=MAX_TOKENS, seed=seed * 7919 + i * 131 + k):
                content, calls = policy.parse_tool_calls(policy.decode(g.token_ids))
                ratings.append(simulated_rating(graders, {"content": content, "tool_calls": calls}, task, TOOLS))
    arr = np.asarray(ratings, float)
    return float(arr.mean()), float(arr.std(ddof=1) / np.sqrt(arr.size))


def run_seed(seed: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from rlops_plugin.evaluation.agent_ope import AgentOPEError, estimate_agent_from_log
    from rlops_plugin.experience.store import open_store
    from rlops_plugin.kinds.agent.tiny_model import TinyModelConfig
    from rlops_plugin.kinds.agent.triage import build_triage_agent

    started = time.perf_counter()
    champion = build_triage_agent(workdir / f"champion-{seed}", TinyModelConfig(seed=seed))
    other = build_triage_agent(workdir / f"other-{seed}", TinyModelConfig(seed=seed + 100, steps=args.other_steps))
    build_s = time.perf_counter() - started
    tasks = list(champion.env_spec.tasks)
    graders = champion.reward_spec
    candidates = {"champion": (champion.policy, None), "champion_t0.7": (champion.policy, 0.7),
                  "champion_t1.3": (champion.policy, 1.3), "other_model": (other.policy, None)}
    out: dict[str, Any] = {"build_s": build_s}
    with open_store(workdir / f"store-{seed}.db") as store:
        started = time.perf_counter()
        interactions = log_champion(champion, store, tasks, args.requests, args.n, 1.0, seed)
        ratings = rate_log(store, graders, tasks)
        out.update(interactions=interactions, rated_answers=ratings, log_s=time.perf_counter() - started)
        for name, (policy, temperature) in candidates.items():
            truth, truth_se = true_value(policy, graders, tasks, 1.0 if temperature is None else temperature,
                                         args.truth_samples, seed)
            started = time.perf_counter()
            sampling = None if temperature is None else {"temperature": temperature}
            refused = None
            try:
                est = estimate_agent_from_log(store, MODEL_NAME, policy, sampling=sampling, seed=seed)
            except AgentOPEError as exc:
                refused, est = str(exc), exc.estimate
            row: dict[str, Any] = {"truth": truth, "truth_se": truth_se, "refused": refused,
                                   "estimate_s": time.perf_counter() - started}
            if est is not None:
                error = est.value - truth
                d = est.details
                row.update(estimate=est.value, ci=[est.ci_low, est.ci_high], ess=est.ess, n=est.n,
                           logged_value=est.logged_value, abs_error=abs(error),
                           rel_error=abs(error) / abs(truth) if truth else None,
                           covered=est.ci_low <= truth <= est.ci_high, counts=est.counts,
                           max_weight_share=d["max_weight_share"], ips=d["ips"],
                           coverage=[d["coverage"], d["coverage_ci_low"], d["coverage_ci_high"]],
                           unseen_bounds=d["unseen_bounds"],
                           truth_in_unseen_bounds=d["unseen_bounds"][0] <= truth <= d["unseen_bounds"][1])
            out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4, help="requests per ticket in the champion's log")
    parser.add_argument("--n", type=int, default=8, help="choices per request")
    parser.add_argument("--truth-samples", type=int, default=200, help="on-policy answers per ticket for the truth")
    parser.add_argument("--other-steps", type=int, default=250, help="training steps of the second model")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 requests, 100 truth samples")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.requests, args.truth_samples = 1, 2, 100
    import torch

    torch.set_num_threads(1)
    # kserve's OpenAI types log an INFO line to stdout at import: keep stdout for the JSON alone
    with tempfile.TemporaryDirectory(prefix="rlops-bench-agent-ope-") as tmp, contextlib.redirect_stdout(sys.stderr):
        per_seed = {seed: run_seed(seed, args, Path(tmp)) for seed in range(args.seeds)}
    names = ("champion", "champion_t0.7", "champion_t1.3", "other_model")
    summary = {}
    for name in names:
        rows = [per_seed[s][name] for s in per_seed]
        accepted = [r for r in rows if r["refused"] is None]
        rel = [r["rel_error"] for r in accepted if r.get("rel_error") is not None]
        summary[name] = {"accepted": len(accepted), "refused": len(rows) - len(accepted),
                         "median_rel_error": float(np.median(rel)) if rel else None,
                         "max_rel_error": float(np.max(rel)) if rel else None,
                         "ci_covers_truth": sum(bool(r["covered"]) for r in accepted),
                         "rel_error_of_refused": [r.get("rel_error") for r in rows if r["refused"] is not None],
                         "refused_truth_in_unseen_bounds": sum(bool(r.get("truth_in_unseen_bounds")) for r in rows
                                                               if r["refused"] is not None)}
    emit({"benchmark": "agent_ope", "machine": machine(),
          "settings": {"seeds": args.seeds, "requests_per_ticket": args.requests, "n": args.n,
                       "logged_temperature": 1.0, "truth_samples_per_ticket": args.truth_samples,
                       "other_model_steps": args.other_steps, "estimator": "snips, bootstrap over interactions",
                       "reward": "thumbs rating of a simulated user (the task's expected_call grader)"},
          "summary": summary, "per_seed": {str(k): v for k, v in per_seed.items()}})


if __name__ == "__main__":
    main()
