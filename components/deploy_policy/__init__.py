"""The ``deploy_policy`` Kubeflow component."""
