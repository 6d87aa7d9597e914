"""What a complete checkpoint folder is, and which one a run resumes from — read from the files alone, so the
config checks (an output_dir holding a checkpoint) and the run listing use it without the training code.

transformers (and Tunery's PPO loop) write a checkpoint's weights, optimizer, scheduler and RNG states first and
``trainer_state.json`` last. A checkpoint is therefore complete when that file parses, records the folder's own step
and the weights are there: a save killed half-way (``kill -9``, power loss, out of disk) leaves a folder that does
not look complete, is never resumed from, and is replaced when training gets back to that step.
"""

from __future__ import annotations

import json
import os
import re

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
