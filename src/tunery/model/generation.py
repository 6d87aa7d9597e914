"""Generation parameters, written once: the sampling values of the options and of a request, the stop tokens and
bounds, and the transformers and vLLM arguments they become (chat engines, api, do_predict, ppo's rollouts; the
batched left-padded loop of do_predict and ppo is train/predict.py's ``generate``).

Greedy decoding is the rule whenever do_sample is off or temperature is (about) 0: the sampling values are then
dropped, so that transformers does not warn about them and vLLM decodes greedily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunery.config.loader import Config

GENERATION_KEYS = ("do_sample", "temperature", "top_p", "top_k", "num_beams", "max_new_tokens", "max_length",
                   "repetition_penalty", "length_penalty")
GREEDY_TEMPERATURE = 1e-5  # a temperature at or below this means greedy decoding


def sampling_params(cfg: Config, overrides: dict | None = None) -> dict:
    """The generation values of a request: the options, overridden by the request's (None = not given).
    temperature 0 means greedy decoding; a positive temperature asked by a request turns sampling on."""
    overrides = overrides or {}
    params = {k: cfg.values[k] for k in GENERATION_KEYS}
    given = {k: v for k, v in overrides.items() if v is not None and k in GENERATION_KEYS}
    params.update(given)
    if params.get("temperature") is not None and params["temperature"] <= GREEDY_TEMPERATURE:
        params["do_sample"] = False
    elif "temperature" in given and "do_sample" not in given:
        params["do_sample"] = True
    if not params["do_sample"]:
        for key in ("temperature", "top_p", "top_k"):
            params.pop(key, None)
    return params


def chat_generate_kwargs(cfg: Config, tokenizer, stop_ids: list[int], context_length: int, prompt_len: int = 0,
                         **overrides) -> dict:
    """transformers generate() arguments for one chat request: its sampling values, max_new_tokens (or max_length)
    bounded by the context left after the prompt, the stop tokens, and its stop strings."""
    params = sampling_params(cfg, overrides)
    room = context_length - prompt_len
    if params.get("max_new_tokens"):
        params.pop("max_length")
        params["max_new_tokens"] = max(1, min(params["max_new_tokens"], room))
    else:
        params.pop("max_new_tokens", None)
        params["max_length"] = min(params["max_length"], context_length)
        if params["max_length"] <= prompt_len:
            params["max_length"] = prompt_len + 1
    params["eos_token_id"] = stop_ids
    params["pad_token_id"] = tokenizer.pad_token_id
    stops = [s for s in (overrides.get("stop") or []) if s]
    if stops:
        params["stop_strings"] = stops
        params["tokenizer"] = tokenizer
    return params


def vllm_sampling(cfg: Config, sampling_class, stop_ids: list[int], context_length: int, prompt_len: int, n: int,
                  overrides: dict):
    """vLLM's SamplingParams (``sampling_class``) for one request, from the same values as transformers gets."""
    p = sampling_params(cfg, overrides)
    max_new = p.get("max_new_tokens") or max(1, p["max_length"] - prompt_len)
    max_new = max(1, min(max_new, context_length - prompt_len))
    sampled = p["do_sample"]
    return sampling_class(
        n=n,
        temperature=p["temperature"] if sampled else 0.0,
        top_p=p["top_p"] if sampled else 1.0,
        top_k=(p["top_k"] or -1) if sampled else -1,
        repetition_penalty=p["repetition_penalty"] or 1.0,
        max_tokens=max_new,
        stop=[s for s in (overrides.get("stop") or []) if s] or None,
        stop_token_ids=stop_ids,
        skip_special_tokens=cfg.skip_special_tokens,
    )


def predict_generate_kwargs(cfg: Config, template, tokenizer) -> dict:
    """transformers generate() arguments for do_predict and ppo's rollouts: the generation options (eval_num_beams
    over num_beams, max_new_tokens; greedy drops the sampling ones), the template's stop tokens, use_kv_cache."""
    params = sampling_params(cfg, {"num_beams": cfg.eval_num_beams or cfg.num_beams})
    params.pop("max_length", None)
    params.update(eos_token_id=template.stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id,
                  use_cache=cfg.use_kv_cache)
    return params

