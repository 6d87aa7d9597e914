"""LLaMA Pro (Wu et al. 2024): a model expanded by copying blocks (each copy's output projections zeroed, so it starts
as the identity) is fine-tuned on the copies only. With ``use_llama_pro``, freeze_trainable_layers is the number of
expanded blocks; they sit at every ``num_layers // freeze_trainable_layers``-th position (the last of each group),
as LLaMA-Factory's expansion script places them."""

from __future__ import annotations

import re

from tunery.errors import TuneryError


def expanded_layer_ids(num_layers: int, num_expanded: int) -> range:
    if num_expanded <= 0 or num_layers % num_expanded:
        raise TuneryError(f"use_llama_pro: the model has {num_layers} layers, which is not a multiple of "
                          f"freeze_trainable_layers {num_expanded} (the number of expanded blocks) — set it to the "
                          "number of blocks the expansion added")
    stride = num_layers // num_expanded
    return range(stride - 1, num_layers + stride - 1, stride)


def expanded_modules(model, targets: list[str], num_expanded: int) -> list[str]:
    """Full module names of the `targets` linear layers inside the expanded blocks (for LoRA/OFT target_modules)."""
    ids = set(expanded_layer_ids(model.config.num_hidden_layers, num_expanded))
    pattern = re.compile(r"\.layers\.(\d+)\.")
    names = []
    for name, _ in model.named_modules():
        match = pattern.search(name + ".")
        if match and int(match.group(1)) in ids and name.split(".")[-1] in targets:
            names.append(name)
    return names
