"""The plugin manager: built-ins plus third-party plugins from the ``rlops`` entry points.

``RLOPS_LOAD_PLUGINS`` limits which entry points load: unset loads all, a comma-separated
list loads only those entry-point names, an empty string loads none. Built-ins always load.
Registries built from the ``rlops_register_*`` hooks are cached until :func:`reset`.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pluggy

from rlops_plugin import hookspecs
from rlops_plugin.errors import PluginError

PROJECT_NAME = "rlops"
ENTRY_POINT_GROUP = "rlops"
LOAD_PLUGINS_ENV = "RLOPS_LOAD_PLUGINS"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "rlops_plugin.default_plugins.envs",
    "rlops_plugin.default_plugins.rewards",
    "rlops_plugin.default_plugins.architectures",
    "rlops_plugin.default_plugins.trainers",
    "rlops_plugin.default_plugins.monitors",
    "rlops_plugin.default_plugins.actions",
    "rlops_plugin.default_plugins.scenarios",
    "rlops_plugin.default_plugins.gates",
    "rlops_plugin.default_plugins.kinds",
    "rlops_plugin.default_plugins.judges",
)

T = TypeVar("T")

_lock = threading.RLock()
_manager: pluggy.PluginManager | None = None
_registries: dict[str, Registry[Any]] = {}


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered item: its name, the object, the plugin that gave it, and extras."""

    name: str
    value: T
    plugin: str
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> entry map filled by one ``rlops_register_*`` hook; duplicates are refused."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def get(self, name: str) -> Entry[T]:
        """Return the entry for ``name`` or raise ``PluginError`` listing the known names."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise PluginError(
                f"unknown {self.kind} {name!r}; registered {self.kind}s: {known}. "
                f"Install the plugin that provides it or check {LOAD_PLUGINS_ENV}."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        """Entries sorted by name."""
        return [self._entries[n] for n in self.names()]

    def _add(self, entry: Entry[T]) -> None:
        if not isinstance(entry.name, str) or not entry.name:
            raise PluginError(f"plugin {entry.plugin!r} registered a {self.kind} without a name")
        if entry.name in self._entries:
            other = self._entries[entry.name].plugin
            raise PluginError(
                f"{self.kind} {entry.name!r} registered twice: by {other!r} and by {entry.plugin!r}"
            )
        self._entries[entry.name] = entry


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, creating and loading it on first use."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = _create_manager()
        return _manager


def reset() -> None:
    """Forget the manager and cached registries (tests, or after changing the environment)."""
    global _manager
    with _lock:
        _manager = None
        _registries.clear()


def _create_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    allowed = os.environ.get(LOAD_PLUGINS_ENV)
    if allowed is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    else:
        for name in (n.strip() for n in allowed.split(",")):
            if name and pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name) == 0:
                if not pm.has_plugin(name):
                    raise PluginError(
                        f"{LOAD_PLUGINS_ENV} names {name!r}, but no installed package has an "
                        f"{ENTRY_POINT_GROUP!r} entry point of that name"
                    )
    pm.check_pending()
    return pm


def add_plugin(plugin: Any, name: str) -> None:
    """Register ``plugin`` (a module or object with ``@hookimpl`` functions) now; cached registries are rebuilt.

    For plugins that exist only at run time (a notebook, a test fixture); a package should use the
    ``rlops`` entry point instead. Gone after :func:`reset`.
    """
    with _lock:
        pm = get_plugin_manager()
        pm.register(plugin, name=name)
        pm.check_pending()
        _registries.clear()


def remove_plugin(name: str) -> None:
    """Unregister a plugin added with :func:`add_plugin` (no-op when absent); cached registries are rebuilt."""
    with _lock:
        pm = get_plugin_manager()
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
        _registries.clear()


def plugin_names() -> list[str]:
    """Names of every registered plugin (built-ins and entry points)."""
    pm = get_plugin_manager()
    return sorted(name for name, plugin in pm.list_name_plugin() if plugin is not None)


def registry(hook_name: str, kind: str) -> Registry[Any]:
    """Build (once) and return the registry filled by the hook ``hook_name``."""
    with _lock:
        if hook_name in _registries:
            return _registries[hook_name]
        pm = get_plugin_manager()
        reg: Registry[Any] = Registry(kind)
        caller = getattr(pm.hook, hook_name)
        keywords = frozenset(getattr(getattr(hookspecs, hook_name), "register_keywords", frozenset()))
        for impl in caller.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
            impl.function(register=_make_register(reg, plugin_name, hook_name, keywords))
        _registries[hook_name] = reg
        return reg


def _make_register(reg: Registry[Any], plugin_name: str, hook_name: str,
                   keywords: frozenset[str]) -> Callable[..., None]:
    """The ``register`` callable one plugin's hook gets: the hook's declared keywords and no others."""

    def register(name: str, value: Any = None, *, description: str = "", **extra: Any) -> None:
        unknown = sorted(set(extra) - keywords)
        if unknown:
            known = ", ".join(["description", *sorted(keywords)])
            raise PluginError(f"{hook_name}: plugin {plugin_name!r} passed register({name!r}, ...) the unknown "
                              f"keyword{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                              f"{hook_name} accepts {known}")
        reg._add(Entry(name=name, value=value, plugin=plugin_name, description=description,
                       extra=extra))

    return register


def envs() -> Registry[Any]:
    """Environments registered through ``rlops_register_envs``."""
    return registry("rlops_register_envs", "environment")


def rewards() -> Registry[Any]:
    """Reward functions registered through ``rlops_register_rewards``."""
    return registry("rlops_register_rewards", "reward function")


def architectures() -> Registry[Any]:
    """Policy architectures registered through ``rlops_register_architectures``."""
    return registry("rlops_register_architectures", "architecture")


def trainers() -> Registry[Any]:
    """Trainers registered through ``rlops_register_trainers``."""
    return registry("rlops_register_trainers", "trainer")


def scenario_suites() -> Registry[Any]:
    """Scenario suites registered through ``rlops_register_scenarios``."""
    return registry("rlops_register_scenarios", "scenario suite")


def gate_checks() -> Registry[Any]:
    """Gate checks registered through ``rlops_register_gate_checks``."""
    return registry("rlops_register_gate_checks", "gate check")


def monitors() -> Registry[Any]:
    """Drift monitors registered through ``rlops_register_monitors``."""
    return registry("rlops_register_monitors", "monitor")


def policy_kinds() -> Registry[Any]:
    """Kinds of policy registered through ``rlops_register_policy_kinds`` (``vector`` built in)."""
    return registry("rlops_register_policy_kinds", "policy kind")


def trigger_actions() -> Registry[Any]:
    """Retraining-trigger actions registered through ``rlops_register_trigger_actions``."""
    return registry("rlops_register_trigger_actions", "trigger action")


def judges() -> Registry[Any]:
    """Judges of agent answers (``JudgeSpec`` values) registered through ``rlops_register_judges``."""
    return registry("rlops_register_judges", "judge")
