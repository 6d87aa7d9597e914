"""LLaMA-Factory's further methods and model options: SFT losses (DFT, ASFT, EAFT), LLaMA Pro, OFT, PiSSA settings,
new tokens and their initialisation, MoE router loss, training from scratch, early stopping, and loading details
(reentrant checkpointing, KV cache, offloading, quantized reference/reward models)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tunery.config.option import Option, Rule, non_negative, positive, probability
from tunery.config.stages import stages_using, uses
from tunery.errors import ConfigError

if TYPE_CHECKING:
    from tunery.config.loader import Config

M = "method"
O = "method: oft"
L = "method: lora"
R = "method: rlhf"
T = "model"
GEN = "generation"

SFT_LOSSES = ("use_dft_loss", "use_asft_loss", "use_eaft_loss")
INIT_METHODS = ("noise_init", "desc_init", "desc_init_w_noise")


def _tokens_config(value: str):
    return None if os.path.isfile(os.path.expanduser(value)) else ("no such file — give a YAML file mapping each new "
                                                                   "token to its description")


OPTIONS = [
    # SFT losses
    Option("use_dft_loss", "bool", False, "Dynamic Fine-Tuning loss (sft): each answer token's cross-entropy is "
           "weighted by its (detached) probability, so tokens the model already rates likely count more.", M,
           advanced=True),
    Option("use_asft_loss", "bool", False, "Anchored SFT loss (sft): the DFT loss plus asft_alpha × the token KL "
           "divergence from the reference model (the base without the adapter, or ref_model).", M, advanced=True),
    Option("asft_alpha", "float", 0.1, "Weight of ASFT's KL term.", M, check=non_negative, advanced=True),
    Option("use_eaft_loss", "bool", False, "Entropy-adaptive fine-tuning loss (sft): each token's cross-entropy is "
           "weighted by (top-20 entropy / 3) ** eaft_alpha, so uncertain tokens count more.", M, advanced=True),
    Option("eaft_alpha", "float", 1.0, "Power of EAFT's entropy weight.", M, check=non_negative, advanced=True),
    # methods
    Option("use_llama_pro", "bool", False, "LLaMA Pro (freeze or lora): train only the expanded blocks, evenly spaced "
           "every num_layers / freeze_trainable_layers layers (a model expanded by block copying with zeroed "
           "output projections).", M, advanced=True),
    Option("train_from_scratch", "bool", False, "Initialise the weights randomly from the model's config instead of "
           "loading them (pre-training from scratch; the tokenizer is still loaded).", M, advanced=True),
    Option("early_stopping_steps", "int", None, "Stop training after this many evaluations without improvement of "
           "metric_for_best_model (transformers' EarlyStoppingCallback).", M, check=positive, advanced=True),
    Option("moe_aux_loss_coef", "float", None, "Mixture-of-experts models: weight of the router load-balancing loss "
           "added to the training loss (sets the model's router_aux_loss_coef and returns router logits).", M,
           check=non_negative, advanced=True),
    Option("use_reentrant_gc", "bool", False, "With gradient_checkpointing: torch's reentrant checkpoint variant "
           "(LLaMA-Factory's default; same gradients, Tunery defaults to the non-reentrant one torch recommends).", M,
           advanced=True),
    # PiSSA settings
    Option("pissa_iter", "int", 16, "PiSSA (pissa_init): fast-SVD iterations used to initialise the adapter (-1: "
           "exact SVD).", L, check=lambda v: None if v == -1 or v > 0 else "must be greater than 0 or -1", advanced=True),
    Option("pissa_convert", "bool", False, "PiSSA: also save the adapter converted to a plain LoRA adapter that applies "
           "to the original base model (output_dir/pissa_converted; the initial adapter is kept in pissa_init).", L,
           advanced=True),
    # OFT (through PEFT's OFTConfig)
    Option("oft_rank", "int", 0, "OFT rank r (number of blocks per layer); 0: derived from oft_block_size.", O,
           check=non_negative, advanced=True),
    Option("oft_block_size", "int", 32, "OFT block size; give either it or oft_rank (the other 0).", O,
           check=non_negative, advanced=True),
    Option("oft_target", "list", ["all"], "Modules that get OFT: 'all' (every linear layer but the output head) or "
           "names like q_proj,v_proj.", O, advanced=True),
    Option("module_dropout", "float", 0.0, "OFT: probability of dropping a layer's whole OFT block in training.", O,
           check=probability, advanced=True),
    # tokens
    Option("add_tokens", "list", None, "Plain (non-special) tokens to add to the tokenizer, comma-separated; the "
           "embeddings are resized.", T, advanced=True),
    Option("add_special_tokens", "list", None, "Special tokens to add to the tokenizer, comma-separated; the "
           "embeddings are resized.", T, advanced=True),
    Option("new_special_tokens_config", "str", None, "YAML file mapping new special tokens to descriptions "
           "('<tok>': 'what it marks'); the tokens are added (instead of add_special_tokens) and desc_init "
           "initialises them from their descriptions.", T, check=_tokens_config, advanced=True),
    Option("init_special_tokens", "str", "noise_init", "How new token embeddings start: noise_init (mean of the "
           "existing embeddings plus noise), desc_init (mean of the description's token embeddings; needs "
           "new_special_tokens_config), desc_init_w_noise (that plus noise).", T, choices=INIT_METHODS,
           advanced=True),
    # loading
    Option("offload_folder", "str", "offload", "Folder for weights offloaded to disk when a device map places some on "
           "disk (quantized or device_map-loaded models, adapters loaded on them).", T, advanced=True),
    Option("quantization_device_map", "str", None, "Device map of a quantized model for inference: auto spreads it "
           "over the GPUs (needs quantization_bit).", T, choices=("auto",), advanced=True),
    Option("use_kv_cache", "bool", True, "Use the KV cache when generating (chat, api, do_predict); false recomputes "
           "every step (slower, same tokens).", GEN, advanced=True),
    Option("eval_num_beams", "int", None, "do_predict: beams for the generated answers (default: num_beams).", GEN,
           check=positive, advanced=True),
    Option("ref_model_quantization_bit", "int", None, "Quantize the reference model (dpo/kto/ppo, ASFT) to 4 or 8 bits "
           "(needs a CUDA GPU and bitsandbytes).", R, choices=(4, 8), advanced=True),
    Option("reward_model_quantization_bit", "int", None, "Quantize the ppo reward model to 4 or 8 bits (needs a CUDA "
           "GPU and bitsandbytes).", R, choices=(4, 8), advanced=True),
]


def _sft_losses(cfg: Config) -> None:
    chosen = [name for name in SFT_LOSSES if cfg.values[name]]
    if not chosen:
        return
    if len(chosen) > 1:
        raise ConfigError(f"{cfg.where}: options {' and '.join(chosen)} each replace the SFT loss — keep one")
    if not uses(cfg.stage, "sft_loss"):
        raise ConfigError(f"{cfg.where}: option '{chosen[0]}' changes the sft loss (stage is {cfg.stage}) — set "
                          f"stage: {stages_using('sft_loss')[0]} or drop {chosen[0]}")


def _llama_pro(cfg: Config) -> None:
    if not cfg.use_llama_pro:
        return
    if cfg.finetuning_type not in ("freeze", "lora"):
        raise ConfigError(f"{cfg.where}: use_llama_pro trains the expanded blocks only — use finetuning_type: freeze "
                          f"or lora (got {cfg.finetuning_type})")
    if cfg.freeze_trainable_layers <= 0:
        raise ConfigError(f"{cfg.where}: use_llama_pro needs freeze_trainable_layers > 0 (the number of expanded "
                          f"blocks), got {cfg.freeze_trainable_layers}")


def _oft(cfg: Config) -> None:
    if cfg.finetuning_type != "oft":
        return
    if bool(cfg.oft_rank) == bool(cfg.oft_block_size):
        raise ConfigError(f"{cfg.where}: OFT needs exactly one of oft_rank and oft_block_size above 0 (got oft_rank "
                          f"{cfg.oft_rank}, oft_block_size {cfg.oft_block_size}) — set the other to 0")


def _pissa(cfg: Config) -> None:
    if cfg.pissa_convert and not cfg.pissa_init:
        raise ConfigError(f"{cfg.where}: pissa_convert converts a PiSSA adapter — set pissa_init: true as well")
    if cfg.pissa_init and cfg.finetuning_type != "lora":
        raise ConfigError(f"{cfg.where}: pissa_init initialises a LoRA adapter — set finetuning_type: lora "
                          f"(got {cfg.finetuning_type})")


def _early_stopping(cfg: Config) -> None:
    if cfg.early_stopping_steps is None:
        return
    if cfg.eval_strategy in (None, "no"):
        raise ConfigError(f"{cfg.where}: early_stopping_steps counts evaluations — set eval_strategy: steps (with "
                          "eval_steps and val_size or eval_dataset)")
    if not cfg.metric_for_best_model and not cfg.load_best_model_at_end:
        raise ConfigError(f"{cfg.where}: early_stopping_steps needs the metric to watch — set metric_for_best_model "
                          "(e.g. eval_loss) or load_best_model_at_end: true")


def _quantized_models(cfg: Config) -> None:
    if cfg.quantization_device_map and cfg.quantization_bit is None:
        raise ConfigError(f"{cfg.where}: quantization_device_map places a quantized model — set quantization_bit too "
                          "or drop quantization_device_map")
    for name in ("ref_model_quantization_bit", "reward_model_quantization_bit"):
        if cfg.values[name] is None:
            continue
        from tunery.utils.device import cuda_available

        if not cuda_available():
            raise ConfigError(f"{cfg.where}: option '{name}' needs a CUDA GPU and bitsandbytes; this machine has none "
                              f"— drop {name} to keep that model in full precision")


def _new_tokens(cfg: Config) -> None:
    if cfg.init_special_tokens.startswith("desc_init") and not cfg.new_special_tokens_config:
        raise ConfigError(f"{cfg.where}: init_special_tokens {cfg.init_special_tokens} initialises tokens from their "
                          "descriptions — give new_special_tokens_config (a YAML file '<tok>': 'description')")


TRAIN = frozenset({"train"})
RULES = [Rule(_sft_losses, TRAIN), Rule(_llama_pro, TRAIN), Rule(_oft, TRAIN), Rule(_pissa, TRAIN),
         Rule(_early_stopping, TRAIN), Rule(_new_tokens, TRAIN),
         Rule(_quantized_models, frozenset({"train", "chat", "export", "eval", "webchat", "api"}))]
