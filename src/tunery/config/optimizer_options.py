"""Memory-saving and alternative optimizers (LLaMA-Factory's FinetuningArguments names): GaLore, APOLLO, BAdam,
Adam-mini and Muon. Each comes from the library that implements it (an optional extra, imported when the run
starts); transformers' `optim` picks the variant where the library has several (GaLore: adamw_torch, adamw_8bit,
adafactor)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from tunery.config.option import Option, Rule, positive
from tunery.errors import ConfigError

if TYPE_CHECKING:
    from tunery.config.loader import Config

G = "optimizer"

# option -> (python module, pip package, Tunery extra) of the library that implements it
LIBRARIES = {
    "use_galore": ("galore_torch", "galore-torch", "galore"),
    "use_apollo": ("apollo_torch", "apollo-torch", "apollo"),
    "use_badam": ("badam", "badam", "badam"),
    "use_adam_mini": ("adam_mini", "adam-mini", "adam-mini"),
}
GALORE_OPTIMS = ("adamw_torch", "adamw_torch_fused", "adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit", "adafactor")


def _interval(value):
    return None if value == -1 or value > 0 else "must be greater than 0 (or -1 for never)"


OPTIONS = [
    # GaLore (Zhao et al. 2024): gradients of the targeted linear weights are projected to a low rank.
    Option("use_galore", "bool", False, "GaLore optimizer (full fine-tuning): the gradients of the targeted linear "
           "weights are projected to galore_rank (needs galore-torch).", G),
    Option("galore_target", "list", ["all"], "Linear modules whose weights get GaLore: 'all' (every linear layer but "
           "the output head) or names like mlp,self_attn (substring match).", G, advanced=True),
    Option("galore_rank", "int", 16, "Rank of the GaLore gradient projection.", G, check=positive, advanced=True),
    Option("galore_update_interval", "int", 200, "Steps between two updates of the GaLore projection.", G,
           check=positive, advanced=True),
    Option("galore_scale", "float", 2.0, "GaLore scaling of the projected update.", G, check=positive, advanced=True),
    Option("galore_proj_type", "str", "std", "GaLore projection type.", G,
           choices=("std", "reverse_std", "right", "left", "full"), advanced=True),
    Option("galore_layerwise", "bool", False, "Update each weight as soon as its gradient is ready (saves the "
           "gradient memory; needs gradient_accumulation_steps 1, one process; the logged grad_norm is 0).", G,
           advanced=True),
    # APOLLO (Zhu et al. 2025): SGD-like memory, AdamW-level performance through channel-wise learning-rate scaling.
    Option("use_apollo", "bool", False, "APOLLO optimizer (full fine-tuning): AdamW with low-rank auxiliary states "
           "(needs apollo-torch).", G),
    Option("apollo_target", "list", ["all"], "Linear modules whose weights get APOLLO: 'all' or names (substring "
           "match).", G, advanced=True),
    Option("apollo_rank", "int", 16, "Rank of the APOLLO auxiliary space.", G, check=positive, advanced=True),
    Option("apollo_update_interval", "int", 200, "Steps between two updates of the APOLLO projection.", G,
           check=positive, advanced=True),
    Option("apollo_scale", "float", 32.0, "APOLLO scaling coefficient.", G, check=positive, advanced=True),
    Option("apollo_proj", "str", "random", "APOLLO projection: random or svd.", G, choices=("svd", "random"),
           advanced=True),
    Option("apollo_proj_type", "str", "std", "APOLLO projection type.", G, choices=("std", "right", "left"),
           advanced=True),
    Option("apollo_scale_type", "str", "channel", "APOLLO gradient scaling: per channel or per tensor.", G,
           choices=("channel", "tensor"), advanced=True),
    Option("apollo_layerwise", "bool", False, "Layer-wise APOLLO updates (as galore_layerwise).", G, advanced=True),
    Option("apollo_scale_front", "bool", False, "Scale the gradient before APOLLO's norm-growth limiter instead of "
           "after it.", G, advanced=True),
    # BAdam (Luo et al. 2024): block coordinate descent, one block of layers trained at a time.
    Option("use_badam", "bool", False, "BAdam optimizer (full fine-tuning): Adam on one block of parameters at a "
           "time (needs badam).", G),
    Option("badam_mode", "str", "layer", "layer: one decoder layer at a time, switched every badam_switch_interval "
           "steps; ratio: a random badam_update_ratio share of every weight.", G, choices=("layer", "ratio"),
           advanced=True),
    Option("badam_start_block", "int", None, "Layer-wise BAdam: index of the first block trained.", G,
           advanced=True),
    Option("badam_switch_mode", "str", "ascending", "Layer-wise BAdam: order in which blocks are trained.", G,
           choices=("ascending", "descending", "random", "fixed"), advanced=True),
    Option("badam_switch_interval", "int", 50, "Layer-wise BAdam: steps before the next block (-1: never switch).",
           G, check=_interval, advanced=True),
    Option("badam_update_ratio", "float", 0.05, "Ratio-wise BAdam: share of each weight updated.", G,
           check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]", advanced=True),
    Option("badam_mask_mode", "str", "adjacent", "Ratio-wise BAdam: the updated entries are adjacent or scattered.",
           G, choices=("adjacent", "scatter"), advanced=True),
    Option("badam_verbose", "int", 0, "BAdam printing: 0 none, 1 the active block, 2 also its parameters.", G,
           choices=(0, 1, 2), advanced=True),
    # Adam-mini (Zhang et al. 2024) and Muon (Jordan et al. 2024)
    Option("use_adam_mini", "bool", False, "Adam-mini optimizer: one second-moment value per parameter block "
           "(attention head, neuron) instead of per weight (needs adam-mini).", G),
    Option("use_muon", "bool", False, "Muon optimizer: orthogonalised momentum for the 2-D hidden weights, AdamW for "
           "embeddings, the output head, norms and biases (torch's own torch.optim.Muon).", G),
]

_CHOICES = ("use_galore", "use_apollo", "use_badam", "use_adam_mini", "use_muon")


def _one_optimizer(cfg: Config) -> None:
    chosen = [name for name in _CHOICES if cfg.values[name]]
    if not chosen:
        return
    if len(chosen) > 1:
        raise ConfigError(f"{cfg.where}: options {' and '.join(chosen)} each choose the optimizer — keep one")
    name = chosen[0]
    if cfg.loraplus_lr_ratio:
        raise ConfigError(f"{cfg.where}: loraplus_lr_ratio and {name} each choose the optimizer — keep one")
    if name in ("use_galore", "use_apollo", "use_badam") and cfg.finetuning_type in ("lora", "oft"):
        raise ConfigError(f"{cfg.where}: {name} trains the full weights — set finetuning_type: full (or freeze), "
                          f"not {cfg.finetuning_type}")
    if name == "use_galore" and cfg.optim not in GALORE_OPTIMS:
        raise ConfigError(f"{cfg.where}: use_galore works with optim adamw_torch (or the default adamw_torch_fused), adamw_8bit or adafactor (got "
                          f"{cfg.optim}) — change optim")
    layerwise = (name == "use_galore" and cfg.galore_layerwise) or (name == "use_apollo" and cfg.apollo_layerwise)
    if layerwise and cfg.gradient_accumulation_steps != 1:
        kind = name[4:]
        raise ConfigError(f"{cfg.where}: {kind}_layerwise updates each weight during backward, so it cannot "
                          f"accumulate gradients — set gradient_accumulation_steps: 1 (got "
                          f"{cfg.gradient_accumulation_steps}) or {kind}_layerwise: false")
    if name in LIBRARIES:
        module, package, extra = LIBRARIES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"{cfg.where}: option '{name}' needs the {package} package — pip install "
                              f"'tunery[{extra}]' (or pip install {package}), or drop {name}")
    if name == "use_muon":
        import torch

        if not hasattr(torch.optim, "Muon"):
            raise ConfigError(f"{cfg.where}: use_muon needs torch.optim.Muon (torch 2.9 or later; this is torch "
                              f"{torch.__version__}) — upgrade torch or drop use_muon")


RULES = [Rule(_one_optimizer, frozenset({"train"}))]
