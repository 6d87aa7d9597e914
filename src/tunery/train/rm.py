"""Reward modelling on TRL's RewardTrainer: a score head on the LM learns to rank the chosen answer above the rejected
one (pairwise loss −log σ(r_chosen − r_rejected)); accuracy = share of pairs ranked right. The pairs are Tunery's
encodings (chosen/rejected input ids, LLaMA-Factory's template and truncation)."""

from __future__ import annotations

import torch
from trl import RewardConfig, RewardTrainer as TrlRewardTrainer
from typing import TYPE_CHECKING

from tunery.train.trainer_base import TrlTrainerMixin
from tunery.train.workflow import Stage, run_stage

if TYPE_CHECKING:
    from tunery.config.loader import Config


def _pairs(examples):
    """The pairs under the names TRL's collator reads; a Dataset stays Arrow (columns renamed, nothing read)."""
    if examples is None:
        return None
    names = {"chosen_input_ids": "chosen_ids", "rejected_input_ids": "rejected_ids"}
    if hasattr(examples, "select_columns"):
        return examples.select_columns(list(names)).rename_columns(names)
    return [{new: e[old] for old, new in names.items()} for e in examples]


class RewardTrainer(TrlTrainerMixin, TrlRewardTrainer):
    def trl_config(self, cfg: Config, args):
        return RewardConfig, dict(max_length=None, disable_dropout=False)

    def __init__(self, *args, **kwargs):
        for key in ("train_dataset", "eval_dataset"):
            kwargs[key] = _pairs(kwargs.get(key))
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
        with torch.no_grad():
            chosen, rejected = outputs.logits.squeeze(-1).float().chunk(2)
            self.store_metrics({"rewards/chosen": chosen.mean(), "rewards/rejected": rejected.mean(),
                                "rewards/margins": (chosen - rejected).mean()},
                               "train" if self.model.training else "eval")
        return (loss, outputs) if return_outputs else loss


def _collator(cfg: Config, tokenizer, multiple_of, model=None):
    from trl.trainer.reward_trainer import DataCollatorForPreference

    return DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=multiple_of)


RM = Stage(RewardTrainer, _collator)  # saves "score": the model loads with a score head (config/stages.py)


def workflow_stage(cfg: Config) -> Stage:
    return RM


def run_rm(cfg: Config) -> None:
    run_stage(cfg, RM)
