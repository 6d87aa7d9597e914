"""New tokens (LLaMA-Factory's add_tokens, add_special_tokens, new_special_tokens_config) and how their embeddings
start (init_special_tokens): noise_init (mean of the existing rows plus Gaussian noise of std 1/sqrt(dim)),
desc_init (mean of the embeddings of the token's description), desc_init_w_noise (that plus the noise)."""

from __future__ import annotations

import math
import os
import weakref
from typing import TYPE_CHECKING

from tunery.errors import ConfigError
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

# Tokenizers that gained tokens in this run, and the models whose embeddings were resized for them: a fact the run
# derives while loading, kept with the objects it concerns (the config stays as the user gave it).
_EXTENDED: weakref.WeakSet = weakref.WeakSet()


def mark_vocab_extended(obj) -> None:
    _EXTENDED.add(obj)


def vocab_extended(obj) -> bool:
    """Whether ``obj`` (a tokenizer or a model) had its vocabulary extended by this run."""
    try:
        return obj in _EXTENDED
    except TypeError:  # not weak-referenceable: never marked
        return False


def token_descriptions(path: str | None) -> dict[str, str]:
    """The new_special_tokens_config YAML: a mapping '<token>': 'description'."""
    if not path:
        return {}
    import yaml

    with open(os.path.expanduser(path), encoding="utf-8") as fh:
        try:
            data = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: malformed YAML ({str(err).splitlines()[0]}) — fix new_special_tokens_config")
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: new_special_tokens_config must map each new token to its description "
                          "('<|tok|>': 'what it marks')")
    return {str(k): str(v) for k, v in data.items()}


def add_new_tokens(tokenizer, cfg: Config) -> int:
    """Add the configured tokens to the tokenizer; returns how many were new (then the embeddings are resized)."""
    added = 0
    if cfg.add_tokens:
        added += tokenizer.add_tokens(list(cfg.add_tokens), special_tokens=False)
    special = list(token_descriptions(cfg.new_special_tokens_config)) or list(cfg.add_special_tokens or [])
    if special:
        added += tokenizer.add_tokens(special, special_tokens=True)
    if added:
        logger.info("added %d new token(s) to the tokenizer; embeddings will be resized", added)
    return added


def _init_rows(weight, num_new: int, method: str, descriptions: dict[str, str], tokenizer, embed) -> None:
    """Rows of the new tokens: the mean of the old rows plus noise; with desc_init*, a described token's row is the
    mean of its description's token embeddings (plus the noise for desc_init_w_noise)."""
    import torch

    old = weight[:-num_new]
    noise_std = 1.0 / math.sqrt(weight.size(1))
    weight[-num_new:] = old.mean(0, keepdim=True) + torch.randn_like(weight[-num_new:]) * noise_std
    if method == "noise_init":
        return
    base_vocab = weight.size(0) - num_new
    for token, text in descriptions.items():
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id < base_vocab:
            continue  # already in the vocabulary: keeps its trained row
        ids = [t for t in tokenizer(text, add_special_tokens=False)["input_ids"] if t < base_vocab]
        row = embed[ids].mean(0) if ids else old.mean(0)
        if method == "desc_init_w_noise":
            row = row + torch.randn_like(row) * noise_std
        weight[token_id] = row


def initialise_new_embeddings(model, tokenizer, cfg: Config, num_before: int) -> None:
    """Set the rows of the tokens added after the first `num_before` (input and untied output embeddings)."""
    import torch

    descriptions = token_descriptions(cfg.new_special_tokens_config)
    num_new = len(tokenizer) - num_before
    if num_new <= 0:
        return
    with torch.no_grad():
        inputs = model.get_input_embeddings().weight
        embed = inputs[:num_before].clone()
        rows = inputs[:len(tokenizer)]
        _init_rows(rows, num_new, cfg.init_special_tokens, descriptions, tokenizer, embed)
        output = model.get_output_embeddings()
        if output is not None and output.weight is not inputs:
            _init_rows(output.weight[:len(tokenizer)], num_new, cfg.init_special_tokens, descriptions, tokenizer,
                       embed)
    logger.info("initialised %d new token embedding(s) with %s", num_new, cfg.init_special_tokens)
