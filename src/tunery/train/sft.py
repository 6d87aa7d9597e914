"""Supervised fine-tuning, top to bottom: tokenizer → template → data → model → method → Trainer → artifacts."""

from __future__ import annotations

from tunery.utils.logging import get_logger

logger = get_logger(__name__)


def run_sft(cfg) -> None:
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer

    from tunery.data.dataset import prepare_datasets
    from tunery.data.records import IGNORE_INDEX
    from tunery.data.template_select import resolve_template
    from tunery.model.adapters import prepare_for_training
    from tunery.model.load import load_model, load_tokenizer
    from tunery.train.artifacts import finish, prepare_output_dir, save_final, training_arguments
    from tunery.train.callbacks import LogCallback

    # 1. Everything that can fail on the user's input happens before the model loads.
    tokenizer = load_tokenizer(cfg)
    template = resolve_template(cfg, tokenizer)
    data = prepare_datasets(cfg, tokenizer, template)
    args = training_arguments(cfg)
    resume = prepare_output_dir(cfg)

    # 2. Model and fine-tuning method.
    model = load_model(cfg, tokenizer)
    model = prepare_for_training(model, cfg)

    # 3. The transformers Trainer does the loop; padding to the batch's own longest example.
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX,
                                      pad_to_multiple_of=8 if args.fp16 or args.bf16 else None)
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[LogCallback(cfg.output_dir)],
    )

    # 4. Train, save artifacts, evaluate, plot.
    if cfg.do_train:
        result = trainer.train(resume_from_checkpoint=resume)
        save_final(trainer, cfg, tokenizer, template, result)
    if cfg.do_eval and data.eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    finish(trainer, cfg)
