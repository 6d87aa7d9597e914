"""Kahneman-Tversky optimisation on single answers labelled desirable or not (``kto_tag``), on TRL's KTOTrainer,
against a frozen reference; the KL reference point comes from each prompt paired with another example's answer,
paired by Tunery's encoder as LLaMA-Factory does (the previous example's answer in its chunk of records)."""

from __future__ import annotations

from trl import KTOConfig, KTOTrainer

from tunery.train.collators import TrlKtoCollator
from tunery.train.trainer_base import TrlPreferenceMixin
from tunery.train.workflow import Stage, run_stage


class KtoTrainer(TrlPreferenceMixin, KTOTrainer):
    def trl_config(self, cfg, args):
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


def _reference(cfg, tokenizer) -> dict:
    from tunery.train.models import load_reference_model

    return {"ref_model": load_reference_model(cfg, tokenizer)}


KTO = Stage(KtoTrainer, lambda cfg, tok, multiple_of, model=None: TrlKtoCollator(tok.pad_token_id, multiple_of),
            trainer_kwargs=_reference)


def run_kto(cfg) -> None:
    run_stage(cfg, KTO)
