"""Shields: plugins that veto unsafe actions and substitute a fallback, with exact propensities.

For a Discrete policy with executed distribution ``p`` and a shield ``f(s, a)`` (the action
actually executed when ``a`` is proposed), the executed action ``b`` has probability
``sum(p[a] for a with f(s, a) == b)``. The server computes that by asking the shield about
every action with non-zero probability, so vetoes never bias the logged propensities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlops_plugin import plugins
from rlops_plugin.errors import PluginError


@dataclass(frozen=True)
class Veto:
    """A shield's verdict: execute ``action`` instead, because ``reason``."""

    action: Any
    reason: str


def shield_active() -> bool:
    """True when at least one plugin implements ``rlops_shield``."""
    return bool(plugins.get_plugin_manager().hook.rlops_shield.get_hookimpls())


def ask_shield(observation: np.ndarray, action: Any, context: dict[str, Any]) -> Veto | None:
    """Call the shield hook and normalize its answer."""
    verdict = plugins.get_plugin_manager().hook.rlops_shield(observation=observation, action=action,
                                                             context=context)
    if verdict is None or isinstance(verdict, Veto):
        return verdict
    if isinstance(verdict, tuple) and len(verdict) == 2:
        return Veto(verdict[0], str(verdict[1]))
    raise PluginError(f"rlops_shield returned {verdict!r}; return None, (action, reason) or Veto")


def guard_active() -> bool:
    """True when at least one plugin implements ``rlops_guard_tool_call``."""
    return bool(plugins.get_plugin_manager().hook.rlops_guard_tool_call.get_hookimpls())


def ask_tool_guard(call: dict[str, Any], context: dict[str, Any]) -> Veto | None:
    """Ask the tool-call guard about one call; ``Veto.action`` is the safe response text."""
    verdict = plugins.get_plugin_manager().hook.rlops_guard_tool_call(call=call, context=context)
    if verdict is None:
        return None
    if isinstance(verdict, tuple) and len(verdict) == 2:
        verdict = Veto(verdict[0], str(verdict[1]))
    if isinstance(verdict, Veto) and isinstance(verdict.action, str):
        return verdict
    raise PluginError(f"rlops_guard_tool_call returned {verdict!r}; return None or (safe_response_text, reason)")


def shield_discrete(obs: np.ndarray, probs: np.ndarray, contexts: Sequence[dict[str, Any]]
                    ) -> tuple[np.ndarray, list[dict[int, Veto]]]:
    """Effective distribution after the shield, and per row the vetoed proposals."""
    n, k = probs.shape
    effective = np.zeros_like(probs)
    vetoes: list[dict[int, Veto]] = [{} for _ in range(n)]
    for i in range(n):
        for a in np.flatnonzero(probs[i] > 0):
            verdict = ask_shield(obs[i], int(a), contexts[i])
            target = int(a)
            if verdict is not None:
                target = int(verdict.action)
                if not 0 <= target < k:
                    raise PluginError(f"rlops_shield substituted action {target}, outside 0..{k - 1}")
                if target != a:
                    vetoes[i][int(a)] = verdict
            effective[i, target] += probs[i, a]
    return effective, vetoes
