"""The one place that decides whether a checkpoint is complete, which one to resume from, and whether it fits.

transformers (and Tunery's PPO loop) write a checkpoint's weights, optimizer, scheduler and RNG states first and
``trainer_state.json`` last. A checkpoint is therefore complete when that file parses, records the folder's own step
and the weights are there: a save killed half-way (``kill -9``, power loss, out of disk) leaves a folder that does
not look complete, is never resumed from, and is replaced when training gets back to that step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import TYPE_CHECKING

from tunery.errors import ConfigError, TuneryError
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
# What a run leaves before its first complete checkpoint: a rerun may start over in such a folder.
_LEFTOVERS = ("trainer_log.jsonl", "completions.jsonl", "runs", "run_card.json", "RUN.md")


def step_of(path: str) -> int | None:
    match = _CHECKPOINT.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def _has_weights(path: str) -> bool:
    names = set(os.listdir(path))
    if names & set(ADAPTER_WEIGHTS + MODEL_WEIGHTS):
        return True
    return any(n.startswith("pytorch_model_fsdp") for n in names)  # FSDP sharded state dicts


def incomplete_reason(path: str) -> str | None:
    """Why ``path`` is not a complete checkpoint, or None when it is one."""
    if not os.path.isdir(path):
        return "no such folder"
    state_file = os.path.join(path, STATE_FILE)
    if not os.path.isfile(state_file):
        return f"it has no {STATE_FILE} (its save was interrupted)"
    try:
        with open(state_file, encoding="utf-8") as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        return f"its {STATE_FILE} is truncated (its save was interrupted)"
    step = step_of(path)
    if step is not None and state.get("global_step") != step:
        return f"its {STATE_FILE} records step {state.get('global_step')}, not {step}"
    if not _has_weights(path):
        return "it holds no model or adapter weights"
    return None


def is_complete(path: str) -> bool:
    return incomplete_reason(path) is None


def list_checkpoints(output_dir: str) -> list[str]:
    """checkpoint-N folders in output_dir, oldest first (complete or not)."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if _CHECKPOINT.match(name) and os.path.isdir(path):
            found.append((step_of(name), path))
    return [path for _, path in sorted(found)]


def last_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint-N folder in output_dir, or None."""
    for path in reversed(list_checkpoints(output_dir)):
        if is_complete(path):
            return path
    return None


def only_crash_leftovers(output_dir: str) -> bool:
    """True when output_dir holds only what a run writes before its first complete checkpoint (a log and
    incomplete checkpoint folders): a run that crashed early, which a rerun may simply start over."""
    if not os.path.isdir(output_dir):
        return False
    names = os.listdir(output_dir)
    if not names or last_checkpoint(output_dir):
        return False
    return all(n in _LEFTOVERS or _CHECKPOINT.match(n) for n in names)


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

