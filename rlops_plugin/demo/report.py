"""The demo's report: one self-contained HTML page with PNG plots, plus the audit trail page.

Everything is read back from where the loop recorded it (the decision log, the monitoring
summaries, the MLflow audit trail), not from the demo's memory, so the report shows what an
operator would find in the systems themselves.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PLOTS = ("returns", "drift", "canary", "champions")


def write_report(result: Any, config: Any, monitoring: Any, folder: Path) -> dict[str, Path]:
    """Write ``index.html``, ``audit.html`` and the PNG plots into ``folder``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    from rlops_plugin.audit.events import list_events
    from rlops_plugin.audit.export import to_html

    folder.mkdir(parents=True, exist_ok=True)
    events = list_events(result.model_name)
    episodes, stamps = episode_table(result.store)
    pngs = {
        "returns": plot_returns(episodes, stamps, events, folder / "returns.png"),
        "drift": plot_drift(monitoring.summaries, result.trigger_window, folder / "drift.png"),
        "canary": plot_canary(events, result.challenger_version, folder / "canary.png"),
        "champions": plot_champions(result, folder / "champions.png"),
    }
    audit = folder / "audit.html"
    audit.write_text(to_html(result.model_name, tracking_uri=result.tracking_uri, events=events))
    (folder / "audit.json").write_text(json.dumps({"model": result.model_name,
                                                   "events": [e.to_dict() for e in events]}, indent=2, default=str))
    page = folder / "index.html"
    page.write_text(_page(result, config, monitoring, events, pngs, folder))
    return {"report": page, "audit": audit}


# ----- data --------------------------------------------------------------------------------------
def episode_table(store_url: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Complete episodes in the decision log (policy version, position, return, world) and the
    sorted timestamps of all decisions (to place events on the same "decisions served" axis)."""
    from rlops_plugin.experience.join import join_feedback
    from rlops_plugin.experience.store import open_store

    with open_store(store_url) as store:
        frame = join_feedback(store).decisions
    stamps = np.sort(frame["ts"].to_numpy(dtype=float))
    frame = frame.assign(position=np.arange(len(frame)))
    frame = frame[frame["episode_id"].notna()]
    columns = ["episode_id", "version", "end_ts", "position", "ret", "world"]
    if frame.empty:
        return pd.DataFrame(columns=columns), stamps
    grouped = frame.groupby("episode_id").agg(
        versions=("policy_version", "nunique"), version=("policy_version", "first"), end_ts=("ts", "max"),
        position=("position", "max"), ended=("episode_end", lambda s: s.notna().any()),
        missing=("reward", lambda s: s.isna().any()), ret=("reward", "sum"))
    done = grouped[(grouped["versions"] == 1) & grouped["ended"] & ~grouped["missing"]].reset_index()
    done["world"] = np.where(done["episode_id"].str.startswith("nominal"), "nominal", "changed")
    return done.sort_values("position")[columns], stamps


def drift_ratios(summaries: list[Any]) -> pd.DataFrame:
    """Per window and signal, the largest column severity (score over threshold on the "more drift"
    scale of :meth:`ColumnResult.severity`; 1 is the alarm line)."""
    rows = []
    for summary in summaries:
        for name, result in summary.signals.items():
            ratios = [c.severity() for c in result.columns]
            ratios = [r for r in ratios if np.isfinite(r)]
            if ratios:
                rows.append({"window": summary.index, "signal": name, "ratio": max(ratios),
                             "drift": result.status == "drift"})
    return pd.DataFrame(rows, columns=["window", "signal", "ratio", "drift"])


# ----- plots -------------------------------------------------------------------------------------
def plot_returns(episodes: pd.DataFrame, stamps: np.ndarray, events: list[Any], path: Path) -> Path:
    """Episode returns of production traffic by policy version, against decisions served, with the
    loop's events (the x axis counts decisions, so the quiet minutes of training leave no gap)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2))
    for version, group in episodes.groupby("version", sort=False):
        x = group["position"] / 1000.0
        ax.scatter(x, group["ret"], s=9, alpha=0.45, label=f"{_short(version)} ({len(group)} episodes)")
        ax.plot(x, group["ret"].rolling(20, min_periods=5).mean(), linewidth=2)
    changed = episodes[episodes["world"] == "changed"]
    marks = [(float(changed["position"].min()), "world changes", "black")] if not changed.empty else []
    for event in events:
        label = {"trigger": "trigger", "promotion": "promotion", "rollback": "rollback"}.get(event.kind)
        if event.kind == "canary_step" and event.decision == "started":
            label = "shadow/canary starts"
        if label and len(stamps) and event.time >= stamps[0]:
            color = {"trigger": "orange", "promotion": "green", "rollback": "red"}.get(event.kind, "purple")
            marks.append((float(np.searchsorted(stamps, event.time)), label, color))
    top = max(float(episodes["ret"].max()) if not episodes.empty else 1.0, 1.0)
    for i, (position, label, color) in enumerate(marks):
        ax.axvline(position / 1000.0, color=color, linestyle="--" if color == "black" else "-", linewidth=1.2)
        ax.text(position / 1000.0, top * (1.0 - 0.07 * (i % 3)), f" {label}", va="top", fontsize=8, color=color)
    ax.set_xlabel("thousands of decisions served")
    ax.set_ylabel("episode return")
    ax.set_title("Production episode returns by policy version (dots: episodes; lines: rolling mean of 20)")
    ax.legend(loc="center left", fontsize=8)
    return _save(fig, path)


def plot_drift(summaries: list[Any], trigger_window: int | None, path: Path) -> Path:
    """Drift score / threshold per window and signal; the trigger window marked."""
    import matplotlib.pyplot as plt

    ratios = drift_ratios(summaries)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    for signal, group in ratios.groupby("signal"):
        ax.plot(group["window"], group["ratio"], marker="o", label=signal)
    ax.axhline(1.0, color="red", linestyle="--", linewidth=1, label="threshold")
    if trigger_window is not None:
        ax.axvline(trigger_window, color="orange", linewidth=2, alpha=0.7)
        ax.text(trigger_window, 0.05, " trigger", color="orange", va="bottom")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("monitoring window")
    ax.set_ylabel("score / threshold")
    ax.set_title("Drift per window against the production reference (above 1 = drifted)")
    ax.legend(fontsize=8, ncol=3)
    return _save(fig, path)


def canary_rows(events: list[Any], version: str) -> list[dict[str, Any]]:
    """The canary's looks that carried a test: step, share, difference and its always-valid interval."""
    rows = []
    for event in events:
        if event.kind not in ("canary_step", "promotion", "rollback") or event.model_version != version:
            continue
        m = event.metrics
        if "reward_diff" in m:
            rows.append({"label": f"{event.decision} {m.get('fraction', 1.0 if event.kind == 'promotion' else 0):.0%}"
                         if event.kind == "canary_step" else event.decision,
                         "diff": m["reward_diff"], "low": m.get("reward_diff_ci_low", np.nan),
                         "high": m.get("reward_diff_ci_high", np.nan),
                         "champion": m.get("champion_reward_mean", np.nan),
                         "challenger": m.get("challenger_reward_mean", np.nan),
                         "n_challenger": m.get("challenger_decisions", 0), "n_champion": m.get("champion_decisions", 0),
                         "reason": event.reason})
    return rows


def plot_canary(events: list[Any], version: str, path: Path,
                ylabel: str = "challenger - champion\n(mean episode return)") -> Path:
    """Challenger minus champion (episode return, or ``ylabel``'s unit) at each canary decision, with its interval."""
    import matplotlib.pyplot as plt

    rows = canary_rows(events, version) if version else []
    fig, ax = plt.subplots(figsize=(10, 3.6))
    if rows:
        x = np.arange(len(rows))
        diff = np.array([r["diff"] for r in rows])
        low = np.array([r["low"] for r in rows])
        high = np.array([r["high"] for r in rows])
        finite = np.isfinite(low) & np.isfinite(high)
        yerr = np.vstack([np.where(finite, diff - low, 0), np.where(finite, high - diff, 0)])
        ax.errorbar(x, diff, yerr=yerr, fmt="o", capsize=6, color="tab:blue")
        ax.set_xticks(x, [r["label"] for r in rows], fontsize=8)
        ax.axhline(0.0, color="gray", linewidth=1)
        ax.set_xlim(-0.5, len(rows) - 0.5)
        for i, r in enumerate(rows):
            digits = 0 if max(abs(r["challenger"]), abs(r["champion"])) >= 10 else 2
            ax.text(i, diff[i], f"  {r['challenger']:.{digits}f} vs {r['champion']:.{digits}f}", fontsize=8,
                    va="center")
    else:
        ax.text(0.5, 0.5, "no canary ran in this cycle", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel(ylabel)
    ax.set_title("Canary: difference with its always-valid interval at each decision")
    return _save(fig, path)


def plot_champions(result: Any, path: Path) -> Path:
    """Initial vs final champion, same seeds, in the old and the changed world."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    worlds = ["nominal", "shifted"]
    width = 0.38
    for i, who in enumerate(("initial", "final")):
        values = [result.returns.get(who, {}).get(w, np.nan) for w in worlds]
        version = result.initial_version if who == "initial" else result.final_version
        bars = ax.bar(np.arange(2) + (i - 0.5) * width, values, width, label=f"{who} champion (v{version})")
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(np.arange(2), ["nominal world", "changed world"])
    ax.set_ylabel("mean return (greedy)")
    ax.set_title("Champion before and after the loop")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(policy_version: str) -> str:
    """``cartpole-demo/2@abc...`` -> ``v2``."""
    name, _, rest = str(policy_version).partition("/")
    return f"v{rest.split('@')[0]}" if rest else str(policy_version)[:12]


# ----- page --------------------------------------------------------------------------------------
def _plot(path: Path) -> dict[str, str]:
    """A PNG for the page: inline as base64, and the file name for the link beside it."""
    return {"data": base64.b64encode(path.read_bytes()).decode(), "name": path.name}


def _page(result: Any, config: Any, monitoring: Any, events: list[Any], pngs: dict[str, Path], folder: Path) -> str:
    """The report page, rendered from ``templates/demo_report.html`` (every value escaped)."""
    from rlops_plugin.audit.export import render_html

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
    ids = experiment_ids(("rlops-demo", "rlops-training", "rlops-monitoring", "rlops-audit"))
    for name, exp_id in ids.items():
        links.append((f"{uri}/#/experiments/{exp_id}", f"experiment {name}"))
    if result.monitoring_run_id and "rlops-monitoring" in ids:
        links.append((f"{uri}/#/experiments/{ids['rlops-monitoring']}/runs/{result.monitoring_run_id}",
                      "the monitoring run (metrics per window, Evidently reports, trigger)"))
    timeline = [{"when": time.strftime("%H:%M:%S", time.gmtime(ev.time)), "kind": ev.kind,
                 "version": ev.model_version or "", "decision": ev.decision, "actor": ev.actor, "reason": ev.reason}
                for ev in events]
    return render_html(
        "demo_report.html", result=result, config=config, returns=result.returns, uri=uri,
        shift=json.dumps(config.shift), mlflow_root=str(Path(result.root) / "mlflow"), port=uri.rsplit(":", 1)[-1],
        plots={name: _plot(path) for name, path in pngs.items()},
        reports=[(p.stem, f"../monitoring/{p.name}") for p in reports], gate=gate,
        canary=canary_rows(events, result.challenger_version) if result.challenger_version else [],
        timeline=timeline, links=links, stages=list(result.stage_seconds.items()),
        config_json=json.dumps(config.to_dict(), indent=2))


def experiment_ids(names: tuple[str, ...]) -> dict[str, str]:
    """``name -> experiment id`` of the MLflow experiments that exist (the report links them)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    out = {}
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            out[name] = experiment.experiment_id
    return out
