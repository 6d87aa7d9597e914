"""Config → aligned records → encoded (and packed) examples, for one training run (everything before the model loads).

:func:`prepare_datasets` is the entry the recipes use: template/tokenizer check, ``tokenized_path`` reuse, loading,
dropping records with empty responses, encoding (``preprocessing_num_workers`` processes for larger data), the
"nothing left to train on" error with its causes, sft packing, and saving to ``tokenized_path``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

from tunery.config.stages import stage_spec, uses
from tunery.errors import ConfigError, DataError
from tunery.utils.logging import get_logger

logger = get_logger(__name__)

MIN_RECORDS_PER_WORKER = 1000  # below this a process pool costs more than it saves (benchmarks/preprocess.py)


@dataclass
class PreparedData:
    """What the trainer receives (``train``/``eval``: memory-mapped ``datasets.Dataset`` of the encoded examples —
    packed rows with packing) and how it came about."""

    train: object  # datasets.Dataset (or a list, for the small in-memory uses)
    eval: object | None
    dropped: dict[str, int] = field(default_factory=dict)  # "dataset: reason" (loading) / "encoding: reason"
    placeholders: dict[str, int] = field(default_factory=dict)  # {{name}} still in the data -> record count
    num_examples: int = 0  # encoded training examples (before packing)
    packing: dict | None = None  # packing_summary() when sft examples were packed
    tokenized_path: str | None = None  # the folder the data was loaded from or saved to
    from_cache: bool = False
    unpacked: object | None = None  # the training examples before packing (kept only when asked: preview)
    files: dict = field(default_factory=dict)  # split -> Arrow file names (in the encoding folder)
    cache_entry: str | None = None  # the encoding cache folder the data lives in
    figures: dict = field(default_factory=dict)  # split -> examples/tokens/trained_tokens, counted while writing


# ---------------------------------------------------------------- loading
def load_records(cfg):
    """LoadedData for the run's datasets, records with empty responses dropped (and counted)."""
    from tunery.data.loader import load_datasets

    loaded = load_datasets(
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
    if stage_spec(cfg.stage).trains_responses:
        loaded.train = drop_empty_responses(loaded.train, loaded.dropped)
        if loaded.eval is not None:
            loaded.eval = drop_empty_responses(loaded.eval, loaded.dropped)
    return loaded


def _dataset_name(record) -> str:
    return record.source.split("[", 1)[0] if record.source else "data"


def drop_empty_responses(records: list, dropped: dict[str, int]) -> list:
    """Records whose response (any of chosen/rejected) is empty or blank would teach the model to answer nothing
    (LLaMA-Factory trains on them: only the end-of-turn token is learned). They are dropped, counted in ``dropped``
    as ``"dataset: empty response"`` and the first one is named in a warning."""
    kept, first, count = [], {}, Counter()
    for record in records:
        if record.response and any(not str(m.get("content") or "").strip() for m in record.response):
            name = _dataset_name(record)
            count[name] += 1
            first.setdefault(name, record.source)
            continue
        kept.append(record)
    for name, n in count.items():
        dropped[f"{name}: empty response"] = dropped.get(f"{name}: empty response", 0) + n
        logger.warning("dataset %s: dropped %d record(s) with an empty response (first: %s) — fill in the responses "
                       "or remove those records", name, n, first[name])
    return kept


# ---------------------------------------------------------------- template / tokenizer fit
_SPECIAL_RE = re.compile(r"<\|[^|<>\s]{1,40}\|>|<｜[^｜<>]{1,40}｜>|<(?:start|end)_of_turn>|<reserved_\d+>")
TEXT_MARKER_TEMPLATES = ("zephyr",)  # their <|user|> markers are plain text in the model's own tokenizer


def template_special_tokens(template) -> list[str]:
    """Special-token texts a template's slots rely on (``<|start_header_id|>``, ``<|im_start|>``, ...)."""
    from tunery.data.templates.template import Token

    if getattr(template, "name", None) in TEXT_MARKER_TEMPLATES or not hasattr(template, "constants"):
        return []
    found: dict[str, None] = {}
    for slot in ("prefix", "system", "user", "assistant", "function", "observation", "separator"):
        for elem in getattr(template, slot, ()) or ():
            if isinstance(elem, Token):
                found[elem.text] = None
            elif isinstance(elem, str):
                for match in _SPECIAL_RE.findall(elem):
                    found[match] = None
    return list(found)


def check_template_tokens(template, tokenizer, model: str = "") -> None:
    """Refuse a template whose special tokens the tokenizer lacks: they would be split into ordinary pieces and the
    model would learn a chat format it was never meant to have (e.g. the llama3 template on a Qwen tokenizer)."""
    from tunery.data.templates.template import text_encoder

    encode = text_encoder(tokenizer)
    missing = []
    for text in template_special_tokens(template):
        if len(encode(text)) != 1:
            missing.append((text, len(encode(text))))
    if not missing:
        return
    text, pieces = missing[0]
    name = getattr(template, "name", "?")
    where = f" of {model}" if model else ""
    own = " or template: tokenizer (its own chat template)" if getattr(tokenizer, "chat_template", None) else ""
    more = f" (and {len(missing) - 1} more: {', '.join(t for t, _ in missing[1:4])})" if len(missing) > 1 else ""
    raise ConfigError(f"template '{name}' needs the special token {text}{more}, which the tokenizer{where} does not "
                      f"have: it would be split into {pieces} ordinary pieces — use the template of the model's "
                      f"family{own}, or add them (new_special_tokens: {','.join(t for t, _ in missing)}) with "
                      "resize_vocab: true")


# ---------------------------------------------------------------- encoding
def _workers(requested: int | None, n_records: int) -> int:
    """Processes worth starting: at most the cores, and at least MIN_RECORDS_PER_WORKER records each."""
    if not requested or requested <= 1:
        return 1
    return max(1, min(requested, os.cpu_count() or 1, n_records // MIN_RECORDS_PER_WORKER))


def encode_cutoff(cfg) -> int:
    """LLaMA-Factory encodes with ``cutoff_len - 1`` whenever packing is asked for (packing rows of cutoff_len)."""
    from tunery.data.packing import packed_cutoff

    return packed_cutoff(cfg.cutoff_len) if (cfg.packing or cfg.neat_packing) else cfg.cutoff_len


def encode_records(cfg, records, template, tokenizer, cutoff_len: int | None = None):
    """EncodedDataset (a list with ``.dropped``) of ``records`` for the run's stage."""
    from tunery.data.encoded import encode_dataset

    return encode_dataset(
        records,
        cfg.stage,
        template,
        tokenizer,
        encode_cutoff(cfg) if cutoff_len is None else cutoff_len,
        train_on_prompt=cfg.train_on_prompt,
        mask_history=cfg.mask_history,
        packing=cfg.packing is not False,  # pt: concatenate and cut into blocks unless packing: false
        num_workers=_workers(cfg.preprocessing_num_workers, len(records)),
    )


_HINTS = {
    "nothing to train on after truncation": "raise cutoff_len (now {cutoff}) or shorten the prompts",
    "empty response": "fill in the responses",
    "no response": "check columns.response in dataset_info.json",
    "empty text": "check the text column",
}


def nothing_left_error(cfg, loaded_count: int, dropped: dict[str, int], split: str = "training") -> DataError:
    """The "no examples left" error: every cause with its count and the matching fix."""
    causes = sorted(dropped.items(), key=lambda kv: -kv[1])
    listed = ", ".join(f"{n} x {reason}" for reason, n in causes) or "no records in the data"
    hints = []
    for reason, _ in causes:
        for key, hint in _HINTS.items():
            if key in reason and hint.format(cutoff=cfg.cutoff_len) not in hints:
                hints.append(hint.format(cutoff=cfg.cutoff_len))
    fix = "; ".join(hints) if hints else "check the records"
    return DataError(f"no {split} examples left from dataset {','.join(cfg.dataset or [])}: {loaded_count} record(s) "
                     f"loaded, all dropped ({listed}) — {fix}; `tunery preview` shows the records")


def _encode_split(cfg, records, template, tokenizer, folder: str, prefix: str, stage: str | None = None):
    """EncodedArrow of ``records`` (the Arrow files ``folder/prefix-*.arrow``) for ``stage`` (default: the run's) —
    the one entry every encoding of a run goes through (training and evaluation splits, evaluation-only runs,
    do_predict's prompts): the run's stage with encode_cutoff's cutoff, "predict" prompts (never packed) with
    cutoff_len."""
    from tunery.data.encoded import encode_to_arrow

    stage = stage or cfg.stage
    cutoff = encode_cutoff(cfg) if stage == cfg.stage else cfg.cutoff_len
    return encode_to_arrow(records, stage, template, tokenizer, cutoff, folder, prefix,
                           train_on_prompt=cfg.train_on_prompt, mask_history=cfg.mask_history,
                           packing=cfg.packing is not False,
                           num_workers=_workers(cfg.preprocessing_num_workers, len(records)))


def encode_to_dataset(cfg, records, template, tokenizer, stage: str):
    """``records`` encoded for ``stage`` (eval-only runs, predict) as :func:`_encode_split` encodes the training
    run's splits: a memory-mapped Dataset in a temporary folder."""
    return _encode_split(cfg, records, template, tokenizer, _scratch_folder(), stage, stage=stage).dataset


def _scratch_folder() -> str:
    """A temporary folder for encodings that are not cached (preview); removed when the process exits."""
    import atexit

    folder = tempfile.mkdtemp(prefix="tunery-encoded-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


def encode_loaded(cfg, loaded, template, tokenizer, strict: bool = True, keep_unpacked: bool = False,
                  folder: str | None = None) -> PreparedData:
    """Encode (and pack) a LoadedData into Arrow files in ``folder`` (a temporary one by default); with ``strict``,
    refuse when nothing is left to train or evaluate on."""
    from tunery.data.encoded import open_shards, pack_to_arrow
    from tunery.data.packing import packing_enabled

    folder = folder or _scratch_folder()
    dropped = dict(loaded.dropped)
    loaded_count = len(loaded.train) + sum(dropped.values())
    files: dict[str, list[str]] = {}
    figures: dict[str, dict] = {}
    train = open_shards([])
    if loaded.train:
        encoded = _encode_split(cfg, loaded.train, template, tokenizer, folder, "train")
        train, files["train"], figures["train"] = encoded.dataset, encoded.files, encoded.figures
        for reason, n in encoded.dropped.items():
            dropped[f"encoding: {reason}"] = dropped.get(f"encoding: {reason}", 0) + n
    if not len(train) and strict:
        raise nothing_left_error(cfg, loaded_count, dropped)
    evaluation = None
    if loaded.eval:
        encoded = _encode_split(cfg, loaded.eval, template, tokenizer, folder, "eval")
        evaluation, files["eval"], figures["eval"] = encoded.dataset, encoded.files, encoded.figures
        for reason, n in encoded.dropped.items():
            dropped[f"eval encoding: {reason}"] = dropped.get(f"eval encoding: {reason}", 0) + n
        if not len(evaluation) and strict:
            raise nothing_left_error(cfg, len(loaded.eval), {k: v for k, v in dropped.items()
                                                             if k.startswith("eval encoding")}, "evaluation")
    prepared = PreparedData(train, evaluation, dropped, dict(loaded.placeholders), num_examples=len(train))
    if keep_unpacked:
        prepared.unpacked = prepared.train
    if packing_enabled(cfg):
        batch = cfg.preprocessing_batch_size or 1000
        files["unpacked"] = files.pop("train", [])
        prepared.train, prepared.packing, files["train"], figures["train"] = pack_to_arrow(
            train, cfg.cutoff_len, batch, os.path.join(folder, "train-packed.arrow"))
        if prepared.eval is not None:
            files["unpacked_eval"] = files.pop("eval", [])
            prepared.eval, _, files["eval"], figures["eval"] = pack_to_arrow(
                prepared.eval, cfg.cutoff_len, batch, os.path.join(folder, "eval-packed.arrow"))
        logger.info("packed %d examples into %d sequences of at most %d tokens (%.0f%% full)%s", len(train),
                    len(prepared.train), cfg.cutoff_len - 1, 100 * prepared.packing["fill"],
                    ", packed examples attend only to themselves" if cfg.neat_packing else "")
    prepared.files = {split: [os.path.basename(f) for f in names] for split, names in files.items()}
    prepared.figures = figures
    return prepared


def _check_cached_layout(cfg, path: str, train: list[dict]) -> None:
    """Saved packed rows need packing on (the packed collator), saved examples need it off."""
    from tunery.data.packing import packing_enabled

    if train is None or not len(train) or not uses(cfg.stage, "packed_rows"):
        return
    packed = "position_ids" in train.column_names
    if packed and not packing_enabled(cfg):
        raise ConfigError(f"tokenized_path '{path}' holds packed sequences but packing is off — set packing: true "
                          "(or neat_packing: true, as when they were saved), or overwrite_cache: true to re-encode")
    if not packed and packing_enabled(cfg):
        raise ConfigError(f"tokenized_path '{path}' holds unpacked examples but packing is on — remove packing/"
                          "neat_packing, or set overwrite_cache: true to re-encode them packed")


# ---------------------------------------------------------------- the entry
def _from_tokenized_path(cfg, tokenizer, path: str) -> PreparedData:
    from tunery.data import cache

    current = cache.fingerprint(cfg, tokenizer) if cfg.dataset else None
    train, evaluation, meta = cache.load_tokenized(path, current)
    if (train is None or not len(train)) and cfg.do_train:
        raise DataError(f"tokenized_path '{path}' holds no training examples — set overwrite_cache: true to "
                        "re-encode it from the dataset option")
    _check_cached_layout(cfg, path, train)
    return PreparedData(train if train is not None else [], evaluation, dict(meta.get("dropped", {})),
                        dict(meta.get("placeholders", {})), num_examples=meta.get("num_examples", len(train or [])),
                        packing=meta.get("packing"), tokenized_path=path, from_cache=True,
                        figures=dict(meta.get("figures") or {}))


def _from_entry(entry: str, meta: dict, from_cache: bool) -> PreparedData:
    """The PreparedData of an encoding cache entry, its Arrow files memory-mapped."""
    from tunery.data.encoded import open_shards

    files = meta.get("files", {})
    split = {name: open_shards([os.path.join(entry, f) for f in names]) for name, names in files.items()}
    return PreparedData(split.get("train", open_shards([])), split.get("eval"), dict(meta.get("dropped", {})),
                        dict(meta.get("placeholders", {})), num_examples=meta.get("num_examples", 0),
                        packing=meta.get("packing"), from_cache=from_cache, files=files, cache_entry=entry,
                        figures=dict(meta.get("figures") or {}))


def prepare_datasets(cfg, tokenizer, template) -> PreparedData:
    """The run's training/evaluation data as memory-mapped Datasets: from ``tokenized_path`` when it holds a save
    (unless ``overwrite_cache``), else from the encoding cache when an entry for exactly these inputs exists (unless
    ``overwrite_cache``), else loaded, encoded, packed (sft with packing) into a new cache entry — and then saved to
    ``tokenized_path`` when it is set."""
    from tunery.data import cache, encoding_cache

    started = time.perf_counter()  # (the packing options were checked with the config, config/data_options.py)
    check_template_tokens(template, tokenizer, cfg.model_name_or_path or "")
    path = cfg.tokenized_path
    if path and cache.has_tokenized_data(path) and not cfg.overwrite_cache:
        return _from_tokenized_path(cfg, tokenizer, path)
    if path and not cfg.dataset:
        raise ConfigError(f"tokenized_path '{path}' holds no saved datasets yet — name the dataset(s) to encode "
                          "(option 'dataset') for the first run")
    options = cache.fingerprint(cfg, tokenizer)
    key = encoding_cache.encoding_key(encoding_cache.encoding_inputs(cfg, tokenizer, template, options))
    meta = None if cfg.overwrite_cache else encoding_cache.lookup(key)
    if meta is not None:
        prepared = _from_entry(encoding_cache.entry_folder(key), meta, from_cache=True)
        _check_cached_layout(cfg, encoding_cache.entry_folder(key), prepared.train)
        logger.info("encoding cache hit: %d training examples from %s (loading and encoding skipped; "
                    "overwrite_cache: true re-encodes)", len(prepared.train), prepared.cache_entry)
    else:
        workdir = encoding_cache.new_workdir(key)
        try:
            from tunery.data.record_store import load_to_arrow

            prepared = encode_loaded(cfg, load_to_arrow(cfg, workdir), template, tokenizer, folder=workdir)
            os.remove(os.path.join(workdir, "records.arrow"))  # the records are encoded: only the examples stay
            meta = {"options": options, "dropped": prepared.dropped, "placeholders": prepared.placeholders,
                    "num_examples": prepared.num_examples, "packing": prepared.packing, "files": prepared.files,
                    "figures": prepared.figures}
            entry = encoding_cache.commit(key, workdir, meta)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        prepared = _from_entry(entry, meta, from_cache=False)  # mapped from the entry's final place
    if path:
        meta = {"options": options, "dropped": prepared.dropped, "placeholders": prepared.placeholders,
                "num_examples": prepared.num_examples, "packing": prepared.packing, "figures": prepared.figures}
        cache.save_tokenized(path, prepared.train, prepared.eval, meta)
        prepared.tokenized_path = path
    logger.info("training examples: %d%s; data ready in %.1f s", len(prepared.train),
                f", evaluation examples: {len(prepared.eval)}" if prepared.eval else "", time.perf_counter() - started)
    return prepared
