"""Peak memory per device from parameter counts, the probe's activation bytes per token and the batch shapes.

Everything is in bytes. On a CPU the peak is the process's resident memory, so the libraries, tokenizer and encoded
data this process already holds (measured, not guessed) are part of it; on a GPU they are not, and the CUDA context
and allocator reserve are.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunery.config.stages import uses

if TYPE_CHECKING:
    from tunery.config.loader import Config

CUDA_OVERHEAD = 0.75 * 2**30  # context, cuBLAS workspace and the caching allocator's slack
OPTIMIZER_STATES = {  # bytes per trainable parameter kept by the optimizer (per 4-byte parameter for fp32 ones)
    "adamw": 2.0, "adam": 2.0, "lion": 1.0, "sgd": 0.0, "adafactor": 0.05, "8bit": 0.5, "paged": 2.0,
}


@dataclass
class Breakdown:
    device: str
    parts: dict[str, float] = field(default_factory=dict)  # name -> bytes
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def peak(self) -> float:
        return sum(self.parts.values())


def dtype_bytes(cfg: Config) -> int:
    from tunery.model.load import compute_dtype

    return compute_dtype(cfg).itemsize


def optimizer_states(optim: str) -> float:
    name = (optim or "adamw_torch").lower()
    if "8bit" in name:
        return OPTIMIZER_STATES["8bit"]
    for key in ("adafactor", "sgd", "lion", "adamw", "adam"):
        if key in name:
            return OPTIMIZER_STATES[key]
    return 2.0


def sharding(cfg: Config) -> dict:
    """Which of weights/gradients/optimizer states are split over the processes, and what is offloaded."""
    world = int(os.environ.get("WORLD_SIZE", "0") or 0) or int(os.environ.get("NPROC_PER_NODE", "1") or 1)
    out = {"world": max(1, world), "stage": 0, "offload_optimizer": False, "offload_params": False}
    ds = cfg.deepspeed
    if isinstance(ds, str) and os.path.isfile(ds):
        with open(ds, encoding="utf-8") as fh:
            ds = json.load(fh)
    if isinstance(ds, dict):
        zero = ds.get("zero_optimization", {}) or {}
        out["stage"] = int(zero.get("stage", 0) or 0)
        out["offload_optimizer"] = (zero.get("offload_optimizer") or {}).get("device") in ("cpu", "nvme")
        out["offload_params"] = (zero.get("offload_param") or {}).get("device") in ("cpu", "nvme")
    fsdp = cfg.fsdp
    if fsdp and ("full_shard" in str(fsdp) or "shard_grad_op" in str(fsdp)):
        out["stage"] = 3 if "full_shard" in str(fsdp) else 2
    return out


def estimate_memory(cfg: Config, counts, shapes, probe, runtime_bytes: float, device: str,
                    gradient_checkpointing: bool | None = None, peak_tokens: int | None = None) -> Breakdown:
    """The peak for one device. ``gradient_checkpointing`` / ``peak_tokens`` override the run's (for suggestions)."""
    gc = (bool(cfg.gradient_checkpointing) and not cfg.disable_gradient_checkpointing
          if gradient_checkpointing is None else gradient_checkpointing)
    tokens = peak_tokens if peak_tokens is not None else shapes.peak_tokens
    width = dtype_bytes(cfg)
    shard = sharding(cfg)
    world = shard["world"]
    out = Breakdown(device=device)
    if device == "cpu":
        out.parts["runtime and data"] = runtime_bytes
        out.notes["runtime and data"] = "this process now: libraries, tokenizer, encoded data"
    else:
        out.parts["CUDA context and allocator"] = CUDA_OVERHEAD

    frozen = counts.total - (counts.trainable if cfg.finetuning_type != "lora" else 0)
    if cfg.quantization_bit and device != "cpu":
        linear = counts.total - counts.embedding
        weights = linear * cfg.quantization_bit / 8 * 1.06 + counts.embedding * width
    else:
        weights = counts.total * width
    if shard["stage"] >= 3:
        weights = weights / world
    if shard["offload_params"]:
        weights = 0.0
    out.parts["weights"] = weights
    if uses(cfg.stage, "reference_model") and cfg.finetuning_type != "lora" and not cfg.ref_model:
        out.parts["reference model"] = frozen * width if cfg.finetuning_type == "freeze" else counts.total * width
    trainable_width = 2 if cfg.pure_bf16 else (4 if cfg.finetuning_type == "lora" else width)
    lora_weights = counts.trainable * trainable_width if cfg.finetuning_type == "lora" else 0
    if lora_weights:
        out.parts["adapter weights"] = lora_weights
    grads = counts.trainable * trainable_width
    if shard["stage"] >= 2:
        grads /= world
    out.parts["gradients"] = grads
    states = optimizer_states(cfg.optim) * counts.trainable * max(4, trainable_width)
    if cfg.finetuning_type != "lora" and width < 4 and not cfg.pure_bf16:
        states += counts.trainable * 4  # mixed precision keeps fp32 master weights
    if shard["stage"] >= 1:
        states /= world
    out.parts["optimizer states"] = 0.0 if shard["offload_optimizer"] else states
    out.notes["optimizer states"] = f"{cfg.optim or 'adamw_torch'}"

    if gc:
        per_token = counts.layers * counts.hidden * width + probe.layer_bytes_per_token + probe.base_bytes_per_token
        out.notes["activations"] = "gradient checkpointing: each layer's input, one layer recomputed at a time"
    else:
        per_token = counts.layers * probe.layer_bytes_per_token + probe.base_bytes_per_token
        out.notes["activations"] = (f"{probe.layer_bytes_per_token / 1024:.1f} KiB per token per layer × "
                                    f"{counts.layers} layers + {probe.base_bytes_per_token / 1024:.1f} KiB")
    out.parts["activations"] = per_token * tokens
    out.parts["backward transient"] = probe.largest_saved_per_token * tokens
    out.notes["backward transient"] = "gradient of the largest saved tensor (the logits)"
    return out


def available_memory(device: str) -> float | None:
    """Bytes a new training process could use on ``device`` (CPU: MemAvailable plus what this process holds)."""
    if device == "cpu":
        try:
            with open("/proc/meminfo", encoding="utf-8") as fh:
                info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
            return float(info["MemAvailable"])
        except (OSError, KeyError, ValueError):
            return None
    import torch

    free, _total = torch.cuda.mem_get_info()
    return float(free)


def current_rss() -> float:
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
