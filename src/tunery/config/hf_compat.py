"""TrainingArguments names that LLaMA-Factory YAML files use and the installed transformers no longer has.

Each is translated to what the installed transformers has (a notice line where the meaning changes), or refused
with one line naming the replacement. A name the installed transformers still has is never translated: it is a
plain option then (older transformers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from tunery.config.option import _to_bool
from tunery.errors import ConfigError

# (value, where) -> [(option, value), ...] to set instead, or raises ConfigError
Translate = Callable[[Any, str], list]


@dataclass(frozen=True)
class Legacy:
    name: str
    replacement: str  # what to use instead, in words (the error / notice names it)
    translate: Optional[Translate] = None  # None: refused with one line naming the replacement
    notice: str = ""  # printed once when translated: the meaning changes


def _rename(new: str, convert: Callable[[Any], Any] = lambda v: v) -> Translate:
    return lambda value, where: [(new, convert(value))]


def _warmup_ratio(value, where):
    ratio = float(value)
    if not 0 <= ratio < 1:
        raise ConfigError(f"{where}: option 'warmup_ratio' = {value!r}: must be at least 0 and below 1 (transformers "
                          "now takes the ratio as warmup_steps: a number below 1) — or give warmup_steps in steps")
    return [("warmup_steps", ratio)] if ratio else []


def _logging_dir(value, where):
    return [("env:TENSORBOARD_LOGGING_DIR", str(value))]


def _save_safetensors(value, where):
    if str(value).lower() in ("false", "0", "no"):
        raise ConfigError(f"{where}: option 'save_safetensors' is gone from transformers, which always saves "
                          "safetensors now — remove save_safetensors: false")
    return []


def _into(option: str, key: str, wrap: Callable[[Any], Any] = lambda v: v) -> Translate:
    return lambda value, where: [(option, {key: wrap(value)})]


def _half_precision_backend(value, where):
    if str(value) not in ("auto", "amp"):
        raise ConfigError(f"{where}: option 'half_precision_backend' = {value!r}: transformers now always uses "
                          "torch.amp (apex is gone) — remove the option")
    return []


LEGACY = {entry.name: entry for entry in [
    Legacy("warmup_ratio", "use warmup_steps (a number below 1 is a ratio of the total steps)", _warmup_ratio),
    Legacy("logging_dir", "use the environment variable TENSORBOARD_LOGGING_DIR", _logging_dir,
           notice="logging_dir: transformers now reads the TensorBoard folder from TENSORBOARD_LOGGING_DIR; "
                  "Tunery sets it to {value} for this run"),
    Legacy("gradient_checkpointing", "use activation_checkpointing", _rename("activation_checkpointing")),
    Legacy("gradient_checkpointing_kwargs", "use activation_checkpointing_kwargs",
           _rename("activation_checkpointing_kwargs")),
    Legacy("evaluation_strategy", "use eval_strategy", _rename("eval_strategy")),
    Legacy("no_cuda", "use use_cpu", _rename("use_cpu")),
    Legacy("per_gpu_train_batch_size", "use per_device_train_batch_size", _rename("per_device_train_batch_size")),
    Legacy("per_gpu_eval_batch_size", "use per_device_eval_batch_size", _rename("per_device_eval_batch_size")),
    Legacy("push_to_hub_token", "use hub_token", _rename("hub_token")),
    Legacy("include_inputs_for_metrics", "use include_for_metrics: [inputs]",
           lambda v, w: [("include_for_metrics", ["inputs"])] if str(v).lower() in ("true", "1") else []),
    Legacy("save_safetensors", "remove it (transformers always saves safetensors)", _save_safetensors),
    Legacy("include_tokens_per_second", "use include_num_input_tokens_seen (on by default in Tunery)",
           lambda v, w: [], notice="include_tokens_per_second: transformers now reports tokens/s with "
                                   "include_num_input_tokens_seen, which Tunery turns on; the option is dropped"),
    Legacy("dispatch_batches", "use accelerator_config: {dispatch_batches: ...}",
           _into("accelerator_config", "dispatch_batches", _to_bool)),
    Legacy("split_batches", "use accelerator_config: {split_batches: ...}",
           _into("accelerator_config", "split_batches", _to_bool)),
    Legacy("fsdp_min_num_params", "use fsdp_config: {min_num_params: ...}", _into("fsdp_config", "min_num_params")),
    Legacy("fsdp_transformer_layer_cls_to_wrap", "use fsdp_config: {transformer_layer_cls_to_wrap: [...]}",
           _into("fsdp_config", "transformer_layer_cls_to_wrap",
                 lambda v: v if isinstance(v, list) else [p.strip() for p in str(v).split(",")])),
    Legacy("half_precision_backend", "remove it (torch.amp is always used)", _half_precision_backend),
    Legacy("fp16_backend", "remove it (torch.amp is always used)", _half_precision_backend),
    Legacy("use_mps_device", "remove it (an available MPS device is used automatically)", lambda v, w: [],
           notice="use_mps_device: transformers uses an available MPS device by itself; the option is dropped"),
    Legacy("torchdynamo", "use torch_compile: true with torch_compile_backend"),
    Legacy("jit_mode_eval", "use torch_compile: true"),
    Legacy("use_ipex", "remove it (transformers dropped Intel Extension for PyTorch)"),
    Legacy("tpu_num_cores", "remove it (torch_xla's launcher sets the TPU cores)"),
    Legacy("use_legacy_prediction_loop", "remove it (transformers has one evaluation loop)"),
    Legacy("past_index", "remove it (transformers dropped it)"),
    Legacy("ray_scope", "pass it to hyperparameter_search instead"),
]}


def translate(key: str, value: Any, where: str, known: set) -> tuple[list, str] | None:
    """What ``key: value`` becomes with the installed transformers, and a notice ("" for none); None when ``key``
    is not a legacy name. Raises ConfigError for a legacy name without a translation."""
    entry = LEGACY.get(key)
    if entry is None or key in known:
        return None
    if entry.translate is None:
        raise ConfigError(f"{where}: option '{key}' is gone from the installed transformers — {entry.replacement}")
    pairs = entry.translate(value, where)
    for name, _ in pairs:
        if not name.startswith("env:") and name not in known:  # the replacement is gone too (older transformers)
            raise ConfigError(f"{where}: option '{key}' is not an option of the installed transformers — use "
                              f"{entry.replacement}")
    return pairs, entry.notice.format(value=value) if entry.notice else ""
