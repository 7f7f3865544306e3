"""Every hookspec is documented in docs/plugins.md and exercised by some test."""

import inspect

import pytest

from rlops_plugin import hookspecs
from tests.conftest import REPO_ROOT, TESTS_DIR

HOOKS = hookspecs.hook_names()


def test_there_are_hooks():
    assert "rlops_register_envs" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    docs = (REPO_ROOT / "docs" / "plugins.md").read_text()
    assert f"### `{hook}" in docs, f"docs/plugins.md has no section for {hook}"
    assert inspect.getdoc(getattr(hookspecs, hook)), f"{hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    this = TESTS_DIR / "test_hookspecs.py"
    users = [p for p in TESTS_DIR.rglob("*.py") if p != this and hook in p.read_text()]
    assert users, f"no test mentions {hook}"
