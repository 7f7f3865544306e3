"""``rlops collect``: a model-less server for feedback and KServe logger CloudEvents.

In a cluster the InferenceService ``logger`` posts every request and response here, and reward
services post feedback here; both land in the shared experience store. Same endpoints and error
handling as the policy server (``/v1/feedback``, ``/v1/cloudevents``, ``/rlops/v1/status``).
"""

from __future__ import annotations

import logging

from rlops_plugin.local.processes import LOCALHOST


def run_collector(store_url: str, host: str = LOCALHOST, port: int = 8080, durability: str = "normal",
                  max_body_bytes: int = 8 << 20) -> None:
    """Serve the feedback endpoints until SIGTERM/SIGINT; the store is flushed on exit."""
    import uvicorn
    from fastapi import FastAPI

    from rlops_plugin.experience.store import open_store
    from rlops_plugin.serving.app import install

    store = open_store(store_url, durability=durability)
    app = FastAPI(title="rlops feedback collector")
    install(app, {}, store, max_body_bytes)
    logging.getLogger(__name__).info("collecting feedback into %s on http://%s:%s", store_url, host, port)
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
    finally:
        store.close()
