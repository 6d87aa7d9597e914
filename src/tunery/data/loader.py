"""The public data entry: dataset names -> train/eval lists of :class:`AlignedRecord`.

Mirrors LLaMA-Factory's ``get_dataset`` up to (not including) tokenization:

* per dataset: read rows, ``num_samples`` (sample that many rows; every row once before any repeats), then
  ``max_samples`` (keep the *first* N rows of *each* dataset), then convert (records LLaMA-Factory skips are dropped
  and counted);
* mix the datasets: ``concat`` (in the given order), ``interleave_under`` (stop when the first dataset runs out) or
  ``interleave_over`` (repeat until every dataset is used up), with optional ``interleave_probs``; the orders
  reproduce ``datasets.interleave_datasets`` for the same seed;
* split off ``val_size`` (a fraction in (0, 1), or a count when > 1) exactly as ``Dataset.train_test_split(seed)``
  does, or load ``eval_names`` as the evaluation set (not both).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, DataError, did_you_mean
from ..utils.logging import get_logger
from ..config.stages import names_text, stages_reading
from .formats import check_stage, detect_format, reads, to_aligned
from .records import AlignedRecord
from .registry import DatasetSpec, get_dataset_spec, get_dataset_specs, load_registry  # noqa: F401 (re-exported)
from .sources import read_rows

logger = get_logger(__name__)

MIX_STRATEGIES = ("concat", "interleave_under", "interleave_over")

__all__ = [
    "LoadedData",
    "load_datasets",
    "load_one",
    "check_stage_fit",
    "fill_placeholders",
    "find_placeholders",
    "get_dataset_spec",
    "load_registry",
]


@dataclass
class LoadedData:
    """``train``/``eval`` records; ``dropped``: ``"dataset: reason" -> count``; ``counts``: kept records per
    training dataset (before mixing and splitting); ``placeholders``: ``{{name}}``-style placeholders still present
    (name -> number of records)."""

    train: list[AlignedRecord]
    eval: list[AlignedRecord] | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    placeholders: dict[str, int] = field(default_factory=dict)

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())


def _names(names: str | Sequence[str] | None) -> list[str]:
    if names is None:
        return []
    if isinstance(names, str):
        names = names.split(",")  # "a,b" as in LLaMA-Factory's CLI
    out = [str(n).strip() for n in names if str(n).strip()]
    return out


def check_stage_fit(spec: DatasetSpec, stage: str) -> None:
    """Refuse a dataset the stage cannot use, with the fix (LLaMA-Factory: "not applicable in the current stage")."""
    where = spec.where()
    kind = reads(stage)
    if spec.ranking and kind != "ranking":
        raise DataError(
            f"dataset {spec.name} is a preference (ranking) dataset, which stage {stage} cannot use — use it with "
            f"stage {names_text(stages_reading('ranking'))}, or pick a non-ranking dataset for {stage}"
        )
    if not spec.ranking and kind == "ranking":
        raise DataError(
            f'dataset {spec.name} is not a preference dataset (no "ranking": true in {where}), but stage {stage} '
            "needs chosen/rejected pairs — use a ranking dataset such as dpo_en_demo, or set ranking and "
            "columns.chosen/rejected in its entry"
        )
    if kind == "kto" and not spec.columns.get("kto_tag"):
        raise DataError(
            f"dataset {spec.name} has no kto_tag column, which stage kto needs — set columns.kto_tag in {where} "
            '(a true/false column, e.g. "label") or use a KTO dataset such as kto_en_demo'
        )
    if kind == "chat" and spec.columns.get("kto_tag"):
        raise DataError(
            f"dataset {spec.name} is a KTO dataset (columns.kto_tag in {where}) whose responses are labelled "
            f"good/bad; stage {stage} would learn the bad ones too — use stage {names_text(stages_reading('kto'))}, or "
            "remove kto_tag from its columns"
        )


def _sample_rows(rows: list[dict], num_samples: int, rng: np.random.Generator) -> tuple[list[dict], list[int]]:
    """LLaMA-Factory's ``num_samples``: a permutation (every row once), then random repeats if more are wanted."""
    idx = rng.permutation(len(rows))[:num_samples]
    extra = num_samples - len(idx)
    if extra > 0:
        idx = np.concatenate([idx, rng.choice(len(rows), extra)])
    picked = [int(i) for i in idx]
    return [rows[i] for i in picked], picked


def load_one(
    name_or_spec: str | DatasetSpec,
    dataset_dir: str,
    stage: str,
    *,
    max_samples: int | None = None,
    seed: int = 42,
    dropped: dict[str, int] | None = None,
) -> list[AlignedRecord]:
    """One dataset -> aligned records (num_samples, max_samples and the stage checks applied)."""
    spec = name_or_spec if isinstance(name_or_spec, DatasetSpec) else get_dataset_spec(name_or_spec, dataset_dir)
    if spec.formatting != "auto":
        check_stage_fit(spec, stage)
    rows = read_rows(spec)
    if not rows:
        raise DataError(f"dataset {spec.name} ({spec.dataset_name}, split {spec.split}) holds no records")
    spec = detect_format(rows, spec)
    check_stage_fit(spec, stage)
    indices = list(range(len(rows)))
    seen: set = set()
    for row in rows:
        seen.update(row)
    if spec.num_samples is not None:
        rows, indices = _sample_rows(rows, spec.num_samples, np.random.default_rng(seed))
        logger.info("sampled %d records from dataset %s", spec.num_samples, spec.name)
    if max_samples is not None and len(rows) > max_samples:
        rows, indices = rows[:max_samples], indices[:max_samples]
    return to_aligned(rows, spec, stage, dropped=dropped, indices=indices, columns_seen=seen)


def _interleave(parts: list[list], probs: list[float] | None, seed: int, oversample: bool) -> list:
    """Same order as ``datasets.interleave_datasets`` (first_exhausted / all_exhausted) for the same seed."""
    k, lengths = len(parts), [len(p) for p in parts]
    if probs is None:
        if not oversample:  # round robin until the shortest runs out
            return [parts[d][i] for i in range(min(lengths)) for d in range(k)]
        return [parts[d][i % lengths[d]] for i in range(max(lengths)) for d in range(k)]
    rng = np.random.default_rng(seed)
    stop = all if oversample else any
    exhausted, pos, out = [False] * k, [0] * k, []
    while True:
        for d in rng.choice(k, size=1000, p=probs):
            if stop(exhausted):
                return out
            d = int(d)
            out.append(parts[d][pos[d]])
            pos[d] += 1
            if pos[d] >= lengths[d]:
                exhausted[d], pos[d] = True, 0


def _parse_probs(probs, names: list[str], mix_strategy: str) -> list[float] | None:
    if probs is None or probs == "" or probs == []:
        return None
    if mix_strategy == "concat":
        raise ConfigError("interleave_probs is only valid with mix_strategy interleave_under or interleave_over")
    try:
        values = [float(p) for p in (probs.split(",") if isinstance(probs, str) else probs)]
    except (TypeError, ValueError):
        raise ConfigError(f"interleave_probs must be numbers like 0.7,0.3, got {probs!r}") from None
    if len(values) != len(names):
        raise ConfigError(
            f"interleave_probs has {len(values)} values but {len(names)} datasets are given "
            f"({', '.join(names)}) — give one probability per dataset"
        )
    if any(v < 0 for v in values) or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ConfigError(f"interleave_probs must be non-negative and sum to 1, got {values} (sum {sum(values):g})")
    if mix_strategy == "interleave_over" and any(v == 0 for v in values):
        zero = names[values.index(0)]
        raise ConfigError(
            f"interleave_probs gives dataset {zero} probability 0, so interleave_over would never finish — "
            "drop the dataset or give it a probability"
        )
    return values


def _val_count(val_size, n: int) -> int:
    """``Dataset.train_test_split`` semantics: a fraction rounds up, a value > 1 is a count."""
    if isinstance(val_size, float) and val_size <= 1:
        return math.ceil(val_size * n)
    return int(val_size)


def _check_options(max_samples, val_size, mix_strategy: str) -> None:
    if mix_strategy not in MIX_STRATEGIES:
        raise ConfigError(
            f"unknown mix_strategy '{mix_strategy}'{did_you_mean(str(mix_strategy), MIX_STRATEGIES)} — use one of "
            f"{', '.join(MIX_STRATEGIES)}"
        )
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ConfigError(f"max_samples must be a positive integer, got {max_samples!r}")
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or val_size < 0:
        raise ConfigError(f"val_size must be a fraction in (0, 1) or a record count > 1, got {val_size!r}")
    if val_size == 1:
        raise ConfigError("val_size 1 would leave no training data — use a fraction below 1 or a record count above 1")


# --------------------------------------------------------------------------------------------------------------------
# placeholders ({{name}}, {{author}} in identity.json)

PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _texts(record: AlignedRecord) -> Iterable[str]:
    yield record.system
    for message in record.prompt + record.response:
        yield message.get("content") or ""


def fill_placeholders(records: list[AlignedRecord], values: dict[str, str]) -> list[AlignedRecord]:
    """Replace ``{{key}}`` (spaces inside the braces allowed) by ``values[key]`` in every message and system prompt.

    Placeholders without a value are left as they are. Records are changed in place; the list is returned.
    """
    if not values:
        return records
    values = {str(k): str(v) for k, v in values.items()}

    def sub(text: str) -> str:
        if "{{" not in text:
            return text
        return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)

    for record in records:
        record.system = sub(record.system)
        for message in record.prompt + record.response:
            if isinstance(message.get("content"), str):
                message["content"] = sub(message["content"])
    return records


def find_placeholders(records: list[AlignedRecord]) -> dict[str, int]:
    """Placeholder name (without braces) -> number of records that still contain ``{{name}}``."""
    found: dict[str, int] = {}
    for record in records:
        names = set()
        for text in _texts(record):
            if "{{" in text:
                names.update(PLACEHOLDER_RE.findall(text))
        for name in names:
            found[name] = found.get(name, 0) + 1
    return found


def load_datasets(
    names: str | Sequence[str],
    dataset_dir: str,
    stage: str,
    *,
    max_samples: int | None = None,
    val_size: float | int = 0.0,
    seed: int = 42,
    mix_strategy: str = "concat",
    interleave_probs: str | Sequence[float] | None = None,
    eval_names: str | Sequence[str] | None = None,
    placeholders: dict[str, str] | None = None,
) -> LoadedData:
    """Load, convert, mix and split the named datasets for ``stage`` (a row of config/stages.py).

    ``max_samples`` caps each dataset (train and eval) at its first N rows; ``val_size`` is a fraction in (0, 1) or
    a count > 1 taken out of the mixed training data; ``eval_names`` load a separate evaluation set instead;
    ``placeholders`` fill ``{{key}}`` placeholders (e.g. ``{"name": "Tunery", "author": "me"}`` for identity.json).
    """
    check_stage(stage)
    train_names, eval_list = _names(names), _names(eval_names)
    if not train_names:
        raise ConfigError("no dataset given — set dataset to one or more names from dataset_info.json")
    _check_options(max_samples, val_size, mix_strategy)
    if eval_list and val_size:
        raise ConfigError("set either val_size or eval_dataset, not both (LLaMA-Factory refuses the combination too)")
    probs = _parse_probs(interleave_probs, train_names, mix_strategy)

    specs = get_dataset_specs(train_names, dataset_dir)
    eval_specs = get_dataset_specs(eval_list, dataset_dir) if eval_list else []
    for spec in specs + eval_specs:  # fail fast, before reading any file
        if spec.formatting != "auto":
            check_stage_fit(spec, stage)

    dropped: dict[str, int] = {}
    parts, counts = [], {}
    for spec in specs:
        records = load_one(spec, dataset_dir, stage, max_samples=max_samples, seed=seed, dropped=dropped)
        if placeholders:
            fill_placeholders(records, placeholders)
        counts[spec.name] = counts.get(spec.name, 0) + len(records)
        parts.append(records)

    if len(parts) == 1 or mix_strategy == "concat":
        train = [r for part in parts for r in part]
    else:
        train = _interleave(parts, probs, seed, oversample=mix_strategy == "interleave_over")

    evaluation: list[AlignedRecord] | None = None
    if eval_specs:
        evaluation = []
        for spec in eval_specs:
            records = load_one(spec, dataset_dir, stage, max_samples=max_samples, seed=seed, dropped=dropped)
            evaluation.extend(fill_placeholders(records, placeholders or {}))
    elif val_size:
        n = len(train)
        n_eval = _val_count(val_size, n)
        if n_eval < 1 or n_eval >= n:
            raise ConfigError(
                f"val_size {val_size} takes {n_eval} of {n} training records, leaving "
                f"{'no evaluation' if n_eval < 1 else 'no training'} data — use a smaller val_size or more data"
            )
        order = np.random.default_rng(seed).permutation(n)
        evaluation = [train[int(i)] for i in order[:n_eval]]
        train = [train[int(i)] for i in order[n_eval:]]

    remaining = find_placeholders(train + (evaluation or []))
    if remaining:
        shown = ", ".join(f"{{{{{k}}}}} in {v} records" for k, v in sorted(remaining.items()))
        logger.warning("placeholders left in the data: %s — fill them (placeholders option) or edit the data", shown)
    if dropped:
        logger.warning(
            "dropped %d record(s): %s", sum(dropped.values()), "; ".join(f"{k} ({v})" for k, v in dropped.items())
        )
    logger.info(
        "loaded %d training%s records from %s",
        len(train),
        f" and {len(evaluation)} evaluation" if evaluation is not None else "",
        ", ".join(train_names),
    )
    return LoadedData(train=train, eval=evaluation, dropped=dropped, counts=counts, placeholders=remaining)
