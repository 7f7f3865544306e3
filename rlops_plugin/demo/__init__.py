"""``rlops demo``: the whole improvement loop locally, ending in an HTML report and an audit trail."""

from rlops_plugin.demo.config import DemoConfig
from rlops_plugin.demo.runner import DemoResult, run_demo

__all__ = ["DemoConfig", "DemoResult", "run_demo"]
