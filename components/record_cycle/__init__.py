"""The ``record_cycle`` Kubeflow component."""
