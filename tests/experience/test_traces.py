"""The MLflow trace mirror of agent interactions and the sync of reviewers' assessments, on a real MLflow server."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rlops_plugin.experience.records import InteractionRecord, new_batch_id
from rlops_plugin.experience.store import open_store
from rlops_plugin.experience.traces import TraceMirror, build_trace, sync_assessments, trace_id_of

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _record(i: int = 0, session: str = "sess-1") -> InteractionRecord:
    """A two-choice chat interaction whose transcript holds one tool call and its result."""
    return InteractionRecord(
        interaction_id=new_batch_id(), ts=1_790_000_000.0 + 10 * i, model="triage",
        policy_version="triage/3@0123456789ab", endpoint="chat.completions",
        request={"messages": [
            {"role": "system", "content": "Route support tickets."},
            {"role": "user", "content": f"ticket {i}: the printer is on fire"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "printer"}'}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": f"printer P{i} is in room 3"}],
            "tools": [{"type": "function", "function": {"name": "route", "parameters": {"type": "object"}}}],
            "tool_choice": "auto", "sampling": {"n": 2, "temperature": 1.0, "top_p": 1.0, "max_tokens": 32},
            "metadata": {"user": "alice"}},
        choices=[{"index": 0, "content": None, "tool_calls": [{"id": "call_b", "name": "route",
                                                               "arguments": {"team": "facilities"}}],
                  "finish_reason": "tool_calls", "logprob": -2.5, "model_logprob": -2.25, "completion_tokens": 9,
                  "vetoes": []},
                 {"index": 1, "content": "Please call the fire brigade.", "tool_calls": [], "finish_reason": "stop",
                  "logprob": -7.0, "model_logprob": -6.5, "completion_tokens": 6, "vetoes": []}],
        usage={"prompt_tokens": 40, "completion_tokens": 15}, latency_ms=250.0, session_id=session)


def _mirror(records: list[InteractionRecord], tracking_uri: str, experiment: str) -> dict[str, int]:
    """Mirror ``records`` and wait for all of them to be written."""
    mirror = TraceMirror(tracking_uri, experiment=experiment, max_queue=100)
    assert all(mirror.submit(r) for r in records)
    return mirror.close(timeout=120)


@pytest.fixture
def experiment() -> str:
    """An experiment name no other test uses."""
    return f"test-traces-{uuid.uuid4().hex[:10]}"


@pytest.mark.integration
def test_mirror_writes_one_trace_per_interaction(tracking, experiment):
    """Each interaction becomes a trace with its tags, session, real times and a span per choice and tool."""
    from mlflow import MlflowClient

    records = [_record(0), _record(1, session="sess-2")]
    assert _mirror(records, tracking, experiment) == {"mirrored": 2, "dropped": 0, "failed": 0, "queued": 0}
    client = MlflowClient(tracking)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    found = client.search_traces(locations=[exp_id], filter_string=f"tags.`rlops.interaction_id` = "
                                                                   f"'{records[1].interaction_id}'")
    assert [t.info.trace_id for t in found] == [trace_id_of(records[1].interaction_id)]

    record = records[0]
    trace = client.get_trace(trace_id_of(record.interaction_id))
    info = trace.info
    assert {k: info.tags[k] for k in ("rlops.interaction_id", "rlops.session_id", "rlops.policy_version",
                                      "rlops.model")} == {
        "rlops.interaction_id": record.interaction_id, "rlops.session_id": "sess-1",
        "rlops.policy_version": "triage/3@0123456789ab", "rlops.model": "triage"}
    assert info.trace_metadata["mlflow.trace.session"] == "sess-1"
    assert info.trace_metadata["mlflow.trace.user"] == "alice"
    assert info.client_request_id == record.interaction_id
    assert info.request_time == 1_790_000_000_000 and info.execution_duration == 250
    assert info.request_preview == "ticket 0: the printer is on fire"

    spans = {s.name: s for s in trace.data.spans}
    assert sorted(spans) == ["chat.completions", "choice-0", "choice-1", "lookup", "route"]
    root = spans["chat.completions"]
    assert root.parent_id is None and root.span_type == "CHAT_MODEL"
    assert root.inputs == {"messages": record.request["messages"], "tools": record.request["tools"]}
    first = root.outputs["choices"][0]["message"]
    assert first["tool_calls"][0]["function"] == {"name": "route", "arguments": '{"team": "facilities"}'}
    assert (root.start_time_ns, root.end_time_ns) == (1_790_000_000 * 10**9, 1_790_000_000 * 10**9 + 250 * 10**6)

    for index in (0, 1):
        choice = spans[f"choice-{index}"]
        assert choice.span_type == "LLM" and choice.parent_id == root.span_id
        assert (choice.start_time_ns, choice.end_time_ns) == (root.start_time_ns, root.end_time_ns)
        for key in ("logprob", "model_logprob", "finish_reason", "completion_tokens"):
            assert choice.attributes[key] == record.choices[index][key], key
    assert spans["choice-1"].outputs["choices"][0]["message"]["content"] == "Please call the fire brigade."

    proposed, result = spans["route"], spans["lookup"]
    assert proposed.span_type == "TOOL" and proposed.parent_id == spans["choice-0"].span_id
    assert proposed.inputs == {"team": "facilities"} and proposed.attributes["rlops.executed"] is False
    assert result.span_type == "TOOL" and result.parent_id == root.span_id
    assert result.inputs == {"q": "printer"} and result.outputs == "printer P0 is in room 3"
    assert result.attributes["tool_call_id"] == "call_a"

    # Mirroring an interaction again updates its one trace.
    assert _mirror([record], tracking, experiment)["mirrored"] == 1
    assert len(client.search_traces(locations=[exp_id])) == 2


def test_build_trace_is_stable_strict_json():
    """Ids follow from the interaction id; NaN becomes null (the UI parses strict JSON); text completions work."""
    record = _record(0)
    record.choices[1]["logprob"] = float("nan")
    info, spans = build_trace(record, "7")
    again, same = build_trace(record, "7")
    assert info.trace_id == again.trace_id == trace_id_of(record.interaction_id)
    assert [s.span_id for s in spans] == [s.span_id for s in same] and len({s.span_id for s in spans}) == 5
    choice_1 = next(s for s in spans if s.name == "choice-1")
    assert choice_1.attributes["logprob"] is None and choice_1.attributes["model_logprob"] == -6.5
    text = InteractionRecord(interaction_id=new_batch_id(), ts=1.0, model="m", policy_version="m/1@x",
                             endpoint="completions", request={"prompt": "Once upon"},
                             choices=[{"index": 0, "content": " a time", "finish_reason": "length"}])
    info, spans = build_trace(text, "7")
    assert spans[0].inputs == {"prompt": "Once upon"} and info.request_preview == "Once upon"
    assert spans[0].outputs["choices"][0]["text"] == " a time" and info.response_preview == " a time"


class _StallingServer(ThreadingHTTPServer):
    """Stands in for an MLflow server that hangs: holds each request until released, then answers 400."""

    daemon_threads = True

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _StallingHandler)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _StallingHandler(BaseHTTPRequestHandler):
    def _stall(self) -> None:
        self.server.arrived.set()
        self.server.release.wait(120)
        body = json.dumps({"error_code": "BAD_REQUEST", "message": "this server is broken"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _stall

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stalling_server():
    """A stalling HTTP server on 127.0.0.1 and a free port."""
    server = _StallingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_full_queue_drops_and_counts_without_blocking(stalling_server):
    """While MLflow hangs, submit returns at once: the queue fills, the rest is dropped and counted; failures too."""
    mirror = TraceMirror(stalling_server.url, experiment="never-reached", max_queue=3)
    assert mirror.submit(_record(0))
    assert stalling_server.arrived.wait(60)  # the worker holds the first interaction, waiting on the server
    accepted = [mirror.submit(_record(i)) for i in range(1, 11)]
    assert accepted == [True] * 3 + [False] * 7
    assert mirror.stats() == {"mirrored": 0, "dropped": 7, "failed": 0, "queued": 4}

    stalling_server.release.set()
    assert mirror.close(timeout=120) == {"mirrored": 0, "dropped": 7, "failed": 4, "queued": 0}
    assert "this server is broken" in mirror.last_error
    assert mirror.submit(_record(11)) is False
    assert mirror.stats()["dropped"] == 8


@pytest.mark.integration
def test_sync_assessments_stores_reviews_once(tracking, experiment, tmp_path):
    """Thumbs, numeric, comment and expectation assessments become feedback events; a second sync adds nothing."""
    import mlflow
    from mlflow.entities import AssessmentSource

    records = [_record(0), _record(1)]
    _mirror(records, tracking, experiment)
    trace_id = trace_id_of(records[0].interaction_id)
    reviewer = AssessmentSource(source_type="HUMAN", source_id="reviewer-1")
    thumbs = mlflow.log_feedback(trace_id=trace_id, name="thumbs", value=False, source=reviewer,
                                 metadata={"choice": 1})
    mlflow.log_feedback(trace_id=trace_id, name="quality", value=4, source=reviewer, metadata={"scale": "1-5"})
    mlflow.log_feedback(trace_id=trace_id, name="outcome", value=1.0, source=reviewer)
    mlflow.log_feedback(trace_id=trace_id, name="note", value="should go to security", source=reviewer)
    choice_1 = next(s for s in mlflow.get_trace(trace_id).data.spans if s.name == "choice-1")
    mlflow.log_feedback(trace_id=trace_id, name="helpful", value=True, source=reviewer, span_id=choice_1.span_id)
    mlflow.log_expectation(trace_id=trace_id, name="expected_response", source=reviewer,
                           value={"tool_calls": [{"name": "route", "arguments": {"team": "security"}}]})
    mlflow.log_expectation(trace_id=trace_id, name="expected_facts", value=["P0 is in room 3"], source=reviewer)
    mlflow.log_feedback(trace_id=trace_id_of(records[1].interaction_id), name="thumbs", value=True, source=reviewer)

    with open_store(tmp_path / "store.db") as store:
        store.log_interactions(records[:1])  # the second interaction is not in this store
        first = sync_assessments(store, tracking_uri=tracking, experiment=experiment)
        assert first == {"traces": 2, "assessments": 8, "accepted": 6, "duplicate": 0, "skipped": 2,
                         "skipped.expectation_not_a_response": 1, "skipped.unknown_interaction": 1}
        rows = {row["payload"]["mlflow"]["name"]: row for row in store.feedback_rows()}
        iid = records[0].interaction_id
        assert rows["thumbs"]["decision_id"] == f"{iid}-1"
        assert rows["thumbs"]["idempotency_key"] == f"mlflow-assessment:{thumbs.assessment_id}"
        assert (rows["thumbs"]["kind"], rows["thumbs"]["value"], rows["thumbs"]["payload"]["scale"]) == (
            "rating", -1.0, "thumbs")
        assert rows["thumbs"]["payload"]["rater"] == "reviewer-1"
        assert rows["thumbs"]["event_ts"] == thumbs.create_time_ms / 1000
        assert (rows["quality"]["kind"], rows["quality"]["value"], rows["quality"]["payload"]["scale"]) == (
            "rating", 4.0, "1-5")
        assert (rows["outcome"]["kind"], rows["outcome"]["value"]) == ("outcome", 1.0)
        assert (rows["note"]["kind"], rows["note"]["payload"]["text"]) == ("comment", "should go to security")
        assert (rows["helpful"]["decision_id"], rows["helpful"]["value"]) == (f"{iid}-1", 1.0)
        correction = rows["expected_response"]
        assert correction["kind"] == "correction" and correction["decision_id"] == f"{iid}-0"
        assert correction["payload"]["response"] == {"content": None, "tool_calls": [
            {"name": "route", "arguments": {"team": "security"}}]}

        again = sync_assessments(store, tracking_uri=tracking, experiment=experiment, model="triage")
        assert again == {**first, "accepted": 0, "duplicate": 6}
        assert len(store.feedback_rows()) == 6


@pytest.mark.integration
def test_feedback_sync_command(tracking, experiment, tmp_path):
    """``rlops feedback sync`` prints the counts as JSON; a second run stores nothing; a wrong experiment exits 2."""
    import mlflow
    from click.testing import CliRunner

    from rlops_plugin.cli import main

    record = _record(0)
    _mirror([record], tracking, experiment)
    mlflow.log_feedback(trace_id=trace_id_of(record.interaction_id), name="thumbs", value=True)
    store = str(tmp_path / "store.db")
    with open_store(store) as opened:
        opened.log_interactions([record])
    argv = ["feedback", "sync", "--store", store, "--tracking-uri", tracking, "--experiment", experiment]
    runner = CliRunner()
    first = runner.invoke(main, argv)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output) == {"traces": 1, "assessments": 1, "accepted": 1, "duplicate": 0, "skipped": 0}
    second = runner.invoke(main, argv + ["--model", "triage"])
    assert json.loads(second.output)["duplicate"] == 1
    with open_store(store) as opened:
        assert [row["kind"] for row in opened.feedback_rows()] == ["rating"]
    missing = runner.invoke(main, [*argv[:-1], experiment + "-missing"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


@pytest.mark.integration
def test_mlflow_ui_shows_the_mirrored_interaction(tracking, experiment):
    """The MLflow UI, opened on a mirrored interaction's trace, shows its id, its transcript and its choices."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `bash scripts/system-deps.sh` (apt-get install chromium)")
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    record = _record(7)
    _mirror([record], tracking, experiment)
    exp_id = MlflowClient(tracking).get_experiment_by_name(experiment).experiment_id
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                          "--disable-background-networking", "--disable-component-update",
                                          "--disable-sync"])
        try:
            page = chrome.new_page()
            page.goto(f"{tracking}/#/experiments/{exp_id}/traces/{trace_id_of(record.interaction_id)}")
            for text in ("printer P7 is in room 3", "choice-1", record.interaction_id):
                page.get_by_text(text).first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            assert "ticket 7: the printer is on fire" in body and "sess-1" in body
        finally:
            chrome.close()


@pytest.mark.integration
def test_close_returns_at_once_when_idle(tracking, experiment):
    """A mirror with nothing queued closes without touching MLflow (no experiment is created)."""
    from mlflow import MlflowClient

    mirror = TraceMirror(tracking, experiment=experiment)
    assert mirror.close() == {"mirrored": 0, "dropped": 0, "failed": 0, "queued": 0}
    assert MlflowClient(tracking).get_experiment_by_name(experiment) is None


@pytest.mark.integration
def test_a_backlog_is_written_in_batches_and_every_trace_keeps_its_spans(tracking, experiment):
    """Interactions that queued up share a ``log_spans`` request; each still becomes its own complete trace."""
    import mlflow
    from mlflow import MlflowClient

    from rlops_plugin.experience.traces import MAX_BATCH, trace_id_of

    records = [_record(i, session=f"s-{i}") for i in range(MAX_BATCH + 8)]
    assert _mirror(records, tracking, experiment)["mirrored"] == len(records)
    client = MlflowClient(tracking)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    assert len(client.search_traces(locations=[exp_id], max_results=500)) == len(records)
    for record in (records[0], records[MAX_BATCH], records[-1]):
        trace = mlflow.get_trace(trace_id_of(record.interaction_id))
        assert trace.info.tags["rlops.session_id"] == record.session_id
        assert {s.name for s in trace.data.spans} >= {"choice-0", "choice-1"}
