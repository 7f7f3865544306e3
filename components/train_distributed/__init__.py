"""The ``train_distributed`` Kubeflow component."""
