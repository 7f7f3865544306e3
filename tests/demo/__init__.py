"""Tests of rlops_plugin.demo."""
