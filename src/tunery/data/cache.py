"""``tokenized_path``: save the encoded train/eval sets once, reload them on later runs.

The folder is a ``datasets.DatasetDict.save_to_disk`` folder (Arrow files; splits ``train`` and ``validation``, the
names LLaMA-Factory uses, so a folder LLaMA-Factory's ``tokenized_path`` wrote loads too; memory-mapped when loaded)
plus
``tunery_tokenized.json``: the options the data was encoded with and the dropped-record counts. No pickle.

On a later run with the same ``tokenized_path`` the folder is loaded and loading/encoding are skipped. If that run
names datasets and its encoding options differ from the saved ones, it is refused with the differences (re-encode
with ``overwrite_cache: true`` or use another folder); a run that names no dataset just uses the folder (the
LLaMA-Factory workflow: encode once, then train with ``tokenized_path`` alone).
"""

from __future__ import annotations

import json
import os
import shutil

from ..config.data_options import has_tokenized_data  # noqa: F401 (cache.has_tokenized_data)
from ..errors import ConfigError, DataError
from ..utils.logging import get_logger

logger = get_logger(__name__)

META_FILE = "tunery_tokenized.json"
FORMAT_VERSION = 1
TRAIN, EVAL = "train", "validation"
LF_ONLY_COLUMNS = ("images", "videos", "audios", "packing_params")  # multimodal fields in LLaMA-Factory's saves

# Options that change what encoding produces (compared when a run names datasets and reuses a folder).
ENCODING_OPTIONS = (
    "dataset", "eval_dataset", "stage", "cutoff_len", "template", "train_on_prompt", "mask_history", "packing",
    "neat_packing", "max_samples", "val_size", "mix_strategy", "interleave_probs", "placeholders", "default_system",
    "enable_thinking", "tool_format", "seed", "preprocessing_batch_size",
)


def fingerprint(cfg, tokenizer) -> dict:
    """The encoding options of this run, JSON-ready, plus the tokenizer's identity (path and vocabulary size)."""
    options = {}
    for name in ENCODING_OPTIONS:
        value = cfg.values[name]
        options[name] = list(value) if isinstance(value, tuple) else value
    if not cfg.val_size and cfg.mix_strategy == "concat":
        options.pop("seed")  # the seed shapes the data only through the val split and interleaving
    options["dataset_dir"] = os.path.abspath(cfg.dataset_dir) if cfg.dataset_dir else None
    options["tokenizer"] = {"name_or_path": str(getattr(tokenizer, "name_or_path", "")), "vocab": len(tokenizer)}
    return json.loads(json.dumps(options, default=str))


def _differences(saved: dict, current: dict) -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            out.append(f"{key} {json.dumps(saved.get(key))} → {json.dumps(current.get(key))}")
    return out


def save_tokenized(path: str, train, evaluation, meta: dict) -> None:
    """Write the encoded splits (Datasets) and ``meta`` (options, dropped counts) to ``path`` (replacing an earlier
    save)."""
    from datasets import DatasetDict

    path = os.path.expanduser(path)
    if os.path.isdir(path) and os.listdir(path):
        if not (has_tokenized_data(path) or os.path.isfile(os.path.join(path, META_FILE))):
            raise ConfigError(f"tokenized_path '{path}' is a folder with other files in it — give an empty or new "
                              "folder (Tunery replaces the folder's contents when it re-encodes)")
        shutil.rmtree(path)
    splits = {TRAIN: train} if train is not None and len(train) else {}
    if evaluation is not None and len(evaluation):
        splits[EVAL] = evaluation
    try:
        DatasetDict(splits).save_to_disk(path)
    except OSError as err:
        raise ConfigError(f"could not write tokenized_path '{path}': {err.strerror or err} — check the path and "
                          "its permissions") from None
    with open(os.path.join(path, META_FILE), "w", encoding="utf-8") as fh:
        json.dump(dict(meta, format=FORMAT_VERSION), fh, ensure_ascii=False, indent=2)
    logger.info("saved the encoded datasets to %s (later runs with tokenized_path: %s skip loading and encoding)",
                path, path)


def read_meta(path: str) -> dict:
    meta_path = os.path.join(os.path.expanduser(path), META_FILE)
    if not os.path.isfile(meta_path):
        return {}
    with open(meta_path, encoding="utf-8") as fh:
        return json.load(fh)


def _columns(dataset):
    """The split without LLaMA-Factory's multimodal columns (still memory-mapped)."""
    extra = [name for name in dataset.column_names if name in LF_ONLY_COLUMNS]
    return dataset.remove_columns(extra) if extra else dataset


def load_tokenized(path: str, current: dict | None = None) -> tuple:
    """(train, eval, meta) from ``path``. With ``current`` (this run's :func:`fingerprint`, given when the run names
    datasets), encoding options that differ from the saved ones are refused with the list of differences."""
    from datasets import DatasetDict, load_from_disk

    path = os.path.expanduser(path)
    meta = read_meta(path)
    saved = meta.get("options")
    if current is not None and saved is not None:
        diffs = _differences(saved, current)
        if diffs:
            raise ConfigError(f"tokenized_path '{path}' was encoded with other options ({'; '.join(diffs[:4])}"
                              f"{'; …' if len(diffs) > 4 else ''}) — set overwrite_cache: true to re-encode, use "
                              "another tokenized_path, or drop the dataset options to train on the saved data as is")
    try:
        data = load_from_disk(path)
    except Exception as err:  # noqa: BLE001 - a damaged folder: one line, with the fix
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"could not read tokenized_path '{path}': {reason} — set overwrite_cache: true to "
                        "re-encode it") from None
    if not isinstance(data, DatasetDict):
        data = DatasetDict({TRAIN: data})
    if saved is None:
        logger.warning("tokenized_path %s was not written by Tunery: its encoding options cannot be checked", path)
    train = _columns(data[TRAIN]) if TRAIN in data else None
    evaluation = _columns(data[EVAL]) if EVAL in data else None
    logger.info("loaded %d training%s examples from tokenized_path %s (loading and encoding skipped)",
                len(train) if train is not None else 0,
                f" and {len(evaluation)} evaluation" if evaluation else "", path)
    return train, evaluation, meta
