"""Stage and fine-tuning method options (LLaMA-Factory's FinetuningArguments names)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tunery.config.option import Option, Rule, non_negative, positive, probability
from tunery.config.stages import STAGES as STAGE_TABLE, names_text, stages_using, uses
from tunery.errors import ConfigError

if TYPE_CHECKING:
    from tunery.config.loader import Config

G = "method"
L = "method: lora"
F = "method: freeze"
R = "method: rlhf"

STAGES = tuple(STAGE_TABLE)  # config/stages.py: one row per stage
ADAPTER_TYPES = ("lora", "oft")  # methods that train a PEFT adapter (saved as adapter_model.safetensors)
# LLaMA-Factory's pref_loss values, then TRL's further DPOTrainer losses (train/dpo.py maps them onto TRL).
PREF_LOSSES = ("sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo", "robust", "exo_pair", "nca_pair", "bco_pair",
               "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")

def _below_half(value):
    return None if 0 <= value < 0.5 else "must be at least 0 and below 0.5"


OPTIONS = [
    Option("stage", "str", "sft", "Training stage: " + "; ".join(f"{s.name} ({s.help})" for s in STAGE_TABLE.values())
           + ".", G, choices=STAGES),
    Option("finetuning_type", "str", "lora", "How the model is trained.", G, choices=("lora", "oft", "freeze", "full")),
    Option("plot_loss", "bool", False, "Save training_loss.png (raw and smoothed) after training.", G),
    Option("include_effective_tokens_per_second", "bool", False, "Add effective_tokens_per_sec (non-padding tokens "
           "trained per second and device) to the train metrics (train_results.json).", G, advanced=True),
    Option("compute_accuracy", "bool", False, "Compute token accuracy at evaluation.", G, advanced=True),
    Option("disable_shuffling", "bool", False, "Do not shuffle the training set (batches in dataset order).", G,
           advanced=True),
    Option("pure_bf16", "bool", False, "Train in pure bf16 (no fp32 master weights).", G, advanced=True),
    Option("disable_gradient_checkpointing", "bool", False, "Turn gradient checkpointing off.", G, advanced=True),
    # LoRA
    Option("lora_rank", "int", 8, "LoRA rank r.", L, check=positive),
    Option("lora_alpha", "int", None, "LoRA scale alpha (default: 2 × lora_rank).", L, check=positive),
    Option("lora_dropout", "float", 0.0, "Dropout on the LoRA path.", L, check=probability),
    Option("lora_target", "list", ["all"], "Modules that get LoRA: 'all' (every linear layer but the output head) or "
           "names like q_proj,v_proj.", L),
    Option("additional_target", "list", None, "Extra modules trained in full and saved with the adapter (e.g. "
           "embed_tokens,lm_head).", L, advanced=True),
    Option("loraplus_lr_ratio", "float", None, "LoRA+ learning-rate ratio of B over A.", L, check=positive,
           advanced=True),
    Option("loraplus_lr_embedding", "float", 1e-6, "LoRA+ learning rate of embedding layers.", L, advanced=True),
    Option("use_rslora", "bool", False, "Rank-stabilised LoRA scaling.", L, advanced=True),
    Option("use_dora", "bool", False, "Weight-decomposed LoRA (DoRA).", L, advanced=True),
    Option("pissa_init", "bool", False, "PiSSA initialisation.", L, advanced=True),
    Option("create_new_adapter", "bool", False, "Merge every adapter_name_or_path and train a fresh adapter on top "
           "(default: keep training the last one).", L, advanced=True),
    # freeze
    Option("freeze_trainable_layers", "int", 2, "Train the last N layers (negative: the first N).", F),
    Option("freeze_trainable_modules", "list", ["all"], "Modules trained in those layers ('all' or names).", F),
    Option("freeze_extra_modules", "list", None, "Modules outside the layers also trained.", F, advanced=True),
    # preference / rlhf (used by later stages)
    Option("pref_beta", "float", 0.1, "Beta of the preference loss (dpo, kto, orpo, simpo).", R, check=positive,
           advanced=True),
    Option("pref_ftx", "float", 0.0, "Weight of an SFT loss on the chosen answers added to dpo/kto (on TRL's "
           "DPOTrainer: its 'sft' term, the mean NLL of the batch's chosen tokens).", R, check=non_negative,
           advanced=True),
    Option("pref_loss", "str", "sigmoid", "Loss of stage dpo: sigmoid (DPO), hinge, ipo, kto_pair, orpo, simpo "
           "(orpo and simpo need no reference model; kto_pair, orpo and simpo are Tunery's own, the rest run on TRL's "
           "DPOTrainer), or one of TRL's further DPO losses: robust (label-noise robust DPO, with "
           "dpo_label_smoothing), exo_pair (EXO, dpo_label_smoothing > 0), nca_pair, bco_pair, sppo_hard, aot, "
           "aot_unpaired, apo_zero, apo_down, discopop, sigmoid_norm.", R, choices=PREF_LOSSES, advanced=True),
    Option("pref_bco_weight", "float", 0.0, "Weight w of a BCO term mixed into the dpo loss: (loss + w·bco)/(1 + w) "
           "(TRL's bco_pair, without LLaMA-Factory's running-mean reward shift).", R, check=non_negative,
           advanced=True),
    Option("dpo_label_smoothing", "float", 0.0, "Label smoothing ε of the dpo loss: conservative DPO for sigmoid, "
           "and TRL's robust/exo_pair/aot losses.", R, check=_below_half, advanced=True),
    Option("ld_alpha", "float", None, "LD-DPO: weight of the log-probabilities of the answer tokens past the shorter "
           "answer's length (1 = plain DPO, 0 = only the shared length; TRL's ld_alpha, applied to the policy and "
           "the reference).", R, check=probability, advanced=True),
    Option("kto_chosen_weight", "float", 1.0, "KTO weight of desirable examples.", R, check=positive, advanced=True),
    Option("kto_rejected_weight", "float", 1.0, "KTO weight of undesirable examples.", R, check=positive,
           advanced=True),
    Option("simpo_gamma", "float", 0.5, "SimPO target reward margin.", R, advanced=True),
    Option("ref_model", "str", None, "Reference model for dpo/kto/ppo (default: the model itself before training; "
           "with LoRA, the base without the adapter).", R, advanced=True),
    Option("ref_model_adapters", "str", None, "LoRA adapter merged into ref_model.", R, advanced=True),
    Option("reward_model", "str", None, "Reward model for ppo (and grpo's reward_model reward): the output_dir of a stage rm run (a LoRA adapter for "
           "reward_model_type lora, a full model folder for full) or an http(s) URL for api.", R, advanced=True),
    Option("reward_model_adapters", "str", None, "LoRA adapter merged into a full reward_model.", R, advanced=True),
    Option("reward_model_type", "str", "lora", "Kind of reward_model: lora (adapter on model_name_or_path), full, or "
           "api (POST {model, messages} → {scores}).", R, choices=("lora", "full", "api"), advanced=True),
    Option("ppo_buffer_size", "int", 1, "PPO mini-batches per optimisation step.", R, check=positive, advanced=True),
    Option("ppo_epochs", "int", 4, "PPO epochs per optimisation step.", R, check=positive, advanced=True),
    Option("ppo_score_norm", "bool", False, "Normalise PPO scores.", R, advanced=True),
    Option("ppo_target", "float", 6.0, "Target KL for adaptive control.", R, advanced=True),
    Option("ppo_whiten_rewards", "bool", False, "Whiten rewards before advantages.", R, advanced=True),
]


def _lora_only(cfg: Config) -> None:
    if cfg.finetuning_type not in ADAPTER_TYPES and cfg.adapter_name_or_path and cfg.command == "train":
        raise ConfigError(f"{cfg.where}: option 'adapter_name_or_path' needs finetuning_type: lora or oft "
                          f"(got {cfg.finetuning_type})")
    if cfg.finetuning_type not in ADAPTER_TYPES and cfg.quantization_bit is not None and cfg.command == "train":
        raise ConfigError(f"{cfg.where}: quantization_bit trains a LoRA adapter on a quantized model (QLoRA) — set "
                          f"finetuning_type: lora (got {cfg.finetuning_type}) or drop quantization_bit")


def _unused_method_options(cfg: Config) -> None:
    """LoRA options with full/freeze (or freeze options with lora/full) change nothing: say so, naming them."""
    from tunery.utils.logging import get_logger

    groups = {"lora": L, "freeze": F}
    for method, group in groups.items():
        if cfg.finetuning_type == method:
            continue
        names = sorted(n for n in cfg.explicit if n in _GROUP_NAMES[group])
        if names:
            get_logger(__name__).warning(
                "%s: finetuning_type is %s, so the %s option(s) %s are ignored — drop them, or set "
                "finetuning_type: %s", cfg.where, cfg.finetuning_type, method, ", ".join(names), method)


def _is_dir_with(path: str, name: str) -> bool:
    return os.path.isfile(os.path.join(os.path.expanduser(path), name))


def _ppo_reward(cfg: Config) -> None:
    if not uses(cfg.stage, "reward_model") and not (uses(cfg.stage, "reward_funcs")
                                                    and "reward_model" in (cfg.reward_funcs or [])):
        return
    where, kind, path = cfg.where, cfg.reward_model_type, cfg.reward_model
    if not path:
        raise ConfigError(f"{where}: stage {cfg.stage} needs option 'reward_model' — train one with stage: rm and give its "
                          "output_dir (reward_model_type: lora or full), or an http(s) URL (reward_model_type: api)")
    if kind == "api":
        if not path.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: reward_model_type api needs reward_model to be an http(s) URL, got "
                              f"'{path}' — or set reward_model_type: lora/full for a local reward model")
    elif kind == "lora" and not _is_dir_with(path, "adapter_config.json"):
        hint = " (it holds a full model: set reward_model_type: full)" if _is_dir_with(path, "config.json") else ""
        raise ConfigError(f"{where}: reward_model '{path}' is not a LoRA reward model folder{hint} — give the "
                          "output_dir of a stage rm run with finetuning_type lora")
    elif kind == "full" and not _is_dir_with(path, "config.json"):
        hint = " (it holds a LoRA adapter: set reward_model_type: lora)" if _is_dir_with(
            path, "adapter_config.json") else ""
        raise ConfigError(f"{where}: reward_model '{path}' is not a model folder{hint} — give the output_dir of a "
                          "stage rm run with finetuning_type full or freeze")


def _pref_loss_stage(cfg: Config) -> None:
    if cfg.pref_loss != "sigmoid" and "pref_loss" in cfg.explicit and not uses(cfg.stage, "pref_loss"):
        raise ConfigError(f"{cfg.where}: option 'pref_loss' ({cfg.pref_loss}) is used by stage "
                          f"{names_text(stages_using('pref_loss'))} only (stage is "
                          f"{cfg.stage}) — set stage: {stages_using('pref_loss')[0]} or drop pref_loss")
    if uses(cfg.stage, "pref_loss") and cfg.pref_loss == "exo_pair" and not cfg.dpo_label_smoothing:
        raise ConfigError(f"{cfg.where}: pref_loss exo_pair needs dpo_label_smoothing > 0 (the EXO paper uses 1e-3)")
    if uses(cfg.stage, "pref_loss") and cfg.pref_loss in ("kto_pair", "orpo", "simpo") and (cfg.pref_bco_weight or
                                                                                cfg.ld_alpha is not None):
        raise ConfigError(f"{cfg.where}: pref_bco_weight and ld_alpha work with the losses on TRL's DPOTrainer, not "
                          f"with pref_loss {cfg.pref_loss} — drop them or pick another pref_loss")
    if cfg.ref_model and not os.path.isdir(os.path.expanduser(cfg.ref_model)) and "/" not in cfg.ref_model:
        raise ConfigError(f"{cfg.where}: ref_model '{cfg.ref_model}' is not a model folder — check the path")


_GROUP_NAMES = {group: {o.name for o in OPTIONS if o.group == group} for group in (L, F)}

RULES = [Rule(_lora_only, frozenset({"train"})), Rule(_unused_method_options, frozenset({"train"})),
         Rule(_ppo_reward, frozenset({"train"})), Rule(_pref_loss_stage, frozenset({"train"}))]
