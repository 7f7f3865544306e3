"""Agent interactions joined with their feedback: one row per choice, with ratings, edits, outcomes, comments.

The same classification as for decisions (:func:`rlops_plugin.experience.join.classify_events`): feedback
for an unknown interaction is ``pending`` for the grace period, then ``orphaned``; feedback later than
the window is ``late`` and kept out. Per choice the latest rating and correction win (a person may revise
them), and ``ratings`` keeps every rating in order (several raters: the signal extractor weighs them);
outcomes are per choice or per session (``session_id``) and the latest wins; comments accumulate.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from rlops_plugin.experience.join import JoinConfig, JoinResult, classified_events
from rlops_plugin.experience.records import SESSION_PREFIX, SHADOW_ROLE, decision_id, finite_or_none
from rlops_plugin.experience.store import ExperienceStore

_COLUMNS = ("decision_id", "interaction_id", "choice", "seq", "ts", "model", "session_id", "policy_version", "role",
            "endpoint", "messages", "prompt", "tools", "content", "tool_calls", "finish_reason", "logprob",
            "model_logprob", "vetoed", "sampling", "latency_ms")


def interactions_frame(store: ExperienceStore, model: str | None = None, since_seq: int = 0,
                       until_seq: int | None = None, include_shadow: bool = False) -> pd.DataFrame:
    """One row per choice of every interaction: the transcript, the answer and its log-probabilities.

    Answers of a shadow challenger (``role="shadow"``: logged, never seen by a user) are production
    evidence only for the canary analysis, so they are left out unless ``include_shadow``.
    """
    rows: list[dict[str, Any]] = []
    for seq, record in store.iter_interactions(model=model, since_seq=since_seq, until_seq=until_seq):
        if record.role == SHADOW_ROLE and not include_shadow:
            continue
        request = record.request
        for choice in record.choices:
            rows.append({
                "decision_id": decision_id(record.interaction_id, choice["index"]),
                "interaction_id": record.interaction_id, "choice": choice["index"], "seq": seq, "ts": record.ts,
                "model": record.model, "session_id": record.session_id, "policy_version": record.policy_version,
                "role": record.role, "endpoint": record.endpoint, "messages": request.get("messages"),
                "prompt": request.get("prompt"), "tools": request.get("tools"), "content": choice.get("content"),
                "tool_calls": choice.get("tool_calls") or [], "finish_reason": choice.get("finish_reason"),
                "logprob": choice.get("logprob"), "model_logprob": choice.get("model_logprob"),
                "vetoed": bool(choice.get("vetoes")), "sampling": request.get("sampling"),
                "latency_ms": record.latency_ms})
    return pd.DataFrame(rows, columns=list(_COLUMNS))


def join_interactions(store: ExperienceStore, config: JoinConfig | None = None, model: str | None = None,
                      now: float | None = None, since_seq: int = 0) -> JoinResult:
    """Choices (after ``since_seq``) with their joined ratings, corrections, outcomes and comments."""
    config = config or JoinConfig()
    frame = interactions_frame(store, model=model, since_seq=since_seq)
    events, counts = classified_events(store, config, now)
    joined = events[events["status"] == "joined"].sort_values(["event_ts", "seq"], kind="stable")
    by_choice = joined[joined["decision_id"].isin(set(frame["decision_id"]))]
    latest_rating = _latest(by_choice, "rating")
    frame["rating"] = frame["decision_id"].map(latest_rating["value"]) if len(latest_rating) else None
    frame["rating_scale"] = frame["decision_id"].map(
        latest_rating["payload"].map(lambda p: (p or {}).get("scale"))) if len(latest_rating) else None
    frame["rater"] = frame["decision_id"].map(
        latest_rating["payload"].map(lambda p: (p or {}).get("rater"))) if len(latest_rating) else None
    corrections = _latest(by_choice, "correction")["payload"]
    frame["correction"] = frame["decision_id"].map(
        corrections.map(lambda p: (p or {}).get("response"))) if len(corrections) else None
    frame["correction_rater"] = frame["decision_id"].map(
        corrections.map(lambda p: (p or {}).get("rater"))) if len(corrections) else None
    ratings = by_choice[by_choice["kind"] == "rating"]
    every = ratings.groupby("decision_id").apply(
        lambda g: [{"value": v, "scale": (p or {}).get("scale"), "rater": (p or {}).get("rater")}
                   for v, p in zip(g["value"], g["payload"], strict=True)], include_groups=False) \
        if len(ratings) else None
    frame["ratings"] = frame["decision_id"].map(every) if every is not None else None
    frame["outcome"] = _outcomes(frame, joined)
    comments = by_choice[by_choice["kind"] == "comment"].groupby("decision_id")["payload"].agg(
        lambda ps: [p["text"] for p in ps])
    frame["comments"] = frame["decision_id"].map(comments) if len(comments) else None
    late = set(events[events["status"] == "late"]["decision_id"])
    frame["late_feedback"] = frame["decision_id"].isin(late)
    return JoinResult(decisions=frame, events=events, counts=counts)


def _latest(events: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Per decision id, the whole latest event of ``kind`` (value, scale and rater from one event)."""
    rows = events[events["kind"] == kind].drop_duplicates("decision_id", keep="last")
    return rows.set_index("decision_id")


def _outcomes(frame: pd.DataFrame, joined: pd.DataFrame) -> pd.Series:
    """Per choice: its own latest outcome, else its session's (``{"value", "payload", "scope"}``)."""
    outcomes = joined[joined["kind"] == "outcome"]
    if not len(outcomes):
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    latest = {did: {"value": finite_or_none(value), "payload": payload,
                    "scope": "session" if did.startswith(SESSION_PREFIX) else "interaction"}
              for did, value, payload in zip(outcomes["decision_id"], outcomes["value"], outcomes["payload"],
                                             strict=True)}
    values = []
    for did, session in zip(frame["decision_id"], frame["session_id"], strict=True):
        values.append(latest.get(did) or (latest.get(SESSION_PREFIX + session) if session else None))
    return pd.Series(values, index=frame.index, dtype=object)


__all__ = ["interactions_frame", "join_interactions"]
