"""Pick the stage's recipe."""

from __future__ import annotations


def run_train(cfg) -> None:
    if cfg.stage == "sft":
        from tunery.train.sft import run_sft

        run_sft(cfg)
    else:  # validation refuses stages that are not implemented; this guards direct API use
        raise NotImplementedError(cfg.stage)
