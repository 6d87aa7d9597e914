"""FSDP2 (`fully_shard`): on a CPU machine a one-line error (accelerate shards with FSDP only on GPU-like devices, so
the fsdp options would silently be dropped); with 2+ GPUs a 2-process LoRA run and a full run, each checkpointed and
then resumed from its checkpoint after a simulated crash, ending with the uninterrupted run's weights."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import one_error_line
from distributed import id_dataset, launch_env, logged, recording_model, same_weights, seen_ids, train_argv, tunery, \
    used_fsdp

from tunery.cli import main

# transformers' fsdp options, FSDP2 (torch's fully_shard) wrapping each decoder layer
FSDP_CONFIG = {"fsdp_version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.skipif(_gpus() > 0, reason="a CPU-only machine")
def test_fsdp_on_cpu_is_one_line_before_any_process_starts(tiny_llama3_dir, tmp_path, capsys):
    (tmp_path / "fsdp.json").write_text(json.dumps(FSDP_CONFIG))
    code = main(train_argv(tiny_llama3_dir, id_dataset(tmp_path / "data"), tmp_path / "out", fsdp="full_shard",
                           fsdp_config=tmp_path / "fsdp.json"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and one_error_line(err)
    assert "option 'fsdp' needs GPUs" in err and "drop fsdp" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(_gpus() < 2, reason="FSDP needs 2 GPUs here (accelerate runs FSDP only on GPU-like devices)")
@pytest.mark.parametrize("method", ["lora", "full"])
def test_fsdp2_two_processes_checkpoint_and_resume(method, tiny_llama3_dir, tmp_path):
    data = id_dataset(tmp_path / "data")
    (tmp_path / "fsdp.json").write_text(json.dumps(FSDP_CONFIG))
    extra = {"finetuning_type": method, "fsdp": "full_shard", "fsdp_config": tmp_path / "fsdp.json", "max_steps": 4,
             "save_strategy": "steps", "save_steps": 2, "learning_rate": 1e-2 if method == "lora" else 1e-3}
    env = launch_env(FORCE_TORCHRUN="1", NPROC_PER_NODE="2")
    env.pop("CUDA_VISIBLE_DEVICES")
    weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"

    model = recording_model(tiny_llama3_dir, tmp_path / "m-full-run")
    run = tunery(train_argv(model, data, tmp_path / "run", **extra), env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert used_fsdp(model) == {True}  # the decoder layers were fully_shard-ed in every forward
    ids = seen_ids(model)
    for r0, r1 in zip(ids[0], ids[1]):
        assert len(r0) == len(r1) == 2 and not set(r0) & set(r1)  # data parallel: each rank its own examples
    assert [r["current_steps"] for r in logged(tmp_path / "run")] == [1, 2, 3, 4]
    assert (tmp_path / "run" / "checkpoint-2").is_dir() and (tmp_path / "run" / weights).is_file()

    # A crash right after checkpoint-2: the same command again resumes from it and trains steps 3 and 4.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "run" / "checkpoint-2", resumed / "checkpoint-2")
    model2 = recording_model(tiny_llama3_dir, tmp_path / "m-resumed")
    run = tunery(train_argv(model2, data, resumed, **extra), env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resuming from" in run.stderr
    assert seen_ids(model2) == {rank: steps[2:] for rank, steps in ids.items()}  # only steps 3 and 4, same data
    assert [r["current_steps"] for r in logged(resumed)] == [3, 4]
    for a, b in zip(logged(resumed), logged(tmp_path / "run")[2:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    same_weights(resumed, tmp_path / "run", weights)
