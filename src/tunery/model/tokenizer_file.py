"""A model folder's ``tokenizer.json`` is what tokenizes.

transformers (5.x) may rebuild a tokenizer instead of loading the folder's ``tokenizer.json``: for some model types
it overrides the saved tokenizer class (qwen2: digits split one by one), and it rebuilds ``LlamaTokenizerFast``
folders with its own normalizer/pre-tokenizer (spaces change). After ``AutoTokenizer`` loads, its encoding of a few
probe texts is compared with the ``tokenizers`` library reading ``tokenizer.json`` directly; where they differ the
tokenizer is loaded from ``tokenizer.json`` as saved (``PreTrainedTokenizerFast``, with the folder's special tokens
and chat template from ``tokenizer_config.json``) and one line says so.
"""

from __future__ import annotations

from typing import Any

from tunery.utils.logging import get_logger

logger = get_logger(__name__)

# Spaces (leading, doubled, tabs, new lines), digits, CJK and punctuation: where rebuilt tokenizers differ.
PROBES = (
    "105 + 2048 = 2153; 3.14159",
    " leading space and  two spaces",
    "tabs\tand\nnew lines\n\n  indented",
    "你好，世界！今天天气很好。日本語のテキスト、한국어",
    "Hello World! don't 'quote' (x) [y] {z} <a> a-b_c/d",
    "end with spaces   ",
)


def _tokenizer_file(path: str, hub_kwargs: dict[str, Any]) -> str | None:
    from transformers.utils import cached_file

    try:
        return cached_file(path, "tokenizer.json", _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False,
                           **{k: v for k, v in hub_kwargs.items() if k in ("cache_dir", "revision", "token")})
    except (OSError, ValueError):
        return None


def differing_probe(tokenizer, reference) -> str | None:
    """The first probe text that ``tokenizer`` encodes differently from ``reference`` (a tokenizers.Tokenizer)."""
    for text in PROBES:
        if tokenizer.encode(text, add_special_tokens=False) != reference.encode(text, add_special_tokens=False).ids:
            return text
    return None


def as_saved(tokenizer, path: str, load_kwargs: dict[str, Any], hub_kwargs: dict[str, Any]):
    """``tokenizer``, or the folder's tokenizer.json loaded as saved where the two disagree on the probes."""
    if not getattr(tokenizer, "is_fast", False):
        return tokenizer  # use_fast: false asked for the slow (sentencepiece) tokenizer
    file = _tokenizer_file(path, hub_kwargs)
    if not file:
        return tokenizer
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(file)
    text = differing_probe(tokenizer, reference)
    if text is None:
        return tokenizer
    from transformers import PreTrainedTokenizerFast

    faithful = PreTrainedTokenizerFast.from_pretrained(path, **load_kwargs, **hub_kwargs)
    if differing_probe(faithful, reference) is not None:
        return tokenizer  # transformers changes it either way: keep its choice rather than a half-way one
    got = tokenizer.convert_ids_to_tokens(tokenizer.encode(text, add_special_tokens=False))[:8]
    want = [reference.id_to_token(i) for i in reference.encode(text, add_special_tokens=False).ids][:8]
    logger.warning("%s: transformers rebuilt the tokenizer as %s, which tokenizes %r as %s instead of %s like the "
                   "folder's tokenizer.json — using tokenizer.json as saved", path, type(tokenizer).__name__,
                   text[:24], "|".join(got), "|".join(want))
    return faithful
