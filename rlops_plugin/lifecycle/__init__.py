"""The use cases every edge calls: one function per lifecycle step, each doing its change and its audit event.

The CLI, the Kubeflow components (through ``pipelines/steps.py``) and the demo adapt these. Below
this package only the effects of a running step are recorded where they happen: the promotion
controller's canary steps, promotions and rollbacks, a target's deployment changes, the monitor's
triggers (docs/audit.md says which writer records which kind).
"""

from rlops_plugin.lifecycle.cycle import record_cycle
from rlops_plugin.lifecycle.data import build_dataset, calibrate
from rlops_plugin.lifecycle.deploy import approve, crown, deploy, promote, rollback
from rlops_plugin.lifecycle.evaluate import evaluate
from rlops_plugin.lifecycle.gate import gate
from rlops_plugin.lifecycle.monitor import monitor
from rlops_plugin.lifecycle.postmarket import post_market_report
from rlops_plugin.lifecycle.register import register
from rlops_plugin.lifecycle.train import train, train_reward_model
from rlops_plugin.lifecycle.train_cluster import train_distributed
from rlops_plugin.lifecycle.tune import tune

__all__ = ["approve", "build_dataset", "calibrate", "crown", "deploy", "evaluate", "gate", "monitor",
           "post_market_report", "promote", "record_cycle", "register", "rollback", "train", "train_distributed",
           "train_reward_model", "tune"]
