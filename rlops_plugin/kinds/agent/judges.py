"""Judges of agent answers: which of two answers is better, for labelling preference data and checking graders.

A judge is a versioned spec (``JudgeSpec``, JSON, its content hash is the judge's version) and a runtime
(``make_judge(spec)``) with ``compare(messages, a, b, tools=None) -> Comparison``. Three types:

- ``code``: a code grader ``fn(choice, task, tools=None, **params) -> float in [0, 1]`` by ``module:function``
  and the SHA-256 of its module's source (imported only after the hash checks); the higher score wins.
- ``llm_pairwise``: an OpenAI-compatible chat model (any server with ``POST {base_url}/chat/completions``,
  ours included) asked at temperature 0 which answer is better, answering exactly ``A`` or ``B``. Each pair is
  asked in both orders, because LLM judges favour a position: two consistent answers decide, inconsistent ones
  are a tie marked ``order_bias``. A timeout, an HTTP error or an answer that is not ``A``/``B`` marks that one
  comparison ``failed`` with the reason; it never raises, so one bad call cannot stop a labelling run, and
  :func:`label_pairs` refuses the whole batch when too many failed.
- ``reward_model``: a judge trained elsewhere, named by ``model_uri``; its scores come from a ``scorer``
  callable given to :func:`make_judge` (none is loaded from the URI yet).

A judge must earn the right to label training data: :func:`judge_agreement` measures how often it agrees with
people on held-out human-labelled pairs (with a Wilson confidence interval) and :func:`require_agreement`
refuses a judge below the required rate, naming the numbers.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlops_plugin.bundle.hashing import check_finite_json, sha256_json
from rlops_plugin.bundle.references import load_verified, module_source_sha256, reference_of, split_reference
from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.errors import ConfigError, PluginError, RLOpsError

FORMAT_VERSION = 1
JUDGE_TYPES = ("code", "llm_pairwise", "reward_model")
WINNERS = ("a", "b", "tie")
DEFAULT_PROMPT = (
    "Which response answers the conversation better?\n"
    "Conversation:\n{conversation}\n"
    "Response A:\n{a}\n"
    "Response B:\n{b}\n"
    "Answer with exactly one letter: A or B."
)
"""The pairwise prompt: ``{conversation}``, ``{a}`` and ``{b}`` are required; ``{tools}`` (the offered tools' names
and descriptions) may be used too; other literal braces are written ``{{``/``}}``."""
DEFAULT_TIMEOUT_S = 30.0
"""Seconds per judge request: a local model answers two tokens in well under a second; a hosted one in a few."""
DEFAULT_MAX_TOKENS = 4
"""Tokens the judge may generate: the answer is one letter, a little room for a closing token or newline."""
PROMPT_FIELDS = frozenset({"conversation", "a", "b"})
OPTIONAL_PROMPT_FIELDS = frozenset({"tools"})

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_ANSWER = re.compile(r"^\W*([AB])\W*$")
"""An answer is the letter alone, optionally wrapped in punctuation (``A``, ``"B"``, ``A.``, ``**B**``)."""
_TYPE_KEYS = {
    "code": ("ref", "sha256", "params"),
    "llm_pairwise": ("base_url", "model", "prompt", "timeout_s", "max_tokens", "api_key_env"),
    "reward_model": ("model_uri",),
}
_REQUIRED = {"code": ("ref",), "llm_pairwise": ("base_url", "model"), "reward_model": ("model_uri",)}
_FIELD_OF = {"sha256": "source_sha256"}
"""JSON key -> dataclass field where they differ (``sha256`` is the content-hash method's name)."""


class JudgeError(RLOpsError):
    """Too many of a judge's comparisons failed for its labels to be used."""


class JudgeAgreementError(RLOpsError):
    """A judge agrees with people too rarely (or on too few pairs) to label training data."""


# ----- the spec -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgeSpec:
    """A judge by name and type, with its type's settings; JSON in and out, its content hash is its version."""

    name: str
    """Name of the judge (letters, digits, '.', '_' or '-'), shown with every label it gives."""
    type: str = "code"
    """``code``, ``llm_pairwise`` or ``reward_model``."""
    ref: str | None = None
    """code: the grader ``module:function``."""
    source_sha256: str | None = None
    """code: SHA-256 of the grader's module source (JSON key ``sha256``; filled from the installed source)."""
    params: Mapping[str, Any] | None = None
    """code: keyword parameters passed to the grader."""
    base_url: str | None = None
    """llm_pairwise: the OpenAI-compatible API root, e.g. ``http://127.0.0.1:8080/openai/v1``."""
    model: str | None = None
    """llm_pairwise: the model name sent in each request."""
    prompt: str | None = None
    """llm_pairwise: the template (default :data:`DEFAULT_PROMPT`)."""
    timeout_s: float | None = None
    """llm_pairwise: seconds per request before the comparison fails (default 30)."""
    max_tokens: int | None = None
    """llm_pairwise: tokens the judge may generate (default 4)."""
    api_key_env: str | None = None
    """llm_pairwise: name of the environment variable holding the API key (never the key itself)."""
    model_uri: str | None = None
    """reward_model: where the trained judge is (``models:/...``), carried in the spec for lineage."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"judge.name: letters, digits, '.', '_' or '-' (got {self.name!r})")
        if self.type not in JUDGE_TYPES:
            raise ConfigError(f"judge {self.name}.type: one of {list(JUDGE_TYPES)}, got {self.type!r}")
        where = f"judge {self.name}"
        own = _TYPE_KEYS[self.type]
        for key in (k for keys in _TYPE_KEYS.values() for k in keys):
            if key not in own and getattr(self, _FIELD_OF.get(key, key)) is not None:
                raise ConfigError(f"{where}.{key}: not a setting of a {self.type} judge; its settings: {list(own)}")
        for key in _REQUIRED[self.type]:
            if getattr(self, key) is None:
                raise ConfigError(f"{where}.{key}: required for a {self.type} judge")
        getattr(self, f"_check_{self.type}")(where)
        check_finite_json(self.to_dict(), where)

    def _check_code(self, where: str) -> None:
        module, _ = split_reference(_string(self.ref, f"{where}.ref"))
        digest = self.source_sha256 or module_source_sha256(module)
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(f"{where}.sha256: a sha256 hex digest")
        object.__setattr__(self, "source_sha256", digest)
        params = {} if self.params is None else self.params
        if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
            raise ConfigError(f"{where}.params: a JSON object of keyword parameters")
        object.__setattr__(self, "params", dict(params))

    def _check_llm_pairwise(self, where: str) -> None:
        if not _URL.match(_string(self.base_url, f"{where}.base_url")):
            raise ConfigError(f"{where}.base_url: an http(s) URL such as http://127.0.0.1:8080/openai/v1, "
                              f"got {self.base_url!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        _string(self.model, f"{where}.model")
        prompt = DEFAULT_PROMPT if self.prompt is None else _string(self.prompt, f"{where}.prompt")
        fields = _prompt_fields(prompt, f"{where}.prompt")
        if fields - PROMPT_FIELDS - OPTIONAL_PROMPT_FIELDS or PROMPT_FIELDS - fields:
            raise ConfigError(f"{where}.prompt: uses the placeholders {sorted(fields)}; it needs "
                              f"{sorted(PROMPT_FIELDS)} and may use {sorted(OPTIONAL_PROMPT_FIELDS)} "
                              "(write literal braces as {{ and }})")
        object.__setattr__(self, "prompt", prompt)
        timeout = DEFAULT_TIMEOUT_S if self.timeout_s is None else self.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
            raise ConfigError(f"{where}.timeout_s: seconds in (0, 600], got {timeout!r}")
        object.__setattr__(self, "timeout_s", float(timeout))
        tokens = DEFAULT_MAX_TOKENS if self.max_tokens is None else self.max_tokens
        if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= 64:
            raise ConfigError(f"{where}.max_tokens: an integer in 1..64 (the answer is one letter), got {tokens!r}")
        object.__setattr__(self, "max_tokens", tokens)
        if self.api_key_env is not None and not _ENV_NAME.match(_string(self.api_key_env, f"{where}.api_key_env")):
            raise ConfigError(f"{where}.api_key_env: the name of an environment variable (never the key itself), "
                              f"got {self.api_key_env[:4]!r}...")

    def _check_reward_model(self, where: str) -> None:
        _string(self.model_uri, f"{where}.model_uri")

    @classmethod
    def from_function(cls, name: str, function: Callable[..., float], params: Mapping[str, Any] | None = None
                      ) -> JudgeSpec:
        """A code judge over a module-level grader function (its reference and source hash taken now)."""
        return cls(name=name, type="code", ref=reference_of(function), params=dict(params or {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: the name, the type and that type's settings only."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        for key in _TYPE_KEYS[self.type]:
            value = getattr(self, _FIELD_OF.get(key, key))
            out[key] = dict(value) if isinstance(value, Mapping) else value
        out["format_version"] = FORMAT_VERSION
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeSpec:
        """Rebuild from JSON; unknown keys, and keys of another judge type, are refused naming them."""
        check_keys(data, ("name", "type", "format_version", *sorted({k for v in _TYPE_KEYS.values() for k in v})),
                   "judge", required=("name",))
        data = dict(data)
        if data.pop("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ConfigError(f"judge: unsupported format_version (this rlops reads {FORMAT_VERSION})")
        kind = data.get("type", "code")
        if kind not in JUDGE_TYPES:
            raise ConfigError(f"judge {data['name']}.type: one of {list(JUDGE_TYPES)}, got {kind!r}")
        check_keys(data, ("name", "type", *_TYPE_KEYS[kind]), f"judge {data['name']} ({kind})")
        return cls(**{_FIELD_OF.get(k, k): v for k, v in data.items()})

    def sha256(self) -> str:
        """Content hash of the spec: the judge's version (a code judge's source hash included)."""
        return sha256_json(self.to_dict())


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: a non-empty string, got {value!r}")
    return value


def _prompt_fields(prompt: str, where: str) -> set[str]:
    """Placeholder names of a ``str.format`` template (attribute, index and format specs refused)."""
    try:
        parsed = list(string.Formatter().parse(prompt))
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid template ({exc}); write literal braces as {{{{ and }}}}") from exc
    fields = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ConfigError(f"{where}: placeholder {{{name}}} must be a plain name such as {{conversation}}")
        fields.add(name)
    return fields


# ----- rendering a transcript and answers for a judge's prompt ---------------------------------------------
def _call(call: Mapping[str, Any]) -> tuple[str, Any]:
    """``(name, arguments)`` of a logged call ``{"name", "arguments"}`` or an OpenAI one ``{"function": ...}``."""
    if "function" in call:
        fn = call["function"]
        arguments = fn.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass
        return str(fn.get("name")), arguments
    return str(call.get("name")), call.get("arguments", {})


def render_choice(choice: Mapping[str, Any]) -> str:
    """An answer as the judge reads it: its text, then one ``name({json arguments})`` line per tool call."""
    lines = [str(choice["content"]).strip()] if choice.get("content") else []
    for call in choice.get("tool_calls") or []:
        name, arguments = _call(call)
        lines.append(f"{name}({json.dumps(arguments, sort_keys=True, ensure_ascii=False)})")
    return "\n".join(lines) or "(empty)"


def render_conversation(messages: Sequence[Mapping[str, Any]]) -> str:
    """A transcript as ``role: text`` lines (an assistant turn's tool calls rendered as by :func:`render_choice`)."""
    lines = []
    for message in messages:
        role = message.get("role", "user")
        if role == "assistant" and message.get("tool_calls"):
            lines.append(f"{role}: {render_choice(message)}")
        else:
            lines.append(f"{role}: {message.get('content') or ''}")
    return "\n".join(lines)


def render_tools(tools: Sequence[Mapping[str, Any]] | None) -> str:
    """The offered tools as ``name: description`` lines (``(none)`` without tools)."""
    rows = []
    for tool in tools or []:
        fn = tool.get("function", tool)
        rows.append(f"{fn.get('name')}: {fn.get('description', '')}".rstrip(": "))
    return "\n".join(rows) or "(none)"


def render_prompt(template: str, messages: Sequence[Mapping[str, Any]], a: Mapping[str, Any], b: Mapping[str, Any],
                  tools: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The pairwise prompt for one order of the two answers (what a judge model is asked, and trained on)."""
    return template.format(conversation=render_conversation(messages), a=render_choice(a), b=render_choice(b),
                           tools=render_tools(tools))


# ----- the runtime ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """One judged pair: the ``winner`` (``a``, ``b``, ``tie``; ``None`` when it ``failed``, with the reason)."""

    winner: str | None
    failed: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.winner is None) == (self.failed is None) or (self.winner is not None and self.winner not in WINNERS):
            raise ConfigError(f"comparison: a winner in {list(WINNERS)} or a failure reason, not both "
                              f"(got winner={self.winner!r}, failed={self.failed!r})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"winner": self.winner, "failed": self.failed, "details": dict(self.details)}


Messages = Sequence[Mapping[str, Any]]
Choice = Mapping[str, Any]
Tools = Sequence[Mapping[str, Any]] | None


class Judge:
    """A judge built from its spec: compares two answers to one conversation (and scores one, when it can)."""

    def __init__(self, spec: JudgeSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.version = spec.sha256()

    def compare(self, messages: Messages, a: Choice, b: Choice, tools: Tools = None,
                task: Mapping[str, Any] | None = None) -> Comparison:
        """Which of ``a`` and ``b`` answers ``messages`` better (``task``: its expected outcome, for code judges)."""
        score_a = self.score(messages, a, task=task, tools=tools)
        score_b = self.score(messages, b, task=task, tools=tools)
        winner = "a" if score_a > score_b else "b" if score_b > score_a else "tie"
        return Comparison(winner, details={"scores": {"a": score_a, "b": score_b}})

    def score(self, messages: Messages, response: Choice, task: Mapping[str, Any] | None = None,
              tools: Tools = None) -> float:
        """The judge's score of one answer in [0, 1] (pairwise judges have none)."""
        raise ConfigError(f"judge {self.name!r} ({self.spec.type}) compares pairs and gives no score of one answer; "
                          "use compare(messages, a, b)")

    def close(self) -> None:
        """Release connections (a no-op for judges without any)."""

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CodeJudge(Judge):
    """A code grader as a judge: the higher score wins, equal scores tie."""

    def __init__(self, spec: JudgeSpec) -> None:
        super().__init__(spec)
        self.function = load_verified(spec.ref, spec.source_sha256)

    def score(self, messages: Messages, response: Choice, task: Mapping[str, Any] | None = None,
              tools: Tools = None) -> float:
        """The grader's score of ``response`` (``messages`` are not passed: graders see the answer and the task).

        An OpenAI assistant message is read as a logged choice (``{"name", "arguments"}`` calls), the shape
        graders take."""
        choice = {"content": response.get("content"),
                  "tool_calls": [dict(zip(("name", "arguments"), _call(c), strict=True))
                                 for c in response.get("tool_calls") or []]}
        value = float(self.function(choice, task, tools=tools, **(self.spec.params or {})))
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"judge {self.name!r}: grader {self.spec.ref} returned {value}; graders score in [0, 1]")
        return value


class RewardModelJudge(Judge):
    """A judge trained elsewhere (``model_uri``), scoring through a ``scorer(messages, response, tools)`` callable."""

    def __init__(self, spec: JudgeSpec, scorer: Callable[..., float] | None = None) -> None:
        super().__init__(spec)
        self.scorer = scorer

    def score(self, messages: Messages, response: Choice, task: Mapping[str, Any] | None = None,
              tools: Tools = None) -> float:
        """The reward model's score of ``response`` (any finite number; higher is better)."""
        if self.scorer is None:
            raise ConfigError(f"judge {self.name!r} is a reward model ({self.spec.model_uri}) and rlops does not load "
                              "reward models from their URI yet: pass make_judge(spec, scorer=fn) with "
                              "fn(messages, response, tools) -> float")
        value = float(self.scorer(messages, response, tools))
        if not math.isfinite(value):
            raise ConfigError(f"judge {self.name!r}: the scorer returned {value}; scores must be finite")
        return value


class PairwiseLLMJudge(Judge):
    """An OpenAI-compatible chat model asked which answer is better, in both orders (see the module docstring)."""

    def __init__(self, spec: JudgeSpec, transport: Any = None) -> None:
        super().__init__(spec)
        headers = {}
        if spec.api_key_env is not None:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise ConfigError(f"judge {self.name!r}: environment variable {spec.api_key_env} (api_key_env) "
                                  "is not set; export the API key there")
            headers["Authorization"] = f"Bearer {key}"
        self._headers = headers
        self._transport = transport
        self._client: Any = None

    def _http(self) -> Any:
        import httpx

        if self._client is None:
            self._client = httpx.Client(headers=self._headers, transport=self._transport,
                                        timeout=self.spec.timeout_s)
        return self._client

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def compare(self, messages: Messages, a: Choice, b: Choice, tools: Tools = None,
                task: Mapping[str, Any] | None = None) -> Comparison:
        """Ask (a, b) then (b, a); agreeing answers decide, disagreeing ones tie with ``order_bias``."""
        answers = []
        for order, (first, second) in (("ab", (a, b)), ("ba", (b, a))):
            letter, error = self.ask(render_prompt(self.spec.prompt, messages, first, second, tools))
            if error is not None:
                return Comparison(None, failed=f"order {order}: {error}", details={"answers": answers})
            answers.append(letter)
        first_pick = "a" if answers[0] == "A" else "b"
        second_pick = "b" if answers[1] == "A" else "a"
        bias = first_pick != second_pick
        return Comparison("tie" if bias else first_pick, details={"answers": answers, "order_bias": bias})

    def ask(self, prompt: str) -> tuple[str | None, str | None]:
        """``(letter, None)`` for an ``A``/``B`` answer to ``prompt``, else ``(None, why it failed)``."""
        import httpx

        body = {"model": self.spec.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": self.spec.max_tokens}
        url = f"{self.spec.base_url}/chat/completions"
        try:
            response = self._http().post(url, json=body)
        except httpx.TimeoutException:
            return None, f"timeout after {self.spec.timeout_s:g}s ({url})"
        except httpx.HTTPError as exc:
            return None, f"request failed: {type(exc).__name__}: {exc} ({url})"
        if response.status_code >= 400:
            return None, f"HTTP {response.status_code}: {response.text[:200]}"
        try:
            message = response.json()["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None, f"malformed response (no choices[0].message): {response.text[:200]}"
        content = message.get("content") if isinstance(message, Mapping) else None
        match = _ANSWER.match(content.strip()) if isinstance(content, str) else None
        if match is None:
            calls = message.get("tool_calls") if isinstance(message, Mapping) else None
            said = f"tool calls {[_call(c)[0] for c in calls]}" if calls else repr(content)[:120]
            return None, f"malformed answer {said}; expected exactly 'A' or 'B'"
        return match.group(1), None


def make_judge(spec: JudgeSpec | str, *, scorer: Callable[..., float] | None = None, transport: Any = None) -> Judge:
    """The runtime of a judge spec, or of a judge registered by name through ``rlops_register_judges``.

    ``scorer(messages, response, tools) -> float`` scores for a ``reward_model`` judge; ``transport`` (an
    ``httpx`` transport) is passed to the ``llm_pairwise`` judge's client.
    """
    if isinstance(spec, str):
        spec = registered_judge(spec)
    if not isinstance(spec, JudgeSpec):
        raise ConfigError(f"make_judge: a JudgeSpec or a registered judge's name, got {type(spec).__name__}")
    if spec.type == "code":
        return CodeJudge(spec)
    if spec.type == "llm_pairwise":
        return PairwiseLLMJudge(spec, transport=transport)
    return RewardModelJudge(spec, scorer=scorer)


def registered_judge(name: str) -> JudgeSpec:
    """The ``JudgeSpec`` a plugin registered as ``name``."""
    from rlops_plugin import plugins

    entry = plugins.judges().get(name)
    if not isinstance(entry.value, JudgeSpec):
        raise PluginError(f"judge {name!r} registered by {entry.plugin!r} is a {type(entry.value).__name__}, "
                          "not a JudgeSpec")
    return entry.value


# ----- labelling pairs -----------------------------------------------------------------------------------
def _pair(item: Sequence[Any], where: str) -> tuple[Messages, Choice, Choice, Tools, Mapping[str, Any] | None]:
    """``(messages, a, b, tools[, task])`` unpacked (``task`` optional: code judges read its expected outcome)."""
    if not isinstance(item, (tuple, list)) or len(item) not in (4, 5):
        raise ConfigError(f"{where}: a (messages, a, b, tools) or (messages, a, b, tools, task) tuple")
    messages, a, b, tools, *task = item
    return messages, a, b, tools, (task[0] if task else None)


@dataclass(frozen=True)
class JudgedPairs:
    """A judge's verdicts on pairs of answers, aligned with the items given, and their counts."""

    judge: str
    judge_version: str
    items: tuple[tuple[Any, ...], ...]
    comparisons: tuple[Comparison, ...]

    @property
    def n(self) -> int:
        """Pairs judged."""
        return len(self.comparisons)

    @property
    def failed(self) -> int:
        """Comparisons that failed (timeouts, HTTP errors, malformed answers)."""
        return sum(c.failed is not None for c in self.comparisons)

    @property
    def ties(self) -> int:
        """Comparisons without a winner (equal scores, or an LLM judge that changed its mind with the order)."""
        return sum(c.winner == "tie" for c in self.comparisons)

    @property
    def decided(self) -> int:
        """Comparisons with a winner."""
        return self.n - self.failed - self.ties

    @property
    def failure_rate(self) -> float:
        """``failed / n`` (0 for no pairs)."""
        return self.failed / self.n if self.n else 0.0

    def preferences(self) -> list[dict[str, Any]]:
        """Decided pairs as ``{"messages", "chosen", "rejected", "tools", "judge", "judge_version"}`` rows."""
        rows = []
        for item, comparison in zip(self.items, self.comparisons, strict=True):
            if comparison.winner in ("a", "b"):
                messages, a, b, tools, _ = _pair(item, "item")
                chosen, rejected = (a, b) if comparison.winner == "a" else (b, a)
                rows.append({"messages": list(messages), "chosen": dict(chosen), "rejected": dict(rejected),
                             "tools": None if tools is None else list(tools), "judge": self.judge,
                             "judge_version": self.judge_version})
        return rows

    def counts(self) -> dict[str, int]:
        """``{"n", "decided", "ties", "failed"}``."""
        return {"n": self.n, "decided": self.decided, "ties": self.ties, "failed": self.failed}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary with every comparison."""
        return {"judge": self.judge, "judge_version": self.judge_version, **self.counts(),
                "comparisons": [c.to_dict() for c in self.comparisons]}


def label_pairs(judge: Judge, items: Sequence[Sequence[Any]], max_failure_rate: float = 0.1) -> JudgedPairs:
    """Judge every ``(messages, a, b, tools[, task])`` pair; refuse the batch when too many comparisons failed.

    Raises ``JudgeError`` (with the counts, and the result as ``.result``) when ``failed / n`` exceeds
    ``max_failure_rate``: labels from a judge that mostly could not answer describe the judge's outages, not
    the answers.
    """
    if isinstance(max_failure_rate, bool) or not 0.0 <= max_failure_rate <= 1.0:
        raise ConfigError(f"max_failure_rate: a fraction in [0, 1], got {max_failure_rate!r}")
    pairs = [tuple(item) for item in items]
    comparisons = []
    for i, item in enumerate(pairs):
        messages, a, b, tools, task = _pair(item, f"items[{i}]")
        comparisons.append(judge.compare(messages, a, b, tools=tools, task=task))
    result = JudgedPairs(judge.name, judge.version, tuple(pairs), tuple(comparisons))
    if result.failure_rate > max_failure_rate:
        reasons = sorted({c.failed for c in comparisons if c.failed})[:3]
        error = JudgeError(f"judge {judge.name!r} failed on {result.failed} of {result.n} pairs "
                           f"({result.failure_rate:.0%}), above the allowed {max_failure_rate:.0%} "
                           f"({result.decided} decided, {result.ties} ties); failures such as: {'; '.join(reasons)}")
        error.result = result  # type: ignore[attr-defined]
        raise error
    return result


# ----- agreement with people -----------------------------------------------------------------------------
def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion: honest near 0 and 1 and for small ``trials`` (``(0, 1)`` for none)."""
    if trials == 0:
        return 0.0, 1.0
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Agreement:
    """How often a judge picked the answer people chose, on held-out human-labelled pairs."""

    judge: str
    judge_version: str
    n: int
    """Human-labelled pairs judged."""
    agreed: int
    """Decided pairs where the judge chose what people chose."""
    ties: int
    failed: int
    confidence: float = 0.95
    ci_low: float = 0.0
    ci_high: float = 1.0
    comparisons: tuple[Comparison, ...] = ()

    @property
    def decided(self) -> int:
        """Pairs the judge decided (neither tie nor failure)."""
        return self.n - self.ties - self.failed

    @property
    def rate(self) -> float:
        """``agreed / decided`` (0 when nothing was decided)."""
        return self.agreed / self.decided if self.decided else 0.0

    def describe(self) -> str:
        """``9/20 decided pairs (45%, 95% CI 26%-66%)``."""
        return (f"{self.agreed}/{self.decided} decided pairs ({self.rate:.0%}, {self.confidence:.0%} CI "
                f"{self.ci_low:.0%}-{self.ci_high:.0%})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (what an audit record or an MLflow run logs)."""
        return {"judge": self.judge, "judge_version": self.judge_version, "n": self.n, "decided": self.decided,
                "agreed": self.agreed, "rate": self.rate, "ties": self.ties, "failed": self.failed,
                "confidence": self.confidence, "ci_low": self.ci_low, "ci_high": self.ci_high}


def judge_agreement(judge: Judge, human_pairs: Sequence[Sequence[Any]], confidence: float = 0.95) -> Agreement:
    """Judge held-out ``(messages, chosen, rejected, tools[, task])`` pairs people labelled; count agreement.

    The human's choice is shown as ``a`` in every other pair and as ``b`` in the rest, so a judge that always
    picks one side cannot agree more than about half the time.
    """
    if not 0.5 <= confidence < 1.0:
        raise ConfigError(f"confidence: in [0.5, 1), got {confidence!r}")
    agreed = ties = failed = 0
    comparisons = []
    for i, item in enumerate(human_pairs):
        messages, chosen, rejected, tools, task = _pair(tuple(item), f"human_pairs[{i}]")
        human = "a" if i % 2 == 0 else "b"
        a, b = (chosen, rejected) if human == "a" else (rejected, chosen)
        comparison = judge.compare(messages, a, b, tools=tools, task=task)
        comparisons.append(comparison)
        if comparison.failed is not None:
            failed += 1
        elif comparison.winner == "tie":
            ties += 1
        elif comparison.winner == human:
            agreed += 1
    n = len(comparisons)
    low, high = wilson_interval(agreed, n - ties - failed, confidence)
    return Agreement(judge.name, judge.version, n, agreed, ties, failed, confidence, low, high, tuple(comparisons))


def require_agreement(agreement: Agreement, min_rate: float, min_pairs: int) -> Agreement:
    """Return ``agreement`` if the judge decided at least ``min_pairs`` pairs and agreed on ``min_rate`` of them.

    Raises ``JudgeAgreementError`` naming the numbers otherwise: such a judge cannot label training data.
    """
    if not 0.0 <= min_rate <= 1.0 or min_pairs < 1:
        raise ConfigError(f"require_agreement: min_rate in [0, 1] and min_pairs >= 1 (got {min_rate}, {min_pairs})")
    who = f"judge {agreement.judge!r}"
    if agreement.decided < min_pairs:
        raise JudgeAgreementError(
            f"{who} decided only {agreement.decided} of {agreement.n} human-labelled pairs ({agreement.ties} ties, "
            f"{agreement.failed} failed), fewer than the required {min_pairs}; it cannot label training data")
    if agreement.rate < min_rate:
        raise JudgeAgreementError(f"{who} agreed with humans on {agreement.describe()}, below the required "
                                  f"{min_rate:.0%}; it cannot label training data")
    return agreement

