"""The ``monitor_policy`` Kubeflow component."""
