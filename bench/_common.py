"""Helpers shared by the benchmark scripts: timing summaries, JSON output, machine facts."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from typing import Any

import numpy as np


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    """Throughput (sequential) and p50/p99 latency in milliseconds."""
    arr = np.asarray(latencies_s) * 1000.0
    return {"requests": int(arr.size), "rps": float(arr.size / (arr.sum() / 1000.0)),
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


def median_of(rounds: list[dict[str, float]], key: str) -> float:
    """Median of one metric across benchmark rounds."""
    return float(statistics.median(r[key] for r in rounds))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}


def emit(result: dict[str, Any]) -> None:
    """Print the result as JSON (the benchmark's only stdout)."""
    print(json.dumps(result, indent=2, sort_keys=True))


def serve_on_localhost(model: Any, port: int) -> None:
    """Serve a ``kserve`` model with KServe's own REST server on 127.0.0.1 (a bench peer: one worker, no gRPC)."""
    import logging

    import kserve
    from kserve.protocol.rest.server import RESTServer

    logging.basicConfig(level=logging.WARNING)
    server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False)
    server._register_and_check_atleast_one_model_is_ready([model])
    rest = RESTServer("kserve.model_server:app", server.dataplane, server.model_repository_extension, port,
                      workers=1)
    rest.config.host = "127.0.0.1"
    rest.create_application()
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    rest._server.run()
