"""Pick the stage's recipe (each stage module imports its trainer lazily: `tunery train -h` stays fast)."""

from __future__ import annotations

import importlib

RECIPES = {
    "pt": ("tunery.train.pt", "run_pt"),
    "sft": ("tunery.train.sft", "run_sft"),
    "rm": ("tunery.train.rm", "run_rm"),
    "dpo": ("tunery.train.dpo", "run_dpo"),
    "kto": ("tunery.train.kto", "run_kto"),
    "ppo": ("tunery.train.ppo", "run_ppo"),
    "grpo": ("tunery.train.grpo", "run_grpo"),
}


def run_train(cfg) -> None:
    if cfg.stage not in RECIPES:  # validation refuses unknown stages; this guards direct API use
        raise NotImplementedError(cfg.stage)
    from tunery.utils.memory import apply_malloc_mmap_threshold

    apply_malloc_mmap_threshold(cfg)  # before the data and the model take memory
    module, func = RECIPES[cfg.stage]
    from tunery.runs import card
    from tunery.train.workflow import TrainingInterrupted

    try:
        getattr(importlib.import_module(module), func)(cfg)
    except TrainingInterrupted:
        card.finish(cfg.output_dir, "interrupted")
        raise
    except BaseException as err:
        card.finish(cfg.output_dir, "failed", error=str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise
    card.finish(cfg.output_dir, "finished")
