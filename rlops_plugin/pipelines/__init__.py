"""Kubeflow pipelines: the continuous-improvement cycle built from the components in ``components/``."""
