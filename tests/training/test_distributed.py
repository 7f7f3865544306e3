"""Data-parallel training under torchrun (2 CPU processes, gloo): ``rlops train --nproc 2`` logs one run from rank 0
and registers one version with the single-process lineage; a worker killed mid-training fails the job, naming it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import mlflow
import numpy as np
import pytest
import torch

from rlops_plugin import flavor
from rlops_plugin.experience.dataset import Dataset, DatasetError, build_transitions
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor import registry
from rlops_plugin.training import distributed
from rlops_plugin.training.train import train
from tests.experience.test_dataset import log_episodes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RLOPS = [sys.executable, "-m", "rlops_plugin.cli"]


@pytest.fixture
def cartpole_data(tmp_path, cartpole_bundle):
    """Transitions of 8 logged CartPole episodes, saved (a few hundred rows)."""
    with open_store(tmp_path / "s.db") as store:
        log_episodes(store, cartpole_bundle, episodes=8)
        data = build_transitions(store, "m", cartpole_bundle)
    return data.save(tmp_path / "ds"), data


@pytest.fixture
def experiment() -> str:
    """An experiment name no other test uses (its runs are exactly this test's)."""
    return f"distributed-{uuid.uuid4().hex[:8]}"


def _rlops_train(tracking: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*RLOPS, "train", *args], capture_output=True, text=True, env=env, timeout=timeout)


def _runs(experiment: str) -> list:
    exp = mlflow.get_experiment_by_name(experiment)
    return [] if exp is None else mlflow.MlflowClient().search_runs([exp.experiment_id])


def _nll(policy, data: Dataset) -> float:
    """Mean negative log-likelihood of every logged action under ``policy`` (the whole dataset: no sampling)."""
    with torch.no_grad():
        return float(-policy.log_prob(torch.as_tensor(data.columns["obs"]),
                                      torch.as_tensor(data.columns["action"])).mean())


def test_helpers_outside_torchrun_are_the_single_process_answers():
    assert distributed.DistEnv.from_environ({}) == distributed.DistEnv()
    env = distributed.DistEnv.from_environ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                            "LOCAL_WORLD_SIZE": "2", "GROUP_WORLD_SIZE": "2"})
    assert (env.rank, env.local_rank, env.params()) == (3, 1, {"distributed.world_size": 4,
                                                               "distributed.nproc_per_node": 2,
                                                               "distributed.nnodes": 2})
    with pytest.raises(distributed.DistributedError, match="RANK=2 is outside WORLD_SIZE=2"):
        distributed.DistEnv.from_environ({"RANK": "2", "WORLD_SIZE": "2"})
    shards = [distributed.shard_indices(7, r, 3) for r in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(7)) and [len(s) for s in shards] == [3, 2, 2]
    assert distributed.per_rank(256, 3) == 86 and distributed.per_rank(256, 1) == 256
    assert distributed.reduce_metrics({"a": 1.0}) == {"a": 1.0} and distributed.is_main()


def test_bc_under_two_processes_registers_one_version_from_rank_0(champion, cartpole_data, model_name, tracking,
                                                                  experiment, cartpole_bundle):
    path, data = cartpole_data
    config = {"steps": 300, "batch_size": 64, "lr": 3e-3}
    done = _rlops_train(tracking, "--trainer", "bc", "--init", champion, "--dataset", str(path),
                        *[f"--set={k}={v}" for k, v in config.items()], "--register", model_name,
                        "--eval-episodes", "3", "--experiment", experiment, "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("metrics: ") and "train/loss=" in last and "eval/return_mean=" in last, done.stdout
    assert done.stdout.count(f"registered {model_name} version 2") == 1  # rank 1 printed nothing

    versions = sorted(int(v.version) for v in registry.client().search_model_versions(f"name='{model_name}'"))
    assert versions == [1, 2]
    mv = registry.client().get_model_version(model_name, "2")
    assert mv.tags["rlops.parent_version"] == "1" and mv.tags["rlops.dataset_digest"] == data.digest
    (run,) = _runs(experiment)  # rank 0's run and no other
    assert run.info.run_id == mv.run_id and run.data.params["distributed.world_size"] == "2"
    assert run.data.params["distributed.nproc_per_node"] == "2" and run.data.params["distributed.nnodes"] == "1"

    # The same update in one process. Both runs take 300 steps with an effective batch of 64 rows but sample other
    # rows, so the weights differ; what they learned should not. The full-dataset NLL of the logged actions is
    # deterministic given the weights: measured 0.656 before, 0.614 single-process and 0.616 with 2 processes.
    # Single-process seeds 1..4 land 0.609..0.620, at most 0.0056 (13% of the 0.042 gain) from seed 0: 2 processes
    # are one more such draw, so the tolerance is 35% of the gain (2.5x that spread, still far from no learning).
    single = train("bc", champion, path, config, eval_episodes=0, log_to_mlflow=False)
    parallel = flavor.load_model(f"models:/{model_name}/2")
    before, one, two = _nll(cartpole_bundle.policy, data), _nll(single.bundle.policy, data), _nll(parallel.policy, data)
    assert one < before and abs(two - one) <= 0.35 * (before - one), (before, one, two)
    assert parallel.lineage["parent_version"] == "1" and parallel.lineage["dataset_digest"] == data.digest


def test_agent_sft_under_two_processes_registers_one_version_from_rank_0(tracking, triage_agent, tmp_path,
                                                                         model_name, experiment):
    from tests.kinds.agent.test_signals import build, edit, interaction
    from tests.training.test_agent_trl import NEW, _route

    records, events = [], []
    for text, queue in NEW:
        r = interaction(text, [[_route("billing")]])
        records.append(r)
        events += [edit(r, 0, [_route(queue)])]
    data = build(tmp_path, triage_agent, records, events)
    path = data.save(tmp_path / "agent-ds")
    with mlflow.start_run():
        flavor.log_model(triage_agent, name="policy", registered_model_name=model_name)
    flavor.promote(model_name, 1)
    config = {"steps": 12, "batch_size": 4, "lr": 3e-3}
    done = _rlops_train(tracking, "--trainer", "agent_sft", "--init", f"models:/{model_name}@champion",
                        "--dataset", str(path), *[f"--set={k}={v}" for k, v in config.items()],
                        "--register", model_name, "--eval-episodes", "1", "--experiment", experiment,
                        "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("metrics: ")
    versions = sorted(int(v.version) for v in registry.client().search_model_versions(f"name='{model_name}'"))
    assert versions == [1, 2]
    mv = registry.client().get_model_version(model_name, "2")
    assert mv.tags["rlops.parent_version"] == "1" and mv.tags["rlops.dataset_digest"] == data.digest
    (run,) = _runs(experiment)
    assert run.info.run_id == mv.run_id and run.data.params["distributed.world_size"] == "2"

    # train/loss is TRL's mean loss over the 12 steps. DDP averages the two ranks' gradients of 2 rows each, the
    # single process takes 4 rows: the same effective batch, other rows per step. Measured: 1.856 single-process
    # (seed 0), 1.852 with 2 processes; single-process seeds 1..3 gave 2.035, 1.783 and 1.831, at most 0.18 (10%)
    # from seed 0. 2 processes are one more such draw: the tolerance is 20% (twice that spread).
    single = train("agent_sft", triage_agent, data, config, eval_episodes=0, log_to_mlflow=False)
    one, two = single.metrics["train/loss"], run.data.metrics["train/loss"]
    assert abs(two - one) <= 0.2 * one, (one, two)


def _worker(parent, rank: str, deadline: float):
    """The torchrun worker of global ``rank`` among ``parent``'s descendants, once it has joined the process group
    (it holds established TCP connections: the rendezvous store and its gloo peer)."""
    import psutil

    while time.monotonic() < deadline:
        for child in parent.children(recursive=True):
            try:
                if child.environ().get("RANK") == rank and child.environ().get("WORLD_SIZE") == "2":
                    connections = getattr(child, "net_connections", None) or child.connections  # psutil < 6
                    established = [c for c in connections(kind="tcp") if c.status == "ESTABLISHED"]
                    if len(established) >= 2:
                        return child
            except psutil.Error:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no worker of rank {rank} joined the process group")


def test_a_killed_worker_fails_the_job_naming_it_and_nothing_is_registered(champion, cartpole_data, model_name,
                                                                           tracking, experiment):
    import psutil

    path, _ = cartpole_data
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen([*RLOPS, "train", "--trainer", "bc", "--init", champion, "--dataset", str(path),
                            "--set", "steps=10000000", "--register", model_name, "--eval-episodes", "0",
                            "--experiment", experiment, "--nproc", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    launcher = psutil.Process(job.pid)
    try:
        worker = _worker(launcher, "1", time.monotonic() + 240)
        start = worker.cpu_times().user
        while worker.cpu_times().user < start + 1.0:  # a second of its own training steps
            time.sleep(0.1)
        worker.send_signal(signal.SIGKILL)
        out, err = job.communicate(timeout=240)
    finally:
        if job.poll() is None:  # the test failed early: stop the workers it started, then the launcher
            for process in launcher.children(recursive=True):
                process.kill()
            job.kill()
            job.communicate()
    assert job.returncode == 2, err[-3000:]
    assert "DistributedError: distributed training failed" in err
    assert f"rank 1 (local rank 1, pid {worker.pid}) killed by signal SIGKILL (exit code -9)" in err, err[-3000:]
    versions = [v.version for v in registry.client().search_model_versions(f"name='{model_name}'")]
    assert versions == ["1"] and _runs(experiment) == []


def test_dataset_by_artifact_uri_and_caller_tags(champion, cartpole_data, tracking, experiment, monkeypatch):
    """What a TrainJob pod does: read the dataset from MLflow, not a local path; a tuning trial nests its run."""
    path, data = cartpole_data
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as holder:
        mlflow.log_artifacts(str(path), "dataset")
    with mlflow.start_run() as study:
        pass
    monkeypatch.setenv("RLOPS_TRAINJOB_NAME", "trainjob-7")
    outcome = train("bc", champion, f"runs:/{holder.info.run_id}/dataset", {"steps": 5}, eval_episodes=0,
                    experiment=experiment, tags={"mlflow.parentRunId": study.info.run_id})
    assert outcome.dataset_digest == data.digest
    run = mlflow.MlflowClient().get_run(outcome.run_id)
    assert run.data.tags["mlflow.parentRunId"] == study.info.run_id and run.data.tags["rlops.trainjob"] == "trainjob-7"
    assert run.data.params["dataset_digest"] == data.digest and run.data.params["distributed.world_size"] == "1"
    with pytest.raises(DatasetError, match="cannot download the dataset runs:/"):
        train("bc", champion, f"runs:/{holder.info.run_id}/missing", {"steps": 5}, eval_episodes=0,
              log_to_mlflow=False)
