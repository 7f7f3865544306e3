"""The agent server: KServe's OpenAI data plane around an agent bundle, every interaction logged first."""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time

import httpx
import pytest

from rlops_plugin import plugins
from rlops_plugin.experience.feedback import parse_feedback_body
from rlops_plugin.experience.interactions import join_interactions
from rlops_plugin.experience.store import open_store
from rlops_plugin.hookspecs import hookimpl
from rlops_plugin.kinds.agent.triage import TOOLS, tickets

pytestmark = pytest.mark.integration
TICKET = [{"role": "user", "content": "help with refund"}]


@pytest.fixture(scope="module")
def agent_server(triage_model_dir, tmp_path_factory):
    """One agent server (with a store) for the module; stopped by its PID at teardown."""
    from rlops_plugin.serving.process import PolicyServerProcess

    root = tmp_path_factory.mktemp("agent-server")
    store = str(root / "store.db")
    server = PolicyServerProcess(triage_model_dir, root / "server.log", name="triage", store=store,
                                 extra_args=["--max_tokens", "64", "--seed", "0", "--traces", "off"]).start()
    yield server, store
    server.stop()


def client_for(server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="unused", max_retries=0)


def test_the_openai_client_gets_tool_calls_and_every_one_is_stored(agent_server):
    server, store_path = agent_server
    client = client_for(server)
    seen = []
    for text, queue in tickets()[:6]:
        r = client.chat.completions.create(model="triage", messages=[{"role": "user", "content": text}],
                                           tools=TOOLS, temperature=0.0, max_tokens=40, user="session-a")
        call = r.choices[0].message.tool_calls[0]
        assert (call.function.name, json.loads(call.function.arguments)) == ("route", {"queue": queue})
        assert r.choices[0].finish_reason == "tool_calls"
        ext = r.model_extra["rlops"]
        assert ext["session_id"] == "session-a" and ext["choices"][0]["logprob"] == 0.0  # greedy: probability 1
        seen.append(ext)
    sampled = client.chat.completions.create(model="triage", messages=TICKET, tools=TOOLS, n=3, temperature=1.0,
                                             max_tokens=40, extra_headers={"x-session-id": "session-b"})
    ext = sampled.model_extra["rlops"]
    assert len(sampled.choices) == 3 and len({c["decision_id"] for c in ext["choices"]}) == 3
    assert all(c["logprob"] < 0 and c["logprob"] == c["model_logprob"] for c in ext["choices"])  # T=1, top_p=1
    seen.append(ext)
    with open_store(store_path) as store:
        stored = store.get_interactions([e["interaction_id"] for e in seen])
    assert len(stored) == len(seen)
    for ext in seen:
        record = stored[ext["interaction_id"]]
        assert record.policy_version == ext["policy_version"] and record.session_id == ext["session_id"]
        assert [c["logprob"] for c in record.choices] == [c["logprob"] for c in ext["choices"]]
        assert record.request["tools"][0]["function"]["name"] == "route"
        assert record.choices[0]["tool_calls"][0]["name"] == "route"
        assert record.request["sampling"]["max_tokens"] == 40 and record.usage["prompt_tokens"] > 0


def test_a_registered_agent_served_by_alias_logs_to_the_store_and_to_mlflow_traces(
        tracking, triage_agent, start_server, tmp_path):
    import mlflow

    from rlops_plugin import flavor
    from rlops_plugin.experience.traces import trace_id_of
    from rlops_plugin.flavor.registry import set_alias

    with mlflow.start_run():
        flavor.log_model(triage_agent, registered_model_name="triage-agent")
    set_alias("triage-agent", "champion", "1")
    store_path = str(tmp_path / "store.db")
    server = start_server("models:/triage-agent@champion", store=store_path, name="triage")
    client = client_for(server)
    answers = [client.chat.completions.create(model="triage", messages=[{"role": "user", "content": text}],
                                              tools=TOOLS, max_tokens=40, user="traced")
               for text, _ in tickets()[:4]]
    assert all(a.choices[0].message.tool_calls for a in answers)
    versions = {a.model_extra["rlops"]["policy_version"] for a in answers}
    assert versions == {f"triage-agent/1@{triage_agent.bundle_sha[:12]}"}
    with open_store(store_path) as store:
        stored = store.get_interactions([a.model_extra["rlops"]["interaction_id"] for a in answers])
    assert len(stored) == 4 and all(r.choices[0]["logprob"] < 0 for r in stored.values())
    deadline = time.monotonic() + 60
    traces = {}
    while len(traces) < 4 and time.monotonic() < deadline:
        for iid in stored:
            try:
                traces[iid] = mlflow.get_trace(trace_id_of(iid))
            except mlflow.exceptions.MlflowException:
                pass
        traces = {k: v for k, v in traces.items() if v is not None}
        time.sleep(0.5)
    assert len(traces) == 4, f"{len(traces)} of 4 interactions mirrored as MLflow traces"
    for iid, trace in traces.items():
        tags = trace.info.tags
        assert tags["rlops.interaction_id"] == iid and tags["rlops.policy_version"] in versions
        assert tags["rlops.session_id"] == "traced"
    status = httpx.get(f"{server.url}/rlops/v1/status", timeout=30).json()["models"][0]["trace_mirror"]
    assert status["mirrored"] == 4 and status["dropped"] == 0


def test_tool_results_sent_back_are_part_of_the_logged_transcript(agent_server):
    server, store_path = agent_server
    client = client_for(server)
    first = client.chat.completions.create(model="triage", messages=TICKET, tools=TOOLS, temperature=0.0,
                                           max_tokens=40, metadata={"session_id": "conv-7"})
    call = first.choices[0].message.tool_calls[0]
    follow_up = [*TICKET, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"ok": True, "queue": "billing"})},
                 {"role": "user", "content": "thanks"}]
    second = client.chat.completions.create(model="triage", messages=follow_up, tools=TOOLS, temperature=0.0,
                                            max_tokens=40, metadata={"session_id": "conv-7"})
    with open_store(store_path) as store:
        records = [r for _, r in store.iter_interactions(session_id="conv-7")]
    assert [r.interaction_id for r in records] == [first.model_extra["rlops"]["interaction_id"],
                                                   second.model_extra["rlops"]["interaction_id"]]
    transcript = records[1].request["messages"]
    assert [m["role"] for m in transcript] == ["user", "assistant", "tool", "user"]
    assert transcript[1]["tool_calls"][0]["function"]["name"] == "route"
    assert json.loads(transcript[2]["content"]) == {"ok": True, "queue": "billing"}


def test_text_completions_are_logged_too(agent_server):
    server, store_path = agent_server
    r = client_for(server).completions.create(model="triage", prompt="<s><|user|>help with crash<|assistant|>",
                                              max_tokens=40, temperature=0.0)
    assert json.loads(r.choices[0].text) == {"name": "route", "arguments": {"queue": "technical"}}
    interaction = r.model_extra["rlops"]["interaction_id"]
    with open_store(store_path) as store:
        record = store.get_interactions([interaction])[interaction]
    assert record.endpoint == "completions" and record.request["prompt"].endswith("<|assistant|>")


@pytest.mark.parametrize("body, field", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0]"),
    ({"messages": TICKET, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}]},
     "tools[0].function.parameters"),
    ({"messages": TICKET, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "delete"}}},
     "tool_choice"),
    ({"messages": [{"role": "user", "content": "refund " * 200}]}, "messages"),
    ({"messages": TICKET, "max_tokens": 65}, "max_tokens"),
    ({"messages": TICKET, "n": 100}, "n"),
    ({"messages": TICKET, "temperature": 5}, "temperature"),
    ({"messages": TICKET, "stream": True}, "stream"),
    ({"messages": TICKET, "stop": ["route"]}, "stop"),
    ({"messages": TICKET, "response_format": {"type": "json_object"}}, "response_format"),
])
def test_bad_requests_get_400_naming_the_field(agent_server, body, field):
    server, store_path = agent_server
    with open_store(store_path) as store:
        before = store.stats()["interactions"]
    r = httpx.post(f"{server.url}/openai/v1/chat/completions", json={"model": "triage", **body}, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and error["message"].startswith(field), error
    with open_store(store_path) as store:
        assert store.stats()["interactions"] == before  # nothing acknowledged, nothing logged


def test_limits_are_named_and_oversized_bodies_get_413(agent_server):
    server, _ = agent_server
    long = httpx.post(f"{server.url}/openai/v1/chat/completions", timeout=30, json={
        "model": "triage", "messages": [{"role": "user", "content": "refund " * 200}]}).json()["error"]["message"]
    assert "exceeds the model's context of 128 tokens" in long
    assert "the server's limit" in httpx.post(f"{server.url}/openai/v1/chat/completions", timeout=30, json={
        "model": "triage", "messages": TICKET, "max_tokens": 65}).json()["error"]["message"]
    big = httpx.post(f"{server.url}/openai/v1/chat/completions", content=b"x" * (9 << 20), timeout=30,
                     headers={"content-type": "application/json"})
    assert big.status_code == 413


def test_feedback_of_each_kind_is_stored_and_joined(agent_server):
    server, store_path = agent_server
    client = client_for(server)
    ids = [client.chat.completions.create(model="triage", messages=[{"role": "user", "content": text}],
                                          tools=TOOLS, temperature=0.0, max_tokens=40, user="fb-session"
                                          ).model_extra["rlops"]["interaction_id"] for text, _ in tickets()[:3]]
    events = [
        {"interaction_id": ids[0], "kind": "rating", "value": 1, "scale": "thumbs", "rater": "ana"},
        {"interaction_id": ids[1], "kind": "rating", "value": 2, "scale": "1-5", "rater": "ben"},
        {"interaction_id": ids[1], "kind": "correction", "rater": "ben",
         "response": {"tool_calls": [{"name": "route", "arguments": {"queue": "accounts"}}]}},
        {"interaction_id": ids[2], "kind": "correction", "response": "Routing to technical support."},
        {"interaction_id": ids[2], "kind": "comment", "text": "should have asked first"},
        {"interaction_id": ids[0], "kind": "outcome", "value": 1.0},
        {"session_id": "fb-session", "kind": "outcome", "payload": {"resolved": True}},
        {"interaction_id": "18ed4ae381a47aaa0000000000ff", "kind": "rating", "value": -1, "scale": "thumbs"},
    ]
    r = httpx.post(f"{server.url}/v1/feedback", json=events, timeout=30)
    assert r.status_code == 200 and [x["status"] for x in r.json()["results"]] == ["accepted"] * len(events)
    again = httpx.post(f"{server.url}/v1/feedback", json=events[:1], timeout=30).json()["results"][0]["status"]
    assert again == "duplicate"
    bad = httpx.post(f"{server.url}/v1/feedback", timeout=30,
                     json={"interaction_id": ids[0], "kind": "rating", "value": 7, "scale": "1-5"})
    assert bad.status_code == 400 and "value: an integer from 1 to 5" in bad.json()["error"]
    with open_store(store_path) as store:
        result = join_interactions(store, model="triage")
    frame = result.decisions.set_index("interaction_id")
    assert frame.loc[ids[0], "rating"] == 1 and frame.loc[ids[0], "rating_scale"] == "thumbs"
    assert frame.loc[ids[0], "rater"] == "ana" and frame.loc[ids[0], "outcome"]["value"] == 1.0
    assert frame.loc[ids[1], "correction"]["tool_calls"] == [{"name": "route", "arguments": {"queue": "accounts"}}]
    assert frame.loc[ids[2], "correction"] == {"content": "Routing to technical support."}
    assert frame.loc[ids[2], "comments"] == ["should have asked first"]
    assert frame.loc[ids[2], "outcome"] == {"value": None, "payload": {"resolved": True}, "scope": "session"}
    assert result.counts["pending"] == 1  # the unknown interaction waits, then counts as orphaned
    later = join_interactions(open_store(store_path), now=time.time() + 3600)
    assert later.counts["orphaned"] >= 1


def test_kill_9_mid_burst_loses_no_acknowledged_interaction(start_server, triage_model_dir, tmp_path):
    store_path = str(tmp_path / "store.db")
    server = start_server(triage_model_dir, store=store_path, name="triage", extra_args=["--traces", "off"])
    acked: list[str] = []
    stop = threading.Event()

    def client():
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"{server.url}/openai/v1/chat/completions", json={
                        "model": "triage", "messages": TICKET, "tools": TOOLS, "max_tokens": 40})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked.append(r.json()["rlops"]["interaction_id"])

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 30 and time.monotonic() < deadline:
        time.sleep(0.1)
    server.kill()  # SIGKILL the process group mid-burst
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 30
    with open_store(store_path) as store:  # opening recovers the WAL
        counts = collections.Counter(r.interaction_id for _, r in store.iter_interactions())
    missing = [i for i in acked if counts[i] != 1]
    assert not missing, f"{len(missing)} acknowledged interactions missing or duplicated"


def test_a_generation_over_the_time_budget_answers_503_and_logs_nothing(start_server, triage_model_dir, tmp_path):
    store_path = str(tmp_path / "store.db")
    server = start_server(triage_model_dir, store=store_path, name="triage",
                          extra_args=["--time_budget_s", "0.001", "--traces", "off"])
    for _ in range(2):  # the server keeps serving after a timeout
        r = httpx.post(f"{server.url}/openai/v1/chat/completions", timeout=30,
                       json={"model": "triage", "messages": TICKET, "max_tokens": 64})
        assert r.status_code == 503 and "time budget of 0.001 s" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/rlops/v1/status", timeout=30).json()["models"][0]["timeouts"] == 2
    with open_store(store_path) as store:
        assert store.stats()["interactions"] == 0


class _Guard:
    """A tool-call guard that forbids routing to billing without an account id in the metadata."""

    @hookimpl
    def rlops_guard_tool_call(self, call, context):
        if call["arguments"].get("queue") == "billing" and "account_id" not in context["metadata"]:
            return "I need your account id before I can route this to billing.", "billing needs account_id"
        return None


def test_the_tool_call_guard_vetoes_substitutes_and_logs(triage_agent, tmp_path):
    from kserve.protocol.rest.openai.types import ChatCompletionRequest

    from rlops_plugin.flavor.model import LoadedModel
    from rlops_plugin.serving.agent import AgentModel

    store = open_store(tmp_path / "store.db")
    model = AgentModel("triage", LoadedModel(triage_agent, "in-memory"), store=store)
    model.load()
    plugins.add_plugin(_Guard(), "test-guard")
    try:
        def ask(metadata):
            request = ChatCompletionRequest(model="triage", messages=TICKET, tools=TOOLS, temperature=0.0,
                                            max_tokens=40, metadata=metadata)
            return asyncio.run(model.create_chat_completion(request))

        vetoed, allowed = ask({}), ask({"account_id": "A-1"})
    finally:
        plugins.remove_plugin("test-guard")
    assert vetoed.choices[0].message.content.startswith("I need your account id")
    assert not vetoed.choices[0].message.tool_calls and vetoed.rlops["choices"][0]["vetoed"]
    assert vetoed.rlops["choices"][0]["logprob"] is None  # the substitute was not sampled
    assert allowed.choices[0].message.tool_calls[0].function.name == "route"
    record = store.get_interactions([vetoed.rlops["interaction_id"]])[vetoed.rlops["interaction_id"]]
    assert record.choices[0]["vetoes"] == [{"tool": "route", "arguments": {"queue": "billing"},
                                            "reason": "billing needs account_id"}]
    assert record.choices[0]["proposed"]["tool_calls"][0]["arguments"] == {"queue": "billing"}
    assert model.status()["guard_vetoes"] == 1
    store.close()


def test_a_chat_template_that_refuses_the_transcript_is_a_400(triage_agent, tmp_path):
    from kserve.protocol.rest.openai.types import ChatCompletionRequest

    from rlops_plugin.flavor.model import LoadedModel
    from rlops_plugin.serving.agent import AgentModel

    model = AgentModel("triage", LoadedModel(triage_agent, "in-memory"))
    model.load()
    _, tokenizer = triage_agent.policy.load()
    saved = tokenizer.chat_template
    tokenizer.chat_template = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must "
                               "start with a user message') }}{% endif %}" + saved)
    try:
        request = ChatCompletionRequest(model="triage", messages=[{"role": "assistant", "content": "hi"}],
                                        max_tokens=8)
        answer = asyncio.run(model.create_chat_completion(request))
    finally:
        tokenizer.chat_template = saved
    assert answer.error.code == "400" and answer.error.param == "messages"
    assert "Conversations must start with a user message" in answer.error.message


def test_feedback_for_interactions_parses_like_decisions():
    events = parse_feedback_body([{"interaction_id": "18ed4ae381a47aaa8fa0e94551ea", "choice": 2, "kind": "rating",
                                   "value": 4, "scale": "1-5"},
                                  {"session_id": "s-1", "kind": "outcome", "value": 0}])
    assert events[0].decision_id == "18ed4ae381a47aaa8fa0e94551ea-2" and events[0].payload == {"scale": "1-5"}
    assert events[1].decision_id == "session:s-1" and events[1].batch_id == "session:s-1"
