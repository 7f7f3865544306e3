"""``python -m rlops_plugin.serving --model_uri ... [--store ...]``: the policy server."""

from rlops_plugin.serving.server import main

if __name__ == "__main__":
    main()
