"""do_predict: generate an answer for every evaluation prompt, write generated_predictions.jsonl (prompt, predict,
label per line, as LLaMA-Factory) and BLEU/ROUGE scores to predict_results.json."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

PREDICTIONS_FILE = "generated_predictions.jsonl"


def generation_kwargs(cfg: Config, template, tokenizer) -> dict:
    """transformers generate() arguments from the generation options (model/generation.py)."""
    from tunery.model.generation import predict_generate_kwargs

    return predict_generate_kwargs(cfg, template, tokenizer)


def generate(model, tokenizer, prompts: list[list[int]], batch_size: int, kwargs: dict) -> list[list[int]]:
    """The new tokens generated for each prompt (batched, left-padded), without the prompt and the padding."""
    import torch

    from tunery.train.collators import pad

    model.eval()
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        input_ids = pad(batch, tokenizer.pad_token_id, side="left").to(model.device)
        mask = pad([[1] * len(p) for p in batch], 0, side="left").to(model.device)
        with torch.inference_mode():
            generated = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        for row in generated[:, input_ids.shape[1]:].tolist():
            out.append([t for t in row if t != tokenizer.pad_token_id])
    return out


def _column(examples, name: str):
    """A column of the encoded examples: lazy for a Dataset (read batch by batch), a list for a list of dicts."""
    return examples[name] if hasattr(examples, "column_names") else [e[name] for e in examples]


def run_predict(trainer, cfg: Config, tokenizer, template, examples) -> dict:
    """Generate on the main process, write the predictions and the scores; returns the metrics."""
    from tunery.train.metrics import similarity

    metrics: dict = {}
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        started = time.time()
        answers = generate(model, tokenizer, _column(examples, "input_ids"), cfg.per_device_eval_batch_size,
                           generation_kwargs(cfg, template, tokenizer))
        runtime = time.time() - started
        prompts = [tokenizer.decode(ids, skip_special_tokens=False) for ids in _column(examples, "input_ids")]
        preds = tokenizer.batch_decode(answers, skip_special_tokens=True)
        labels = [tokenizer.decode(ids, skip_special_tokens=True) for ids in _column(examples, "labels")]
        os.makedirs(cfg.output_dir, exist_ok=True)
        path = os.path.join(cfg.output_dir, PREDICTIONS_FILE)
        with open(path, "w", encoding="utf-8") as fh:
            for prompt, pred, label in zip(prompts, preds, labels):
                fh.write(json.dumps({"prompt": prompt, "predict": pred, "label": label}, ensure_ascii=False) + "\n")
        logger.info("wrote %d predictions to %s", len(preds), path)
        metrics = {f"predict_{k}": v for k, v in similarity(preds, labels).items()}
        metrics.update(predict_runtime=round(runtime, 4),
                       predict_samples_per_second=round(len(examples) / max(runtime, 1e-9), 3))
        trainer.log_metrics("predict", metrics)
        trainer.save_metrics("predict", metrics)
    trainer.accelerator.wait_for_everyone()
    return metrics
