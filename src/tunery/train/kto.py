"""Kahneman-Tversky optimisation on single answers labelled desirable or not (``kto_tag``), on TRL's KTOTrainer,
against a frozen reference; the KL reference point comes from each prompt paired with another example's answer,
paired by Tunery's encoder as LLaMA-Factory does (the previous example's answer in its chunk of records).
``pref_ftx`` adds an SFT loss on the desirable answers."""

from __future__ import annotations

from trl import KTOConfig, KTOTrainer
from typing import TYPE_CHECKING

from tunery.data.records import IGNORE_INDEX
from tunery.train.collators import TrlKtoCollator
from tunery.train.losses import sequence_logps
from tunery.train.trainer_base import TrlPreferenceMixin
from tunery.train.workflow import Stage, run_stage

if TYPE_CHECKING:
    from tunery.config.loader import Config


class KtoTrainer(TrlPreferenceMixin, KTOTrainer):
    def trl_config(self, cfg: Config, args):
        # TRL pairs each answer with its batch neighbour's for the KL term, so it asks for in-order batches of 2 or
        # more; the encoder made the pairs already (any order, any batch size), so TRL is told what it checks for and
        # the run's own sampling and batch size are put back after its __init__.
        self._wanted = (args.train_sampling_strategy, args.per_device_train_batch_size)
        return KTOConfig, dict(beta=cfg.pref_beta, desirable_weight=cfg.kto_chosen_weight,
                               undesirable_weight=cfg.kto_rejected_weight, max_length=None,
                               train_sampling_strategy="sequential",
                               per_device_train_batch_size=max(2, args.per_device_train_batch_size))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.args.train_sampling_strategy, self.args.per_device_train_batch_size = self._wanted
        self._train_batch_size = self.args.train_batch_size

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.cfg.pref_ftx > 0 and inputs["label"].any():
            # Tunery's own (TRL's KTOTrainer has no SFT term): pref_ftx × the desirable answers' mean per-token NLL,
            # from one more forward pass over them.
            sft = self.cfg.pref_ftx * desirable_nll(model, inputs)
            out = (out[0] + sft, out[1]) if return_outputs else out + sft
        return out


def desirable_nll(model, inputs):
    keep = inputs["label"].bool()
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, IGNORE_INDEX)[keep]
    logits = model(input_ids=inputs["input_ids"][keep], attention_mask=inputs["attention_mask"][keep],
                   use_cache=False).logits
    logps, lengths = sequence_logps(logits, labels)
    return (-logps / lengths.clamp(min=1)).mean()


def _reference(cfg: Config, tokenizer, reference) -> dict:
    return {"ref_model": reference(cfg, tokenizer)}


KTO = Stage(KtoTrainer, lambda cfg, tok, multiple_of, model=None: TrlKtoCollator(tok.pad_token_id, multiple_of),
            trainer_kwargs=_reference)


def workflow_stage(cfg: Config) -> Stage:
    return KTO


def run_kto(cfg: Config) -> None:
    run_stage(cfg, KTO)
