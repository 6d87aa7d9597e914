"""Models the stages need besides the causal LM: reward models (a value head on the LM, as
AutoModelForSequenceClassification with one label) and frozen reference models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunery.model.load import load_reward_model  # noqa: F401  (reward models load with the other models)
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)


def merge_adapter(model, adapter: str | None):
    if not adapter:
        return model
    from peft import PeftModel

    from tunery.model.adapters import _check_adapter_base

    _check_adapter_base(model, adapter)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload()


def freeze(model):
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


def reference_path(cfg: Config) -> str | None:
    """The model a separate reference is loaded from: ``ref_model``, else the base for full/freeze training; None when
    the policy with its adapter switched off is the reference (LoRA and the other adapters)."""
    from tunery.config.method_options import ADAPTER_TYPES

    if not cfg.ref_model and cfg.finetuning_type in ADAPTER_TYPES:
        return None
    return cfg.ref_model or cfg.model_name_or_path


def load_reference_model(cfg: Config, tokenizer):
    """The frozen reference of dpo/kto/ppo: ``ref_model`` (+ ``ref_model_adapters``) when given; else None for LoRA
    (the policy with its adapter switched off is the reference) and a second copy of the base model otherwise."""
    from tunery.model.load import load_model

    path = reference_path(cfg)
    if path is None:
        return None
    model = load_model(cfg, tokenizer, path=path)
    model = merge_adapter(model, cfg.ref_model_adapters if cfg.ref_model else None)
    logger.info("reference model: %s", path)
    return freeze(model)
