"""The recipe every Trainer-based stage (pt, sft, rm, dpo, kto) follows, written once:
tokenizer → template → data → model → method → Trainer → train / evaluate / predict → artifacts.

A stage module only says which Trainer class, collator and model head it uses (a :class:`Stage`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunery.errors import TuneryError
from tunery.utils.logging import get_logger

logger = get_logger(__name__)


class TrainingInterrupted(TuneryError):
    """Ctrl-C during training: a checkpoint was saved; rerunning the command resumes from it."""

    exit_code = 130


@dataclass
class Stage:
    trainer_cls: type
    collator: Callable[[Any, Any, int | None, Any], Any]  # (cfg, tokenizer, pad_to_multiple_of, model) -> collator
    reward_head: bool = False  # load the model with a 1-output score head (AutoModelForSequenceClassification)
    trainer_kwargs: Callable[[Any, Any], dict] = field(default=lambda cfg, tokenizer: {})  # e.g. the ref model


def _encode(cfg, records, template, tokenizer, stage: str):
    from tunery.data.encode import encode_dataset

    return encode_dataset(records, stage, template, tokenizer, cfg.cutoff_len, train_on_prompt=cfg.train_on_prompt,
                          mask_history=cfg.mask_history)


def _evaluation_records(cfg, stage: str):
    """Records for evaluation or prediction without training: eval_dataset, or the val_size split of dataset."""
    from tunery.data.loader import load_datasets

    if cfg.eval_dataset:
        return load_datasets(list(cfg.eval_dataset), cfg.dataset_dir, stage, max_samples=cfg.max_samples,
                             seed=cfg.seed, placeholders=cfg.placeholders).train
    from tunery.data.dataset import load_records

    return load_records(cfg).eval or []


def load_data(cfg, tokenizer, template):
    """Encoded train/eval examples for the run (eval only when evaluating without training)."""
    from tunery.data.dataset import PreparedData, prepare_datasets

    if cfg.do_train:
        return prepare_datasets(cfg, tokenizer, template)
    if cfg.do_eval:
        return PreparedData([], _encode(cfg, _evaluation_records(cfg, cfg.stage), template, tokenizer, cfg.stage))
    return PreparedData([], None)


def load_stage_model(cfg, tokenizer, stage: Stage):
    """The model with its fine-tuning method attached (training) or its adapters merged (evaluation only)."""
    from tunery.model.adapters import load_adapters, prepare_for_training
    from tunery.model.load import load_model
    from tunery.train.models import load_reward_model

    model = load_reward_model(cfg, tokenizer) if stage.reward_head else load_model(cfg, tokenizer)
    if cfg.do_train:
        return prepare_for_training(model, cfg)
    return load_adapters(model, cfg, is_trainable=False)


def run_stage(cfg, stage: Stage) -> None:
    from transformers import set_seed

    from tunery.data.template_select import resolve_template
    from tunery.model.load import load_tokenizer
    from tunery.train.artifacts import finish, prepare_output_dir, save_final, training_arguments
    from tunery.train.callbacks import InterruptCallback, LogCallback
    from tunery.train.checkpoints import check_fits_model
    from tunery.train.extra_callbacks import option_callbacks

    # 1. Everything that can fail on the user's input happens before the model loads.
    tokenizer = load_tokenizer(cfg)
    template = resolve_template(cfg, tokenizer)
    data = load_data(cfg, tokenizer, template)
    to_predict = None
    if cfg.do_predict:
        from tunery.train.metrics import require_metrics

        require_metrics()
        to_predict = _encode(cfg, _evaluation_records(cfg, "sft"), template, tokenizer, "predict")
    args = training_arguments(cfg)
    resume = None
    if cfg.do_train:
        with args.main_process_first(local=False, desc="output_dir"):
            resume = prepare_output_dir(cfg, is_main=args.process_index == 0)

    # 2. Model and fine-tuning method (the seed makes new LoRA/head weights the same in every process and run).
    set_seed(cfg.seed)
    model = load_stage_model(cfg, tokenizer, stage)
    if resume:
        check_fits_model(resume, model)

    # 3. The transformers Trainer does the loop.
    interrupt = InterruptCallback()
    multiple_of = 8 if args.fp16 or args.bf16 else None
    trainer = stage.trainer_cls(
        cfg=cfg,
        model=model,
        args=args,
        train_dataset=data.train or None,
        eval_dataset=data.eval or None,
        data_collator=stage.collator(cfg, tokenizer, multiple_of, model),
        processing_class=tokenizer,
        callbacks=[LogCallback(cfg.output_dir), interrupt, *option_callbacks(cfg)],
        **stage.trainer_kwargs(cfg, tokenizer),
    )

    # 4. Train, save artifacts, evaluate, predict, plot.
    if cfg.do_train:
        try:
            result = trainer.train(resume_from_checkpoint=resume)
        finally:
            interrupt.restore()
        if interrupt.stopped_at is not None:
            raise TrainingInterrupted(f"training interrupted at step {interrupt.stopped_at}: checkpoint saved in "
                                      f"{cfg.output_dir}/checkpoint-{interrupt.stopped_at} — rerun the same command "
                                      "to resume")
        save_final(trainer, cfg, tokenizer, template, result)
    if cfg.do_eval and data.eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if to_predict is not None:
        from tunery.train.predict import run_predict

        run_predict(trainer, cfg, tokenizer, template, to_predict)
    finish(trainer, cfg)
