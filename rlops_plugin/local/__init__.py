"""Embedded local defaults: an MLflow server process, free ports, managed child processes."""
