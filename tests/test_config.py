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


def test_training_arguments_follow_the_installed_transformers():
    from tunery.config.hf_args import hf_options

    assert [(o.name, o.kind, o.default) for o in hf_options()] == [(r["name"], r["kind"], r["default"])
                                                                  for r in build_snapshot()]


def test_snapshot_of_another_transformers_version_is_rebuilt_once_and_cached(tmp_path):
    import transformers

    from tunery.config.hf_args import load_rows

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"transformers": "4.0.0", "fields": [{"name": "warmup_ratio", "kind": "number",
                                                                  "default": 0.0, "help": "", "choices": None}]}))
    rows = load_rows(old, cache=tmp_path / "cache", version=transformers.__version__)
    assert rows["transformers"] == transformers.__version__ and rows["fields"] == build_snapshot()
    cached = tmp_path / "cache" / f"hf_training_args-{transformers.__version__}.json"
    assert json.loads(cached.read_text()) == rows
    cached.write_text(json.dumps({"transformers": transformers.__version__, "fields": []}))
    assert load_rows(old, cache=tmp_path / "cache", version=transformers.__version__)["fields"] == []  # read back
    assert load_rows(SNAPSHOT, cache=tmp_path / "none", version=json.loads(SNAPSHOT.read_text())["transformers"]) \
        == json.loads(SNAPSHOT.read_text())  # the shipped one when it is the installed version
    assert not (tmp_path / "none").exists()


def test_help_does_not_import_transformers():
    code = ("import sys; from tunery.cli import main; import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['train', '-h'])\n"
            "print('transformers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


LF_YAML = """model_name_or_path: org/model
dataset: identity
output_dir: {out}
warmup_ratio: 0.1
evaluation_strategy: "no"
logging_dir: {out}/tb
per_gpu_train_batch_size: 2
overwrite_output_dir: true
"""


def test_names_transformers_dropped_are_translated(tmp_path, caplog):
    import dataclasses

    from transformers import Seq2SeqTrainingArguments

    fields = {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments)}
    path = tmp_path / "lf.yaml"
    path.write_text(LF_YAML.format(out=tmp_path / "out"))
    cfg = parse_config("train", [str(path)])
    kwargs = cfg.hf_training_kwargs()
    if "warmup_ratio" not in fields:  # transformers 5.x: a ratio is a warmup_steps below 1
        assert kwargs["warmup_steps"] == 0.1 and "warmup_ratio" not in kwargs
    if "evaluation_strategy" not in fields:
        assert kwargs["eval_strategy"] == "no"
    if "per_gpu_train_batch_size" not in fields:
        assert kwargs["per_device_train_batch_size"] == 2
    if "logging_dir" not in fields:  # the meaning changes (an environment variable): one notice line
        assert cfg.env == {"TENSORBOARD_LOGGING_DIR": str(tmp_path / "out" / "tb")}
        notices = [r.getMessage() for r in caplog.records if "logging_dir" in r.getMessage()]
        assert len(notices) == 1 and "TENSORBOARD_LOGGING_DIR" in notices[0]
    from tunery.train.artifacts import training_arguments

    assert training_arguments(cfg).get_warmup_steps(100) == 10  # 10% of the steps, either way


@pytest.mark.parametrize("option,expected", [
    ("per_device_train_batch_size=-1", "option 'per_device_train_batch_size' = -1: must be greater than 0"),
    ("gradient_accumulation_steps=0", "must be greater than 0"),
    ("learning_rate=-0.1", "option 'learning_rate' = -0.1: must be 0 or more"),
    ("max_steps=0", "must be -1 (unset) or greater than 0"),
    ("adam_beta2=1.5", "must be at least 0 and below 1"),
    ("warmup_ratio=1.5", "option 'warmup_ratio' = "),
    ("use_ipex=true", "option 'use_ipex' is gone from the installed transformers — remove it"),
    ("tpu_num_cores=8", "option 'tpu_num_cores' is gone from the installed transformers — remove it"),
])
def test_training_argument_values_are_checked(option, expected, tmp_path, capsys):
    code = main(["train", "model_name_or_path=org/model", "dataset=identity", f"output_dir={tmp_path}", option])
    err = capsys.readouterr().err.strip()
    assert code == 2 and one_error_line(err), err
    assert expected in err, err


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


@pytest.mark.parametrize("option", ["gradient_checkpointing", "activation_checkpointing"])
def test_checkpointing_under_either_name(option, tiny_llama3_dir, tmp_path):
    """LLaMA-Factory's gradient_checkpointing and transformers 5.x's activation_checkpointing both turn it on."""
    from tunery.config.hf_args import hf_field_names
    from tunery.model.adapters import prepare_for_training
    from tunery.model.load import load_model, load_tokenizer

    if option not in hf_field_names() and option == "activation_checkpointing":
        pytest.skip("this transformers has no activation_checkpointing")
    cfg = parse_config("train", [f"model_name_or_path={tiny_llama3_dir}", "dataset=identity",
                                 f"output_dir={tmp_path}", f"{option}=true"])
    model = prepare_for_training(load_model(cfg, load_tokenizer(cfg)), cfg).get_base_model()
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
