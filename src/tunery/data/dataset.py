"""Config → aligned records → encoded examples, for one training run (everything before the model loads)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tunery.utils.logging import get_logger

logger = get_logger(__name__)


@dataclass
class PreparedData:
    train: list[dict]
    eval: list[dict] | None
    dropped: dict[str, int] = field(default_factory=dict)


def load_records(cfg):
    from tunery.data.loader import load_datasets

    return load_datasets(
        list(cfg.dataset or []),
        cfg.dataset_dir,
        cfg.stage,
        max_samples=cfg.max_samples,
        val_size=cfg.val_size,
        seed=cfg.seed,
        mix_strategy=cfg.mix_strategy,
        interleave_probs=[float(p) for p in cfg.interleave_probs] if cfg.interleave_probs else None,
        eval_names=list(cfg.eval_dataset) if cfg.eval_dataset else None,
        placeholders=cfg.placeholders,
    )


def encode_records(cfg, records, template, tokenizer) -> list[dict]:
    from tunery.data.encode import encode_dataset

    return encode_dataset(
        records,
        cfg.stage,
        template,
        tokenizer,
        cfg.cutoff_len,
        train_on_prompt=cfg.train_on_prompt,
        mask_history=cfg.mask_history,
        num_workers=_workers(cfg.preprocessing_num_workers, len(records)),
    )


def _workers(requested: int | None, n_records: int) -> int:
    """Processes worth starting: no more than the cores, and one for small data (a pool costs more than it saves)."""
    if not requested or n_records < 2000:
        return 1
    return max(1, min(requested, os.cpu_count() or 1))


def prepare_datasets(cfg, tokenizer, template) -> PreparedData:
    loaded = load_records(cfg)
    train = encode_records(cfg, loaded.train, template, tokenizer)
    evaluation = encode_records(cfg, loaded.eval, template, tokenizer) if loaded.eval else None
    dropped = dict(loaded.dropped)
    logger.info("training examples: %d%s", len(train), f", evaluation examples: {len(evaluation)}" if evaluation
                else "")
    return PreparedData(train, evaluation, dropped)
