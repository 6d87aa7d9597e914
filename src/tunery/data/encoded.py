"""Encoded examples as Arrow: the encoders' output goes chunk by chunk into Arrow files, which are then memory-mapped
as one ``datasets.Dataset`` — no Python list of all examples, so memory stays flat in the dataset's size.

* :func:`encode_to_arrow` runs the stage's encoder (tunery.data.encode) over the records, each chunk written as it is
  done; with ``num_workers > 1`` each worker process writes its own Arrow shard (a contiguous block of chunks, so the
  order is the serial one) and only the shard's path and drop counts come back;
* :func:`pack_to_arrow` packs sft examples batch by batch (LLaMA-Factory's knapsack per preprocessing batch) into
  another Arrow file;
* :func:`open_shards` memory-maps written shards again (the encoding cache, tunery.data.cache).

Token columns are ``list<int32>`` (attention masks ``list<int8>``, ``kto_tags`` bool); names and meaning are the
encoders' (``input_ids``, ``labels``, ``attention_mask``, ``chosen_*``/``rejected_*``, ``kl_*``, ``position_ids``).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..utils.logging import get_logger

logger = get_logger(__name__)

SHARDS_PER_WORKER = 4  # a little more shards than workers evens out their load


@dataclass
class EncodedArrow:
    """The Arrow files of one split, the Dataset mapping them, the records dropped while encoding and the split's
    figures (:func:`table_figures`, counted while writing)."""

    dataset: object  # datasets.Dataset
    files: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    figures: dict = field(default_factory=dict)


# ---------------------------------------------------------------- writing
def _arrow_type(name: str, value):
    import pyarrow as pa

    if isinstance(value, bool):
        return pa.bool_()
    if name.endswith("attention_mask"):
        return pa.list_(pa.int8())
    if isinstance(value, (list, tuple)):
        return pa.list_(pa.int32())
    return None  # let pyarrow infer


def table_figures(table) -> Counter:
    """examples, tokens and trained tokens (labels not IGNORE_INDEX) of a table of encoded examples — what the run
    card reports, counted on the chunk in memory so that nobody reads the whole dataset back for it."""
    import pyarrow.compute as pc

    from .records import IGNORE_INDEX

    names = table.column_names
    out = Counter(examples=table.num_rows)
    key = next((k for k in ("labels", "chosen_labels") if k in names), None)
    column = key or ("input_ids" if "input_ids" in names else None)
    if column is None:
        return out
    values = pc.list_flatten(table.column(column))
    out["tokens"] = len(values)
    if key is not None:
        out["trained_tokens"] = pc.sum(pc.not_equal(values, IGNORE_INDEX)).as_py() or 0
    return out


def _int_lists(values: list, arrow_type):
    """A list<int> column from Python lists of ints, built flat (offsets + one numpy array of all values): an order
    of magnitude faster than pyarrow converting the nested lists."""
    from itertools import chain

    import numpy as np
    import pyarrow as pa

    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    dtype = arrow_type.value_type.to_pandas_dtype()
    if all(v.count(1) == len(v) for v in values):  # attention masks: counting is ~30x faster than converting
        flat = np.ones(int(offsets[-1]), dtype=dtype)
    else:
        flat = np.fromiter(chain.from_iterable(values), dtype=dtype, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat))


def to_table(examples: list[dict]):
    """A pyarrow Table of encoded examples (the columns of the first one)."""
    import pyarrow as pa

    columns = {}
    for key, first in examples[0].items():
        values = [e[key] for e in examples]
        arrow_type = _arrow_type(key, first)
        if pa.types.is_list(arrow_type) and all(isinstance(v, (list, tuple)) for v in values):
            columns[key] = _int_lists(values, arrow_type)
        else:
            columns[key] = pa.array(values, type=arrow_type)
    return pa.table(columns)


BATCH_BYTES = 16 * 2**20  # encoded chunks are written as Arrow record batches of about this size


class ShardWriter:
    """Appends chunks of encoded examples to one Arrow (stream format) file, the layout ``Dataset.from_file`` maps.

    Chunks are gathered into record batches of about :data:`BATCH_BYTES`: opening a mapped file touches every batch's
    header and offsets, and the kernel maps the pages around each touch (fault-around, 64 KiB), so a file of many
    small batches (one per 256-example chunk) would put tens of MiB of it in the process's resident memory at 300k
    examples — in the dataset's size."""

    def __init__(self, path: str):
        self.path, self.rows, self._sink, self._writer = path, 0, None, None
        self.figures: Counter = Counter()
        self._pending: list = []
        self._pending_bytes = 0

    def write(self, examples: list[dict]) -> None:
        if not examples:
            return
        table = to_table(examples)
        if self._writer is None:
            import pyarrow as pa

            self._schema = table.schema
            self._sink = pa.OSFile(self.path, "wb")
            self._writer = pa.ipc.new_stream(self._sink, table.schema)
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        self.rows += len(examples)
        self.figures.update(table_figures(table))
        if self._pending_bytes >= BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            batch = pa.concat_tables(self._pending).combine_chunks()
            self._pending, self._pending_bytes = [], 0
            self._writer.write_table(batch)

    def close(self) -> str | None:
        """The file's path, or None when nothing was written (no file then)."""
        if self._writer is None:
            return None
        self._flush()
        self._writer.close()
        self._sink.close()
        return self.path


def open_shards(files: list[str]):
    """One memory-mapped Dataset over the Arrow files, in order (an empty Dataset for none)."""
    from datasets import Dataset, concatenate_datasets

    parts = [Dataset.from_file(path, in_memory=False) for path in files]
    if not parts:
        return Dataset.from_dict({})
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


# ---------------------------------------------------------------- encoding
def _read_chunk(records, bounds: tuple[int, int], limit: int | None) -> tuple[list, int]:
    """The chunk's records (messages cut to ``limit`` characters) and how many were cut."""
    from .encode import bound_texts

    part = list(records[bounds[0]:bounds[1]])
    return bound_texts(part, limit) if limit is not None else (part, 0)


@contextmanager
def serial_tokenizer():
    """Within the block, a Rust tokenizer call runs on its calling thread (TOKENIZERS_PARALLELISM=false, the
    switch the tokenizers library reads at each call) unless the user set TOKENIZERS_PARALLELISM: encoding spreads
    the work over threads or processes of its own. The setting is restored afterwards."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = before or "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)


def _tokenizer_threads() -> int:
    """Helper threads tokenizing ahead in one process: one per core (up to 8), each calling the tokenizer serially:
    on few cores the Rust thread pool's idle spinning competes with the Python thread for CPU."""
    return max(1, min(8, os.cpu_count() or 1))  # (the count data/dataset.py:_workers uses)


def _encode_serially(records, kind, template, tokenizer, cutoff_len, options, chunks, limit, writer) -> tuple:
    """One process: while a chunk's examples are put together (Python), helper threads tokenize the next chunks'
    texts (the Rust tokenizer releases the GIL: it keeps working while Python assembles or writes); each chunk's
    examples are written out as soon as they are done, in order. Returns (dropped, records cut)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from .encode import _chunk_tokens, _encode_chunk

    dropped: Counter = Counter()
    n_cut = 0
    queued: deque = deque()
    threads = _tokenizer_threads()
    with serial_tokenizer(), ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tunery-tokenize") as pool:
        following = iter(chunks)

        def queue_next() -> None:
            nonlocal n_cut
            bounds = next(following, None)
            if bounds is not None:
                part, cut = _read_chunk(records, bounds, limit)
                n_cut += cut
                queued.append((part, pool.submit(_chunk_tokens, part, kind, template, tokenizer, options)))

        for _ in range(threads + 1):
            queue_next()
        while queued:
            part, tokens = queued.popleft()
            memo = tokens.result()
            queue_next()
            examples, why = _encode_chunk(part, kind, template, tokenizer, cutoff_len, options, memo)
            writer.write(examples)
            dropped.update(why)
    return dropped, n_cut


_JOB: dict = {}  # set before the pool forks: the records and the encoder's settings (nothing pickled per task)


def _run_shard(task: tuple[int, int, str]) -> tuple[str | None, Counter, int, Counter]:
    from .encode import _encode_chunk

    first, last, path = task
    job = _JOB
    writer, dropped, n_cut = ShardWriter(path), Counter(), 0
    for bounds in job["chunks"][first:last]:
        part, cut = _read_chunk(job["records"], bounds, job["limit"])
        examples, why = _encode_chunk(part, job["kind"], job["template"], job["tokenizer"], job["cutoff_len"],
                                      job["options"])
        writer.write(examples)
        dropped.update(why)
        n_cut += cut
    return writer.close(), dropped, n_cut, writer.figures


def _encode_in_pool(num_workers: int, chunks: list, folder: str, prefix: str, job: dict) -> tuple:
    """Each worker writes its own shard (a contiguous block of chunks): (files, dropped, records cut, figures)."""
    from .encode import map_in_pool, quiet_worker_signals

    shards = min(len(chunks), num_workers * SHARDS_PER_WORKER)
    bounds = [round(i * len(chunks) / shards) for i in range(shards + 1)]
    tasks = [(bounds[i], bounds[i + 1], os.path.join(folder, f"{prefix}-{i:05d}.arrow")) for i in range(shards)]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    _JOB.update(job, chunks=chunks)
    files, dropped, n_cut, figures = [], Counter(), 0, Counter()
    try:
        with serial_tokenizer():  # one tokenizer thread per worker process (and no fork warning)
            for path, why, cut, counted in map_in_pool(context, min(num_workers, shards), _run_shard, tasks,
                                                       quiet_worker_signals, ()):
                if path:
                    files.append(path)
                dropped.update(why)
                n_cut += cut
                figures.update(counted)
    finally:
        _JOB.clear()
    return files, dropped, n_cut, figures


def encode_to_arrow(records, stage: str, template, tokenizer, cutoff_len: int, folder: str, prefix: str = "train",
                    *, train_on_prompt: bool = False, mask_history: bool = False, packing: bool = True,
                    discard_history_cot: bool = False, num_workers: int = 1, chunk_size: int = 256) -> EncodedArrow:
    """Encode ``records`` (a sequence: a list or a RecordView) for ``stage`` into Arrow files
    ``folder/prefix-NNNNN.arrow``, memory-mapped as one Dataset: same examples, same order, same drop counts for any
    ``num_workers``. Messages longer than cutoff_len can use are cut before tokenizing (with a warning)."""
    from .encode import chunk_bounds, chunk_text_bound, encoding_plan

    kind, options = encoding_plan(stage, template, cutoff_len, train_on_prompt=train_on_prompt,
                                  mask_history=mask_history, packing=packing, discard_history_cot=discard_history_cot)
    limit = chunk_text_bound(kind, options, tokenizer, cutoff_len)
    chunks = chunk_bounds(kind, len(records), chunk_size)
    os.makedirs(folder, exist_ok=True)
    if num_workers > 1 and len(chunks) > 1:
        job = {"records": records, "kind": kind, "template": template, "tokenizer": tokenizer,
               "cutoff_len": cutoff_len, "options": options, "limit": limit}
        files, dropped, n_cut, figures = _encode_in_pool(num_workers, chunks, folder, prefix, job)
    else:
        writer = ShardWriter(os.path.join(folder, f"{prefix}-00000.arrow"))
        dropped, n_cut = _encode_serially(records, kind, template, tokenizer, cutoff_len, options, chunks, limit,
                                          writer)
        path = writer.close()
        files, figures = ([path] if path else []), writer.figures
    if n_cut:
        logger.warning("%d record(s) have a message longer than %d characters, more than cutoff_len %d can use: "
                       "cut to that length before tokenizing", n_cut, limit, cutoff_len)
    if dropped:
        logger.warning("dropped %d of %d records while encoding (%s)", sum(dropped.values()), len(records),
                       ", ".join(f"{reason}: {n}" for reason, n in dropped.most_common()))
    dataset = open_shards(files)
    if not (kind == "pretrain" and packing):
        warn_truncation(dataset, cutoff_len)
    return EncodedArrow(dataset, files, dropped, dict(figures))


def encode_dataset(
    records,
    stage: str,
    template,
    tokenizer,
    cutoff_len: int,
    train_on_prompt: bool = False,
    mask_history: bool = False,
    packing: bool = True,
    discard_history_cot: bool = False,
    num_workers: int = 1,
    chunk_size: int = 256,
) -> "EncodedDataset":  # noqa: F821 (tunery.data.encode.EncodedDataset)
    """Encode ``records`` for ``stage`` (a stage of config/stages.py, or "predict"), in order, as a list:
    :func:`encode_to_arrow` (the one encoding path) read back, for small uses (preview, tests).

    Records that cannot be encoded or leave nothing to train on are dropped and counted in ``result.dropped``.
    """
    import shutil
    import tempfile

    from .encode import EncodedDataset

    folder = tempfile.mkdtemp(prefix="tunery-encode-")
    try:
        encoded = encode_to_arrow(records, stage, template, tokenizer, cutoff_len, folder,
                                  train_on_prompt=train_on_prompt, mask_history=mask_history, packing=packing,
                                  discard_history_cot=discard_history_cot, num_workers=num_workers,
                                  chunk_size=chunk_size)
        return EncodedDataset(encoded.dataset.to_list(), encoded.dropped)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def warn_truncation(dataset, cutoff_len: int) -> None:
    """The encoder's truncation warning, counted on the Arrow columns (no rows materialised)."""
    import pyarrow.compute as pc

    from .encode import TRUNCATION_WARN_SHARE

    if dataset is None or not len(dataset):
        return
    names = dataset.column_names
    keys = [k for k in ("input_ids", "chosen_input_ids", "rejected_input_ids") if k in names][:1 if
                                                                                          "input_ids" in names else 2]
    lengths = None
    for key in keys:
        column = pc.list_value_length(dataset.data.column(key))
        lengths = column if lengths is None else pc.max_element_wise(lengths, column)
    if lengths is None:
        return
    reached = pc.sum(pc.greater_equal(lengths, cutoff_len)).as_py() or 0
    share = reached / len(dataset)
    if share >= TRUNCATION_WARN_SHARE:
        logger.warning("cutoff_len %d truncates %.0f%% of the examples (%d of %d) — raise cutoff_len or shorten the "
                       "records; `tunery preview` shows by how much", cutoff_len, 100 * share, reached,
                       len(dataset))


# ---------------------------------------------------------------- packing
def pack_to_arrow(dataset, cutoff_len: int, batch_size: int, path: str) -> tuple[object, dict, list[str], dict]:
    """sft packing over a Dataset, one preprocessing batch at a time: (packed Dataset, counts, files, figures)."""
    from .packing import greedy_knapsack, pack_group, packed_cutoff, summary_from_counts

    capacity = packed_cutoff(cutoff_len)
    writer = ShardWriter(path)
    sequences = tokens = 0
    step = max(1, batch_size)
    for columns in dataset.iter(batch_size=step):
        batch = [{"input_ids": ids, "labels": labels} for ids, labels in zip(columns["input_ids"], columns["labels"])
                 if 0 < len(ids) <= capacity]
        rows = [pack_group([batch[i] for i in group])
                for group in greedy_knapsack([len(e["input_ids"]) for e in batch], capacity)]
        writer.write(rows)
        sequences += len(rows)
        tokens += sum(len(r["input_ids"]) for r in rows)
    written = writer.close()
    files = [written] if written else []
    return (open_shards(files), summary_from_counts(len(dataset), sequences, tokens, cutoff_len), files,
            dict(writer.figures))
