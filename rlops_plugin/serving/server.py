"""The policy server: KServe's REST data plane, bound to 127.0.0.1 unless told otherwise.

``kserve.ModelServer.start()`` always binds ``0.0.0.0`` (REST) and ``[::]`` (gRPC). We build
the same KServe REST server (its endpoints, middlewares and error handlers) but set the uvicorn
host ourselves, and keep gRPC off, so a local server is never reachable from the network.
The argument parser extends ``kserve.model_server.parser``, like KServe's own predictors.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

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


def _safe_action(text: str) -> int | list[float]:
    """``--safe_action``: an action index or a JSON list of numbers."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"not an action index or a JSON list: {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, list)):
        raise argparse.ArgumentTypeError(f"not an action index or a JSON list: {text!r}")
    return value


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
    parser.add_argument("--store_busy_timeout_s", type=float, default=30.0,
                        help="how long a write waits for a SQLite lock held elsewhere before the request gets 503")
    parser.add_argument("--durability", choices=("normal", "full"), default="normal",
                        help="SQLite commit durability: normal survives process crashes, full also power loss")
    parser.add_argument("--exploration", choices=("greedy", "epsilon", "softmax"),
                        default=env("RLOPS_EXPLORATION", "softmax"))
    parser.add_argument("--epsilon", type=float, default=float(env("RLOPS_EPSILON", "0")))
    parser.add_argument("--max_epsilon", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--safe_action", type=_safe_action, default=None,
                        help="action (an index, or a JSON list for Box actions) executed when a policy's outputs "
                             "are not finite and no finite policy can decide; without it such requests get 503")
    parser.add_argument("--challenger_uri", default=env("RLOPS_CHALLENGER_URI") or None,
                        help="second policy for shadow or canary (env RLOPS_CHALLENGER_URI)")
    parser.add_argument("--routing", choices=("off", "shadow", "canary"), default=env("RLOPS_ROUTING", "off"))
    parser.add_argument("--canary_fraction", type=float, default=float(env("RLOPS_CANARY_FRACTION", "0")))
    parser.add_argument("--max_batch", type=int, default=4096, help="most observations per request")
    parser.add_argument("--max_body_bytes", type=int, default=8 << 20, help="larger bodies get 413")
    parser.add_argument("--seed", type=int, default=None, help="seed of exploration and canary sampling")
    parser.add_argument("--torch_threads", type=int, default=1, help="torch intra-op threads per process")
    parser.add_argument("--access_log", action="store_true", help="log every request (slower)")
    agent = parser.add_argument_group("agent policies (OpenAI data plane)")
    agent.add_argument("--max_tokens", type=int, default=256, help="largest max_tokens a request may ask for")
    agent.add_argument("--default_max_tokens", type=int, default=64, help="max_tokens when a request gives none")
    agent.add_argument("--max_n", type=int, default=8, help="most choices per request")
    agent.add_argument("--time_budget_s", type=float, default=30.0,
                       help="a generation running longer answers 503 and acknowledges nothing")
    agent.add_argument("--traces", choices=("auto", "on", "off"), default=env("RLOPS_TRACES", "auto"),
                       help="mirror interactions to MLflow traces (auto: when MLFLOW_TRACKING_URI is set)")
    agent.add_argument("--trace_experiment", default=env("RLOPS_TRACE_EXPERIMENT"),
                       help="MLflow experiment of the traces (default: rlops-agent-<model_name>)")
    agent.add_argument("--trace_queue", type=int, default=1000,
                       help="interactions waiting for the trace mirror; more are dropped and counted")
    parser.set_defaults(enable_grpc=False, enable_latency_logging=False, model_name="policy")
    return parser


def run(args: argparse.Namespace) -> None:
    """Load the model, then serve until SIGTERM/SIGINT; the store is flushed and closed on exit."""
    import torch
    from kserve import ModelServer

    from rlops_plugin import plugins
    from rlops_plugin.bundle.bundle import DEFAULT_KIND
    from rlops_plugin.experience.store import open_store
    from rlops_plugin.flavor.model import load_model_with_source
    from rlops_plugin.serving import app as rlops_app

    torch.set_num_threads(max(1, args.torch_threads))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    store = open_store(args.store, durability=args.durability,
                       busy_timeout_s=args.store_busy_timeout_s) if args.store else None
    mirror = None
    try:
        champion = load_model_with_source(args.model_uri)
        kind = plugins.policy_kinds().get(champion.bundle.kind).value  # the kind owns its KServe model
        if not hasattr(kind, "kserve_model"):  # default: the v1/v2 predictor over the kind's engine
            kind = plugins.policy_kinds().get(DEFAULT_KIND).value
        model = kind.kserve_model(args.model_name, champion, store, args)
        if hasattr(model, "mirror"):
            mirror = _trace_mirror(args)
            model.mirror = mirror
        model.load()
        server = ModelServer(http_port=args.http_port, enable_grpc=False, workers=1,
                             enable_docs_url=args.enable_docs_url,
                             enable_latency_logging=args.enable_latency_logging)
        server._register_and_check_atleast_one_model_is_ready([model])
        rest = _rest_server(args, server, openai=hasattr(model, "create_chat_completion"))
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
        if mirror is not None:
            mirror.close()
        if store is not None:
            store.close()


def _trace_mirror(args: argparse.Namespace) -> Any:
    """The MLflow trace mirror of an agent server, when traces are on (``auto``: a tracking URI is set)."""
    if args.traces == "off" or (args.traces == "auto" and not os.environ.get("MLFLOW_TRACKING_URI")):
        return None
    from rlops_plugin.experience.traces import TraceMirror

    return TraceMirror(experiment=args.trace_experiment or f"rlops-agent-{args.model_name}",
                       max_queue=args.trace_queue)


def _rest_server(args: argparse.Namespace, server: Any, openai: bool) -> Any:
    """KServe's REST server; for a v1/v2 model its OpenAI routes are not even imported.

    KServe tries to import its OpenAI data plane for every server, and that import loads vllm's
    protocol modules (about 5 s). A vector policy never needs them, so the import is made to fail
    fast, which KServe handles by not registering the OpenAI routes.
    """
    from kserve.protocol.rest.server import RESTServer

    rest = RESTServer("kserve.model_server:app", server.dataplane, server.model_repository_extension,
                      args.http_port, access_log_format=args.access_log_format, workers=1,
                      timeout_keep_alive=args.timeout_keep_alive)
    if not openai:
        create = rest.create_application

        def create_without_openai() -> Any:
            saved = sys.modules.get(_OPENAI_CONFIG, _ABSENT)
            sys.modules[_OPENAI_CONFIG] = None  # type: ignore[assignment]  # import raises ImportError
            try:
                return create()
            finally:
                if saved is _ABSENT:
                    del sys.modules[_OPENAI_CONFIG]
                else:
                    sys.modules[_OPENAI_CONFIG] = saved

        rest.create_application = create_without_openai
    return rest


_OPENAI_CONFIG = "kserve.protocol.rest.openai.config"
_ABSENT = object()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m rlops_plugin.serving`` and ``rlops serve``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.access_log:
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    run(args)
