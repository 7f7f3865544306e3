"""Every hookspec is documented in docs/plugins.md and exercised by some test."""

import inspect
import re
import types

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


REGISTER_HOOKS = [h for h in HOOKS if h.startswith("rlops_register_")]
SIGNATURE = re.compile(r"register\(name, [^)]*\)")


def documented_keywords(text: str, where: str) -> set[str]:
    """Keyword names after ``*,`` in the first ``register(name, ...)`` signature of ``text``."""
    match = SIGNATURE.search(text)
    assert match, f"{where}: no register(name, ...) signature"
    _, star, keywords = match.group(0)[:-1].partition("*,")
    assert star, f"{where}: the signature has no keyword-only part (*, description=...)"
    return {part.split("=")[0].strip() for part in keywords.split(",") if part.strip()}


@pytest.mark.parametrize("hook", REGISTER_HOOKS)
def test_register_signature_matches_the_spec(hook):
    """datasette-style: the docstring and docs/plugins.md show the keywords the manager accepts."""
    declared = set(getattr(hookspecs, hook).register_keywords) | {"description"}
    assert documented_keywords(inspect.getdoc(getattr(hookspecs, hook)), f"{hook} docstring") == declared
    docs = (REPO_ROOT / "docs" / "plugins.md").read_text()
    section = docs.split(f"### `{hook}", 1)[1].split("\n### ", 1)[0]
    assert documented_keywords(section, f"docs/plugins.md {hook}") == declared


def test_register_refuses_an_unknown_keyword():
    from rlops_plugin import hookimpl, plugins
    from rlops_plugin.errors import PluginError

    plugin = types.SimpleNamespace(rlops_register_envs=hookimpl(
        lambda register: register("typo/Env-v0", None, max_episode_step=5)))
    plugins.add_plugin(plugin, "typo-plugin")
    try:
        with pytest.raises(PluginError, match=r"rlops_register_envs: plugin 'typo-plugin' passed "
                                              r"register\('typo/Env-v0', \.\.\.\) the unknown keyword "
                                              r"max_episode_step; rlops_register_envs accepts description, "
                                              r"derived_params, max_episode_steps"):
            plugins.envs()
    finally:
        plugins.remove_plugin("typo-plugin")
    assert "CartPole-v1" in plugins.envs()
