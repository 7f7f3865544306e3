"""The ``train_policy`` Kubeflow component."""
