"""The policy server: KServe's REST data plane, bound to 127.0.0.1 unless told otherwise.

``kserve.ModelServer.start()`` always binds ``0.0.0.0`` (REST) and ``[::]`` (gRPC). We build
the same KServe REST server (its endpoints, middlewares and error handlers) but set the uvicorn
host ourselves, and keep gRPC off, so a local server is never reachable from the network.
The argument parser extends ``kserve.model_server.parser``, like KServe's own predictors.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence

from rlops_plugin.local.processes import LOCALHOST

logger = logging.getLogger(__name__)


def _kserve_parser() -> argparse.ArgumentParser:
    """``kserve.model_server.parser``, imported without letting it parse our own argv."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        from kserve import model_server
    finally:
        sys.argv = saved
    return model_server.parser


def build_parser() -> argparse.ArgumentParser:
    """KServe's server options plus rlops': model URIs, store, exploration, routing, limits."""
    parser = argparse.ArgumentParser(prog="rlops-serve", parents=[_kserve_parser()], conflict_handler="resolve",
                                     description="Serve an rlops policy with KServe and log every decision.")
    env = os.environ.get
    parser.add_argument("--model_uri", default=env("RLOPS_MODEL_URI"), required=env("RLOPS_MODEL_URI") is None,
                        help="models:/NAME@ALIAS, models:/NAME/VERSION or a path (env RLOPS_MODEL_URI)")
    parser.add_argument("--host", default=LOCALHOST, help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--store", default=env("RLOPS_STORE"),
                        help="experience store: path, sqlite:///PATH or postgresql://... (env RLOPS_STORE; "
                             "default: no logging)")
    parser.add_argument("--durability", choices=("normal", "full"), default="normal",
                        help="SQLite commit durability: normal survives process crashes, full also power loss")
    parser.add_argument("--exploration", choices=("greedy", "epsilon", "softmax"),
                        default=env("RLOPS_EXPLORATION", "softmax"))
    parser.add_argument("--epsilon", type=float, default=float(env("RLOPS_EPSILON", "0")))
    parser.add_argument("--max_epsilon", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--challenger_uri", default=env("RLOPS_CHALLENGER_URI") or None,
                        help="second policy for shadow or canary (env RLOPS_CHALLENGER_URI)")
    parser.add_argument("--routing", choices=("off", "shadow", "canary"), default=env("RLOPS_ROUTING", "off"))
    parser.add_argument("--canary_fraction", type=float, default=float(env("RLOPS_CANARY_FRACTION", "0")))
    parser.add_argument("--max_batch", type=int, default=4096, help="most observations per request")
    parser.add_argument("--max_body_bytes", type=int, default=8 << 20, help="larger bodies get 413")
    parser.add_argument("--seed", type=int, default=None, help="seed of exploration and canary sampling")
    parser.add_argument("--torch_threads", type=int, default=1, help="torch intra-op threads per process")
    parser.add_argument("--access_log", action="store_true", help="log every request (slower)")
    parser.set_defaults(enable_grpc=False, enable_latency_logging=False, model_name="policy")
    return parser


def run(args: argparse.Namespace) -> None:
    """Load the model, then serve until SIGTERM/SIGINT; the store is flushed and closed on exit."""
    import torch
    from kserve import ModelServer
    from kserve.protocol.rest.server import RESTServer

    from rlops_plugin.experience.store import open_store
    from rlops_plugin.serving import app as rlops_app
    from rlops_plugin.serving.exploration import ExplorationConfig
    from rlops_plugin.serving.model import PolicyModel
    from rlops_plugin.serving.routing import RoutingConfig

    torch.set_num_threads(max(1, args.torch_threads))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    store = open_store(args.store, durability=args.durability) if args.store else None
    try:
        model = PolicyModel(
            args.model_name, args.model_uri, store=store, challenger_uri=args.challenger_uri,
            exploration=ExplorationConfig(args.exploration, args.epsilon, args.temperature, args.max_epsilon),
            routing=RoutingConfig(args.routing, args.canary_fraction), max_batch=args.max_batch, seed=args.seed,
        )
        model.load()
        server = ModelServer(http_port=args.http_port, enable_grpc=False, workers=1,
                             enable_docs_url=args.enable_docs_url,
                             enable_latency_logging=args.enable_latency_logging)
        server._register_and_check_atleast_one_model_is_ready([model])
        rest = RESTServer("kserve.model_server:app", server.dataplane, server.model_repository_extension,
                          args.http_port, access_log_format=args.access_log_format, workers=1,
                          timeout_keep_alive=args.timeout_keep_alive)
        rest.config.host = args.host
        rest.create_application()
        from kserve.model_server import app

        rlops_app.install(app, {model.name: model}, store, args.max_body_bytes)
        logger.info("serving %s (%s) on http://%s:%s", model.name, ", ".join(model.status()["policies"]),
                    args.host, args.http_port)
        gc.collect()
        gc.freeze()  # the loaded stack (torch, mlflow, kserve) is long-lived: keep it out of GC scans
        rest._server.run()
    finally:
        if store is not None:
            store.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m rlops_plugin.serving`` and ``rlops serve``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.access_log:
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    run(args)
