"""``AgentModel``: an agent policy on KServe's OpenAI data plane, every interaction logged before it answers.

KServe registers ``/openai/v1/chat/completions`` and ``/openai/v1/completions`` for any
``OpenAIGenerativeModel``; this one validates the request (400 naming the field and the limit), samples
``n`` completions with their exact log-probabilities, parses tool calls, runs the tool-call guard, writes
an :class:`~rlops_plugin.experience.records.InteractionRecord` to the experience store, hands it to the
MLflow trace mirror (bounded, may drop), and only then answers. The answer carries an ``rlops`` object:
interaction id, policy version, session id and per choice its decision id and log-probabilities.

With a challenger (``--challenger_uri`` or ``POST /rlops/v1/models/NAME/configure``) the same routing as
vector policies applies (:mod:`rlops_plugin.serving.routing`): in ``shadow`` the champion answers and,
after the answer is sent, the challenger answers the same request on its own thread; its completion and
log-probabilities are logged as a ``role="shadow"`` record (``extra.shadow_of`` names the champion's
interaction), never returned, and an error or timeout of the challenger is logged and counted but never
touches the champion's answer. In ``canary`` a share of conversations is answered by the challenger,
sticky per session id (requests without one draw per request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from jinja2 import TemplateError
from kserve.protocol.rest.openai import OpenAIGenerativeModel
from kserve.protocol.rest.openai.errors import create_error_response
from kserve.protocol.rest.openai.types import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatMessage,
    Completion,
    CompletionChoice,
    UsageInfo,
)

from rlops_plugin.errors import ConfigError, InvalidObservationError
from rlops_plugin.experience.records import SHADOW_ROLE, InteractionRecord, decision_id, new_batch_id
from rlops_plugin.serving.guards import ask_tool_guard, guard_active
from rlops_plugin.serving.routing import RoutingConfig, key_position

logger = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant", "tool")
SESSION_HEADER = "x-session-id"


@dataclass(frozen=True)
class AgentServingOptions:
    """Server-side limits of an agent deployment."""

    max_tokens: int = 256
    """Largest ``max_tokens`` a request may ask for (400 above)."""
    default_max_tokens: int = 64
    """``max_tokens`` when a request gives none."""
    max_n: int = 8
    """Most choices per request."""
    time_budget_s: float = 30.0
    """A generation still running after this answers 503 and acknowledges nothing."""


@dataclass
class _Prepared:
    endpoint: str
    messages: list[dict[str, Any]] | None
    prompt: str | None
    prompt_ids: list[int]
    prefix: str
    tools: list[dict[str, Any]]
    tool_choice: Any
    sampling: dict[str, Any]
    session_id: str | None
    metadata: dict[str, Any]


class _Slot:
    """One served agent policy: the loaded model, its system prompt and its own generation thread."""

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded
        self.policy = loaded.bundle.policy
        self.policy_version: str = loaded.policy_version
        self.model_uri: str = loaded.model_uri
        self.system_prompt: str | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlops-generate")

    def load(self) -> _Slot:
        """Load the checkpoint (hashes re-checked) and the system prompt."""
        self.policy.load()
        self.system_prompt = self.policy.system_prompt()
        return self

    def close(self) -> None:
        """Let queued generations finish, then end the thread."""
        self.executor.shutdown(wait=False)


@dataclass(frozen=True)
class _Roles:
    """Champion, challenger and routing, swapped as one object (in-flight requests keep theirs)."""

    champion: _Slot
    challenger: _Slot | None = None
    routing: RoutingConfig = RoutingConfig()


class AgentModel(OpenAIGenerativeModel):
    """Serve an agent bundle with OpenAI chat and text completions; log each interaction durably first."""

    def __init__(self, name: str, champion: Any, store: Any = None, options: Any = None, mirror: Any = None,
                 challenger: Any = None, routing: RoutingConfig | None = None, seed: int | None = None) -> None:
        super().__init__(name)
        self.ready = False
        self.store = store
        self.mirror = mirror
        self.options = options if isinstance(options, AgentServingOptions) else _options_from_args(options)
        if challenger is None and getattr(options, "challenger_uri", None):
            challenger = options.challenger_uri
        if routing is None and options is not None and hasattr(options, "routing"):
            routing = RoutingConfig(mode=options.routing, fraction=float(getattr(options, "canary_fraction", 0.0)))
        self._pending = (champion, challenger, routing or RoutingConfig())
        self._roles: _Roles | None = None
        self._rng = random.Random(seed if seed is not None else getattr(options, "seed", None))
        self.guard_vetoes = 0
        self.timeouts = 0
        self.shadow_answers = 0
        self.shadow_failures = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._valid_schemas: set[str] = set()

    # the champion's view, for callers and the status endpoint
    @property
    def champion(self) -> Any:
        """The champion's loaded model."""
        return self._roles.champion.loaded if self._roles else self._pending[0]

    @property
    def policy(self) -> Any:
        """The champion's agent policy."""
        return self.champion.bundle.policy

    @property
    def model_uri(self) -> str:
        """The champion's model URI."""
        return self.champion.model_uri

    def load(self) -> bool:
        """Load champion (and challenger) checkpoints with every hash re-checked; then mark ready."""
        champion, challenger, routing = self._pending
        self._roles = self._build_roles(champion, challenger, routing, None)
        self.ready = True
        return self.ready

    def _build_roles(self, champion: Any, challenger: Any, routing: RoutingConfig, current: _Roles | None) -> _Roles:
        """Slots for ``champion``/``challenger`` (LoadedModel or URI), reusing the loaded ones by URI."""
        from rlops_plugin.flavor.model import load_model_with_source

        known = {} if current is None else {s.model_uri: s for s in (current.champion, current.challenger) if s}

        def slot(model: Any) -> _Slot:
            uri = model if isinstance(model, str) else model.model_uri
            if uri in known:
                return known[uri]
            loaded = load_model_with_source(model) if isinstance(model, str) else model
            if loaded.bundle.kind != "agent":
                raise ConfigError(f"{uri} is a {loaded.bundle.kind} policy; an agent deployment serves agents")
            return _Slot(loaded).load()

        champion_slot = slot(champion)
        challenger_slot = slot(challenger) if challenger is not None else None
        if challenger_slot is not None and challenger_slot.model_uri == champion_slot.model_uri:
            raise ConfigError(f"challenger and champion are the same model ({champion_slot.model_uri})")
        if challenger_slot is None:
            if routing.mode != "off":
                raise ConfigError(f"routing mode {routing.mode!r} needs a challenger model")
            routing = RoutingConfig()
        return _Roles(champion_slot, challenger_slot, routing)

    def status(self) -> dict[str, Any]:
        """What this model serves right now (``/rlops/v1/status``)."""
        roles = self._roles
        policies = [s.policy_version for s in (roles.champion, roles.challenger) if s] if roles else []
        return {"model": self.name, "ready": self.ready, "kind": "agent", "policies": policies,
                "champion_uri": roles.champion.model_uri if roles else None,
                "challenger_uri": roles.challenger.model_uri if roles and roles.challenger else None,
                "routing": (roles.routing if roles else RoutingConfig()).to_dict(),
                "logging": self.store is not None, "guard_vetoes": self.guard_vetoes, "timeouts": self.timeouts,
                "shadow": {"answers": self.shadow_answers, "failures": self.shadow_failures},
                "limits": {"max_tokens": self.options.max_tokens, "max_n": self.options.max_n,
                           "time_budget_s": self.options.time_budget_s},
                "trace_mirror": self.mirror.stats() if self.mirror is not None else None}

    def reconfigure(self, challenger_uri: str | None = None, routing: RoutingConfig | None = None,
                    exploration: Any = None, model_uri: str | None = None) -> dict[str, Any]:
        """Swap champion or challenger, or change routing, without a restart (``""`` removes the challenger).

        Agents sample with each request's temperature and top_p, so ``exploration`` is refused.
        """
        current = self._roles
        if current is None:
            raise ConfigError(f"model {self.name} is not loaded yet")
        if exploration is not None:
            raise ConfigError("exploration: agents sample with each request's temperature and top_p; "
                              "there is no exploration setting to change")
        champion = model_uri or current.champion.model_uri
        if challenger_uri == "":
            challenger = None
        elif challenger_uri is not None:
            challenger = challenger_uri
        else:
            challenger = current.challenger.model_uri if current.challenger else None
        if challenger is not None and challenger == champion:  # a promotion names the challenger as champion
            challenger = None
        if routing is None:  # unchanged, unless the challenger is gone
            routing = current.routing if challenger is not None else RoutingConfig()
        roles = self._build_roles(champion, challenger, routing, current)
        self._roles = roles
        for old in (current.champion, current.challenger):
            if old is not None and old not in (roles.champion, roles.challenger):
                old.close()
        return self.status()

    def stop(self) -> None:
        """Stop the generation threads (KServe calls this on shutdown)."""
        roles = self._roles
        for slot in (roles.champion, roles.challenger) if roles else ():
            if slot is not None:
                slot.executor.shutdown(wait=False, cancel_futures=True)

    # ----- the two endpoints --------------------------------------------------------------
    async def create_chat_completion(self, request: Any, raw_request: Any = None,
                                     context: dict[str, Any] | None = None) -> Any:
        """``/openai/v1/chat/completions``."""
        return await self._serve(request, raw_request, chat=True)

    async def create_completion(self, request: Any, raw_request: Any = None,
                                context: dict[str, Any] | None = None) -> Any:
        """``/openai/v1/completions`` (a raw text prompt, no chat template, no tools)."""
        return await self._serve(request, raw_request, chat=False)

    async def _serve(self, request: Any, raw_request: Any, chat: bool) -> Any:
        """Validate for the policy routing picks, answer with it; in shadow, the challenger answers afterwards."""
        roles = self._roles
        if roles is None:
            return create_error_response(f"model {self.name} is not loaded", err_type="ServiceUnavailable",
                                         status_code=HTTPStatus.SERVICE_UNAVAILABLE)
        try:
            session = _session(request, raw_request)
            slot, role = self._route(roles, session)
            prepared = self._prepare(request, session, chat, slot)
        except InvalidObservationError as exc:
            return _bad_request(exc)
        answer, record = await self._answer(prepared, request, slot, role)
        if record is not None and roles.routing.mode == "shadow" and roles.challenger is not None:
            task = asyncio.get_running_loop().create_task(
                self._shadow(request, session, chat, roles.challenger, record))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return answer

    def _route(self, roles: _Roles, session: str | None) -> tuple[_Slot, str]:
        """The policy that answers: the challenger for the canary share (sticky per session), else the champion."""
        r = roles.routing
        if r.mode != "canary" or roles.challenger is None or r.fraction == 0.0:
            return roles.champion, "champion"
        draw = key_position(session, r.salt) if session is not None else self._rng.random()
        return (roles.challenger, "challenger") if draw < r.fraction else (roles.champion, "champion")

    async def _shadow(self, request: Any, session: str | None, chat: bool, slot: _Slot, served: InteractionRecord
                      ) -> None:
        """The challenger answers the request the champion answered; logged as a shadow record, never returned."""
        started, tick = time.time(), time.monotonic()
        choices: list[dict[str, Any]] = []
        error = None
        prepared = None
        try:
            prepared = self._prepare(request, session, chat, slot)
            generated = await self._generate(prepared, slot)
            if generated is None:
                error = f"timeout: over the time budget of {self.options.time_budget_s} s"
            else:
                choices = [self._choice(i, g, prepared, slot, count=False) for i, g in enumerate(generated)]
        except Exception as exc:  # noqa: BLE001 - whatever the challenger does, the champion's answer stands
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            self.shadow_failures += 1
            logger.warning("shadow challenger %s failed on %s: %s", slot.policy_version, served.interaction_id, error)
        else:
            self.shadow_answers += 1
        record = InteractionRecord(
            interaction_id=new_batch_id(), ts=started, model=self.name, policy_version=slot.policy_version,
            endpoint=served.endpoint, request=_request_json(prepared) if prepared else served.request,
            choices=choices, session_id=session, latency_ms=(time.monotonic() - tick) * 1000.0,
            usage={"prompt_tokens": len(prepared.prompt_ids) if prepared else 0,
                   "completion_tokens": sum(c["completion_tokens"] for c in choices)},
            role=SHADOW_ROLE, extra={"shadow_of": served.interaction_id, "error": error})
        if self.store is not None:
            try:
                await self.store.log_interactions_async([record])
            except Exception as exc:  # noqa: BLE001 - a lost shadow record was never acknowledged to anyone
                self.shadow_failures += 1
                logger.warning("shadow record of %s not logged: %s", served.interaction_id, exc)

    # ----- validation -----------------------------------------------------------------------
    def _prepare(self, request: Any, session: str | None, chat: bool, slot: _Slot) -> _Prepared:
        """The request checked and rendered for ``slot``'s policy (its system prompt, template and context)."""
        if getattr(request, "stream", False):
            raise InvalidObservationError("stream: streaming is not supported (each interaction is logged before "
                                          "it is answered)")
        metadata = (request.model_extra or {}).get("metadata") or {}
        policy = slot.policy
        sampling = self._sampling(request, policy)
        _refuse_unsupported(request)
        if chat:
            messages = self._messages(request.messages, slot.system_prompt)
            tools = self._tools(request.tools, policy)
            tool_choice, prefix = self._tool_choice(request.tool_choice, tools, policy)
            try:
                prompt_ids = policy.render(messages, tools, prefix)
            except (TemplateError, ValueError, TypeError) as exc:  # e.g. a template's raise_exception on role order
                raise InvalidObservationError(f"messages: the model's chat template refused the transcript "
                                              f"({exc})") from None
            prompt = None
        else:
            prompt = request.prompt
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if not isinstance(prompt, str) or not prompt:
                raise InvalidObservationError("prompt: one non-empty string")
            messages, tools, tool_choice, prefix = None, [], None, ""
            _, tokenizer = policy.load()
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        context = policy.context_length
        if len(prompt_ids) + sampling["max_tokens"] > context:
            field = "messages" if chat else "prompt"
            raise InvalidObservationError(f"{field}: the prompt is {len(prompt_ids)} tokens; with max_tokens "
                                          f"{sampling['max_tokens']} it exceeds the model's context of {context} "
                                          "tokens")
        return _Prepared("chat.completions" if chat else "completions", messages, prompt, prompt_ids, prefix, tools,
                         tool_choice, sampling, session, dict(metadata))

    def _sampling(self, request: Any, policy: Any) -> dict[str, Any]:
        defaults = policy.agent.get("generation") or {}
        limit = self.options.max_tokens
        fields = request.__dict__  # reading the deprecated max_tokens attribute warns; the value is still valid
        max_tokens = fields.get("max_completion_tokens") or fields.get("max_tokens")
        if max_tokens is None:
            max_tokens = min(defaults.get("max_new_tokens", self.options.default_max_tokens), limit)
        if not 1 <= max_tokens <= limit:
            raise InvalidObservationError(f"max_tokens: {max_tokens} is outside 1..{limit} (the server's limit, "
                                          "--max_tokens)")
        n = request.n if request.n is not None else 1
        if not 1 <= n <= self.options.max_n:
            raise InvalidObservationError(f"n: {n} is outside 1..{self.options.max_n} (the server's limit, --max_n)")
        temperature = request.temperature if request.temperature is not None else defaults.get("temperature", 1.0)
        top_p = request.top_p if request.top_p is not None else defaults.get("top_p", 1.0)
        if not 0.0 <= temperature <= 2.0:
            raise InvalidObservationError(f"temperature: {temperature} is outside 0..2")
        if not 0.0 < top_p <= 1.0:
            raise InvalidObservationError(f"top_p: {top_p} is outside (0, 1]")
        return {"n": n, "temperature": float(temperature), "top_p": float(top_p), "max_tokens": int(max_tokens),
                "seed": request.seed}

    def _messages(self, messages: Any, system_prompt: str | None) -> list[dict[str, Any]]:
        if not messages:
            raise InvalidObservationError("messages: at least one message is required")
        out = []
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            message = dict(message)
            role = message.get("role")
            if role not in ROLES:
                raise InvalidObservationError(f"{where}.role: {role!r} is not one of {list(ROLES)}")
            content = _text(message.get("content"), f"{where}.content")
            item: dict[str, Any] = {"role": role, "content": content}
            calls = message.get("tool_calls")
            if calls:
                if role != "assistant":
                    raise InvalidObservationError(f"{where}.tool_calls: only assistant messages carry tool calls")
                item["tool_calls"] = [_openai_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
            elif content is None:
                raise InvalidObservationError(f"{where}.content: text is required for role {role!r}")
            if role == "tool" and message.get("tool_call_id") is not None:
                item["tool_call_id"] = str(message["tool_call_id"])
            out.append(item)
        if system_prompt and out[0]["role"] != "system":
            out.insert(0, {"role": "system", "content": system_prompt})
        return out

    def _tools(self, tools: Any, policy: Any) -> list[dict[str, Any]]:
        from jsonschema import SchemaError
        from jsonschema.validators import validator_for

        if not tools:
            return policy.tools
        out = []
        for i, tool in enumerate(tools):
            tool = tool.model_dump(exclude_none=True) if hasattr(tool, "model_dump") else dict(tool)
            function = tool.get("function") or {}
            name = function.get("name")
            if tool.get("type", "function") != "function" or not isinstance(name, str) or not name:
                raise InvalidObservationError(f"tools[{i}]: a function tool with a name")
            parameters = function.get("parameters") or {"type": "object"}
            key = json.dumps(parameters, sort_keys=True)
            if key not in self._valid_schemas:  # clients send the same few schemas on every request
                try:
                    validator_for(parameters).check_schema(parameters)
                except SchemaError as exc:
                    raise InvalidObservationError(f"tools[{i}].function.parameters: not a valid JSON Schema "
                                                  f"({exc.message})") from None
                if len(self._valid_schemas) < 1024:
                    self._valid_schemas.add(key)
            out.append({"type": "function", "function": {**function, "parameters": parameters}})
        return out

    def _tool_choice(self, choice: Any, tools: list[dict[str, Any]], policy: Any) -> tuple[Any, str]:
        """The tool choice and the text prefilled to honour it (a forced call starts the answer)."""
        if hasattr(choice, "model_dump"):
            choice = choice.model_dump(exclude_none=True)
        names = [t["function"]["name"] for t in tools]
        if choice in (None, "auto", "none"):
            return choice or "auto", ""
        if choice == "required":
            if not tools:
                raise InvalidObservationError("tool_choice: 'required' needs tools")
            return choice, policy.call_prefix(None)
        name = (choice.get("function") or {}).get("name") if isinstance(choice, Mapping) else None
        if name is None:
            raise InvalidObservationError(f"tool_choice: 'none', 'auto', 'required' or a function, got {choice!r}")
        if name not in names:
            raise InvalidObservationError(f"tool_choice: names the unknown tool {name!r}; offered: {names}")
        return choice, policy.call_prefix(name)

    # ----- generation, logging, answer ------------------------------------------------------
    async def _generate(self, prepared: _Prepared, slot: _Slot) -> list[Any] | None:
        """``n`` completions on ``slot``'s thread; None when the time budget ran out."""
        deadline = time.monotonic() + self.options.time_budget_s
        s = prepared.sampling
        try:
            generated = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(
                    slot.executor, lambda: slot.policy.generate(
                        prepared.prompt_ids, n=s["n"], temperature=s["temperature"], top_p=s["top_p"],
                        max_new_tokens=s["max_tokens"], deadline=deadline, seed=s["seed"])),
                timeout=self.options.time_budget_s + 5.0)
        except TimeoutError:
            return None
        return None if any(g.finish_reason == "timeout" for g in generated) else generated

    async def _answer(self, prepared: _Prepared, request: Any, slot: _Slot, role: str
                      ) -> tuple[Any, InteractionRecord | None]:
        started = time.time()
        tick = time.monotonic()
        generated = await self._generate(prepared, slot)
        if generated is None:
            self.timeouts += 1
            return create_error_response(
                f"generation exceeded the server's time budget of {self.options.time_budget_s} s "
                "(--time_budget_s); nothing was logged, retry", err_type="ServiceUnavailable",
                status_code=HTTPStatus.SERVICE_UNAVAILABLE), None
        choices = [self._choice(i, g, prepared, slot) for i, g in enumerate(generated)]
        latency_ms = (time.monotonic() - tick) * 1000.0
        record = InteractionRecord(
            interaction_id=new_batch_id(), ts=started, model=self.name, policy_version=slot.policy_version,
            endpoint=prepared.endpoint, request=_request_json(prepared), choices=choices,
            session_id=prepared.session_id, latency_ms=latency_ms, role=role,
            usage={"prompt_tokens": len(prepared.prompt_ids),
                   "completion_tokens": sum(c["completion_tokens"] for c in choices)})
        if self.store is not None:
            await self.store.log_interactions_async([record])
        if self.mirror is not None:
            self.mirror.submit(record)
        return self._response(record, request), record

    def _choice(self, index: int, generated: Any, prepared: _Prepared, slot: _Slot, count: bool = True
                ) -> dict[str, Any]:
        """One choice: text, parsed tool calls, log-probabilities, and the tool-call guard's vetoes."""
        text = prepared.prefix + slot.policy.decode(generated.token_ids)
        content, calls = (slot.policy.parse_tool_calls(text) if prepared.endpoint == "chat.completions"
                          and prepared.tool_choice != "none" else (text, []))
        tool_calls = [{"id": f"call_{secrets.token_hex(8)}", **c} for c in calls]
        choice = {"index": index, "content": content, "tool_calls": tool_calls,
                  "finish_reason": "tool_calls" if tool_calls and generated.finish_reason == "stop"
                  else generated.finish_reason,
                  "logprob": generated.logprob, "model_logprob": generated.model_logprob,
                  "completion_tokens": len(generated.token_ids), "vetoes": []}
        if tool_calls and guard_active():
            context = {"model": self.name, "policy_version": slot.policy_version,
                       "session_id": prepared.session_id, "messages": prepared.messages, "tools": prepared.tools,
                       "metadata": prepared.metadata}
            substitute = None
            for call in tool_calls:
                verdict = ask_tool_guard({"name": call["name"], "arguments": call["arguments"]}, context)
                if verdict is not None:
                    substitute = verdict.action if substitute is None else substitute
                    choice["vetoes"].append({"tool": call["name"], "arguments": call["arguments"],
                                             "reason": verdict.reason})
            if substitute is not None:
                self.guard_vetoes += count
                choice.update(proposed={"content": content, "tool_calls": tool_calls}, content=substitute,
                              tool_calls=[], finish_reason="stop", logprob=None)
        return choice

    def _response(self, record: InteractionRecord, request: Any) -> Any:
        created = int(record.ts)
        usage = UsageInfo(prompt_tokens=record.usage["prompt_tokens"],
                          completion_tokens=record.usage["completion_tokens"],
                          total_tokens=record.usage["prompt_tokens"] + record.usage["completion_tokens"])
        rlops = {"interaction_id": record.interaction_id, "policy_version": record.policy_version,
                 "session_id": record.session_id,
                 "choices": [{"index": c["index"], "decision_id": decision_id(record.interaction_id, c["index"]),
                              "logprob": c["logprob"], "model_logprob": c["model_logprob"],
                              "vetoed": bool(c["vetoes"])} for c in record.choices]}
        if record.endpoint == "completions":
            return Completion(id=f"cmpl-{record.interaction_id}", created=created, model=self.name, usage=usage,
                              choices=[CompletionChoice(index=c["index"], text=c["content"] or "",
                                                        finish_reason=c["finish_reason"]) for c in record.choices],
                              rlops=rlops)
        choices = []
        for c in record.choices:
            calls = [{"id": t["id"], "type": "function",
                      "function": {"name": t["name"], "arguments": json.dumps(t["arguments"])}}
                     for t in c["tool_calls"]]
            message = ChatMessage(role="assistant", content=c["content"], tool_calls=calls)
            choices.append(ChatCompletionChoice(index=c["index"], message=message, finish_reason=c["finish_reason"]))
        return ChatCompletion(id=f"chatcmpl-{record.interaction_id}", created=created, model=self.name,
                              choices=choices, usage=usage, rlops=rlops)


_UNSUPPORTED = ("stop", "logit_bias", "response_format", "presence_penalty", "frequency_penalty", "logprobs",
                "top_logprobs", "echo", "suffix", "best_of", "use_beam_search", "top_k", "min_p",
                "repetition_penalty", "stop_token_ids", "min_tokens", "ignore_eos", "prompt_logprobs",
                "structured_outputs", "allowed_token_ids", "bad_words")


def _session(request: Any, raw_request: Any) -> str | None:
    """The conversation's session id: ``metadata.session_id``, the ``x-session-id`` header, or ``user``."""
    metadata = (request.model_extra or {}).get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InvalidObservationError("metadata: a JSON object")
    headers = getattr(raw_request, "headers", None) or {}
    session = metadata.get("session_id") or headers.get(SESSION_HEADER) or getattr(request, "user", None)
    if session is not None and (not isinstance(session, str) or len(session) > 200):
        raise InvalidObservationError("metadata.session_id: a string up to 200 characters")
    return session


def _request_json(prepared: _Prepared) -> dict[str, Any]:
    """What the policy saw, as logged."""
    return {"messages": prepared.messages, "prompt": prepared.prompt, "tools": prepared.tools,
            "tool_choice": prepared.tool_choice, "sampling": prepared.sampling, "metadata": prepared.metadata}


def _refuse_unsupported(request: Any) -> None:
    """A 400 for a sampling or output option this server would otherwise ignore (the log must say what ran)."""
    fields = request.__dict__
    for name in _UNSUPPORTED:
        if name in request.model_fields_set and fields.get(name) not in (None, False, 0, [], {}, ""):
            raise InvalidObservationError(f"{name}: not supported by the rlops agent server (supported: tools, "
                                          "tool_choice, n, temperature, top_p, max_tokens, seed, user, metadata)")


def _text(content: Any, where: str) -> str | None:
    """Message content as text: a string, or a list of text parts; anything else is refused."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidObservationError(f"{where}[{j}]: only text parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise InvalidObservationError(f"{where}: text is required, got {type(content).__name__}")


def _openai_call(call: Any, where: str) -> dict[str, Any]:
    call = dict(call)
    function = call.get("function") or {}
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise InvalidObservationError(f"{where}.function.name: required")
    return {"id": call.get("id"), "type": "function",
            "function": {"name": function["name"], "arguments": function.get("arguments") or "{}"}}


def _bad_request(exc: InvalidObservationError) -> Any:
    message = str(exc)
    return create_error_response(message, err_type="BadRequestError", param=message.split(":", 1)[0],
                                 status_code=HTTPStatus.BAD_REQUEST)


def _options_from_args(args: Any) -> AgentServingOptions:
    if args is None:
        return AgentServingOptions()
    defaults = AgentServingOptions()
    options = AgentServingOptions(
        max_tokens=getattr(args, "max_tokens", defaults.max_tokens),
        default_max_tokens=min(getattr(args, "default_max_tokens", defaults.default_max_tokens),
                               getattr(args, "max_tokens", defaults.max_tokens)),
        max_n=getattr(args, "max_n", defaults.max_n),
        time_budget_s=getattr(args, "time_budget_s", defaults.time_budget_s))
    if options.max_tokens < 1 or options.max_n < 1 or options.time_budget_s <= 0:
        raise ConfigError(f"agent serving limits must be positive: {options}")
    return options
