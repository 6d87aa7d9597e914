"""Reward modelling: a score head on the LM learns to rank the chosen answer above the rejected one
(pairwise loss −log σ(r_chosen − r_rejected)); accuracy = share of pairs ranked right."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer

from tunery.train.collators import PairwiseCollator
from tunery.train.trainer_base import TuneryTrainerMixin
from tunery.train.workflow import Stage, run_stage


class RewardTrainer(TuneryTrainerMixin, Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # the loss is a mean over pairs: average it over accumulation steps

    def pairwise_loss(self, model, inputs):
        scores = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       use_cache=False).logits.squeeze(-1).float()
        chosen, rejected = scores.chunk(2)
        loss = -F.logsigmoid(chosen - rejected).mean()
        metrics = {
            "accuracy": (chosen > rejected).float().mean(),
            "rewards/chosen": chosen.mean(),
            "rewards/rejected": rejected.mean(),
            "rewards/margins": (chosen - rejected).mean(),
        }
        return loss, metrics

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, metrics = self.pairwise_loss(model, inputs)
        self.store_metrics(metrics, "train")
        return (loss, metrics) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, metrics = self.pairwise_loss(model, inputs)
        self.store_metrics(metrics, "eval")
        return loss.detach(), None, None


def _collator(cfg, tokenizer, multiple_of, model=None):
    return PairwiseCollator(tokenizer.pad_token_id, multiple_of)


RM = Stage(RewardTrainer, _collator, reward_head=True)


def run_rm(cfg) -> None:
    run_stage(cfg, RM)
