"""Batching of the encoded examples of the preference stages (sft and pt use transformers' DataCollatorForSeq2Seq)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunery.data.records import IGNORE_INDEX


def pad(seqs: list[list[int]], value: int, multiple_of: int | None = None, side: str = "right") -> torch.Tensor:
    """Pad lists of ids to the longest (rounded up to ``multiple_of``) into one tensor."""
    width = max(len(s) for s in seqs)
    if multiple_of:
        width = -(-width // multiple_of) * multiple_of
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            if side == "right":
                out[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            else:
                out[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
    return out


def _batch(examples: list[dict], prefix: str, pad_id: int, multiple_of: int | None) -> dict[str, torch.Tensor]:
    out = {
        "input_ids": pad([e[prefix + "input_ids"] for e in examples], pad_id, multiple_of),
        "attention_mask": pad([e[prefix + "attention_mask"] for e in examples], 0, multiple_of),
    }
    if prefix + "labels" in examples[0]:
        out["labels"] = pad([e[prefix + "labels"] for e in examples], IGNORE_INDEX, multiple_of)
    return out


@dataclass
class PairwiseCollator:
    """rm/dpo: one batch of 2·B sequences, the B chosen answers first, then the B rejected ones."""

    pad_id: int
    multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        flat = [{k[len(side) + 1:]: v for k, v in f.items() if k.startswith(side + "_")}
                for side in ("chosen", "rejected") for f in features]
        return _batch(flat, "", self.pad_id, self.multiple_of)


@dataclass
class KtoCollator:
    """kto: the examples (input_ids/attention_mask/labels), their KL pairs (kl_*) and the desirability tags."""

    pad_id: int
    multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        out = _batch(features, "", self.pad_id, self.multiple_of)
        out.update({"kl_" + k: v for k, v in _batch(features, "kl_", self.pad_id, self.multiple_of).items()})
        out["kto_tags"] = torch.tensor([bool(f["kto_tags"]) for f in features])
        return out
