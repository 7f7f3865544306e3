"""The ``register_policy`` Kubeflow component."""
