"""MLflow traces of agent interactions, for people to read and review; their assessments flow back as feedback.

The experience store is the durable log. :class:`TraceMirror` copies interactions into MLflow traces on a
best-effort basis: ``submit`` never blocks (a bounded queue; when it is full the interaction is dropped and
counted), one daemon thread writes each interaction as one trace, and a failed write is counted and logged,
never raised. A trace carries the record's own timestamps and one span per thing a reviewer wants to see:

* a ``CHAT_MODEL`` root span for the interaction (inputs: ``messages`` and ``tools``; outputs: the first
  choice's message, in the OpenAI completion object the UI renders as a chat turn); the trace is tagged
  ``rlops.interaction_id``, ``rlops.session_id``, ``rlops.policy_version`` and ``rlops.model`` and carries
  MLflow's session (``mlflow.trace.session``) and user (``mlflow.trace.user``) metadata, so the UI groups a
  conversation;
* a ``TOOL`` span for each tool result the client sent back in the transcript;
* an ``LLM`` span per choice (log-probs, finish reason, tokens, guard vetoes), with a ``TOOL`` span for each
  tool call it proposed.

Why the mirror writes complete traces itself instead of through ``mlflow.start_span_no_context``: MLflow's
tracer is process-wide. It exports to the tracking URI that was global when it was set up, obeys the global
sampling ratio and ``mlflow.tracing.disable()``, and hands spans to its own async queue, which discards work
when full (``MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE``, a warning at most every 30 s) and logs failures
without telling the caller. Through it the mirror's bound and counts would mean nothing. Writing the trace
with a :class:`~mlflow.tracing.client.TracingClient` of its own tracking URI (``log_spans`` then
``start_trace``; the spans of a backlog share one ``log_spans`` request) makes ``mirrored`` mean stored
and ``failed`` mean lost. Trace and span ids are derived from the interaction id, so writing an
interaction twice updates one trace, and ``trace_id_of(interaction_id)`` names its trace without a search.

:func:`sync_assessments` reads the assessments reviewers added to mirrored traces (in the MLflow UI, or with
``mlflow.log_feedback`` / ``mlflow.log_expectation``) and stores them as feedback events, idempotently by
assessment id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from rlops_plugin.errors import ConfigError, InvalidObservationError
from rlops_plugin.experience.feedback import THUMBS, parse_feedback
from rlops_plugin.experience.records import FeedbackEvent, InteractionRecord

_logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "rlops-agent-traces"
"""Experiment of a mirror given no name and no model (an agent server names its own ``rlops-agent-<model>``)."""
DEFAULT_MAX_QUEUE = 1000
"""Interactions waiting to be mirrored: about a minute of backlog at the ~16 traces/s a SQLite-backed
MLflow server absorbs; beyond it the mirror drops, because the experience store, not MLflow, is the log."""
DEFAULT_CLOSE_TIMEOUT_S = 30.0
FAILURE_LOG_INTERVAL_S = 30.0
MAX_BATCH = 32
"""Most interactions whose spans share one ``log_spans`` request (what queued up while the last batch was written)."""
"""A failing MLflow server logs one warning per interval (with the count), not one per interaction."""
TAG_INTERACTION, TAG_SESSION, TAG_POLICY, TAG_MODEL = ("rlops.interaction_id", "rlops.session_id",
                                                      "rlops.policy_version", "rlops.model")
ASSESSMENT_KEY_PREFIX = "mlflow-assessment:"
"""Idempotency key of a synced assessment: ``mlflow-assessment:<assessment_id>``."""
PREVIEW_CHARS = 1000
SEARCH_PAGE = 500


def default_experiment(model: str | None = None) -> str:
    """The experiment a model's traces go to by default: ``rlops-agent-<model>``, else ``DEFAULT_EXPERIMENT``."""
    return f"rlops-agent-{model}" if model else DEFAULT_EXPERIMENT


def trace_id_of(interaction_id: str) -> str:
    """The MLflow trace id of an interaction's mirror (derived, so no search is needed to link to it)."""
    return "tr-" + _hex_id(interaction_id, "trace", 32)


class TraceMirror:
    """Mirrors interactions into MLflow traces from one daemon thread: bounded, non-blocking, counted."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ConfigError(f"max_queue: a positive integer, got {max_queue!r}")
        if not isinstance(experiment, str) or not experiment:
            raise ConfigError(f"experiment: a non-empty name, got {experiment!r}")
        if tracking_uri is None:
            import mlflow

            tracking_uri = mlflow.get_tracking_uri()  # resolved now: a later global change does not redirect
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.max_queue = max_queue
        self.last_error: str | None = None
        self._queue: queue.Queue[InteractionRecord] = queue.Queue(max_queue)
        self._lock = threading.Lock()
        self._accepted = self._mirrored = self._dropped = self._failed = 0
        self._failures_unlogged = 0
        self._last_failure_log = float("-inf")
        self._closing = threading.Event()
        self._experiment_id: str | None = None
        self._thread = threading.Thread(target=self._run, name="rlops-trace-mirror", daemon=True)
        self._thread.start()

    def submit(self, record: InteractionRecord) -> bool:
        """Queue an interaction without blocking; ``False`` (and counted as dropped) when full or closed."""
        with self._lock:  # held across put_nowait (which never waits), so nothing is queued once closing began
            if not self._closing.is_set():
                try:
                    self._queue.put_nowait(record)
                except queue.Full:
                    pass
                else:
                    self._accepted += 1
                    return True
            self._dropped += 1
            return False

    def stats(self) -> dict[str, int]:
        """Counts: ``mirrored`` (stored), ``dropped`` (full or closed), ``failed``, ``queued`` (waiting, in flight)."""
        with self._lock:
            return {"mirrored": self._mirrored, "dropped": self._dropped, "failed": self._failed,
                    "queued": self._accepted - self._mirrored - self._failed}

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT_S) -> dict[str, int]:
        """Stop accepting, write what is queued (up to ``timeout`` seconds), stop; returns the final stats."""
        with self._lock:
            self._closing.set()
        self._thread.join(timeout)
        stats = self.stats()
        if stats["queued"]:
            _logger.warning("trace mirror closed with %d interactions not yet mirrored (still being written by a "
                            "daemon thread; the experience store has them all)", stats["queued"])
        return stats

    def __enter__(self) -> TraceMirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- the worker ------------------------------------------------------------------
    def _run(self) -> None:
        """Write queued interactions until closed and drained, up to ``MAX_BATCH`` per round trip."""
        client = None
        while True:
            try:
                batch = [self._queue.get(timeout=0.1)]
            except queue.Empty:
                if self._closing.is_set() and self._queue.empty():
                    return
                continue
            while len(batch) < MAX_BATCH:  # what queued up meanwhile shares one log_spans request
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if client is None:
                    from mlflow.tracing.client import TracingClient

                    client = TracingClient(self.tracking_uri)
                self._write(client, batch)
            except Exception as exc:  # noqa: BLE001 - anything MLflow or the network raises: counted, logged
                for record in batch:
                    self._record_failure(record, exc)

    def _write(self, client: Any, records: list[InteractionRecord]) -> None:
        """Write interactions as traces: all their spans in one request, then each trace's info.

        MLflow's span ingestion groups spans by trace, so one ``log_spans`` carries a whole batch; the
        trace infos (tags, session metadata) follow one request each, the order MLflow's exporter uses.
        """
        from mlflow.entities import TraceData

        experiment_id = self._experiment_id or self._resolve_experiment()
        built = [build_trace(record, experiment_id) for record in records]
        try:
            client.log_spans(experiment_id, [span for _, spans in built for span in spans])
        except NotImplementedError:  # a server without span ingestion (< 3.4): spans go to the trace's artifacts
            for record, (info, spans) in zip(records, built, strict=True):
                self._written(record, lambda info=info, spans=spans: client._upload_trace_data(
                    client.start_trace(info), TraceData(spans=spans)))
            return
        for record, (info, _) in zip(records, built, strict=True):
            self._written(record, lambda info=info: client.start_trace(info))

    def _written(self, record: InteractionRecord, write: Any) -> None:
        """Run one trace's last write; count it mirrored, or failed."""
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - counted and logged, never raised into the server
            self._record_failure(record, exc)
        else:
            with self._lock:
                self._mirrored += 1

    def _resolve_experiment(self) -> str:
        """Id of the mirror's experiment, created when missing (retried with the next interaction on failure)."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            try:
                self._experiment_id = client.create_experiment(self.experiment)
                return self._experiment_id
            except MlflowException:  # created meanwhile by another process
                experiment = client.get_experiment_by_name(self.experiment)
                if experiment is None:
                    raise
        self._experiment_id = str(experiment.experiment_id)
        return self._experiment_id

    def _record_failure(self, record: InteractionRecord, exc: Exception) -> None:
        """Count a lost interaction; warn at most once per ``FAILURE_LOG_INTERVAL_S``."""
        with self._lock:
            self._failed += 1
            failed = self._failed
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._failures_unlogged += 1
        now = time.monotonic()
        if now - self._last_failure_log >= FAILURE_LOG_INTERVAL_S:
            _logger.warning("trace mirror: %d interaction(s) not mirrored to %s (%d failed in all; the experience "
                            "store has them), last %s: %s", self._failures_unlogged, self.tracking_uri, failed,
                            record.interaction_id, self.last_error)
            self._last_failure_log = now
            self._failures_unlogged = 0


# ----- one interaction as one trace (pure: no I/O) -------------------------------------------
def build_trace(record: InteractionRecord, experiment_id: str) -> tuple[Any, list[Any]]:
    """The ``TraceInfo`` and spans of an interaction's trace, with the record's own times and derived ids."""
    from mlflow.entities import SpanType, TraceInfo, TraceLocation, TraceState

    iid = record.interaction_id
    trace_hex = _hex_id(iid, "trace", 32)
    start = round(record.ts * 1e9)
    end = start + max(0, int(record.latency_ms * 1e6))
    request = record.request or {}
    inputs: dict[str, Any] = ({"messages": request["messages"]} if request.get("messages") is not None
                              else {"prompt": request.get("prompt")})
    if request.get("tools"):
        inputs["tools"] = request["tools"]
    first = _message(record.choices[0]) if record.choices else None
    output = _completion(record, record.choices[0]) if record.choices else None
    root_id = _hex_id(iid, "root", 16)
    usage = _token_usage(record.usage)
    root_attrs: dict[str, Any] = {"rlops.interaction_id": iid, "rlops.model": record.model,
                                  "rlops.policy_version": record.policy_version, "rlops.endpoint": record.endpoint,
                                  "rlops.role": record.role, "rlops.n": record.n,
                                  "mlflow.message.format": "openai"}
    for key in ("tool_choice", "sampling"):
        if request.get(key) is not None:
            root_attrs[f"rlops.{key}"] = request[key]
    if request.get("tools"):
        root_attrs["mlflow.chat.tools"] = request["tools"]
    if usage:
        root_attrs["mlflow.chat.tokenUsage"] = usage
    spans = [_span(trace_hex, root_id, None, record.endpoint or "interaction", SpanType.CHAT_MODEL, start, end,
                   inputs, output, root_attrs, experiment_id)]
    spans += _transcript_tool_spans(iid, trace_hex, root_id, request.get("messages") or [], start)
    for i, choice in enumerate(record.choices):
        index = int(choice.get("index", i))
        choice_id = _hex_id(iid, f"choice-{index}", 16)
        attrs = {"rlops.choice": index, "rlops.decision_id": f"{iid}-{index}", "mlflow.message.format": "openai"}
        for key in ("logprob", "model_logprob", "finish_reason", "completion_tokens", "vetoes", "proposed"):
            if choice.get(key) is not None and choice.get(key) != []:
                attrs[key] = choice[key]
        spans.append(_span(trace_hex, choice_id, root_id, f"choice-{index}", SpanType.LLM, start, end, None,
                           _completion(record, choice), attrs))
        for j, call in enumerate(choice.get("tool_calls") or []):
            name, arguments = _call_parts(call)
            spans.append(_span(trace_hex, _hex_id(iid, f"choice-{index}-call-{j}", 16), choice_id, name,
                               SpanType.TOOL, end, end, arguments, None,
                               {"tool_call_id": call.get("id"), "rlops.choice": index, "rlops.executed": False}))
    metadata = {"mlflow.trace_schema.version": "3", "mlflow.traceInputs": _preview(inputs),
                "mlflow.traceOutputs": _preview(first)}
    if record.session_id:
        metadata["mlflow.trace.session"] = str(record.session_id)
    user = _user(record)
    if user:
        metadata["mlflow.trace.user"] = user
    if usage:
        metadata["mlflow.trace.tokenUsage"] = json.dumps(usage)
    tags = {TAG_INTERACTION: iid, TAG_MODEL: record.model, TAG_POLICY: record.policy_version,
            "mlflow.traceName": record.endpoint or "interaction"}
    if record.session_id:
        tags[TAG_SESSION] = str(record.session_id)
    info = TraceInfo(trace_id="tr-" + trace_hex, trace_location=TraceLocation.from_experiment_id(experiment_id),
                     request_time=start // 1_000_000, state=TraceState.OK,
                     execution_duration=(end - start) // 1_000_000, client_request_id=iid,
                     request_preview=_last_user_text(request), response_preview=_text_preview(first),
                     trace_metadata=metadata, tags=tags)
    return info, spans


def _transcript_tool_spans(iid: str, trace_hex: str, root_id: str, messages: list[Any], start: int) -> list[Any]:
    """A ``TOOL`` span per tool result in the transcript, with the call's arguments (times unknown: the request's)."""
    from mlflow.entities import SpanType

    calls: dict[str, tuple[str, Any]] = {}
    spans = []
    for k, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        for call in message.get("tool_calls") or []:
            if isinstance(call, Mapping) and call.get("id") is not None:
                calls[str(call["id"])] = _call_parts(call)
        if message.get("role") == "tool":
            call_id = message.get("tool_call_id")
            name, arguments = calls.get(str(call_id), (str(message.get("name") or "tool"), None))
            spans.append(_span(trace_hex, _hex_id(iid, f"message-{k}", 16), root_id, name, SpanType.TOOL, start,
                               start, arguments, message.get("content"),
                               {"tool_call_id": call_id, "rlops.message_index": k, "rlops.executed": True}))
    return spans


def _span(trace_hex: str, span_hex: str, parent_hex: str | None, name: str, span_type: str, start: int, end: int,
          inputs: Any, outputs: Any, attributes: Mapping[str, Any], experiment_id: str | None = None) -> Any:
    """An ended MLflow span from its parts, in MLflow's span dict form (attribute values JSON-encoded)."""
    from mlflow.entities import Span

    attrs = {"mlflow.traceRequestId": json.dumps("tr-" + trace_hex), "mlflow.spanType": json.dumps(span_type)}
    if experiment_id is not None:
        attrs["mlflow.experimentId"] = json.dumps(experiment_id)
    if inputs is not None:
        attrs["mlflow.spanInputs"] = _dumps(inputs)
    if outputs is not None:
        attrs["mlflow.spanOutputs"] = _dumps(outputs)
    for key, value in attributes.items():
        if value is not None:
            attrs[key] = _dumps(value)
    return Span.from_dict({
        "trace_id": _b64(trace_hex), "span_id": _b64(span_hex),
        "parent_span_id": _b64(parent_hex) if parent_hex else None, "name": name,
        "start_time_unix_nano": start, "end_time_unix_nano": end, "events": [],
        "status": {"code": "STATUS_CODE_OK", "message": ""}, "attributes": attrs})


def _completion(record: InteractionRecord, choice: Mapping[str, Any]) -> dict[str, Any]:
    """One choice as the OpenAI completion object the UI renders as a chat turn (its id: the interaction's)."""
    index = int(choice.get("index", 0))
    if record.endpoint == "completions":
        body: dict[str, Any] = {"index": index, "text": choice.get("content")}
        kind = "text_completion"
    else:
        body = {"index": index, "message": _message(choice)}
        kind = "chat.completion"
    body["finish_reason"] = choice.get("finish_reason")
    return {"id": record.interaction_id, "object": kind, "model": record.model, "choices": [body]}


def _message(choice: Mapping[str, Any]) -> dict[str, Any]:
    """A choice as the OpenAI assistant message the client received."""
    message: dict[str, Any] = {"role": "assistant", "content": choice.get("content")}
    calls = choice.get("tool_calls") or []
    if calls:
        message["tool_calls"] = [{"id": call.get("id"), "type": "function",
                                  "function": {"name": name, "arguments": _dumps(arguments or {})}}
                                 for call, (name, arguments) in ((c, _call_parts(c)) for c in calls)]
    return message


def _call_parts(call: Mapping[str, Any]) -> tuple[str, Any]:
    """``(name, arguments)`` of a tool call, flat (``{"name", "arguments"}``) or OpenAI (``{"function": ...}``)."""
    function = call.get("function") if isinstance(call.get("function"), Mapping) else call
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    return str(function.get("name") or "tool"), arguments


def _user(record: InteractionRecord) -> str | None:
    """The end user of the request, when the client named one (OpenAI ``user``, ``metadata.user`` or extra)."""
    request = record.request or {}
    metadata = request.get("metadata") if isinstance(request.get("metadata"), Mapping) else {}
    for value in (request.get("user"), metadata.get("user"), (record.extra or {}).get("user")):
        if isinstance(value, str) and value:
            return value
    return None


def _token_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """OpenAI usage as MLflow's token usage (input, output, total)."""
    if not usage:
        return {}
    prompt, completion = int(usage.get("prompt_tokens", 0) or 0), int(usage.get("completion_tokens", 0) or 0)
    return {"input_tokens": prompt, "output_tokens": completion,
            "total_tokens": int(usage.get("total_tokens", prompt + completion) or prompt + completion)}


def _last_user_text(request: Mapping[str, Any]) -> str | None:
    """What the trace list shows as the request: the last user message (or the prompt)."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return _text_preview(message.get("content"))
    return _text_preview(request.get("prompt"))


def _text_preview(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping) and isinstance(value.get("content"), str) and not value.get("tool_calls"):
        value = value["content"]
    text = value if isinstance(value, str) else _dumps(value)
    return text[:PREVIEW_CHARS]


def _preview(value: Any) -> str:
    return _dumps(value)[:PREVIEW_CHARS]


def _dumps(value: Any) -> str:
    """Strict JSON (what the UI parses): objects it cannot encode become strings, NaN and infinities null."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _hex_id(interaction_id: str, part: str, digits: int) -> str:
    """A stable id of ``digits`` hex digits for one part of an interaction's trace (never all zeros)."""
    value = hashlib.sha256(f"rlops-trace\0{interaction_id}\0{part}".encode()).hexdigest()[:digits]
    return value if value.strip("0") else "1".rjust(digits, "0")


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


# ----- assessments back into the store ----------------------------------------------------
def sync_assessments(store: Any, tracking_uri: str | None = None, experiment: str | None = None,
                     model: str | None = None) -> dict[str, int]:
    """Store the assessments on mirrored traces as feedback events (idempotent by assessment id); return counts.

    Feedback: a bool is a thumbs rating (1/-1), a number a rating (an ``outcome`` when the assessment is named
    ``outcome``), a string a comment. An expectation holding a message or tool call(s) is a correction. The
    choice is the assessment's ``choice`` metadata, else the choice whose span it was logged on, else 0.
    Counts: ``traces``, ``assessments``, ``accepted``, ``duplicate``, ``skipped`` and ``skipped.<reason>``.
    """
    import mlflow
    from mlflow import MlflowClient

    experiment = experiment or default_experiment(model)
    tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"experiment {experiment!r} does not exist at {tracking_uri}: nothing was mirrored there")
    filters = [f"tags.`{TAG_INTERACTION}` IS NOT NULL"]
    if model is not None:
        if "'" in model or "`" in model:
            raise ConfigError(f"model: {model!r} contains a quote")
        filters.append(f"tags.`{TAG_MODEL}` = '{model}'")
    counts: Counter[str] = Counter(traces=0, assessments=0, accepted=0, duplicate=0, skipped=0)
    pending: list[tuple[str, Any, dict[str, Any] | str]] = []
    token = None
    while True:
        page = client.search_traces(locations=[str(found.experiment_id)], filter_string=" AND ".join(filters),
                                    max_results=SEARCH_PAGE, page_token=token, include_spans=False)
        for trace in page:
            counts["traces"] += 1
            iid = trace.info.tags.get(TAG_INTERACTION)
            for assessment in trace.info.assessments or []:
                counts["assessments"] += 1
                pending.append((iid, assessment, _feedback_item(iid, assessment)))
        token = page.token
        if not token:
            break
    records = store.get_interactions(sorted({iid for iid, _, item in pending if not isinstance(item, str)}))
    events: list[FeedbackEvent] = []
    for iid, assessment, item in pending:
        reason = item if isinstance(item, str) else _check_target(item, assessment, records.get(iid))
        if reason is None:
            try:
                events.append(parse_feedback(item, f"assessment {assessment.assessment_id}"))
            except InvalidObservationError as exc:
                reason = "invalid"
                _logger.warning("assessment %s on trace %s not stored: %s", assessment.assessment_id,
                                assessment.trace_id, exc)
        if reason is not None:
            counts["skipped"] += 1
            counts[f"skipped.{reason}"] += 1
    for start in range(0, len(events), SEARCH_PAGE):
        counts.update(store.add_feedback(events[start:start + SEARCH_PAGE]))
    return dict(counts)


def _feedback_item(iid: str | None, assessment: Any) -> dict[str, Any] | str:
    """The feedback JSON of one assessment (for :func:`parse_feedback`), or the reason it is skipped."""
    from mlflow.entities import Expectation, Feedback

    if not iid:
        return "no_interaction_id"
    if assessment.valid is False:
        return "overridden"
    item: dict[str, Any] = {"interaction_id": iid, "idempotency_key": ASSESSMENT_KEY_PREFIX + assessment.assessment_id,
                            "timestamp": assessment.create_time_ms / 1000.0}
    source = assessment.source
    if source is not None and source.source_id:
        item["rater"] = str(source.source_id)[:200]
    payload: dict[str, Any] = {"mlflow": {
        "trace_id": assessment.trace_id, "assessment_id": assessment.assessment_id, "name": assessment.name,
        "source_type": getattr(source, "source_type", None)}}
    rationale = getattr(assessment, "rationale", None)
    if rationale:
        payload["mlflow"]["rationale"] = rationale
    metadata = assessment.metadata or {}
    if metadata.get("choice") is not None:
        choice = str(metadata["choice"])
        if not choice.isdigit():
            return "bad_choice"
        item["choice"] = int(choice)
    elif assessment.span_id:
        item["_span_id"] = assessment.span_id
    value = assessment.value
    if isinstance(assessment, Expectation):
        response = _response_of(value)
        if response is None:
            return "expectation_not_a_response"
        item.update(kind="correction", response=response)
    elif isinstance(assessment, Feedback):
        if assessment.error is not None or value is None:
            return "error"
        if isinstance(value, bool):
            item.update(kind="rating", value=1 if value else -1, scale=THUMBS)
        elif isinstance(value, (int, float)):
            item.update(kind="outcome" if assessment.name == "outcome" else "rating", value=value)
            if item["kind"] == "rating" and metadata.get("scale"):
                item["scale"] = str(metadata["scale"])
        elif isinstance(value, str):
            if not value.strip():
                return "empty_comment"
            item.update(kind="comment", text=value)
        elif isinstance(value, Mapping) and assessment.name == "outcome":
            item.update(kind="outcome")
            payload.update(value)
        else:
            return "unsupported_value"
    else:
        return "unsupported_assessment"
    item["payload"] = payload
    return item


def _response_of(value: Any) -> dict[str, Any] | None:
    """The corrected assistant message an expectation holds: text, a message, a tool call or a list of calls."""
    if isinstance(value, str):
        return {"content": value} if value.strip() else None
    if isinstance(value, Mapping):
        if "content" in value or "tool_calls" in value:
            return {k: value[k] for k in ("content", "tool_calls") if k in value}
        if "name" in value or "function" in value:
            return {"tool_calls": [dict(value)]}
        return None
    if isinstance(value, list) and value and all(isinstance(v, Mapping) and ("name" in v or "function" in v)
                                                 for v in value):
        return {"tool_calls": [dict(v) for v in value]}
    return None


def _check_target(item: dict[str, Any], assessment: Any, record: InteractionRecord | None) -> str | None:
    """Resolve the choice (from a span id when needed) and return why the target is wrong, if it is."""
    if record is None:
        return "unknown_interaction"
    span_id = item.pop("_span_id", None)
    if span_id is not None:
        item["choice"] = _choice_of_span(record, str(span_id))
    if not 0 <= item.get("choice", 0) < max(record.n, 1):
        return "choice_out_of_range"
    return None


def _choice_of_span(record: InteractionRecord, span_id: str) -> int:
    """The choice whose span (or tool-call span) ``span_id`` is; 0 for the interaction's other spans."""
    iid = record.interaction_id
    for i, choice in enumerate(record.choices):
        index = int(choice.get("index", i))
        parts = [f"choice-{index}"] + [f"choice-{index}-call-{j}" for j in range(len(choice.get("tool_calls") or []))]
        if span_id in {_hex_id(iid, part, 16) for part in parts}:
            return index
    return 0
