"""Conformance checks shipped to plugin authors (trainers, environments, monitors, policy kinds)."""
