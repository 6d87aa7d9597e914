"""tokenized_path (save once, reload, overwrite_cache, option checks), parallel encoding, "nothing left" errors."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tunery.config import parse_config
from tunery.data import cache
from tunery.data.dataset import _workers, encode_records, load_records, prepare_datasets
from tunery.data.encoded import encode_dataset
from tunery.demo import DATA_DIR
from tunery.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def tokenizer(tiny_llama3_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama3_dir)


@pytest.fixture()
def data_dir(tmp_path):
    """A private copy of the bundled identity dataset (the tests edit and delete it)."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(DATA_DIR / "identity.json", folder / "identity.json")
    (folder / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    return folder


def make_cfg(model_dir, data_dir, tmp_path, **over):
    values = dict(model_name_or_path=str(model_dir), template="llama3", dataset="identity", dataset_dir=str(data_dir),
                  output_dir=str(tmp_path / "out"), cutoff_len=128, max_samples=20, val_size=0.2,
                  tokenized_path=str(tmp_path / "tokenized"))
    values.update(over)
    return parse_config("train", overrides={k: v for k, v in values.items() if v is not None})


def as_dicts(data):
    """The examples of a split (a memory-mapped Dataset) as plain dicts."""
    return None if data is None else [dict(example) for example in data]


def prepare(cfg, tokenizer):
    from tunery.data.template_select import resolve_template

    return prepare_datasets(cfg, tokenizer, resolve_template(cfg, tokenizer))


def test_save_then_reload_skips_loading(tiny_llama3_dir, tokenizer, data_dir, tmp_path):
    cfg = make_cfg(tiny_llama3_dir, data_dir, tmp_path)
    first = prepare(cfg, tokenizer)
    saved = tmp_path / "tokenized"
    assert not first.from_cache and (saved / "dataset_dict.json").is_file() and (saved / cache.META_FILE).is_file()
    assert len(first.train) == 16 and len(first.eval) == 4
    assert json.loads((saved / cache.META_FILE).read_text())["options"]["cutoff_len"] == 128

    (data_dir / "identity.json").unlink()  # the second run must not read the data at all
    second = prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path), tokenizer)
    assert second.from_cache and as_dicts(second.train) == as_dicts(first.train) and as_dicts(second.eval) == as_dicts(first.eval)
    assert second.placeholders == first.placeholders  # saved with the data

    # LLaMA-Factory's workflow: later runs name only tokenized_path
    only_path = make_cfg(tiny_llama3_dir, data_dir, tmp_path, dataset=None, val_size=None)
    assert not only_path.dataset and as_dicts(prepare(only_path, tokenizer).train) == as_dicts(first.train)


def test_overwrite_cache_and_changed_options(tiny_llama3_dir, tokenizer, data_dir, tmp_path):
    first = prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path), tokenizer)
    rows = json.loads((data_dir / "identity.json").read_text())
    rows[0]["output"] = "Changed answer."
    (data_dir / "identity.json").write_text(json.dumps(rows))
    assert as_dicts(prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path), tokenizer).train) == as_dicts(first.train)  # reused
    again = prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, overwrite_cache=True), tokenizer)
    assert not again.from_cache and as_dicts(again.train) != as_dicts(first.train)

    with pytest.raises(ConfigError, match=r"other options \(cutoff_len 128 → 64\).*overwrite_cache"):
        prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, cutoff_len=64), tokenizer)


def test_packed_rows_round_trip(tiny_llama3_dir, tokenizer, data_dir, tmp_path):
    cfg = make_cfg(tiny_llama3_dir, data_dir, tmp_path, neat_packing=True, val_size=None)
    first = prepare(cfg, tokenizer)
    second = prepare(cfg, tokenizer)
    assert second.from_cache and as_dicts(second.train) == as_dicts(first.train) and "position_ids" in second.train[0]
    assert second.packing == first.packing and second.num_examples == 20
    # a later run naming only tokenized_path must pack too (the rows need the packed collator)
    with pytest.raises(ConfigError, match="holds packed sequences but packing is off"):
        prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, dataset=None, val_size=None), tokenizer)


def test_refuses_a_folder_with_other_files(tiny_llama3_dir, tokenizer, data_dir, tmp_path):
    (tmp_path / "tokenized").mkdir()
    (tmp_path / "tokenized" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="other files in it"):
        prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path), tokenizer)
    assert (tmp_path / "tokenized" / "notes.txt").exists()


def test_workers_heuristic_and_parallel_encoding_is_identical(tiny_llama3_dir, tokenizer, shared_datasets, tmp_path):
    assert _workers(None, 10_000) == 1 and _workers(2, 1500) == 1 and _workers(2, 2400) == min(2, _cpus())
    cfg = make_cfg(tiny_llama3_dir, shared_datasets, tmp_path, dataset="alpaca_en_demo,identity", max_samples=None,
                   val_size=None, tokenized_path=None, placeholders={"name": "T", "author": "A"})
    from tunery.data.template_select import resolve_template

    template = resolve_template(cfg, tokenizer)
    records = load_records(cfg).train
    assert len(records) == 1090
    one = encode_records(cfg, records, template, tokenizer)
    two = encode_dataset(records, "sft", template, tokenizer, cfg.cutoff_len, num_workers=2)  # a process pool
    assert list(two) == list(one) and two.dropped == one.dropped


def _cpus():
    import os

    return os.cpu_count() or 1


def _write(data_dir, rows):
    (data_dir / "identity.json").write_text(json.dumps(rows))


def test_every_record_dropped_names_each_cause(tiny_llama3_dir, tokenizer, data_dir, tmp_path):
    with pytest.raises(DataError, match=r"all dropped \(20 x encoding: nothing to train on after truncation\) — "
                                        r"raise cutoff_len \(now 1\)"):
        prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, cutoff_len=1, val_size=None, tokenized_path=None),
                tokenizer)

    rows = [{"instruction": "q", "input": "", "output": ""}] * 3 + [{"instruction": "q", "input": "", "output": "  "}]
    rows += [{"instruction": "q", "input": "", "output": None}] * 2
    _write(data_dir, rows)
    with pytest.raises(DataError) as err:
        prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, val_size=None, tokenized_path=None), tokenizer)
    message = str(err.value)
    assert "\n" not in message
    assert "identity: empty response" in message and "4 x" in message
    assert "identity: no response" in message and "2 x" in message and "fill in the responses" in message


def test_empty_responses_are_dropped_and_counted(tiny_llama3_dir, tokenizer, data_dir, tmp_path):
    rows = json.loads((data_dir / "identity.json").read_text())[:6]
    rows[1]["output"] = ""
    _write(data_dir, rows)
    prepared = prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, val_size=None, tokenized_path=None), tokenizer)
    assert len(prepared.train) == 5 and prepared.dropped == {"identity: empty response": 1}


# ---------------------------------------------------------------- the encoding cache (no tokenized_path)
def _encodes(monkeypatch):
    """Counts the encoder's runs (a cache hit must not encode at all)."""
    from tunery.data import encoded

    calls = []
    real = encoded.encode_to_arrow

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(encoded, "encode_to_arrow", counting)
    return calls


def test_cache_hit_skips_encoding_and_any_changed_input_re_encodes(tiny_llama3_dir, tiny_qwen_dir, data_dir,
                                                                  tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    calls = _encodes(monkeypatch)
    llama = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    cfg = dict(tokenized_path=None, val_size=None)

    first = prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, **cfg), llama)
    assert not first.from_cache and len(calls) == 1 and first.cache_entry.startswith(str(tmp_path / "hf-cache"))
    second = prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, **cfg), llama)
    assert second.from_cache and len(calls) == 1  # straight from the cache: not encoded again
    assert as_dicts(second.train) == as_dicts(first.train) and second.placeholders == first.placeholders

    assert not prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, overwrite_cache=True, **cfg), llama).from_cache
    assert len(calls) == 2

    changes = {  # each changed input re-encodes by itself
        "cutoff_len": lambda: prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, cutoff_len=64, **cfg), llama),
        "template": lambda: prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, template="default", **cfg), llama),
        "tokenizer": lambda: prepare(make_cfg(tiny_qwen_dir, data_dir, tmp_path, template="qwen", **cfg),
                                     AutoTokenizer.from_pretrained(tiny_qwen_dir)),
    }
    for name, run in changes.items():
        before = len(calls)
        assert not run().from_cache and len(calls) == before + 1, name
        assert run().from_cache and len(calls) == before + 1, name  # and that encoding is cached in turn

    rows = json.loads((data_dir / "identity.json").read_text())
    rows[0]["output"] = "Changed answer."
    (data_dir / "identity.json").write_text(json.dumps(rows))
    changed = prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, **cfg), llama)
    assert not changed.from_cache and len(calls) == 6
    assert as_dicts(changed.train) != as_dicts(first.train) and len(changed.train) == len(first.train)


def test_encoded_examples_are_memory_mapped_arrow(tiny_llama3_dir, tokenizer, data_dir, tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    prepared = prepare(make_cfg(tiny_llama3_dir, data_dir, tmp_path, tokenized_path=None), tokenizer)
    for split in (prepared.train, prepared.eval):
        assert split.cache_files and all(f["filename"].startswith(prepared.cache_entry) for f in split.cache_files)
        assert split.data.nbytes > 0 and not split._indices  # a table over the mapped files, no copy
    # the same examples the per-record encoder gives
    from tunery.data.template_select import resolve_template

    cfg = make_cfg(tiny_llama3_dir, data_dir, tmp_path, tokenized_path=None)
    records = load_records(cfg)
    expected = encode_records(cfg, records.train, resolve_template(cfg, tokenizer), tokenizer)
    assert as_dicts(prepared.train) == list(expected)


def test_large_files_are_keyed_on_sampled_blocks_not_a_full_read(tmp_path):
    """Above HASH_CONTENT_BYTES the key hashes the size and three blocks: an edit of the middle block that keeps the
    size and modification time still changes it; the run card records the same sampled hash."""
    from tunery.data import encoding_cache
    from tunery.runs.card import file_fingerprint as card_fingerprint

    path = tmp_path / "big.jsonl"
    line = b'{"instruction": "Say hi.", "input": "", "output": "Hi."}\n'
    path.write_bytes(line * (encoding_cache.HASH_CONTENT_BYTES // len(line) + 1000))
    stat = path.stat()
    before = encoding_cache.file_fingerprint(str(path))
    assert "sha256" not in before and before["sampled_sha256"]
    assert card_fingerprint(str(path)) == {"size": stat.st_size, "sampled_sha256": before["sampled_sha256"]}
    with open(path, "r+b") as fh:
        fh.seek(stat.st_size // 2)
        fh.write(b"X")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = encoding_cache.file_fingerprint(str(path))
    assert after["size"] == before["size"] and after["mtime_ns"] == before["mtime_ns"]
    assert after["sampled_sha256"] != before["sampled_sha256"]


def test_record_view_reads_rows_batch_by_batch_in_any_order(tmp_path):
    """RecordView takes rows from the record batches they sit in (Arrow's take on the whole table would first
    concatenate every batch of each column: memory and time in the table's size, at every chunk)."""
    import numpy as np
    import pyarrow as pa

    from tunery.data.record_store import RecordView, record_columns
    from tunery.data.records import AlignedRecord

    records = [AlignedRecord([{"role": "user", "content": f"q{i}"}], [{"role": "assistant", "content": f"a{i}"}],
                             "", "", None, f"set[{i}]", {"row": i} if i % 3 else {}) for i in range(50)]
    columns = record_columns(records)
    batches = [pa.RecordBatch.from_pydict({k: v[i:i + 7] for k, v in columns.items()}) for i in range(0, 50, 7)]
    table = pa.Table.from_batches(batches)
    assert table.column("prompt").num_chunks == 8
    order = np.random.default_rng(0).permutation(50)[:30]
    view = RecordView(table, order)
    got = view[3:27]  # spans several batches, out of order
    assert [r.source for r in got] == [f"set[{i}]" for i in order[3:27]]
    assert view[0].response[0]["content"] == f"a{order[0]}" and len(list(view)) == 30
    assert [r.extra for r in got] == [{"row": int(i)} if i % 3 else {} for i in order[3:27]]


def test_shard_writer_gathers_chunks_into_large_record_batches(tmp_path, monkeypatch):
    """Encoded chunks go out as record batches of about BATCH_BYTES: a mapped file of many small batches is touched
    at each batch when opened (fault-around puts ~64 KiB per batch in RSS)."""
    import pyarrow as pa

    from tunery.data import encoded

    monkeypatch.setattr(encoded, "BATCH_BYTES", 4000)
    writer = encoded.ShardWriter(str(tmp_path / "train-00000.arrow"))
    for chunk in range(40):
        writer.write([{"input_ids": [chunk, i, 7], "labels": [-100, i, 7], "attention_mask": [1, 1, 1]}
                      for i in range(10)])
    path = writer.close()
    with pa.memory_map(path) as source:
        batches = list(pa.ipc.open_stream(source))
    assert 2 <= len(batches) <= 12  # 40 chunks of ~300 bytes each: about one batch per 4000 bytes, not 40
    dataset = encoded.open_shards([path])
    assert len(dataset) == 400 and writer.rows == 400
    assert [dataset[i]["input_ids"][:2] for i in (0, 11, 399)] == [[0, 0], [1, 1], [39, 9]]


def test_tokenizing_ahead_on_several_threads_gives_the_same_examples(tiny_llama3_dir, tokenizer, shared_datasets,
                                                                     tmp_path, monkeypatch):
    """One process tokenizes the next chunks on helper threads, each calling the tokenizer serially while encoding
    (TOKENIZERS_PARALLELISM=false inside, the user's setting back afterwards): the examples, their order and the
    drops do not depend on how many threads there are."""
    from tunery.data import encoded
    from tunery.data.template_select import resolve_template

    cfg = make_cfg(tiny_llama3_dir, shared_datasets, tmp_path, dataset="alpaca_en_demo", max_samples=None,
                   val_size=None, tokenized_path=None)
    template = resolve_template(cfg, tokenizer)
    records = load_records(cfg).train
    from tunery.data import encode

    seen, tokenize = set(), encode._chunk_tokens

    def watched(*args):
        seen.add(os.environ.get("TOKENIZERS_PARALLELISM"))
        return tokenize(*args)

    monkeypatch.setattr(encode, "_chunk_tokens", watched)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    results = []
    for threads in (1, 3):
        monkeypatch.setattr(encoded, "_tokenizer_threads", lambda n=threads: n)
        results.append(encode_dataset(records, "sft", template, tokenizer, cfg.cutoff_len, chunk_size=64))
    assert list(results[0]) == list(results[1]) and results[0].dropped == results[1].dropped
    assert len(results[0]) == len(records) and seen == {"false"}
    assert "TOKENIZERS_PARALLELISM" not in os.environ
    with encoded.serial_tokenizer():
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the user's own choice is kept
    with encoded.serial_tokenizer():
        assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"


def test_list_columns_keep_their_values_with_all_ones_columns_built_fast():
    import pyarrow as pa

    from tunery.data.encoded import to_table

    table = to_table([{"input_ids": [5, 1, 1], "attention_mask": [1, 1, 1]},
                      {"input_ids": [1], "attention_mask": [1]},
                      {"input_ids": [], "attention_mask": []}])
    assert table.column("attention_mask").to_pylist() == [[1, 1, 1], [1], []]
    assert table.column("input_ids").to_pylist() == [[5, 1, 1], [1], []]
    mixed = to_table([{"attention_mask": [1, 1]}, {"attention_mask": [1, 0]}])
    assert mixed.column("attention_mask").to_pylist() == [[1, 1], [1, 0]]
    assert pa.types.is_list(mixed.schema.field("attention_mask").type)
