"""Checkpoints during a run: incomplete ones removed, a resume point checked against the model being trained.

What "complete" means, and which checkpoint is the last one, is decided in :mod:`tunery.utils.checkpoint_dirs`
(re-exported here).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING

from tunery.errors import ConfigError, TuneryError
from tunery.utils.checkpoint_dirs import (ADAPTER_WEIGHTS, MODEL_WEIGHTS, STATE_FILE, incomplete_reason,  # noqa: F401
                                          is_complete, last_checkpoint, list_checkpoints, only_crash_leftovers,
                                          step_of)
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)


def remove_incomplete(output_dir: str, after_step: int = -1) -> None:
    """Delete incomplete checkpoint folders newer than ``after_step``: training writes them again."""
    for path in list_checkpoints(output_dir):
        if step_of(path) > after_step and not is_complete(path):
            logger.warning("removing %s: %s", path, incomplete_reason(path))
            shutil.rmtree(path, ignore_errors=True)


_SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
               "num_key_value_heads", "vocab_size")


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _model_config(path: str | None) -> dict:
    return _read_json(os.path.join(os.path.expanduser(path), "config.json")) if path else {}


def _config_mismatch(theirs: dict, ours: dict) -> str | None:
    for key in _SHAPE_KEYS:
        if key in theirs and key in ours and theirs[key] != ours[key]:
            return f"{key} {theirs[key]} there, {ours[key]} in {{model}}"
    return None


def check_resume_point(path: str, cfg: Config) -> None:
    """Refuse, before the model loads, a checkpoint that is incomplete, was written by another method, or for
    another model or LoRA rank (as far as its config files tell)."""
    reason = incomplete_reason(path)
    if reason:
        raise ConfigError(f"resume_from_checkpoint '{path}' is not a complete checkpoint: {reason} — point it at "
                          "an earlier checkpoint-N folder, or drop resume_from_checkpoint to use the last complete one")
    fix = "pass --overwrite_output_dir to start over, or choose another output_dir"
    names = set(os.listdir(path))
    adapter_type = cfg.finetuning_type in ("lora", "oft")
    if adapter_type and not names & set(ADAPTER_WEIGHTS):
        raise ConfigError(f"checkpoint '{path}' holds full model weights but finetuning_type is lora — resume it "
                          f"with the finetuning_type it was trained with, or {fix}")
    if not adapter_type and names & set(ADAPTER_WEIGHTS):
        raise ConfigError(f"checkpoint '{path}' holds a LoRA adapter but finetuning_type is {cfg.finetuning_type} — "
                          f"resume it with finetuning_type: lora, or {fix}")
    ours = _model_config(cfg.model_name_or_path)
    if cfg.finetuning_type == "lora":
        adapter = _read_json(os.path.join(path, "adapter_config.json"))
        if not cfg.adapter_name_or_path and adapter.get("r") not in (None, cfg.lora_rank):
            raise ConfigError(f"checkpoint '{path}' was trained with lora_rank {adapter['r']}, not {cfg.lora_rank} — "
                              f"use lora_rank: {adapter['r']} to resume it, or {fix}")
        theirs = _model_config(adapter.get("base_model_name_or_path"))
    else:
        theirs = _model_config(path)
    problem = _config_mismatch(theirs, ours)
    if problem:
        detail = problem.format(model=cfg.model_name_or_path)
        raise ConfigError(f"checkpoint '{path}' was written for another model ({detail}) — {fix}")


def _saved_shapes(path: str) -> dict[str, tuple] | None:
    """Tensor name -> shape of the checkpoint's safetensors weights, read from the headers only."""
    from safetensors import safe_open

    files = [n for n in ADAPTER_WEIGHTS + MODEL_WEIGHTS if n.endswith(".safetensors") and
             os.path.isfile(os.path.join(path, n))]
    index = os.path.join(path, "model.safetensors.index.json")
    if not files and os.path.isfile(index):
        with open(index, encoding="utf-8") as fh:
            files = sorted(set(json.load(fh)["weight_map"].values()))
    if not files:
        return None
    shapes = {}
    for name in files:
        with safe_open(os.path.join(path, name), framework="pt") as fh:
            for key in fh.keys():
                shapes[key] = tuple(fh.get_slice(key).get_shape())
    return shapes


def check_fits_model(path: str, model) -> None:
    """Refuse a checkpoint whose weights do not match the model being trained (another base model, another LoRA
    rank or target), naming the first mismatch, instead of a shape error deep inside transformers."""
    shapes = _saved_shapes(path)
    if shapes is None:
        return
    if os.path.isfile(os.path.join(path, ADAPTER_WEIGHTS[0])):
        from peft import get_peft_model_state_dict

        try:
            own = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model).items()}
        except (AttributeError, ValueError):
            own = {}
    else:
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    fix = "pass --overwrite_output_dir to start over, or choose another output_dir"
    for key, shape in shapes.items():
        if key not in own:
            raise TuneryError(f"checkpoint '{path}' does not fit the model being trained: it has {key}, which the "
                              f"model lacks (another model or other LoRA targets) — {fix}")
        if own[key] != shape:
            raise TuneryError(f"checkpoint '{path}' does not fit the model being trained: {key} is {list(shape)} "
                              f"there and {list(own[key])} here (another model or lora_rank) — {fix}")

