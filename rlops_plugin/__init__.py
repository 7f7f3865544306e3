"""rlops-plugin: the reinforcement-learning improvement loop for MLflow, Kubeflow and KServe."""

from rlops_plugin._version import __version__  # noqa: E402
from rlops_plugin.hookspecs import hookimpl  # noqa: E402

__all__ = ["__version__", "hookimpl"]

_LAZY = {"EnvSpec", "Policy", "PolicyBundle", "RewardSpec"}


def __getattr__(name: str):
    """Import the bundle classes lazily so ``import rlops_plugin`` stays cheap (no torch)."""
    if name in _LAZY:
        from rlops_plugin import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'rlops_plugin' has no attribute {name!r}")
