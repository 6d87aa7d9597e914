"""What a run leaves in output_dir: trainer arguments, resume point, final model/adapter, tokenizer, metrics, plots."""

from __future__ import annotations

import os
import shutil

from tunery.train.checkpoints import last_checkpoint, list_checkpoints
from tunery.train.plots import LOG_FILE, plot_all
from tunery.utils.logging import get_logger

logger = get_logger(__name__)

# Files a previous run wrote, removed (with checkpoint-N folders) only when overwrite_output_dir is set.
RUN_FILES = (LOG_FILE, "train_results.json", "eval_results.json", "all_results.json", "trainer_state.json",
             "training_loss.png", "training_eval_loss.png", "adapter_config.json", "adapter_model.safetensors",
             "model.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json")


def training_arguments(cfg):
    """transformers Seq2SeqTrainingArguments from the options the user set, plus what Tunery needs."""
    from transformers import Seq2SeqTrainingArguments

    from tunery.utils.device import cuda_available

    kwargs = cfg.hf_training_kwargs()
    kwargs["output_dir"] = cfg.output_dir
    kwargs["remove_unused_columns"] = False
    kwargs["gradient_checkpointing"] = False  # enabled on the model by prepare_for_training when asked
    kwargs.setdefault("include_num_input_tokens_seen", "non_padding")  # tokens/s in trainer_log.jsonl
    kwargs.setdefault("dataloader_pin_memory", cuda_available())
    if cfg.pure_bf16:
        kwargs["bf16"] = False  # the weights are bf16 already; no autocast on top
    return Seq2SeqTrainingArguments(**kwargs)


def prepare_output_dir(cfg) -> str | None:
    """Clear the previous run's outputs when asked; return the checkpoint to resume from (or None)."""
    out = cfg.output_dir
    if cfg.overwrite_output_dir and os.path.isdir(out):
        for path in list_checkpoints(out):
            shutil.rmtree(path)
        for name in RUN_FILES:
            if os.path.isfile(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        return None
    if cfg.resume_from_checkpoint:
        return cfg.resume_from_checkpoint
    resume = last_checkpoint(out)
    if resume:
        logger.info("resuming from %s (pass --overwrite_output_dir to start over)", resume)
    return resume


def save_final(trainer, cfg, tokenizer, template, train_result) -> None:
    from tunery.data.template_select import sync_chat_template

    trainer.save_model()
    if trainer.is_world_process_zero():
        sync_chat_template(tokenizer, template)
        tokenizer.save_pretrained(cfg.output_dir)
    metrics = dict(train_result.metrics)
    seen = getattr(trainer.state, "num_input_tokens_seen", 0)
    if seen and metrics.get("train_runtime"):
        metrics["effective_tokens_per_sec"] = round(seen / metrics["train_runtime"], 2)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()


def finish(trainer, cfg) -> None:
    if cfg.plot_loss and trainer.is_world_process_zero():
        for path in plot_all(cfg.output_dir):
            logger.info("saved %s", path)
