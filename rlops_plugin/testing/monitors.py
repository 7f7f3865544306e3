"""``check_monitor``: the contract of a monitor factory registered through ``rlops_register_monitors``.

``rlops monitor`` builds each monitor with ``factory(signal_config_dict)``, optionally calls
``columns(reference)`` (false-alarm budget) and ``prepare(reference, *, window, alpha, positions,
min_windows, max_windows, confidence)`` once, then ``evaluate(reference, window) -> MonitorResult``
per window. The check verifies, in order:

* ``factory``: it builds from the signal config dict and has a ``signal`` name and ``evaluate``;
* ``columns``: when present, it returns ``(column, kind)`` pairs of strings;
* ``result``: ``evaluate`` returns a ``MonitorResult`` for the monitor's signal, with a known
  status, ``ColumnResult`` columns and a JSON-able ``to_dict()``;
* ``no-false-drift``: the reference against itself is tested and does not drift;
* ``detects-drift``: a window drawn from a shifted distribution drifts;
* ``insufficient-data``: an empty window, one without the columns, one of all-NaN values and a
  tiny one return ``insufficient`` instead of raising;
* ``deterministic``: the same inputs give the same result;
* ``prepare``: when present, it accepts the monitor runner's arguments, and the drift checks hold after it.

The default frames have the columns of a decision log (``obs_0..obs_3``, ``action``,
``propensity``, ``prob_0``, ``prob_1``, ``entropy``, ``reward``, ``episode_end``,
``episode_return``); a monitor of other columns passes its own ``reference`` and ``drifted`` frames.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin import plugins
from rlops_plugin.testing.errors import fail

ID_COLUMNS = ("seq", "ts", "episode_id", "step", "policy_version")


def decision_frame(n: int, seed: int = 0, *, shift: float = 0.0, episode_len: int = 10) -> pd.DataFrame:
    """``n`` synthetic logged decisions (4 features, 2 actions, 0/1 rewards); ``shift`` moves every signal."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 4)) + 2.0 * shift
    p1 = np.clip(rng.beta(5, 5, size=n) + 0.35 * shift, 0.01, 0.99)
    probs = np.column_stack([1 - p1, p1])
    actions = (rng.random(n) < 0.5 + 0.4 * shift).astype(np.int64)
    ends = np.arange(n) % episode_len == episode_len - 1
    frame = pd.DataFrame({
        "seq": np.arange(n), "ts": 1000.0 + np.arange(n), "policy_version": "1",
        "episode_id": np.array([f"e{seed}-{i // episode_len}" for i in range(n)], dtype=object),
        "step": (np.arange(n) % episode_len).astype(float),
        **{f"obs_{i}": obs[:, i] for i in range(4)},
        "action": actions, "propensity": probs[np.arange(n), actions],
        "prob_0": probs[:, 0], "prob_1": probs[:, 1],
        "entropy": -(probs * np.log(probs)).sum(axis=1),
        "reward": (1.0 + 2.0 * shift) * (rng.random(n) < 0.7 - 0.4 * shift),
        "episode_end": np.where(ends, "terminated", None),
    })
    returns = frame["reward"].to_numpy().reshape(-1, episode_len).sum(axis=1) if n % episode_len == 0 else None
    frame["episode_return"] = np.nan
    if returns is not None:
        frame.loc[ends, "episode_return"] = returns
    return frame


def check_monitor(monitor: Callable[..., Any] | str, *, config: Mapping[str, Any] | None = None,
                  reference: pd.DataFrame | None = None, drifted: pd.DataFrame | None = None,
                  window: int = 2_000) -> dict[str, str]:
    """Check a monitor factory (or a registered monitor's name) against the contract above.

    ``config`` updates ``SignalConfig().to_dict()``, the dict given to the factory (as the runner does);
    ``reference`` (at least 10 windows) and ``drifted`` (one window) default to synthetic decision
    frames of ``window`` rows. Returns the statuses seen; raises :class:`ConformanceError`.
    """
    from rlops_plugin.monitoring import SignalConfig

    name = monitor if isinstance(monitor, str) else getattr(monitor, "__name__", repr(monitor))
    subject = f"monitor {name!r}"
    factory = plugins.monitors().get(monitor).value if isinstance(monitor, str) else monitor
    reference = decision_frame(10 * window, seed=1) if reference is None else reference
    drifted = decision_frame(window, seed=2, shift=1.0) if drifted is None else drifted
    config = {**SignalConfig().to_dict(), **(config or {})}
    built = _build(subject, factory, config)
    if hasattr(built, "columns"):
        _check_columns(subject, built, reference)
    seen = _check_drift(subject, built, reference, drifted)
    _check_insufficient(subject, built, reference, seen)
    first, second = (_evaluate(subject, built, reference, drifted).to_dict() for _ in range(2))
    if json.dumps(first, sort_keys=True, default=str) != json.dumps(second, sort_keys=True, default=str):
        raise fail(subject, "deterministic", "two evaluations of the same frames gave different results")
    if hasattr(built, "prepare"):
        prepared = _build(subject, factory, config)
        try:
            prepared.prepare(reference, window=len(drifted), alpha=0.01, positions=np.arange(len(reference)),
                             min_windows=10, max_windows=100, confidence=0.9)
        except Exception as exc:
            raise fail(subject, "prepare", "prepare(reference, window=..., alpha=..., positions=..., "
                                           "min_windows=..., max_windows=..., confidence=...) raised", exc) from exc
        seen.update({f"prepared_{k}": v for k, v in _check_drift(subject, prepared, reference, drifted).items()})
    return seen


def _build(subject: str, factory: Callable[..., Any], config: dict[str, Any]) -> Any:
    try:
        built = factory(dict(config))
    except Exception as exc:
        raise fail(subject, "factory", f"factory({config!r}) raised", exc) from exc
    signal = getattr(built, "signal", None)
    if not (isinstance(signal, str) and signal):
        raise fail(subject, "factory", f"the monitor needs a non-empty str 'signal', got {signal!r}")
    if not callable(getattr(built, "evaluate", None)):
        raise fail(subject, "factory", "the monitor has no evaluate(reference, current) method")
    return built


def _check_columns(subject: str, monitor: Any, reference: pd.DataFrame) -> None:
    try:
        columns = list(monitor.columns(reference))
    except Exception as exc:
        raise fail(subject, "columns", "columns(reference) raised", exc) from exc
    if not all(isinstance(c, tuple) and len(c) == 2 and all(isinstance(x, str) for x in c) for c in columns):
        raise fail(subject, "columns", f"columns(frame) must return (column, kind) string pairs, got {columns!r}")


def _evaluate(subject: str, monitor: Any, reference: pd.DataFrame, current: pd.DataFrame, what: str = "") -> Any:
    """``monitor.evaluate`` with its result's type, signal, statuses and JSON form checked."""
    from rlops_plugin.monitoring import DRIFT, ERROR, INSUFFICIENT, OK, ColumnResult, MonitorResult

    try:
        result = monitor.evaluate(reference, current)
    except Exception as exc:
        raise fail(subject, "insufficient-data" if what else "result", f"evaluate() raised{what}", exc) from exc
    if not isinstance(result, MonitorResult):
        raise fail(subject, "result", f"evaluate() must return a MonitorResult, got {type(result).__name__}")
    if result.signal != monitor.signal:
        raise fail(subject, "result", f"result.signal {result.signal!r} is not the monitor's {monitor.signal!r}")
    statuses = (DRIFT, OK, INSUFFICIENT, ERROR)
    if result.status not in statuses or not all(isinstance(c, ColumnResult) and c.status in statuses
                                                for c in result.columns):
        raise fail(subject, "result", f"status {result.status!r} or a column result is not one of {statuses}")
    try:
        json.dumps(result.to_dict(), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise fail(subject, "result", "result.to_dict() is not JSON", exc) from exc
    return result


def _check_drift(subject: str, monitor: Any, reference: pd.DataFrame, drifted: pd.DataFrame) -> dict[str, str]:
    from rlops_plugin.monitoring import DRIFT, OK

    same = _evaluate(subject, monitor, reference, reference)
    if same.status != OK:
        raise fail(subject, "no-false-drift", f"the reference against itself is {str(same.status)!r}, not 'ok' "
                                              f"({same.message}); pass reference/drifted frames with its columns")
    shifted = _evaluate(subject, monitor, reference, drifted)
    if shifted.status != DRIFT:
        raise fail(subject, "detects-drift", f"a shifted window is {str(shifted.status)!r}, not 'drift' "
                                             f"({shifted.message})")
    return {"reference": str(same.status), "drifted": str(shifted.status)}


def _check_insufficient(subject: str, monitor: Any, reference: pd.DataFrame, seen: dict[str, str]) -> None:
    from rlops_plugin.monitoring import INSUFFICIENT

    data_columns = [c for c in reference.columns if c not in ID_COLUMNS]
    all_nan = reference.head(len(reference) // 10).copy()
    all_nan[data_columns] = np.nan
    cases = {"an empty window": reference.iloc[:0],
             "a window without its columns": reference[[c for c in reference.columns if c in ID_COLUMNS]],
             "an all-NaN window": all_nan,
             "a 5-row window": reference.head(5)}
    for what, current in cases.items():
        result = _evaluate(subject, monitor, reference, current, f" on {what}")
        if result.status != INSUFFICIENT:
            raise fail(subject, "insufficient-data", f"{what} gave {str(result.status)!r}, not 'insufficient'")
        seen[what] = str(result.status)
