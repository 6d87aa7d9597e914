"""``streaming: true``: pt and sft train from an IterableDataset encoded on the fly; the same examples as the
non-streaming path; malformed lines and missing max_steps are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import one_error_line

from tunery.cli import main
from tunery.config import parse_config
from tunery.data.dataset import prepare_datasets
from tunery.data.streaming import stream_datasets
from tunery.data.template_select import resolve_template
from tunery.model.load import load_tokenizer

BASE = {"stage": "sft", "do_train": "true", "finetuning_type": "lora", "lora_rank": 4, "template": "llama3",
        "cutoff_len": 128, "per_device_train_batch_size": 2, "logging_steps": 1, "save_strategy": "no",
        "report_to": "none", "overwrite_output_dir": "true", "plot_loss": "false"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _args(model, data_dir, out, **extra) -> list[str]:
    return [f"{k}={v}" for k, v in dict(BASE, model_name_or_path=model, dataset_dir=data_dir, output_dir=out,
                                         **extra).items()]


def _steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def test_sft_streaming_mixes_packs_and_trains(tiny_llama3_dir, shared_datasets, tmp_path):
    out = tmp_path / "sft"
    args = _args(tiny_llama3_dir, shared_datasets, out, dataset="alpaca_en_demo,identity", streaming="true",
                 mix_strategy="interleave_under", interleave_probs="0.7,0.3", neat_packing="true", max_steps=3,
                 buffer_size=64)
    assert main(["train", *args]) == 0
    steps = _steps(out)
    assert [s["current_steps"] for s in steps if "loss" in s] == [1, 2, 3]
    assert all(s["loss"] > 0 for s in steps if "loss" in s)
    card = json.loads((out / "run_card.json").read_text())
    assert card["data"]["train"] == {"streaming": True}


def test_pt_streaming_packs_blocks_on_the_fly(tiny_llama3_dir, shared_datasets, tmp_path):
    out = tmp_path / "pt"
    args = _args(tiny_llama3_dir, shared_datasets, out, stage="pt", dataset="c4_demo", streaming="true",
                 max_steps=2, cutoff_len=64)
    assert main(["train", *args]) == 0
    assert [s["current_steps"] for s in _steps(out) if "loss" in s] == [1, 2]


@pytest.mark.parametrize("stage, dataset, extra", [("sft", "alpaca_en_demo", {}), ("pt", "c4_demo", {}),
                                                    ("sft", "alpaca_en_demo", {"packing": "true"})])
def test_streamed_examples_are_the_non_streaming_ones(tiny_llama3_dir, shared_datasets, tmp_path, monkeypatch,
                                                      stage, dataset, extra):
    """Without the shuffle the stream yields exactly the examples of the cached path (same encoder, same batches)."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    args = _args(tiny_llama3_dir, shared_datasets, tmp_path / "o", stage=stage, dataset=dataset, max_steps=1,
                 **extra)
    cfg = parse_config("train", args)
    tokenizer = load_tokenizer(cfg)
    template = resolve_template(cfg, tokenizer)
    expected = prepare_datasets(cfg, tokenizer, template).train.to_list()
    streamed_cfg = parse_config("train", args + ["streaming=true", f"buffer_size={len(expected) + 1}"])
    streamed = list(stream_datasets(streamed_cfg, tokenizer, template).train)
    assert len(streamed) == len(expected) > 0
    key = lambda e: (tuple(e["input_ids"]), tuple(e["labels"]))  # noqa: E731
    assert sorted(map(key, streamed)) == sorted(map(key, expected))
    assert list(map(key, streamed)) != list(map(key, expected))  # the buffer shuffled them


def test_malformed_line_is_one_line_naming_file_and_line(tiny_llama3_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    good = json.dumps({"instruction": "Say hi.", "input": "", "output": "Hi."})
    (data / "bad.jsonl").write_text("\n".join([good, good, '{"instruction": "oops", "output": ', good]) + "\n")
    (data / "dataset_info.json").write_text(json.dumps({"bad": {"file_name": "bad.jsonl"}}))
    args = _args(tiny_llama3_dir, data, tmp_path / "o", dataset="bad", streaming="true", max_steps=1)
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "bad.jsonl:3" in err, err


@pytest.mark.parametrize("extra, expected", [
    ({}, "option 'streaming' needs max_steps"),
    ({"max_steps": 2, "stage": "dpo"}, "option 'streaming' works with stage pt or sft"),
    ({"max_steps": 2, "max_samples": 10}, "'max_samples' and 'streaming' cannot be combined"),
    ({"max_steps": 2, "val_size": 0.1}, "must be a record count with streaming"),
])
def test_streaming_refuses_what_it_cannot_do_in_one_line(tiny_llama3_dir, shared_datasets, tmp_path, capsys, extra,
                                                         expected):
    args = _args(tiny_llama3_dir, shared_datasets, tmp_path / "o", dataset="alpaca_en_demo", streaming="true",
                 **extra)
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and expected in err, err
    assert not (tmp_path / "o" / "trainer_log.jsonl").exists()


def test_val_size_takes_the_first_streamed_examples_for_evaluation(tiny_llama3_dir, shared_datasets, tmp_path):
    args = _args(tiny_llama3_dir, shared_datasets, tmp_path / "o", dataset="alpaca_en_demo", streaming="true",
                 max_steps=1, val_size=5, buffer_size=16)
    cfg = parse_config("train", args)
    tokenizer = load_tokenizer(cfg)
    prepared_template = lambda c: resolve_template(c, tokenizer)  # noqa: E731
    prepared = stream_datasets(cfg, tokenizer, prepared_template(cfg))
    held_out = [tuple(e["input_ids"]) for e in prepared.eval]
    train = [tuple(e["input_ids"]) for e in prepared.train]
    whole = parse_config("train", [a for a in args if not a.startswith("val_size=")])
    every = [tuple(e["input_ids"]) for e in stream_datasets(whole, tokenizer, prepared_template(whole)).train]
    assert len(held_out) == 5 and len(train) == len(every) - 5
    assert sorted(held_out + train) == sorted(every)
