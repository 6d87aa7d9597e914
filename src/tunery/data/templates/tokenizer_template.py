"""``template: tokenizer``: encode with the model's own Jinja chat template (``apply_chat_template``).

The whole conversation is rendered once, so ``input_ids`` are exactly ``apply_chat_template(conversation)`` — also for
templates that rewrite history (Qwen3 drops earlier turns' reasoning), open a think block in the generation prompt
(DeepSeek-R1) or append tokens after the last message (Phi-3.5's ``<|endoftext|>``). The trained spans are found:

* from ``{% generation %}`` markers, where the template has them (``return_assistant_tokens_mask``);
* otherwise per assistant turn: it starts where the rendering stops agreeing with the generation prompt of the
  conversation before it, and it ends after the template's end-of-turn text (found once per template by rendering a
  probe conversation), else after the message's content; a tool call ends no later than where the conversation
  closed after it stops agreeing with the whole (Gemma 4 keeps call, tool response and answer in one turn).

Tokens are mapped to those character spans through the fast tokenizer's offsets. A turn that cannot be located raises
a :class:`DataError` saying why (the record is dropped and counted).
"""

from __future__ import annotations

import json
import os
import re

from ...errors import ConfigError, DataError
from ..records import ASSISTANT, FUNCTION, OBSERVATION, SYSTEM, USER
from .template import split_system

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")
_SENTINEL = "Tunery-probe-7f3a"  # an assistant text no template rewrites


def to_hf_messages(messages: list[dict], system: str | None = None) -> list[dict]:
    """LLaMA-Factory roles -> the messages ``apply_chat_template`` expects (OpenAI tool_calls, role "tool")."""
    out = [{"role": SYSTEM, "content": system}] if system else []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == FUNCTION:
            try:
                calls = json.loads(content)
            except json.JSONDecodeError:
                raise DataError(f"function message is not valid JSON {content[:80]!r}") from None
            calls = calls if isinstance(calls, list) else [calls]
            tool_calls = []
            for call in calls:
                if not isinstance(call, dict) or "name" not in call:
                    raise DataError(f"function message needs 'name' and 'arguments' {content[:80]!r}")
                args = call.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = json.loads(args)
                    except json.JSONDecodeError:
                        pass
                tool_calls.append({"type": "function", "function": {"name": call["name"], "arguments": args}})
            out.append({"role": ASSISTANT, "content": "", "tool_calls": tool_calls})
        elif role == OBSERVATION:
            out.append({"role": "tool", "content": content})
        else:
            out.append({"role": role, "content": content})
    return out


def openai_tools(tools) -> list[dict] | None:
    """A JSON list of tool schemas (LLaMA-Factory's bare ``{"name", "parameters"}`` or OpenAI's) in OpenAI format."""
    if not tools:
        return None
    parsed = json.loads(tools) if isinstance(tools, str) else tools
    if isinstance(parsed, dict):
        parsed = [parsed]
    return [t if isinstance(t, dict) and t.get("type") == "function" and "function" in t
            else {"type": "function", "function": t} for t in parsed] or None


def _common_prefix(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


class TokenizerTemplate:
    """Same interface as :class:`~tunery.data.templates.Template`, backed by a Jinja chat template: the tokenizer's
    own, or ``chat_template`` when given."""

    efficient_eos = False
    replace_eos = False
    replace_jinja_template = False
    reasoning = False
    stop_words: tuple = ()

    def __init__(self, tokenizer=None, default_system: str = "", chat_template_kwargs: dict | None = None,
                 chat_template: str | None = None, name: str = "tokenizer"):
        self.tokenizer = tokenizer
        self.default_system = default_system or ""
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.chat_template = chat_template
        self.name = name
        self._eot_cache: dict = {}

    # ------------------------------------------------------------ rendering
    def _tok(self, tokenizer):
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ConfigError(f"template '{self.name}' needs a tokenizer")
        if not self.chat_template and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"{self._where(tokenizer)} has no chat template, so template: tokenizer cannot be used; "
                              "set template to a named family (e.g. llama3, qwen, default)")
        return tokenizer

    def _where(self, tokenizer) -> str:
        if self.chat_template:
            return f"template '{self.name}'"
        return f"the chat template of {getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'}"

    def jinja(self, tokenizer) -> str:
        return self.chat_template or tokenizer.chat_template

    def _apply(self, tokenizer, messages: list[dict], tools, generation: bool, **kw):
        try:
            return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, chat_template=self.jinja(tokenizer),
                                                 add_generation_prompt=generation, **self.chat_template_kwargs, **kw)
        except Exception as err:  # noqa: BLE001 - Jinja's TemplateError, or a TypeError/KeyError inside the template
            text = " ".join(str(err).split()) or type(err).__name__
            raise DataError(f"{self._where(tokenizer)} fails to render this conversation ({text})") from None

    def render(self, messages: list[dict], system: str | None = None, tools: str | None = None,
               add_generation_prompt: bool = False, tokenizer=None) -> str:
        tokenizer = self._tok(tokenizer)
        system, messages = split_system(messages, system)
        hf = to_hf_messages(messages, system or self.default_system)
        return self._apply(tokenizer, hf, openai_tools(tools), add_generation_prompt)

    # ------------------------------------------------------------ the end-of-turn text
    def end_of_turn(self, tokenizer) -> str:
        """The text the template puts right after an assistant message's content (e.g. ``<|eot_id|>``,
        ``<|im_end|>``, `` </s>``): what both a closing and a continued conversation have there, cut after its last
        special token (a newline after ``<|im_end|>`` belongs to the next turn)."""
        key = id(tokenizer)
        if key not in self._eot_cache:
            self._eot_cache[key] = self._probe_end_of_turn(tokenizer)
        return self._eot_cache[key]

    def _probe_end_of_turn(self, tokenizer) -> str:
        user = {"role": USER, "content": "Hi"}
        said = {"role": ASSISTANT, "content": _SENTINEL}
        try:
            closed = self._apply(tokenizer, [user, said], None, False)
            continued = self._apply(tokenizer, [user, said, {"role": USER, "content": "Again"}], None, False)
        except DataError:
            return ""
        if _SENTINEL not in closed or _SENTINEL not in continued:
            return ""
        after_closed = closed[closed.rindex(_SENTINEL) + len(_SENTINEL):]
        after_continued = continued[continued.rindex(_SENTINEL) + len(_SENTINEL):]
        common = after_closed[:_common_prefix(after_closed, after_continued)]
        specials = sorted(set(getattr(tokenizer, "all_special_tokens", [])) | set(_added_texts(tokenizer)),
                          key=len, reverse=True)
        last = -1
        for token in specials:
            if token and token in common:
                last = max(last, common.rindex(token) + len(token))
        return common[:last] if last >= 0 else common.rstrip()

    def stop_token_ids(self, tokenizer) -> list[int]:
        """eos + the special tokens that end an assistant turn in this template (``<|eot_id|>``, ``<|im_end|>``,
        ``<|end|>``, ``<end_of_turn>``…): where chat and api stop."""
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        eot = self.end_of_turn(self._tok(tokenizer))
        if eot:
            specials = set(getattr(tokenizer, "all_special_tokens", [])) | set(_added_texts(tokenizer))
            enc = tokenizer(eot, add_special_tokens=False)["input_ids"]
            ids += [i for i in enc if tokenizer.convert_ids_to_tokens(i) in specials]
        return list(dict.fromkeys(ids))

    # ------------------------------------------------------------ spans
    def _spans(self, tokenizer, hf: list[dict], tools, text: str, turns: list[int]) -> list[tuple[int, int]]:
        """(start, end) character spans of the assistant messages ``hf[j]`` for j in ``turns`` within ``text``."""
        eot = self.end_of_turn(tokenizer)
        spans, cursor = [], 0
        for n, j in enumerate(turns):
            generation = self._apply(tokenizer, hf[:j], tools, True)
            start = max(min(_common_prefix(generation, text), self._header_end(tokenizer, hf[:j], tools, text)),
                        cursor)
            if start < cursor or (start == cursor and n > 0 and not text[cursor:]):
                raise DataError(self._cannot(tokenizer, n, "its generation prompt is not where the conversation has "
                                                           "it"))
            content = hf[j].get("content") or ""
            core = content.split("</think>")[-1].strip()
            end = -1
            if eot:
                found = text.find(eot, start)
                if found >= 0:
                    end = found + len(eot)
            if end < 0 and core:
                found = text.find(core, start)
                if found >= 0:
                    end = found + len(core)
            names = [call["function"]["name"] for call in hf[j].get("tool_calls") or []]
            if names:  # a call may not end the turn (Gemma 4: call, response, answer in one turn): it ends where
                # the conversation closed after it stops agreeing with the whole one, if that is past the call
                bound = _common_prefix(self._apply(tokenizer, hf[:j + 1], tools, False), text)
                past = text.find(names[-1], start)
                if past >= 0 and bound >= past + len(names[-1]) and (end < 0 or bound < end):
                    end = bound
                if end < 0 or any(name not in text[start:end] for name in names):
                    raise DataError(self._cannot(tokenizer, n, "the template renders its tool call without the "
                                                               "function's name (it has no tool-call format)"))
            if end < 0:
                raise DataError(self._cannot(tokenizer, n, "neither its text nor an end-of-turn follows its "
                                                           "generation prompt"))
            if core and core not in text[start:end] and not hf[j].get("tool_calls"):
                raise DataError(self._cannot(tokenizer, n, "the template renders it without its text (e.g. a "
                                                           "template that keeps only the last turns)"))
            spans.append((start, end))
            cursor = end
        return spans

    def _header_end(self, tokenizer, before: list[dict], tools, text: str) -> int:
        """Where a probe answer after ``before`` starts, if the rendering agrees with ``text`` up to there: a
        generation prompt that opens a think block (``<think>``) may share its first characters with the answer
        (``<｜tool▁calls▁begin｜>``), and the span must not start inside them."""
        try:
            probe = self._apply(tokenizer, before + [{"role": ASSISTANT, "content": _SENTINEL}], tools, False)
        except DataError:
            return len(text)
        at = probe.find(_SENTINEL)
        return at if at >= 0 and text.startswith(probe[:at]) else len(text)

    def _cannot(self, tokenizer, n: int, why: str) -> str:
        return (f"cannot find assistant turn {n + 1} in {self._where(tokenizer)} rendering — {why}; "
                "use a named template (template: NAME) for such records")

    def _marked(self, tokenizer, hf, tools) -> tuple[list[int], list[tuple[int, int]]] | None:
        """ids and token spans from ``{% generation %}`` markers (None when the template has none)."""
        if not _GENERATION.search(self.jinja(tokenizer)):
            return None
        try:
            out = tokenizer.apply_chat_template(hf, tools=tools, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True, chat_template=self.jinja(tokenizer),
                                                **self.chat_template_kwargs)
        except Exception:  # noqa: BLE001 - slow tokenizers cannot map characters to tokens: use the text spans
            return None
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        spans, start = [], None
        for i, m in enumerate(mask + [0]):
            if m and start is None:
                start = i
            elif not m and start is not None:
                spans.append((start, i))
                start = None
        return ids, spans

    def split(self, tokenizer, messages: list[dict], system: str | None = None,
              tools: str | None = None) -> tuple[list[int], list[tuple[int, int]]]:
        """(input_ids of the whole conversation, a (start, end) token span per assistant/function message)."""
        tokenizer = self._tok(tokenizer)
        hf = to_hf_messages(messages, system or self.default_system)
        n_sys = len(hf) - len(messages)
        turns = [n_sys + k for k, m in enumerate(messages) if m["role"] in (ASSISTANT, FUNCTION)]
        tool_list = openai_tools(tools)
        marked = self._marked(tokenizer, hf, tool_list)
        if marked is not None and len(marked[1]) == len(turns):
            return marked
        text = self._apply(tokenizer, hf, tool_list, False)
        char_spans = self._spans(tokenizer, hf, tool_list, text, turns)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        spans, i = [], 0
        for a, b in char_spans:
            while i < len(ids) and offsets[i][1] <= a:
                i += 1
            first = i
            while i < len(ids) and offsets[i][0] < b:
                i += 1
            spans.append((first, i))
        return ids, spans

    # ------------------------------------------------------------ the encoder interface
    def encode_multiturn(self, tokenizer, messages: list[dict], system: str | None = None,
                         tools: str | None = None, discard_history_cot: bool = False) -> list[tuple[list[int], list[int]]]:
        """(prompt_ids, response_ids) per assistant turn; the text after the last turn (if any) comes as a last
        ``(ids, None)`` pair: in input_ids, never trained."""
        if len(messages) % 2 != 0:
            raise DataError(f"a conversation to encode needs prompt/response pairs, got {len(messages)} messages")
        ids, spans = self.split(tokenizer, messages, system, tools)
        pairs, previous = [], 0
        for a, b in spans:
            pairs.append((ids[previous:a], ids[a:b]))
            previous = b
        if previous < len(ids):
            pairs.append((ids[previous:], None))
        return pairs

    def encode_oneturn(self, tokenizer, messages: list[dict], system: str | None = None,
                       tools: str | None = None) -> tuple[list[int], list[int]]:
        """Everything before the last assistant turn, and that turn to the end of the conversation."""
        ids, spans = self.split(tokenizer, messages, system, tools)
        start = spans[-1][0] if spans else len(ids)
        return ids[:start], ids[start:]

    def encode_prompt(self, tokenizer, messages: list[dict], system: str | None = None,
                      tools: str | None = None) -> list[int]:
        """The generation prompt for ``messages`` (ending with a user/observation turn), as served."""
        tokenizer = self._tok(tokenizer)
        hf = to_hf_messages(messages, system or self.default_system)
        text = self._apply(tokenizer, hf, openai_tools(tools), True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def check_jinja(self, tokenizer) -> None:
        """A chat template that is not valid Jinja stops the run in one line (rendering errors of single records are
        their drop reasons)."""
        import jinja2

        try:
            tokenizer.apply_chat_template([{"role": USER, "content": "Hi"}], tokenize=False, add_generation_prompt=True,
                                          chat_template=self.jinja(tokenizer), **self.chat_template_kwargs)
        except jinja2.TemplateSyntaxError as err:
            raise ConfigError(f"{self._where(tokenizer)} is not valid Jinja (line {err.lineno}: {err.message}) — fix "
                              "its chat_template, or use a named template (template: NAME)") from None
        except Exception:  # noqa: BLE001 - e.g. a template that needs a system message: each record says so
            pass

    def fix_tokenizer(self, tokenizer) -> list[str]:
        self.check_jinja(self._tok(tokenizer))
        added = []
        if tokenizer.eos_token_id is None:
            tokenizer.add_special_tokens({"eos_token": "<|endoftext|>"})
            added.append("<|endoftext|>")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return added

    def to_jinja(self, tokenizer=None) -> str:
        return self.jinja(self._tok(tokenizer))


def _added_texts(tokenizer) -> list[str]:
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return [str(t) for t in decoder.values() if getattr(t, "special", True)]
