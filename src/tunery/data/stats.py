"""Whole-dataset figures for ``tunery preview``: token lengths, truncation by cutoff_len, trained-token share.

Per record, the untruncated prompt/response lengths come from the template (everything before the last answer is
the prompt) and the kept length from the same encoder the trainer's data goes through, so "truncated" means exactly
that the trainer sees fewer tokens than the record has.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .records import ASSISTANT, IGNORE_INDEX

PERCENTILES = (50, 90, 99)


@dataclass
class LengthStats:
    prompt: list[int] = field(default_factory=list)
    response: list[int] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)  # tokens lost, per truncated record
    measured: int = 0

    def add(self, prompt: int, response: int, full: int, kept: int) -> None:
        self.prompt.append(prompt)
        self.response.append(response)
        self.measured += 1
        if kept < full:
            self.truncated.append(full - kept)


def percentiles(values: list[int]) -> dict:
    """p50/p90/p99/max (nearest rank) of ``values``; all zeros when empty."""
    if not values:
        return {f"p{p}": 0 for p in PERCENTILES} | {"max": 0}
    ordered = sorted(values)
    out = {}
    for p in PERCENTILES:
        rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n), nearest-rank definition
        out[f"p{p}"] = ordered[rank - 1]
    out["max"] = ordered[-1]
    return out


def _record_lengths(record, stage: str, template, tokenizer, cutoff_len: int, options: dict):
    """(prompt, response, full, kept) token counts of one record, or None for a record the encoder refuses."""
    from ..errors import DataError
    from .encode import STAGE_ENCODERS, encode_pairwise, encode_supervised, infer_seqlen
    from .templates.template import text_encoder

    kind = STAGE_ENCODERS[stage]
    eos = 1 if getattr(template, "efficient_eos", False) else 0
    system, tools = record.system or None, record.tools or None
    try:
        if kind == "pretrain":
            full = len(text_encoder(tokenizer)(record.prompt[0]["content"])) + 1
            kept = full if options["packing"] else min(full, cutoff_len)
            return full, 0, full, kept
        if kind == "supervised":
            pairs = template.encode_multiturn(tokenizer, record.prompt + record.response, system, tools)
            tail = len(pairs.pop()[0]) if pairs and pairs[-1][1] is None else 0  # text after the last turn (own template)
            full = sum(len(s) + len(t) for s, t in pairs) + eos + tail
            response = len(pairs[-1][1]) + eos
            example = encode_supervised(record, template, tokenizer, cutoff_len, options["train_on_prompt"],
                                        options["mask_history"])
            return full - response, response, full, len(example["input_ids"])
        if kind == "pairwise":
            example = encode_pairwise(record, template, tokenizer, cutoff_len)
            prompt, chosen = template.encode_oneturn(tokenizer, record.prompt + [record.response[0]], system, tools)
            _, rejected = template.encode_oneturn(tokenizer, record.prompt + [record.response[1]], system, tools)
            response = max(len(chosen), len(rejected)) + eos
            kept = max(len(example["chosen_input_ids"]), len(example["rejected_input_ids"]))
            return len(prompt), response, len(prompt) + response, kept
        response_msgs = record.response[:1] or [{"role": ASSISTANT, "content": ""}]
        prompt, response = template.encode_oneturn(tokenizer, record.prompt + response_msgs, system, tools)
        source_len, target_len = infer_seqlen(len(prompt), len(response) + eos, cutoff_len)
        return len(prompt), len(response) + eos, len(prompt) + len(response) + eos, source_len + target_len
    except DataError:
        return None


def length_stats(records, stage: str, template, tokenizer, cutoff_len: int, train_on_prompt: bool = False,
                 mask_history: bool = False, packing: bool = True) -> LengthStats:
    """Untruncated prompt/response lengths and truncation of every record (``cutoff_len`` as the encoder uses it)."""
    from .encode import STAGE_ENCODERS, bound_texts, text_bound
    from .templates.template import token_cache

    if not (STAGE_ENCODERS.get(stage) == "pretrain" and packing):  # the encoder's own cut of huge texts
        records, _ = bound_texts(records, text_bound(tokenizer, cutoff_len))
    options = {"train_on_prompt": train_on_prompt, "mask_history": mask_history, "packing": packing}
    stats = LengthStats()
    with token_cache(tokenizer):
        for record in records:
            lengths = _record_lengths(record, stage, template, tokenizer, cutoff_len, options)
            if lengths is not None:
                stats.add(*lengths)
    return stats


def trained_share(examples) -> dict:
    """Trained (labelled) tokens over all tokens of the encoded examples (chosen+rejected for ranking data)."""
    total = trained = 0
    for example in examples:
        for prefix in ("", "chosen_", "rejected_"):
            labels = example.get(prefix + "labels")
            ids = example.get(prefix + "input_ids")
            if ids is None or labels is None:
                continue
            if len(ids) != len(labels):  # ppo/predict: labels are the reference answer, nothing is trained on
                return {"tokens": 0, "trained_tokens": 0, "share": None}
            total += len(ids)
            trained += sum(1 for label in labels if label != IGNORE_INDEX)
    return {"tokens": total, "trained_tokens": trained, "share": round(trained / total, 4) if total else 0.0}


def summarize(stats: LengthStats, cutoff_len: int) -> dict:
    lost = stats.truncated
    return {
        "measured_records": stats.measured,
        "prompt_tokens": percentiles(stats.prompt),
        "response_tokens": percentiles(stats.response),
        "cutoff_len": cutoff_len,
        "truncated_records": len(lost),
        "truncated_tokens": {"total": sum(lost), "mean": round(sum(lost) / len(lost), 1) if lost else 0,
                             "max": max(lost) if lost else 0},
    }
