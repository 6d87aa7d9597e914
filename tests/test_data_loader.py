"""load_datasets end to end: LLaMA-Factory's real demo data, file types, hub errors, sampling, mixing, splitting."""

from __future__ import annotations

import json
import time

import pytest

from tunery.data import sources
from tunery.data.loader import load_datasets, load_one
from tunery.data.registry import get_dataset_spec, load_registry
from tunery.data.sources import read_rows
from tunery.errors import ConfigError, DataError


def local_entries(shared_datasets):
    info = load_registry(str(shared_datasets))
    out = []
    for name, entry in info.items():
        if any(k in entry for k in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url")):
            continue
        if (shared_datasets / entry["file_name"]).exists():
            out.append(name)
    return out


def stage_for(spec) -> str:
    if spec.ranking:
        return "dpo"
    if spec.columns.get("kto_tag"):
        return "kto"
    if spec.columns.get("prompt") == "text":
        return "pt"
    return "sft"


def write_info(tmp_path, info: dict) -> str:
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return str(tmp_path)


# ------------------------------------------------------------------------------------------------ real demo data


def test_every_local_demo_file_loads(shared_datasets):
    names = local_entries(shared_datasets)
    assert {"identity", "alpaca_en_demo", "glaive_toolcall_en_demo", "dpo_en_demo", "kto_en_demo", "c4_demo"} <= set(
        names
    )
    for name in names:
        spec = get_dataset_spec(name, str(shared_datasets))
        raw = read_rows(spec)
        data = load_datasets([name], str(shared_datasets), stage_for(spec))
        assert len(data.train) == len(raw), name  # the demo data is clean: nothing dropped
        assert data.dropped == {} and data.eval is None
        assert data.train[5].source == f"{name}[5]"
        for rec in data.train:
            assert len(rec.prompt) % 2 == 1 and rec.prompt[-1]["role"] in ("user", "observation")


def test_alpaca_demo(shared_datasets):
    rows = json.loads((shared_datasets / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    data = load_datasets(["alpaca_en_demo"], str(shared_datasets), "sft")
    assert len(data.train) == 999 and data.counts == {"alpaca_en_demo": 999}
    for row, rec in zip(rows, data.train):
        expected = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
        assert rec.prompt == [{"role": "user", "content": expected}]
        assert rec.response == [{"role": "assistant", "content": row["output"]}]
    assert len(load_datasets("alpaca_zh_demo", str(shared_datasets), "sft").train) == 1000


def test_glaive_toolcall_turns(shared_datasets):
    for name in ("glaive_toolcall_en_demo", "glaive_toolcall_zh_demo"):
        rows = json.loads((shared_datasets / f"{name}.json").read_text(encoding="utf-8"))
        data = load_datasets([name], str(shared_datasets), "sft")
        assert len(data.train) == 300
        mapping = {"human": "user", "gpt": "assistant", "function_call": "function", "observation": "observation"}
        for row, rec in zip(rows, data.train):
            conv = row["conversations"]
            assert len(rec.prompt) == len(conv) - 1 and len(rec.response) == 1
            assert [m["role"] for m in rec.prompt + rec.response] == [mapping[t["from"]] for t in conv]
            assert rec.tools == row["tools"]
        assert any(m["role"] == "function" for rec in data.train for m in rec.prompt)
        function_turn = next(m for rec in data.train for m in rec.prompt if m["role"] == "function")
        assert "name" in json.loads(function_turn["content"])


def test_dpo_pairs_and_system_turn(shared_datasets):
    for name, with_system in (("dpo_en_demo", 80), ("dpo_zh_demo", 64)):
        rows = json.loads((shared_datasets / f"{name}.json").read_text(encoding="utf-8"))
        data = load_datasets([name], str(shared_datasets), "dpo")
        assert len(data.train) == 300
        assert sum(1 for r in data.train if r.system) == with_system  # a leading system turn becomes the system
        for row, rec in zip(rows, data.train):
            assert [m["content"] for m in rec.response] == [row["chosen"]["value"], row["rejected"]["value"]]
            assert all(m["role"] == "assistant" for m in rec.response)
    assert len(load_datasets(["dpo_en_demo"], str(shared_datasets), "rm").train) == 300


def test_kto_tags(shared_datasets):
    data = load_datasets(["kto_en_demo"], str(shared_datasets), "kto")
    assert len(data.train) == 300
    assert sum(r.kto_tag is True for r in data.train) == 150 and sum(r.kto_tag is False for r in data.train) == 150
    assert all(len(r.response) == 1 for r in data.train)


def test_c4_pretrain(shared_datasets):
    data = load_datasets(["c4_demo"], str(shared_datasets), "pt")
    assert len(data.train) == 300 and all(r.response == [] and len(r.prompt) == 1 for r in data.train)


def test_identity_placeholders(shared_datasets):
    raw = load_datasets(["identity"], str(shared_datasets), "sft")
    assert raw.placeholders == {"name": 77, "author": 60}
    data = load_datasets(["identity"], str(shared_datasets), "sft", placeholders={"name": "Tuna", "author": "Tunery"})
    assert data.placeholders == {}
    assert data.train[0].response[0]["content"].startswith("Hello! I am Tuna, an AI assistant developed by Tunery.")


def test_stage_mismatch(shared_datasets):
    d = str(shared_datasets)
    with pytest.raises(DataError, match="dpo_en_demo is a preference .ranking. dataset, which stage sft cannot use"):
        load_datasets(["alpaca_en_demo", "dpo_en_demo"], d, "sft")
    with pytest.raises(DataError, match="alpaca_en_demo is not a preference dataset.*stage dpo needs chosen/rejected"):
        load_datasets(["alpaca_en_demo"], d, "dpo")
    with pytest.raises(DataError, match="no kto_tag column, which stage kto needs"):
        load_datasets(["alpaca_en_demo"], d, "kto")
    with pytest.raises(DataError, match="kto_en_demo is a KTO dataset"):
        load_datasets(["kto_en_demo"], d, "sft")


# ---------------------------------------------------------------------------------------------------------- hub


HUB_ONLY = ["alpaca_en", "glaive_toolcall_en", "dpo_mix_en", "adgen_train", "ultrachat_200k", "fineweb"]


@pytest.mark.parametrize("name", HUB_ONLY)
def test_hub_only_entries_fail_fast_offline(shared_datasets, monkeypatch, name):
    monkeypatch.setattr(sources, "_hub_reachable", lambda *a, **k: False)
    spec = get_dataset_spec(name, str(shared_datasets))
    stage = "dpo" if spec.ranking else "sft"
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_datasets([name], str(shared_datasets), stage)
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert f"dataset {name} needs the Hugging Face hub (hf_hub_url '{spec.dataset_name}')" in msg
    assert "unreachable" in msg and "register a file_name" in msg


def test_hub_check_without_stub(shared_datasets):
    if sources._hub_reachable(sources._hub_endpoint()):
        pytest.skip("the hub is reachable here")
    start = time.monotonic()
    with pytest.raises(DataError, match="needs the Hugging Face hub"):
        load_datasets(["alpaca_gpt4_en"], str(shared_datasets), "sft")
    assert time.monotonic() - start < 10


def test_offline_env_and_modelscope(shared_datasets, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="offline mode is set"):
        load_datasets(["lima"], str(shared_datasets), "sft")
    with pytest.raises(DataError, match="deepctrl lives on ModelScope"):
        load_datasets(["deepctrl"], str(shared_datasets), "sft")


# ------------------------------------------------------------------------------------------------- file types


ROWS = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(6)]


def test_file_types(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.json").write_text(json.dumps(ROWS), encoding="utf-8")
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")  # jsonl as .json
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n", encoding="utf-8")
    (tmp_path / "arr.jsonl").write_text(json.dumps(ROWS, indent=2), encoding="utf-8")  # an array as .jsonl
    (tmp_path / "c.csv").write_text(
        "instruction,input,output\n" + "".join(f'"{r["instruction"]}",,"{r["output"]}"\n' for r in ROWS),
        encoding="utf-8",
    )
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    with pa.OSFile(str(tmp_path / "e.arrow"), "wb") as sink:
        table = pa.Table.from_pylist(ROWS)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (tmp_path / "f.txt").write_text("first line\nsecond line\n", encoding="utf-8")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "part1.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[:3]), encoding="utf-8")
    (folder / "part2.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[3:]), encoding="utf-8")
    (folder / ".hidden").write_text("ignored", encoding="utf-8")
    info = {
        n: {"file_name": f}
        for n, f in [
            ("json", "a.json"),
            ("lines", "lines.json"),
            ("jsonl", "b.jsonl"),
            ("arr", "arr.jsonl"),
            ("csv", "c.csv"),
            ("parquet", "d.parquet"),
            ("arrow", "e.arrow"),
            ("folder", "folder"),
        ]
    }
    info["txt"] = {"file_name": "f.txt", "columns": {"prompt": "text"}}
    d = write_info(tmp_path, info)
    for name in ("json", "lines", "jsonl", "arr", "csv", "parquet", "arrow", "folder"):
        data = load_datasets([name], d, "sft")
        assert [r.prompt[0]["content"] for r in data.train] == [f"q{i}" for i in range(6)], name
        assert [r.response[0]["content"] for r in data.train] == [f"a{i}" for i in range(6)], name
    data = load_datasets(["txt"], d, "pt")
    assert [r.prompt[0]["content"] for r in data.train] == ["first line", "second line"]
    # a file given directly, not registered: formatting detected from its columns
    assert len(load_datasets([str(tmp_path / "b.jsonl")], d, "sft").train) == 6


def test_bad_files(tmp_path):
    (tmp_path / "broken.json").write_text(
        '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c" "output": "d"}\n]'
    )
    (tmp_path / "broken.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": }\n')
    (tmp_path / "one.json").write_text('{\n  "instruction": "a",\n  "output": "b"\n}')
    (tmp_path / "data.xlsx").write_text("x")
    (tmp_path / "empty.json").write_text("[]")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.json").write_text("[]")
    (mixed / "b.csv").write_text("instruction\n")
    (tmp_path / "nondict.json").write_text('[{"instruction": "a", "output": "b"}, "oops"]')
    d = write_info(
        tmp_path,
        {
            "missing": {"file_name": "nowhere.json"},
            "broken": {"file_name": "broken.json"},
            "brokenl": {"file_name": "broken.jsonl"},
            "one": {"file_name": "one.json"},
            "xlsx": {"file_name": "data.xlsx"},
            "empty": {"file_name": "empty.json"},
            "mixed": {"file_name": "mixed"},
            "nondict": {"file_name": "nondict.json"},
        },
    )
    cases = {
        "missing": r"dataset missing: .*nowhere.json not found \(file_name in .*dataset_info.json\) — put the file",
        "broken": r"dataset broken: .*broken.json:3:23: invalid JSON \(Expecting ',' delimiter\)",
        "brokenl": r"dataset brokenl: .*broken.jsonl:2:32: invalid JSON line",
        "one": r"holds a single JSON object, not records",
        "xlsx": r"unsupported file type '.xlsx'",
        "empty": r"empty.json holds no records",
        "mixed": r"mixes file types",
        "nondict": r"record 1 is a str, not an object",
    }
    for name, pattern in cases.items():
        with pytest.raises(DataError, match=pattern):
            load_datasets([name], d, "sft")


# ------------------------------------------------------------------------------- sampling, mixing and splitting


@pytest.fixture()
def three(tmp_path):
    info = {}
    for name, n in (("a", 10), ("b", 4), ("c", 7)):
        rows = [{"instruction": f"{name}{i}", "output": "x"} for i in range(n)]
        (tmp_path / f"{name}.json").write_text(json.dumps(rows), encoding="utf-8")
        info[name] = {"file_name": f"{name}.json"}
    info["a_sampled"] = {"file_name": "a.json", "num_samples": 25}
    info["a_few"] = {"file_name": "a.json", "num_samples": 3}
    return write_info(tmp_path, info)


def ids(records):
    return [r.prompt[0]["content"] for r in records]


def test_max_samples_is_per_dataset(three):
    data = load_datasets(["a", "b", "c"], three, "sft", max_samples=5)
    assert ids(data.train) == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "c0", "c1", "c2", "c3", "c4"]
    assert data.counts == {"a": 5, "b": 4, "c": 5}


def test_num_samples(three):
    data = load_datasets(["a_sampled"], three, "sft")
    got = ids(data.train)
    assert len(got) == 25 and set(got) == {f"a{i}" for i in range(10)}  # every record at least once
    assert sorted(got[:10]) == sorted(f"a{i}" for i in range(10))
    few = ids(load_datasets(["a_few"], three, "sft").train)
    assert len(few) == 3 and len(set(few)) == 3
    assert data.train[0].source.startswith("a_sampled[")


def hf_reference(parts, **kwargs):
    import datasets

    dsets = [datasets.Dataset.from_dict({"id": p}) for p in parts]
    return datasets.interleave_datasets(dsets, **kwargs)["id"]


@pytest.mark.parametrize("strategy", ["interleave_under", "interleave_over"])
@pytest.mark.parametrize("probs", [None, [0.5, 0.2, 0.3]])
def test_interleave_matches_datasets(three, strategy, probs):
    data = load_datasets(["a", "b", "c"], three, "sft", mix_strategy=strategy, interleave_probs=probs, seed=7)
    parts = [[f"{n}{i}" for i in range(k)] for n, k in (("a", 10), ("b", 4), ("c", 7))]
    stopping = "first_exhausted" if strategy.endswith("under") else "all_exhausted"
    assert ids(data.train) == hf_reference(parts, probabilities=probs, seed=7, stopping_strategy=stopping)


def test_interleave_basic_semantics(three):
    under = ids(load_datasets(["a", "b", "c"], three, "sft", mix_strategy="interleave_under").train)
    assert under == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3"]
    over = ids(load_datasets(["a", "b", "c"], three, "sft", mix_strategy="interleave_over").train)
    assert len(over) == 30 and set(over) >= {f"a{i}" for i in range(10)} | {f"c{i}" for i in range(7)}
    probs = ids(load_datasets("a,b", three, "sft", mix_strategy="interleave_under", interleave_probs="0.9,0.1").train)
    assert probs.count("a0") >= 1


def test_mix_options_errors(three):
    with pytest.raises(ConfigError, match="only valid with mix_strategy interleave"):
        load_datasets(["a", "b"], three, "sft", interleave_probs=[0.5, 0.5])
    with pytest.raises(ConfigError, match="has 3 values but 2 datasets"):
        load_datasets(["a", "b"], three, "sft", mix_strategy="interleave_under", interleave_probs=[0.2, 0.3, 0.5])
    with pytest.raises(ConfigError, match="sum to 1"):
        load_datasets(["a", "b"], three, "sft", mix_strategy="interleave_under", interleave_probs=[0.2, 0.3])
    with pytest.raises(ConfigError, match="probability 0, so interleave_over would never finish"):
        load_datasets(["a", "b"], three, "sft", mix_strategy="interleave_over", interleave_probs=[1.0, 0.0])
    with pytest.raises(ConfigError, match="unknown mix_strategy 'interleave'"):
        load_datasets(["a"], three, "sft", mix_strategy="interleave")


@pytest.mark.parametrize("val_size", [0.2, 0.25, 5, 5.0])
def test_val_size_matches_train_test_split(three, val_size):
    import datasets

    data = load_datasets(["a", "b", "c"], three, "sft", val_size=val_size, seed=3)
    every = [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(4)] + [f"c{i}" for i in range(7)]
    size = int(val_size) if val_size > 1 else val_size
    ref = datasets.Dataset.from_dict({"id": every}).train_test_split(test_size=size, seed=3)
    assert ids(data.train) == ref["train"]["id"] and ids(data.eval) == ref["test"]["id"]
    assert sorted(ids(data.train) + ids(data.eval)) == sorted(every)
    again = load_datasets(["a", "b", "c"], three, "sft", val_size=val_size, seed=3)
    assert ids(again.eval) == ids(data.eval)


def test_val_size_errors_and_eval_names(three):
    with pytest.raises(ConfigError, match="val_size 1 would leave no training data"):
        load_datasets(["a"], three, "sft", val_size=1)
    with pytest.raises(ConfigError, match="takes 10 of 10 training records"):
        load_datasets(["a"], three, "sft", val_size=10)
    with pytest.raises(ConfigError, match="either val_size or eval_dataset"):
        load_datasets(["a"], three, "sft", val_size=0.1, eval_names=["b"])
    data = load_datasets(["a"], three, "sft", eval_names=["b", "c"], max_samples=3)
    assert ids(data.train) == ["a0", "a1", "a2"] and ids(data.eval) == ["b0", "b1", "b2", "c0", "c1", "c2"]


def test_dropped_counts_reported(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}] * 4
    rows.append({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]})
    rows.append({"conversations": [{"from": "human", "value": "q"}]})
    (tmp_path / "sg.json").write_text(json.dumps(rows), encoding="utf-8")
    d = write_info(tmp_path, {"sg": {"file_name": "sg.json", "formatting": "sharegpt"}})
    data = load_datasets(["sg"], d, "sft")
    assert len(data.train) == 4
    assert data.dropped == {"sg: invalid role order": 1, "sg: odd turn count": 1} and data.num_dropped == 2
    assert [r.source for r in data.train] == ["sg[0]", "sg[1]", "sg[2]", "sg[3]"]


def test_max_samples_keeps_whole_file_columns(tmp_path):
    rows = [{"instruction": "a", "output": "b"}] * 3 + [{"instruction": "a", "output": "b", "system": "s"}]
    (tmp_path / "x.json").write_text(json.dumps(rows), encoding="utf-8")
    d = write_info(
        tmp_path,
        {"x": {"file_name": "x.json", "columns": {"prompt": "instruction", "response": "output", "system": "system"}}},
    )
    assert len(load_one("x", d, "sft", max_samples=2)) == 2


@pytest.mark.parametrize("name,text,line", [
    ("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": }\n', 2),
    ("bad.json", '[{"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}]', 2),
    ("bad.csv", 'instruction,output\na,b\nc,d,e\n', 3),
])
def test_streamed_reads_name_the_file_and_line_like_whole_reads(tmp_path, name, text, line):
    """The streaming readers training uses (record_store) report malformed lines exactly as read_rows does."""
    from tunery.data.registry import get_dataset_spec
    from tunery.data.sources import iter_row_chunks, read_rows

    (tmp_path / name).write_text(text)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"bad": {"file_name": name}}))
    spec = get_dataset_spec("bad", str(tmp_path))
    with pytest.raises(DataError) as whole:
        read_rows(spec)
    with pytest.raises(DataError) as streamed:
        [row for chunk in iter_row_chunks(spec, 1) for row in chunk]
    assert str(streamed.value) == str(whole.value) and f"{name}:{line}" in str(streamed.value)


def test_streamed_rows_equal_whole_reads(tmp_path):
    from tunery.data.registry import get_dataset_spec
    from tunery.data.sources import iter_row_chunks, read_rows

    rows = [{"instruction": f"q{i} " + "x" * (i % 7), "input": "", "output": f"a{i}"} for i in range(2500)]
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=1))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"a": {"file_name": "a.json"},
                                                            "b": {"file_name": "b.jsonl"}}))
    for name in ("a", "b"):
        spec = get_dataset_spec(name, str(tmp_path))
        assert [row for chunk in iter_row_chunks(spec, 1000) for row in chunk] == read_rows(spec) == rows
