"""The recipe every Trainer-based stage (pt, sft, rm, dpo, kto) follows, written once:
tokenizer → template → data → model → method → Trainer → train / evaluate / predict → artifacts.

A stage module only says which Trainer class and collator it uses (a :class:`Stage`); what the stage reads, encodes
and saves is its row in the stage table (config/stages.py).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunery.errors import TuneryError
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)


class TrainingInterrupted(TuneryError):
    """Ctrl-C (exit 130) or SIGTERM (exit 143) during training: a checkpoint was saved; rerunning the command
    resumes from it."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


def interrupted(interrupt, step: int, path: str) -> TrainingInterrupted:
    """The one line (and exit code) for a run stopped by Ctrl-C or SIGTERM after saving ``path``."""
    how, code = interrupt.stop_reason()
    return TrainingInterrupted(f"training {how} at step {step}: checkpoint saved in {path} — rerun the same command "
                               "to resume", code)


@dataclass
class Stage:
    trainer_cls: type
    collator: Callable[[Any, Any, int | None, Any], Any]  # (cfg, tokenizer, pad_to_multiple_of, model) -> collator
    # (cfg, tokenizer, reference) -> extra Trainer kwargs, e.g. the ref model: ``reference(cfg, tokenizer)`` loads it
    # (train/models.py's load_reference_model; the estimate's probe passes a randomly initialised one)
    trainer_kwargs: Callable[[Any, Any, Callable], dict] = field(default=lambda cfg, tokenizer, reference: {})


def build_trainer(stage: Stage, cfg: Config, model, args, tokenizer, train, evaluation, callbacks: list, reference):
    """The stage's Trainer over ``train``/``evaluation``, with its collator (padded to multiples of 8 in fp16/bf16) and
    extra kwargs; ``reference(cfg, tokenizer)`` gives the reference model where the stage has one. The run and the
    estimate's probe both build their Trainer here."""
    multiple_of = 8 if args.fp16 or args.bf16 else None
    return stage.trainer_cls(
        cfg=cfg,
        model=model,
        args=args,
        train_dataset=train or None,
        eval_dataset=evaluation or None,
        data_collator=stage.collator(cfg, tokenizer, multiple_of, model),
        processing_class=tokenizer,
        callbacks=callbacks,
        **stage.trainer_kwargs(cfg, tokenizer, reference),
    )


def _encode(cfg: Config, records, template, tokenizer, stage: str):
    """The records encoded for ``stage`` as a memory-mapped Dataset (Arrow files in a temporary folder)."""
    from tunery.data.dataset import encode_to_dataset

    return encode_to_dataset(cfg, records, template, tokenizer, stage)


def _evaluation_records(cfg: Config, stage: str):
    """Records for evaluation or prediction without training: eval_dataset, or the val_size split of dataset."""
    from tunery.data.loader import load_datasets

    if cfg.eval_dataset:
        return load_datasets(list(cfg.eval_dataset), cfg.dataset_dir, stage, max_samples=cfg.max_samples,
                             seed=cfg.seed, placeholders=cfg.placeholders).train
    from tunery.data.dataset import load_records

    return load_records(cfg).eval or []


def _each_eval_dataset(cfg, template, tokenizer) -> dict:
    """eval_on_each_dataset: {name: its encoded examples} for every eval_dataset (metrics eval_<name>_loss, ...)."""
    from tunery.data.loader import load_datasets

    return {name: _encode(cfg, load_datasets([name], cfg.dataset_dir, cfg.stage, max_samples=cfg.max_samples,
                                             seed=cfg.seed, placeholders=cfg.placeholders).train,
                          template, tokenizer, cfg.stage)
            for name in cfg.eval_dataset}


def load_data(cfg, tokenizer, template):
    """Encoded train/eval examples for the run (eval only when evaluating without training)."""
    from tunery.data.dataset import PreparedData, prepare_datasets

    if cfg.do_train and cfg.streaming:
        from tunery.data.streaming import stream_datasets

        return stream_datasets(cfg, tokenizer, template)
    if cfg.do_train:
        return prepare_datasets(cfg, tokenizer, template)
    if cfg.do_eval:
        return PreparedData([], _encode(cfg, _evaluation_records(cfg, cfg.stage), template, tokenizer, cfg.stage))
    return PreparedData([], None)


def _close_progress_bar(trainer) -> None:
    """End the progress bar's line when training stops with an error, so that the error starts a line of its own."""
    from transformers.trainer_callback import ProgressCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback) and getattr(callback, "training_bar", None) is not None:
            callback.training_bar.close()
            callback.training_bar = None


def run_stage(cfg: Config, stage: Stage) -> None:
    from transformers import set_seed

    from tunery.model.session import open_session
    from tunery.train.artifacts import (
        disk_full_is_one_line,
        finish,
        prepare_output_dir,
        save_final,
        training_arguments,
    )
    from tunery.train.callbacks import InterruptCallback, LogCallback
    from tunery.train.checkpoints import check_fits_model
    from tunery.train.extra_callbacks import option_callbacks
    from tunery.train.models import load_reference_model
    from tunery.train.ranks import check_ranks_agree

    # 1. Everything that can fail on the user's input happens before the model loads.
    session = open_session(cfg, "train")
    tokenizer, template = session.tokenizer, session.template
    data = load_data(cfg, tokenizer, template)
    evaluation = _each_eval_dataset(cfg, template, tokenizer) if cfg.eval_on_each_dataset else data.eval
    if cfg.debug_data and cfg.do_train:
        from tunery.train.debug_data import print_first_example

        print_first_example(data.train, tokenizer)
    to_predict = None
    if cfg.do_predict:
        from tunery.train.metrics import require_metrics

        require_metrics()
        to_predict = _encode(cfg, _evaluation_records(cfg, "sft"), template, tokenizer, "predict")
    args = training_arguments(cfg)
    check_ranks_agree(cfg, args, data.train, data.eval)  # several processes: same options and data, or nobody starts
    resume = None
    if cfg.do_train:
        with args.main_process_first(local=False, desc="output_dir"):
            resume = prepare_output_dir(cfg, is_main=args.process_index == 0)
        from tunery.runs import card

        card.begin(cfg, resume)
        card.note_data(cfg, data)

    # 2. Model and fine-tuning method (the seed makes new LoRA/head weights the same in every process and run).
    set_seed(cfg.seed)
    from tunery.train import cpu_fsdp

    sharding = cpu_fsdp.load_kwargs(cfg)  # CPU FSDP2: transformers shards the model as it loads
    model = session.load_model(**sharding)  # the method attached (training) or the adapters merged; a score head
    if sharding:
        cpu_fsdp.check_wrapped(cfg, model)
    if resume:
        check_fits_model(resume, model)

    # 3. The transformers Trainer does the loop.
    interrupt = InterruptCallback()
    trainer = build_trainer(stage, cfg, model, args, tokenizer, data.train, evaluation,
                            [LogCallback(cfg.output_dir), interrupt, *option_callbacks(cfg)], load_reference_model)

    # 4. Train, save artifacts, evaluate, predict, plot.
    if cfg.do_train:
        with disk_full_is_one_line(cfg.output_dir):
            try:
                result = trainer.train(resume_from_checkpoint=resume)
            except pickle.UnpicklingError:  # transformers loads with weights_only=True and refused a file
                from tunery.utils.safe_load import refused_file, unsafe_file

                raise (unsafe_file(resume) if resume else None) or refused_file(resume or cfg.output_dir) from None
            finally:
                interrupt.restore()
                _close_progress_bar(trainer)
            if interrupt.stopped_at is not None:
                raise interrupted(interrupt, interrupt.stopped_at,
                                  f"{cfg.output_dir}/checkpoint-{interrupt.stopped_at}")
            save_final(trainer, cfg, tokenizer, template, result)
    if cfg.do_eval and evaluation:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if to_predict is not None:
        from tunery.train.predict import run_predict

        run_predict(trainer, cfg, tokenizer, template, to_predict)
    finish(trainer, cfg)
