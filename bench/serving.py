"""Serving benchmark: rlops serve (durable logging) vs a bare kserve.Model vs mlflow models serve.

The same CartPole policy is served three ways on this machine, all on 127.0.0.1, and driven
by the same Python client in one run, in interleaved rounds so machine noise hits all three:

* ``rlops``: ``rlops serve`` with the SQLite experience store (every decision durably logged
  with its propensity before the response is sent);
* ``bare_kserve``: a minimal ``kserve.Model`` on the same KServe REST stack, greedy torch
  forward, no validation or logging (bench/bare_kserve_server.py);
* ``mlflow_pyfunc``: ``mlflow models serve --env-manager local`` of the same model's pyfunc.

While one server is measured the other two are paused (SIGSTOP), so idle servers can't
disturb it. Workloads: sequential single-observation requests on one keep-alive connection, 8 concurrent
clients, and sequential requests of 256 observations. Prints JSON with medians over rounds
and the ratios the README reports. Usage: ``python bench/serving.py [--rounds 5] [--requests 2000]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, latency_summary, machine, median_of  # noqa: E402

from rlops_plugin import EnvSpec, PolicyBundle, flavor  # noqa: E402
from rlops_plugin.local.processes import ManagedProcess, free_port  # noqa: E402
from rlops_plugin.serving.process import PolicyServerProcess  # noqa: E402

HERE = Path(__file__).resolve().parent


class Target:
    """One server under test: how to reach it and how to phrase a request."""

    def __init__(self, name: str, port: int, path: str, body_key: str, pid: Any) -> None:
        self.name = name
        self.port = port
        self.path = path
        self.body_key = body_key
        self.pid = pid

    def pause(self) -> None:
        """SIGSTOP the server's process group so it can't disturb the one being measured."""
        os.killpg(self.pid(), signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pid(), signal.SIGCONT)

    def body(self, obs: np.ndarray) -> bytes:
        return json.dumps({self.body_key: obs.tolist()}).encode()


def run_sequential(target: Target, bodies: list[bytes], warmup: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", target.port)
    latencies = []
    for i, body in enumerate(bodies):
        start = time.perf_counter()
        conn.request("POST", target.path, body, {"content-type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {resp.status}: {data[:200]!r}")
        if i >= warmup:
            latencies.append(time.perf_counter() - start)
    conn.close()
    return latency_summary(latencies)


def run_concurrent(target: Target, bodies: list[bytes], clients: int) -> dict[str, float]:
    per_client = len(bodies) // clients
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", target.port)
        mine = []
        for body in bodies[k * per_client:(k + 1) * per_client]:
            start = time.perf_counter()
            conn.request("POST", target.path, body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                errors.append(f"HTTP {resp.status}")
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{target.name}: {errors[:3]}")
    summary = latency_summary(latencies)
    summary["rps"] = len(latencies) / wall
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000, help="per sequential run")
    parser.add_argument("--batch-requests", type=int, default=200, help="per 256-observation run")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rlops-bench-serving-"))
    model_dir = work / "model"
    flavor.save_model(PolicyBundle.create(EnvSpec(id="CartPole-v1"), seed=0), model_dir)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}

    rlops = PolicyServerProcess(str(model_dir), work / "rlops.log", store=str(work / "store.db"))
    bare_port = free_port()
    bare = ManagedProcess([sys.executable, str(HERE / "bare_kserve_server.py"), "--model_dir", str(model_dir),
                           "--port", str(bare_port)], work / "bare.log", env=env)
    mlflow_port = free_port()
    mlflow_proc = ManagedProcess([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir),
                                  "--env-manager", "local", "-h", "127.0.0.1", "-p", str(mlflow_port)],
                                 work / "mlflow.log", env=env)
    targets = [
        Target("rlops", rlops.port, "/v1/models/policy:predict", "instances", lambda: rlops.pid),
        Target("bare_kserve", bare_port, "/v1/models/policy:predict", "instances", lambda: bare.pid),
        Target("mlflow_pyfunc", mlflow_port, "/invocations", "inputs", lambda: mlflow_proc.pid),
    ]
    try:
        rlops.start()
        bare.start()
        bare.wait_healthy(f"http://127.0.0.1:{bare_port}/v1/models/policy", 120)
        mlflow_proc.start()
        mlflow_proc.wait_healthy(f"http://127.0.0.1:{mlflow_port}/ping", 180)
        rng = np.random.default_rng(0)
        singles = rng.normal(0, 0.5, size=(args.requests, 1, 4))
        batches = rng.normal(0, 0.5, size=(args.batch_requests, 256, 4))
        rounds: dict[str, dict[str, list[dict[str, float]]]] = {
            t.name: {"sequential": [], f"concurrent_{args.clients}": [], "batch_256": []} for t in targets}
        for r in range(args.rounds):
            order = targets[r % 3:] + targets[:r % 3]
            for target in order:
                for other in targets:
                    if other is not target:
                        other.pause()
                target.resume()
                single_bodies = [target.body(o) for o in singles]
                batch_bodies = [target.body(o) for o in batches]
                rounds[target.name]["sequential"].append(run_sequential(target, single_bodies, warmup=200))
                rounds[target.name][f"concurrent_{args.clients}"].append(
                    run_concurrent(target, single_bodies, args.clients))
                rounds[target.name]["batch_256"].append(run_sequential(target, batch_bodies, warmup=20))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        for target in targets:
            target.resume()
        stats = rlops_store_stats(work / "store.db")
    finally:
        for target in targets:
            if target.pid() is not None:
                target.resume()
        rlops.stop()
        bare.stop()
        mlflow_proc.stop()

    results: dict[str, Any] = {
        name: {wl: {k: median_of(runs, k) for k in runs[0]} for wl, runs in by_wl.items()}
        for name, by_wl in rounds.items()}
    ratios = {}
    for wl in results["rlops"]:
        ratios[wl] = {
            "rlops_vs_mlflow_pyfunc_throughput": results["rlops"][wl]["rps"] / results["mlflow_pyfunc"][wl]["rps"],
            "rlops_vs_bare_kserve_throughput": results["rlops"][wl]["rps"] / results["bare_kserve"][wl]["rps"],
        }
    seq = "sequential"
    emit({
        "benchmark": "serving", "machine": machine(), "rounds": args.rounds,
        "note": "medians over interleaved rounds; client and servers share the machine's cores",
        "results": results, "ratios": ratios, "rlops_store": stats,
        "targets": {
            "rlops >= 2.5x mlflow_pyfunc throughput (sequential)":
                ratios[seq]["rlops_vs_mlflow_pyfunc_throughput"] >= 2.5,
            "rlops >= 0.9x bare_kserve throughput (sequential)":
                ratios[seq]["rlops_vs_bare_kserve_throughput"] >= 0.9,
            "rlops p99 < 5 ms (sequential)": results["rlops"][seq]["p99_ms"] < 5.0,
        },
    })


def rlops_store_stats(path: Path) -> dict[str, int]:
    from rlops_plugin.experience.store import open_store

    with open_store(path) as store:
        return store.stats()


if __name__ == "__main__":
    main()
