"""Serving fixtures live in tests/conftest.py (shared with deploy and pipeline tests)."""
