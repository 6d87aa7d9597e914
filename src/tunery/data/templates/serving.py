"""Training format = serving format: does a named template encode a conversation as the model's own chat template does?

A model is served with its tokenizer's Jinja chat template (``apply_chat_template``: vLLM, TGI, transformers, Ollama
imports). A named template (LLaMA-Factory's ``llama3``, ``qwen3``, ``phi``, ``llama2``, …) may train another format:
Llama 3.1's "Cutting Knowledge Date" system block, Qwen3's empty think blocks on earlier turns, Phi-3.5's extra "\\n"
token after ``<|end|>`` (replace_eos re-registers the token without its rstrip), Llama 2's spaces around ``[/INST]``.
:func:`serving_probe` encodes sample conversations as served (before the template changes the tokenizer);
:func:`serving_difference` encodes them with the named template and describes the first token where they part.
The serving format is trained with ``template: tokenizer`` (its ids and labels are exactly ``apply_chat_template``'s).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import DataError
from ..records import ASSISTANT, USER

_TURNS = [
    {"role": USER, "content": "Hi there"},
    {"role": ASSISTANT, "content": "Hello! How can I help?"},
    {"role": USER, "content": "What is 2 + 2?"},
    {"role": ASSISTANT, "content": "2 + 2 = 4."},
]
PROBES = ((None, _TURNS), ("You are a helpful assistant.", _TURNS))  # (system, messages)
_SHOWN = 32  # characters of each side shown at the first difference


@dataclass
class ServingProbe:
    system: str | None
    messages: list[dict]
    ids: list[int]  # apply_chat_template of the conversation, tokenized as served


def serving_probe(tokenizer, chat_template_kwargs: dict | None = None) -> list[ServingProbe] | None:
    """The sample conversations encoded as the model serves them; None when the tokenizer has no chat template.
    Call it before ``fix_tokenizer`` (a template that replaces eos may change how the served text tokenizes)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    from .tokenizer_template import TokenizerTemplate

    own = TokenizerTemplate(tokenizer, chat_template_kwargs=chat_template_kwargs)
    probes = []
    for system, messages in PROBES:
        try:
            text = own.render(messages, system=system, tokenizer=tokenizer)
        except DataError:  # e.g. a template without a system role (Gemma 2): that probe is left out
            continue
        probes.append(ServingProbe(system, messages, tokenizer(text, add_special_tokens=False)["input_ids"]))
    return probes


def serving_difference(template, tokenizer, probes: list[ServingProbe] | None) -> str | None:
    """One line saying where ``template`` trains another format than the model's own chat template serves (None when
    every probe encodes the same, when there is nothing to compare, or for ``template: tokenizer`` itself)."""
    from .tokenizer_template import TokenizerTemplate

    if not probes or isinstance(template, TokenizerTemplate):
        return None
    for probe in probes:
        try:
            pairs = template.encode_multiturn(tokenizer, probe.messages, probe.system)
        except Exception:  # noqa: BLE001 - a template that cannot encode the probe says so when it meets the data
            return None
        trained = [i for prompt, response in pairs for i in prompt + response]
        if trained != probe.ids:
            return _describe(template, tokenizer, trained, probe.ids)
    return None


def _describe(template, tokenizer, trained: list[int], served: list[int]) -> str:
    n = next((k for k, (a, b) in enumerate(zip(trained, served)) if a != b), min(len(trained), len(served)))
    before = tokenizer.decode(served[:n])[-_SHOWN:]
    ours, theirs = _show(tokenizer, trained[n:]), _show(tokenizer, served[n:])
    if ours == theirs:  # the same text split into other tokens (e.g. a newline token the served tokenizer absorbs)
        ours, theirs = _pieces(tokenizer, trained[n:]), _pieces(tokenizer, served[n:])
    return (f"template '{template.name}' trains another format than the model's own chat template serves: after "
            f"{before!r} it has {ours} where the model's template has {theirs} — to train in the serving format use "
            "template: tokenizer")


def _show(tokenizer, ids: list[int]) -> str:
    return repr(tokenizer.decode(ids[:_SHOWN])[:_SHOWN]) if ids else "the end"


def _pieces(tokenizer, ids: list[int]) -> str:
    return "tokens " + " ".join(repr(t) for t in tokenizer.convert_ids_to_tokens(ids[:4])) if ids else "the end"
