"""The agent training signal, extracted from the joined interaction log.

One dataset (kind ``preferences``) holds every signal a person or a judge gave, one row each, in TRL's
conversational format (``prompt`` messages, assistant ``chosen``/``rejected``/``completion`` messages with
their tool calls, and the ``tools`` offered), so a tool-call transcript trains as it was served:

- ``pair``: a human edit is ``chosen`` over the original answer; among answers to the same context (``n > 1``
  sampling, shadow challengers, repeated prompts) the higher-rated one is ``chosen``;
- ``demonstration``: the approved answers (rated positively, or with a positive outcome, and not edited) and the
  corrections; training on both keeps what already worked (replay) while it learns what was fixed;
- ``binary``: thumbs up/down as TRL's KTO ``prompt/completion/label``;
- ``reward``: scalar rewards from outcomes and ratings (normalised to [0, 1]).

Excluded rows are counted by reason (unrated, late, duplicate, conflicting labels). **Quarantined** rows are
kept and reported but never trained on: pairs whose ``chosen`` fails a safety grader, identical
chosen/rejected, and every label from a rater whose agreement with the majority (or with gold items) is
below a threshold.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin._version import __version__
from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import Dataset, DatasetError
from rlops_plugin.experience.feedback import THUMBS
from rlops_plugin.experience.interactions import join_interactions
from rlops_plugin.experience.join import JoinConfig
from rlops_plugin.experience.store import ExperienceStore
from rlops_plugin.kinds.agent.specs import GraderSpec

SIGNALS = ("pair", "demonstration", "binary", "reward")
COLUMNS = ("signal", "prompt", "tools", "chosen", "rejected", "completion", "label", "reward", "source",
           "decision_id", "rater", "policy_version", "quarantine")
"""Every row has every column (JSON text for messages and tools, None where a signal has no such part)."""


@dataclass(frozen=True)
class SignalConfig:
    """How the extractor reads ratings and which rows it quarantines."""

    rating_margin: float = 0.0
    """Two answers' normalised ratings must differ by more than this to form a pair."""
    max_pairs_per_context: int = 8
    """Cap on rating pairs per context (the best against the rest, then the next), so one popular prompt
    cannot dominate the dataset."""
    safety_graders: tuple[str, ...] | None = None
    """Graders of the bundle's reward part whose failure on ``chosen`` quarantines a pair (and a demonstration);
    default: the graders marked ``"safety": true``."""
    min_rater_agreement: float = 0.6
    """Raters agreeing with the majority (or the gold labels) less often than this are quarantined."""
    min_rater_items: int = 5
    """Items a rater must share with others (or with gold) before the agreement is judged."""
    gold: Mapping[str, float] = field(default_factory=dict)
    """Gold labels: decision id -> normalised rating (1 good, 0 bad) of known answers."""
    judge_min_agreement: float = 0.8
    """A judge must agree with the human pairs of the same log at least this often before it labels pairs."""
    judge_min_pairs: int = 10
    """Human pairs the judge must decide for its agreement to count."""
    judge_max_failure_rate: float = 0.1
    """Share of failed judge comparisons (timeouts, malformed answers) above which extraction fails."""


def build_agent_preferences(store: ExperienceStore, model: str, bundle: PolicyBundle,
                            policy_versions: list[str] | None = None, join: JoinConfig | None = None,
                            config: SignalConfig | None = None, now: float | None = None,
                            name: str | None = None, judge: Any = None) -> Dataset:
    """Every training signal in ``model``'s joined interactions (see the module docstring).

    With ``judge`` (a :class:`~rlops_plugin.kinds.agent.judges.Judge`), unreviewed answers to one context that
    differ are compared by it (source ``judge``), once its agreement with the log's human pairs is measured and
    high enough (``JudgeAgreementError`` with the numbers otherwise); its name, version and agreement go into
    the manifest. Raises ``DatasetError`` naming the counts when nothing trainable is left; a dataset of
    quarantined rows only is refused the same way, never saved as a success.
    """
    config = config or SignalConfig()
    joined = join_interactions(store, join, model=model, now=now)
    frame = joined.decisions
    if policy_versions is not None:
        frame = frame[frame["policy_version"].isin(policy_versions)]
    frame = frame[frame["endpoint"] == "chat.completions"].copy()
    votes = [_votes(r, s, v) for r, s, v in zip(frame["rating"], frame["rating_scale"], frame["ratings"], strict=True)]
    rater_stats, bad_raters = rater_agreement(votes, frame["decision_id"].tolist(), config)
    scored = [_score(v, bad_raters) for v in votes]
    frame["score"] = pd.Series([s[0] for s in scored], index=frame.index, dtype=object)
    frame["voters"] = pd.Series([s[1] for s in scored], index=frame.index, dtype=object)
    frame["outvoted"] = pd.Series([s[2] for s in scored], index=frame.index, dtype=bool)
    safety = _safety_spec(bundle.reward_spec, config.safety_graders)
    excluded: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    rated = frame["score"].map(lambda v: v is not None) | frame["outvoted"]
    used = rated | frame["correction"].notna() | frame["outcome"].notna()
    _count(excluded, "late", int((~used & frame["late_feedback"]).sum()))
    _count(excluded, "unrated", int((~used & ~frame["late_feedback"]).sum()))
    reviewed = frame[used]
    for _, row in reviewed.iterrows():
        prompt = _prompt(row)
        answer = assistant_message(row["content"], row["tool_calls"])
        base = {"prompt": prompt, "tools": _json(row["tools"] or []), "decision_id": row["decision_id"],
                "policy_version": row["policy_version"]}
        if isinstance(row["correction"], Mapping):
            editor = row["correction_rater"]
            quarantine = "rater_agreement" if editor in bad_raters else None
            base["rater"] = editor
            fixed = assistant_message(row["correction"].get("content"), row["correction"].get("tool_calls"))
            same = _same(fixed, answer)
            rows.append({**base, "signal": "pair", "chosen": _json([fixed]), "rejected": _json([answer]),
                         "source": "correction", "quarantine": "identical" if same else quarantine})
            rows.append({**base, "signal": "demonstration", "completion": _json([fixed]), "source": "correction",
                         "quarantine": quarantine})
            rows.append({**base, "signal": "binary", "completion": _json([fixed]), "label": 1.0,
                         "source": "correction", "quarantine": quarantine})
            if not same:
                rows.append({**base, "signal": "binary", "completion": _json([answer]), "label": 0.0,
                             "source": "correction", "quarantine": quarantine})
            continue
        score, outcome = row["score"], _outcome_value(row["outcome"])
        base["rater"] = row["voters"]
        if row["outvoted"]:  # rated only by quarantined raters: kept and reported, never trained on
            rows.append({**base, "signal": "binary", "completion": _json([answer]), "label": None,
                         "source": "rating", "quarantine": "rater_agreement"})
        elif score is not None:
            if score != 0.5:
                rows.append({**base, "signal": "binary", "completion": _json([answer]), "label": float(score > 0.5),
                             "source": "rating", "quarantine": None})
            rows.append({**base, "signal": "reward", "completion": _json([answer]), "reward": score,
                         "source": "rating", "quarantine": None})
        if outcome is not None:
            rows.append({**base, "signal": "reward", "completion": _json([answer]), "reward": outcome,
                         "source": "outcome", "quarantine": None})
        approved = (score is not None and score > 0.5) or (score is None and not row["outvoted"]
                                                           and outcome is not None and outcome > 0)
        if approved:
            rows.append({**base, "signal": "demonstration", "completion": _json([answer]), "source": "approved",
                         "quarantine": None})
    rows += _rating_pairs(reviewed, config)
    judges = []
    if judge is not None:
        judged, record = _judge_pairs(judge, rows, frame[~used], config)
        rows += judged
        judges.append(record)
    rows = _drop_duplicates_and_conflicts(rows, excluded)
    _quarantine_unsafe(rows, safety, bundle)
    trainable = [r for r in rows if r.get("quarantine") is None]
    if not trainable:
        quarantined = _counts(r["quarantine"] for r in rows if r.get("quarantine"))
        raise DatasetError(f"no usable training signal in {len(frame)} answers of {model!r}: "
                           f"{len(reviewed)} reviewed, {len(rows)} signal rows, all quarantined "
                           f"({quarantined or 'none'}); excluded: {excluded or 'none'}")
    columns = {name: np.asarray([r.get(name) for r in rows], dtype=object) for name in COLUMNS}
    for name in ("label", "reward"):
        columns[name] = np.asarray([np.nan if r.get(name) is None else float(r[name]) for r in rows], dtype=float)
    hashes = bundle.hashes()
    manifest = {
        "name": name or f"{model}-preferences", "kind": "preferences", "policy_kind": "agent", "model": model,
        "store": _redact(store.url), "interactions": int(frame["interaction_id"].nunique()),
        "answers": len(frame), "reviewed": len(reviewed),
        "signals": {s: sum(r["signal"] == s and r.get("quarantine") is None for r in rows) for s in SIGNALS},
        "sources": _counts(r["source"] for r in trainable),
        "excluded": excluded, "quarantined": _counts(r["quarantine"] for r in rows if r.get("quarantine")),
        "raters": rater_stats, "quarantined_raters": sorted(bad_raters),
        "safety_graders": [g["name"] for g in safety.graders] if safety else [],
        "join": joined.counts, "policy_versions": sorted(set(frame["policy_version"])),
        "env_sha": hashes["env"], "reward_sha": hashes["reward"], "reward_ref": bundle.reward_spec.ref,
        "built_with_bundle": hashes["bundle"], "judges": judges, "created_at": time.time(),
        "rlops_version": __version__,
    }
    return Dataset("preferences", columns, manifest)


# ----- rows TRL reads ----------------------------------------------------------------------------
def assistant_message(content: str | None, tool_calls: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """An OpenAI assistant message (tool call arguments as JSON text), as TRL's conversational rows hold it."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    calls = [{"type": "function", "function": {"name": c["name"], "arguments": _arguments_text(c.get("arguments"))}}
             for c in tool_calls or []]
    if calls:
        message["tool_calls"] = calls
    return message


def trainable_rows(data: Dataset, signal: str) -> list[dict[str, Any]]:
    """The dataset's unquarantined rows of ``signal``, messages parsed back from JSON."""
    if data.kind != "preferences" or "signal" not in data.columns:
        raise DatasetError(f"an agent preferences dataset is needed (rlops dataset build --kind preferences), "
                           f"got a {data.kind} dataset")
    out = []
    for i in range(len(data)):
        if data.columns["signal"][i] != signal or data.columns["quarantine"][i] is not None:
            continue
        row = {}
        for name in COLUMNS:
            value = data.columns[name][i]
            if name in ("prompt", "tools", "chosen", "rejected", "completion") and value is not None:
                value = json.loads(value)
            elif isinstance(value, float) and math.isnan(value):
                value = None
            row[name] = value
        out.append(row)
    return out


def signal_counts(data: Dataset) -> dict[str, Any]:
    """Per signal, trainable and quarantined rows (what an error message names)."""
    signals, quarantine = data.columns["signal"], data.columns["quarantine"]
    return {"trainable": _counts(s for s, q in zip(signals, quarantine, strict=True) if q is None),
            "quarantined": _counts(q for q in quarantine if q is not None)}


# ----- raters ----------------------------------------------------------------------------------
def rater_agreement(votes: Sequence[Mapping[str, float]], decision_ids: Sequence[str],
                    config: SignalConfig) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Each rater's agreement with the majority label of answers several raters rated, and with gold labels.

    ``votes`` are per answer ``{rater: normalised rating}``. Returns the per-rater table (``items``,
    ``agreed``, ``rate``) and the raters below ``config.min_rater_agreement`` on at least
    ``config.min_rater_items`` items. A tied vote, and neutral ratings, are no reference.
    """
    stats: dict[str, dict[str, Any]] = {}
    for did, by_rater in zip(decision_ids, votes, strict=True):
        labels = {r: v > 0.5 for r, v in by_rater.items() if r is not None and v != 0.5}
        up = sum(labels.values())
        majority = [up > len(labels) / 2] if len(labels) > 1 and up != len(labels) / 2 else []
        for rater, label in labels.items():
            references = list(majority)
            if did in config.gold:
                references.append(float(config.gold[did]) > 0.5)
            entry = stats.setdefault(rater, {"items": 0, "agreed": 0})
            for reference in references:
                entry["items"] += 1
                entry["agreed"] += int(label == reference)
    for entry in stats.values():
        entry["rate"] = entry["agreed"] / entry["items"] if entry["items"] else None
    bad = {r for r, s in stats.items()
           if s["items"] >= config.min_rater_items and s["rate"] is not None and s["rate"] < config.min_rater_agreement}
    return stats, bad


def _votes(latest: Any, scale: Any, ratings: Any) -> dict[Any, float]:
    """``{rater: normalised rating}`` of one answer (each rater's latest; unnamed raters count as one voice)."""
    out: dict[Any, float] = {}
    for rating in ratings if isinstance(ratings, list) else []:
        score = _normalise(rating["value"], rating["scale"])
        if score is not None:
            out.pop(rating["rater"], None)
            out[rating["rater"]] = score
    if not out:
        score = _normalise(latest, scale)
        if score is not None:
            out[None] = score
    return out


def _score(votes: Mapping[Any, float], bad: set[str]) -> tuple[float | None, str | None, bool]:
    """The answer's rating (mean over trusted raters), who gave it, and whether only quarantined raters rated it."""
    trusted = {r: v for r, v in votes.items() if r not in bad}
    if not trusted:
        return None, None, bool(votes)
    voters = ",".join(sorted(str(r) for r in trusted if r is not None)) or None
    return sum(trusted.values()) / len(trusted), voters, False


# ----- helpers ---------------------------------------------------------------------------------
def _normalise(value: Any, scale: Any) -> float | None:
    """A rating in [0, 1]: thumbs 1/-1 -> 1/0; ``"L-H"`` linear; no scale: 1-5 stars if > 1, else as given."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    value = float(value)
    if scale == THUMBS:
        return 1.0 if value > 0 else 0.0
    if isinstance(scale, str) and "-" in scale:
        low, high = (float(x) for x in scale.split("-", 1))
        return (value - low) / (high - low) if high > low else None
    if -1.0 <= value <= 1.0:
        return 1.0 if value > 0 else 0.0 if value < 0 else 0.5
    return min(max((value - 1.0) / 4.0, 0.0), 1.0)


def _outcome_value(outcome: Any) -> float | None:
    if not isinstance(outcome, Mapping):
        return None
    value = outcome.get("value")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def interaction_reward(row: Mapping[str, Any]) -> float | None:
    """One answer's reward in production: its latest rating in [0, 1] (as the signals read it), else its
    outcome's value (its own or its session's), else None (unrewarded)."""
    rating = _normalise(row.get("rating"), row.get("rating_scale"))
    return rating if rating is not None else _outcome_value(row.get("outcome"))


def _prompt(row: pd.Series) -> str:
    return _json([dict(m) for m in row["messages"] or []])


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments if arguments is not None else {},
                                                                   sort_keys=True)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return _json(_canonical(a)) == _json(_canonical(b))


def _canonical(message: Mapping[str, Any]) -> dict[str, Any]:
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"]) if c["function"]["arguments"] else {})
             for c in message.get("tool_calls") or []]
    return {"content": (message.get("content") or "").strip() or None, "calls": calls}


def _rating_pairs(reviewed: pd.DataFrame, config: SignalConfig) -> list[dict[str, Any]]:
    """Pairs among differently rated, unedited answers to the same context (prompt and tools)."""
    rated = reviewed[reviewed["score"].map(lambda v: v is not None) & reviewed["correction"].isna()]
    groups: dict[str, list[pd.Series]] = {}
    for _, row in rated.iterrows():
        groups.setdefault(_prompt(row) + "\x00" + _json(row["tools"] or []), []).append(row)
    out = []
    for rows in groups.values():
        rows = sorted(rows, key=lambda r: (-r["score"], r["decision_id"]))
        made = 0
        for i, hi in enumerate(rows):
            for lo in rows[i + 1:]:
                if made >= config.max_pairs_per_context or hi["score"] - lo["score"] <= config.rating_margin:
                    continue
                chosen = assistant_message(hi["content"], hi["tool_calls"])
                rejected = assistant_message(lo["content"], lo["tool_calls"])
                out.append({"signal": "pair", "prompt": _prompt(hi), "tools": _json(hi["tools"] or []),
                            "chosen": _json([chosen]), "rejected": _json([rejected]), "source": "rating",
                            "decision_id": f"{hi['decision_id']}>{lo['decision_id']}", "rater": hi["voters"],
                            "policy_version": hi["policy_version"],
                            "quarantine": "identical" if _same(chosen, rejected) else None})
                made += 1
    return out


def _judge_pairs(judge: Any, rows: list[dict[str, Any]], unreviewed: pd.DataFrame,
                 config: SignalConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pairs the judge decides among unreviewed answers to one context, after its agreement with the humans."""
    from rlops_plugin.kinds.agent.judges import judge_agreement, label_pairs, require_agreement

    human = [(json.loads(r["prompt"]), json.loads(r["chosen"])[0], json.loads(r["rejected"])[0],
              json.loads(r["tools"]) or None) for r in rows if r["signal"] == "pair" and r.get("quarantine") is None]
    agreement = require_agreement(judge_agreement(judge, human), config.judge_min_agreement, config.judge_min_pairs)
    groups: dict[str, list[pd.Series]] = {}
    for _, row in unreviewed.iterrows():
        groups.setdefault(_prompt(row) + "\x00" + _json(row["tools"] or []), []).append(row)
    items, sources = [], []
    for answers in groups.values():
        distinct: dict[str, pd.Series] = {}
        for row in answers:
            distinct.setdefault(_json(_canonical(assistant_message(row["content"], row["tool_calls"]))), row)
        unique = list(distinct.values())[:config.max_pairs_per_context + 1]
        for a, b in zip(unique, unique[1:], strict=False):
            items.append((list(a["messages"] or []), assistant_message(a["content"], a["tool_calls"]),
                          assistant_message(b["content"], b["tool_calls"]), list(a["tools"] or []) or None))
            sources.append((a, b))
    judged = label_pairs(judge, items, max_failure_rate=config.judge_max_failure_rate)
    out = []
    for (a, b), comparison in zip(sources, judged.comparisons, strict=True):
        if comparison.winner not in ("a", "b"):
            continue
        hi, lo = (a, b) if comparison.winner == "a" else (b, a)
        out.append({"signal": "pair", "prompt": _prompt(hi), "tools": _json(hi["tools"] or []),
                    "chosen": _json([assistant_message(hi["content"], hi["tool_calls"])]),
                    "rejected": _json([assistant_message(lo["content"], lo["tool_calls"])]), "source": "judge",
                    "decision_id": f"{hi['decision_id']}>{lo['decision_id']}", "rater": f"judge:{judge.name}",
                    "policy_version": hi["policy_version"], "quarantine": None})
    record = {"name": judge.name, "version": judge.version, "agreement": agreement.to_dict(),
              "comparisons": judged.counts()}
    return out, record


def _drop_duplicates_and_conflicts(rows: list[dict[str, Any]], excluded: dict[str, int]) -> list[dict[str, Any]]:
    """Drop repeated rows (counted ``duplicate``) and every rating-derived row of an answer whose thumbs
    disagree (the same answer to the same prompt rated up and down: ``conflicting``)."""
    labels: dict[str, set[float]] = {}
    for row in rows:
        if row["signal"] == "binary" and row.get("quarantine") is None:
            labels.setdefault(row["prompt"] + row["completion"], set()).add(row["label"])
    conflicts = {key for key, seen in labels.items() if len(seen) > 1}
    seen_rows: set[str] = set()
    out = []
    for row in rows:
        rated = row["signal"] == "binary" or row["source"] in ("approved", "rating")
        if rated and row.get("completion") is not None and row["prompt"] + row["completion"] in conflicts:
            _count(excluded, "conflicting", 1)
            continue
        key = _json([row["signal"], row["prompt"], row.get("chosen"), row.get("rejected"), row.get("completion"),
                     row.get("label"), row.get("source")])
        if key in seen_rows:
            _count(excluded, "duplicate", 1)
            continue
        seen_rows.add(key)
        out.append(row)
    return out


def _safety_spec(spec: Any, names: tuple[str, ...] | None) -> GraderSpec | None:
    if not isinstance(spec, GraderSpec):
        return None
    graders = [g for g in spec.graders if g["type"] == "code"
               and (g["name"] in names if names is not None else bool(g.get("safety")))]
    if names is not None and len(graders) != len(set(names)):
        known = [g["name"] for g in spec.graders]
        raise ConfigError(f"safety_graders: {sorted(set(names) - {g['name'] for g in graders})} are not code "
                          f"graders of the bundle's reward part ({known})")
    if not graders:
        return None
    return GraderSpec(graders=tuple(graders), combine="min")


def _quarantine_unsafe(rows: list[dict[str, Any]], safety: GraderSpec | None, bundle: PolicyBundle) -> None:
    """Quarantine pairs and demonstrations whose good answer fails a safety grader."""
    if safety is None:
        return
    tools = bundle.policy.tools
    for row in rows:
        good = row.get("chosen") if row["signal"] == "pair" else row.get("completion") \
            if row["signal"] == "demonstration" or (row["signal"] == "binary" and row.get("label") == 1.0) else None
        if good is None or row.get("quarantine") is not None:
            continue
        message = json.loads(good)[0]
        choice = {"content": message.get("content"),
                  "tool_calls": [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                                 for c in message.get("tool_calls") or []]}
        if safety.grade(choice, None, tools=json.loads(row["tools"]) or tools)["combined"] < 1.0:
            row["quarantine"] = "unsafe_chosen"


def _count(counts: dict[str, int], reason: str, n: int) -> None:
    if n:
        counts[reason] = counts.get(reason, 0) + n


def _counts(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url

__all__ = ["COLUMNS", "SIGNALS", "SignalConfig", "assistant_message", "build_agent_preferences", "rater_agreement",
           "signal_counts", "trainable_rows"]
