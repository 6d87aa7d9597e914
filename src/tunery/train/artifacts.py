"""What a run leaves in output_dir: trainer arguments, resume point, final model/adapter, tokenizer, metrics, plots."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tunery.runs.card import CARD_FILE, SUMMARY_FILE
from tunery.train.checkpoints import (
    check_resume_point,
    last_checkpoint,
    list_checkpoints,
    only_crash_leftovers,
    remove_incomplete,
    step_of,
)
from tunery.errors import ConfigError, TuneryError
from tunery.train.plots import COMPLETIONS_FILE, LOG_FILE, plot_all
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

# Files a previous run wrote, removed (with checkpoint-N folders) only when overwrite_output_dir is set.
RUN_FILES = (LOG_FILE, COMPLETIONS_FILE, "train_results.json", "eval_results.json", "all_results.json",
             "trainer_state.json", "predict_results.json", "generated_predictions.jsonl", "adapter_config.json",
             "adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "config.json",
             "generation_config.json", "value_head.safetensors", "training_args.bin", CARD_FILE, SUMMARY_FILE)


def training_arguments(cfg: Config):
    """transformers Seq2SeqTrainingArguments from the options the user set, plus what Tunery needs."""
    from transformers import Seq2SeqTrainingArguments

    from tunery.utils.device import accelerator_available, cuda_available

    kwargs = cfg.hf_training_kwargs()
    kwargs["output_dir"] = cfg.output_dir
    kwargs["remove_unused_columns"] = False
    # Checkpointing is enabled on the model by prepare_for_training when asked (either name), not by the Trainer.
    for name in ("gradient_checkpointing", "gradient_checkpointing_kwargs", "activation_checkpointing",
                 "activation_checkpointing_kwargs"):
        kwargs.pop(name, None)
    os.environ.update(cfg.env)  # e.g. TENSORBOARD_LOGGING_DIR from logging_dir (hf_compat)
    kwargs.setdefault("include_num_input_tokens_seen", "non_padding")  # tokens/s in trainer_log.jsonl
    kwargs.setdefault("dataloader_pin_memory", cuda_available())
    if kwargs.get("report_to") in (None, [], ["none"]):
        kwargs["report_to"] = "none"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kwargs.setdefault("ddp_find_unused_parameters", False)  # every trainable weight gets a gradient
        if not accelerator_available():
            # accelerate (>= 1.13) makes a torchrun run data parallel on CPU (MULTI_CPU, gloo) only when asked to use
            # the CPU; without it each rank trains alone on all the data and believes it is the main process.
            kwargs["use_cpu"] = True  # (use_cpu: false has no other meaning here)
    from tunery.train import cpu_fsdp

    if cpu_fsdp.on_cpu(cfg):
        cpu_fsdp.training_kwargs(cfg, kwargs)
    if cfg.pure_bf16:
        kwargs["bf16"] = False  # the weights are bf16 already; no autocast on top
    try:
        return Seq2SeqTrainingArguments(**kwargs)
    except ValueError as err:  # transformers' own checks across its fields (the range checks come before)
        reason = " ".join(str(err).split())
        raise ConfigError(f"{cfg.where}: transformers refuses these training options: {reason[:300]} — change the "
                          "option it names") from None


def _clear_run(out: str) -> None:
    for path in list_checkpoints(out):
        shutil.rmtree(path, ignore_errors=True)
    for name in os.listdir(out):
        if name in RUN_FILES or (name.startswith("training_") and name.endswith(".png")):
            os.remove(os.path.join(out, name))


def check_writable(folder: str, option: str = "output_dir") -> None:
    """Create ``folder`` if needed and write (then remove) a probe file in it: a folder Tunery cannot write into, or
    a full disk, is one line before the model loads instead of a traceback after it."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tunery-write-check-"):
            pass
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TuneryError(f"{option} '{folder}': no space left on its disk — free space there or choose another "
                              f"{option}") from None
        raise TuneryError(f"{option} '{folder}' is not writable ({err.strerror or err}) — choose a folder you can "
                          f"write to, or fix its permissions") from None


_DISK_FULL = ("No space left on device", "os error 28", "Disk quota exceeded", "file write failed")


def _disk_full(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(err) for text in _DISK_FULL):  # safetensors and torch.save word it their own way
            return True
        err = err.__cause__ or err.__context__
    return False


@contextmanager
def disk_full_is_one_line(output_dir: str):
    """A save that runs out of disk becomes one line naming the folder; the checkpoint it was writing is incomplete
    and is never resumed from (train/checkpoints.py), so rerunning resumes from the last complete one."""
    try:
        yield
    except Exception as err:
        if not _disk_full(err):
            raise
        folder = os.path.dirname(getattr(err, "filename", None) or "") or output_dir
        resume = last_checkpoint(output_dir)
        then = (f"resumes from {os.path.basename(resume)}, the last complete checkpoint" if resume else
                "starts the training again (no checkpoint was complete yet)")
        raise TuneryError(f"no space left on the disk holding {folder} while saving — free space there (df -h "
                          f"{folder}), then rerun the same command: it {then}") from None


def prepare_output_dir(cfg: Config, is_main: bool = True) -> str | None:
    """Clear the previous run's outputs when asked (or when a run crashed before its first checkpoint); return the
    checkpoint to resume from (or None). Only the main process deletes anything. A folder that cannot be written is
    refused here, before the model loads."""
    out = cfg.output_dir
    if is_main:
        check_writable(out)
    if cfg.resume_from_checkpoint:
        check_resume_point(cfg.resume_from_checkpoint, cfg)
        return cfg.resume_from_checkpoint
    if not os.path.isdir(out):
        return None
    if cfg.overwrite_output_dir or only_crash_leftovers(out):
        if not cfg.overwrite_output_dir:
            logger.info("%s holds no complete checkpoint (an earlier run stopped before saving one): starting over",
                        out)
        if is_main:
            _clear_run(out)
        return None
    resume = last_checkpoint(out)
    if resume:
        check_resume_point(resume, cfg)
        if is_main:
            remove_incomplete(out, after_step=step_of(resume))
        logger.info("resuming from %s (pass --overwrite_output_dir to start over)", resume)
    return resume


def save_final(trainer, cfg: Config, tokenizer, template, train_result) -> None:
    from tunery.data.template_select import sync_chat_template

    trainer.save_model()
    if trainer.is_world_process_zero():
        sync_chat_template(tokenizer, template)
        tokenizer.save_pretrained(cfg.output_dir)
    metrics = dict(train_result.metrics)
    seen = getattr(trainer.state, "num_input_tokens_seen", 0)  # non-padding tokens, summed over the processes
    if cfg.include_effective_tokens_per_second and seen and metrics.get("train_runtime"):
        per_device = seen / metrics["train_runtime"] / max(trainer.args.world_size, 1)  # LLaMA-Factory's: per device
        metrics["effective_tokens_per_sec"] = round(per_device, 2)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()


def finish(trainer, cfg: Config) -> None:
    if cfg.plot_loss and trainer.is_world_process_zero():
        for path in plot_all(cfg.output_dir):
            logger.info("saved %s", path)
