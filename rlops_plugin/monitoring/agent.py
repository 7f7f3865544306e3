"""The agent monitoring frame: one flat row per choice of an agent's logged interactions, feedback joined.

An agent's "decision" is a choice of an interaction (``InteractionRecord``); the same drift monitor tests
its features window against reference, with the same Evidently stat tests and calibrated thresholds as a
vector policy's (:mod:`.drift`). Columns (``AGENT_SIGNALS`` names which signal tests which):

* ids: ``seq, ts, decision_id, interaction_id, choice, session_id, policy_version, role, model`` and
  ``user_text`` (the last user message, kept to learn the keyword vocabulary; not tested);
* ``prompts``: ``prompt_chars``, ``prompt_words``, ``prompt_turns`` of the conversation the agent saw
  (system messages left out: the server adds the same one to every request);
* ``topics``: ``topic_<word>`` (1 when the last user message holds the word) for each word of a small
  vocabulary learned from the reference (:func:`keyword_vocabulary`), and ``topic_oov``, the share of the
  message's words outside it (a new product line shows there first);
* ``tools``: ``tool`` (the tool called, ``none`` for plain text, ``a+b`` for several), ``action`` (the call
  with its enum-typed arguments, ``route(queue=billing)``: the agent's discrete choice, so tickets routed
  differently show although the tool is the same) and ``n_tool_calls``;
* ``responses``: ``response_chars``; ``refusals``: ``refusal`` (the ``refusal`` grader of
  :mod:`rlops_plugin.kinds.agent.graders`); ``vetoes``: ``vetoed`` (the tool-call guard vetoed the answer);
* ``ratings``: ``rating`` normalised to [0, 1] as the signal extractor reads it (mean over raters);
  ``outcomes``: ``outcome`` (the choice's own outcome, else its session's); ``judge``: ``judge_score``, only
  when a judge that scores single answers is given;
* ``reward``: the outcome when known, else the rating: what ``reward-below`` bounds.

Shadow records (``role == "shadow"``: a challenger's answers that no user saw) are not production traffic and
are never read. References: the champion's first production interactions (:func:`production_interactions`),
its sampled answers to its own task suite (:func:`task_reference`), or a file of this frame.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin.experience.interactions import interactions_frame, join_interactions
from rlops_plugin.experience.join import JoinConfig
from rlops_plugin.experience.store import ExperienceStore
from rlops_plugin.kinds.agent.graders import refusal
from rlops_plugin.kinds.agent.signals import _votes  # the extractor's rating normalisation, reused as is
from rlops_plugin.monitoring.config import MonitorError

SHADOW_ROLE = "shadow"
"""Routing role of answers a challenger gave in shadow mode: logged, never returned, not production traffic."""
TOPIC_PREFIX = "topic_"
OOV_COLUMN = "topic_oov"
AGENT_ID_COLUMNS = ("seq", "ts", "decision_id", "interaction_id", "choice", "session_id", "policy_version", "role",
                    "model", "user_text")
NO_TOOL = "none"
DEFAULT_KEYWORDS = 20
"""Words in the topic vocabulary: enough to name a ticket's subject, few enough that each column has its own
share of the false-alarm budget (each is one more Bonferroni split)."""
DEFAULT_MAX_DOC_SHARE = 0.5
"""Words in more than this share of the reference's messages are left out: stop words ("the", "my") carry no
topic and would crowd the vocabulary."""
_WORD = re.compile(r"[a-z0-9][a-z0-9'_-]*")


def words(text: Any) -> list[str]:
    """Lower-case words of ``text`` (letters, digits, inner apostrophes and dashes); ``[]`` for no text."""
    return _WORD.findall(text.lower()) if isinstance(text, str) else []


def keyword_vocabulary(texts: Iterable[Any], size: int = DEFAULT_KEYWORDS,
                       max_doc_share: float = DEFAULT_MAX_DOC_SHARE, min_count: int = 2) -> list[str]:
    """The ``size`` words found in the most reference messages (ties by the word), stop words left out.

    A bag of the reference's own most frequent words, not an embedding: it needs no model (the policy's
    embeddings change with every version, and computing them costs a forward pass per message), it is
    deterministic (the same reference gives the same columns), and each column names what changed
    (``topic_invoice`` dropped, ``topic_oov`` rose). Words in more than ``max_doc_share`` of the messages or in
    fewer than ``min_count`` are left out.
    """
    docs = [set(words(t)) for t in texts]
    n = len(docs)
    counts = Counter(w for doc in docs for w in doc)
    kept = [(c, w) for w, c in counts.items() if c >= min_count and (n == 0 or c / n <= max_doc_share)]
    return [w for _, w in sorted(kept, key=lambda cw: (-cw[0], cw[1]))[:size]]


def vocabulary_of(frame: pd.DataFrame) -> list[str] | None:
    """The topic vocabulary a featurized frame was built with (from its ``topic_<word>`` columns), else ``None``."""
    found = [str(c)[len(TOPIC_PREFIX):] for c in frame.columns
             if str(c).startswith(TOPIC_PREFIX) and c != OOV_COLUMN]
    return found if found or OOV_COLUMN in frame.columns else None


def _conversation(messages: Any, prompt: Any) -> list[Mapping[str, Any]]:
    if isinstance(messages, list):
        return [m for m in messages if isinstance(m, Mapping) and m.get("role") != "system"]
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else []


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return content if isinstance(content, str) else ""


def _enum_arguments(tools: Any) -> dict[str, list[str]]:
    """Per offered tool, the names of its arguments whose JSON Schema is an ``enum`` (its discrete choices)."""
    out: dict[str, list[str]] = {}
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        properties = (function.get("parameters") or {}).get("properties") or {}
        out[str(function.get("name"))] = sorted(k for k, v in properties.items()
                                                if isinstance(v, Mapping) and "enum" in v)
    return out


def _call(call: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, arguments)`` of a logged ``{"name", "arguments"}`` or an OpenAI ``{"function": ...}`` call."""
    if "function" in call and isinstance(call["function"], Mapping):
        name, arguments = call["function"].get("name"), call["function"].get("arguments")
    else:
        name, arguments = call.get("name"), call.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = {}
    return str(name), arguments if isinstance(arguments, Mapping) else {}


def describe_action(tool_calls: Any, tools: Any) -> tuple[str, str, int]:
    """``(tool, action, n_tool_calls)`` of one answer: see the module docstring."""
    calls = [_call(c) for c in tool_calls or [] if isinstance(c, Mapping)]
    if not calls:
        return NO_TOOL, NO_TOOL, 0
    enums = _enum_arguments(tools)
    actions = []
    for name, arguments in calls:
        keys = enums.get(name, [])
        actions.append(f"{name}(" + ",".join(f"{k}={arguments.get(k)}" for k in keys) + ")")
    return "+".join(name for name, _ in calls), "+".join(actions), len(calls)


def _rating(latest: Any, scale: Any, ratings: Any) -> float:
    """The choice's rating in [0, 1], as the signal extractor reads it (each rater's latest, averaged); NaN if none."""
    votes = _votes(latest, scale, ratings)
    return float(sum(votes.values()) / len(votes)) if votes else math.nan


def _outcome(value: Any) -> float:
    if isinstance(value, Mapping):
        value = value.get("value")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def agent_frame(rows: pd.DataFrame, vocabulary: Sequence[str] | None = None, *, judge: Any = None) -> pd.DataFrame:
    """The monitoring frame of interaction rows (``interactions_frame`` or ``join_interactions`` columns).

    ``vocabulary`` is the reference's (:func:`keyword_vocabulary` of ``rows`` when ``None``: a reference);
    ``judge`` (a :class:`~rlops_plugin.kinds.agent.judges.Judge` that scores one answer) fills ``judge_score``.
    Feedback columns missing from ``rows`` (a task-suite reference, rows not joined yet) are NaN.
    """
    texts = [_last_user(m, p) for m, p in zip(_col(rows, "messages"), _col(rows, "prompt"), strict=True)]
    vocab = list(keyword_vocabulary(texts) if vocabulary is None else vocabulary)
    data: dict[str, Any] = {c: _col(rows, c) for c in AGENT_ID_COLUMNS if c != "user_text"}
    data["user_text"] = texts
    conversations = [_conversation(m, p) for m, p in zip(_col(rows, "messages"), _col(rows, "prompt"), strict=True)]
    data["prompt_chars"] = [float(sum(len(_text(m)) for m in c)) for c in conversations]
    data["prompt_words"] = [float(sum(len(words(_text(m))) for m in c)) for c in conversations]
    data["prompt_turns"] = [float(len(c)) for c in conversations]
    bags = [set(words(t)) for t in texts]
    for word in vocab:
        data[TOPIC_PREFIX + word] = [float(word in bag) for bag in bags]
    known = set(vocab)
    data[OOV_COLUMN] = [float(np.mean([w not in known for w in words(t)])) if words(t) else math.nan for t in texts]
    described = [describe_action(c, t) for c, t in zip(_col(rows, "tool_calls"), _col(rows, "tools"), strict=True)]
    data["tool"] = [d[0] for d in described]
    data["action"] = [d[1] for d in described]
    data["n_tool_calls"] = [float(d[2]) for d in described]
    contents = _col(rows, "content")
    data["response_chars"] = [float(len(c)) if isinstance(c, str) else 0.0 for c in contents]
    data["refusal"] = [refusal({"content": c, "tool_calls": t}, None)
                       for c, t in zip(contents, _col(rows, "tool_calls"), strict=True)]
    data["vetoed"] = [float(bool(v)) if v is not None and not _isnan(v) else math.nan for v in _col(rows, "vetoed")]
    data["rating"] = [_rating(r, s, rs) for r, s, rs in zip(_col(rows, "rating"), _col(rows, "rating_scale"),
                                                           _col(rows, "ratings"), strict=True)]
    data["outcome"] = [_outcome(o) for o in _col(rows, "outcome")]
    data["reward"] = [o if math.isfinite(o) else r for o, r in zip(data["outcome"], data["rating"], strict=True)]
    if judge is not None:
        data["judge_score"] = [_judge(judge, m, c, t, tools) for m, c, t, tools in
                               zip(_col(rows, "messages"), contents, _col(rows, "tool_calls"), _col(rows, "tools"),
                                   strict=True)]
    return pd.DataFrame(data, index=pd.RangeIndex(len(rows)))


def _judge(judge: Any, messages: Any, content: Any, tool_calls: Any, tools: Any) -> float:
    value = judge.score(list(messages or []), {"content": content, "tool_calls": list(tool_calls or [])},
                        tools=tools)
    return float(value) if math.isfinite(float(value)) else math.nan


def _col(rows: pd.DataFrame, name: str) -> list[Any]:
    return rows[name].tolist() if name in rows.columns else [None] * len(rows)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _last_user(messages: Any, prompt: Any) -> str:
    users = [m for m in _conversation(messages, prompt) if m.get("role") == "user"]
    return _text(users[-1]) if users else ""


# --- Reading the log --------------------------------------------------------------------------------

def load_interactions(store: ExperienceStore, *, policy_version: str | None = None, model: str | None = None,
                      since_seq: int = 0, limit: int | None = None) -> tuple[pd.DataFrame, int]:
    """Production choices of ``policy_version`` (all versions when ``None``) after ``since_seq``, in log order.

    Shadow records are left out. Returns ``(rows, last_seq)``, ``last_seq`` being the highest sequence number
    read (of any version), to pass as ``since_seq`` next time. With ``limit``, stops after the interaction that
    reaches ``limit`` choices.
    """
    until = None
    if limit is not None:
        until = _seq_reaching(store, policy_version, model, since_seq, limit)
    frame = interactions_frame(store, model=model, since_seq=since_seq, until_seq=until)
    last_seq = int(frame["seq"].max()) if len(frame) else since_seq
    keep = frame["role"] != SHADOW_ROLE
    if policy_version is not None:
        keep &= frame["policy_version"] == policy_version
    return frame[keep].reset_index(drop=True), last_seq


def _seq_reaching(store: ExperienceStore, policy_version: str | None, model: str | None, since_seq: int,
                  limit: int) -> int | None:
    count = 0
    for seq, record in store.iter_interactions(model=model, since_seq=since_seq):
        if record.role != SHADOW_ROLE and (policy_version is None or record.policy_version == policy_version):
            count += record.n
            if count >= limit:
                return seq
    return None


def attach_interaction_feedback(rows: pd.DataFrame, store: ExperienceStore, join: JoinConfig | None = None,
                                model: str | None = None, now: float | None = None) -> pd.DataFrame:
    """``rows`` with the feedback known now joined (``rating``, ``rating_scale``, ``ratings``, ``outcome``, ...)."""
    if rows.empty:
        return rows.copy()
    since = int(rows["seq"].min()) - 1
    joined = join_interactions(store, join, model=model, now=now, since_seq=since).decisions
    feedback = [c for c in joined.columns if c not in rows.columns or c == "decision_id"]
    return rows.merge(joined[feedback], on="decision_id", how="left", sort=False)


def require_interactions(store: ExperienceStore, policy_version: str | None, served_model: str | None) -> None:
    """Raise ``MonitorError`` naming the versions present when the store has no production interaction of the policy."""
    rows, _ = load_interactions(store, policy_version=policy_version, model=served_model, limit=1)
    if len(rows):
        return
    versions = sorted({r.policy_version for _, r in store.iter_interactions(model=served_model)})
    raise MonitorError(f"no interactions of {policy_version or 'any policy'} in {store.url}"
                       + (f" (served as {served_model})" if served_model else "")
                       + (f"; versions present: {', '.join(versions[:10])}" if versions else "; none logged"))


def production_interactions(store: ExperienceStore, policy_version: str | None, n: int, *, offset: int = 0,
                            model: str | None = None, join: JoinConfig | None = None, now: float | None = None,
                            judge: Any = None) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The ``n`` production choices after the first ``offset`` as reference (feedback joined, featurized).

    Returns ``(reference, rest, last_seq)`` like :func:`~rlops_plugin.monitoring.reference.production_reference`:
    ``rest`` holds raw rows read past the reference (they start the first monitored window).
    """
    rows, last_seq = load_interactions(store, policy_version=policy_version, model=model, limit=offset + n)
    if len(rows) < offset + n:
        raise MonitorError(f"the production reference needs {offset + n} interactions of "
                           f"{policy_version or 'the model'}; the store has {len(rows)}")
    chosen = attach_interaction_feedback(rows.iloc[offset:offset + n].reset_index(drop=True), store, join, model, now)
    return agent_frame(chosen, judge=judge), rows.iloc[offset + n:].reset_index(drop=True), last_seq


def task_reference(bundle: Any, answers: int, *, seed: int = 0, judge: Any = None) -> pd.DataFrame:
    """``answers`` sampled answers of the bundle's agent to its own task suite, as a monitoring frame.

    Each task is answered ``ceil(answers / tasks)`` times with the deployed sampling (the agent's
    ``generation`` temperature and top_p), so the reference varies as served answers do; rows are shuffled
    (seeded) so that every calibration window mixes the tasks, as traffic does. A suite has no ratings or
    outcomes: those signals stay ``insufficient`` against this reference (use a production one for them).
    """
    from rlops_plugin.kinds.agent.tasks import with_system_prompt
    from rlops_plugin.local.threads import threads_for, torch_threads

    policy = bundle.policy
    tasks = list(getattr(bundle.env_spec, "tasks", ()) or ())
    if not tasks:
        raise MonitorError(f"task reference: {bundle.env_spec.name!r} has no task suite")
    if answers < 1:
        raise MonitorError(f"task reference: answers must be positive, got {answers}")
    generation = policy.agent.get("generation") or {}
    temperature, top_p = float(generation.get("temperature", 1.0)), float(generation.get("top_p", 1.0))
    max_new = int(generation.get("max_new_tokens", 64))
    per_task = -(-answers // len(tasks))
    records: list[dict[str, Any]] = []
    with torch_threads(threads_for(policy.load()[0])):
        for i, task in enumerate(tasks):
            messages = with_system_prompt(policy, task["messages"])
            tools = list(task.get("tools") or policy.tools)
            prompt = policy.render(messages, tools)
            for k, generated in enumerate(policy.generate(prompt, n=per_task, temperature=temperature, top_p=top_p,
                                                          max_new_tokens=max_new, seed=seed + i)):
                content, calls = policy.parse_tool_calls(policy.decode(generated.token_ids))
                records.append({"decision_id": f"task-{task.get('id', i)}-{k}", "interaction_id": f"task-{i}-{k}",
                                "choice": 0, "session_id": None, "policy_version": None, "role": "reference",
                                "model": None, "messages": messages, "prompt": None, "tools": tools,
                                "content": content, "tool_calls": calls, "vetoed": False})
    order = np.random.default_rng(seed).permutation(len(records))[:answers]
    rows = pd.DataFrame([records[j] for j in order])
    rows["seq"], rows["ts"] = np.arange(len(rows)), np.zeros(len(rows))
    return agent_frame(rows, judge=judge)


@dataclass
class InteractionFrames:
    """The agent session's source of windows: production choices of one version, featurized with one vocabulary."""

    store: ExperienceStore
    policy_version: str | None
    served_model: str | None = None
    vocabulary: Sequence[str] = ()
    judge: Any = None
    join: JoinConfig | None = None
    unit: str = field(default="interactions")

    def read(self, since_seq: int) -> tuple[pd.DataFrame, int]:
        """Raw rows logged after ``since_seq`` and the last sequence number read."""
        return load_interactions(self.store, policy_version=self.policy_version, model=self.served_model,
                                 since_seq=since_seq)

    def complete(self, rows: pd.DataFrame, now: float | None = None) -> pd.DataFrame:
        """Rows that fill windows, with the feedback known ``now`` joined, as monitoring frame rows."""
        joined = attach_interaction_feedback(rows, self.store, self.join, self.served_model, now)
        return agent_frame(joined, self.vocabulary, judge=self.judge)


__all__ = ["AGENT_ID_COLUMNS", "NO_TOOL", "OOV_COLUMN", "SHADOW_ROLE", "TOPIC_PREFIX", "InteractionFrames",
           "agent_frame", "attach_interaction_feedback", "describe_action", "keyword_vocabulary", "load_interactions",
           "production_interactions", "require_interactions", "task_reference", "vocabulary_of", "words"]
