"""Callbacks that options add to a run: PiSSA conversion (pissa_convert), early stopping (early_stopping_steps) and
SwanLab logging (use_swanlab)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from transformers import TrainerCallback

from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

PISSA_INIT, PISSA_BACKUP, PISSA_CONVERTED = "pissa_init", "pissa_backup", "pissa_converted"


def _save_plain(model, folder: str) -> None:
    """Save the adapter with init_lora_weights: true in its config (it loads as a plain LoRA adapter)."""
    config = model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True
    try:
        model.save_pretrained(folder)
    finally:
        config.init_lora_weights = init


class PissaConvertCallback(TrainerCallback):
    """A PiSSA adapter applies to the residual base it was initialised from. At the start the initial adapter is
    saved (output_dir/pissa_init); at the end the trained one is also written converted (output_dir/pissa_converted)
    into a plain LoRA adapter for the original base model, through PEFT's
    ``path_initial_model_for_weight_conversion``."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if args.should_save and hasattr(model, "peft_config"):
            _save_plain(model, os.path.join(args.output_dir, PISSA_INIT))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not (args.should_save and hasattr(model, "peft_config")):
            return
        backup = os.path.join(args.output_dir, PISSA_BACKUP)
        _save_plain(model, backup)  # the conversion changes the adapter in place: keep the trained one
        model.save_pretrained(os.path.join(args.output_dir, PISSA_CONVERTED),
                              path_initial_model_for_weight_conversion=os.path.join(args.output_dir, PISSA_INIT))
        model.load_adapter(backup, "default", is_trainable=True)
        model.set_adapter("default")
        logger.info("PiSSA adapter converted to plain LoRA: %s", os.path.join(args.output_dir, PISSA_CONVERTED))


def swanlab_callback(cfg: Config):
    """SwanLab's own transformers callback, configured from the swanlab_* options."""
    import swanlab
    from swanlab.integration.transformers import SwanLabCallback

    if cfg.swanlab_api_key:
        swanlab.login(api_key=cfg.swanlab_api_key)
    if cfg.swanlab_lark_webhook_url:
        from swanlab.plugin.notification import LarkCallback

        swanlab.register_callbacks([LarkCallback(webhook_url=cfg.swanlab_lark_webhook_url,
                                                 secret=cfg.swanlab_lark_secret)])
    mode = {"cloud": "online"}.get(cfg.swanlab_mode, cfg.swanlab_mode)
    return SwanLabCallback(project=cfg.swanlab_project, workspace=cfg.swanlab_workspace,
                           experiment_name=cfg.swanlab_run_name, mode=mode, logdir=cfg.swanlab_logdir,
                           tags=["tunery"])


def option_callbacks(cfg: Config) -> list:
    """The callbacks the run's options ask for."""
    callbacks = []
    if cfg.pissa_convert and cfg.pissa_init and cfg.finetuning_type == "lora":
        callbacks.append(PissaConvertCallback())
    if cfg.early_stopping_steps:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_steps))
    if cfg.use_swanlab:
        callbacks.append(swanlab_callback(cfg))
    return callbacks
