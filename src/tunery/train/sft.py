"""Supervised fine-tuning: a causal LM learns the answers (prompt tokens are not trained)."""

from __future__ import annotations

from transformers import Trainer
from typing import TYPE_CHECKING

from tunery.data.collate import build_collator
from tunery.train.sft_losses import SftLossMixin
from tunery.train.trainer_base import TuneryTrainerMixin
from tunery.train.workflow import Stage, run_stage

if TYPE_CHECKING:
    from tunery.config.loader import Config


class SftTrainer(SftLossMixin, TuneryTrainerMixin, Trainer):
    """transformers' Trainer with Tunery's shared pieces (LoRA+, in-order batches, stored metrics) and the optional
    DFT/EAFT/ASFT losses."""

    def __init__(self, *args, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.setup_sft_loss(ref_model)


def seq2seq_collator(cfg: Config, tokenizer, multiple_of, model=None):
    from transformers import DataCollatorForSeq2Seq

    from tunery.data.records import IGNORE_INDEX

    # Padding to the batch's own longest example; padded labels are not trained.
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=multiple_of)


def _argmax(logits, labels):
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(-1)


def token_accuracy(eval_pred) -> dict[str, float]:
    """Share of answer tokens predicted exactly (next-token argmax), LLaMA-Factory's compute_accuracy."""
    from tunery.data.records import IGNORE_INDEX

    preds, labels = eval_pred.predictions[:, :-1], eval_pred.label_ids[:, 1:]
    mask = labels != IGNORE_INDEX
    return {"accuracy": float((preds[mask] == labels[mask]).mean()) if mask.any() else 0.0}


def _sft_kwargs(cfg: Config, tokenizer, reference) -> dict:
    kwargs = {}
    if cfg.compute_accuracy:
        kwargs.update(compute_metrics=token_accuracy, preprocess_logits_for_metrics=_argmax)
    if cfg.use_asft_loss and cfg.do_train:
        kwargs["ref_model"] = reference(cfg, tokenizer)  # None for adapters: the base is the reference
    return kwargs


SFT = Stage(SftTrainer, build_collator, trainer_kwargs=_sft_kwargs)  # packing-aware; plain padding otherwise


def workflow_stage(cfg: Config) -> Stage:
    return SFT


def run_sft(cfg: Config) -> None:
    run_stage(cfg, SFT)
