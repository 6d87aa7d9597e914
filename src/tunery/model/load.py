"""Tokenizer and model loading: local folders or hub ids, dtype, attention implementation, clear errors."""

from __future__ import annotations

import os
import pickle
from typing import TYPE_CHECKING, Any

from tunery.errors import TuneryError
from tunery.model.tokens import mark_vocab_extended, vocab_extended
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)


def _hub_kwargs(cfg: Config) -> dict[str, Any]:
    return {
        "cache_dir": cfg.cache_dir,
        "revision": cfg.model_revision,
        "token": cfg.hf_hub_token,
        "trust_remote_code": cfg.trust_remote_code,
    }


def _load_error(what: str, path: str, err: Exception) -> TuneryError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if os.path.isdir(os.path.expanduser(path)):
        return TuneryError(f"could not load the {what} from '{path}': {reason} — check that the folder holds a "
                           "complete Hugging Face model (config.json, weights, tokenizer files)")
    return TuneryError(f"could not load the {what} '{path}' from the Hugging Face hub: {reason} — if this machine is "
                       f"offline, download it elsewhere (`hf download {path} --local-dir DIR`) and pass the folder")


def load_tokenizer(cfg: Config):
    from transformers import AutoTokenizer

    from tunery.model.tokenizer_file import as_saved

    path = os.path.expanduser(cfg.model_name_or_path)
    kwargs = {"split_special_tokens": cfg.split_special_tokens, "padding_side": "right"}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=cfg.use_fast_tokenizer, **kwargs, **_hub_kwargs(cfg))
        tokenizer = as_saved(tokenizer, path, kwargs, _hub_kwargs(cfg))  # tokenizer.json is what tokenizes
    except (OSError, ValueError) as err:
        raise _load_error("tokenizer", cfg.model_name_or_path, err) from None
    if cfg.model_max_length:
        tokenizer.model_max_length = cfg.model_max_length
    if cfg.new_special_tokens:
        added = tokenizer.add_special_tokens({"additional_special_tokens": list(cfg.new_special_tokens)},
                                             replace_extra_special_tokens=False)
        if added:
            logger.info("added %d new special tokens; embeddings will be resized", added)
            mark_vocab_extended(tokenizer)
    if cfg.add_tokens or cfg.add_special_tokens or cfg.new_special_tokens_config:
        from tunery.model.tokens import add_new_tokens

        if add_new_tokens(tokenizer, cfg):
            mark_vocab_extended(tokenizer)
    return tokenizer


def compute_dtype(cfg: Config):
    """The dtype weights are loaded in: bf16/fp16 when training in them, else fp32 (CPU) or infer_dtype."""
    import torch

    if cfg.command == "train":
        if cfg.bf16 or cfg.pure_bf16:
            return torch.bfloat16
        if cfg.fp16:
            return torch.float16
        return torch.float32
    names = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if cfg.infer_dtype in names:
        return names[cfg.infer_dtype]
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def attention_implementation(cfg: Config) -> str | None:
    if cfg.flash_attn == "disabled":
        return "eager"
    if cfg.flash_attn == "sdpa":
        return "sdpa"
    if cfg.flash_attn == "fa2":
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise TuneryError("flash_attn: fa2 needs the flash-attn package and a CUDA GPU — install it "
                              "(pip install flash-attn) or use flash_attn: sdpa") from None
        return "flash_attention_2"
    return None  # transformers picks sdpa where it can


def quantization_config(cfg: Config, bits=None):
    """The bitsandbytes config for ``bits`` (default: the quantization_bit option), or None unquantized."""
    bits = cfg.quantization_bit if bits is None else bits
    if bits is None:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TuneryError("quantization_bit needs bitsandbytes — install it (pip install 'tunery[bitsandbytes]') "
                          "on a machine with a CUDA GPU") from None
    import torch
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype(cfg) if cfg.command == "train"
                              and (cfg.bf16 or cfg.fp16) else torch.float32,
                              bnb_4bit_use_double_quant=cfg.double_quantization,
                              bnb_4bit_quant_type=cfg.quantization_type)


_UNSET = object()


def load_model(cfg: Config, tokenizer, path: str | None = None, model_class=None, what: str = "model",
               quantization_bit=_UNSET, **extra):
    """Load the model (no adapters yet) in the dtype and attention implementation the options ask for: a causal LM
    unless ``model_class`` says otherwise (e.g. AutoModelForSequenceClassification with ``num_labels=1``).
    ``quantization_bit`` overrides the option for a second model (the reference or reward model's own setting)."""
    if model_class is None:
        from transformers import AutoModelForCausalLM as model_class

    path = os.path.expanduser(path or cfg.model_name_or_path)
    kwargs = dict(_hub_kwargs(cfg), dtype=compute_dtype(cfg), low_cpu_mem_usage=cfg.low_cpu_mem_usage, **extra)
    attn = attention_implementation(cfg)
    if attn:
        kwargs["attn_implementation"] = attn
    bits = cfg.quantization_bit if quantization_bit is _UNSET else quantization_bit
    qconfig = quantization_config(cfg, bits) if bits is not None else None
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        use_auto = cfg.command != "train" and cfg.quantization_device_map == "auto"
        kwargs["device_map"] = "auto" if use_auto else {"": int(os.environ.get("LOCAL_RANK", "0"))}
        kwargs["offload_folder"] = cfg.offload_folder
    moe_coef = cfg.moe_aux_loss_coef
    try:
        if cfg.train_from_scratch and cfg.command == "train":
            model = _from_config(model_class, path, cfg, kwargs, moe_coef)
        else:
            config_keys = list(extra)
            if moe_coef is not None:
                kwargs.update(router_aux_loss_coef=moe_coef, output_router_logits=cfg.command == "train")
                config_keys += ["router_aux_loss_coef", "output_router_logits"]
            if cfg.rope_scaling:
                from tunery.model.rope import scaled_config

                kwargs["config"] = scaled_config(cfg, path, _hub_kwargs(cfg), {k: kwargs.pop(k) for k in config_keys})
            model = model_class.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error(what, path, err) from None
    except pickle.UnpicklingError:  # transformers loads .bin weights with weights_only=True and refused one
        from tunery.utils.safe_load import refused_file, unsafe_file

        raise unsafe_file(path) or refused_file(path) from None
    if cfg.enable_liger_kernel:
        _apply_liger(model)
    vocab = len(tokenizer)
    before = model.get_input_embeddings().weight.shape[0]
    resize = cfg.resize_vocab or vocab_extended(tokenizer)  # asked, or this run's tokenizer gained tokens
    if resize or before < vocab:
        logger.info("resizing embeddings to the tokenizer's %d tokens", vocab)
        model.resize_token_embeddings(vocab, pad_to_multiple_of=64 if resize else None)
        if resize:
            mark_vocab_extended(model)  # adapters train and save the embeddings with the new rows
        if before < vocab:
            from tunery.model.tokens import initialise_new_embeddings

            initialise_new_embeddings(model, tokenizer, cfg, before)
    if cfg.command != "train":
        model.config.use_cache = cfg.use_kv_cache
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.use_cache = cfg.use_kv_cache
    return model


def load_reward_model(cfg: Config, tokenizer, path: str | None = None):
    """A sequence-classification model with a 1-output `score` head: new (randomly initialised) on a causal LM
    checkpoint, or the trained one of a full reward model folder. The reward is read at the last non-pad token."""
    from transformers import AutoModelForSequenceClassification

    model = load_model(cfg, tokenizer, path, model_class=AutoModelForSequenceClassification, what="reward model",
                       num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        logger.warning("pad token = eos token: the reward is read at the last token before the final eos")
    return model


def _from_config(model_class, path, cfg: Config, kwargs, moe_coef):
    """train_from_scratch: the model's architecture from its config, with freshly initialised weights."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, **_hub_kwargs(cfg))
    if moe_coef is not None:
        config.router_aux_loss_coef = moe_coef
        config.output_router_logits = True
    for key in ("num_labels",):
        if key in kwargs:
            setattr(config, key, kwargs[key])
    if cfg.rope_scaling:
        from tunery.model.rope import apply_rope_scaling

        apply_rope_scaling(config, cfg, path)
    attn = kwargs.get("attn_implementation")
    logger.info("train_from_scratch: %s weights initialised randomly from its config", path)
    return model_class.from_config(config, dtype=kwargs["dtype"], trust_remote_code=cfg.trust_remote_code,
                                   **({"attn_implementation": attn} if attn else {}))


def _apply_liger(model) -> None:
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError:
        raise TuneryError("enable_liger_kernel needs liger-kernel and a GPU — pip install 'tunery[liger]'") from None
    _apply_liger_kernel_to_instance(model=model)
