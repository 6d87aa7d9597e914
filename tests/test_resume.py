"""Crash safety: only complete checkpoints count; kill -9 then the same command again gives the same adapter as an
uninterrupted run; Ctrl-C saves a checkpoint and exits cleanly; a checkpoint that does not fit is refused."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import one_error_line

from tunery.cli import main
from tunery.demo import DATA_DIR
from tunery.train.checkpoints import incomplete_reason, is_complete, last_checkpoint

STEPS = 40


def argv(model: Path, out: Path, **extra) -> list[str]:
    options = {"model_name_or_path": model, "output_dir": out, "dataset": "identity", "dataset_dir": DATA_DIR,
               "template": "llama3", "max_samples": 64, "cutoff_len": 96, "per_device_train_batch_size": 2,
               "max_steps": STEPS, "save_steps": 4, "logging_steps": 1, "learning_rate": 5e-3, "seed": 7,
               "lora_rank": 4, "report_to": "none", **extra}
    return ["train", *(f"{k}={v}" for k, v in options.items())]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference(tiny_llama3_dir, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("resume") / "reference"
    assert main(argv(tiny_llama3_dir, out)) == 0
    return out


def assert_same_adapter(a: Path, b: Path) -> None:
    import torch
    from safetensors.torch import load_file

    left, right = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert left.keys() == right.keys()
    for key in left:
        assert torch.allclose(left[key], right[key], rtol=1e-5, atol=1e-7), key


def logged_steps(out: Path) -> list[int]:
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    return [r["current_steps"] for r in rows if "loss" in r]


# -- what counts as complete -----------------------------------------------------------------------------------------
def _fake_checkpoint(root: Path, step: int, state: str | None, weights: bool = True) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if weights:
        (path / "adapter_model.safetensors").write_bytes(b"x")
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


def test_only_complete_checkpoints_count(tmp_path):
    good = _fake_checkpoint(tmp_path, 2, json.dumps({"global_step": 2}))
    assert is_complete(good)
    assert "no trainer_state.json" in incomplete_reason(_fake_checkpoint(tmp_path, 4, None))
    assert "truncated" in incomplete_reason(_fake_checkpoint(tmp_path, 6, '{"global_step": 6, "log_hi'))
    assert "records step 2" in incomplete_reason(_fake_checkpoint(tmp_path, 8, json.dumps({"global_step": 2})))
    assert "no model or adapter" in incomplete_reason(
        _fake_checkpoint(tmp_path, 10, json.dumps({"global_step": 10}), weights=False))
    assert last_checkpoint(str(tmp_path)) == str(good)


# -- kill -9 -----------------------------------------------------------------------------------------------------------
def test_kill_9_then_rerun_gives_the_uninterrupted_result(tiny_llama3_dir, reference, tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "tunery", *argv(tiny_llama3_dir, out)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while process.poll() is None and not last_checkpoint(str(out)) and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0, 0.4))  # at a random moment after the first checkpoint: mid-step or mid-save
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = last_checkpoint(str(out))
    assert killed_at and int(killed_at.rsplit("-", 1)[1]) < STEPS

    assert main(argv(tiny_llama3_dir, out)) == 0  # the same command resumes from the last complete checkpoint
    assert_same_adapter(reference, out)
    assert logged_steps(out) == list(range(1, STEPS + 1))  # each step logged once


# -- Ctrl-C ------------------------------------------------------------------------------------------------------------
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tiny_llama3_dir, reference, tmp_path, capsys):
    out = tmp_path / "interrupted"

    def press_ctrl_c():
        deadline = time.time() + 240
        while not last_checkpoint(str(out)) and time.time() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, lambda *a: None)  # a late signal must not stop the test session
    try:
        watcher = threading.Thread(target=press_ctrl_c, daemon=True)
        watcher.start()
        code = main(argv(tiny_llama3_dir, out))
        watcher.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130, err[-5:]
    assert "training interrupted at step" in err[-1] and "rerun the same command" in err[-1]
    saved = last_checkpoint(str(out))
    assert saved and f"checkpoint-{logged_steps(out)[-1]}" in saved  # saved at the step it stopped, not earlier
    assert not (out / "adapter_model.safetensors").exists()  # no final adapter from an unfinished run

    assert main(argv(tiny_llama3_dir, out)) == 0
    assert_same_adapter(reference, out)


# -- checkpoints that do not fit -------------------------------------------------------------------------------------
def test_incomplete_resume_checkpoint_is_refused(tiny_llama3_dir, tmp_path, capsys):
    broken = _fake_checkpoint(tmp_path / "run", 3, '{"global_st')
    assert main(argv(tiny_llama3_dir, tmp_path / "new", resume_from_checkpoint=broken)) == 2
    err = capsys.readouterr().err.strip()
    assert one_error_line(err) and "not a complete checkpoint" in err and "truncated" in err


def _other_model(tiny_llama3_dir: Path, folder: Path) -> Path:
    """A llama with other dimensions and the same tokenizer (a second base model in a second)."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_llama3_dir)
    config.hidden_size, config.intermediate_size = 32, 64
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    for name in os.listdir(tiny_llama3_dir):
        if name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(tiny_llama3_dir / name, folder / name)
    return folder


def test_checkpoint_of_another_model_or_method_is_refused(tiny_llama3_dir, reference, tmp_path, capsys,
                                                          monkeypatch):
    import tunery.model.load as load

    monkeypatch.setattr(load, "load_model", lambda *a, **k: pytest.fail("loaded the model before the error"))
    cases = {
        "trained with lora_rank 4, not 8": dict(lora_rank=8),
        "holds a LoRA adapter but finetuning_type is full": dict(finetuning_type="full"),
        "was written for another model (hidden_size 64 there, 32 in": dict(
            model_name_or_path=_other_model(tiny_llama3_dir, tmp_path / "other")),
    }
    capsys.readouterr()
    for expected, options in cases.items():
        assert main(argv(tiny_llama3_dir, reference, **dict({"max_steps": STEPS + 4}, **options))) == 2
        err = capsys.readouterr().err.strip()
        assert one_error_line(err) and expected in err, err


def test_shapes_are_checked_after_loading(tiny_llama3_dir, reference, tmp_path):
    """The backstop when config files say nothing: the checkpoint's tensors against the model's."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunery.errors import TuneryError
    from tunery.train.checkpoints import check_fits_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama3_dir),
                           LoraConfig(r=2, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"]))
    with pytest.raises(TuneryError, match="does not fit the model being trained"):
        check_fits_model(str(reference / f"checkpoint-{STEPS}"), model)


def test_crash_before_the_first_checkpoint_starts_over(tiny_llama3_dir, tmp_path):
    out = tmp_path / "early"
    _fake_checkpoint(out, 4, None)  # a save killed half-way
    (out / "trainer_log.jsonl").write_text('{"current_steps": 1, "loss": 9.0}\n')
    assert main(argv(tiny_llama3_dir, out, max_steps=2, save_steps=2)) == 0
    assert not (out / "checkpoint-4").exists() and is_complete(out / "checkpoint-2")
    assert logged_steps(out) == [1, 2]
