"""The ``gate_policy`` Kubeflow component."""
