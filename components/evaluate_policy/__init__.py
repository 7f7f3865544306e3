"""The ``evaluate_policy`` Kubeflow component."""
