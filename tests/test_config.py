"""Option declarations, parsing and validation — all before any model or dataset loads."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from conftest import one_error_line

from tunery.cli import main
from tunery.config import parse_config
from tunery.config.docs import DOCS_PATH, options_markdown
from tunery.config.hf_args import SNAPSHOT, build_snapshot
from tunery.config.registry import all_options
from tunery.errors import ConfigError


def test_yaml_then_flags_then_key_value(tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("model_name_or_path: org/model\nlora_rank: 4\nlearning_rate: 1.0e-4\ntemperature: 0.2\n")
    cfg = parse_config("chat", [str(cfg_file), "--lora_rank", "16", "temperature=0.5", "--do_sample", "false"])
    assert cfg.lora_rank == 16 and cfg.temperature == 0.5 and cfg.learning_rate == 1e-4
    assert cfg.do_sample is False
    assert {"lora_rank", "temperature", "learning_rate", "do_sample"} <= cfg.explicit


def test_bare_boolean_flag_means_true_and_lists_split_on_commas(tmp_path):
    cfg = parse_config("chat", ["--model_name_or_path", "org/m", "--plot_loss", "--dataset", "identity,adgen_local",
                                "--use_dora"])
    assert cfg.plot_loss is True and cfg.use_dora is True
    assert cfg.dataset == ["identity", "adgen_local"]


def test_unknown_option_suggests_the_right_name():
    with pytest.raises(ConfigError, match=r"unknown option 'lora_rnak' \(did you mean 'lora_rank'"):
        parse_config("chat", ["--lora_rnak", "8"])


def test_unknown_yaml_key_names_the_file(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model_name_or_path: org/m\nlearning_rat: 1e-4\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown option 'learning_rat' \(did you mean 'learning_rate'"):
        parse_config("chat", [str(cfg_file)])


def test_bad_choice_and_bad_type_are_one_line_errors():
    with pytest.raises(ConfigError, match="choose one of: lora, oft, freeze, full"):
        parse_config("chat", ["--finetuning_type", "qlora"])
    with pytest.raises(ConfigError, match="expects an integer"):
        parse_config("chat", ["--lora_rank", "eight"])
    with pytest.raises(ConfigError, match="must be between 0 and 1"):
        parse_config("chat", ["--lora_dropout", "1.5"])


def test_every_transformers_training_argument_is_an_option():
    from transformers import Seq2SeqTrainingArguments

    names = {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init and not f.name.startswith("_")}
    assert names <= set(all_options())


def test_hf_snapshot_is_current():
    stale = json.loads(SNAPSHOT.read_text(encoding="utf-8")) != build_snapshot()
    assert not stale, "run `python -m tunery.config.hf_args` to refresh the snapshot"


def test_options_reference_is_current():
    assert DOCS_PATH.read_text(encoding="utf-8") == options_markdown(), "run `python -m tunery.config.docs`"


def test_missing_model_folder(tmp_path, capsys):
    code = main(["train", "--model_name_or_path", str(tmp_path / "nope"), "--dataset", "x",
                 "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and one_error_line(err)
    assert "model_name_or_path" in err and "no such model folder" in err


def test_fp16_without_gpu_is_refused_before_loading(tiny_llama3_dir, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main(["train", "--model_name_or_path", str(tiny_llama3_dir), "--dataset", "identity",
                 "--dataset_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--fp16"])
    err = capsys.readouterr().err
    assert code == 2 and "'fp16' needs a CUDA GPU" in err and "Traceback" not in err


def test_non_empty_output_dir_is_kept(tiny_llama3_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = main(["train", "--model_name_or_path", str(tiny_llama3_dir), "--dataset", "identity",
                 "--dataset_dir", str(tmp_path), "--output_dir", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite_output_dir" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_help_lists_every_option_with_default():
    out = subprocess.run([sys.executable, "-m", "tunery", "train", "-h"], capture_output=True, text=True, check=True)
    for name in ("--lora_rank", "--cutoff_len", "--per_device_train_batch_size", "--lr_scheduler_type",
                 "--overwrite_output_dir", "--template"):
        assert name in out.stdout
    assert "(default: 8)" in out.stdout  # lora_rank


def test_help_does_not_import_torch():
    code = "import sys; from tunery.cli import main; main(['train', '-h']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")
