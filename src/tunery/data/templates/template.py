"""The chat-template renderer: one declarative :class:`Template` (families.py holds the table of them).

Semantics follow LLaMA-Factory 0.9.x ``data/template.py`` + ``formatter.py`` exactly, so that a migrated run produces the
same ``input_ids`` token for token:

* a *slot* is a tuple of elements: text (with ``{{content}}`` / ``{{idx}}`` placeholders, each filled once), the
  specials :data:`BOS` / :data:`EOS` (the tokenizer's bos/eos id, skipped when the tokenizer has none) or
  :class:`Token` (one token looked up by its text);
* message ``i`` is encoded as: (at ``i == 0``) prefix + system slot filled with ``system + tool description``
  (only when either is non-empty; ``system`` falls back to ``default_system``), then the role's slot;
  llama2-style templates (``system_in_user``) fold the first system slot text into the first user message;
* every text element is tokenized on its own with ``tokenizer.encode(text, add_special_tokens=False)``;
* ``encode_multiturn`` pairs message ids (user/observation, assistant/function); ``encode_oneturn`` joins all but the
  last message into the prompt; reasoning templates add/remove ``<think>`` words as LLaMA-Factory's ReasoningTemplate.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

from ...errors import ConfigError, DataError
from ..records import ASSISTANT, FUNCTION, OBSERVATION, SYSTEM, USER
from .tools import describe_tools, format_function_calls, get_tool_format

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Special:
    """The tokenizer's own bos/eos token (whatever it is after :meth:`Template.fix_tokenizer`)."""

    name: str  # "bos_token" | "eos_token"


@dataclass(frozen=True)
class Token:
    """A single token given by its text, e.g. ``Token("<|user|>")`` (converted with ``convert_tokens_to_ids``)."""

    text: str


BOS = Special("bos_token")
EOS = Special("eos_token")
Element = (str, Special, Token)  # the kinds of slot elements
Slot = tuple  # tuple[Element, ...]

_PLACEHOLDER = re.compile(r"\{\{[a-zA-Z_][a-zA-Z0-9_]*\}\}")
_ROLE_ALIASES = {"human": USER, "gpt": ASSISTANT, "tool": OBSERVATION, "model": ASSISTANT}


def _as_slot(value) -> Slot:
    if value is None:
        return None
    if isinstance(value, (str, Special, Token)):
        return (value,)
    return tuple(value)


def _fill(slot: Slot, **values: str) -> list:
    """StringFormatter.apply: replace the first occurrence of each ``{{name}}``, in keyword order."""
    out = []
    for elem in slot:
        if isinstance(elem, str):
            for name, value in values.items():
                elem = elem.replace("{{" + name + "}}", value or "", 1)
        out.append(elem)
    return out


# ---------------------------------------------------------------- token conversion (with a per-tokenizer cache)
_ACTIVE_CACHES: dict = {}  # id(tokenizer) -> {text or Special/Token element: ids}, only inside token_cache()


def _fast_backend(tokenizer):
    """The Rust tokenizer behind a fast tokenizer, when nothing (truncation, padding) is configured on it."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "encode") and backend.truncation is None and backend.padding is None:
        return backend
    return None


def text_encoder(tokenizer):
    """Return ``f(text) -> ids`` equal to ``tokenizer.encode(text, add_special_tokens=False)``.

    Uses the Rust backend directly for fast tokenizers (no truncation/padding configured on it), which skips the
    Python overhead of ``encode`` but produces the same ids.
    """
    backend = _fast_backend(tokenizer)
    if backend is not None:
        return lambda text: backend.encode(text, add_special_tokens=False).ids
    return lambda text: tokenizer.encode(text, add_special_tokens=False)


def batch_text_encoder(tokenizer):
    """Return ``f(texts) -> [ids, ...]``, each equal to :func:`text_encoder`'s: one call into the Rust tokenizer
    for the whole list (``encode_batch_fast``: no offsets computed, spread over its thread pool unless
    TOKENIZERS_PARALLELISM=false)."""
    backend = _fast_backend(tokenizer)
    if backend is not None:
        batch = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        return lambda texts: [e.ids for e in batch(list(texts), add_special_tokens=False)]
    return lambda texts: tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def tokenize_texts(tokenizer, texts) -> dict[str, list[int]]:
    """{text: ids} for the distinct non-empty ``texts``, from one batched call (to hand to :func:`token_cache`)."""
    unique = [t for t in dict.fromkeys(texts) if t]
    return dict(zip(unique, batch_text_encoder(tokenizer)(unique))) if unique else {}


@contextmanager
def token_cache(tokenizer, known: dict[str, list[int]] | None = None):
    """Within the block, encoding with this tokenizer answers the texts of ``known`` (from :func:`tokenize_texts`:
    the encoders of a chunk of records tokenize its texts in one call first) from it, and computes the ids of fixed
    slot texts (no placeholder), special tokens and named tokens once.

    The caller promises not to change the tokenizer's vocabulary inside the block (encode_dataset does not)."""
    key = id(tokenizer)
    if key in _ACTIVE_CACHES:  # nested: the outer block's cache, and these texts with it
        _ACTIVE_CACHES[key].update(known or {})
        yield
        return
    _ACTIVE_CACHES[key] = dict(known or {})
    try:
        yield
    finally:
        _ACTIVE_CACHES.pop(key, None)


def _token_cache(tokenizer) -> dict | None:
    return _ACTIVE_CACHES.get(id(tokenizer))


_MISSING = object()


def _token_id(tokenizer, elem) -> int | None:
    if isinstance(elem, Token):
        return tokenizer.convert_tokens_to_ids(elem.text)
    return getattr(tokenizer, elem.name + "_id", None)


def special_text(tokenizer, elem: Special) -> str:
    token_id = getattr(tokenizer, elem.name + "_id", None)
    return getattr(tokenizer, elem.name) if token_id is not None else ""


@dataclass(frozen=True)
class Template:
    """A chat template declared as data. Slots default as in LLaMA-Factory's ``register_template``."""

    name: str
    user: Slot = ("{{content}}",)
    assistant: Slot | None = None  # default: content + eos (content only with efficient_eos)
    system: Slot = ("{{content}}",)
    function: Slot | None = None  # default: the assistant slot
    observation: Slot | None = None  # default: the user slot
    prefix: Slot = ()
    separator: Slot = ()  # before each user turn after the first (LLaMA-Factory <= 0.9.1; no 0.9.5 family uses it)
    tool_format: str = "default"  # tool description + function-call text format (tools.py)
    tools: Slot | None = None  # a slot around the tools JSON instead of the tool format's description (phi4_mini)
    tool_call_words: tuple = ("<tool_call>", "</tool_call>")  # a function message may hold thought + wrapped calls
    default_system: str = ""
    stop_words: tuple = ()
    efficient_eos: bool = False
    replace_eos: bool = False
    replace_jinja_template: bool = False
    system_in_user: bool = False  # LLaMA-Factory's Llama2Template
    reasoning: bool = False  # LLaMA-Factory's ReasoningTemplate
    thought_words: tuple = ("<think>\n", "\n</think>\n\n")
    enable_thinking: bool | None = True
    preserve_thinking: bool = False  # keep earlier turns' reasoning (LLaMA-Factory's preserve_thinking)
    empty_thought_close_only: bool = False  # an empty thought is only the closing word (GLM-4.7)
    special_texts: tuple = ()  # (("bos_token", "<|begin_of_text|>"), ...): render() without a tokenizer
    constants: frozenset = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)
        for key in ("user", "assistant", "system", "function", "observation", "prefix", "separator", "tools"):
            put(key, _as_slot(getattr(self, key)))
        if self.assistant is None:
            put("assistant", ("{{content}}",) if self.efficient_eos else ("{{content}}", EOS))
        if self.function is None:
            put("function", self.assistant)
        if self.observation is None:
            put("observation", self.user)
        put("stop_words", tuple(self.stop_words))
        for key in ("user", "assistant", "system", "function", "observation"):
            if not any(isinstance(e, str) and _PLACEHOLDER.search(e) for e in getattr(self, key)):
                raise ConfigError(f"template '{self.name}': the {key} slot needs a {{{{content}}}} placeholder")
        for key in ("prefix", "separator"):
            if any(isinstance(e, str) and _PLACEHOLDER.search(e) for e in getattr(self, key)):
                raise ConfigError(f"template '{self.name}': the {key} slot must not have placeholders")
        if self.replace_eos and not self.stop_words:
            raise ConfigError(f"template '{self.name}': replace_eos needs stop_words")
        get_tool_format(self.tool_format)
        consts = {e for key in ("user", "assistant", "system", "function", "observation", "prefix", "separator")
                  for e in getattr(self, key) if isinstance(e, str) and "{{" not in e}
        consts.add(self.thought_text)
        put("constants", frozenset(consts))

    # ------------------------------------------------------------ variants
    def replace(self, **changes) -> Template:
        """A copy with some fields changed, e.g. ``replace(default_system=..., enable_thinking=False)``."""
        return dataclasses.replace(self, **changes)

    @property
    def thought_text(self) -> str:
        if self.empty_thought_close_only:
            return self.thought_words[1]
        return self.thought_words[0] + self.thought_words[1]

    # ------------------------------------------------------------ elements
    def _elements(self, messages: list[dict], system: str | None, tools: str | None) -> list[list]:
        """Template._encode before tokenization: one element list per message."""
        system = system or self.default_system
        encoded = []
        for i, message in enumerate(messages):
            elements, system_text = [], ""
            if i == 0:
                elements += self.prefix
                if system or tools:
                    if not tools:
                        tool_text = ""
                    elif self.tools is not None:
                        tool_text = _fill(self.tools, content=tools)[0]
                    else:
                        tool_text = describe_tools(self.tool_format, tools)
                    filled = _fill(self.system, content=system + tool_text)
                    if self.system_in_user:
                        system_text = filled[0]
                    else:
                        elements += filled
            elif i % 2 == 0:
                elements += self.separator

            role, content = _role(message), message["content"]
            if role == USER:
                elements += _fill(self.user, content=system_text + content, idx=str(i // 2))
            elif role == ASSISTANT:
                elements += _fill(self.assistant, content=content)
            elif role == OBSERVATION:
                elements += _fill(self.observation, content=content)
            elif role == FUNCTION:
                elements += _fill(self.function, content=self._function_text(content))
            else:
                raise DataError(f"unexpected role '{message['role']}' in message {i}; use user/assistant/function/"
                                "observation (a system prompt goes in the system field)")
            encoded.append(elements)
        return encoded

    def _function_text(self, content: str) -> str:
        thought = None
        if not self.system_in_user and self.tool_call_words:  # thought text + <tool_call>JSON</tool_call>
            start, end = (re.escape(w) for w in self.tool_call_words)
            wrapped = re.search(f"{start}(.*?){end}", content, re.DOTALL)
            if wrapped:
                return content.replace(wrapped.group(0), "") + format_function_calls(self.tool_format, wrapped.group(1))
        if not self.system_in_user:  # LLaMA-Factory passes thought_words only in the base _encode
            pattern = re.compile(f"{re.escape(self.thought_words[0])}(.*?){re.escape(self.thought_words[1])}", re.DOTALL)
            thought = pattern.search(content)
            if thought:
                content = content.replace(thought.group(0), "")
        text = format_function_calls(self.tool_format, content)
        return thought.group(0) + text if thought else text

    def remove_thought(self, content: str) -> str:
        pattern = re.compile(f"{re.escape(self.thought_words[0])}(.*?){re.escape(self.thought_words[1])}", re.DOTALL)
        return re.sub(pattern, "", content).lstrip("\n")

    def _has_thought(self, content: str) -> bool:
        return self.thought_words[0].strip() in content or self.thought_words[1].strip() in content

    def _oneturn_elements(self, messages, system, tools) -> tuple[list, list]:
        messages = [dict(m) for m in messages]
        if self.reasoning:
            for i in range(1, len(messages) - 2, 2) if not self.preserve_thinking else ():
                messages[i]["content"] = self.remove_thought(messages[i]["content"])
            if self.enable_thinking is False:
                messages[-1]["content"] = self.remove_thought(messages[-1]["content"])
        encoded = self._elements(messages, system, tools)
        prompt = [e for elems in encoded[:-1] for e in elems]
        response = list(encoded[-1])
        if self.reasoning and not self._has_thought(messages[-1]["content"]):
            if not self.enable_thinking:
                prompt.append(self.thought_text)
            else:
                response.insert(0, self.thought_text)
        return prompt, response

    def _multiturn_elements(self, messages, system, tools, discard_history_cot: bool = False) -> list[list]:
        if len(messages) % 2 != 0:
            raise DataError(f"a conversation to encode needs prompt/response pairs, got {len(messages)} messages")
        messages = [dict(m) for m in messages]
        if self.reasoning:
            if self.enable_thinking is False:
                for i in range(1, len(messages), 2):
                    messages[i]["content"] = self.remove_thought(messages[i]["content"])
            if discard_history_cot:  # later LLaMA-Factory (mask_history without preserve_thinking)
                for i in range(1, len(messages) - 2, 2):
                    messages[i]["content"] = self.remove_thought(messages[i]["content"])
        encoded = self._elements(messages, system, tools)
        if self.reasoning:
            turns = [len(messages) - 2] if discard_history_cot else range(0, len(messages), 2)
            for i in turns:
                if not self._has_thought(messages[i + 1]["content"]):
                    if not self.enable_thinking:
                        encoded[i].append(self.thought_text)
                    else:
                        encoded[i + 1].insert(0, self.thought_text)
        return encoded

    # ------------------------------------------------------------ ids
    def _to_ids(self, tokenizer, elements: list, encode, cache: dict | None) -> list[int]:
        ids: list[int] = []
        for elem in elements:
            if isinstance(elem, str):
                if not elem:
                    continue
                hit = cache.get(elem) if cache is not None else None
                if hit is None:
                    hit = encode(elem)
                    if cache is not None and elem in self.constants:
                        cache[elem] = hit
                ids += hit
            elif isinstance(elem, (Token, Special)):
                token_id = cache.get(elem, _MISSING) if cache is not None else _MISSING
                if token_id is _MISSING:
                    token_id = _token_id(tokenizer, elem)
                    if cache is not None:
                        cache[elem] = token_id
                if token_id is not None:
                    ids.append(token_id)
                elif isinstance(elem, Token):
                    raise ConfigError(
                        f"template '{self.name}' needs the token {elem.text} that the tokenizer lacks: use the "
                        f"tokenizer of a model of that family, or add it with new_special_tokens: {elem.text} and "
                        "resize_vocab: true (a new, untrained embedding)")
            else:
                raise ConfigError(f"template '{self.name}': bad slot element {elem!r}")
        return ids

    def texts(self, messages: list[dict], system: str | None = None, tools: str | None = None,
              multiturn: bool = True, discard_history_cot: bool = False) -> list[str]:
        """The texts :meth:`encode_multiturn` (or :meth:`encode_oneturn`) tokenizes for these messages, constant slot
        texts left out: what a chunk of records can tokenize in one call (:func:`tokenize_texts`)."""
        if multiturn:
            groups = self._multiturn_elements(messages, system, tools, discard_history_cot)
        else:
            groups = self._oneturn_elements(messages, system, tools)
        return [e for elems in groups for e in elems if isinstance(e, str) and e and e not in self.constants]

    def encode_multiturn(self, tokenizer, messages: list[dict], system: str | None = None,
                         tools: str | None = None, discard_history_cot: bool = False) -> list[tuple[list[int], list[int]]]:
        """(prompt_ids, response_ids) for each user/assistant pair, as LLaMA-Factory's ``encode_multiturn``."""
        encode, cache = text_encoder(tokenizer), _token_cache(tokenizer)
        ids = [self._to_ids(tokenizer, elems, encode, cache)
               for elems in self._multiturn_elements(messages, system, tools, discard_history_cot)]
        return [(ids[i], ids[i + 1]) for i in range(0, len(ids), 2)]

    def encode_oneturn(self, tokenizer, messages: list[dict], system: str | None = None,
                       tools: str | None = None) -> tuple[list[int], list[int]]:
        """(prompt_ids, response_ids): everything before the last message, and the last message."""
        encode, cache = text_encoder(tokenizer), _token_cache(tokenizer)
        prompt, response = self._oneturn_elements(messages, system, tools)
        return self._to_ids(tokenizer, prompt, encode, cache), self._to_ids(tokenizer, response, encode, cache)

    # ------------------------------------------------------------ tokenizer
    def fix_tokenizer(self, tokenizer) -> None:
        """LLaMA-Factory's ``fix_special_tokens``: replace eos by the first stop word (replace_eos), make sure there
        are eos and pad tokens, and register the other stop words as special tokens. Tokens already in the vocabulary
        are reused (nothing to resize); a warning says when new ones were added."""
        stop_words = list(self.stop_words)
        size = len(tokenizer)
        if self.replace_eos:
            _set_eos(tokenizer, stop_words[0])
            stop_words = stop_words[1:]
        if tokenizer.eos_token_id is None:
            _set_eos(tokenizer, "<|endoftext|>")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if stop_words:
            _add_extra_special_tokens(tokenizer, stop_words)
        added = len(tokenizer) - size  # tokens re-registered as special (already in the vocabulary) need no resize
        if added:
            logger.warning("template %s added %d new token(s) to the tokenizer: resize the embeddings", self.name, added)

    def stop_token_ids(self, tokenizer) -> list[int]:
        """eos + the stop words' ids (unique, in that order), for generation."""
        ids = [tokenizer.eos_token_id] + [tokenizer.convert_tokens_to_ids(w) for w in self.stop_words]
        return list(dict.fromkeys(i for i in ids if i is not None))

    # ------------------------------------------------------------ text
    def _special(self, elem: Special, tokenizer) -> str:
        if elem.name == "eos_token" and self.replace_eos:
            return self.stop_words[0]
        if tokenizer is not None:
            return special_text(tokenizer, elem)
        texts = dict(self.special_texts)
        if elem.name not in texts:
            raise ConfigError(f"template '{self.name}' uses the {elem.name}: pass tokenizer= to render it as text")
        return texts[elem.name]

    def _to_text(self, elements: list, tokenizer) -> str:
        parts = []
        for elem in elements:
            if isinstance(elem, str):
                parts.append(elem)
            elif isinstance(elem, Token):
                parts.append(elem.text)
            else:
                parts.append(self._special(elem, tokenizer))
        return "".join(parts)

    def render(self, messages: list[dict], system: str | None = None, tools: str | None = None,
               add_generation_prompt: bool = False, tokenizer=None) -> str:
        """The text the encoders tokenize, for a conversation (``system`` may also come as a first system message;
        HF-style ``tool`` messages and assistant ``tool_calls`` are accepted). A conversation that ends with a user
        turn ends with the assistant header (it is part of the user slot), as for generation; ``add_generation_prompt``
        is accepted for symmetry with ``apply_chat_template``."""
        system, messages = split_system(messages, system)
        if not messages:
            return ""
        if _role(messages[-1]) in (USER, OBSERVATION):
            prompt, _ = self._oneturn_elements(messages + [{"role": ASSISTANT, "content": ""}], system, tools)
            return self._to_text(prompt, tokenizer)
        prompt, response = self._oneturn_elements(messages, system, tools)
        return self._to_text(prompt + response, tokenizer)

    def to_jinja(self, tokenizer=None) -> str:
        """A Jinja chat template rendering what :meth:`render` renders (system, user, assistant and tool/observation
        messages; tool descriptions and function calls are JSON-formatted in Python, so they are left out). Special
        tokens are written as the tokenizer's literal texts, as LLaMA-Factory does."""
        return _JinjaWriter(self, tokenizer).template()


# ---------------------------------------------------------------- helpers
def _role(message: dict) -> str:
    role = message["role"]
    return _ROLE_ALIASES.get(role, role)


def split_system(messages: list[dict], system: str | None = None) -> tuple[str | None, list[dict]]:
    """Take a leading system message out of ``messages``; convert HF tool_calls/tool messages to LF roles."""
    messages = list(messages)
    if messages and messages[0]["role"] == SYSTEM:
        system = messages[0]["content"] if system is None else system
        messages = messages[1:]
    return system, [_to_lf_message(m) for m in messages]


def _to_lf_message(message: dict) -> dict:
    import json

    if message["role"] == ASSISTANT and message.get("tool_calls"):
        calls = []
        for call in message["tool_calls"]:
            fn = call.get("function", call)
            args = fn["arguments"]
            calls.append({"name": fn["name"], "arguments": json.loads(args) if isinstance(args, str) else args})
        return {"role": FUNCTION, "content": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)}
    return {"role": _role(message), "content": message.get("content") or ""}


def _set_eos(tokenizer, eos_token: str) -> int:
    if tokenizer.eos_token == eos_token:
        return 0
    return tokenizer.add_special_tokens({"eos_token": eos_token})


def _add_extra_special_tokens(tokenizer, tokens: list[str]) -> int:
    import inspect

    params = inspect.signature(tokenizer.add_special_tokens).parameters
    if "replace_extra_special_tokens" in params:  # transformers >= 5
        return tokenizer.add_special_tokens({"extra_special_tokens": tokens}, replace_extra_special_tokens=False)
    return tokenizer.add_special_tokens({"additional_special_tokens": tokens}, replace_additional_special_tokens=False)


class _JinjaWriter:
    def __init__(self, template: Template, tokenizer):
        self.t, self.tokenizer = template, tokenizer

    @staticmethod
    def lit(text: str) -> str:
        escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
        return "'" + escaped + "'"

    def expr(self, slot: Slot, content: str = "content") -> str:
        """``a + b + ...`` for a slot: placeholders become variables (first occurrence of each, as _fill)."""
        items, done = [], set()
        for elem in slot:
            if isinstance(elem, Special):
                items.append(self.lit(self.t._special(elem, self.tokenizer)))
                continue
            if isinstance(elem, Token):
                items.append(self.lit(elem.text))
                continue
            for piece in re.split(r"(\{\{content\}\}|\{\{idx\}\})", elem):
                if piece in ("{{content}}", "{{idx}}") and piece not in done:
                    done.add(piece)
                    items.append(content if piece == "{{content}}" else "((loop.index0 // 2) | string)")
                elif piece:
                    items.append(self.lit(piece))
        return " + ".join(items) if items else "''"

    def template(self) -> str:
        t = self.t
        out = [
            "{%- if messages and messages[0]['role'] == 'system' -%}",
            "{%- set system_message = messages[0]['content'] or " + self.lit(t.default_system) + " -%}",
            "{%- set loop_messages = messages[1:] -%}",
            "{%- else -%}{%- set system_message = " + self.lit(t.default_system) + " -%}",
            "{%- set loop_messages = messages -%}{%- endif -%}",
        ]
        if t.reasoning:
            default = "true" if t.enable_thinking is not False else "false"
            out.append("{%- set thinking = enable_thinking if enable_thinking is defined else " + default + " -%}")
        out.append("{%- for message in loop_messages -%}{%- set content = message['content'] or '' -%}")
        out.append("{%- if loop.first -%}{{ " + self.expr(t.prefix) + " }}")
        if not t.system_in_user:
            out.append("{%- if system_message -%}{{ " + self.expr(t.system, "system_message") + " }}{%- endif -%}")
        out.append("{%- elif loop.index0 % 2 == 0 -%}{{ " + self.expr(t.separator) + " }}{%- endif -%}")
        out.append("{%- if message['role'] == 'user' -%}")
        if t.system_in_user:
            first = self.expr(t.system[:1], "system_message")
            out.append("{%- if loop.first and system_message -%}{%- set content = " + first + " + content -%}{%- endif -%}")
        out.append("{{ " + self.expr(t.user) + " }}")
        out.append("{%- elif message['role'] == 'assistant' -%}")
        if t.reasoning:
            end, start = self.lit(t.thought_words[1].strip()), self.lit(t.thought_words[0].strip())
            strip = "{%- set content = content.split(" + self.lit(t.thought_words[1]) + ")[-1].lstrip('\\n') -%}"
            out.append("{%- if not loop.last or not thinking -%}" + strip + "{%- endif -%}")
            out.append("{%- if loop.last and " + start + " not in content and " + end + " not in content -%}"
                       "{%- set content = " + self.lit(t.thought_text) + " + content -%}{%- endif -%}")
        out.append("{{ " + self.expr(t.assistant) + " }}")
        out.append("{%- elif message['role'] in ['tool', 'observation'] -%}{{ " + self.expr(t.observation) + " }}")
        out.append("{%- else -%}{{ raise_exception('role ' + message['role'] + ' is not supported by this template') }}")
        out.append("{%- endif -%}{%- endfor -%}")
        if t.reasoning:
            out.append("{%- if add_generation_prompt and not thinking -%}{{ " + self.lit(t.thought_text) + " }}"
                       "{%- endif -%}")
        return "".join(out)
