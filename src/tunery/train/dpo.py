"""Direct preference optimisation on (prompt, chosen, rejected) pairs, with the losses LLaMA-Factory offers through
``pref_loss``: sigmoid (DPO), hinge, ipo, kto_pair against a frozen reference, and orpo, simpo without one.
``pref_ftx`` adds an SFT loss on the chosen answers."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from transformers import Trainer

from tunery.train.collators import PairwiseCollator
from tunery.train.losses import (
    AVERAGED,
    REFERENCE_FREE,
    dpo_loss,
    orpo_loss,
    sequence_logps,
    simpo_loss,
)
from tunery.train.trainer_base import TuneryTrainerMixin
from tunery.train.workflow import Stage, run_stage


def forward_logps(model, inputs, average: bool):
    """Policy (or reference) log-probabilities of every sequence, per-token averaged if asked, plus the average
    log-probability (for the SFT term) and the mean logits."""
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False).logits
    logps, lengths = sequence_logps(logits, inputs["labels"])
    avg = logps / lengths.clamp(min=1)
    return (avg if average else logps), avg, logits.detach().mean(dim=(1, 2)).float()


class PreferenceTrainerMixin:
    """The reference model: a frozen copy (``ref_model``), or for LoRA the policy with its adapter switched off."""

    def setup_reference(self, ref_model):
        self.ref_model = None
        if ref_model is not None:
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def reference_context(self, model):
        if self.ref_model is not None:
            return self.ref_model, nullcontext()
        unwrapped = self.accelerator.unwrap_model(model)
        return unwrapped, unwrapped.disable_adapter()


class DpoTrainer(PreferenceTrainerMixin, TuneryTrainerMixin, Trainer):
    def __init__(self, *args, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # the loss is a mean over pairs: average it over accumulation steps
        self.setup_reference(ref_model)

    def preference_loss(self, model, inputs):
        cfg = self.cfg
        kind, beta = cfg.pref_loss, cfg.pref_beta
        logps, avg_logps, mean_logits = forward_logps(model, inputs, average=kind in AVERAGED)
        chosen, rejected = logps.chunk(2)
        metrics = {}
        if kind == "orpo":
            losses, sft, odds_ratio = orpo_loss(chosen, rejected, beta)
            metrics.update({"sft_loss": sft.detach().mean(), "odds_ratio_loss": odds_ratio.detach().mean()})
            chosen_rewards, rejected_rewards = beta * chosen.detach(), beta * rejected.detach()
        elif kind == "simpo":
            losses = simpo_loss(chosen, rejected, beta, cfg.simpo_gamma)
            chosen_rewards, rejected_rewards = beta * chosen.detach(), beta * rejected.detach()
        else:
            ref, context = self.reference_context(model)
            with torch.no_grad(), context:
                ref_logps, _, _ = forward_logps(ref, inputs, average=kind in AVERAGED)
            ref_chosen, ref_rejected = ref_logps.chunk(2)
            losses, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, kind,
                                                                beta, cfg.dpo_label_smoothing)
        loss = losses.mean()
        if cfg.pref_ftx > 0 and kind != "orpo":
            loss = loss + cfg.pref_ftx * (-avg_logps.chunk(2)[0]).mean()
        logits_chosen, logits_rejected = mean_logits.chunk(2)
        metrics.update({
            "rewards/chosen": chosen_rewards.mean(),
            "rewards/rejected": rejected_rewards.mean(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
            "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
            "logps/chosen": chosen.detach().mean(),
            "logps/rejected": rejected.detach().mean(),
            "logits/chosen": logits_chosen.mean(),
            "logits/rejected": logits_rejected.mean(),
        })
        return loss, metrics

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, metrics = self.preference_loss(model, inputs)
        self.store_metrics(metrics, "train")
        return (loss, metrics) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, metrics = self.preference_loss(model, inputs)
        self.store_metrics(metrics, "eval")
        return loss.detach(), None, None


def _collator(cfg, tokenizer, multiple_of, model=None):
    return PairwiseCollator(tokenizer.pad_token_id, multiple_of)


def _reference(cfg, tokenizer) -> dict:
    from tunery.train.models import load_reference_model

    if cfg.pref_loss in REFERENCE_FREE:
        return {}
    return {"ref_model": load_reference_model(cfg, tokenizer)}


DPO = Stage(DpoTrainer, _collator, trainer_kwargs=_reference)


def run_dpo(cfg) -> None:
    run_stage(cfg, DPO)
