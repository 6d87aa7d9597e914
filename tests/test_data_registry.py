"""dataset_info.json -> DatasetSpec, with LLaMA-Factory's defaults, on its real registry and on small bad ones."""

from __future__ import annotations

import json

import pytest

from tunery.data.registry import (
    ONLINE,
    get_dataset_spec,
    get_dataset_specs,
    load_registry,
    spec_from_entry,
)
from tunery.errors import DataError


def write_info(tmp_path, info: dict):
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return str(tmp_path)


def test_registry_reads_llamafactory_file(shared_datasets):
    info = load_registry(str(shared_datasets))
    assert len(info) > 100
    assert info["identity"] == {"file_name": "identity.json"}


def test_alpaca_defaults_without_columns(shared_datasets):
    spec = get_dataset_spec("identity", str(shared_datasets))
    assert (spec.load_from, spec.dataset_name, spec.formatting, spec.ranking) == (
        "file",
        "identity.json",
        "alpaca",
        False,
    )
    assert spec.columns["prompt"] == "instruction"
    assert spec.columns["query"] == "input"
    assert spec.columns["response"] == "output"
    assert spec.columns["history"] is None and spec.columns["system"] is None
    assert spec.split == "train" and spec.num_samples is None
    assert spec.path.endswith("identity.json")
    assert spec.explicit_columns == frozenset()


def test_columns_object_unsets_unnamed_columns(shared_datasets):
    # LLaMA-Factory: with "columns", every column it does not name is None (c4: no query, no response)
    spec = get_dataset_spec("c4_demo", str(shared_datasets))
    assert spec.columns["prompt"] == "text"
    assert spec.columns["query"] is None and spec.columns["response"] is None
    assert spec.explicit_columns == {"prompt"}


def test_sharegpt_default_tags(shared_datasets):
    spec = get_dataset_spec("glaive_toolcall_en_demo", str(shared_datasets))
    assert spec.formatting == "sharegpt"
    assert spec.columns["messages"] == "conversations" and spec.columns["tools"] == "tools"
    assert spec.columns["prompt"] is None
    assert spec.tags == {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "observation_tag": "observation",
        "function_tag": "function_call",
        "system_tag": "system",
    }


def test_tags_object_unsets_unnamed_tags(shared_datasets):
    spec = get_dataset_spec("kto_en_demo", str(shared_datasets))
    assert spec.tags["role_tag"] == "role" and spec.tags["user_tag"] == "user"
    assert spec.tags["system_tag"] is None and spec.tags["observation_tag"] is None
    assert spec.columns["kto_tag"] == "label"


def test_ranking_and_hub_attributes(shared_datasets):
    d = str(shared_datasets)
    dpo = get_dataset_spec("dpo_en_demo", d)
    assert dpo.ranking and dpo.columns["chosen"] == "chosen" and dpo.columns["rejected"] == "rejected"
    adgen = get_dataset_spec("adgen_eval", d)
    assert (adgen.load_from, adgen.dataset_name, adgen.split) == ("hf_hub", "HasturOfficial/adgen", "validation")
    llava = get_dataset_spec("llava_1k_en", d)
    assert llava.subset == "en" and llava.columns["images"] == "images"
    assert get_dataset_spec("starcoder_python", d).folder == "python"
    assert get_dataset_spec("ultrachat_200k", d).split == "train_sft"


def test_hub_precedence(shared_datasets, monkeypatch):
    d = str(shared_datasets)
    monkeypatch.delenv("USE_MODELSCOPE_HUB", raising=False)
    monkeypatch.delenv("USE_OPENMIND_HUB", raising=False)
    assert get_dataset_spec("alpaca_en", d).load_from == "hf_hub"
    assert get_dataset_spec("deepctrl", d).load_from == "ms_hub"  # only an ms_hub_url
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    spec = get_dataset_spec("alpaca_en", d)
    assert (spec.load_from, spec.dataset_name) == ("ms_hub", "llamafactory/alpaca_en")
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "0")
    monkeypatch.setenv("USE_OPENMIND_HUB", "true")
    assert get_dataset_spec("alpaca_en", d).dataset_name == "HaM/alpaca_en"


def test_unknown_name_lists_and_suggests(shared_datasets):
    with pytest.raises(DataError) as err:
        get_dataset_spec("alpaca_en_dem", str(shared_datasets))
    msg = str(err.value)
    assert "dataset 'alpaca_en_dem' is not in" in msg and "dataset_info.json" in msg
    assert "registered: identity, alpaca_en_demo" in msg
    assert "did you mean 'alpaca_en_demo'" in msg
    assert "add an entry there or fix the name" in msg
    assert "\n" not in msg


def test_missing_and_malformed_info(tmp_path):
    with pytest.raises(DataError, match="no dataset_info.json in dataset_dir"):
        get_dataset_spec("x", str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load_registry(str(tmp_path / "nope"))
    (tmp_path / "dataset_info.json").write_text('{\n  "a": {"file_name": "a.json"},\n  "b": {\n}', encoding="utf-8")
    with pytest.raises(DataError, match=r"dataset_info.json:4:2: invalid JSON"):
        load_registry(str(tmp_path))
    (tmp_path / "dataset_info.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON object"):
        load_registry(str(tmp_path))


def test_bad_entries(tmp_path):
    d = write_info(
        tmp_path,
        {
            "nothing": {"formatting": "alpaca"},
            "badfmt": {"file_name": "a.json", "formatting": "sharegtp"},
            "badnum": {"file_name": "a.json", "num_samples": "ten"},
            "badcols": {"file_name": "a.json", "columns": ["prompt"]},
        },
    )
    with pytest.raises(DataError, match="entry 'nothing' has none of file_name"):
        get_dataset_spec("nothing", d)
    with pytest.raises(DataError, match=r"unknown formatting 'sharegtp'.*did you mean 'sharegpt'"):
        get_dataset_spec("badfmt", d)
    with pytest.raises(DataError, match="num_samples must be a positive integer"):
        get_dataset_spec("badnum", d)
    with pytest.raises(DataError, match="'columns' must be an object"):
        get_dataset_spec("badcols", d)


def test_unknown_column_field_is_ignored_with_warning(tmp_path, caplog):
    spec = spec_from_entry("x", {"file_name": "a.json", "columns": {"reponse": "out"}}, str(tmp_path))
    assert spec.columns["response"] is None
    # the tunery logger does not propagate; the spec is what matters, the warning is best-effort


def test_openai_formatting_defaults():
    spec = spec_from_entry("o", {"file_name": "o.json", "formatting": "openai"}, ".")
    assert spec.columns["messages"] == "messages"
    assert spec.tags["role_tag"] == "role" and spec.tags["observation_tag"] == "tool"


def test_online_and_direct_paths(tmp_path, shared_datasets):
    spec = get_dataset_spec("someone/some_set", ONLINE)
    assert (spec.load_from, spec.dataset_name, spec.formatting) == ("hf_hub", "someone/some_set", "alpaca")
    data = tmp_path / "mine.jsonl"
    data.write_text('{"instruction": "hi", "output": "hello"}\n', encoding="utf-8")
    # not registered, but an existing file: loaded directly, formatting detected later
    spec = get_dataset_spec(str(data), str(shared_datasets))
    assert spec.load_from == "file" and spec.formatting == "auto" and spec.path == str(data)
    # also without any dataset_info.json
    spec = get_dataset_spec("mine.jsonl", str(tmp_path))
    assert spec.path == str(data)


def test_get_dataset_specs_reads_once(shared_datasets):
    specs = get_dataset_specs(["identity", "c4_demo"], str(shared_datasets))
    assert [s.name for s in specs] == ["identity", "c4_demo"]
