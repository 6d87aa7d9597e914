"""Sequence packing for sft (LLaMA-Factory's ``packing`` / ``neat_packing``).

Encoded examples are grouped by LLaMA-Factory's greedy knapsack (per batch of ``preprocessing_batch_size``
examples: the longest example that still fits goes in next) into rows of at most ``cutoff_len - 1`` tokens (LLaMA-
Factory encodes and packs with ``cutoff_len - 1`` when packing). A packed row is the examples concatenated, with

* ``position_ids`` restarting at 0 for each example (as LLaMA-Factory), which is how transformers recognises packed
  sequences: with ``neat_packing`` the collator (collate.py) passes no 2-D attention mask, so sdpa/eager attention
  builds a block-diagonal causal mask from the position_ids and flash-attention runs variable-length kernels — the
  packed examples cannot attend to each other;
* without ``neat_packing`` the collator passes the usual all-ones attention mask, so (as in LLaMA-Factory) packed
  examples attend to the examples before them in the row;
* the label of each example's first token set to ``IGNORE_INDEX``: unpacked, that token is never predicted (nothing
  comes before it), so the packed loss is the sum of the unpacked losses (with ``train_on_prompt`` the first token
  would otherwise be predicted from the previous example).

Rows are not padded here; the collator pads each batch to its longest row.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence

from ..config.stages import uses
from ..errors import ConfigError
from .records import IGNORE_INDEX


def packing_enabled(cfg) -> bool:
    """LLaMA-Factory's rule: ``neat_packing`` implies ``packing``; unset ``packing`` means on for pt only (pt packs
    while encoding, see encode_pretrain), so this is true only when sft examples are to be packed."""
    packing = bool(cfg.packing) or bool(cfg.neat_packing)
    return packing and uses(cfg.stage, "packed_rows")


def packed_cutoff(cutoff_len: int) -> int:
    """The token budget of one packed row and of each example in it (LLaMA-Factory: ``cutoff_len - 1``)."""
    if cutoff_len < 2:
        raise ConfigError(f"cutoff_len {cutoff_len} is too small for packing — use at least 2")
    return cutoff_len - 1


def greedy_knapsack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group indices of ``lengths`` into knapsacks of total length <= ``capacity``.

    Each knapsack is filled by repeatedly taking the longest remaining length that still fits; among examples of the
    same length the last one comes first (LLaMA-Factory's ``greedy_knapsack`` + ``length2indexes.pop()``), so the
    groups are the ones LLaMA-Factory builds from the same lengths.
    """
    too_long = [n for n in lengths if n > capacity]
    if too_long:
        raise ValueError(f"{len(too_long)} example(s) are longer than the packing capacity {capacity}")
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, length in enumerate(lengths):
        by_length[length].append(index)
    remaining = sorted(lengths)
    groups: list[list[int]] = []
    while remaining:
        room, group = capacity, []
        while True:
            fit = bisect.bisect_right(remaining, room)
            if fit == 0:
                break
            length = remaining.pop(fit - 1)
            room -= length
            group.append(by_length[length].pop())
        groups.append(group)
    return groups


def pack_group(examples: Sequence[dict]) -> dict:
    """One packed row from ``examples`` (each with input_ids and labels), in the given order."""
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for example in examples:
        ids = list(example["input_ids"])
        input_ids += ids
        labels += ([IGNORE_INDEX] + list(example["labels"][1:])) if ids else []
        position_ids += range(len(ids))
    return {"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids),
            "position_ids": position_ids}


def pack_examples(examples: Sequence[dict], cutoff_len: int, batch_size: int = 1000) -> list[dict]:
    """Pack encoded sft examples (already truncated to ``packed_cutoff(cutoff_len)``) into rows, knapsack by knapsack
    within each batch of ``batch_size`` examples (LLaMA-Factory packs each preprocessing batch on its own).

    Examples longer than the budget are left out, as LLaMA-Factory's "Dropped lengthy example" (encoding with
    ``packed_cutoff`` never produces them)."""
    capacity = packed_cutoff(cutoff_len)
    rows: list[dict] = []
    step = max(1, batch_size)
    for start in range(0, len(examples), step):
        batch = [e for e in examples[start:start + step] if 0 < len(e["input_ids"]) <= capacity]
        for group in greedy_knapsack([len(e["input_ids"]) for e in batch], capacity):
            rows.append(pack_group([batch[i] for i in group]))
    return rows


def packing_summary(num_examples: int, rows: Sequence[dict], cutoff_len: int) -> dict:
    """Counts for logs and ``tunery preview``: examples, rows, mean examples per row and how full the rows are."""
    return summary_from_counts(num_examples, len(rows), sum(len(r["input_ids"]) for r in rows), cutoff_len)


def summary_from_counts(num_examples: int, sequences: int, tokens: int, cutoff_len: int) -> dict:
    """:func:`packing_summary` from the counts alone (rows packed into Arrow batch by batch)."""
    return {
        "examples": num_examples,
        "sequences": sequences,
        "examples_per_sequence": round(num_examples / sequences, 2) if sequences else 0.0,
        "fill": round(tokens / (sequences * packed_cutoff(cutoff_len)), 4) if sequences else 0.0,
    }
