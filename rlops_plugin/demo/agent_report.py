"""The agent demo's report: one HTML page with PNG plots, the audit trail and the post-market report.

Read back from where the loop recorded it (the interaction log with its reviews, the monitoring
summaries, the MLflow audit trail and registry), like the vector demo's report (:mod:`.report`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin.demo.report import _plot, _save, _short, experiment_ids, plot_canary, plot_drift

ROLLING = 40
"""Reviewed answers per point of the success-over-time curves."""


def write_agent_report(result: Any, config: Any, monitoring: Any, folder: Path) -> dict[str, Path]:
    """Write ``index.html``, ``audit.html``, ``post-market.html`` (and JSON) and the plots into ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    from rlops_plugin.audit.events import list_events
    from rlops_plugin.audit.export import to_html
    from rlops_plugin.lifecycle.postmarket import post_market_report, to_json
    from rlops_plugin.lifecycle.postmarket import to_html as post_market_html

    folder.mkdir(parents=True, exist_ok=True)
    events = list_events(result.model_name)
    answers = reviewed_answers(result.store)
    pngs = {
        "success": plot_success(answers, result, events, folder / "success.png"),
        "drift": plot_drift(monitoring.summaries if monitoring else [], result.trigger_window, folder / "drift.png"),
        "canary": plot_canary(events, result.challenger_version, folder / "canary.png",
                              ylabel="challenger - champion\n(mean rating, 0..1)"),
        "champions": plot_suites(result, folder / "champions.png"),
    }
    audit = folder / "audit.html"
    audit.write_text(to_html(result.model_name, tracking_uri=result.tracking_uri, events=events))
    (folder / "audit.json").write_text(json.dumps({"model": result.model_name,
                                                   "events": [e.to_dict() for e in events]}, indent=2, default=str))
    post = post_market_report(result.model_name, result.started_at - 1.0, store=result.store)
    post_market = folder / "post-market.html"
    post_market.write_text(post_market_html(post, result.tracking_uri))
    (folder / "post-market.json").write_text(to_json(post))
    page = folder / "index.html"
    page.write_text(_page(result, config, monitoring, events, pngs))
    return {"report": page, "audit": audit, "post_market": post_market}


# ----- data --------------------------------------------------------------------------------------
def reviewed_answers(store_url: str) -> pd.DataFrame:
    """Every answer users saw, in log order, with its review (``success``: thumbs up; NaN: not rated)."""
    from rlops_plugin.experience.interactions import join_interactions
    from rlops_plugin.experience.store import open_store

    with open_store(store_url) as store:
        frame = join_interactions(store).decisions
    frame = frame.sort_values("seq", kind="stable").reset_index(drop=True)
    rating = pd.to_numeric(frame["rating"], errors="coerce")
    return frame.assign(success=np.where(rating.notna(), (rating > 0).astype(float), np.nan),
                        position=np.arange(len(frame)))


def plot_success(answers: pd.DataFrame, result: Any, events: list[Any], path: Path) -> Path:
    """Share of answers the reviewer approved, over time, one curve per policy version; events marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.8))
    for version, group in answers[answers["success"].notna()].groupby("policy_version", sort=False):
        rolled = group["success"].rolling(ROLLING, min_periods=max(5, ROLLING // 4)).mean()
        ax.plot(group["position"], rolled, label=f"{_short(version)} ({len(group)} answers)")
    marks = [("world changes", _position(answers, result.world_change_seq))]
    for event in events:
        if event.kind in ("trigger", "promotion", "rollback") and event.time >= result.started_at:
            if event.kind == "promotion" and event.model_version == result.initial_version:
                continue
            marks.append((f"{event.kind} v{event.model_version}" if event.model_version else event.kind,
                          _position_at(answers, event.time)))
    for label, x in marks:
        if x is not None:
            ax.axvline(x, color="gray", linestyle="--", linewidth=1)
            ax.text(x, 1.02, label, rotation=0, fontsize=8, ha="left", va="bottom", transform=ax.get_xaxis_transform())
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("answers served (log order)")
    ax.set_ylabel(f"approved by the reviewer\n(rolling {ROLLING})")
    ax.set_title("Task success over time by policy version", pad=16)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def plot_suites(result: Any, path: Path) -> Path:
    """Initial vs final champion on each task suite (greedy answers)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    labels = list(next(iter(result.success.values()), {}).keys())
    width = 0.38
    for i, who in enumerate(("initial", "final")):
        values = [100 * result.success.get(who, {}).get(label, np.nan) for label in labels]
        version = result.initial_version if who == "initial" else result.final_version
        bars = ax.bar(np.arange(len(labels)) + (i - 0.5) * width, values, width, label=f"{who} champion (v{version})")
        ax.bar_label(bars, fmt="%.0f%%", fontsize=8)
    ax.set_xticks(np.arange(len(labels)), labels, fontsize=9)
    ax.set_ylim(0, 110)
    ax.set_ylabel("tickets routed right (%)")
    ax.set_title("Champion before and after the loop")
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def _position(answers: pd.DataFrame, seq: int) -> float | None:
    later = answers[answers["seq"] > seq]
    return float(later["position"].iloc[0]) if len(later) else None


def _position_at(answers: pd.DataFrame, ts: float) -> float | None:
    later = answers[answers["ts"] >= ts]
    return float(later["position"].iloc[0]) if len(later) else float(len(answers))


# ----- page --------------------------------------------------------------------------------------
def _page(result: Any, config: Any, monitoring: Any, events: list[Any], pngs: dict[str, Path]) -> str:
    """The report page, rendered from ``templates/agent_demo_report.html`` (every value escaped)."""
    from rlops_plugin.audit.export import render_html
    from rlops_plugin.demo.report import canary_rows

    uri = result.tracking_uri.rstrip("/")
    gates = [ev for ev in events if ev.kind == "gate"]
    gate = None
    if gates:
        details = gates[-1].details
        gate = {"candidate": str(details.get("candidate")), "champion": str(details.get("champion")),
                "decision": gates[-1].decision, "checks": details.get("checks", [])}
    reports = sorted((Path(result.root) / "monitoring").glob("*.html"))
    links = [(f"{uri}/#/models/{result.model_name}", f"registered model {result.model_name} (versions, aliases, "
                                                     "lineage tags)")]
    from rlops_plugin.demo.config import AGENT_TRACE_EXPERIMENT as TRACE_EXPERIMENT

    ids = experiment_ids(("rlops-demo", "rlops-training", "rlops-monitoring", "rlops-audit", TRACE_EXPERIMENT))
    for name, exp_id in ids.items():
        what = "MLflow Tracing: every interaction as a trace" if name == TRACE_EXPERIMENT else f"experiment {name}"
        links.append((f"{uri}/#/experiments/{exp_id}" + ("/traces" if name == TRACE_EXPERIMENT else ""), what))
    if result.monitoring_run_id and "rlops-monitoring" in ids:
        links.append((f"{uri}/#/experiments/{ids['rlops-monitoring']}/runs/{result.monitoring_run_id}",
                      "the monitoring run (metrics per window, Evidently reports, trigger)"))
    timeline = [{"when": time.strftime("%H:%M:%S", time.gmtime(ev.time)), "kind": ev.kind,
                 "version": ev.model_version or "", "decision": ev.decision, "actor": ev.actor, "reason": ev.reason}
                for ev in events]
    cases = sorted({case for verdicts in result.redteam.values() for case in verdicts})
    return render_html(
        "agent_demo_report.html", result=result, config=config, uri=uri, success=result.success,
        mlflow_root=str(Path(result.root) / "mlflow"), port=uri.rsplit(":", 1)[-1],
        plots={name: _plot(path) for name, path in pngs.items()},
        reports=[(p.stem, f"../monitoring/{p.name}") for p in reports], gate=gate,
        canary=canary_rows(events, result.challenger_version) if result.challenger_version else [],
        redteam=[(case, result.redteam.get("initial", {}).get(case), result.redteam.get("final", {}).get(case))
                 for case in cases],
        traffic=result.traffic, timeline=timeline, links=links, stages=list(result.stage_seconds.items()),
        windows=[{"index": s.index, "n": s.n_decisions, "status": str(s.status),
                  "drifted": ", ".join(n for n, r in s.signals.items() if str(r.status) == "drift")}
                 for s in (monitoring.summaries if monitoring else [])],
        config_json=json.dumps(config.to_dict(), indent=2))
