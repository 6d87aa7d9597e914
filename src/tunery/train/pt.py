"""Pre-training (continued): a causal LM on plain text, packed into cutoff_len blocks, every token trained."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunery.train.sft import SftTrainer, seq2seq_collator
from tunery.train.workflow import Stage, run_stage

if TYPE_CHECKING:
    from tunery.config.loader import Config

PT = Stage(SftTrainer, seq2seq_collator)


def workflow_stage(cfg: Config) -> Stage:
    return PT


def run_pt(cfg: Config) -> None:
    run_stage(cfg, PT)
