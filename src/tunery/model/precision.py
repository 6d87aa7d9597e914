"""Mixed-precision helpers for the model being trained (LLaMA-Factory's ``upcast_layernorm`` and
``upcast_lmhead_output``): applied before the fine-tuning method, no-ops for a model loaded in fp32."""

from __future__ import annotations

from tunery.utils.logging import get_logger

logger = get_logger(__name__)

LAYERNORM_NAMES = ("norm", "ln")  # LLaMA-Factory's: input_layernorm, post_attention_layernorm, model.norm, ln_f, ...


def upcast_layernorms(model) -> int:
    """Layer-norm weights (1-D parameters named *norm* / *ln*) in fp32; returns how many were cast."""
    import torch

    cast = 0
    for name, param in model.named_parameters():
        if param.ndim == 1 and param.dtype != torch.float32 and any(n in name for n in LAYERNORM_NAMES):
            param.data = param.data.to(torch.float32)
            cast += 1
    return cast


def _fp32_output(module, args, output):
    import torch

    return output.to(torch.float32)


def upcast_lmhead_output(model) -> bool:
    """The output layer's logits cast to fp32 (a forward hook) when its weights are in half precision."""
    import torch

    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.weight.dtype == torch.float32:
        return False
    head.register_forward_hook(_fp32_output)
    return True


def apply_upcasts(model, cfg):
    """``upcast_layernorm`` / ``upcast_lmhead_output`` on the model to train."""
    if cfg.upcast_layernorm:
        logger.info("upcast_layernorm: %d layer-norm weights in float32", upcast_layernorms(model))
    if cfg.upcast_lmhead_output and upcast_lmhead_output(model):
        logger.info("upcast_lmhead_output: the lm_head's output is cast to float32")
    return model
