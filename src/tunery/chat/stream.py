"""What every chat engine shares: the reply record, the streaming handle, stop-string trimming, input checks."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from tunery.errors import DataError, TuneryError

PROMPT_ROLES = ("user", "observation")
REPLY_ROLES = ("assistant", "function")


@dataclass
class Response:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"


class ContextLengthError(TuneryError):
    """The prompt alone does not fit in the model's context."""

    def __init__(self, prompt_tokens: int, context: int):
        super().__init__(f"the prompt is {prompt_tokens} tokens but the model's context is {context} tokens — "
                         "shorten the conversation (drop earlier turns) or the system prompt")
        self.prompt_tokens, self.context = prompt_tokens, context


class NotARewardModel(TuneryError):
    """Scoring asked of a model that generates text."""


def check_messages(messages: list[dict]) -> None:
    """A conversation to answer: user/observation turns at even places, assistant/function at odd, ending with a
    prompt turn. Raises DataError naming the first problem."""
    if not messages:
        raise DataError("the conversation is empty — give at least one user message")
    for i, message in enumerate(messages):
        role = message.get("role")
        expected = PROMPT_ROLES if i % 2 == 0 else REPLY_ROLES
        if role not in expected:
            raise DataError(f"message {i} has role '{role}' where {' or '.join(expected)} is expected — turns "
                            "alternate user (or tool result) / assistant, starting and ending with a user turn")


class StopTrimmer:
    """Cut generated text at the first stop string; while streaming, hold back a tail that may begin one."""

    def __init__(self, stops: Optional[list[str]]):
        self.stops = [s for s in (stops or []) if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self.buffer += text
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.buffer, self.stopped = self.buffer[:min(hits)], "", True
            return out
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.buffer)), hold, -1):
                if self.buffer.endswith(stop[:k]):
                    hold = k
                    break
        cut = len(self.buffer) - hold
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out

    def trim(self, text: str) -> str:
        return self.feed(text) + self.flush()


class Stream:
    """A reply being generated: iterate it for text pieces. When the iteration ends, `completion_tokens`,
    `finish_reason`, `elapsed` and `tokens_per_second` are set. `cancel()` stops the generation early (closing the
    iterator does too)."""

    def __init__(self, prompt_tokens: int):
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: Optional[str] = None
        self.text = ""
        self.elapsed = 0.0
        self.cancelled = threading.Event()
        self._source: Optional[Iterator[str]] = None
        self._start = time.perf_counter()

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.elapsed if self.elapsed > 0 else 0.0

    def __iter__(self) -> Iterator[str]:
        if self._source is None:
            raise RuntimeError("this stream was already consumed")
        source, self._source = self._source, None
        self._start = time.perf_counter()
        try:
            for piece in source:
                if piece:
                    self.text += piece
                    yield piece
        finally:
            self.cancel()  # a consumer that stops early (client gone) stops the generation
            self.elapsed = time.perf_counter() - self._start

    def response(self) -> Response:
        """Consume the rest and return the whole reply."""
        if self._source is not None:
            for _ in self:
                pass
        return Response(self.text, self.prompt_tokens, self.completion_tokens, self.finish_reason or "stop")
