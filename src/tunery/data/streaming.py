"""``streaming: true`` (pt and sft): the datasets are read, converted, encoded and packed on the fly as a
``datasets.IterableDataset``, so training starts without a pass over the data and nothing is written to disk.

The pipeline is LLaMA-Factory's streaming one: each dataset's raw rows (Tunery's streaming file readers, so a
malformed line is the same one-line error naming file and line) are converted to records
(:func:`tunery.data.formats.to_aligned`, records with empty responses dropped); the datasets are mixed with
``datasets.concatenate_datasets`` or ``datasets.interleave_datasets`` (``mix_strategy`` interleave_under =
first_exhausted, interleave_over = all_exhausted, ``interleave_probs``, ``seed``); the mixed records are encoded in
batches of ``preprocessing_batch_size`` (pt: the batch's texts concatenated and cut into cutoff_len blocks; sft with
``packing``/``neat_packing``: the batch's examples packed by the knapsack), then shuffled through a buffer of
``buffer_size`` examples; ``val_size`` (a count) takes the first examples of the shuffled stream for evaluation.

A streamed dataset has no length, so ``max_steps`` must be set (one line otherwise), and
``max_samples``, a fractional ``val_size``, ``num_samples``, ``tokenized_path`` and the encoding cache do not apply
(config/data_options.py refuses them).
"""

from __future__ import annotations

from ..errors import ConfigError, DataError
from ..utils.logging import get_logger

logger = get_logger(__name__)

CHUNK_ROWS = 1000  # raw rows read and converted at a time


def _record_rows(name: str, dataset_dir: str, stage: str, placeholders: dict | None):
    """The converted records of one dataset as rows of :data:`tunery.data.record_store.RECORD_COLUMNS`."""
    from ..config.stages import stage_spec
    from .formats import detect_format, to_aligned
    from .loader import check_stage_fit, fill_placeholders
    from .record_store import _empty_response, record_columns
    from .registry import get_dataset_spec
    from .sources import iter_row_chunks

    spec = get_dataset_spec(name, dataset_dir)
    if spec.num_samples is not None:
        raise DataError(f"dataset {spec.name}: num_samples cannot be used with streaming (sampling needs every row) "
                        f"— remove num_samples from its entry in {spec.where()} or turn streaming off")
    resolved, taken, kept = None, 0, 0
    for rows in iter_row_chunks(spec, CHUNK_ROWS):
        if resolved is None:
            resolved = detect_format(rows, spec)
            check_stage_fit(resolved, stage)
        dropped: dict[str, int] = {}
        try:
            records = to_aligned(rows, resolved, stage, dropped=dropped, indices=list(range(taken, taken + len(rows))))
        except DataError as err:
            if not str(err).startswith(f"dataset {resolved.name}: all "):
                raise
            records = []  # a chunk of dropped records only; the dataset may have others
        taken += len(rows)
        if stage_spec(stage).trains_responses:
            records = [r for r in records if not _empty_response(r)]
        records = fill_placeholders(records, placeholders or {})
        kept += len(records)
        columns = record_columns(records)
        for i in range(len(records)):
            yield {key: values[i] for key, values in columns.items()}
    if not kept:
        raise DataError(f"dataset {spec.name}: no usable records in {taken} row(s) — `tunery preview` (without "
                        "streaming) names the causes")


def _features():
    from datasets import Features, Value

    from .record_store import RECORD_COLUMNS

    return Features({name: Value("bool" if name == "kto_tag" else "string") for name in RECORD_COLUMNS})


def _record_stream(cfg, name: str):
    from datasets import IterableDataset

    return IterableDataset.from_generator(_record_rows, features=_features(), gen_kwargs={
        "name": name, "dataset_dir": cfg.dataset_dir, "stage": cfg.stage,
        "placeholders": dict(cfg.placeholders) if cfg.placeholders else None})


def _mixed(cfg, streams: list):
    from datasets import concatenate_datasets, interleave_datasets

    if len(streams) == 1:
        return streams[0]
    if cfg.mix_strategy == "concat":
        return concatenate_datasets(streams)
    probs = [float(p) for p in cfg.interleave_probs] if cfg.interleave_probs else None
    stopping = "first_exhausted" if cfg.mix_strategy == "interleave_under" else "all_exhausted"
    return interleave_datasets(streams, probabilities=probs, seed=cfg.seed, stopping_strategy=stopping)


def _batch_encoder(cfg, template, tokenizer):
    """The ``map`` function: a batch of record columns -> the batch's encoded (and packed) examples as columns."""
    from ..config.stages import uses
    from .dataset import encode_cutoff
    from .encode import _encode_chunk, bound_texts, chunk_text_bound, encoding_plan
    from .packing import pack_examples, packing_enabled
    from .record_store import records_from_columns

    cutoff = encode_cutoff(cfg)
    kind, options = encoding_plan(cfg.stage, template, cutoff, train_on_prompt=cfg.train_on_prompt,
                                  mask_history=cfg.mask_history, packing=cfg.packing is not False)
    limit = chunk_text_bound(kind, options, tokenizer, cutoff)
    pack = uses(cfg.stage, "packed_rows") and packing_enabled(cfg)
    keys = ["input_ids", "attention_mask", "labels"] + (["position_ids"] if pack else [])

    def encode(batch: dict) -> dict:
        records = records_from_columns(batch)
        if limit is not None:
            records, _ = bound_texts(records, limit)
        examples, _ = _encode_chunk(records, kind, template, tokenizer, cutoff, options)
        if pack:
            examples = pack_examples(examples, cfg.cutoff_len, batch_size=len(examples) or 1)
        return {key: [e[key] for e in examples] for key in keys}

    return encode


def stream_datasets(cfg, tokenizer, template):
    """PreparedData whose train (and eval, with val_size or eval_dataset) are IterableDatasets of encoded examples.
    The first batch is encoded here, before the model loads, so that a bad first record or file fails at once."""
    from ..config.data_options import check_packing_options, check_streaming
    from .dataset import PreparedData, check_template_tokens
    from .loader import _names, _parse_probs
    from .record_store import RECORD_COLUMNS

    check_streaming(cfg)  # the option rules, again for direct API use
    check_packing_options(cfg)
    check_template_tokens(template, tokenizer, cfg.model_name_or_path or "")
    names = _names(list(cfg.dataset or []))
    if not names:
        raise ConfigError("no dataset given — set dataset to one or more names from dataset_info.json")
    _parse_probs([float(p) for p in cfg.interleave_probs] if cfg.interleave_probs else None, names, cfg.mix_strategy)
    encode = _batch_encoder(cfg, template, tokenizer)
    batch = cfg.preprocessing_batch_size or 1000

    def encoded(stream):
        return stream.map(encode, batched=True, batch_size=batch, remove_columns=list(RECORD_COLUMNS))

    train = encoded(_mixed(cfg, [_record_stream(cfg, name) for name in names]))
    first = next(iter(train), None)  # the first batch, read and encoded now: its errors come before the model
    if first is None:
        raise DataError(f"no training examples in the stream of dataset {','.join(names)} — `tunery preview` "
                        "(without streaming) shows why")
    train = train.shuffle(buffer_size=cfg.buffer_size, seed=cfg.seed)
    evaluation = None
    if cfg.eval_dataset:
        evaluation = encoded(_mixed(cfg, [_record_stream(cfg, name) for name in _names(list(cfg.eval_dataset))]))
        evaluation = evaluation.shuffle(buffer_size=cfg.buffer_size, seed=cfg.seed)
    elif cfg.val_size:
        evaluation, train = train.take(int(cfg.val_size)), train.skip(int(cfg.val_size))
    logger.info("streaming dataset %s (examples encoded on the fly, shuffled through a buffer of %d)",
                ",".join(names), cfg.buffer_size)
    return PreparedData(train, evaluation)

