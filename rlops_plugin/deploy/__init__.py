"""Deployment: KServe manifests, MLflow deployment targets, progressive delivery with rollback."""
