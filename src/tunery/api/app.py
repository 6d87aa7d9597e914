"""`tunery api`: an OpenAI-compatible server (FastAPI + uvicorn) over one chat engine.

Routes: GET /v1/models, POST /v1/chat/completions (plain or SSE streaming, n, stop, tools), POST /v1/score/evaluation
(reward models). Environment: API_HOST (default 127.0.0.1), API_PORT (8000), API_KEY (Bearer token; when set every
route needs it), API_MODEL_NAME (the model id clients see). Generation runs in worker threads (the engine generates
one reply at a time behind its lock), so the event loop keeps answering; every error is an OpenAI-shaped JSON body.
"""

# No `from __future__ import annotations` here: FastAPI reads the route annotations (Request, the request models)
# at definition time, and Request is imported inside create_app.
import os
import secrets
import socket
import time
import uuid
from typing import TYPE_CHECKING, Optional

from tunery.api.protocol import (MAX_BODY_BYTES, MAX_N, ApiError, ChatCompletionRequest, ScoreEvaluationRequest,
                                 check_prompt_size, chunk, completion_body, completion_id, error_body,
                                 generation_overrides, message_body, sse, to_engine_input, usage_chunk)
from tunery.chat.stream import ContextLengthError, NotARewardModel
from tunery.chat.tool_calls import parse_tool_calls
from tunery.errors import TuneryError

if TYPE_CHECKING:
    from tunery.config.loader import Config


def create_app(engine, model_name: str, api_key: Optional[str] = None):
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
    from starlette.exceptions import HTTPException

    app = FastAPI(title="Tunery API", description="OpenAI-compatible chat completions for a Tunery model.")
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    created = int(time.time())
    tool_format = getattr(engine.template, "tool_format", None)

    # ------------------------------------------------------------ errors: OpenAI's shape, the server stays up
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON — " + first.get("msg", "")
        else:
            message = (".".join(loc) + ": " if loc else "") + first.get("msg", "invalid value")
        return JSONResponse(error_body(message, param=".".join(loc) or None), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException):
        code = "not_found" if err.status_code == 404 else None
        return JSONResponse(error_body(str(err.detail), param=None, code=code), status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(ContextLengthError)
    async def _too_long(request: Request, err: ContextLengthError):
        return JSONResponse(error_body(str(err), param="messages", code="context_length_exceeded"), status_code=400)

    @app.exception_handler(TuneryError)
    async def _user_error(request: Request, err: TuneryError):
        return JSONResponse(error_body(str(err)), status_code=400)

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception):
        return JSONResponse(error_body(f"internal error: {type(err).__name__}: {err}", "server_error"),
                            status_code=500)

    # ------------------------------------------------------------ auth
    async def check_key(request: Request) -> None:
        if not api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "Incorrect API key provided — send it as 'Authorization: Bearer <API_KEY>'",
                           code="invalid_api_key")

    guarded = [Depends(check_key)]

    # ------------------------------------------------------------ routes
    @app.get("/v1/models", dependencies=guarded)
    async def list_models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "tunery"}]}

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(request: ChatCompletionRequest):
        if not engine.can_generate:
            raise ApiError(400, "the served model is a reward model (stage: rm) and cannot chat — use "
                                "/v1/score/evaluation", code="model_not_chat")
        if request.n > MAX_N:
            raise ApiError(400, f"n = {request.n} is above this server's limit of {MAX_N} choices per request",
                           param="n")
        system, messages, tools = to_engine_input(request)
        check_prompt_size(system, messages, tools, getattr(engine, "context_length", None))
        overrides = generation_overrides(request)
        cid, model = completion_id(), request.model or model_name
        if request.stream:
            return await _stream(request, cid, model, system, messages, tools, overrides)
        replies = await run_in_threadpool(engine.chat_n, messages, system, tools, n=request.n, **overrides)
        choices = [_choice(i, reply.text, reply.finish_reason, tools) for i, reply in enumerate(replies)]
        return completion_body(cid, model, choices, replies[0].prompt_tokens,
                               sum(r.completion_tokens for r in replies))

    def _choice(index: int, text: str, finish: str, tools: Optional[str]) -> dict:
        parsed = parse_tool_calls(text, tool_format) if tools else None
        if parsed:
            return {"index": index, "message": message_body(parsed[0], parsed[1]), "finish_reason": "tool_calls"}
        return {"index": index, "message": message_body(text, None), "finish_reason": finish}

    async def _stream(request, cid, model, system, messages, tools, overrides):
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        if tools:  # a tool call can only be recognised in the whole reply: generate, then send it as one delta
            replies = await run_in_threadpool(engine.chat_n, messages, system, tools, n=request.n, **overrides)

            async def tool_events():
                for i, reply in enumerate(replies):
                    choice = _choice(i, reply.text, reply.finish_reason, tools)
                    delta = dict(choice["message"])
                    for k, call in enumerate(delta.get("tool_calls") or []):
                        call["index"] = k
                    yield sse(chunk(cid, model, i, delta))
                    yield sse(chunk(cid, model, i, {}, choice["finish_reason"]))
                if include_usage:
                    yield sse(usage_chunk(cid, model, replies[0].prompt_tokens,
                                          sum(r.completion_tokens for r in replies)))
                yield sse("[DONE]")

            return StreamingResponse(tool_events(), media_type="text/event-stream")

        # the first stream is started here so that a bad request is a 400, not an error inside a 200 stream
        first = await run_in_threadpool(engine.stream_chat, messages, system, tools, **overrides)

        async def events():
            completion_tokens, stream = 0, first
            try:
                for index in range(request.n):
                    if index:
                        stream = await run_in_threadpool(engine.stream_chat, messages, system, tools, **overrides)
                    yield sse(chunk(cid, model, index, {"role": "assistant", "content": ""}))
                    async for piece in iterate_in_threadpool(iter(stream)):
                        yield sse(chunk(cid, model, index, {"content": piece}))
                    yield sse(chunk(cid, model, index, {}, stream.finish_reason or "stop"))
                    completion_tokens += stream.completion_tokens
                if include_usage:
                    yield sse(usage_chunk(cid, model, first.prompt_tokens, completion_tokens))
                yield sse("[DONE]")
            except Exception as err:  # noqa: BLE001 - the status line is sent already: report in the stream
                yield sse(error_body(f"generation failed: {type(err).__name__}: {err}", "server_error"))
            finally:
                stream.cancel()  # client gone: stop generating

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/score/evaluation", dependencies=guarded)
    async def score_evaluation(request: ScoreEvaluationRequest):
        try:
            scores = await run_in_threadpool(engine.get_scores, request.messages, request.max_length)
        except NotARewardModel as err:
            raise ApiError(400, f"the served model is not a reward model: {err}", code="model_not_reward") from None
        return {"id": "scoreval-" + uuid.uuid4().hex, "object": "score.evaluation",
                "model": request.model or model_name, "scores": scores}

    return app


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than this server's limit of {limit // 2**20} MiB",
                    code="request_too_large")


class BodyLimit:
    """ASGI middleware: a body above `limit` bytes is refused with 413 — from its Content-Length before any of it is
    read, or, sent without one, as soon as what arrived passes the limit (the app then gets the body replayed)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message.get("type") != "http.request":
                break
            seen += len(message.get("body") or b"")
            if seen > self.limit:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        from starlette.responses import JSONResponse

        err = _too_large(self.limit)
        await JSONResponse(err.body(), status_code=err.status, headers={"Connection": "close"})(scope, receive, send)


def default_model_name(cfg: "Config") -> str:
    source = (cfg.adapter_name_or_path or [cfg.model_name_or_path])[-1]
    return os.path.basename(os.path.normpath(os.path.expanduser(source))) or "tunery"


def server_address() -> tuple[str, int]:
    host = os.environ.get("API_HOST") or "127.0.0.1"
    raw = os.environ.get("API_PORT") or "8000"
    try:
        port = int(raw)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise TuneryError(f"API_PORT = {raw!r} is not a port number — set it to e.g. 8000") from None
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise TuneryError(f"cannot listen on {host}:{port} ({err.strerror}) — another server may use it; set "
                              "API_PORT to a free port (or API_HOST to an address of this machine)") from None
    return host, port


def run_api(cfg: "Config") -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise TuneryError("tunery api needs fastapi and uvicorn — pip install 'tunery[api]'") from None
    from tunery.chat.engine import create_engine

    host, port = server_address()  # refused before the model loads
    engine = create_engine(cfg)
    name = os.environ.get("API_MODEL_NAME") or default_model_name(cfg)
    app = create_app(engine, name, os.environ.get("API_KEY") or None)
    print(f"Serving '{name}' at http://{host}:{port}/v1 — interactive docs at http://{host}:{port}/docs", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=os.environ.get("API_LOG_LEVEL", "info"))
    return 0
