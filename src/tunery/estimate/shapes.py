"""What the data and the model config say about a run: batch shapes over an epoch, steps, parameter counts.

Parameters are counted on a model built on the ``meta`` device from its config (exact, no memory, no weights), the
trainable ones by walking the modules the method touches (LoRA's targets, freeze's layers).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunery.config.loader import Config


@dataclass
class BatchShapes:
    """Per micro-batch: ``rows`` sequences of ``length`` tokens (padding-free: 1 row of all examples' tokens)."""

    examples: int
    steps: int
    micro_batches_per_step: int
    mean_tokens: float  # tokens per micro-batch (padded: rows × longest), averaged over the epoch
    peak_rows: int
    peak_length: int  # the micro-batch with the most tokens: its rows and length
    trained_share: float
    padding_free: bool

    @property
    def peak_tokens(self) -> int:
        return self.peak_rows * self.peak_length


def example_lengths(examples) -> tuple[list[int], int, int]:
    """(sequence lengths, trained tokens, all tokens); a preference pair counts as its two sequences' rows."""
    from tunery.data.records import IGNORE_INDEX

    lengths, trained, total = [], 0, 0
    for i in range(len(examples)):
        ex = examples[i]
        for prefix in ("chosen_", "rejected_", "") if "chosen_input_ids" in ex else ("",):
            ids = ex.get(prefix + "input_ids")
            if ids is None:
                continue
            lengths.append(len(ids))
            labels = ex.get(prefix + "labels")
            total += len(ids)
            if labels is not None:
                trained += sum(1 for t in labels if t != IGNORE_INDEX)
    return lengths, trained, total


def batch_shapes(lengths: list[int], per_device: int, accumulation: int, world: int, epochs: float,
                 max_steps: int, padding_free: bool, rows_per_example: int, seed: int = 42) -> BatchShapes:
    """Simulate one epoch's random micro-batches (as the Trainer's sampler draws them) from the lengths alone."""
    n_examples = len(lengths) // rows_per_example
    micro_per_epoch = math.ceil(n_examples / (per_device * world))  # each rank's dataloader length
    if max_steps and max_steps > 0:
        steps = max_steps
    else:  # transformers: update steps per epoch = dataloader length // accumulation (at least 1)
        steps = max(1, math.ceil(max(1, micro_per_epoch // accumulation) * epochs))
    order = list(range(n_examples))
    random.Random(seed).shuffle(order)
    batches = []
    for start in range(0, n_examples, per_device):
        chosen = order[start:start + per_device]
        seqs = [lengths[i * rows_per_example + k] for i in chosen for k in range(rows_per_example)]
        batches.append((1, sum(seqs)) if padding_free else (len(seqs), max(seqs)))
    tokens = [r * n for r, n in batches] or [0]
    peak = max(batches, key=lambda b: b[0] * b[1]) if batches else (1, 1)
    mean_tokens = sum(tokens) / len(tokens)
    return BatchShapes(examples=n_examples, steps=steps, micro_batches_per_step=accumulation,
                       mean_tokens=mean_tokens, peak_rows=peak[0], peak_length=peak[1], trained_share=0.0,
                       padding_free=padding_free)


@dataclass
class ParamCounts:
    total: int
    trainable: int
    embedding: int  # input embeddings + untied output head
    layers: int
    hidden: int
    vocab: int
    intermediate: int
    heads: int


def meta_model(cfg: Config, num_layers: int | None = None):
    """The model skeleton on the meta device (nothing allocated); ``num_layers`` overrides the depth."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(os.path.expanduser(cfg.model_name_or_path),
                                        trust_remote_code=cfg.trust_remote_code, cache_dir=cfg.cache_dir,
                                        revision=cfg.model_revision, token=cfg.hf_hub_token)
    config = getattr(config, "text_config", None) or config
    if num_layers is not None:
        config.num_hidden_layers = num_layers
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _lora_targets(model, cfg: Config) -> list:
    import torch

    targets = list(cfg.lora_target or ["all"])
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or "lm_head" in name or "score" in name:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if targets == ["all"] or leaf in targets:
            out.append(module)
    return out


def count_params(cfg: Config, model) -> ParamCounts:
    config = model.config
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    if head is not None and head.weight is not model.get_input_embeddings().weight:
        embed += head.weight.numel()
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    if cfg.finetuning_type == "lora":
        rank = int(cfg.lora_rank or 8)
        trainable = sum(rank * (m.in_features + m.out_features) for m in _lora_targets(model, cfg))
        if cfg.additional_target:
            trainable += sum(p.numel() for n, p in model.named_parameters()
                             if any(t in n for t in cfg.additional_target))
    elif cfg.finetuning_type == "freeze":
        n = int(cfg.freeze_trainable_layers or 2)
        chosen = range(layers - n, layers) if n > 0 else range(0, -n)
        trainable = sum(p.numel() for name, p in model.named_parameters()
                        if any(f".layers.{i}." in name for i in chosen))
    else:
        trainable = total
    return ParamCounts(total=total, trainable=trainable, embedding=embed, layers=layers,
                       hidden=int(getattr(config, "hidden_size", 0) or 0),
                       vocab=int(getattr(config, "vocab_size", 0) or 0),
                       intermediate=int(getattr(config, "intermediate_size", 0) or 0),
                       heads=int(getattr(config, "num_attention_heads", 0) or 0))
