"""Peer for bench/serving.py: a bare ``kserve.Model`` serving the same policy, no logging.

It loads the same safetensors weights and answers greedy actions, with KServe's own REST
server bound to 127.0.0.1 exactly like ``rlops serve`` (so the comparison isolates what rlops
adds: validation, exploration, propensities, decision ids and durable logging).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from _common import serve_on_localhost  # the bench folder is on sys.path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    import kserve

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
    serve_on_localhost(model, args.port)


if __name__ == "__main__":
    main()
