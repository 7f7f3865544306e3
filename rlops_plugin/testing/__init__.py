"""Conformance checks for rlops plugins, shipped to plugin authors (like SB3's ``check_env``).

::

    from rlops_plugin.testing import check_env, check_monitor, check_trainer

    check_trainer(MyTrainer, config={"steps": 300})   # learns, keeps init, saves, reloads, serves
    check_env("acme/Warehouse-v0")                     # reset/step contract, spaces, seeding, EnvSpec hash
    check_monitor(my_monitor_factory)                  # factory, evaluate, drift found, no raise on bad data

Each check raises :class:`ConformanceError` (an ``RLOpsError``) naming the check that failed and
returns a small dict of what it measured. Nothing here needs pytest; rlops' own tests run the
same checks over every registered plugin. Names are imported on first use (torch, Evidently and
MLflow load only with the check that needs them).
"""

from __future__ import annotations

from rlops_plugin._lazy import lazy_exports

_EXPORTS = {
    "errors": ("ConformanceError",),
    "trainers": ("check_trainer",),
    "envs": ("check_env",),
    "monitors": ("check_monitor",),
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
