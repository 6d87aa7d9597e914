"""The tutorial's journey end to end: `tunery train` (LLaMA-Factory's command line) → artifacts → `tunery chat`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunery.cli import main
from tunery.demo import DATA_DIR

TRAIN_FIELDS = {"epoch", "total_flos", "train_loss", "train_runtime", "train_samples_per_second",
                "train_steps_per_second"}
LOG_FIELDS = {"current_steps", "total_steps", "loss", "lr", "epoch", "percentage", "elapsed_time", "remaining_time"}


@pytest.fixture(scope="module")
def tutorial_run(tiny_llama3_dir, tmp_path_factory):
    """The tutorial's exact flags (tiny model, bundled data), with max_steps to keep it short."""
    out = tmp_path_factory.mktemp("saves") / "llama3" / "lora" / "sft"
    argv = [
        "train",
        "--stage", "sft", "--do_train",
        "--model_name_or_path", str(tiny_llama3_dir),
        "--dataset", "identity,adgen_local", "--dataset_dir", str(DATA_DIR),
        "--template", "llama3", "--finetuning_type", "lora",
        "--output_dir", str(out), "--overwrite_cache", "--overwrite_output_dir",
        "--cutoff_len", "1024", "--preprocessing_num_workers", "16",
        "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "1", "--gradient_accumulation_steps", "8",
        "--lr_scheduler_type", "cosine", "--logging_steps", "1", "--warmup_steps", "2", "--save_steps", "4",
        "--eval_steps", "4",
        "--eval_strategy", "steps", "--save_strategy", "steps", "--load_best_model_at_end",
        "--learning_rate", "5e-3", "--num_train_epochs", "5.0", "--max_samples", "1000", "--val_size", "0.1",
        "--plot_loss",
        "--max_steps", "8", "--seed", "0",
    ]
    assert main(argv) == 0
    return out


def test_artifacts_present_with_their_fields(tutorial_run: Path):
    out = tutorial_run
    for name in ("adapter_config.json", "adapter_model.safetensors", "trainer_log.jsonl", "train_results.json",
                 "all_results.json", "trainer_state.json", "chat_template.jinja", "tokenizer_config.json",
                 "training_loss.png", "training_eval_loss.png", "checkpoint-4", "checkpoint-8"):
        assert (out / name).exists(), name
    train_results = json.loads((out / "train_results.json").read_text())
    assert TRAIN_FIELDS <= set(train_results)
    assert TRAIN_FIELDS <= set(json.loads((out / "all_results.json").read_text()))
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    loss_rows = [r for r in rows if "loss" in r]
    assert len(loss_rows) == 8
    for row in loss_rows:
        assert LOG_FIELDS <= set(row), row
        assert row["total_steps"] == 8
    assert loss_rows[-1]["percentage"] == 100.0
    assert any("eval_loss" in r for r in rows)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 8


def test_loss_went_down(tutorial_run: Path):
    rows = [json.loads(line) for line in (tutorial_run / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_plain_peft_loads_the_adapter(tutorial_run: Path, tiny_llama3_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama3_dir)
    model = PeftModel.from_pretrained(base, tutorial_run)
    lora = [n for n, _ in model.named_parameters() if "lora_B" in n]
    assert lora, "no LoRA weights"
    # `lora_target: all` = every linear layer but the output head
    targets = set(json.loads((tutorial_run / "adapter_config.json").read_text())["target_modules"])
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} == targets
    trained = dict(model.named_parameters())[lora[0]]
    assert torch.count_nonzero(trained) > 0  # B starts at zero; training moved it


def test_chat_with_adapter_answers_piped_questions(tutorial_run: Path, tiny_llama3_dir):
    cmd = [sys.executable, "-m", "tunery", "chat", "--model_name_or_path", str(tiny_llama3_dir),
           "--adapter_name_or_path", str(tutorial_run), "--template", "llama3", "--finetuning_type", "lora",
           "--do_sample", "false", "--max_new_tokens", "12"]
    proc = subprocess.run(cmd, input="Who are you?\nclear\n你是谁\nexit\nnot reached\n", capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr
    replies = [line for line in proc.stdout.splitlines() if line.startswith("Assistant: ")]
    assert len(replies) == 2 and all(len(r) > len("Assistant: ") for r in replies)
    assert "History has been removed." in proc.stdout


def test_resume_needs_no_flag_and_overwrite_is_explicit(tutorial_run: Path, tiny_llama3_dir, capsys):
    # The same output_dir without --overwrite_output_dir is accepted because it holds checkpoints to resume from.
    from tunery.config import parse_config

    cfg = parse_config("train", ["--model_name_or_path", str(tiny_llama3_dir), "--dataset", "identity",
                                 "--dataset_dir", str(DATA_DIR), "--output_dir", str(tutorial_run)])
    from tunery.train.checkpoints import last_checkpoint

    assert last_checkpoint(cfg.output_dir).endswith("checkpoint-8")
