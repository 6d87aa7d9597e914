"""Run the stage's recipe: the ``trainer`` of its row in the stage table (config/stages.py), imported only now so
that `tunery train -h` stays fast."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tunery.config.stages import stage_spec, uses

if TYPE_CHECKING:
    from tunery.config.loader import Config


def recipe(stage: str):
    """The function that trains ``stage`` (its row's ``trainer``, ``module:function``)."""
    module, _, func = stage_spec(stage).trainer.partition(":")
    return getattr(importlib.import_module(module), func)


def workflow_stage(cfg: Config):
    """The :class:`~tunery.train.workflow.Stage` (Trainer class, collator, extra Trainer kwargs) a Trainer-based
    stage runs with (its recipe module's ``workflow_stage``); None for ppo/grpo, whose loops are their own."""
    if not uses(cfg.stage, "workflow"):
        return None
    module = stage_spec(cfg.stage).trainer.partition(":")[0]
    return importlib.import_module(module).workflow_stage(cfg)


def run_train(cfg: Config) -> None:
    stage_spec(cfg.stage)  # validation refuses unknown stages; this guards direct API use
    from tunery.utils.memory import apply_malloc_mmap_threshold

    apply_malloc_mmap_threshold(cfg)  # before the data and the model take memory
    from tunery.runs import card
    from tunery.train.workflow import TrainingInterrupted

    try:
        recipe(cfg.stage)(cfg)
    except TrainingInterrupted:
        card.finish(cfg.output_dir, "interrupted")
        raise
    except BaseException as err:
        card.finish(cfg.output_dir, "failed", error=str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise
    card.finish(cfg.output_dir, "finished")
