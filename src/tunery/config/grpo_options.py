"""Options of stage grpo, under the names of TRL's GRPOConfig (and its defaults), plus the built-in rewards' own.

Sampling uses the generation options ``temperature``, ``top_p``, ``top_k`` and ``repetition_penalty`` when they are
set; left unset, grpo samples with TRL's defaults (1.0, 1.0, 0 = off, 1.0) rather than the chat defaults
(0.95, 0.7, 50): RL needs the policy's own distribution. ``max_new_tokens`` is not used: ``max_completion_length``
bounds a completion.
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING

from tunery.config.option import Option, Rule, non_negative, positive
from tunery.config.stages import names_text, stages_using, uses
from tunery.errors import ConfigError

if TYPE_CHECKING:
    from tunery.config.loader import Config

R = "method: rlhf"

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none", "true", "false")
# generation options whose unset value means TRL's default under stage grpo
SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}


def _regex(value) -> str | None:
    try:
        re.compile(value)
    except re.error as err:
        return f"not a regular expression ({err}) — fix the pattern"
    return None


def _at_least_two(value) -> str | None:
    return None if value >= 2 else "GRPO compares completions of the same prompt: use 2 or more (8 is usual)"


def _scale_rewards(value) -> str | None:
    return None if str(value).lower() in SCALE_REWARDS else "choose one of: group, batch, none"


OPTIONS = [
    Option("reward_funcs", "list", None, "Rewards of stage grpo, comma-separated: accuracy (the final answer — "
           "<answer> text, last \\boxed{}, or last number — equals the record's answer/solution/reference column), "
           "format (R1's <think>…</think><answer>…</answer>, or format_pattern), length (length_target, or a "
           "token-budget penalty), reward_model (reward_model as for ppo), or path/to/rewards.py:function with TRL's "
           "signature f(prompts, completions, **kwargs) -> list of floats (None where it does not apply).", R),
    Option("reward_weights", "list", None, "Weight of each reward in reward_funcs (default: 1 each).", R),
    Option("num_generations", "int", 8, "Completions sampled per prompt (the group GRPO compares). The generation "
           "batch (per_device_train_batch_size × devices × gradient_accumulation_steps, or generation_batch_size) "
           "must be a multiple of it.", R, check=_at_least_two),
    Option("max_completion_length", "int", 512, "Most tokens per completion (grpo; max_new_tokens is for chat).",
           R, check=positive),
    Option("beta", "float", 0.0, "KL coefficient against the starting policy (0: no reference model is loaded; "
           "DeepSeek-R1 used 0.001).", R, check=non_negative, advanced=True),
    Option("epsilon", "float", 0.2, "Lower clipping range of the importance ratio.", R, check=positive,
           advanced=True),
    Option("epsilon_high", "float", None, "Upper clipping range (default: epsilon; DAPO's clip-higher: 0.28).", R,
           check=positive, advanced=True),
    Option("loss_type", "str", "dapo", "How token losses are averaged: grpo (per sequence, then per batch), dr_grpo "
           "(by a constant: Dr. GRPO), dapo (over the tokens of the whole accumulated batch), bnpo (over the local "
           "batch's tokens), cispo, sapo, luspo, vespo — see docs/training.md.", R, choices=LOSS_TYPES,
           advanced=True),
    Option("importance_sampling_level", "str", "token", "Importance ratio per token, or per sequence (GSPO).", R,
           choices=("token", "sequence"), advanced=True),
    Option("scale_rewards", "str", "group", "Divide advantages by the reward std of the group, of the batch, or "
           "none (Dr. GRPO).", R, check=_scale_rewards, advanced=True),
    Option("mask_truncated_completions", "bool", False, "Leave completions cut at max_completion_length out of the "
           "loss (DAPO).", R, advanced=True),
    Option("num_iterations", "int", 1, "Optimisation passes over each generation batch (μ in the GRPO paper).", R,
           check=positive, advanced=True),
    Option("generation_batch_size", "int", None, "Completions generated at once (default: per_device_train_batch_"
           "size × devices × gradient_accumulation_steps); a multiple of the per-step batch.", R, check=positive,
           advanced=True),
    Option("use_vllm", "bool", False, "Generate with vLLM (CUDA; pip install 'tunery[vllm]').", R, advanced=True),
    Option("vllm_mode", "str", "colocate", "colocate (vLLM shares the training GPUs) or server (a `trl vllm-serve` "
           "process at vllm_server_base_url).", R, choices=("colocate", "server"), advanced=True),
    Option("vllm_server_base_url", "str", None, "URL of the vLLM server for vllm_mode server (default: "
           "http://0.0.0.0:8000).", R, advanced=True),
    Option("vllm_gpu_memory_utilization", "float", 0.3, "Share of GPU memory vLLM takes in vllm_mode colocate.", R,
           check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]", advanced=True),
    Option("format_pattern", "str", None, "Regular expression the whole completion must match for the format "
           "reward (default: <think>…</think><answer>…</answer>).", R, check=_regex, advanced=True),
    Option("length_target", "int", None, "The length reward's target in characters: 1 at the target, falling to 0 "
           "at 0 or twice it. Unset: a penalty of −(completion tokens) / max_completion_length.", R, check=positive,
           advanced=True),
]

GRPO_ONLY = ("reward_funcs", "reward_weights", "num_generations", "max_completion_length", "loss_type",
             "importance_sampling_level", "use_vllm", "format_pattern", "length_target")


def _grpo(cfg: Config) -> None:
    where = cfg.where
    if not uses(cfg.stage, "reward_funcs"):
        given = [n for n in GRPO_ONLY if n in cfg.explicit]
        if given:
            which = stages_using("reward_funcs")
            raise ConfigError(f"{where}: option '{given[0]}' is used by stage {names_text(which)} only (stage is "
                              f"{cfg.stage}) — set stage: {which[0]} or drop {given[0]}")
        return
    from tunery.config.reward_specs import check_reward_specs

    if not cfg.do_train:
        raise ConfigError(f"{where}: stage grpo only trains — set do_train: true")
    if not cfg.reward_funcs:
        raise ConfigError(f"{where}: stage grpo needs option 'reward_funcs' — e.g. reward_funcs: accuracy,format "
                          "(built-ins: accuracy, format, length, reward_model) or path/to/rewards.py:my_reward")
    if cfg.reward_weights is not None:
        try:
            weights = [float(w) for w in cfg.reward_weights]
        except ValueError:
            raise ConfigError(f"{where}: option 'reward_weights' = {cfg.reward_weights!r}: expects numbers, e.g. "
                              "reward_weights: 1.0,0.5") from None
        if len(weights) != len(cfg.reward_funcs):
            raise ConfigError(f"{where}: reward_weights has {len(weights)} value(s) for {len(cfg.reward_funcs)} "
                              f"reward function(s) ({', '.join(cfg.reward_funcs)}) — give one weight per reward")
    check_reward_specs(list(cfg.reward_funcs))
    if cfg.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"{where}: use_vllm needs the vllm package (and a CUDA GPU) — pip install "
                          "'tunery[vllm]', or drop use_vllm to generate with transformers")


RULES = [Rule(_grpo, frozenset({"train"}))]
