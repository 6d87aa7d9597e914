"""Run cards, `tunery runs` (list / diff / plot), `tunery train --reproduce`, and `tunery estimate` on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import one_error_line

from tunery.cli import main
from tunery.demo import DATA_DIR
from tunery.runs.card import read_card
from tunery.runs.listing import list_runs
from tunery.train.checkpoints import last_checkpoint


def options(model: Path, out: Path, **extra) -> list[str]:
    values = {"model_name_or_path": model, "output_dir": out, "dataset": "identity", "dataset_dir": DATA_DIR,
              "template": "llama3", "max_samples": 32, "cutoff_len": 64, "per_device_train_batch_size": 2,
              "max_steps": 4, "save_steps": 2, "logging_steps": 1, "learning_rate": 5e-3, "seed": 3,
              "lora_rank": 4, "report_to": "none", **extra}
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="module")
def finished_run(tiny_llama3_dir, tmp_path_factory):
    saves = tmp_path_factory.mktemp("saves")
    config = saves / "run.yaml"
    config.write_text(f"model_name_or_path: {tiny_llama3_dir}\ntemplate: llama3\nlearning_rate: 0.005\n")
    out = saves / "tiny" / "lora" / "a"
    flags = [o for o in options(tiny_llama3_dir, out) if not o.startswith(("template=", "learning_rate="))]
    assert main(["train", str(config), *flags]) == 0
    return saves, out


def test_run_card_records_options_sources_versions_data_and_results(finished_run, tiny_llama3_dir):
    saves, out = finished_run
    card = read_card(str(out))
    assert card["status"] == "finished" and card["stage"] == "sft" and card["finetuning_type"] == "lora"
    opts = card["options"]
    assert opts["template"]["source"].endswith("run.yaml") and opts["learning_rate"]["value"] == 0.005
    assert opts["max_steps"] == {"value": 4, "source": "command line"}
    assert opts["lora_alpha"]["source"] == "default"
    import transformers

    assert card["versions"]["transformers"] == transformers.__version__
    identity = card["datasets"]["identity"]
    import hashlib

    assert identity["sha256"] == hashlib.sha256(Path(DATA_DIR, "identity.json").read_bytes()).hexdigest()
    assert card["data"]["train"]["examples"] == 32 and 0 < card["data"]["train"]["trained_tokens"] < \
        card["data"]["train"]["tokens"]
    assert card["metrics"]["global_step"] == 4 and card["metrics"]["train_loss"] > 0
    assert card["tokenizer_sha256"] and card["ended_at"]
    summary = (out / "RUN.md").read_text()
    assert "finished" in summary and "`max_steps`" in summary and "--reproduce" in summary


def test_runs_list_diff_and_plot(finished_run, tiny_llama3_dir, capsys):
    saves, a = finished_run
    b = saves / "tiny" / "lora" / "b"
    assert main(["train", *options(tiny_llama3_dir, b, learning_rate=1e-3)]) == 0
    capsys.readouterr()
    assert main(["runs", str(saves)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["run", "status"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) >= {"tiny/lora/a", "tiny/lora/b"} and all("finished" in rows[r] for r in rows)
    assert "4/4" in rows["tiny/lora/b"]

    assert main(["runs", "diff", str(a), str(b)]) == 0
    diff = capsys.readouterr().out
    changed = {line.split()[0] for line in diff.splitlines()[3:]}
    assert "learning_rate" in changed and "lora_rank" not in changed

    png = saves / "both.png"
    assert main(["runs", "plot", str(a), str(b), "--output", str(png)]) == 0
    from PIL import Image

    with Image.open(png) as image:
        assert image.size[0] > image.size[1]  # one panel per metric, side by side (loss here)


def test_runs_show_running_then_crashed_with_its_checkpoint(tiny_llama3_dir, tmp_path):
    out = tmp_path / "saves" / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "tunery", "train", *options(tiny_llama3_dir, out, max_steps=400, save_steps=2)]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while process.poll() is None and not last_checkpoint(str(out)) and time.time() < deadline:
            time.sleep(0.05)
        (running,) = list_runs(str(tmp_path / "saves"))
        assert running.status == "running"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    (crashed,) = list_runs(str(tmp_path / "saves"))
    assert crashed.status == "crashed" and crashed.resume_from == last_checkpoint(str(out))
    assert "crashed (resume: checkpoint-" in crashed.row()[1]


def test_reproduce_reruns_the_card_and_says_what_changed(tiny_llama3_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    first = tmp_path / "first"
    assert main(["train", *options(tiny_llama3_dir, first, dataset_dir=data)]) == 0
    capsys.readouterr()
    assert main(["train", "--reproduce", str(first)]) == 0
    again = Path(str(first) + "-reproduce")
    loss = lambda p: json.loads((p / "train_results.json").read_text())["train_loss"]  # noqa: E731
    assert loss(again) == pytest.approx(loss(first), rel=1e-5)
    assert read_card(str(again))["options"]["learning_rate"]["value"] == 5e-3
    assert "reproduce:" not in capsys.readouterr().err  # same versions, same data

    records = json.loads((data / "identity.json").read_text())
    (data / "identity.json").write_text(json.dumps(records[:-1]))
    assert main(["train", "--reproduce", str(first), "--max_steps", "1"]) == 0
    err = capsys.readouterr().err
    assert "dataset identity: its file changed" in err
    assert read_card(str(first) + "-reproduce-2")["options"]["max_steps"]["value"] == 1


def test_reproduce_without_a_card_is_one_line(tmp_path, capsys):
    assert main(["train", "--reproduce", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "run_card.json" in err


def test_estimate_reports_memory_time_and_fit(tiny_llama3_dir, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["estimate", "--format", "json", *options(tiny_llama3_dir, out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["fits"] is True and result["data"]["examples"] == 32 and result["data"]["steps"] == 4
    assert result["model"]["trainable"] < result["model"]["parameters"]
    memory = result["memory"]
    assert memory["peak"] == sum(v for k, v in memory.items() if k != "peak")
    assert memory["activations"] > 0 and result["time"]["step_seconds"] > 0
    assert not out.exists()  # nothing written, no model weights loaded

    full = ["finetuning_type=full", *options(tiny_llama3_dir, out)]
    assert main(["train", "--dry_run", "estimate_device_memory_gb=0.05", *full]) == 0  # an answer, not an error
    report = capsys.readouterr().out
    assert "does NOT fit" in report and "over by" in report and "finetuning_type: lora" in report
    assert not out.exists()


def test_estimate_counts_full_training_state(tiny_llama3_dir, tmp_path, capsys):
    base = options(tiny_llama3_dir, tmp_path / "x", estimate_probe="false")
    assert main(["estimate", "--format", "json", *base]) == 0
    lora = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["estimate", "--format", "json", "finetuning_type=full", *base]) == 0
    full = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    params = full["model"]["parameters"]
    assert full["memory"]["gradients"] == params * 4 and full["memory"]["optimizer states"] == params * 8
    assert lora["memory"]["gradients"] == lora["model"]["trainable"] * 4
    assert full["time"]["step_seconds"] is None  # not probed


@pytest.mark.parametrize("stage, dataset, method", [
    ("dpo", "dpo_en_demo", "full"),  # a separate reference model: randomly initialised for the probe
    ("rm", "dpo_en_demo", "lora"),  # a score head
    ("kto", "kto_en_demo", "lora"),
])
def test_estimate_times_each_stage_with_its_own_trainer(stage, dataset, method, tiny_llama3_dir, shared_datasets,
                                                        tmp_path, capsys):
    out = tmp_path / "never"
    flags = options(tiny_llama3_dir, out, stage=stage, dataset=dataset, dataset_dir=shared_datasets,
                    finetuning_type=method, max_samples=16)
    assert main(["estimate", "--format", "json", *flags]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    probe = result["probe"]
    assert "the stage's Trainer" in result["time"]["method"] and result["time"]["step_seconds"] > 0
    # the trained model's passes saw both answers of each pair (kto: the completion; its KL pair runs without grad)
    rows = 2 if stage in ("dpo", "rm") else 1
    assert probe["step_tokens"] >= rows * 2 * 8, probe  # 2 examples a micro-batch, longer than 8 tokens each
    assert not out.exists()


def test_estimate_does_not_time_generating_stages(tiny_llama3_dir, shared_datasets, tmp_path, capsys):
    flags = options(tiny_llama3_dir, tmp_path / "never", stage="grpo", dataset="alpaca_en_demo",
                    dataset_dir=shared_datasets, reward_funcs="length", max_samples=8)
    assert main(["estimate", "--format", "json", *flags]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["time"]["step_seconds"] is None and "estimate_tflops" in result["time"]["method"]


def test_estimate_of_a_large_model_extrapolates_from_one_and_two_layers(tiny_llama3_dir, tmp_path, capsys,
                                                                          monkeypatch):
    """Above FULL_DEPTH_PROBE_PARAMS the step is timed on 1- and 2-layer copies and extrapolated; they train on the
    same micro-batches the full-depth probe does (same sampler, same examples)."""
    from tunery.estimate import probe

    flags = options(tiny_llama3_dir, tmp_path / "never")
    assert main(["estimate", "--format", "json", *flags]) == 0
    full = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    monkeypatch.setattr(probe, "FULL_DEPTH_PROBE_PARAMS", 0)
    assert main(["estimate", "--format", "json", *flags]) == 0
    layered = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "extrapolated" in layered["time"]["method"] and "full model" in full["time"]["method"]
    assert layered["time"]["step_seconds"] > 0
    assert layered["probe"]["step_tokens"] == full["probe"]["step_tokens"] > 0
