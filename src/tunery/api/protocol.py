"""The OpenAI chat-completions wire format: request models (pydantic), conversion to the engine's messages, and the
response / chunk / error bodies."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Bounds on one request, checked before anything is tokenized (README, "Security").
MAX_N = 8  # choices per request
MAX_BODY_BYTES = 8 * 2**20  # request body (413 above it)
MAX_MESSAGES = 1024  # messages per request
MAX_STOP = 16  # stop strings per request (OpenAI allows 4)
MAX_STOP_CHARS = 256  # characters per stop string
MAX_CHARS_PER_TOKEN = 32  # a prompt longer than context_length * this cannot fit: refused without tokenizing


class ApiError(Exception):
    """An OpenAI-shaped error answer."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str = "invalid_request_error", param: Optional[str] = None,
               code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# ---------------------------------------------------------------- requests
class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionSpec(_Model):
    name: str
    arguments: Union[str, dict]


class ToolCallSpec(_Model):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionSpec


class ContentPart(_Model):
    type: str
    text: Optional[str] = None


class Message(_Model):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCallSpec]] = None
    tool_call_id: Optional[str] = None


class StreamOptions(_Model):
    include_usage: bool = False


class ChatCompletionRequest(_Model):
    model: str = ""
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    stop: Union[str, list[str], None] = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    tools: Optional[list[dict]] = None
    tool_choice: Union[str, dict, None] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    seed: Optional[int] = None
    user: Optional[str] = None

    @field_validator("stop")
    @classmethod
    def _bounded_stop(cls, value):
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings per request, got {len(stops)}")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop string may have at most {MAX_STOP_CHARS} characters")
        return value


class ScoreEvaluationRequest(_Model):
    model: str = ""
    messages: list[str] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_length: Optional[int] = Field(None, ge=1)


# ---------------------------------------------------------------- request -> engine input
def _text(message: Message, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type != "text":
            raise ApiError(400, f"messages[{index}]: content part of type '{part.type}' is not supported — this "
                                "server handles text only", param=f"messages[{index}].content")
        texts.append(part.text or "")
    return "".join(texts)


def to_engine_input(request: ChatCompletionRequest) -> tuple[Optional[str], list[dict], Optional[str]]:
    """(system, messages, tools JSON) for the engine. Tool results become observation turns (several in a row are
    joined as a JSON list); assistant tool_calls become function turns."""
    system_parts: list[str] = []
    messages: list[dict] = []
    for i, message in enumerate(request.messages):
        role = message.role
        if role in ("system", "developer"):
            if messages:
                raise ApiError(400, f"messages[{i}]: a system message must come before the conversation",
                               param=f"messages[{i}].role")
            system_parts.append(_text(message, i))
        elif role == "user":
            messages.append({"role": "user", "content": _text(message, i)})
        elif role == "assistant" and message.tool_calls:
            calls = []
            for call in message.tool_calls:
                args = call.function.arguments
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except json.JSONDecodeError:
                        raise ApiError(400, f"messages[{i}].tool_calls: arguments of '{call.function.name}' are not "
                                            "valid JSON", param=f"messages[{i}].tool_calls") from None
                calls.append({"name": call.function.name, "arguments": args})
            messages.append({"role": "function", "content": json.dumps(calls[0] if len(calls) == 1 else calls,
                                                                       ensure_ascii=False)})
        elif role == "assistant":
            messages.append({"role": "assistant", "content": _text(message, i)})
        else:  # tool / function results
            text = _text(message, i)
            if messages and messages[-1]["role"] == "observation":
                previous = messages[-1]
                results = previous.setdefault("_results", [previous["content"]])
                results.append(text)
                previous["content"] = json.dumps(results, ensure_ascii=False)
            else:
                messages.append({"role": "observation", "content": text})
    for message in messages:
        message.pop("_results", None)
    if not messages:
        raise ApiError(400, "messages holds no user message — add one", param="messages")
    tools = None
    if request.tools and request.tool_choice != "none":
        tools = json.dumps(request.tools, ensure_ascii=False)
    system = "\n".join(system_parts) if system_parts else None
    return system, messages, tools


def check_prompt_size(system: Optional[str], messages: list[dict], tools: Optional[str],
                      context_length: Optional[int]) -> None:
    """Refuse, without tokenizing, a prompt with more characters than the context could hold at MAX_CHARS_PER_TOKEN."""
    if not context_length:
        return
    chars = len(system or "") + len(tools or "") + sum(len(m["content"]) for m in messages)
    if chars > context_length * MAX_CHARS_PER_TOKEN:
        raise ApiError(400, f"the messages hold {chars} characters, far more than the model's context of "
                            f"{context_length} tokens can take — shorten them", param="messages",
                       code="context_length_exceeded")


def generation_overrides(request: ChatCompletionRequest) -> dict[str, Any]:
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    return {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_new_tokens": request.max_completion_tokens or request.max_tokens,
        "stop": stop or None,
    }


# ---------------------------------------------------------------- responses
def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def message_body(text: str, calls) -> dict:
    if calls:
        return {"role": "assistant", "content": text or None, "tool_calls": [
            {"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}} for call in calls]}
    return {"role": "assistant", "content": text}


def completion_body(cid: str, model: str, choices: list[dict], prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chunk(cid: str, model: str, index: int, delta: dict, finish_reason: Optional[str] = None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]}


def usage_chunk(cid: str, model: str, prompt_tokens: int, completion_tokens: int) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def sse(data: Union[dict, str]) -> str:
    return "data: " + (data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)) + "\n\n"
