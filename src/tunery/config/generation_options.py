"""Generation options for chat, api and prediction (LLaMA-Factory's GeneratingArguments names)."""

from __future__ import annotations

from tunery.config.option import Option, non_negative, positive

G = "generation"

OPTIONS = [
    Option("do_sample", "bool", True, "Sample (true) or decode greedily (false).", G),
    Option("temperature", "float", 0.95, "Sampling temperature (stage grpo, when unset: TRL's 1.0).", G,
           check=positive),
    Option("top_p", "float", 0.7, "Nucleus sampling: keep the smallest token set with this total probability "
           "(stage grpo, when unset: 1.0).", G,
           check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
    Option("top_k", "int", 50, "Sample among the k most likely tokens (stage grpo, when unset: 0 = all).", G,
           check=non_negative),
    Option("num_beams", "int", 1, "Beams for beam search (1: none).", G, check=positive, advanced=True),
    Option("max_length", "int", 1024, "Maximum total tokens (prompt + reply), used when max_new_tokens is unset.",
           G, check=positive, advanced=True),
    Option("max_new_tokens", "int", 1024, "Maximum tokens generated per reply.", G, check=positive),
    Option("repetition_penalty", "float", 1.0, "Penalty on repeated tokens (1.0: none; stage grpo, when unset: "
           "1.0).", G, check=positive),
    Option("length_penalty", "float", 1.0, "Length penalty for beam search.", G, advanced=True),
    Option("skip_special_tokens", "bool", True, "Hide special tokens in replies.", G, advanced=True),
]

RULES = []
