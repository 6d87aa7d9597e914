"""Kahneman-Tversky optimisation on single answers labelled desirable or not (``kto_tag``), against a frozen
reference; the KL reference point comes from each prompt paired with another example's answer (``kl_*``)."""

from __future__ import annotations

import torch
from transformers import Trainer

from tunery.train.collators import KtoCollator
from tunery.train.dpo import PreferenceTrainerMixin, forward_logps
from tunery.train.losses import kto_loss
from tunery.train.trainer_base import TuneryTrainerMixin
from tunery.train.workflow import Stage, run_stage


def _kl_inputs(inputs):
    return {k[3:]: v for k, v in inputs.items() if k.startswith("kl_")}


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the selected entries; NaN when none is selected (the logging skips it)."""
    return values[mask].mean() if mask.any() else values.new_tensor(float("nan"))


class KtoTrainer(PreferenceTrainerMixin, TuneryTrainerMixin, Trainer):
    def __init__(self, *args, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # the loss is a mean over examples
        self.setup_reference(ref_model)

    def kto_step(self, model, inputs):
        cfg = self.cfg
        logps, avg_logps, _ = forward_logps(model, inputs, average=False)
        with torch.no_grad():
            kl_logps, _, _ = forward_logps(model, _kl_inputs(inputs), average=False)
            ref, context = self.reference_context(model)
            with context:
                ref_logps, _, _ = forward_logps(ref, inputs, average=False)
                ref_kl_logps, _, _ = forward_logps(ref, _kl_inputs(inputs), average=False)
        kl = (kl_logps - ref_kl_logps).mean().detach()
        if self.accelerator.num_processes > 1:
            kl = self.accelerator.reduce(kl, "mean")
        kl = kl.clamp(min=0)
        desirable = inputs["kto_tags"].bool()
        losses, rewards = kto_loss(logps, ref_logps, kl, desirable, cfg.pref_beta, cfg.kto_chosen_weight,
                                   cfg.kto_rejected_weight)
        loss = losses.mean()
        if cfg.pref_ftx > 0 and desirable.any():
            loss = loss + cfg.pref_ftx * (-avg_logps[desirable]).mean()
        metrics = {
            "kl": kl,
            "rewards/chosen": _masked_mean(rewards, desirable),
            "rewards/rejected": _masked_mean(rewards, ~desirable),
            "logps/chosen": _masked_mean(logps.detach(), desirable),
            "logps/rejected": _masked_mean(logps.detach(), ~desirable),
        }
        return loss, metrics

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, metrics = self.kto_step(model, inputs)
        self.store_metrics(metrics, "train")
        return (loss, metrics) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, metrics = self.kto_step(model, inputs)
        self.store_metrics(metrics, "eval")
        return loss.detach(), None, None


def _collator(cfg, tokenizer, multiple_of, model=None):
    return KtoCollator(tokenizer.pad_token_id, multiple_of)


def _reference(cfg, tokenizer) -> dict:
    from tunery.train.models import load_reference_model

    return {"ref_model": load_reference_model(cfg, tokenizer)}


KTO = Stage(KtoTrainer, _collator, trainer_kwargs=_reference)


def run_kto(cfg) -> None:
    run_stage(cfg, KTO)
