"""Direct preference optimisation on (prompt, chosen, rejected) pairs, with LLaMA-Factory's options.

``pref_loss`` sigmoid (DPO), hinge, ipo and TRL's further DPO losses run on TRL's DPOTrainer, fed with Tunery's
encodings; kto_pair, orpo and simpo stay Tunery's own (losses.py): TRL 1.x's DPOTrainer has none of them, and its
experimental ORPO/CPO trainers tokenize text themselves. ``pref_ftx`` adds an SFT loss on the chosen answers.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from transformers import Trainer
from trl import DPOConfig, DPOTrainer

from tunery.train.collators import PairwiseCollator, TrlPairwiseCollator
from tunery.train.losses import AVERAGED, OWN_PREF_LOSSES, kto_pair_loss, orpo_loss, sequence_logps, simpo_loss
from tunery.train.trainer_base import TrlPreferenceMixin, TuneryTrainerMixin
from tunery.train.workflow import Stage, run_stage

if TYPE_CHECKING:
    from tunery.config.loader import Config


def loss_terms(cfg: Config) -> tuple[list[str], list[float]]:
    """LLaMA-Factory's DPO loss as TRL's ``loss_type`` list and ``loss_weights``.

    - sigmoid with ``dpo_label_smoothing`` ε > 0 is cDPO, −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ); TRL's sigmoid has no
      smoothing and its robust is (−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ))/(1−2ε), so cDPO = (2−2ε)·sigmoid − (1−2ε)·robust.
    - ``pref_bco_weight`` w: (loss + w·bco_pair)/(1 + w), as LLaMA-Factory weighs its BCO term (TRL's bco_pair has no
      running-mean reward shift).
    - ``pref_ftx`` γ: + γ·sft (TRL's sft term: the chosen tokens' mean NLL over the batch; LLaMA-Factory averages
      per answer, then over pairs — the same when a batch's chosen answers are equally long, e.g. one pair).
    """
    kind, eps = cfg.pref_loss, cfg.dpo_label_smoothing
    if kind == "sigmoid" and eps > 0:
        types, weights = ["sigmoid", "robust"], [2 - 2 * eps, -(1 - 2 * eps)]
    else:
        types, weights = [kind], [1.0]
    bco = cfg.pref_bco_weight
    if bco > 0:
        types, weights = types + ["bco_pair"], [w / (1 + bco) for w in weights] + [bco / (1 + bco)]
    if cfg.pref_ftx > 0:
        types, weights = types + ["sft"], weights + [cfg.pref_ftx]
    return types, weights


class DpoTrainer(TrlPreferenceMixin, DPOTrainer):
    """TRL's DPOTrainer with Tunery's shared pieces (LoRA+, in-order batches) and LLaMA-Factory's option names."""

    def trl_config(self, cfg: Config, args):
        types, weights = loss_terms(cfg)
        return DPOConfig, dict(beta=cfg.pref_beta, loss_type=types, loss_weights=weights,
                               label_smoothing=cfg.dpo_label_smoothing, ld_alpha=cfg.ld_alpha,
                               max_length=None)  # the encoder truncated already (cutoff_len, LLaMA-Factory's way)


# -- Tunery's own: kto_pair, orpo, simpo ---------------------------------------------------------------------------
def forward_logps(model, inputs, average: bool):
    """Policy (or reference) log-probabilities of every sequence, per-token averaged if asked, plus the average
    log-probability (for the SFT term) and the mean logits."""
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False).logits
    logps, lengths = sequence_logps(logits, inputs["labels"])
    avg = logps / lengths.clamp(min=1)
    return (avg if average else logps), avg, logits.detach().mean(dim=(1, 2)).float()


class OwnPairTrainer(TuneryTrainerMixin, Trainer):
    """kto_pair (against the reference: ``ref_model``, or for LoRA the policy with its adapter off), orpo and simpo
    (without one) — losses TRL 1.x's DPOTrainer does not offer."""

    def __init__(self, *args, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # the loss is a mean over pairs: average it over accumulation steps
        self.ref_model = None
        if ref_model is not None:
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def reference_context(self, model):
        if self.ref_model is not None:
            return self.ref_model, nullcontext()
        unwrapped = self.accelerator.unwrap_model(model)
        return unwrapped, unwrapped.disable_adapter()

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
                ref_logps, _, _ = forward_logps(ref, inputs, average=False)
            ref_chosen, ref_rejected = ref_logps.chunk(2)
            losses = kto_pair_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
            chosen_rewards, rejected_rewards = beta * (chosen - ref_chosen).detach(), beta * (
                rejected - ref_rejected).detach()
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


def _reference(cfg: Config, tokenizer, reference) -> dict:
    if cfg.pref_loss in ("orpo", "simpo"):
        return {}
    return {"ref_model": reference(cfg, tokenizer)}


def workflow_stage(cfg: Config) -> Stage:
    if cfg.pref_loss in OWN_PREF_LOSSES:
        return Stage(OwnPairTrainer, lambda cfg, tok, multiple_of, model=None: PairwiseCollator(
            tok.pad_token_id, multiple_of), trainer_kwargs=_reference)
    return Stage(DpoTrainer, lambda cfg, tok, multiple_of, model=None: TrlPairwiseCollator(
        tok.pad_token_id, multiple_of), trainer_kwargs=_reference)


def run_dpo(cfg: Config) -> None:
    run_stage(cfg, workflow_stage(cfg))
