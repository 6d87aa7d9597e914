"""``rope_scaling``: longer contexts through the rotary embedding's parameters, by LLaMA-Factory's rule.

Training: the factor is ``ceil(cutoff_len / max_position_embeddings)``, and when cutoff_len fits the model already
nothing changes (a warning says so). Inference (chat, api, export, eval): the factor is 2. ``dynamic`` and ``yarn``
record the original context length, ``llama3`` also its low/high frequency factors (1 and 4). The values go into
the model config's ``rope_parameters`` (transformers 5.x), whose rotary embedding then computes the scaled
frequencies; ``max_position_embeddings`` grows by the factor.
"""

from __future__ import annotations

import math

from tunery.errors import ConfigError
from tunery.utils.logging import get_logger

logger = get_logger(__name__)


def rope_parameters(cfg, params: dict, max_positions: int) -> dict | None:
    """The rope parameters ``cfg.rope_scaling`` asks for on top of the model's ``params``, or None (no change)."""
    kind = cfg.rope_scaling
    if cfg.command == "train":
        if cfg.cutoff_len <= max_positions:
            logger.warning("rope_scaling %s: cutoff_len %d fits the model's %d positions already — RoPE scaling "
                           "disabled (raise cutoff_len to train longer contexts)", kind, cfg.cutoff_len,
                           max_positions)
            return None
        factor = float(math.ceil(cfg.cutoff_len / max_positions))
    else:
        factor = 2.0
    new = {**params, "rope_type": kind, "factor": factor}
    if kind in ("dynamic", "yarn", "llama3"):
        new["original_max_position_embeddings"] = max_positions
    if kind == "llama3":
        new.update(low_freq_factor=1.0, high_freq_factor=4.0)
    return new


def apply_rope_scaling(config, cfg, model: str) -> None:
    """Set ``config``'s rope parameters for ``cfg.rope_scaling`` (nothing when unset)."""
    if not cfg.rope_scaling:
        return
    params = getattr(config, "rope_parameters", None)
    max_positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(params, dict) or "rope_type" not in params or not max_positions:
        raise ConfigError(f"option 'rope_scaling': {model} has no single set of rotary embedding parameters "
                          "(rope_parameters) in its config — drop rope_scaling for this model")
    new = rope_parameters(cfg, params, int(max_positions))
    if new is None:
        return
    config.rope_parameters = new
    config.max_position_embeddings = int(max_positions * new["factor"])
    logger.info("rope_scaling: %s, factor %g (max positions %d → %d)", new["rope_type"], new["factor"],
                max_positions, config.max_position_embeddings)


def scaled_config(cfg, path: str, hub_kwargs: dict, config_kwargs: dict):
    """The model's config with ``rope_scaling`` applied (``config_kwargs``: attributes the load sets on it)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, **hub_kwargs, **config_kwargs)
    apply_rope_scaling(config, cfg, path)
    return config
