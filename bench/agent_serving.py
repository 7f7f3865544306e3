"""Agent serving benchmark: `rlops serve` (durable logging, log-probs, MLflow traces) vs a bare OpenAI model.

The same tiny triage agent (``build_triage_agent``, seed 0) is served on KServe's OpenAI data plane
(``/openai/v1/chat/completions``), all on 127.0.0.1, one worker, one torch thread, and driven by the
official ``openai`` client in one run:

* ``bare`` (a): a minimal ``kserve.protocol.rest.openai.OpenAIGenerativeModel`` subclass on the real
  ``kserve.ModelServer`` REST stack (this file, ``--peer``). It loads the same checkpoint with
  ``transformers``, renders the chat template, calls ``model.generate(do_sample=True, temperature=1.0,
  top_k=0)`` on one generation thread (as rlops does, so the event loop stays free) and returns a
  ``ChatCompletion``: no validation, no tool-call parsing, no log-probs, no logging.
* ``rlops`` (b): ``rlops serve`` with the SQLite experience store (each interaction committed before
  the answer), exact log-probs, tool-call parsing and MLflow trace mirroring to a real local
  ``mlflow server`` (``--traces on``);
* ``rlops_store`` (b1): the same without traces; ``rlops_nolog`` (b0): no store, no traces. The steps
  a -> b0 -> b1 -> b separate generation + request handling, the durable log and the trace mirror.

Every request ``i`` (a ticket from ``triage.tickets()``, the ``route`` tool offered, temperature 1.0,
``max_tokens`` 40) carries ``seed=i``, so all servers sample the same tokens (checked and reported).
Rounds are interleaved (a, b0, b1, b, then rotated) and the servers not being measured are paused with
SIGSTOP; after each ``rlops`` phase the trace mirror is let drain before the next server runs, and that
drain time is reported. Workloads: sequential interactions on one client, and ``--clients`` (4)
concurrent clients. Prints one JSON object: median and p90 latency per interaction (sequential),
interactions/s (concurrent; for ``rlops`` also counting the time until every trace was written), the
ratios b/a against their targets (<= 3% added latency, throughput within 5%), server CPU time per
interaction, and where rlops' time goes: the same pieces timed in this process after the servers ran
(generation with and without log-probs, validation, the SQLite commit, the trace mirror's cost in the
serving process and in the MLflow server). Without ``rlops_plugin.experience.traces`` (b) runs with
``--traces off`` and the JSON says ``"trace_mirroring": false``. Usage:
``python bench/agent_serving.py [--quick] [--rounds 6] [--requests 40] [--clients 4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, serve_on_localhost  # noqa: E402

HERE = Path(__file__).resolve().parent
MODEL_NAME = "triage"
MAX_TOKENS = 40
LATENCY_TARGET = 1.03
THROUGHPUT_TARGET = 0.95


# ----- (a) the peer: a bare OpenAIGenerativeModel that only generates ---------------------------------
def peer_main(model_dir: str, port: int, name: str) -> None:
    """Serve ``model_dir`` with a bare ``OpenAIGenerativeModel`` on 127.0.0.1:``port`` until SIGTERM."""
    import asyncio
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import torch

    sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv at import
    from kserve.protocol.rest.openai import OpenAIGenerativeModel
    from kserve.protocol.rest.openai.types import ChatCompletion, ChatCompletionChoice, ChatMessage, UsageInfo
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(1)

    class BareGenerator(OpenAIGenerativeModel):
        def load(self) -> bool:
            self.model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=False,
                                                              local_files_only=True).eval()
            self.tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir, local_files_only=True)
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
            self.ready = True
            return True

        def _generate(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                      max_new_tokens: int, temperature: float, seed: int | None) -> tuple[list[int], list[int]]:
            tok = self.tokenizer
            text = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
            prompt = tok(text, add_special_tokens=False)["input_ids"]
            input_ids = torch.tensor([prompt])
            with torch.inference_mode():
                if seed is not None:
                    torch.manual_seed(seed)
                out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                          do_sample=True, temperature=temperature, top_k=0,
                                          max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
            return prompt, out[0, input_ids.shape[1]:].tolist()

        async def create_chat_completion(self, request: Any, raw_request: Any = None,
                                         context: dict[str, Any] | None = None) -> Any:
            messages = [{"role": m["role"], "content": m.get("content") or ""} for m in request.messages]
            tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
            max_new = request.max_completion_tokens or request.max_tokens or MAX_TOKENS
            temperature = 1.0 if request.temperature is None else request.temperature
            prompt, tokens = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._generate, messages, tools, max_new, temperature, request.seed)
            eos = self.tokenizer.eos_token_id
            finish = "stop" if eos in tokens else "length"
            tokens = tokens[:tokens.index(eos) + 1] if eos in tokens else tokens
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            return ChatCompletion(
                id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=self.name,
                choices=[ChatCompletionChoice(index=0, message=ChatMessage(role="assistant", content=text),
                                              finish_reason=finish)],
                usage=UsageInfo(prompt_tokens=len(prompt), completion_tokens=len(tokens),
                                total_tokens=len(prompt) + len(tokens)))

        async def create_completion(self, request: Any, raw_request: Any = None,
                                    context: dict[str, Any] | None = None) -> Any:
            raise NotImplementedError("the bare peer serves chat completions only")

    model = BareGenerator(name)
    model.load()
    serve_on_localhost(model, port)


# ----- the driver ------------------------------------------------------------------------------------
class Target:
    """One server under test."""

    def __init__(self, name: str, url: str, process: Any, mirror: bool = False) -> None:
        self.name = name
        self.url = url
        self.process = process
        self.mirror = mirror
        self.cpu_s = 0.0
        self.interactions = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def pause(self) -> None:
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pid, signal.SIGCONT)

    def cpu_time(self) -> float:
        """User + system CPU seconds of the server process (and any children) so far."""
        return _group_cpu(self.pid)

    def client(self) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.url}/openai/v1", api_key="bench", max_retries=0, timeout=120)

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/rlops/v1/status", timeout=10) as resp:  # noqa: S310 - local
            return json.loads(resp.read())["models"][0]


def request_kwargs(i: int, ticket_texts: list[str]) -> dict[str, Any]:
    from rlops_plugin.kinds.agent.triage import ROUTE_TOOL

    return {"model": MODEL_NAME, "messages": [{"role": "user", "content": ticket_texts[i % len(ticket_texts)]}],
            "tools": [ROUTE_TOOL], "temperature": 1.0, "max_tokens": MAX_TOKENS, "seed": i}


def answer_of(completion: Any) -> str:
    """What was generated, normalized (the bare peer returns the call as text, rlops parses it)."""
    message = completion.choices[0].message
    if message.tool_calls:
        calls = [{"name": c.function.name, "arguments": json.loads(c.function.arguments)}
                 for c in message.tool_calls]
        return json.dumps(calls[0] if len(calls) == 1 else calls, sort_keys=True)
    text = message.content or ""
    try:
        return json.dumps(json.loads(text), sort_keys=True)
    except ValueError:
        return text


def run_sequential(target: Target, kwargs: list[dict[str, Any]], warmup: int) -> tuple[list[float], dict[int, str]]:
    client = target.client()
    for k in kwargs[:warmup]:
        client.chat.completions.create(**k)
    latencies, answers = [], {}
    for k in kwargs:
        start = time.perf_counter()
        completion = client.chat.completions.create(**k)
        latencies.append(time.perf_counter() - start)
        answers[k["seed"]] = answer_of(completion)
    client.close()
    return latencies, answers


def run_concurrent(target: Target, kwargs: list[dict[str, Any]],
                   clients: int) -> tuple[float, float, list[float]]:
    """Interactions per second with ``clients`` threads (each its own client and connection), wall, latencies."""
    per_client = [kwargs[k::clients] for k in range(clients)]
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(mine: list[dict[str, Any]]) -> None:
        client = target.client()
        client.chat.completions.create(**mine[0])  # open the connection before the clock starts
        barrier.wait()
        out = []
        try:
            for k in mine:
                start = time.perf_counter()
                client.chat.completions.create(**k)
                out.append(time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"{type(exc).__name__}: {exc}")
        with lock:
            latencies.extend(out)
        client.close()

    threads = [threading.Thread(target=worker, args=(mine,)) for mine in per_client]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{target.name}: {errors[:3]}")
    return len(latencies) / wall, wall, latencies


def wait_for_mirror(target: Target, timeout: float = 120.0) -> float:
    """Seconds until the server's trace mirror has nothing queued."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        mirror = target.status().get("trace_mirror") or {}
        if not mirror.get("queued"):
            return time.perf_counter() - start
        time.sleep(0.05)
    raise RuntimeError(f"{target.name}: trace mirror still has {mirror} after {timeout:.0f}s")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 12 requests (about 1 minute)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 6; --quick: 2)")
    parser.add_argument("--requests", type=int,
                        help="interactions per sequential and per concurrent phase (default 40; --quick: 12)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3, help="requests before each measured phase")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process phase timings")
    args = parser.parse_args()
    if args.peer:
        peer_main(args.model_dir, args.port, MODEL_NAME)
        return
    args.rounds = args.rounds or (2 if args.quick else 6)
    args.requests = args.requests or (12 if args.quick else 40)
    if args.requests < args.clients or args.rounds < 1:
        parser.error(f"--requests must be at least --clients ({args.clients}) and --rounds at least 1")
    run_benchmark(args)


def run_benchmark(args: argparse.Namespace) -> None:
    from rlops_plugin import flavor
    from rlops_plugin.kinds.agent.triage import build_triage_agent, tickets
    from rlops_plugin.local.mlflow_server import LocalMlflowServer
    from rlops_plugin.local.processes import ManagedProcess, free_port
    from rlops_plugin.serving.process import PolicyServerProcess

    t_setup = time.perf_counter()
    setup: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="rlops-bench-agent-"))
    try:
        import rlops_plugin.experience.traces  # noqa: F401 - the mirror (b) needs
        traces_available = True
    except ImportError:
        traces_available = False
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    mlflow_server = LocalMlflowServer(work / "mlflow") if traces_available else None
    mlflow_error: list[BaseException] = []

    def start_mlflow() -> None:  # in the background while the agent is built (its URL is known already)
        start = time.perf_counter()
        try:
            mlflow_server.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            mlflow_error.append(exc)
        setup["mlflow_server_s"] = time.perf_counter() - start

    mlflow_thread = threading.Thread(target=start_mlflow, daemon=True) if mlflow_server else None
    peer_port = free_port()
    servers: dict[str, PolicyServerProcess] = {}
    targets: list[Target] = []
    peer: ManagedProcess | None = None
    try:
        if mlflow_thread is not None:
            mlflow_thread.start()
        bundle = build_triage_agent(work / "checkpoint")
        model_dir = work / "model"
        flavor.save_model(bundle, model_dir)
        checkpoint = model_dir / "bundle" / "policy" / "model"
        setup["build_agent_s"] = time.perf_counter() - t_setup
        t_servers = time.perf_counter()
        peer = ManagedProcess([sys.executable, str(Path(__file__).resolve()), "--peer", "--model_dir",
                               str(checkpoint), "--port", str(peer_port)], work / "bare.log", env=env)
        peer.start()
        traced_env = {**env, "MLFLOW_TRACKING_URI": mlflow_server.url} if mlflow_server else env
        configs = {"rlops_nolog": (None, "off", env), "rlops_store": (str(work / "store_b1.db"), "off", env),
                   "rlops": (str(work / "store_b.db"), "on" if traces_available else "off", traced_env)}
        for name, (store, traces, server_env) in configs.items():
            servers[name] = PolicyServerProcess(str(model_dir), work / f"{name}.log", name=MODEL_NAME, store=store,
                                                extra_args=["--traces", traces], env=server_env)
            # PolicyServerProcess adds os.environ back: only the traced server may see a tracking URI
            servers[name].process.env = {k: v for k, v in servers[name].process.env.items()
                                         if k != "MLFLOW_TRACKING_URI" or traces == "on"}
            servers[name].process.start()
        peer.wait_healthy(f"http://127.0.0.1:{peer_port}/v1/models/{MODEL_NAME}", 240)
        for server in servers.values():
            server.process.wait_healthy(f"{server.url}/v1/models/{MODEL_NAME}", 240)
        setup["policy_servers_s"] = time.perf_counter() - t_servers
        if mlflow_thread is not None:
            mlflow_thread.join()
            if mlflow_error:
                raise mlflow_error[0]
        targets = [Target("bare", f"http://127.0.0.1:{peer_port}", peer),
                   *(Target(name, s.url, s.process, mirror=configs[name][1] == "on") for name, s in servers.items())]
        texts = [text for text, _ in tickets()]
        kwargs = [request_kwargs(i, texts) for i in range(args.requests)]
        warm = [request_kwargs(10_000 + i, texts) for i in range(max(args.warmup, 1))]
        for target in targets:  # first requests load lazily-imported code paths
            client = target.client()
            for k in warm * 3:
                client.chat.completions.create(**k)
            client.close()
        for target in targets:
            if target.mirror:
                wait_for_mirror(target)
        setup["total_s"] = time.perf_counter() - t_setup
        print(f"setup {setup['total_s']:.1f}s", file=sys.stderr)

        seq: dict[str, list[float]] = {t.name: [] for t in targets}
        seq_rounds: dict[str, list[float]] = {t.name: [] for t in targets}
        conc: dict[str, list[float]] = {t.name: [] for t in targets}
        conc_sustained: dict[str, list[float]] = {t.name: [] for t in targets}
        conc_lat: dict[str, list[float]] = {t.name: [] for t in targets}
        answers: dict[str, dict[int, str]] = {t.name: {} for t in targets}
        drains: list[float] = []
        mlflow_cpu_s = 0.0
        t_measure = time.perf_counter()
        for r in range(args.rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            for target in order:
                for other in targets:
                    if other is not target:
                        other.pause()
                target.resume()
                cpu0 = target.cpu_time()
                mlflow0 = _group_cpu(mlflow_server.process.pid) if target.mirror else 0.0
                lat, ans = run_sequential(target, kwargs, args.warmup)
                seq[target.name] += lat
                seq_rounds[target.name].append(float(np.median(lat)))
                answers[target.name].update(ans)
                rps, wall, clat = run_concurrent(target, kwargs, args.clients)
                conc[target.name].append(rps)
                conc_lat[target.name] += clat
                drain = wait_for_mirror(target) if target.mirror else 0.0
                if target.mirror:
                    drains.append(drain)
                    mlflow_cpu_s += _group_cpu(mlflow_server.process.pid) - mlflow0
                conc_sustained[target.name].append(len(clat) / (wall + drain))
                target.cpu_s += target.cpu_time() - cpu0
                target.interactions += args.warmup + 2 * len(kwargs) + args.clients
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        measure_s = time.perf_counter() - t_measure
        rlops_target = next(t for t in targets if t.name == "rlops")
        rlops_target.resume()
        status = rlops_target.status()
        rlops_target.pause()
        store_counts = {name: _store_count(configs[name][0]) for name in ("rlops_store", "rlops")}
        traces_stored = _count_traces(mlflow_server.url) if mlflow_server else None
        phases = None
        if not args.no_breakdown:  # policy servers paused; the MLflow server is still up for the mirror's timing
            phases = breakdown(checkpoint, model_dir, kwargs, work, mlflow_server)
    except BaseException:
        print(f"failed; logs of the servers are under {work}", file=sys.stderr)
        raise
    finally:
        for target in targets:
            try:
                target.resume()
            except ProcessLookupError:
                pass
        for server in servers.values():
            server.stop()
        if peer is not None:
            peer.stop()
        if mlflow_thread is not None and mlflow_thread.is_alive():
            mlflow_thread.join()
        if mlflow_server is not None:
            mlflow_server.stop()
    shutil.rmtree(work, ignore_errors=True)  # on success only: after a failure the servers' logs stay there

    c = f"concurrent_{args.clients}"
    results = {}
    for t in targets:
        results[t.name] = {
            "sequential": {"interactions": len(seq[t.name]), "p50_ms": pct(seq[t.name], 50),
                           "p90_ms": pct(seq[t.name], 90),
                           "interactions_per_s": len(seq[t.name]) / sum(seq[t.name])},
            c: {"interactions_per_s": float(statistics.median(conc[t.name])),
                "interactions_per_s_traces_drained": float(statistics.median(conc_sustained[t.name])),
                "rounds_interactions_per_s": [round(x, 2) for x in conc[t.name]],
                "p50_ms": pct(conc_lat[t.name], 50), "p90_ms": pct(conc_lat[t.name], 90)},
            "server_cpu_ms_per_interaction": 1000.0 * t.cpu_s / t.interactions,
        }

    def paired(name: str, values: dict[str, list[float]]) -> float:
        """Median over rounds of name's value / bare's value in the same round."""
        return float(statistics.median(x / y for x, y in zip(values[name], values["bare"], strict=True)))

    def vs(name: str) -> dict[str, float]:
        a, b = results["bare"], results[name]
        return {"p50_latency": b["sequential"]["p50_ms"] / a["sequential"]["p50_ms"],
                "p90_latency": b["sequential"]["p90_ms"] / a["sequential"]["p90_ms"],
                "p50_latency_paired_rounds": paired(name, seq_rounds),
                "throughput": b[c]["interactions_per_s"] / a[c]["interactions_per_s"],
                "throughput_paired_rounds": paired(name, conc),
                "throughput_traces_drained": b[c]["interactions_per_s_traces_drained"] / a[c]["interactions_per_s"],
                "server_cpu_per_interaction": b["server_cpu_ms_per_interaction"] / a["server_cpu_ms_per_interaction"]}

    ratios = {f"{name}/bare": {k: round(v, 4) for k, v in vs(name).items()}
              for name in ("rlops_nolog", "rlops_store", "rlops")}
    main_ratio = ratios["rlops/bare"]
    targets_met = {
        "rlops p50 latency <= 1.03x bare (sequential)": {
            "value": main_ratio["p50_latency"], "met": main_ratio["p50_latency"] <= LATENCY_TARGET},
        "rlops p90 latency <= 1.03x bare (sequential)": {
            "value": main_ratio["p90_latency"], "met": main_ratio["p90_latency"] <= LATENCY_TARGET},
        f"rlops throughput >= 0.95x bare ({args.clients} concurrent clients)": {
            "value": main_ratio["throughput"], "met": main_ratio["throughput"] >= THROUGHPUT_TARGET},
    }
    base = answers["bare"]
    same = {name: sum(answers[name].get(i) == a for i, a in base.items()) / len(base)
            for name in answers if name != "bare"}
    p50 = {name: results[name]["sequential"]["p50_ms"] for name in results}
    out: dict[str, Any] = {
        "benchmark": "agent_serving", "machine": machine(), "rounds": args.rounds, "requests": args.requests,
        "clients": args.clients, "max_tokens": MAX_TOKENS, "trace_mirroring": traces_available,
        "note": ("latencies pooled over interleaved rounds, throughput the median over rounds (servers not being "
                 "measured are SIGSTOPped); client, servers and the MLflow server share the machine's cores; "
                 "request i carries seed i on every server"),
        "setup_s": {k: round(v, 1) for k, v in setup.items()}, "measure_s": round(measure_s, 1),
        "results": results, "ratios": ratios, "targets": targets_met,
        "all_met": all(v["met"] for v in targets_met.values()),
        "same_completion_as_bare": same,
        "added_p50_ms_by_step": {
            "rlops_nolog - bare (rlops request path: validation, log-probs, tool-call parsing, ids)":
                round(p50["rlops_nolog"] - p50["bare"], 3),
            "rlops_store - rlops_nolog (durable SQLite log)": round(p50["rlops_store"] - p50["rlops_nolog"], 3),
            "rlops - rlops_store (trace mirroring)": round(p50["rlops"] - p50["rlops_store"], 3)},
        "rlops": {"store_interactions": store_counts, "trace_mirror": status.get("trace_mirror"),
                  "traces_in_mlflow": traces_stored,
                  "mirror_drain_after_concurrent_phase_s": {"median": float(np.median(drains)) if drains else None,
                                                            "max": max(drains) if drains else None},
                  "mlflow_server_cpu_ms_per_trace": (1000.0 * mlflow_cpu_s / rlops_target.interactions
                                                     if mlflow_server else None)},
    }
    if phases is not None:
        out["in_process_ms_per_interaction"] = phases
    emit(out)


def _group_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the MLflow server runs uvicorn and a job runner)."""
    import psutil

    total = 0.0
    proc = psutil.Process(pid)
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _store_count(path: str | None) -> int | None:
    if path is None:
        return None
    import sqlite3

    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM interactions").fetchone()[0])


def _count_traces(tracking_uri: str) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"rlops-agent-{MODEL_NAME}")
    if experiment is None:
        return 0
    count, token = 0, None
    while True:
        page = client.search_traces(locations=[experiment.experiment_id], max_results=500, page_token=token,
                                    include_spans=False)
        count += len(page)
        token = page.token
        if not token:
            return count


def breakdown(checkpoint: Path, model_dir: Path, kwargs: list[dict[str, Any]], work: Path,
              mlflow_server: Any) -> dict[str, Any]:
    """Where an interaction's time goes in rlops, measured in this process (one torch thread, servers paused)."""
    import asyncio
    import contextlib
    import dataclasses
    import timeit

    import torch
    from jsonschema.validators import validator_for
    from transformers import AutoModelForCausalLM

    from rlops_plugin.experience.records import new_batch_id
    from rlops_plugin.experience.store import open_store
    from rlops_plugin.flavor.model import load_model_with_source

    with contextlib.redirect_stdout(sys.stderr):  # vllm (under kserve's OpenAI types) logs to stdout: keep JSON clean
        from kserve.protocol.rest.openai.types import ChatCompletionRequest

        from rlops_plugin.serving.agent import AgentModel

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), trust_remote_code=False,
                                                 local_files_only=True).eval()
    champion = load_model_with_source(str(model_dir))
    agent = AgentModel(MODEL_NAME, champion)
    agent.load()
    policy = agent.policy
    _, tok = policy.load()
    prompts = [policy.render(k["messages"], k["tools"]) for k in kwargs]
    requests = [ChatCompletionRequest(**k) for k in kwargs]

    def bare(i: int) -> None:
        ids = torch.tensor([prompts[i]])
        with torch.inference_mode():
            torch.manual_seed(kwargs[i]["seed"])
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                           top_k=0, max_new_tokens=MAX_TOKENS, pad_token_id=tok.pad_token_id)

    def with_logprobs(i: int) -> None:
        policy.generate(prompts[i], n=1, temperature=1.0, top_p=1.0, max_new_tokens=MAX_TOKENS,
                        seed=kwargs[i]["seed"])

    async def answer_all() -> None:
        for request in requests:
            await agent.create_chat_completion(request)

    def answer(_: int) -> None:
        asyncio.run(answer_all())

    def per_request(fn: Any) -> float:
        start = time.perf_counter()
        for i in range(1 if fn is answer else len(kwargs)):
            fn(i)
        return 1000.0 * (time.perf_counter() - start) / len(kwargs)

    def each(fn: Any, number: int = 200) -> float:
        return 1000.0 * min(timeit.repeat(fn, number=number, repeat=5)) / number

    names = {bare: "generate: bare model.generate", with_logprobs: "generate: rlops AgentPolicy.generate (log-probs)",
             answer: "AgentModel.create_chat_completion (generation + request handling, no store)"}
    runs: dict[str, list[float]] = {name: [] for name in names.values()}
    for _ in range(3):  # alternated, so all three see the same drift; the best of three each
        for fn, name in names.items():
            runs[name].append(per_request(fn))
    out: dict[str, Any] = {name: min(v) for name, v in runs.items()}
    parameters = kwargs[0]["tools"][0]["function"]["parameters"]
    out["validation: AgentModel._prepare (chat template included)"] = each(
        lambda: agent._prepare(requests[0], None, chat=True))
    out["validation: jsonschema check_schema of the offered tool (part of _prepare)"] = each(
        lambda: validator_for(parameters).check_schema(parameters))
    out["validation: render chat template + tokenize (part of _prepare; the bare peer does it too)"] = each(
        lambda: policy.render(kwargs[0]["messages"], kwargs[0]["tools"]))
    cached = policy.generate(prompts[0], n=1, temperature=1.0, max_new_tokens=MAX_TOKENS, seed=kwargs[0]["seed"])
    policy.generate = lambda *a, **k: cached  # the instance attribute shadows the method until deleted

    async def handle_many(n: int) -> None:
        for _ in range(n):
            await agent.create_chat_completion(requests[0])

    try:
        out["request handling: AgentModel.create_chat_completion with generation stubbed"] = 1000.0 * min(
            timeit.repeat(lambda: asyncio.run(handle_many(200)), number=1, repeat=5)) / 200
    finally:
        del policy.generate
    agent.stop()

    with open_store(str(work / "breakdown.db")) as store:  # records as the server writes them
        logged = AgentModel(MODEL_NAME, champion, store=store)
        logged.load()
        for request in requests:
            asyncio.run(logged.create_chat_completion(request))
        logged.stop()
        records = list(store.get_interactions(_interaction_ids(work / "breakdown.db")).values())
        copies = [dataclasses.replace(r, interaction_id=new_batch_id()) for r in records * 5]

        async def commit_all() -> None:
            for rec in copies:
                await store.log_interactions_async([rec])

        start = time.perf_counter()
        asyncio.run(commit_all())
        out["durable log: SQLite commit (log_interactions_async, on the event loop)"] = (
            1000.0 * (time.perf_counter() - start) / len(copies))
    try:
        from rlops_plugin.experience.traces import TraceMirror, build_trace
    except ImportError:
        return {k: round(v, 3) for k, v in out.items()}
    out["trace mirror: build_trace"] = each(lambda: build_trace(records[0], "1"))
    if mlflow_server is not None:
        with TraceMirror(mlflow_server.url, experiment="rlops-bench-breakdown") as warm:
            for rec in records[:3]:
                warm.submit(dataclasses.replace(rec, interaction_id=new_batch_id()))
        mirror = TraceMirror(mlflow_server.url, experiment="rlops-bench-breakdown")
        cpu0, mlflow0, start = time.process_time(), _group_cpu(mlflow_server.process.pid), time.perf_counter()
        for rec in records:
            mirror.submit(rec)
        stats = mirror.close(timeout=300)  # this thread waits: the process's CPU is the mirror thread's
        wall = time.perf_counter() - start
        n = max(stats["mirrored"], 1)
        out["trace mirror: wall per trace (log_spans + start_trace, one thread)"] = 1000.0 * wall / n
        out["trace mirror: CPU per trace in the serving process"] = 1000.0 * (time.process_time() - cpu0) / n
        out["trace mirror: CPU per trace in the MLflow server (SQLite backend)"] = 1000.0 * (
            _group_cpu(mlflow_server.process.pid) - mlflow0) / n
    return {k: round(v, 3) for k, v in out.items()}


def _interaction_ids(path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT interaction_id FROM interactions")]


if __name__ == "__main__":
    main()
