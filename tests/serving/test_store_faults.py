"""Store faults against a real server: a full filesystem and a lock held by another process give 503 with
Retry-After, never 500; health stays answered; the connection stays usable; nothing acknowledged is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import httpx
import pytest

from rlops_plugin.experience.store import open_store

pytestmark = pytest.mark.integration
OBS = [0.01, -0.02, 0.03, 0.04]


def _acknowledged(rows_by_response) -> set[str]:
    return {row["decision_id"] for rows in rows_by_response for row in rows}


def _logged(store_path) -> set[str]:
    with open_store(store_path) as store:
        return {d for _, b in store.iter_batches() for d in b.decision_ids()}


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MiB tmpfs mounted for the test (needs the right to mount, as root in CI's container)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory) -> None:
    """Write a filler file until the filesystem refuses more bytes."""
    with open(directory / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


def test_a_full_disk_is_503_with_retry_after_and_loses_nothing_acknowledged(start_server, model_dirs,
                                                                            small_filesystem):
    store_path = str(small_filesystem / "log.db")
    server = start_server(model_dirs["champion"], store=store_path)
    acknowledged, statuses = [], []
    with httpx.Client(timeout=30) as client:  # one keep-alive connection throughout
        def predict(n=20):
            r = client.post(server.predict_url, json={"instances": [OBS] * n})
            statuses.append(r.status_code)
            if r.status_code == 200:
                acknowledged.append(r.json()["predictions"])
            return r

        for _ in range(5):
            assert predict().status_code == 200
        _fill(small_filesystem)
        refused = [predict(200) for _ in range(30)]
        failed = [r for r in refused if r.status_code != 200]
        assert failed, "the full filesystem never refused a write"
        assert {r.status_code for r in failed} == {503}, {r.status_code: r.text for r in failed}
        assert all(r.headers["retry-after"] == "1" and "nothing was acknowledged" in r.json()["error"]
                   for r in failed)
        assert client.get(f"{server.url}/v2/health/ready").status_code == 200
        os.remove(small_filesystem / "filler")
        for _ in range(5):  # the same connection, after the errors: still usable, writes go through again
            assert predict().status_code == 200
    assert 500 not in statuses
    assert _acknowledged(acknowledged) <= _logged(store_path)


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
print("released", flush=True)
"""


def test_a_lock_held_by_another_process_is_503_and_health_stays_answered(start_server, model_dirs, tmp_path):
    store_path = str(tmp_path / "log.db")
    server = start_server(model_dirs["champion"], store=store_path, extra_args=["--store_busy_timeout_s", "2"])
    with httpx.Client(timeout=60) as client:
        first = client.post(server.predict_url, json={"instances": [OBS]})
        assert first.status_code == 200
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, store_path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "locked"
            results: list[httpx.Response] = []
            waiting = threading.Thread(target=lambda: results.append(
                httpx.post(server.predict_url, json={"instances": [OBS] * 3}, timeout=60)))
            waiting.start()
            health = [client.get(f"{server.url}/v2/health/ready") for _ in range(5)]  # while the write waits
            status = client.get(f"{server.url}/rlops/v1/status")
            assert holder.poll() is None  # still holding the lock: health was answered during the fault
            waiting.join(60)
            assert [r.status_code for r in health] == [200] * 5 and status.status_code == 200
            [blocked] = results
            assert blocked.status_code == 503 and blocked.headers["retry-after"] == "1", blocked.text
            assert "locked" in blocked.json()["error"]
        finally:
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "released"
            holder.wait(10)
        again = client.post(server.predict_url, json={"instances": [OBS]})  # same connection, lock gone
        assert again.status_code == 200
    assert _acknowledged([first.json()["predictions"], again.json()["predictions"]]) == _logged(store_path)
