"""The generation values of a request, shared by every chat backend (transformers, vLLM)."""

from __future__ import annotations

GENERATION_KEYS = ("do_sample", "temperature", "top_p", "top_k", "num_beams", "max_new_tokens", "max_length",
                   "repetition_penalty", "length_penalty")


def sampling_params(cfg, overrides: dict) -> dict:
    """The generation values of a request: the options, overridden by the request's (None = not given).
    temperature 0 means greedy decoding; a positive temperature asked by a request turns sampling on."""
    params = {k: getattr(cfg, k) for k in GENERATION_KEYS}
    given = {k: v for k, v in overrides.items() if v is not None and k in GENERATION_KEYS}
    params.update(given)
    if params.get("temperature") is not None and params["temperature"] <= 1e-5:
        params["do_sample"] = False
    elif "temperature" in given and "do_sample" not in given:
        params["do_sample"] = True
    if not params["do_sample"]:
        for key in ("temperature", "top_p", "top_k"):
            params.pop(key, None)
    return params
