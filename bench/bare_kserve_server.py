"""Peer for bench/serving.py: a bare ``kserve.Model`` serving the same policy, no logging.

It loads the same safetensors weights and answers greedy actions, with KServe's own REST
server bound to 127.0.0.1 exactly like ``rlops serve`` (so the comparison isolates what rlops
adds: validation, exploration, propensities, decision ids and durable logging).
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    import kserve
    from kserve.protocol.rest.server import RESTServer

    from rlops_plugin.flavor import load_local_model

    torch.set_num_threads(1)
    network = load_local_model(args.model_dir).policy.network

    class BarePolicy(kserve.Model):
        def load(self) -> bool:
            self.ready = True
            return True

        async def predict(self, payload, headers=None):
            obs = torch.from_numpy(np.asarray(payload["instances"], dtype=np.float32))
            with torch.no_grad():
                actions = network(obs).argmax(dim=1)
            return {"predictions": actions.tolist()}

    model = BarePolicy("policy")
    model.load()
    logging.basicConfig(level=logging.WARNING)
    server = kserve.ModelServer(http_port=args.port, enable_grpc=False, workers=1, enable_latency_logging=False)
    server._register_and_check_atleast_one_model_is_ready([model])
    rest = RESTServer("kserve.model_server:app", server.dataplane, server.model_repository_extension, args.port,
                      workers=1)
    rest.config.host = "127.0.0.1"
    rest.create_application()
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    rest._server.run()


if __name__ == "__main__":
    main()
