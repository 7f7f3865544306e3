"""No acknowledged decision is lost: kill -9 mid-burst, and two servers on one store."""

from __future__ import annotations

import collections
import threading
import time

import httpx
import pytest

from rlops_plugin.experience.store import open_store

pytestmark = pytest.mark.integration
OBS = [0.01, -0.02, 0.03, 0.04]


def burst(urls, acked, stop, batch=1):
    """Clients hammer the servers and record every decision id they saw acknowledged."""

    def client(url):
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    r = http.post(url, json={"instances": [OBS] * batch})
                except httpx.HTTPError:
                    return  # the server died: nothing more can be acknowledged
                if r.status_code == 200:
                    acked.extend(row["decision_id"] for row in r.json()["predictions"])

    threads = [threading.Thread(target=client, args=(url,)) for url in urls for _ in range(3)]
    for t in threads:
        t.start()
    return threads


def stored_decision_ids(store_path):
    with open_store(store_path) as store:
        return [d for _, b in store.iter_batches() for d in b.decision_ids()]


def test_kill_9_loses_no_acknowledged_decision(start_server, model_dirs, tmp_path):
    store_path = str(tmp_path / "store.db")
    server = start_server(model_dirs["champion"], store=store_path)
    acked: list[str] = []
    stop = threading.Event()
    threads = burst([server.predict_url], acked, stop, batch=4)
    time.sleep(2.0)
    server.kill()  # SIGKILL the process group mid-burst
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) > 100
    restarted = start_server(model_dirs["champion"], store=store_path)  # recovers the WAL
    assert httpx.post(restarted.predict_url, json={"instances": [OBS]}, timeout=30).status_code == 200
    counts = collections.Counter(stored_decision_ids(store_path))
    missing = [d for d in acked if counts[d] != 1]
    assert not missing, f"{len(missing)} acknowledged decisions missing or duplicated"
    assert max(counts.values()) == 1


def test_two_servers_share_one_store(start_server, model_dirs, tmp_path):
    store_path = str(tmp_path / "store.db")
    a = start_server(model_dirs["champion"], store=store_path)
    b = start_server(model_dirs["champion"], store=store_path)
    acked: list[str] = []
    stop = threading.Event()
    threads = burst([a.predict_url, b.predict_url], acked, stop)
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join()
    a.stop()
    b.stop()
    stored = stored_decision_ids(store_path)
    assert len(acked) > 100
    assert sorted(stored) == sorted(acked)  # nothing lost, nothing duplicated
