"""rlops routes added to KServe's FastAPI app: feedback, CloudEvents, status, deployment control.

Also a body-size limit (413) and the mapping of store failures to 503 (not acknowledged,
retry), so bad input never surfaces as a 500.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from rlops_plugin.bundle.strict import load_dataclass
from rlops_plugin.errors import BrokenPolicyError, ConfigError, InvalidObservationError, RLOpsError
from rlops_plugin.experience.cloudevents import PolicyCatalog, ingest_cloudevent
from rlops_plugin.experience.feedback import parse_feedback_body
from rlops_plugin.experience.store import ExperienceStore, StoreError
from rlops_plugin.serving import openapi
from rlops_plugin.serving.exploration import ExplorationConfig
from rlops_plugin.serving.routing import RoutingConfig

DEFAULT_MAX_BODY_BYTES = 8 << 20


def json_response(data: Any, status_code: int = 200) -> Response:
    """A JSON response serialized with orjson (NaN becomes null)."""
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status_code,
                    media_type="application/json")


@dataclass(frozen=True)
class ConfigureRequest:
    """Body of ``POST /rlops/v1/models/{name}/configure``: what to change (absent: unchanged)."""

    model_uri: str | None = None
    challenger_uri: str | None = None
    routing: dict[str, Any] | None = None
    exploration: dict[str, Any] | None = None


def _field_name(loc: Any) -> str:
    """``messages[0].content`` from pydantic's ``("body", "messages", 0, "ChatCompletionUserMessageParam", ...)``."""
    out = ""
    for part in loc:
        if part == "body" or (isinstance(part, str) and (part[:1].isupper() or part in ("str", "list", "dict"))):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


class BodyLimitMiddleware:
    """Answer 413 for bodies over ``limit`` bytes (declared or streamed) without reading them all."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.limit:
                await self._reject(send, int(declared))
                return
            await self.app(scope, receive, send)  # the HTTP parser enforces the declared length
            return
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(seen)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge as exc:
            if not started:
                await self._reject(send, exc.size)

    async def _reject(self, send: Any, size: int) -> None:
        body = orjson.dumps({"error": f"body: {size} bytes exceed the limit of {self.limit} bytes "
                                      "(server option --max_body_bytes)"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


STORE_RETRY_AFTER_S = 1
"""``Retry-After`` of a 503 for a store fault: a held lock or a full disk is usually a matter of moments."""


def install(app: FastAPI, models: dict[str, Any], store: ExperienceStore | None, max_body_bytes: int) -> None:
    """Add the rlops routes, limits and error mapping to KServe's app."""
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)

    async def store_failed(_request: Request, exc: StoreError) -> Response:
        response = json_response({"error": f"experience store unavailable, nothing was acknowledged: {exc}"},
                                 status_code=503)
        response.headers["Retry-After"] = str(STORE_RETRY_AFTER_S)
        return response

    app.add_exception_handler(StoreError, store_failed)

    async def policy_broken(_request: Request, exc: BrokenPolicyError) -> Response:
        return json_response({"error": f"BrokenPolicyError: {exc}; nothing was logged"}, status_code=503)

    app.add_exception_handler(BrokenPolicyError, policy_broken)

    async def key_conflict(_request: Request, exc: RLOpsError) -> Response:
        return json_response({"error": f"IdempotencyConflict: {exc}"}, status_code=409)

    from rlops_plugin.serving.model import IdempotencyConflict

    app.add_exception_handler(IdempotencyConflict, key_conflict)

    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith("/openai/"):
            return await request_validation_exception_handler(request, exc)
        first = exc.errors()[0] if exc.errors() else {}
        text = str(first.get("msg", "invalid request"))
        named = re.search(r"\(parameter=([\w.\[\]]+)\)", text)  # vllm's model validators name the field so
        field = named.group(1) if named else _field_name(first.get("loc", ()))
        message = f"{field}: {re.sub(r'^Value error, ', '', text)}"
        return json_response({"error": {"message": message, "type": "BadRequestError", "param": field,
                                        "code": "400"}}, status_code=400)

    app.add_exception_handler(RequestValidationError, invalid_request)

    def bad(message: str, status: int = 400) -> Response:
        return json_response({"error": message}, status_code=status)

    async def read_json(request: Request) -> Any:
        body = await request.body()
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidObservationError(f"body: invalid JSON ({exc})") from None

    registry = bool(os.environ.get("MLFLOW_TRACKING_URI"))
    looked_up = PolicyCatalog(registry=registry)

    def catalog() -> PolicyCatalog:
        """The served policies (as they are now, after any /configure), then the registry when one is set."""
        known = {}
        for model in models.values():
            engine = getattr(model, "decider", None)
            for loaded in (getattr(engine, "champion", None), getattr(engine, "challenger", None)):
                if loaded is not None:
                    known[loaded.policy_version] = loaded.bundle.policy
        looked_up.known = known
        return looked_up

    @app.post("/v1/feedback", **openapi.FEEDBACK_ROUTE)
    async def feedback(request: Request) -> Response:
        """Rewards, ratings, corrections and outcomes for decision ids (idempotent)."""
        if store is None:
            return bad("this server runs without an experience store (--store)", 409)
        try:
            events = parse_feedback_body(await read_json(request), request.headers.get("idempotency-key"))
        except InvalidObservationError as exc:
            return bad(str(exc))
        statuses = await store.add_feedback_async(events)
        results = [{"decision_id": e.decision_id, "idempotency_key": e.idempotency_key, "status": s}
                   for e, s in zip(events, statuses, strict=True)]
        if "conflict" in statuses:  # the others are committed; the conflicting ones were not stored
            return json_response({"error": "idempotency_key reused for different feedback: the first stands",
                                  "results": results}, status_code=409)
        return json_response({"results": results})

    @app.post("/v1/cloudevents", status_code=202, **openapi.CLOUDEVENTS_ROUTE)
    async def cloudevents(request: Request) -> Response:
        """KServe logger CloudEvents (request/response pairs) and ``rlops.feedback`` events."""
        if store is None:
            return bad("this server runs without an experience store (--store)", 409)
        body = await request.body()
        try:
            import asyncio

            result = await asyncio.get_running_loop().run_in_executor(
                None, ingest_cloudevent, store, dict(request.headers), body, catalog())
        except InvalidObservationError as exc:
            return bad(str(exc))
        return json_response(result, status_code=202)

    @app.get("/rlops/v1/status", **openapi.STATUS_ROUTE)
    async def status() -> Response:
        """Models, policy versions, routing and store counts."""
        return json_response({"models": [m.status() for m in models.values()],
                               "store": store.stats() if store is not None else None})

    @app.post("/rlops/v1/models/{name}/configure", **openapi.CONFIGURE_ROUTE)
    async def configure(name: str, request: Request) -> Response:
        """Change champion, challenger, routing or exploration without a restart."""
        model = models.get(name)
        if model is None:
            return bad(f"model {name!r} not found; served: {sorted(models)}", 404)
        try:
            body = load_dataclass(ConfigureRequest, await read_json(request), "body", InvalidObservationError)
            routing = load_dataclass(RoutingConfig, body.routing, "routing", InvalidObservationError) \
                if body.routing else None
            exploration = load_dataclass(ExplorationConfig, body.exploration, "exploration",
                                         InvalidObservationError) if body.exploration else None
            import asyncio

            result = await asyncio.get_running_loop().run_in_executor(
                None, lambda: model.reconfigure(challenger_uri=body.challenger_uri, routing=routing,
                                                exploration=exploration, model_uri=body.model_uri))
        except (InvalidObservationError, ConfigError) as exc:
            return bad(str(exc))
        except RLOpsError as exc:
            return bad(f"{type(exc).__name__}: {exc}", 422)
        return json_response(result)
