"""All option declarations in one registry, and which groups each command shows."""

from __future__ import annotations

from functools import lru_cache

from tunery.config import (
    data_options,
    eval_options,
    extras_options,
    generation_options,
    grpo_options,
    logging_options,
    method_options,
    model_options,
    optimizer_options,
    refused_options,
    run_options,
    serve_options,
    train_options,
)
from tunery.config.hf_args import hf_options
from tunery.config.option import Option, Rule

_MODULES = (model_options, data_options, method_options, optimizer_options, extras_options, grpo_options,
            train_options, logging_options, generation_options, eval_options, serve_options, run_options,
            refused_options)

# Groups listed by `tunery <command> -h` (every command accepts every option, so LLaMA-Factory YAML files that mix
# training and generation keys work unchanged; options a command does not use are ignored by it).
COMMAND_GROUPS = {
    "train": ("model", "data", "method", "method: lora", "method: oft", "method: freeze", "method: rlhf",
              "optimizer", "output", "logging", "training (transformers)", "generation", "run"),
    "estimate": ("model", "data", "method", "method: lora", "method: freeze", "method: rlhf", "output",
                 "training (transformers)", "estimate"),
    "chat": ("model", "data", "method", "generation", "compare", "inference"),
    "webchat": ("model", "data", "method", "generation", "compare", "inference"),
    "api": ("model", "data", "method", "generation", "inference"),
    "export": ("model", "data", "method", "export"),
    "preview": ("model", "data", "method", "preview"),
    "eval": ("model", "data", "method", "eval", "compare"),
    "webui": ("webui",),
}


@lru_cache(maxsize=1)
def all_options() -> dict[str, Option]:
    """Tunery's declarations plus the installed transformers' TrainingArguments fields."""
    return merged_options(hf_options())


def merged_options(hf: tuple[Option, ...]) -> dict[str, Option]:
    options: dict[str, Option] = {}
    for opt in hf:
        options[opt.name] = opt
    for module in _MODULES:
        for opt in module.OPTIONS:
            if opt.name in options and not options[opt.name].hf:
                raise RuntimeError(f"option {opt.name} declared twice")
            options[opt.name] = opt  # Tunery's declaration wins over the transformers snapshot
    return options


def all_rules() -> list[Rule]:
    return [rule for module in _MODULES for rule in module.RULES]


def options_for(command: str) -> list[Option]:
    groups = COMMAND_GROUPS.get(command, COMMAND_GROUPS["chat"])
    opts = all_options().values()
    return [opt for group in groups for opt in opts if opt.group == group]
