"""Judges of agent answers: specs, code judges, the pairwise LLM judge against real servers, agreement with people."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlops_plugin import plugins
from rlops_plugin.bundle.references import module_source_sha256
from rlops_plugin.errors import ConfigError, IntegrityError, PluginError
from rlops_plugin.hookspecs import hookimpl
from rlops_plugin.kinds.agent import graders
from rlops_plugin.kinds.agent.judges import (
    DEFAULT_PROMPT,
    JudgeAgreementError,
    JudgeError,
    JudgeSpec,
    judge_agreement,
    label_pairs,
    make_judge,
    render_prompt,
    require_agreement,
    wilson_interval,
)
from rlops_plugin.kinds.agent.triage import QUEUES, TEMPLATES, call_text, tickets
from rlops_plugin.local.processes import free_port

QUEUE_NAMES = sorted(set(QUEUES.values()))
COMPACT_PROMPT = "{conversation}\nA: {a}\nB: {b}"
"""The served tiny judge's prompt: the default one doubles the tokens, and the training time with them."""


def call(queue: str) -> dict:
    """A ``route(queue)`` answer."""
    return {"content": None, "tool_calls": [{"name": "route", "arguments": {"queue": queue}}]}


def route_task(queue: str) -> dict:
    """A task entry expecting ``route(queue)``."""
    return {"id": "t", "messages": [], "expected": {"tool_calls": [{"name": "route", "arguments": {"queue": queue}}]}}


def human_pairs(templates: tuple[str, ...]) -> list[tuple]:
    """``(messages, chosen, rejected, tools)``: each ticket's right route call preferred to each wrong one."""
    return pairs_of(tickets(templates))


def pairs_of(ticket_list: list[tuple[str, str]]) -> list[tuple]:
    """:func:`human_pairs` of given ``(text, queue)`` tickets."""
    return [([{"role": "user", "content": text}], call(queue), call(wrong), None)
            for text, queue in ticket_list for wrong in QUEUE_NAMES if wrong != queue]


_HELD_OUT = {(word, TEMPLATES[i % len(TEMPLATES)]) for i, word in enumerate(QUEUES)}
JUDGE_TRAIN_TICKETS = [(t.format(w), q) for w, q in QUEUES.items() for t in TEMPLATES if (w, t) not in _HELD_OUT]
JUDGE_HELD_OUT_TICKETS = [(t.format(w), QUEUES[w]) for w, t in sorted(_HELD_OUT)]
"""The tiny judge's held-out tickets: each keyword in one training template it never saw it in (12 tickets train,
6 are held out, 12 held-out pairs). Not a template with words the tokenizer never met ("urgent: {} issue"): a
64-wide 2-layer model trained on 12 tickets does not carry over to new tokens reliably; on that template the
held-out agreement moved with the seed and the machine's float arithmetic (seeds 0-2 on one machine: 4/6, 7/8,
6/10 decided pairs right), which a test must not depend on."""


# ----- specs ---------------------------------------------------------------------------------------------
def test_a_code_judge_spec_round_trips_and_its_hash_is_its_version():
    spec = JudgeSpec.from_function("expected_call", graders.expected_tool_call)
    data = spec.to_dict()
    assert data == {"name": "expected_call", "type": "code",
                    "ref": "rlops_plugin.kinds.agent.graders:expected_tool_call",
                    "sha256": module_source_sha256("rlops_plugin.kinds.agent.graders"), "params": {},
                    "format_version": 1}
    again = JudgeSpec.from_dict(json.loads(json.dumps(data)))
    assert again == spec and again.sha256() == spec.sha256()
    other = JudgeSpec.from_function("expected_call", graders.expected_tool_call, params={"x": 1})
    assert other.sha256() != spec.sha256()


def test_a_pairwise_spec_fills_its_defaults_and_round_trips():
    spec = JudgeSpec(name="llm", type="llm_pairwise", base_url="http://127.0.0.1:9/openai/v1/", model="judge",
                     api_key_env="JUDGE_KEY")
    assert (spec.base_url, spec.prompt, spec.timeout_s, spec.max_tokens) == (
        "http://127.0.0.1:9/openai/v1", DEFAULT_PROMPT, 30.0, 4)
    assert set(spec.to_dict()) == {"name", "type", "base_url", "model", "prompt", "timeout_s", "max_tokens",
                                   "api_key_env", "format_version"}
    assert JudgeSpec.from_dict(spec.to_dict()) == spec
    assert JudgeSpec(name="llm", type="llm_pairwise", base_url=spec.base_url, model="other").sha256() != spec.sha256()
    reward = JudgeSpec(name="rm", type="reward_model", model_uri="models:/triage-rm/3")
    assert JudgeSpec.from_dict(reward.to_dict()) == reward
    assert reward.to_dict() == {"name": "rm", "type": "reward_model", "model_uri": "models:/triage-rm/3",
                                "format_version": 1}


@pytest.mark.parametrize("data, message", [
    ({"name": "j", "ref": "rlops_plugin.kinds.agent.graders:valid_tool_call", "weight": 1},
     r"judge: unknown fields \['weight'\]"),
    ({"name": "j", "ref": "rlops_plugin.kinds.agent.graders:valid_tool_call", "base_url": "http://x"},
     r"judge j \(code\): unknown fields \['base_url'\]"),
    ({"name": "j", "type": "llm_pairwise", "model": "m"}, r"judge j.base_url: required for a llm_pairwise judge"),
    ({"name": "j", "type": "llm_pairwise", "base_url": "ftp://x", "model": "m"}, r"judge j.base_url: an http\(s\) URL"),
    ({"name": "j", "type": "llm_pairwise", "base_url": "http://x", "model": "m", "prompt": "{a} vs {b}"},
     r"judge j.prompt: uses the placeholders \['a', 'b'\]; it needs \['a', 'b', 'conversation'\]"),
    ({"name": "j", "type": "llm_pairwise", "base_url": "http://x", "model": "m", "prompt": "{conversation}{a}{b}{c}"},
     r"judge j.prompt: uses the placeholders \['a', 'b', 'c', 'conversation'\]"),
    ({"name": "j", "type": "llm_pairwise", "base_url": "http://x", "model": "m", "api_key_env": "sk-live-123"},
     r"api_key_env: the name of an environment variable \(never the key itself\), got 'sk-l'\.\.\."),
    ({"name": "j", "type": "llm_pairwise", "base_url": "http://x", "model": "m", "timeout_s": 0},
     r"judge j.timeout_s: seconds in \(0, 600\]"),
    ({"name": "j", "type": "reward_model"}, r"judge j.model_uri: required"),
    ({"name": "j", "type": "pairwise"}, r"judge j.type: one of \['code', 'llm_pairwise', 'reward_model'\]"),
    ({"name": "j", "ref": "graders.valid_tool_call"}, r"is not of the form 'package.module:function'"),
    ({"name": "j", "ref": "rlops_plugin.kinds.agent.graders:valid_tool_call", "sha256": "abc"},
     r"judge j.sha256: a sha256 hex digest"),
    ({"name": "j j", "ref": "rlops_plugin.kinds.agent.graders:valid_tool_call"}, r"judge.name: letters"),
    ({"name": "j", "ref": "rlops_plugin.kinds.agent.graders:valid_tool_call", "format_version": 9},
     r"unsupported format_version"),
])
def test_bad_specs_are_refused_naming_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        JudgeSpec.from_dict(data)


def test_the_constructor_refuses_settings_of_another_type():
    with pytest.raises(ConfigError, match=r"judge j.model_uri: not a setting of a code judge; its settings: "
                                          r"\['ref', 'sha256', 'params'\]"):
        JudgeSpec(name="j", ref="rlops_plugin.kinds.agent.graders:valid_tool_call", model_uri="models:/x/1")


# ----- code and reward-model judges ----------------------------------------------------------------------
TICKET = [{"role": "user", "content": "help with refund"}]


def test_a_code_judge_prefers_the_higher_score_and_ties_on_equal_ones():
    judge = make_judge("expected_call")
    task = route_task("billing")
    assert judge.compare(TICKET, call("billing"), call("technical"), task=task).winner == "a"
    flipped = judge.compare(TICKET, call("accounts"), call("billing"), task=task)
    assert flipped.winner == "b" and flipped.details == {"scores": {"a": 0.0, "b": 1.0}}
    assert judge.compare(TICKET, call("accounts"), call("technical"), task=task).winner == "tie"
    assert judge.score(TICKET, call("billing"), task=task) == 1.0
    assert judge.version == plugins.judges().get("expected_call").value.sha256()
    from rlops_plugin.kinds.agent.triage import TOOLS

    valid = make_judge("valid_call")
    unknown_tool = {"content": None, "tool_calls": [{"name": "delete_account", "arguments": {}}]}
    assert valid.compare(TICKET, unknown_tool, call("billing"), tools=TOOLS).winner == "b"


def test_the_safety_graders_are_judges_too():
    leak = {"content": "Write to ana@example.com", "tool_calls": []}
    safe = {"content": "I can't share that.", "tool_calls": []}
    assert make_judge("no_pii").compare(TICKET, leak, safe).winner == "b"
    assert make_judge("refusal").compare(TICKET, safe, call("billing")).winner == "a"
    task = {"id": "t", "messages": [], "expected": {"forbidden_tools": ["route"]}}
    assert make_judge("no_forbidden_tool").compare(TICKET, call("billing"), safe, task=task).winner == "b"


def test_a_code_judge_whose_source_changed_is_refused():
    spec = JudgeSpec(name="j", ref="rlops_plugin.kinds.agent.graders:expected_tool_call", source_sha256="0" * 64)
    with pytest.raises(IntegrityError, match="refusing to import it"):
        make_judge(spec)


def test_a_reward_model_judge_needs_a_scorer():
    spec = JudgeSpec(name="rm", type="reward_model", model_uri="models:/triage-rm/3")
    with pytest.raises(ConfigError, match=r"judge 'rm' is a reward model \(models:/triage-rm/3\) and rlops does not "
                                          r"load reward models from their URI yet: pass make_judge\(spec, scorer=fn\)"):
        make_judge(spec).compare(TICKET, call("billing"), call("accounts"))
    lengths = make_judge(spec, scorer=lambda messages, response, tools: len(json.dumps(response)))
    assert lengths.compare(TICKET, call("technical"), call("billing")).winner == "a"


def test_judges_registered_by_a_plugin_are_found_by_name():
    spec = JudgeSpec.from_function("no_forbidden", graders.valid_tool_call)
    plugin = type("JudgePlugin", (), {"rlops_register_judges": staticmethod(hookimpl(
        lambda register: register("acme-valid", spec, description="schema-valid calls")))})()
    plugins.add_plugin(plugin, "acme-judges")
    try:
        assert {"expected_call", "valid_call", "acme-valid"} <= set(plugins.judges().names())
        assert plugins.judges().get("expected_call").plugin == "rlops_plugin.default_plugins.judges"
        assert make_judge("acme-valid").spec == spec
    finally:
        plugins.remove_plugin("acme-judges")
    with pytest.raises(PluginError, match="unknown judge 'acme-valid'; registered judges: .*expected_call"):
        make_judge("acme-valid")


def test_label_pairs_counts_and_keeps_the_decided_pairs_as_preferences():
    judge = make_judge("expected_call")
    items = [(TICKET, call("billing"), call("accounts"), None, route_task("billing")),
             (TICKET, call("technical"), call("billing"), None, route_task("billing")),
             (TICKET, call("technical"), call("accounts"), None, route_task("billing"))]
    result = label_pairs(judge, items)
    assert result.counts() == {"n": 3, "decided": 2, "ties": 1, "failed": 0}
    rows = result.preferences()
    assert [r["chosen"] for r in rows] == [call("billing"), call("billing")]
    assert [r["rejected"] for r in rows] == [call("accounts"), call("technical")]
    assert rows[0]["judge"] == "expected_call" and rows[0]["judge_version"] == judge.version
    with pytest.raises(ConfigError, match=r"items\[0\]: a \(messages, a, b, tools\)"):
        label_pairs(judge, [(TICKET, call("billing"))])


def test_agreement_with_people_and_the_refusal_naming_the_numbers():
    judge = make_judge("expected_call")
    pairs = [(TICKET, call("billing"), call("accounts"), None, route_task("billing"))] * 9
    pairs += [(TICKET, call("accounts"), call("billing"), None, route_task("billing"))] * 11  # people got these wrong
    agreement = judge_agreement(judge, pairs)
    assert (agreement.n, agreement.decided, agreement.agreed, agreement.ties, agreement.failed) == (20, 20, 9, 0, 0)
    assert agreement.rate == 0.45
    assert agreement.ci_low == pytest.approx(0.2582, abs=1e-4) and agreement.ci_high == pytest.approx(0.6579, abs=1e-4)
    assert agreement.to_dict()["rate"] == 0.45 and agreement.to_dict()["judge_version"] == judge.version
    with pytest.raises(JudgeAgreementError, match=re.escape(
            "judge 'expected_call' agreed with humans on 9/20 decided pairs (45%, 95% CI 26%-66%), below the "
            "required 80%; it cannot label training data")):
        require_agreement(agreement, min_rate=0.8, min_pairs=10)
    assert require_agreement(agreement, min_rate=0.4, min_pairs=20) is agreement
    with pytest.raises(JudgeAgreementError, match=re.escape(
            "judge 'expected_call' decided only 20 of 20 human-labelled pairs (0 ties, 0 failed), fewer than the "
            "required 30")):
        require_agreement(agreement, min_rate=0.4, min_pairs=30)


def test_wilson_interval_is_the_textbook_one():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-4)


# ----- the pairwise LLM judge: failures, position bias, keys ---------------------------------------------
def pairwise(base_url: str, **settings) -> JudgeSpec:
    """A pairwise judge spec against ``base_url`` (the model name the served agents use)."""
    return JudgeSpec(name=settings.pop("name", "llm"), type="llm_pairwise", base_url=base_url,
                     model=settings.pop("model", "judge"), **settings)


def test_nothing_listening_and_a_timeout_fail_each_comparison_and_are_counted():
    items = [(m, a, b, t) for m, a, b, t in human_pairs(TEMPLATES)[:4]]
    refused = make_judge(pairwise(f"http://127.0.0.1:{free_port()}/openai/v1"))
    comparison = refused.compare(*items[0])
    assert comparison.winner is None and comparison.failed.startswith("order ab: request failed: ConnectError")
    with pytest.raises(JudgeError, match=r"judge 'llm' failed on 4 of 4 pairs \(100%\), above the allowed 10% "
                                         r"\(0 decided, 0 ties\); failures such as: order ab: request failed") as err:
        label_pairs(refused, items)
    assert err.value.result.counts() == {"n": 4, "decided": 0, "ties": 0, "failed": 4}
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        slow = make_judge(pairwise(f"http://127.0.0.1:{silent.getsockname()[1]}/openai/v1", timeout_s=0.2))
        started = time.monotonic()
        result = label_pairs(slow, items[:2], max_failure_rate=1.0)
        assert time.monotonic() - started < 5
    assert result.counts() == {"n": 2, "decided": 0, "ties": 0, "failed": 2}
    assert all(c.failed.startswith("order ab: timeout after 0.2s") for c in result.comparisons)


class _Scripted(BaseHTTPRequestHandler):
    """An OpenAI-compatible stand-in for a hosted LLM: answers every chat completion with the server's script."""

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, dict(self.headers), body))
        status, payload = self.server.script(body)
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    """Factory: an HTTP server on 127.0.0.1 answering with ``script(body) -> (status, payload)``."""
    servers = []

    def start(script):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
        server.script, server.seen = script, []
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def answer(text):
    return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def test_a_judge_that_always_picks_the_first_position_ties_with_order_bias(scripted, monkeypatch):
    server, url = scripted(lambda body: answer("A"))
    monkeypatch.setenv("JUDGE_KEY", "secret-123")
    judge = make_judge(pairwise(url, api_key_env="JUDGE_KEY", model="gpt-judge"))
    comparison = judge.compare(TICKET, call("billing"), call("accounts"))
    assert comparison.winner == "tie" and comparison.details == {"answers": ["A", "A"], "order_bias": True}
    (path, headers, first), (_, _, second) = server.seen
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer secret-123"
    assert (first["model"], first["temperature"], first["max_tokens"]) == ("gpt-judge", 0, 4)
    assert first["messages"] == [{"role": "user", "content": render_prompt(
        DEFAULT_PROMPT, TICKET, call("billing"), call("accounts"))}]
    assert 'Response A:\nroute({"queue": "billing"})\nResponse B:\nroute({"queue": "accounts"})' in \
        first["messages"][0]["content"]
    assert second["messages"][0]["content"] == render_prompt(DEFAULT_PROMPT, TICKET, call("accounts"), call("billing"))
    monkeypatch.delenv("JUDGE_KEY")
    with pytest.raises(ConfigError, match="environment variable JUDGE_KEY \\(api_key_env\\) is not set"):
        make_judge(pairwise(url, api_key_env="JUDGE_KEY"))


def test_http_errors_and_malformed_answers_fail_only_their_comparison(scripted):
    def script(body):
        prompt = body["messages"][0]["content"]
        if "refund" in prompt:
            return 500, "overloaded"
        if "invoice" in prompt:
            return 200, "not json"
        if "password" in prompt:
            return answer("Response A is better")
        return answer(" **B**. ") if prompt.index("billing") < prompt.index("technical") else answer("A")

    _, url = scripted(script)
    judge = make_judge(pairwise(url))
    ask = [([{"role": "user", "content": text}], call("technical"), call("billing"), None)
           for text in ("help with refund", "my invoice is wrong", "help with password", "crash problem today")]
    result = label_pairs(judge, ask, max_failure_rate=0.75)
    assert result.counts() == {"n": 4, "decided": 1, "ties": 0, "failed": 3}
    reasons = [c.failed for c in result.comparisons]
    assert reasons[0] == "order ab: HTTP 500: overloaded"
    assert reasons[1].startswith("order ab: malformed response (no choices[0].message): not json")
    assert reasons[2] == "order ab: malformed answer 'Response A is better'; expected exactly 'A' or 'B'"
    assert result.comparisons[3].winner == "a" and result.comparisons[3].details["answers"] == ["A", "B"]


def test_a_pairwise_judge_gives_no_single_score():
    judge = make_judge(pairwise("http://127.0.0.1:9/v1"))
    with pytest.raises(ConfigError, match="compares pairs and gives no score of one answer"):
        judge.score(TICKET, call("billing"))


# ----- the pairwise LLM judge against real served models --------------------------------------------------
def judge_conversations() -> list[list[dict]]:
    """Training data of the tiny judge: for each training ticket, the right call against each wrong call and
    against a refusal, in both positions (so position carries no signal), plus the triage answers themselves.

    Measured (seed 0, hidden 64, 2 layers): with route-against-route pairs alone the loss stays at chance
    (ln 2 per answer) for 600 steps: the answer depends on ticket and call *together*, and nothing in either
    alone; the refusal pairs teach it to tell position A from B, the triage answers which queue a ticket needs.
    """
    out = []
    for text, queue in JUDGE_TRAIN_TICKETS:
        messages = [{"role": "user", "content": text}]
        rejected = [call(q) for q in QUEUE_NAMES if q != queue] + [{"content": "I cannot help with that"}]
        for wrong in rejected:
            for right_first in (True, False):
                a, b = (call(queue), wrong) if right_first else (wrong, call(queue))
                out.append([{"role": "user", "content": render_prompt(COMPACT_PROMPT, messages, a, b)},
                            {"role": "assistant", "content": "A" if right_first else "B"}])
    return out + [[{"role": "user", "content": text}, {"role": "assistant", "content": call_text(queue)}]
                  for text, queue in JUDGE_TRAIN_TICKETS]  # the triage answers of the training tickets only


def _wait_ready(servers, timeout=120.0):
    """Wait until each spawned server's model is ready (they boot in parallel)."""
    for server in servers:
        server.process.wait_healthy(f"{server.url}/v1/models/{server.name}", timeout)


def train_judge(root) -> tuple[object, float]:
    """The tiny judge's agent bundle (its task suite: the held-out judge prompts) and its training time in seconds."""
    import torch

    from rlops_plugin.kinds.agent.create import agent_bundle
    from rlops_plugin.kinds.agent.specs import GraderSpec, TaskEnvSpec
    from rlops_plugin.kinds.agent.tiny_model import TinyModelConfig, build_tiny_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a server boots beside it on 2 cores: one thread each beats two that wait on each other
    started = time.monotonic()
    try:
        checkpoint = build_tiny_model(judge_conversations(), root / "judge-checkpoint",
                                      TinyModelConfig(steps=400, max_length=96, seed=0))
    finally:
        torch.set_num_threads(threads)
    trained_s = time.monotonic() - started
    tasks = tuple({"id": f"pair-{i}", "messages": [{"role": "user", "content": render_prompt(COMPACT_PROMPT, m, a, b)}],
                   "expected": {"content": "A"}} for i, (m, a, b, _) in enumerate(pairs_of(JUDGE_HELD_OUT_TICKETS)))
    graded = GraderSpec(graders=({"name": "expected_answer",
                                  "ref": "rlops_plugin.kinds.agent.graders:expected_tool_call"},))
    return agent_bundle(checkpoint, TaskEnvSpec(name="triage-judge", tasks=tasks), graded,
                        generation={"max_new_tokens": 4}), trained_s


@pytest.fixture(scope="module")
def served(triage_model_dir, tmp_path_factory):
    """A tiny judge model trained on triage judge prompts, and the triage agent, each behind the agent server."""
    from rlops_plugin import flavor
    from rlops_plugin.serving.process import PolicyServerProcess

    root = tmp_path_factory.mktemp("judges")
    args = ["--max_tokens", "8", "--seed", "0", "--traces", "off"]
    triage = PolicyServerProcess(triage_model_dir, root / "triage.log", name="triage", extra_args=args)
    judge = None
    triage.process.start()  # boots while the judge trains
    try:
        bundle, trained_s = train_judge(root)
        flavor.save_model(bundle, root / "judge-model")
        judge = PolicyServerProcess(str(root / "judge-model"), root / "judge.log", name="judge", extra_args=args)
        judge.process.start()
        _wait_ready([judge, triage])
        yield {"judge": judge, "triage": triage, "trained_s": trained_s}
    finally:
        for server in (judge, triage):
            if server is not None:
                server.stop()


@pytest.mark.integration
def test_a_served_tiny_judge_agrees_with_people_on_held_out_tickets(served):
    """Measured (400 steps, 12 held-out pairs, none failed, greedy in both orders): seeds 0, 2, 3 and 4 decided all
    12 as people chose; seed 1 decided 8, 7 as people chose, with 4 ties where the answer changed with the order."""
    url = f"{served['judge'].url}/openai/v1"
    judge = make_judge(pairwise(url, name="tiny-judge", prompt=COMPACT_PROMPT))
    held_out = pairs_of(JUDGE_HELD_OUT_TICKETS)  # tickets (keyword in a template) the judge never saw
    agreement = judge_agreement(judge, held_out)
    print("tiny judge held-out agreement:", agreement.to_dict(), f"trained in {served['trained_s']:.1f}s")
    assert (agreement.n, agreement.failed) == (12, 0)
    assert agreement.agreed >= 6 and agreement.rate >= 0.8, agreement.describe()
    assert all(c.details["order_bias"] for c in agreement.comparisons if c.winner == "tie")
    assert require_agreement(agreement, min_rate=0.8, min_pairs=6) is agreement
    with pytest.raises(JudgeAgreementError, match=re.escape(
            f"judge 'tiny-judge' decided only {agreement.decided} of 12 human-labelled pairs ({agreement.ties} ties, "
            "0 failed), fewer than the required 13; it cannot label training data")):
        require_agreement(agreement, min_rate=0.8, min_pairs=13)
    mislabelled = judge_agreement(judge, [(m, rejected, chosen, t) for m, chosen, rejected, t in held_out])
    assert (mislabelled.decided, mislabelled.agreed) == (agreement.decided, agreement.decided - agreement.agreed)
    with pytest.raises(JudgeAgreementError, match=re.escape(
            f"judge 'tiny-judge' agreed with humans on {mislabelled.describe()}, below the required 80%")):
        require_agreement(mislabelled, min_rate=0.8, min_pairs=6)
    labelled = label_pairs(judge, held_out)
    assert labelled.counts() == {"n": 12, "decided": agreement.decided, "ties": agreement.ties, "failed": 0}
    right = [row for row in labelled.preferences()
             if row["chosen"] == call(QUEUES[next(w for w in QUEUES if w in row["messages"][0]["content"])])]
    assert len(right) == agreement.agreed


@pytest.mark.integration
def test_the_triage_agent_is_no_judge_its_route_calls_fail_every_comparison(served):
    judge = make_judge(pairwise(f"{served['triage'].url}/openai/v1", name="triage-as-judge", model="triage",
                                prompt=COMPACT_PROMPT, max_tokens=8))
    items = human_pairs(TEMPLATES)[:6]
    comparison = judge.compare(*items[0])
    assert comparison.winner is None and "malformed answer" in comparison.failed, comparison
    with pytest.raises(JudgeError, match=r"judge 'triage-as-judge' failed on 6 of 6 pairs \(100%\), above the "
                                         r"allowed 10% \(0 decided, 0 ties\); failures such as: order ab: "
                                         r"malformed answer") as err:
        label_pairs(judge, items)
    assert err.value.result.counts() == {"n": 6, "decided": 0, "ties": 0, "failed": 6}
