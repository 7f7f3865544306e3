"""Reusable Kubeflow Pipelines components for the RL improvement loop (one folder each)."""

COMPONENT_NAMES = ("build_dataset", "calibrate_env", "train_policy", "train_distributed", "tune_policy",
                   "evaluate_policy", "gate_policy", "register_policy", "deploy_policy", "monitor_policy",
                   "record_cycle")
