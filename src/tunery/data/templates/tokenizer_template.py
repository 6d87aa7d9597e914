"""``template: tokenizer``: encode with the tokenizer's own Jinja chat template (``apply_chat_template``).

The (prompt_ids, response_ids) pairs come from rendering growing prefixes of the conversation: message ``k`` is the
text the rendering of messages ``0..k`` adds to the rendering of messages ``0..k-1`` (user turns rendered with the
generation prompt, so the assistant header belongs to the prompt). This needs a prefix-stable chat template (one
that does not rewrite earlier turns); templates that do (e.g. Qwen3 dropping past reasoning) are reported.
"""

from __future__ import annotations

import json

from ...errors import ConfigError, DataError
from ..records import ASSISTANT, FUNCTION, OBSERVATION, SYSTEM, USER
from .template import split_system, text_encoder


def to_hf_messages(messages: list[dict], system: str | None = None) -> list[dict]:
    """LLaMA-Factory roles -> the messages ``apply_chat_template`` expects (tool_calls, role "tool")."""
    out = [{"role": SYSTEM, "content": system}] if system else []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == FUNCTION:
            try:
                calls = json.loads(content)
            except json.JSONDecodeError:
                raise DataError(f"function message is not valid JSON: {content[:80]!r}") from None
            calls = calls if isinstance(calls, list) else [calls]
            tool_calls = [{"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                          for c in calls]
            out.append({"role": ASSISTANT, "content": "", "tool_calls": tool_calls})
        elif role == OBSERVATION:
            out.append({"role": "tool", "content": content})
        else:
            out.append({"role": role, "content": content})
    return out


class TokenizerTemplate:
    """Same interface as :class:`~tunery.data.templates.Template`, backed by the tokenizer's chat template."""

    name = "tokenizer"
    efficient_eos = False
    replace_eos = False
    replace_jinja_template = False
    reasoning = False
    stop_words: tuple = ()

    def __init__(self, tokenizer=None, default_system: str = "", chat_template_kwargs: dict | None = None):
        self.tokenizer = tokenizer
        self.default_system = default_system or ""
        self.chat_template_kwargs = dict(chat_template_kwargs or {})

    def _tok(self, tokenizer):
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ConfigError("template 'tokenizer' needs a tokenizer")
        if not getattr(tokenizer, "chat_template", None):
            where = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
            raise ConfigError(f"{where} has no chat template, so template: tokenizer cannot be used; "
                              "set template to a named family (e.g. llama3, qwen, default)")
        return tokenizer

    def _apply(self, tokenizer, messages: list[dict], tools, generation: bool) -> str:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                             add_generation_prompt=generation, **self.chat_template_kwargs)

    def _pieces(self, tokenizer, messages: list[dict], system: str | None, tools: str | None) -> list[str]:
        tokenizer = self._tok(tokenizer)
        hf = to_hf_messages(messages, system or self.default_system)
        n_sys = len(hf) - len(messages)
        tool_list = json.loads(tools) if tools else None
        pieces, previous = [], ""
        for k, message in enumerate(messages):
            generation = message["role"] in (USER, OBSERVATION)
            text = self._apply(tokenizer, hf[: n_sys + k + 1], tool_list, generation)
            if not text.startswith(previous):
                raise DataError(
                    f"the chat template of {getattr(tokenizer, 'name_or_path', 'the tokenizer')} rewrites earlier "
                    f"turns (rendering message {k} changes the text before it), so it cannot be split into "
                    "prompt/response pairs; use a named template instead of template: tokenizer")
            pieces.append(text[len(previous):])
            previous = text
        return pieces

    def _ids(self, tokenizer, pieces: list[str]) -> list[list[int]]:
        encode = text_encoder(tokenizer)
        return [encode(p) if p else [] for p in pieces]

    def encode_multiturn(self, tokenizer, messages: list[dict], system: str | None = None,
                         tools: str | None = None, discard_history_cot: bool = False) -> list[tuple[list[int], list[int]]]:
        if len(messages) % 2 != 0:
            raise DataError(f"a conversation to encode needs prompt/response pairs, got {len(messages)} messages")
        tokenizer = self._tok(tokenizer)
        ids = self._ids(tokenizer, self._pieces(tokenizer, messages, system, tools))
        return [(ids[i], ids[i + 1]) for i in range(0, len(ids), 2)]

    def encode_oneturn(self, tokenizer, messages: list[dict], system: str | None = None,
                       tools: str | None = None) -> tuple[list[int], list[int]]:
        tokenizer = self._tok(tokenizer)
        ids = self._ids(tokenizer, self._pieces(tokenizer, messages, system, tools))
        return [i for part in ids[:-1] for i in part], ids[-1]

    def render(self, messages: list[dict], system: str | None = None, tools: str | None = None,
               add_generation_prompt: bool = False, tokenizer=None) -> str:
        tokenizer = self._tok(tokenizer)
        system, messages = split_system(messages, system)
        hf = to_hf_messages(messages, system or self.default_system)
        return self._apply(tokenizer, hf, json.loads(tools) if tools else None, add_generation_prompt)

    def fix_tokenizer(self, tokenizer) -> None:
        if tokenizer.eos_token_id is None:
            tokenizer.add_special_tokens({"eos_token": "<|endoftext|>"})
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def fix_jinja_template(self, tokenizer) -> None:
        self._tok(tokenizer)

    def stop_token_ids(self, tokenizer) -> list[int]:
        return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def to_jinja(self, tokenizer=None) -> str:
        return self._tok(tokenizer).chat_template
