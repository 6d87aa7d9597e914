"""Inference, serving and export options: `tunery chat|webchat|api` (compare, vLLM) and `tunery export`.

Servers read their address from the environment as LLaMA-Factory does (API_HOST, API_PORT, API_KEY, API_MODEL_NAME,
GRADIO_SERVER_NAME, GRADIO_SERVER_PORT, GRADIO_SHARE); these options cover what the model and engine need.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tunery.config.model_options import _model_path
from tunery.config.option import Option, Rule, positive, probability
from tunery.errors import ConfigError

if TYPE_CHECKING:
    from tunery.config.loader import Config

INF = "inference"
E = "export"
W = "webui"

_NO_QUANTIZED_EXPORT = ("quantized export (GPTQ) is not available — export in full precision, then quantize the "
                        "folder with a dedicated tool (llama.cpp, AutoGPTQ, AutoAWQ)")

OPTIONS = [
    Option("compare", "bool", False, "Base model (without adapter_name_or_path, or compare_model) beside the "
           "fine-tuned one: side by side in chat and webchat, per category in eval.", "compare"),
    Option("compare_model", "str", None, "With --compare (chat, webchat): the model folder or hub id that answers as "
           "the 'base' (default: model_name_or_path without its adapters; useful after full fine-tuning).", INF,
           check=_model_path),
    Option("vllm_maxlen", "int", 4096, "vLLM: maximum sequence length (prompt + reply).", INF, check=positive,
           advanced=True),
    Option("vllm_gpu_util", "float", 0.7, "vLLM: fraction of GPU memory the engine may use.", INF, check=probability,
           advanced=True),
    Option("vllm_enforce_eager", "bool", False, "vLLM: disable CUDA graphs.", INF, advanced=True),
    Option("vllm_max_lora_rank", "int", 32, "vLLM: largest LoRA rank it can serve.", INF, check=positive,
           advanced=True),
    Option("vllm_config", "dict", None, "vLLM: extra engine arguments (a mapping or JSON object).", INF, advanced=True),
    Option("export_dir", "str", None, "Folder the merged model is written to (tunery export).", E),
    Option("export_size", "number", 5, "Largest weight shard, in GB (fractions allowed).", E, check=positive),
    Option("export_device", "str", "cpu", "Where adapters are merged: cpu, or auto (GPUs when present).", E,
           choices=("cpu", "auto")),
    Option("export_legacy_format", "bool", False, "Save PyTorch .bin files instead of safetensors (for old tools).",
           E, advanced=True),
    Option("export_overwrite", "bool", False, "Replace an earlier Tunery export in export_dir (a folder holding "
           "files Tunery did not write is never replaced).", E),
    Option("export_hub_model_id", "str", None, "Also push the exported model to this Hugging Face hub repo "
           "(needs network and a token: hf_hub_token or HF_TOKEN).", E),
    Option("export_quantization_bit", "int", None, "Quantize the exported model to this many bits.", E,
           advanced=True, unsupported=_NO_QUANTIZED_EXPORT),
    Option("export_quantization_dataset", "str", None, "Calibration data for quantized export.", E, advanced=True,
           unsupported=_NO_QUANTIZED_EXPORT),
    Option("export_quantization_nsamples", "int", 128, "Calibration samples for quantized export.", E,
           advanced=True, unsupported=_NO_QUANTIZED_EXPORT),
    Option("export_quantization_maxlen", "int", 1024, "Calibration sequence length for quantized export.", E,
           advanced=True, unsupported=_NO_QUANTIZED_EXPORT),
    Option("webui_allowed_paths", "list", None, "tunery webui: more folders (models, datasets, outputs) its pages may "
           "read and write, comma-separated; besides these only the saves folder, the dataset folder and the model "
           "and adapter folders of the config it starts with are reachable.", W),
    Option("webui_auth", "str", None, "tunery webui and webchat: require a login, 'USER:PASSWORD' (several comma-separated); put it "
           "in the config file rather than on the command line, where other local users can read it.", W),
]


def _compare_has_two_models(cfg: Config) -> None:
    if cfg.compare and not cfg.adapter_name_or_path and not cfg.compare_model:
        raise ConfigError(f"{cfg.where}: option 'compare' needs two different models — give the fine-tuned adapter "
                          "(adapter_name_or_path) or the base model to compare with (compare_model)")


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def _export_target(cfg: Config) -> None:
    if not cfg.export_dir:
        raise ConfigError(f"{cfg.where}: option 'export_dir' is required — the folder the merged model is written to")
    sources = [cfg.model_name_or_path] + list(cfg.adapter_name_or_path or [])
    for source in sources:
        if source and _same_path(cfg.export_dir, source):
            raise ConfigError(f"{cfg.where}: option 'export_dir' = {cfg.export_dir!r} is the folder of the model or "
                              "adapter being exported — choose a new folder")
    if cfg.adapter_name_or_path and cfg.finetuning_type not in ("lora", "oft"):
        raise ConfigError(f"{cfg.where}: option 'adapter_name_or_path' needs finetuning_type: lora or oft "
                          f"(got {cfg.finetuning_type})")


RULES = [
    Rule(_compare_has_two_models, frozenset({"chat", "webchat"})),
    Rule(_export_target, frozenset({"export"})),
]
