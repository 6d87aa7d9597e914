"""``tunery estimate CONFIG.yaml`` (also ``tunery train … --dry_run``): the data and the model config, a short probe,
then peak memory per device, time per step and for the run, whether it fits, and what would make it fit.

A run that does not fit is an answer, not an error: the exit code is 0.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from tunery.config.stages import stage_spec, uses
from tunery.estimate.memory import available_memory, current_rss, estimate_memory
from tunery.estimate.probe import run_probe
from tunery.estimate.shapes import batch_shapes, count_params, example_lengths, meta_model
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)
FIT_MARGIN = 0.95  # leave a little for the allocator and the rest of the system
GiB, MiB = 2**30, 2**20


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _padding_free(cfg: Config) -> bool:
    if cfg.padding_free is not None:
        return bool(cfg.padding_free)
    return (uses(cfg.stage, "packed_rows") and not cfg.packing and not cfg.neftune_noise_alpha and not cfg.deepspeed
            and not cfg.fsdp)


def _rows_per_example(stage: str) -> int:
    return stage_spec(stage).sequences  # chosen + rejected; kto: the completion and its KL pair


def _preload_trainer_libraries(stage: str) -> None:
    """Import what the trainer imports, so this process's resident memory is the training process's baseline."""
    import peft  # noqa: F401
    from transformers import Trainer  # noqa: F401

    if uses(stage, "trl"):
        try:
            import trl  # noqa: F401
        except ImportError:
            pass


def _fmt(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def estimate(cfg: Config) -> dict:
    """The whole estimate as a dict (what --format json prints)."""
    from tunery.data.dataset import prepare_datasets
    from tunery.model.session import open_session
    from tunery.utils.memory import apply_malloc_mmap_threshold

    apply_malloc_mmap_threshold(cfg)  # as the training process does: its allocations, and so its speed and memory
    device = _device()
    session = open_session(cfg, "preview")  # tokenizer and template; the model is measured on the meta device
    tokenizer, template = session.tokenizer, session.template
    data = prepare_datasets(cfg, tokenizer, template)
    _preload_trainer_libraries(cfg.stage)
    runtime = current_rss()
    lengths, trained, total = example_lengths(data.train)
    padding_free = _padding_free(cfg)
    world = int(__import__("os").environ.get("NPROC_PER_NODE", "1") or 1)
    shapes = batch_shapes(lengths, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, world,
                          cfg.num_train_epochs, cfg.max_steps, padding_free, _rows_per_example(cfg.stage),
                          seed=cfg.seed)
    shapes.trained_share = trained / max(1, total)
    counts = count_params(cfg, meta_model(cfg))
    examples_per_row = cfg.per_device_train_batch_size if padding_free else 1
    timed = cfg.estimate_probe and not cfg.estimate_tflops
    probe = run_probe(cfg, counts.total, counts.layers, (shapes.peak_rows, shapes.peak_length), padding_free,
                      examples_per_row, data.train if timed else None, tokenizer)
    memory = estimate_memory(cfg, counts, shapes, probe, runtime, device)
    limit = (cfg.estimate_device_memory_gb * GiB if cfg.estimate_device_memory_gb else available_memory(device))
    step_s = _step_seconds(cfg, counts, shapes, probe)
    result = {
        "device": device,
        "model": {"parameters": counts.total, "trainable": counts.trainable, "layers": counts.layers,
                  "hidden_size": counts.hidden, "vocab_size": counts.vocab},
        "data": {"examples": shapes.examples, "steps": shapes.steps, "micro_batches_per_step":
                 shapes.micro_batches_per_step, "mean_tokens_per_micro_batch": round(shapes.mean_tokens, 1),
                 "peak_micro_batch": [shapes.peak_rows, shapes.peak_length],
                 "trained_token_share": round(shapes.trained_share, 4), "padding_free": padding_free},
        "memory": {k: int(v) for k, v in memory.parts.items()} | {"peak": int(memory.peak)},
        "memory_notes": memory.notes,
        "available": int(limit) if limit else None,
        "fits": (memory.peak <= limit * FIT_MARGIN) if limit else None,
        "time": {"step_seconds": step_s, "run_seconds": step_s * shapes.steps if step_s else None,
                 "method": probe.method if step_s is None or not cfg.estimate_tflops else "given tflops"},
        "probe": asdict(probe),
    }
    if limit and not result["fits"]:
        result["suggestions"] = suggestions(cfg, counts, shapes, probe, runtime, device, limit)
    return result


def _step_seconds(cfg: Config, counts, shapes, probe) -> float | None:
    if cfg.estimate_tflops:  # 2 FLOPs per parameter per token forward, 2 more backward (+2 for trained weights)
        flops_per_token = 2 * counts.total + 2 * counts.total + 2 * counts.trainable
        tokens = shapes.mean_tokens * shapes.micro_batches_per_step
        return flops_per_token * tokens / (cfg.estimate_tflops * 1e12)
    if probe.step_seconds is None:
        return None
    # the probe's steps, scaled from the tokens their micro-batches held to the epoch's mean micro-batch
    return probe.step_seconds * shapes.mean_tokens / max(1.0, probe.step_tokens or 0.0)


def suggestions(cfg: Config, counts, shapes, probe, runtime, device, limit) -> list[dict]:
    """Changes that bring the peak down, each with its own new peak; cheapest to the user first."""
    out = []
    gc_on = bool(cfg.gradient_checkpointing) and not cfg.disable_gradient_checkpointing

    def add(change: str, breakdown) -> None:
        out.append({"change": change, "peak": int(breakdown.peak), "fits": breakdown.peak <= limit * FIT_MARGIN})

    if not gc_on:
        add("gradient_checkpointing: true", estimate_memory(cfg, counts, shapes, probe, runtime, device, True))
    bs = cfg.per_device_train_batch_size
    if bs > 1:
        half = max(1, bs // 2)
        tokens = int(shapes.peak_tokens * half / bs)
        add(f"per_device_train_batch_size: {half}, gradient_accumulation_steps: "
            f"{cfg.gradient_accumulation_steps * bs // half} (same global batch)",
            estimate_memory(cfg, counts, shapes, probe, runtime, device, peak_tokens=tokens))
    if shapes.peak_length > 256:
        cut = max(128, 2 ** int(math.log2(shapes.peak_length // 2)))
        tokens = int(shapes.peak_tokens * cut / shapes.peak_length)
        add(f"cutoff_len: {cut} (longer examples are truncated)",
            estimate_memory(cfg, counts, shapes, probe, runtime, device, peak_tokens=tokens))
    if cfg.finetuning_type != "lora":
        lora_cfg = cfg.replace(finetuning_type="lora")
        lora_counts = count_params(lora_cfg, meta_model(cfg))
        add("finetuning_type: lora", estimate_memory(lora_cfg, lora_counts, shapes, probe, runtime, device))
    if device != "cpu" and not cfg.quantization_bit and cfg.finetuning_type == "lora":
        q_cfg = cfg.replace(quantization_bit=4)
        add("quantization_bit: 4 (QLoRA, needs bitsandbytes)",
            estimate_memory(q_cfg, counts, shapes, probe, runtime, device))
    return sorted(out, key=lambda s: (not s["fits"], s["peak"]))


def format_report(cfg: Config, r: dict) -> str:
    m, d = r["model"], r["data"]
    lines = [f"estimate: stage {cfg.stage}, {cfg.finetuning_type}, {cfg.model_name_or_path} — "
             f"{m['parameters'] / 1e6:.1f}M parameters, {m['trainable'] / 1e6:.3f}M trainable"]
    lines.append(f"data: {d['examples']} examples → {d['steps']} steps (batch {cfg.per_device_train_batch_size} × "
                 f"accumulation {cfg.gradient_accumulation_steps}); tokens per micro-batch mean "
                 f"{d['mean_tokens_per_micro_batch']:.0f}, largest {d['peak_micro_batch'][0]} × "
                 f"{d['peak_micro_batch'][1]}; trained-token share {100 * d['trained_token_share']:.1f}%"
                 + ("; padding-free batches" if d["padding_free"] else ""))
    lines.append(f"memory per device ({r['device']}):")
    width = max(len(k) for k in r["memory"])
    for key, value in r["memory"].items():
        note = r["memory_notes"].get(key, "")
        if key == "peak":
            avail = f" of {_fmt(r['available'])} available" if r["available"] else ""
            verdict = "" if r["fits"] is None else (" — fits" if r["fits"] else " — does NOT fit")
            lines.append(f"  {key.ljust(width)}  {_fmt(value):>10}{avail}{verdict}")
        else:
            lines.append(f"  {key.ljust(width)}  {_fmt(value):>10}" + (f"   ({note})" if note else ""))
    t = r["time"]
    if t["step_seconds"] is None:
        lines.append("time: not probed (estimate_probe: false) — give estimate_tflops for a FLOPs-based figure")
    else:
        lines.append(f"time: {t['step_seconds']:.2f} s per step ({t['method']}) → {d['steps']} steps ≈ "
                     f"{_seconds(t['run_seconds'])}")
    if r.get("suggestions"):
        short = r["memory"]["peak"] - r["available"] * FIT_MARGIN
        lines.append(f"over by {_fmt(short)}; what would bring it down:")
        for s in r["suggestions"]:
            lines.append(f"  {s['change']}: peak {_fmt(s['peak'])}" + (" — fits" if s["fits"] else ""))
    return "\n".join(lines)


def run_estimate(cfg: Config) -> int:
    result = estimate(cfg)
    if cfg.estimate_format == "json":
        print(json.dumps(result))
    else:
        print(format_report(cfg, result), file=sys.stdout)
    return 0
