"""Kubeflow pipelines: the improvement cycles (vector policies, LLM agents) built from the components in
``components/``."""
