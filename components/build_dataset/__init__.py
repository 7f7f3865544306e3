"""The ``build_dataset`` Kubeflow component."""
