"""A short probe on randomly initialised copies of the model (never its weights): the activation memory a
micro-batch keeps for the backward pass, and the time of a training step.

* Memory: models of 1 and 2 layers run one forward pass at the run's largest micro-batch with the method attached;
  every tensor autograd saves for the backward pass is counted once (by storage; parameters excluded). The
  difference is one layer's share, the rest is the embeddings, head and loss — exact for any architecture.
* Time: the full-depth model (when it is small enough to build here) or the 1- and 2-layer ones extrapolated, trained
  for a few steps by the real transformers Trainer with the run's arguments at the run's median and largest
  micro-batches: the two give a step's fixed cost and its cost per token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunery.config.loader import Config

FULL_DEPTH_PROBE_PARAMS = 400_000_000  # above this the step time is extrapolated from 1 and 2 layers
REPEATS = 3


@dataclass
class ProbeResult:
    layer_bytes_per_token: float
    base_bytes_per_token: float
    largest_saved_per_token: float  # the biggest single saved tensor (the logits' share): the backward's transient
    step_seconds: float | None  # one optimizer step (all its micro-batches) at the median micro-batch
    peak_step_seconds: float | None  # the same at the largest micro-batch (None when it is the median's size)
    method: str  # how the time was found: "full model", "1-2 layer extrapolation", or "not probed"


def _probe_cfg(cfg: Config, gradient_checkpointing: bool) -> Config:
    """The run's options for a randomly initialised copy: no adapters to load, quiet, checkpointing as asked."""
    return cfg.replace(adapter_name_or_path=None, print_param_status=False,
                       gradient_checkpointing=gradient_checkpointing,
                       disable_gradient_checkpointing=not gradient_checkpointing)


def build_probe_model(cfg: Config, num_layers: int | None, gradient_checkpointing: bool):
    """Random weights (seeded), the run's dtype, attention and fine-tuning method."""
    import logging

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunery.model.adapters import prepare_for_training
    from tunery.model.load import attention_implementation, compute_dtype

    config = AutoConfig.from_pretrained(cfg.model_name_or_path, trust_remote_code=cfg.trust_remote_code)
    if num_layers is not None:
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:num_layers]
    attn = attention_implementation(cfg)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=compute_dtype(cfg),
                                             **({"attn_implementation": attn} if attn else {}))
    pcfg = _probe_cfg(cfg, gradient_checkpointing)
    quiet = logging.getLogger("tunery")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        model = prepare_for_training(model, pcfg)
    finally:
        quiet.setLevel(level)
    model.train()
    return model


def _batch(model, rows: int, length: int, padding_free: bool, examples_in_row: int):
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, max(4, vocab - 1), (rows, length), generator=gen)
    batch = {"input_ids": ids, "labels": ids.clone()}
    if padding_free and examples_in_row > 1:
        per = max(1, length // examples_in_row)
        batch["position_ids"] = (torch.arange(length) % per).unsqueeze(0)
    else:
        batch["attention_mask"] = torch.ones_like(ids)
    return batch


def saved_bytes(model, batch) -> tuple[int, int]:
    """(bytes of every tensor saved for backward, the largest one) in one forward pass."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen and t.device.type != "meta":
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**batch)
    del out
    return sum(seen.values()), max(seen.values(), default=0)


def _time_steps(cfg: Config, model, batch) -> float:
    """Seconds per optimizer step of the real transformers Trainer (the run's optimizer, accumulation, clipping,
    scheduler and logging) feeding ``batch`` as every micro-batch; median over the steps after a warm-up one."""
    import statistics
    import tempfile

    from transformers import Trainer, TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    from tunery.train.artifacts import training_arguments

    steps = REPEATS + 2
    micro = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * steps
    with tempfile.TemporaryDirectory(prefix="tunery-estimate-") as tmp:
        probe_cfg = cfg.replace(unset=("deepspeed", "fsdp", "fsdp_config", "resume_from_checkpoint", "eval_steps",
                                       "save_steps"),
                                output_dir=tmp, max_steps=steps, save_strategy="no", eval_strategy="no",
                                report_to=["none"], do_eval=False, load_best_model_at_end=False, disable_tqdm=True)
        args = training_arguments(probe_cfg)
        clock = StepClock()
        trainer = Trainer(model=model, args=args, train_dataset=[{}] * micro,
                          data_collator=lambda _features: {k: v.clone() for k, v in batch.items()},
                          callbacks=[clock])
        trainer.train()
    diffs = [b - a for a, b in zip(clock.ends, clock.ends[1:])]
    return statistics.median(diffs) if diffs else 0.0


def run_probe(cfg: Config, total_params: int, layers: int, peak: tuple[int, int], median: tuple[int, int],
              padding_free: bool, examples_per_row: int, time_it: bool = True) -> ProbeResult:
    import torch

    torch.set_grad_enabled(True)
    one = build_probe_model(cfg, 1, False)
    two = build_probe_model(cfg, 2, False)
    peak_tokens = peak[0] * peak[1]
    b1, big1 = saved_bytes(one, _batch(one, *peak, padding_free, examples_per_row))
    b2, _ = saved_bytes(two, _batch(two, *peak, padding_free, examples_per_row))
    layer = max(0, b2 - b1) / peak_tokens
    base = max(0, b1 - (b2 - b1)) / peak_tokens
    step = peak_step = None
    method = "not probed"
    if time_it:
        gc = bool(cfg.gradient_checkpointing and not cfg.disable_gradient_checkpointing)
        shapes = [median] + ([peak] if peak[0] * peak[1] > 1.2 * median[0] * median[1] else [])
        if total_params <= FULL_DEPTH_PROBE_PARAMS:
            del one, two
            full = build_probe_model(cfg, None, gc)
            times = [_time_steps(cfg, full, _batch(full, *shape, padding_free, examples_per_row)) for shape in shapes]
            method = "full model, Trainer steps"
        else:
            times = []
            for shape in shapes:
                s1 = _time_steps(cfg, one, _batch(one, *shape, padding_free, examples_per_row))
                s2 = _time_steps(cfg, two, _batch(two, *shape, padding_free, examples_per_row))
                times.append(s1 + max(0.0, s2 - s1) * (layers - 1))
            method = "1-2 layer Trainer steps, extrapolated"
        step, peak_step = times[0], (times[1] if len(times) > 1 else None)
    return ProbeResult(layer, base, big1 / peak_tokens, step, peak_step, method)
