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


def _completion_mask(batch: dict[str, torch.Tensor], prefix: str = "") -> None:
    """TRL's trainers mark the trained tokens with a completion mask (and rebuild the labels from it): here the tokens
    Tunery's encoder labelled, so the encoding stays the truth."""
    batch[prefix + "completion_mask"] = (batch.pop(prefix + "labels") != IGNORE_INDEX).long()


@dataclass
class TrlPairwiseCollator(PairwiseCollator):
    """dpo on TRL's DPOTrainer: the 2·B sequences of PairwiseCollator with a completion_mask instead of labels."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        _completion_mask(batch)
        return batch


@dataclass
class TrlKtoCollator(KtoCollator):
    """kto on TRL's KTOTrainer: input_ids/attention_mask/completion_mask, the KL pairs LLaMA-Factory's way (each
    prompt with the previous example's answer, paired by the encoder) as KL_*, and the desirability as ``label``."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": batch["labels"],
               "KL_input_ids": batch["kl_input_ids"], "KL_attention_mask": batch["kl_attention_mask"],
               "KL_labels": batch["kl_labels"], "label": batch["kto_tags"]}
        _completion_mask(out)
        _completion_mask(out, "KL_")
        return out
