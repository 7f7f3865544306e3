"""The ``tune_policy`` Kubeflow component."""
