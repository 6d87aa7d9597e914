"""A short probe on randomly initialised copies of the model (never its weights): the activation memory a
micro-batch keeps for the backward pass, and the time of a training step.

* Memory: models of 1 and 2 layers run one forward pass at the run's largest micro-batch with the method attached;
  every tensor autograd saves for the backward pass is counted once (by storage; parameters excluded). The
  difference is one layer's share, the rest is the embeddings, head and loss — exact for any architecture.
* Time: the full-depth model (when it is small enough to build here) or the 1- and 2-layer ones extrapolated, trained
  for a few steps the way the run trains: the stage's own Trainer class, collator and logging callback, the run's
  arguments and sampler, on the run's own encoded examples (a reference model, where the stage has one, randomly
  initialised too). The mean step after a warm-up, with the tokens its micro-batches held, is what the run's step
  time is scaled from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunery.config.loader import Config

FULL_DEPTH_PROBE_PARAMS = 400_000_000  # above this the step time is extrapolated from 1 and 2 layers
PROBE_STEPS, WARMUP_STEPS = 7, 2  # optimizer steps the probe runs; the mean of those after the warm-up counts


@dataclass
class ProbeResult:
    layer_bytes_per_token: float
    base_bytes_per_token: float
    largest_saved_per_token: float  # the biggest single saved tensor (the logits' share): the backward's transient
    step_seconds: float | None  # one optimizer step (all its micro-batches), the mean over the timed steps
    step_tokens: float | None  # tokens per micro-batch in those steps (padding included), their mean
    method: str  # how the time was found: "full model", "1-2 layer extrapolation", or why it was not probed


def _probe_cfg(cfg: Config, gradient_checkpointing: bool) -> Config:
    """The run's options for a randomly initialised copy: no adapters to load, quiet, checkpointing as asked."""
    return cfg.replace(adapter_name_or_path=None, print_param_status=False,
                       gradient_checkpointing=gradient_checkpointing,
                       disable_gradient_checkpointing=not gradient_checkpointing)


def _random_model(cfg: Config, path: str, num_layers: int | None, pad_token_id: int | None = None):
    """Seeded random weights from ``path``'s config, the run's dtype and attention; a 1-output score head when the
    stage trains a reward model (it reads the score at the last token that is not ``pad_token_id``)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from tunery.config.stages import stage_spec
    from tunery.model.load import attention_implementation, compute_dtype

    config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    if num_layers is not None:
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:num_layers]
    model_class = AutoModelForCausalLM
    if stage_spec(cfg.stage).saves == "score":
        model_class, config.num_labels, config.pad_token_id = AutoModelForSequenceClassification, 1, pad_token_id
    attn = attention_implementation(cfg)
    torch.manual_seed(0)
    return model_class.from_config(config, dtype=compute_dtype(cfg), **({"attn_implementation": attn} if attn else {}))


def build_probe_model(cfg: Config, num_layers: int | None, gradient_checkpointing: bool, tokenizer=None):
    """Random weights (seeded), the run's dtype, attention and fine-tuning method."""
    import logging

    from tunery.model.adapters import prepare_for_training

    model = _random_model(cfg, cfg.model_name_or_path, num_layers,
                          tokenizer.pad_token_id if tokenizer is not None else None)
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


def _random_reference(num_layers: int | None):
    """The stage's ``reference`` loader for the probe: what train/models.py would load, randomly initialised."""
    def reference(cfg: Config, tokenizer):
        from tunery.train.models import freeze, reference_path

        path = reference_path(cfg)
        return None if path is None else freeze(_random_model(cfg, path, num_layers))

    return reference


def _batch(model, rows: int, length: int, padding_free: bool, examples_in_row: int, labels: bool = True):
    """A random micro-batch of ``rows`` × ``length`` tokens, every token a label (``labels: False`` for a reward
    model, whose loss is computed outside the model)."""
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, max(4, vocab - 1), (rows, length), generator=gen)
    batch = {"input_ids": ids}
    if labels:
        batch["labels"] = ids.clone()
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


def _time_steps(cfg: Config, model, examples, tokenizer, stage, num_layers: int | None) -> tuple[float, float]:
    """(mean seconds per optimizer step, mean tokens per micro-batch) over the steps after the warm-up, of the stage's
    Trainer on ``examples`` with the run's arguments: data loading, collation, logging and the optimizer included.
    Tokens are counted as the trained model's forward passes receive them (padding included; a reference model's
    passes, run without gradients, are not counted again)."""
    import tempfile

    import torch
    from transformers import TrainerCallback

    from tunery.train.artifacts import training_arguments
    from tunery.train.callbacks import LogCallback
    from tunery.train.workflow import build_trainer

    seen = [0]
    at_step_end: list[tuple[float, int]] = []

    def count(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if torch.is_grad_enabled() and ids is not None:
            seen[0] += ids.numel()

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            at_step_end.append((time.perf_counter(), seen[0]))

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    with tempfile.TemporaryDirectory(prefix="tunery-estimate-") as tmp:
        probe_cfg = cfg.replace(unset=("deepspeed", "fsdp", "fsdp_config", "resume_from_checkpoint", "eval_steps",
                                       "save_steps"),
                                output_dir=tmp, max_steps=PROBE_STEPS, save_strategy="no", eval_strategy="no",
                                report_to=["none"], do_eval=False, load_best_model_at_end=False, disable_tqdm=True)
        trainer = build_trainer(stage, probe_cfg, model, training_arguments(probe_cfg), tokenizer, examples, None,
                                [LogCallback(tmp), StepClock()], _random_reference(num_layers))
        trainer.train()
    hook.remove()
    (t0, n0), (t1, n1) = at_step_end[WARMUP_STEPS - 1], at_step_end[-1]
    steps = len(at_step_end) - WARMUP_STEPS
    return (t1 - t0) / steps, (n1 - n0) / (steps * cfg.gradient_accumulation_steps)


def run_probe(cfg: Config, total_params: int, layers: int, peak: tuple[int, int], padding_free: bool,
              examples_per_row: int, examples=None, tokenizer=None) -> ProbeResult:
    """Activation memory from the 1- and 2-layer models at the ``peak`` micro-batch (rows, length); with
    ``examples`` (the run's encoded training set) and its tokenizer, the step time too."""
    import torch

    torch.set_grad_enabled(True)
    one = build_probe_model(cfg, 1, False, tokenizer)
    two = build_probe_model(cfg, 2, False, tokenizer)
    peak_tokens = peak[0] * peak[1]
    from tunery.config.stages import stage_spec

    lm = stage_spec(cfg.stage).saves == "lm"
    b1, big1 = saved_bytes(one, _batch(one, *peak, padding_free, examples_per_row, lm))
    b2, _ = saved_bytes(two, _batch(two, *peak, padding_free, examples_per_row, lm))
    layer = max(0, b2 - b1) / peak_tokens
    base = max(0, b1 - (b2 - b1)) / peak_tokens
    step = step_tokens = None
    method = "not probed"
    stage = None
    if examples is not None:
        from tunery.train.run import workflow_stage

        stage = workflow_stage(cfg)
        if stage is None:
            method = f"not probed ({cfg.stage} generates inside its steps; give estimate_tflops)"
    if stage is not None:
        gc = bool(cfg.gradient_checkpointing and not cfg.disable_gradient_checkpointing)
        if total_params <= FULL_DEPTH_PROBE_PARAMS:
            del one, two
            full = build_probe_model(cfg, None, gc, tokenizer)
            step, step_tokens = _time_steps(cfg, full, examples, tokenizer, stage, None)
            method = "full model, the stage's Trainer on the run's examples"
        else:
            del one, two
            s1, step_tokens = _time_steps(cfg, build_probe_model(cfg, 1, gc, tokenizer), examples, tokenizer, stage, 1)
            s2, _ = _time_steps(cfg, build_probe_model(cfg, 2, gc, tokenizer), examples, tokenizer, stage, 2)
            step = s1 + max(0.0, s2 - s1) * (layers - 1)
            method = "1-2 layer models, the stage's Trainer on the run's examples, extrapolated"
    return ProbeResult(layer, base, big1 / peak_tokens, step, step_tokens, method)
