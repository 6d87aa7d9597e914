"""Aligned records on disk: the training run's datasets read as a stream, converted chunk by chunk and kept in one
Arrow file, so that no Python list of all records (nor of all raw rows) exists; the encoders then read them back
chunk by chunk through a :class:`RecordView`.

:func:`load_to_arrow` is :func:`tunery.data.loader.load_datasets` + the empty-response drop of
:func:`tunery.data.dataset.load_records`, with the same results: ``max_samples`` (first N rows of each dataset),
``num_samples`` (through the in-memory path), the mixing orders, the ``val_size`` split, placeholders and the drop
counts. Mixing and splitting work on record indices.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import DataError
from ..utils.logging import get_logger
from .records import AlignedRecord

logger = get_logger(__name__)

CHUNK_ROWS = 2_000  # rows read and converted at a time: two chunks are in flight, so this sets a constant share of
# the peak RSS (10,000 rows: ~40 MiB more at every size, benchmarks/RESULTS.md)


RECORD_COLUMNS = ("prompt", "response", "system", "tools", "kto_tag", "source", "extra")  # kto_tag bool, others text


def record_columns(records: list[AlignedRecord]) -> dict[str, list]:
    """AlignedRecords as columns of strings (messages as JSON) and a bool, the layout
    :func:`records_from_columns` reads."""
    return {
        "prompt": [json.dumps(r.prompt, ensure_ascii=False) for r in records],
        "response": [json.dumps(r.response, ensure_ascii=False) for r in records],
        "system": [r.system or "" for r in records],
        "tools": [r.tools or "" for r in records],
        "kto_tag": [r.kto_tag for r in records],
        "source": [r.source for r in records],
        "extra": [json.dumps(r.extra, ensure_ascii=False, default=str) for r in records],
    }


def _loads(text: str):
    return {} if text == "{}" else json.loads(text)  # most records have no extra columns: no parse for those


def records_from_columns(columns: dict[str, list]) -> list[AlignedRecord]:
    """The AlignedRecords of ``columns`` (the layout :func:`record_columns` writes), row by row."""
    loads = json.loads
    return [AlignedRecord(loads(p), loads(r), s, t, k, src, _loads(e)) for p, r, s, t, k, src, e in
            zip(*(columns[name] for name in RECORD_COLUMNS))]


class MappedFile:
    """A read-only memory map of a file whose pages can be handed back: pages read through a map count in the
    process's resident memory until it is unmapped, so reading a whole file once would make peak RSS grow with its
    size; :meth:`release` drops them from this process (they stay in the page cache; a later read maps them
    again)."""

    def __init__(self, path: str):
        import mmap

        with open(path, "rb") as fh:
            self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)

    def buffer(self):
        import pyarrow as pa

        return pa.py_buffer(self.map)

    def release(self) -> None:
        import mmap

        if hasattr(self.map, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self.map.madvise(mmap.MADV_DONTNEED)


class RecordView:
    """A sequence of AlignedRecords stored in an Arrow table, in ``order`` (record indices): ``len``, ``view[i]`` and
    ``view[a:b]`` (a list, decoded on demand). With ``mapped`` (the table's file), the pages each read touched are
    handed back after it, so resident memory stays flat however many records are read."""

    def __init__(self, table, order, mapped: MappedFile | None = None):
        self.table, self.order, self.mapped = table, np.asarray(order, dtype=np.int64), mapped
        self._batches = table.to_batches()
        self._starts = np.cumsum([0] + [b.num_rows for b in self._batches])

    def __len__(self) -> int:
        return len(self.order)

    def __bool__(self) -> bool:
        return len(self.order) > 0

    def _decode(self, indices) -> list[AlignedRecord]:
        """The records at ``indices``, taken from each record batch they fall in (Arrow's take on a whole chunked
        table first concatenates every chunk of each column: memory and time in the table's size, per call) and
        decoded column by column."""
        indices = np.asarray(indices, dtype=np.int64)
        which = np.searchsorted(self._starts, indices, side="right") - 1
        records: list = [None] * len(indices)
        for batch in np.unique(which):
            at = np.flatnonzero(which == batch)
            taken = self._batches[batch].take(indices[at] - self._starts[batch])
            decoded = records_from_columns({name: taken.column(name).to_pylist() for name in RECORD_COLUMNS})
            for position, record in zip(at, decoded):
                records[position] = record
        if self.mapped is not None:
            self.mapped.release()
        return records

    def __getitem__(self, item):
        if isinstance(item, slice):
            return self._decode(self.order[item])
        return self._decode(self.order[[item]])[0]

    def __iter__(self):
        for start in range(0, len(self), 1000):
            yield from self[start:start + 1000]


def _placeholder_names(record: AlignedRecord) -> list[str]:
    from .loader import PLACEHOLDER_RE, _texts

    names: set = set()
    for text in _texts(record):
        if "{{" in text:
            names.update(PLACEHOLDER_RE.findall(text))
    return sorted(names)


def _empty_response(record: AlignedRecord) -> bool:
    return bool(record.response) and any(not str(m.get("content") or "").strip() for m in record.response)


class _Writer:
    def __init__(self, path: str):
        self.path, self.count, self._writer, self._sink = path, 0, None, None

    def write(self, records: list[AlignedRecord]) -> None:
        import pyarrow as pa

        if not records:
            return
        columns = record_columns(records)
        table = pa.table({
            **{name: pa.array(columns[name], pa.bool_() if name == "kto_tag" else pa.string())
               for name in RECORD_COLUMNS},
            "empty": pa.array([_empty_response(r) for r in records], pa.bool_()),
            "placeholders": pa.array([_placeholder_names(r) for r in records], pa.list_(pa.string())),
        })
        if self._writer is None:
            self._sink = pa.OSFile(self.path, "wb")
            self._writer = pa.ipc.new_file(self._sink, table.schema)
        self._writer.write_table(table)
        self.count += len(records)

    def close(self) -> tuple:
        """(the written table, memory-mapped; its MappedFile, None when nothing was written)."""
        import pyarrow as pa

        if self._writer is None:
            return pa.table({}), None
        self._writer.close()
        self._sink.close()
        mapped = MappedFile(self.path)
        return pa.ipc.open_file(pa.BufferReader(mapped.buffer())).read_all(), mapped


def _convert(spec, stage: str, max_samples, seed: int, dropped: dict, placeholders, writer: _Writer) -> int:
    """Stream one dataset into ``writer``; the number of records kept."""
    from .formats import _check_columns, detect_format, to_aligned
    from .loader import check_stage_fit, fill_placeholders, load_one
    from .sources import iter_row_chunks

    if spec.num_samples is not None:  # sampling with repeats needs all rows: the in-memory path
        records = load_one(spec, spec.dataset_dir, stage, max_samples=max_samples, seed=seed, dropped=dropped)
        for start in range(0, len(records), CHUNK_ROWS):
            writer.write(fill_placeholders(records[start:start + CHUNK_ROWS], placeholders or {}))
        return len(records)
    if spec.formatting != "auto":
        check_stage_fit(spec, stage)
    seen: set = set()
    taken = kept = 0
    before = dict(dropped)
    resolved = None
    chunks = iter_row_chunks(spec, CHUNK_ROWS)
    upcoming = next(chunks, None)
    while upcoming is not None:
        rows, upcoming = upcoming, next(chunks, None)
        if resolved is None:
            resolved = detect_format(rows, spec)
            check_stage_fit(resolved, stage)
            every = {c for c in resolved.columns.values() if c}
        for row in rows:
            seen.update(row)
        if max_samples is not None:
            rows = rows[:max_samples - taken]
        try:
            records = to_aligned(rows, resolved, stage, dropped=dropped, indices=list(range(taken, taken + len(rows))),
                                 columns_seen=seen if upcoming is None else every | seen)
        except DataError as err:
            if not str(err).startswith(f"dataset {resolved.name}: all "):
                raise
            records = []  # a chunk of dropped records only: counted, and the dataset may still have others
        taken += len(rows)
        writer.write(fill_placeholders(records, placeholders or {}))
        kept += len(records)
        if max_samples is not None and taken >= max_samples:
            upcoming = None
    if resolved is None:
        raise DataError(f"dataset {spec.name} ({spec.dataset_name}, split {spec.split}) holds no records")
    _check_columns([], resolved, stage, [], seen)  # a mapped column that no record has
    if not kept:  # the in-memory path names the causes exactly
        dropped.clear()
        dropped.update(before)
        load_one(spec, spec.dataset_dir, stage, max_samples=max_samples, seed=seed, dropped=dropped)
    return kept


def load_to_arrow(cfg, folder: str):
    """LoadedData for the run's datasets whose ``train``/``eval`` are RecordViews over ``folder/records.arrow``."""
    from ..config.stages import stage_spec
    from .formats import check_stage
    from .loader import (LoadedData, _check_options, check_stage_fit, _interleave, _names, _parse_probs, _val_count,
                         get_dataset_specs)
    from ..errors import ConfigError

    stage = cfg.stage
    check_stage(stage)
    train_names = _names(list(cfg.dataset or []))
    eval_list = _names(list(cfg.eval_dataset) if cfg.eval_dataset else None)
    if not train_names:
        raise ConfigError("no dataset given — set dataset to one or more names from dataset_info.json")
    _check_options(cfg.max_samples, cfg.val_size, cfg.mix_strategy)
    if eval_list and cfg.val_size:
        raise ConfigError("set either val_size or eval_dataset, not both (LLaMA-Factory refuses the combination too)")
    probs = _parse_probs([float(p) for p in cfg.interleave_probs] if cfg.interleave_probs else None, train_names,
                         cfg.mix_strategy)
    specs = get_dataset_specs(train_names, cfg.dataset_dir)
    eval_specs = get_dataset_specs(eval_list, cfg.dataset_dir) if eval_list else []
    for spec in specs + eval_specs:
        if spec.formatting != "auto":
            check_stage_fit(spec, stage)

    writer = _Writer(os.path.join(folder, "records.arrow"))
    dropped: dict[str, int] = {}
    parts, counts = [], {}
    for spec in specs:
        start = writer.count
        n = _convert(spec, stage, cfg.max_samples, cfg.seed, dropped, cfg.placeholders, writer)
        counts[spec.name] = counts.get(spec.name, 0) + n
        parts.append(np.arange(start, start + n))
    eval_start = writer.count
    for spec in eval_specs:
        _convert(spec, stage, cfg.max_samples, cfg.seed, dropped, cfg.placeholders, writer)
    eval_order = np.arange(eval_start, writer.count) if eval_specs else None
    table, mapped = writer.close()

    if len(parts) == 1 or cfg.mix_strategy == "concat":
        train = np.concatenate(parts) if parts else np.arange(0)
    else:
        train = np.asarray(_interleave(parts, probs, cfg.seed, oversample=cfg.mix_strategy == "interleave_over"),
                           dtype=np.int64)
    if not eval_specs and cfg.val_size:
        n = len(train)
        n_eval = _val_count(cfg.val_size, n)
        if n_eval < 1 or n_eval >= n:
            raise ConfigError(
                f"val_size {cfg.val_size} takes {n_eval} of {n} training records, leaving "
                f"{'no evaluation' if n_eval < 1 else 'no training'} data — use a smaller val_size or more data")
        order = np.random.default_rng(cfg.seed).permutation(n)
        eval_order, train = train[order[:n_eval]], train[order[n_eval:]]

    placeholders = _count_placeholders(table, train, eval_order)
    if placeholders:
        shown = ", ".join(f"{{{{{k}}}}} in {v} records" for k, v in sorted(placeholders.items()))
        logger.warning("placeholders left in the data: %s — fill them (placeholders option) or edit the data", shown)
    if dropped:
        logger.warning("dropped %d record(s): %s", sum(dropped.values()),
                       "; ".join(f"{k} ({v})" for k, v in dropped.items()))
    logger.info("loaded %d training%s records from %s", len(train),
                f" and {len(eval_order)} evaluation" if eval_order is not None else "", ", ".join(train_names))
    if stage_spec(stage).trains_responses:
        train = _drop_empty(table, train, dropped)
        if eval_order is not None:
            eval_order = _drop_empty(table, eval_order, dropped)
    if mapped is not None:
        mapped.release()  # the columns read above
    return LoadedData(train=RecordView(table, train, mapped),
                      eval=RecordView(table, eval_order, mapped) if eval_order is not None else None,
                      dropped=dropped, counts=counts, placeholders=placeholders)


def _count_placeholders(table, train, eval_order) -> dict[str, int]:
    import pyarrow.compute as pc

    if not len(table):
        return {}
    lengths = pc.list_value_length(table.column("placeholders")).to_numpy(zero_copy_only=False)
    found: dict[str, int] = {}
    order = train if eval_order is None else np.concatenate([train, eval_order])
    hits = order[lengths[order] > 0]
    if len(hits):
        for names in table.column("placeholders").take(hits).to_pylist():
            for name in names:
                found[name] = found.get(name, 0) + 1
    return found


def _drop_empty(table, order, dropped: dict) -> np.ndarray:
    """The empty-response drop of tunery.data.dataset.drop_empty_responses, on indices."""
    if not len(order):
        return order
    empty = table.column("empty").to_numpy(zero_copy_only=False)[order]
    if not empty.any():
        return order
    sources = table.column("source").take(order[empty]).to_pylist()
    count: dict[str, int] = {}
    first: dict[str, str] = {}
    for source in sources:
        name = source.split("[", 1)[0] if source else "data"
        count[name] = count.get(name, 0) + 1
        first.setdefault(name, source)
    for name, n in count.items():
        dropped[f"{name}: empty response"] = dropped.get(f"{name}: empty response", 0) + n
        logger.warning("dataset %s: dropped %d record(s) with an empty response (first: %s) — fill in the responses "
                       "or remove those records", name, n, first[name])
    return order[~empty]
