"""`tunery preview`: rendered records with trained tokens marked, the JSON items the trainer gets, the summary,
no model weights loaded, and the one-line errors for bad input."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys

import pytest
import yaml

from tunery.cli import main
from tunery.config import parse_config
from tunery.data.preview import CLOSE, OPEN, preview
from tunery.demo import DATA_DIR


@pytest.fixture(scope="module")
def tokenizer_only(tiny_llama3_dir, tmp_path_factory):
    """The tiny model folder without its weights: preview must work from the tokenizer alone."""
    folder = tmp_path_factory.mktemp("noweights") / "tiny-llama3"
    shutil.copytree(tiny_llama3_dir, folder)
    (folder / "model.safetensors").unlink()
    return folder


def write_config(tmp_path, model_dir, **over):
    values = dict(model_name_or_path=str(model_dir), template="llama3", dataset="identity", dataset_dir=str(DATA_DIR),
                  cutoff_len=1024, max_samples=10)
    values.update(over)
    path = tmp_path / "preview.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


class _CurrentStderr:
    """Tunery's log handler keeps the sys.stderr of the moment it was made (another test's capture, maybe)."""

    def write(self, text):
        return sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()


@pytest.fixture(autouse=True)
def _log_to_current_stderr():
    for handler in logging.getLogger("tunery").handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = _CurrentStderr()


def run_cli(capsys, *argv):
    code = main(["preview", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_marks_trained_tokens_and_summarises(tokenizer_only, tmp_path, capsys):
    from transformers import AutoTokenizer

    config = write_config(tmp_path, tokenizer_only)
    code, out, _ = run_cli(capsys, config, "--num", "2")
    assert code == 0
    assert out.count("── record ") == 2 and "identity[0]" in out and "identity[1]" in out
    first = out.split("── record 2/")[0].split("──\n", 1)[1].strip()
    assert first.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|>"
                            f"<|start_header_id|>assistant<|end_header_id|>\n\n{OPEN}I am {{{{name}}}}, an AI")
    # the trained part is the answer and its end-of-turn token, bracketed
    assert first.endswith(f"<|eot_id|>{CLOSE}") and first.count(OPEN) == 1
    # the unbracketed text is exactly the decoded input_ids
    tok = AutoTokenizer.from_pretrained(tokenizer_only)
    ids = json.loads(run_cli(capsys, config, "--num=1", "--format=json")[1].splitlines()[0])["input_ids"]
    assert first.replace(OPEN, "").replace(CLOSE, "") == tok.decode(ids, skip_special_tokens=False)

    assert "prompt tokens: p50" in out and "response tokens: p50" in out
    assert "cutoff_len 1024 truncates no record" in out and "dropped: none" in out
    assert "placeholders left: {{author}} in 10 records, {{name}} in 10 records" in out
    assert "placeholders: {author: ..., name: ...}" in out
    assert "trained tokens:" in out


def test_json_items_are_what_the_trainer_gets(tiny_llama3_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from tunery.data.dataset import prepare_datasets
    from tunery.data.template_select import resolve_template

    config = write_config(tmp_path, tiny_llama3_dir, cutoff_len=24, placeholders={"name": "Tunery", "author": "me"})
    code, out, _ = run_cli(capsys, config, "--num", "3", "--format", "json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    items, summary = lines[:-1], lines[-1]["summary"]
    cfg = parse_config("train", [config], {"output_dir": str(tmp_path / "o")})
    tok = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    expected = [dict(e) for e in prepare_datasets(cfg, tok, resolve_template(cfg, tok)).train.select(range(3))]
    assert [{k: v for k, v in item.items() if k != "index"} for item in items] == expected
    assert set(items[0]) == {"index", "input_ids", "labels", "attention_mask"}

    assert summary["records"] == 10 and summary["examples"] == 10 and summary["placeholders"] == {}
    assert summary["truncated_records"] == 10 and summary["cutoff_len"] == 24
    full = [p + r for p, r in zip(*_lengths(cfg, tok))]
    assert summary["truncated_tokens"]["total"] == sum(n - 24 for n in full)  # single turns: cut to exactly 24
    assert summary["response_tokens"]["max"] == max(_lengths(cfg, tok)[1])
    assert 0 < summary["trained"]["share"] < 1


def _lengths(cfg, tok):
    from tunery.data.dataset import load_records
    from tunery.data.template_select import resolve_template

    template = resolve_template(cfg, tok)
    pairs = [template.encode_oneturn(tok, r.prompt + r.response, r.system or None) for r in load_records(cfg).train]
    return [len(p) for p, _ in pairs], [len(r) for _, r in pairs]


def test_ranking_and_packed_json(tokenizer_only, shared_datasets, tmp_path, capsys):
    config = write_config(tmp_path, tokenizer_only, stage="dpo", dataset="dpo_en_demo", max_samples=3,
                          dataset_dir=str(shared_datasets))
    code, out, _ = run_cli(capsys, config, "--num", "1", "--format", "json")
    item = json.loads(out.splitlines()[0])
    assert code == 0 and {"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"} <= set(item)
    code, out, _ = run_cli(capsys, config, "--num", "1")
    assert code == 0 and "· chosen ·" in out and "· rejected ·" in out

    config = write_config(tmp_path, tokenizer_only, neat_packing=True, cutoff_len=256)
    code, out, _ = run_cli(capsys, config, "--num", "50", "--format", "json")
    lines = [json.loads(line) for line in out.splitlines()]
    summary = lines[-1]["summary"]
    assert summary["packing"]["examples"] == 10 and summary["packing"]["neat"]
    assert len(lines) - 1 == summary["packing"]["sequences"] and "position_ids" in lines[0]


def test_colour_on_a_terminal(tokenizer_only, tmp_path):
    cfg = parse_config("preview", [write_config(tmp_path, tokenizer_only)], {"preview_num": 1})
    stream = io.StringIO()
    preview(cfg, stream=stream, color=True)
    text = stream.getvalue()
    assert "\x1b[" in text and OPEN not in text


def test_truncation_and_drops_reported(tokenizer_only, tmp_path, capsys):
    code, out, _ = run_cli(capsys, write_config(tmp_path, tokenizer_only, cutoff_len=1), "--num", "1")
    assert code == 0
    assert "identity[0] · dropped: nothing to train on after truncation" in out
    assert "no training examples left: `tunery train` would stop here" in out
    assert "cutoff_len 1 truncates 10 of 10 records (100.0%)" in out
    assert "dropped 10 record(s): encoding: nothing to train on after truncation (10)" in out


@pytest.mark.parametrize("over, argv, message", [
    (dict(template="llama3"), [], "template 'llama3' needs the special token <|start_header_id|>"),
    ({}, ["--format", "xml"], "option 'preview_format' got 'xml'; choose one of: text, json"),
    (dict(neat_packing=True, stage="dpo"), [], "option 'neat_packing' works with stage sft only"),
    (dict(dataset=None), [], "option 'dataset' is required for preview"),
])
def test_bad_input_is_one_line(tiny_qwen_dir, tmp_path, capsys, over, argv, message):
    values = {k: v for k, v in dict(dict(template="qwen"), **over).items() if v is not None}
    config = write_config(tmp_path, tiny_qwen_dir, **values)
    if over.get("dataset", "x") is None:
        data = yaml.safe_load(open(config))
        data.pop("dataset")
        open(config, "w").write(yaml.safe_dump(data))
    code, _, err = run_cli(capsys, config, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
