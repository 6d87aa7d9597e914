"""``tunery preview CONFIG [--num N] [--format text|json]``: see the training data as the trainer will.

Loads the tokenizer only (never the weights), picks the template, loads and encodes the datasets exactly as
``tunery train`` does (packing included), then prints

* ``text``: the first N records rendered from their input_ids, trained tokens marked (green on a terminal,
  ``[[...]]`` when piped), followed by a summary of the whole dataset: record counts, prompt/response token-length
  percentiles, what cutoff_len truncates, dropped records by cause, placeholders left, trained-token share, packing;
* ``json``: one object per line for the first N items of the training set exactly as the collator receives them
  (input_ids, labels, attention_mask, and position_ids / chosen_* / rejected_* / kl_* where the stage has them),
  then one ``{"summary": ...}`` object.
"""

from __future__ import annotations

import json
import sys
from itertools import islice
from typing import TextIO

from ..config.stages import stage_spec
from .records import IGNORE_INDEX

OPEN, CLOSE = "[[", "]]"


# ---------------------------------------------------------------- rendering
def segments(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """The decoded text in runs of (text, trained) — trained where the label is not IGNORE_INDEX."""
    out: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(input_ids) + 1):
        if i == len(input_ids) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            text = tokenizer.decode(input_ids[start:i], skip_special_tokens=False,
                                    clean_up_tokenization_spaces=False)
            out.append((text, labels[start] != IGNORE_INDEX))
            start = i
    return out


def plain_text(parts: list[tuple[str, bool]]) -> str:
    return "".join(f"{OPEN}{text}{CLOSE}" if trained else text for text, trained in parts)


def rich_text(parts: list[tuple[str, bool]]):
    from rich.text import Text

    text = Text()
    for chunk, trained in parts:
        text.append(chunk, style="bold green" if trained else "dim")
    return text


class _Out:
    """Writes plain text when piped, rich markup on a terminal."""

    def __init__(self, stream: TextIO, color: bool | None = None):
        self.stream = stream
        self.color = stream.isatty() if color is None else color
        self.console = None
        if self.color:
            from rich.console import Console

            self.console = Console(file=stream, highlight=False, soft_wrap=True, force_terminal=True)

    def line(self, text: str = "", style: str | None = None) -> None:
        if self.console is not None:
            self.console.print(text, style=style, markup=False)
        else:
            print(text, file=self.stream)

    def parts(self, parts: list[tuple[str, bool]]) -> None:
        if self.console is not None:
            self.console.print(rich_text(parts))
        else:
            print(plain_text(parts), file=self.stream)


# ---------------------------------------------------------------- one record
def _encode_one(cfg, record, template, tokenizer):
    """(example, drop reason) for one record, encoded alone as the trainer's data encodes it."""
    import logging

    from .dataset import encode_records

    enc_logger = logging.getLogger("tunery.data.encode")
    level = enc_logger.level
    enc_logger.setLevel(logging.ERROR)
    try:
        encoded = encode_records(cfg, [record], template, tokenizer)
    finally:
        enc_logger.setLevel(level)
    if encoded:
        return encoded[0], None
    return None, next(iter(encoded.dropped), "dropped")


def _show_record(out: _Out, cfg, index: int, total: int, record, template, tokenizer) -> None:
    example, reason = _encode_one(cfg, record, template, tokenizer)
    head = f"── record {index + 1}/{total} · {record.source or '?'}"
    if example is None:
        out.line(f"{head} · dropped: {reason}", style="bold red")
        return
    if "chosen_input_ids" in example:
        for name in ("chosen", "rejected"):
            ids, labels = example[f"{name}_input_ids"], example[f"{name}_labels"]
            trained = sum(1 for x in labels if x != IGNORE_INDEX)
            out.line(f"{head} · {name} · {len(ids)} tokens ({trained} trained) ──", style="bold")
            out.parts(segments(tokenizer, ids, labels))
        return
    ids, labels = example["input_ids"], example["labels"]
    # prompt only; labels hold the reference answer
    if stage_spec(cfg.stage).reads == "prompt" or len(labels) != len(ids):
        out.line(f"{head} · prompt {len(ids)} tokens ──", style="bold")
        out.parts([(tokenizer.decode(ids, skip_special_tokens=False), False)])
        out.line("reference answer: " + tokenizer.decode(labels, skip_special_tokens=False))
        return
    trained = sum(1 for x in labels if x != IGNORE_INDEX)
    tag = f" · kto {'desirable' if example['kto_tags'] else 'undesirable'}" if "kto_tags" in example else ""
    out.line(f"{head}{tag} · {len(ids)} tokens ({trained} trained) ──", style="bold")
    out.parts(segments(tokenizer, ids, labels))


def _show_block(out: _Out, index: int, total: int, example: dict, tokenizer) -> None:
    ids, labels = example["input_ids"], example["labels"]
    out.line(f"── block {index + 1}/{total} · {len(ids)} tokens ──", style="bold")
    out.parts(segments(tokenizer, ids, labels))


# ---------------------------------------------------------------- summary
def build_summary(cfg, loaded, prepared, template, tokenizer) -> dict:
    from .dataset import encode_cutoff
    from .stats import length_stats, summarize, trained_share

    stats = length_stats(loaded.train, cfg.stage, template, tokenizer, encode_cutoff(cfg), cfg.train_on_prompt,
                         cfg.mask_history, cfg.packing is not False)
    summary = {
        "stage": cfg.stage,
        "template": getattr(template, "name", "tokenizer"),
        "datasets": dict(loaded.counts),
        "records": len(loaded.train),
        "eval_records": len(loaded.eval) if loaded.eval is not None else 0,
        "examples": prepared.num_examples,
        "dropped": dict(prepared.dropped),
        "placeholders": dict(prepared.placeholders),
    }
    summary.update(summarize(stats, encode_cutoff(cfg)))
    if stage_spec(cfg.stage).reads == "text":
        summary["pt_packing"] = cfg.packing is not False
    summary["trained"] = trained_share(prepared.unpacked if prepared.unpacked is not None else prepared.train)
    if prepared.packing:
        summary["packing"] = dict(prepared.packing, neat=bool(cfg.neat_packing))
    return summary


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "0%"


def print_summary(out: _Out, summary: dict) -> None:
    s = summary
    out.line("")
    out.line("── summary ──", style="bold")
    per = ", ".join(f"{k}: {v}" for k, v in s["datasets"].items())
    out.line(f"stage {s['stage']}, template {s['template']}: {s['records']} training records ({per})"
             + (f", {s['eval_records']} evaluation records" if s["eval_records"] else "")
             + f" → {s['examples']} examples")
    for part in ("prompt", "response") if stage_spec(s["stage"]).reads != "text" else ("prompt",):
        p = s[f"{part}_tokens"]
        name = "text" if stage_spec(s["stage"]).reads == "text" else part
        out.line(f"{name} tokens: p50 {p['p50']}, p90 {p['p90']}, p99 {p['p99']}, max {p['max']}")
    t = s["truncated_tokens"]
    if s["truncated_records"]:
        out.line(f"cutoff_len {s['cutoff_len']} truncates {s['truncated_records']} of {s['measured_records']} "
                 f"records ({_pct(s['truncated_records'], s['measured_records'])}), by {t['mean']} tokens on average "
                 f"(max {t['max']}, {t['total']} in all)", style="yellow")
    elif stage_spec(s["stage"]).reads == "text" and s.get("pt_packing"):
        out.line(f"texts are joined and cut into blocks of cutoff_len {s['cutoff_len']} (the rest of each batch of "
                 "1000 texts is dropped)")
    else:
        out.line(f"cutoff_len {s['cutoff_len']} truncates no record")
    if s["dropped"]:
        total = sum(s["dropped"].values())
        causes = "; ".join(f"{reason} ({n})" for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1]))
        out.line(f"dropped {total} record(s): {causes}", style="yellow")
    else:
        out.line("dropped: none")
    if not s["examples"]:
        out.line("no training examples left: `tunery train` would stop here", style="bold red")
    if s["placeholders"]:
        names = ", ".join(f"{{{{{k}}}}} in {v} records" for k, v in sorted(s["placeholders"].items()))
        keys = ", ".join(f"{k}: ..." for k in sorted(s["placeholders"]))
        out.line(f"placeholders left: {names} — fill them with placeholders: {{{keys}}}", style="yellow")
    tr = s["trained"]
    if tr["share"] is None:
        out.line("trained tokens: none in the data (the prompts are for generation; labels hold reference answers)")
    else:
        out.line(f"trained tokens: {tr['trained_tokens']} of {tr['tokens']} "
                 f"({_pct(tr['trained_tokens'], tr['tokens'])})")
    if s.get("packing"):
        pk = s["packing"]
        out.line(f"packing{' (neat)' if pk['neat'] else ''}: {pk['examples']} examples → {pk['sequences']} sequences "
                 f"({pk['examples_per_sequence']} per sequence, {100 * pk['fill']:.0f}% full)")


# ---------------------------------------------------------------- the command
def preview(cfg, stream: TextIO | None = None, color: bool | None = None, session=None) -> dict:
    """Run the preview for ``cfg`` and return the summary (also printed); ``session`` (tokenizer and template) is
    opened from ``cfg`` unless the caller has one."""
    from tunery.model.session import open_session

    from .dataset import check_template_tokens, encode_loaded, load_records

    stream = stream or sys.stdout  # (the packing options were checked with the config, config/data_options.py)
    session = session or open_session(cfg, "preview")
    tokenizer, template = session.tokenizer, session.template
    check_template_tokens(template, tokenizer, cfg.model_name_or_path or "")
    loaded = load_records(cfg)
    prepared = encode_loaded(cfg, loaded, template, tokenizer, strict=False, keep_unpacked=True)
    summary = build_summary(cfg, loaded, prepared, template, tokenizer)
    num = max(0, int(cfg.preview_num))
    if cfg.preview_format == "json":
        for i, item in enumerate(islice(prepared.train, num)):
            print(json.dumps({"index": i, **item}, ensure_ascii=False), file=stream)
        print(json.dumps({"summary": summary}, ensure_ascii=False), file=stream)
        return summary
    out = _Out(stream, color)
    if stage_spec(cfg.stage).reads == "text":
        for i, example in enumerate(islice(prepared.train, num)):
            _show_block(out, i, len(prepared.train), example, tokenizer)
    else:
        for i, record in enumerate(loaded.train[:num]):
            _show_record(out, cfg, i, len(loaded.train), record, template, tokenizer)
    print_summary(out, summary)
    return summary
