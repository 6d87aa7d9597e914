"""Stage and fine-tuning method options (LLaMA-Factory's FinetuningArguments names)."""

from __future__ import annotations

from tunery.config.option import Option, Rule, non_negative, positive, probability
from tunery.errors import ConfigError

G = "method"
L = "method: lora"
F = "method: freeze"
R = "method: rlhf"

STAGES = ("pt", "sft", "rm", "ppo", "dpo", "kto")
IMPLEMENTED_STAGES = ("sft",)

OPTIONS = [
    Option("stage", "str", "sft", "Training stage.", G, choices=STAGES),
    Option("finetuning_type", "str", "lora", "How the model is trained.", G, choices=("lora", "freeze", "full")),
    Option("plot_loss", "bool", False, "Save training_loss.png (raw and smoothed) after training.", G),
    Option("include_effective_tokens_per_second", "bool", False, "Log non-pad tokens per second.", G, advanced=True),
    Option("compute_accuracy", "bool", False, "Compute token accuracy at evaluation.", G, advanced=True),
    Option("disable_shuffling", "bool", False, "Do not shuffle the training set.", G, advanced=True),
    Option("pure_bf16", "bool", False, "Train in pure bf16 (no fp32 master weights).", G, advanced=True),
    Option("disable_gradient_checkpointing", "bool", False, "Turn gradient checkpointing off.", G, advanced=True),
    Option("use_llama_pro", "bool", False, "LLaMA Pro block expansion.", G, advanced=True, unsupported="LLaMA Pro"),
    Option("use_adam_mini", "bool", False, "Adam-mini optimizer.", G, advanced=True, unsupported="Adam-mini"),
    Option("use_galore", "bool", False, "GaLore optimizer.", G, advanced=True, unsupported="GaLore"),
    Option("use_badam", "bool", False, "BAdam optimizer.", G, advanced=True, unsupported="BAdam"),
    # LoRA
    Option("lora_rank", "int", 8, "LoRA rank r.", L, check=positive),
    Option("lora_alpha", "int", None, "LoRA scale alpha (default: 2 × lora_rank).", L, check=positive),
    Option("lora_dropout", "float", 0.0, "Dropout on the LoRA path.", L, check=probability),
    Option("lora_target", "list", ["all"], "Modules that get LoRA: 'all' (every linear layer but the output head) or "
           "names like q_proj,v_proj.", L),
    Option("additional_target", "list", None, "Extra modules trained in full and saved with the adapter.", L,
           advanced=True),
    Option("loraplus_lr_ratio", "float", None, "LoRA+ learning-rate ratio of B over A.", L, check=positive,
           advanced=True),
    Option("loraplus_lr_embedding", "float", 1e-6, "LoRA+ learning rate of embedding layers.", L, advanced=True),
    Option("use_rslora", "bool", False, "Rank-stabilised LoRA scaling.", L, advanced=True),
    Option("use_dora", "bool", False, "Weight-decomposed LoRA (DoRA).", L, advanced=True),
    Option("pissa_init", "bool", False, "PiSSA initialisation.", L, advanced=True),
    Option("create_new_adapter", "bool", False, "Add a fresh adapter on top of adapter_name_or_path.", L,
           advanced=True),
    # freeze
    Option("freeze_trainable_layers", "int", 2, "Train the last N layers (negative: the first N).", F),
    Option("freeze_trainable_modules", "list", ["all"], "Modules trained in those layers ('all' or names).", F),
    Option("freeze_extra_modules", "list", None, "Modules outside the layers also trained.", F, advanced=True),
    # preference / rlhf (used by later stages)
    Option("pref_beta", "float", 0.1, "Beta of the preference loss.", R, check=non_negative, advanced=True),
    Option("pref_ftx", "float", 0.0, "SFT loss weight added to DPO.", R, check=non_negative, advanced=True),
    Option("pref_loss", "str", "sigmoid", "DPO loss type.", R, choices=("sigmoid", "hinge", "ipo", "kto_pair",
           "orpo", "simpo"), advanced=True),
    Option("dpo_label_smoothing", "float", 0.0, "Robust DPO label smoothing.", R, check=probability, advanced=True),
    Option("kto_chosen_weight", "float", 1.0, "KTO weight of desirable examples.", R, check=positive, advanced=True),
    Option("kto_rejected_weight", "float", 1.0, "KTO weight of undesirable examples.", R, check=positive,
           advanced=True),
    Option("simpo_gamma", "float", 0.5, "SimPO target reward margin.", R, advanced=True),
    Option("ref_model", "str", None, "Reference model for DPO/KTO/PPO.", R, advanced=True),
    Option("ref_model_adapters", "str", None, "Adapters of the reference model.", R, advanced=True),
    Option("reward_model", "str", None, "Reward model for PPO.", R, advanced=True),
    Option("reward_model_adapters", "str", None, "Adapters of the reward model.", R, advanced=True),
    Option("reward_model_type", "str", "lora", "Kind of reward model.", R, choices=("lora", "full", "api"),
           advanced=True),
    Option("ppo_buffer_size", "int", 1, "PPO mini-batches per optimisation step.", R, check=positive, advanced=True),
    Option("ppo_epochs", "int", 4, "PPO epochs per optimisation step.", R, check=positive, advanced=True),
    Option("ppo_score_norm", "bool", False, "Normalise PPO scores.", R, advanced=True),
    Option("ppo_target", "float", 6.0, "Target KL for adaptive control.", R, advanced=True),
    Option("ppo_whiten_rewards", "bool", False, "Whiten rewards before advantages.", R, advanced=True),
]


def _stage_implemented(cfg) -> None:
    if cfg.stage not in IMPLEMENTED_STAGES:
        raise ConfigError(f"{cfg.where}: stage '{cfg.stage}' is not implemented yet (available: "
                          f"{', '.join(IMPLEMENTED_STAGES)}) — use stage: sft")


def _lora_only(cfg) -> None:
    if cfg.finetuning_type != "lora" and cfg.adapter_name_or_path and cfg.command == "train":
        raise ConfigError(f"{cfg.where}: option 'adapter_name_or_path' needs finetuning_type: lora "
                          f"(got {cfg.finetuning_type})")


RULES = [Rule(_stage_implemented, frozenset({"train"})), Rule(_lora_only, frozenset({"train"}))]
