"""Model, tokenizer and inference-backend options (LLaMA-Factory's ModelArguments names)."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from tunery.config.option import Option, Rule, positive
from tunery.errors import ConfigError

if TYPE_CHECKING:
    from tunery.config.loader import Config

G = "model"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(value: str) -> bool:
    return bool(_HUB_ID.match(value)) and not value.startswith((".", "/", "~"))


def _model_path(value: str):
    if os.path.isdir(os.path.expanduser(value)):
        if not os.path.exists(os.path.join(os.path.expanduser(value), "config.json")):
            return "the folder has no config.json — point it at a Hugging Face model folder"
        return None
    if looks_like_hub_id(value):
        return None  # resolved from the hub (or its local cache) when the model loads
    return "no such model folder — check the path, or give a Hugging Face hub id like 'org/name'"


def _adapter_paths(value: list):
    for path in value:
        if os.path.isdir(os.path.expanduser(path)):
            if not os.path.exists(os.path.join(os.path.expanduser(path), "adapter_config.json")):
                return f"'{path}' has no adapter_config.json — point it at a LoRA output folder or a checkpoint-N folder"
        elif not looks_like_hub_id(path):
            return f"no such adapter folder '{path}' — check the path (it is the training output_dir)"
    return None


OPTIONS = [
    Option("model_name_or_path", "str", None, "Path to a local model folder, or a Hugging Face hub id.", G,
           check=_model_path),
    Option("adapter_name_or_path", "list", None, "LoRA adapter folder(s), comma-separated; merged at load in order.",
           G, check=_adapter_paths),
    Option("adapter_folder", "str", None, "Folder holding several adapters to load.", G, advanced=True,
           unsupported="give the adapters with adapter_name_or_path"),
    Option("cache_dir", "str", None, "Where hub downloads are cached.", G, advanced=True),
    Option("use_fast_tokenizer", "bool", True, "Use the fast (Rust) tokenizer.", G, advanced=True),
    Option("resize_vocab", "bool", False, "Resize the embeddings to the tokenizer's vocabulary.", G, advanced=True),
    Option("split_special_tokens", "bool", False, "Tokenize special-token text as plain text.", G, advanced=True),
    Option("new_special_tokens", "list", None, "Special tokens to add to the tokenizer (comma-separated).", G,
           advanced=True),
    Option("model_revision", "str", "main", "Hub revision (branch, tag or commit) of the model.", G, advanced=True),
    Option("low_cpu_mem_usage", "bool", True, "Load weights without an extra copy in memory.", G, advanced=True),
    Option("rope_scaling", "str", None, "RoPE scaling to extend the context (the model config's rope parameters): "
           "factor ceil(cutoff_len / max_position_embeddings) when training — none when cutoff_len fits — and 2 "
           "for inference, as LLaMA-Factory does.", G, choices=("linear", "dynamic", "yarn", "llama3"),
           advanced=True),
    Option("flash_attn", "str", "auto", "Attention implementation: auto, disabled (eager), sdpa or fa2.", G,
           choices=("auto", "disabled", "sdpa", "fa2"), advanced=True),
    Option("shift_attn", "bool", False, "LongLoRA shift short attention.", G, advanced=True,
           unsupported="LongLoRA shift attention"),
    Option("use_unsloth", "bool", False, "Use unsloth's kernels.", G, advanced=True, unsupported="unsloth"),
    Option("enable_liger_kernel", "bool", False, "Patch the model with Liger kernels (GPU, needs liger-kernel).", G,
           advanced=True),
    Option("upcast_layernorm", "bool", False, "Training: keep the layer-norm weights in fp32 when the model is loaded "
           "in half precision.", G, advanced=True),
    Option("upcast_lmhead_output", "bool", False, "Training: cast the lm_head output (the logits) to fp32 when the "
           "model is loaded in half precision.", G, advanced=True),
    Option("infer_backend", "str", "huggingface", "Inference engine for chat/api.", G,
           choices=("huggingface", "hf", "vllm"), advanced=True),
    Option("infer_dtype", "str", "auto", "Dtype for inference and export.", G,
           choices=("auto", "float16", "bfloat16", "float32"), advanced=True),
    Option("hf_hub_token", "str", None, "Token for private hub models (or set HF_TOKEN).", G, advanced=True),
    Option("trust_remote_code", "bool", False, "Run custom modelling code shipped with a model. Off unless asked.", G,
           advanced=True),
    Option("print_param_status", "bool", False, "Print every parameter's dtype, device and trainability.", G,
           advanced=True),
    Option("quantization_bit", "int", None, "Quantize the base model to 4 or 8 bits (QLoRA; needs a CUDA GPU and "
           "bitsandbytes).", G, choices=(4, 8), advanced=True),
    Option("quantization_method", "str", "bnb", "Quantization backend.", G, choices=("bnb",), advanced=True),
    Option("quantization_type", "str", "nf4", "4-bit data type.", G, choices=("fp4", "nf4"), advanced=True),
    Option("double_quantization", "bool", True, "Double quantization for 4-bit.", G, advanced=True),
    Option("model_max_length", "int", None, "Override the tokenizer's model_max_length.", G, check=positive,
           advanced=True),
]


def _require_model(cfg: Config) -> None:
    if not cfg.model_name_or_path:
        raise ConfigError(f"{cfg.where}: option 'model_name_or_path' is required — give a model folder or hub id "
                          "(e.g. build the tiny demo model with `tunery demo`)")


def _quantization_needs_gpu(cfg: Config) -> None:
    if cfg.quantization_bit is None:
        return
    from tunery.utils.device import cuda_available

    if not cuda_available():
        raise ConfigError(f"{cfg.where}: option 'quantization_bit' = {cfg.quantization_bit} needs a CUDA GPU and "
                          "bitsandbytes (QLoRA); this machine has none — drop quantization_bit to train in full "
                          "precision")


RULES = [
    Rule(_require_model, frozenset({"train", "chat", "export", "eval", "webchat", "api"})),
    Rule(_quantization_needs_gpu, frozenset({"train", "chat", "export", "eval", "webchat", "api"})),
]
