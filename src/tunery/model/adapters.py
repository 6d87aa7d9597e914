"""Fine-tuning methods on a loaded model: LoRA (and variants), freeze, full; loading and merging adapters."""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING

from tunery.errors import TuneryError
from tunery.model.tokens import vocab_extended
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)


HEADS = ("lm_head", "score", "classifier", "v_head")  # output heads: trained in full when trained, never LoRA


def is_reward_model(model) -> bool:
    """A sequence-classification model (stage rm, or a ppo reward model): its `score` head outputs the reward."""
    return type(model).__name__.endswith("ForSequenceClassification")


def linear_module_names(model) -> list[str]:
    """Names (last component) of every linear layer except the output head — LLaMA-Factory's `lora_target: all`."""
    import torch

    output = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        if module is output or name.split(".")[-1] in HEADS:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(name.split(".")[-1])
    return sorted(names)


def _model_names(value: str | None) -> set[str]:
    """The names a model is known by, for comparing: as given, its resolved folder, its folder name, and the hub id
    of a hub cache folder (models--org--name/snapshots/HASH)."""
    if not value:
        return set()
    text = str(value).rstrip("/\\")
    names = {text, os.path.basename(os.path.normpath(text)).lower()}
    expanded = os.path.expanduser(text)
    if os.path.exists(expanded):
        names.add(os.path.realpath(expanded))
    cached = re.search(r"models--([^/\\]+?)--([^/\\]+)(?:[/\\]snapshots|$)", text)
    if cached:
        names |= {f"{cached.group(1)}/{cached.group(2)}", cached.group(2).lower()}
    if "/" in text and not os.path.exists(expanded):  # a hub id: org/name
        names.add(text.split("/")[-1].lower())
    return names


def _same_model(recorded: str, model) -> bool:
    config = getattr(model, "config", None)
    loaded = {getattr(config, "_name_or_path", None), getattr(model, "name_or_path", None)}
    known = set().union(*(_model_names(v) for v in loaded if v))
    return not known or bool(_model_names(recorded) & known)


def _adapter_header(weights: str) -> dict:
    """{tensor name: shape} of an adapter's safetensors file; a corrupt or truncated file is one line naming it."""
    import safetensors

    try:
        with safetensors.safe_open(weights, framework="pt") as fh:
            return {key: fh.get_slice(key).get_shape() for key in fh.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for every kind of damage
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TuneryError(f"{weights}: not a readable safetensors file ({reason}) — the adapter is corrupt or "
                          "truncated; save or copy it again") from None


def _check_adapter_base(model, adapter_path: str) -> None:
    """An adapter trained on another base: different shapes fail with both names and a fix instead of a shape
    traceback; the same shapes but another recorded base model is a warning."""
    config_file = os.path.join(adapter_path, "adapter_config.json")
    if not os.path.isfile(config_file):
        return
    try:
        with open(config_file, encoding="utf-8") as fh:
            base = json.load(fh).get("base_model_name_or_path")
    except (ValueError, UnicodeDecodeError) as err:
        raise TuneryError(f"{config_file}: not valid JSON ({err}) — the adapter is damaged; save it again") from None
    weights = os.path.join(adapter_path, "adapter_model.safetensors")
    if not os.path.isfile(weights):
        return
    params = dict(model.named_parameters())
    for key, shape in _adapter_header(weights).items():
        if "lora_A" not in key:
            continue
        target = re.sub(r"^base_model\.model\.", "", key).replace(".lora_A.weight", ".weight")
        if target in params and params[target].shape[-1] != shape[-1]:
            raise TuneryError(f"adapter '{adapter_path}' was trained on another base model ({base}): its "
                              f"{target} expects input size {shape[-1]}, the loaded model has "
                              f"{params[target].shape[-1]} — load it with the model it was trained on")
    if base and not _same_model(base, model):
        loaded = getattr(getattr(model, "config", None), "_name_or_path", None)
        logger.warning("adapter '%s' was trained on '%s', but the model loaded is '%s' — check model_name_or_path "
                       "(the shapes match, so it loads, but the answers may be nonsense)", adapter_path, base, loaded)


def load_adapters(model, cfg: Config, is_trainable: bool):
    """Apply `adapter_name_or_path`: merge all of them (inference) or all but the last, which keeps training."""
    from peft import PeftModel

    adapters = list(cfg.adapter_name_or_path or [])
    if not adapters:
        return model
    if cfg.finetuning_type not in ("lora", "oft"):
        raise TuneryError("adapter_name_or_path needs finetuning_type: lora (or oft)")
    resume = is_trainable and not cfg.create_new_adapter
    to_merge, to_resume = (adapters[:-1], adapters[-1]) if resume else (adapters, None)
    for path in to_merge:
        _check_adapter_base(model, path)
        model = _peft_load(PeftModel, model, path).merge_and_unload()
    if to_merge:
        logger.info("merged %d adapter(s): %s", len(to_merge), ", ".join(to_merge))
    if to_resume:
        _check_adapter_base(model, to_resume)
        model = _peft_load(PeftModel, model, to_resume, is_trainable=True)
        logger.info("continuing training of adapter %s", to_resume)
    return model


def _peft_load(peft_class, model, path: str, **kwargs):
    """PeftModel.from_pretrained; an adapter_model.bin that weights_only loading refuses is one line naming it."""
    import pickle

    try:
        return peft_class.from_pretrained(model, path, **kwargs)
    except pickle.UnpicklingError:
        from tunery.utils.safe_load import refused_file, unsafe_file

        raise unsafe_file(path) or refused_file(path) from None


def adapter_targets(model, cfg: Config, option: str) -> list[str]:
    """The module names of `lora_target`/`oft_target` ('all': every linear layer but the heads); with use_llama_pro
    only those inside the expanded blocks."""
    targets = list(cfg.values[option])
    if targets == ["all"]:
        targets = linear_module_names(model)
    else:
        present = set(linear_module_names(model))
        missing = [t for t in targets if t not in present]
        if missing:
            raise TuneryError(f"{option}: {', '.join(missing)} not found in the model — its linear layers are: "
                              f"{', '.join(sorted(present))} (or use 'all')")
    if cfg.use_llama_pro:
        from tunery.model.llama_pro import expanded_modules

        targets = expanded_modules(model, targets, cfg.freeze_trainable_layers)
    return targets


def _keep_trainable_fp32(model, cfg: Config):
    # Trainable weights stay fp32 even when the base is loaded in half precision (stable updates).
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32 and not cfg.pure_bf16:
            param.data = param.data.float()
    return model


def setup_oft(model, cfg: Config):
    """OFT (orthogonal fine-tuning) through PEFT's OFTConfig: oft_rank or oft_block_size, module_dropout."""
    from peft import OFTConfig, PeftModel, TaskType, get_peft_model

    if isinstance(model, PeftModel):
        return model
    config = OFTConfig(task_type=TaskType.SEQ_CLS if is_reward_model(model) else TaskType.CAUSAL_LM,
                       r=cfg.oft_rank, oft_block_size=cfg.oft_block_size, module_dropout=cfg.module_dropout,
                       target_modules=adapter_targets(model, cfg, "oft_target"),
                       modules_to_save=list(cfg.additional_target) if cfg.additional_target else None)
    return _keep_trainable_fp32(get_peft_model(model, config), cfg)


def pissa_init_weights(cfg: Config):
    """PEFT's init_lora_weights for pissa_init: fast SVD with pissa_iter iterations, or the exact SVD (-1)."""
    if not cfg.pissa_init:
        return True
    return "pissa" if cfg.pissa_iter == -1 else f"pissa_niter_{cfg.pissa_iter}"


def _modules_to_save(model, cfg: Config) -> list[str] | None:
    """additional_target; when new tokens resized the vocabulary (and none is given), the embeddings and the output
    head, so the new rows are trained and saved with the adapter (LLaMA-Factory's rule)."""
    if cfg.additional_target:
        return list(cfg.additional_target)
    if (cfg.resize_vocab or vocab_extended(model)) and not is_reward_model(model):
        wanted = {model.get_input_embeddings(), model.get_output_embeddings()}
        names = sorted({name.split(".")[-1] for name, module in model.named_modules() if module in wanted})
        logger.info("vocabulary resized: %s trained in full and saved with the adapter", ", ".join(names))
        return names or None
    return None


def setup_lora(model, cfg: Config):
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    if isinstance(model, PeftModel):
        return model  # continuing an adapter loaded by load_adapters
    targets = adapter_targets(model, cfg, "lora_target")
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS if is_reward_model(model) else TaskType.CAUSAL_LM,  # SEQ_CLS trains `score` too
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha or cfg.lora_rank * 2,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        modules_to_save=_modules_to_save(model, cfg),
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        init_lora_weights=pissa_init_weights(cfg),
    )
    return _keep_trainable_fp32(get_peft_model(model, config), cfg)


def setup_freeze(model, cfg: Config):
    num_layers = model.config.num_hidden_layers
    n = cfg.freeze_trainable_layers
    if cfg.use_llama_pro:
        from tunery.model.llama_pro import expanded_layer_ids

        layer_ids = expanded_layer_ids(num_layers, n)
    else:
        layer_ids = range(max(0, num_layers - n), num_layers) if n > 0 else range(min(-n, num_layers))
    modules = list(cfg.freeze_trainable_modules)
    extra = list(cfg.freeze_extra_modules or [])
    pattern = re.compile(r"\.layers\.(\d+)\.")
    reward = is_reward_model(model)
    trainable = 0
    for name, param in model.named_parameters():
        match = pattern.search(name)
        in_layer = match is not None and int(match.group(1)) in layer_ids
        module_ok = modules == ["all"] or any(f".{m}." in name for m in modules)
        is_head = reward and ("." + name).endswith((".score.weight", ".score.bias"))  # a new reward head: trained
        param.requires_grad = (in_layer and module_ok) or any(e in name for e in extra) or is_head
        trainable += param.requires_grad
    if not trainable:
        raise TuneryError(f"freeze_trainable_modules {modules} matched no parameter in layers "
                          f"{list(layer_ids)} — check the module names")
    return model


def prepare_for_training(model, cfg: Config):
    """Attach the fine-tuning method; return the model ready for the Trainer."""
    from tunery.model.precision import apply_upcasts

    apply_upcasts(model, cfg)
    asked = cfg.values.get("activation_checkpointing") or cfg.values.get("gradient_checkpointing")
    if not cfg.disable_gradient_checkpointing and asked:
        kwargs = (cfg.values.get("activation_checkpointing_kwargs") or cfg.values.get("gradient_checkpointing_kwargs")
                  or {})
        reentrant = bool(cfg.use_reentrant_gc)
        kwargs = {"use_reentrant": reentrant, **(kwargs if isinstance(kwargs, dict) else {})}
        reentrant = kwargs["use_reentrant"]
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.x's name (the old one warns)
            extra = {k: kwargs.pop(k) for k in ("every_n_layers", "offload") if k in kwargs}
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, **extra)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
        if cfg.finetuning_type in ("lora", "oft") or reentrant:
            model.enable_input_require_grads()  # reentrant checkpoints need an input that requires grad
    model = load_adapters(model, cfg, is_trainable=True)
    if cfg.finetuning_type == "lora":
        model = setup_lora(model, cfg)
    elif cfg.finetuning_type == "oft":
        model = setup_oft(model, cfg)
    elif cfg.finetuning_type == "freeze":
        model = setup_freeze(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("trainable params: %s || all params: %s || trainable%%: %.4f", f"{trainable:,}", f"{total:,}",
                100 * trainable / max(total, 1))
    if cfg.print_param_status:
        for name, param in model.named_parameters():
            print(f"{name}: {param.dtype} {param.device} trainable={param.requires_grad}")
    return model
