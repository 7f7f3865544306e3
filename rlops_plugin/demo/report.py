"""The demo's report: one self-contained HTML page with PNG plots, plus the audit trail page.

Everything is read back from where the loop recorded it (the decision log, the monitoring
summaries, the MLflow audit trail), not from the demo's memory, so the report shows what an
operator would find in the systems themselves.
"""

from __future__ import annotations

import base64
import html
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


def plot_canary(events: list[Any], version: str, path: Path) -> Path:
    """Challenger minus champion (episode return) at each canary decision, with its interval."""
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
            ax.text(i, diff[i], f"  {r['challenger']:.0f} vs {r['champion']:.0f}", fontsize=8, va="center")
    else:
        ax.text(0.5, 0.5, "no canary ran in this cycle", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("challenger - champion\n(mean episode return)")
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
def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{html.escape(alt)} (<a href="{path.name}">PNG</a>)</figcaption></figure>')


def _page(result: Any, config: Any, monitoring: Any, events: list[Any], pngs: dict[str, Path], folder: Path) -> str:
    e = html.escape
    uri = result.tracking_uri.rstrip("/")
    gates = [ev for ev in events if ev.kind == "gate"]
    gate_html = ""
    if gates:
        gate = gates[-1]
        rows = "".join(f"<tr><td>{e(c['name'])}</td><td class='{'pass' if c['passed'] else 'fail'}'>"
                       f"{'PASS' if c['passed'] else 'FAIL'}</td><td>{e(c['reason'])}</td></tr>"
                       for c in gate.details.get("checks", []))
        gate_html = (f"<p>Candidate <code>{e(str(gate.details.get('candidate')))}</code> vs champion "
                     f"<code>{e(str(gate.details.get('champion')))}</code>: <b>{e(gate.decision.upper())}</b></p>"
                     f"<table><tr><th>check</th><th>result</th><th>reason</th></tr>{rows}</table>")
    else:
        gate_html = "<p>No gate ran (no retraining was triggered).</p>"
    canary = canary_rows(events, result.challenger_version) if result.challenger_version else []
    canary_html = "".join(f"<tr><td>{e(r['label'])}</td><td>{r['challenger']:.1f}</td><td>{r['champion']:.1f}</td>"
                          f"<td>{r['diff']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}]</td>"
                          f"<td>{int(r['n_challenger'])} / {int(r['n_champion'])}</td><td>{e(r['reason'])}</td></tr>"
                          for r in canary)
    reports = sorted((Path(result.root) / "monitoring").glob("*.html"))
    report_links = " ".join(f'<a href="../monitoring/{p.name}">{e(p.stem)}</a>' for p in reports) or "none"
    links = [(f"{uri}/#/models/{result.model_name}", f"registered model {result.model_name} (versions, aliases, "
                                                     "lineage tags)")]
    experiment_ids = _experiment_ids(("rlops-demo", "rlops-training", "rlops-monitoring", "rlops-audit"))
    for name, exp_id in experiment_ids.items():
        links.append((f"{uri}/#/experiments/{exp_id}", f"experiment {name}"))
    if result.monitoring_run_id and "rlops-monitoring" in experiment_ids:
        links.append((f"{uri}/#/experiments/{experiment_ids['rlops-monitoring']}/runs/{result.monitoring_run_id}",
                      "the monitoring run (metrics per window, Evidently reports, trigger)"))
    link_html = "".join(f'<li><a href="{e(href)}">{e(text)}</a></li>' for href, text in links)
    timeline = "".join(f"<tr class='{e(ev.kind)}'><td>{time.strftime('%H:%M:%S', time.gmtime(ev.time))}</td>"
                       f"<td>{e(ev.kind)}</td><td>{e(ev.model_version or '')}</td><td>{e(ev.decision)}</td>"
                       f"<td>{e(ev.actor)}</td><td>{e(ev.reason)}</td></tr>" for ev in events)
    stages = "".join(f"<tr><td>{e(k)}</td><td>{v:.1f} s</td></tr>" for k, v in result.stage_seconds.items())
    r = result.returns
    summary = (f"Champion v{e(result.initial_version)} served production traffic; the world changed "
               f"({e(json.dumps(config.shift))}); the monitor "
               + (f"fired <b>{e(config.trigger)}</b> on window {result.trigger_window}" if result.triggered
                  else "saw no drift")
               + (f"; the pipeline trained v{e(result.challenger_version)}" if result.challenger_version else "")
               + (f"; gate <b>{'passed' if result.gate_passed else 'failed'}</b>" if result.gate_passed is not None
                  else "")
               + f"; outcome <b>{e(result.outcome)}</b>. Final champion: v{e(result.final_version)}.")
    returns_line = ""
    if r:
        returns_line = (f"<p>Greedy evaluation on the same {config.final_eval_episodes} seeds: initial champion "
                        f"{r['initial']['nominal']:.1f} (nominal) / {r['initial']['shifted']:.1f} (changed world); "
                        f"final champion {r['final']['nominal']:.1f} / {r['final']['shifted']:.1f}.</p>")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>rlops demo report: {e(result.model_name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}img.plot{{max-width:100%;
border:1px solid #ddd}}table{{border-collapse:collapse;margin:0.5em 0}}td,th{{border:1px solid #ccc;padding:3px 6px;
font-size:13px;vertical-align:top}}th{{background:#f3f3f3}}td.pass{{color:#0a0}}td.fail{{color:#c00}}
tr.promotion td{{background:#e9f7ef}}tr.rollback td{{background:#fdecea}}tr.trigger td{{background:#fff6e0}}
figure{{margin:1em 0}}code{{background:#f6f6f6;padding:0 3px}}</style></head><body>
<h1>rlops demo: the improvement loop of <code>{e(result.model_name)}</code></h1>
<p>{summary}</p>{returns_line}
<p>Wall time {result.wall_s:.0f} s (pipeline cycle {result.pipeline_wall_s:.0f} s). MLflow: <code>{e(uri)}</code>
(the demo stopped the server it started; run <code>rlops mlflow start --root {e(str(Path(result.root) / 'mlflow'))}
--port {e(uri.rsplit(':', 1)[-1])}</code> to browse it again with these links).</p>
<p id="plot-status">plots: {len(pngs)}</p>
<h2>Reward over time by policy version</h2>{_img(pngs['returns'], 'Episode returns by policy version')}
<h2>Drift per monitoring window</h2>{_img(pngs['drift'], 'Drift score over threshold per window')}
<p>Evidently reports of drifted windows: {report_links}</p>
<h2>Gate</h2>{gate_html}
<h2>Canary</h2>{_img(pngs['canary'], 'Canary comparison with intervals')}
<table><tr><th>look</th><th>challenger</th><th>champion</th><th>difference [interval]</th>
<th>episodes (challenger / champion)</th><th>reason</th></tr>{canary_html}</table>
<h2>Before and after</h2>{_img(pngs['champions'], 'Initial and final champion')}
<h2>Audit trail</h2><p>Full trail with details: <a href="audit.html">audit.html</a> (also
<a href="audit.json">audit.json</a>; <code>rlops audit {e(result.model_name)} --format html</code>).</p>
<table><tr><th>time (UTC)</th><th>event</th><th>version</th><th>decision</th><th>actor</th><th>reason</th></tr>
{timeline}</table>
<h2>Links</h2><ul>{link_html}</ul>
<h2>Stages</h2><table>{stages}</table>
<h2>Configuration</h2><pre>{e(json.dumps(config.to_dict(), indent=2))}</pre>
<script>
// count the plots the browser actually decoded (a broken image has naturalWidth 0)
window.addEventListener("load", () => {{
  const imgs = [...document.querySelectorAll("img.plot")];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.getElementById("plot-status").textContent = `plots: ${{ok}} of ${{imgs.length}} rendered`;
}});
</script></body></html>"""


def _experiment_ids(names: tuple[str, ...]) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient()
    out = {}
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            out[name] = experiment.experiment_id
    return out
