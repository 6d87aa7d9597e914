"""FSDP2 (`fully_shard`) in 2 processes. On CPU (gloo, what CI runs): a LoRA run and a full run through `tunery
train fsdp=full_shard` whose ranks hold half of each sharded weight and train different examples, match one process
with the same global batch, checkpoint, resume from the checkpoint with the same later losses and weights, and save
what a plain 1-process `tunery chat` loads. With 2+ GPUs the same options go through accelerate's FSDP plugin."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import one_error_line
from distributed import (id_dataset, launch_env, logged, recording_model, same_weights, seen_ids, shard_shapes,
                         train_argv, tunery, used_fsdp)

from tunery.cli import main

# transformers' fsdp options, FSDP2 (torch's fully_shard) wrapping each decoder layer
FSDP_CONFIG = {"fsdp_version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}
WEIGHTS = {"lora": "adapter_model.safetensors", "full": "model.safetensors"}


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _extra(method: str, config) -> dict:
    return {"finetuning_type": method, "fsdp": "full_shard", "fsdp_config": config, "max_steps": 4,
            "save_strategy": "steps", "save_steps": 2, "learning_rate": 1e-2 if method == "lora" else 1e-3}


# per device × accumulation: 2 × 1 for the LoRA run, 1 × 2 for the full run (global batch 4 either way)
BATCH = {"lora": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1},
         "full": {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 2}}


cpu_only = pytest.mark.skipif(_gpus() > 0, reason="the CPU route (a GPU machine shards through accelerate)")


# -- CPU: one-line refusals before any process starts ------------------------------------------------------------------
@cpu_only
@pytest.mark.parametrize("extra, message", [
    ({}, "fsdp shards the model across processes and this run has one"),
    ({"fsdp": "hybrid_shard"}, "fsdp 'hybrid_shard' is not available with FSDP2 on CPU"),
    ({"fsdp": "shard_grad_op"}, "fsdp shard_grad_op (reshard_after_forward: false) is not available"),
    ({"stage": "rm"}, "stage rm with fsdp needs GPUs"),
])
def test_cpu_fsdp_refusals_are_one_line(extra, message, tiny_llama3_dir, tmp_path, capsys):
    (tmp_path / "fsdp.json").write_text(json.dumps(FSDP_CONFIG))
    options = {"fsdp": "full_shard", "fsdp_config": tmp_path / "fsdp.json", **extra}
    code = main(train_argv(tiny_llama3_dir, id_dataset(tmp_path / "data"), tmp_path / "out", **options))
    err = capsys.readouterr().err.strip()
    assert code == 2 and one_error_line(err), err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_fsdp_words_fold_into_fsdp_config(tmp_path):
    """fsdp as LLaMA-Factory writes it (a word string, a YAML list as the option keeps it, true) with accelerate's
    fsdp_ prefixed keys."""
    from types import SimpleNamespace

    from tunery.train.cpu_fsdp import fsdp_options

    (tmp_path / "fsdp.json").write_text(json.dumps({"fsdp_version": 2, "fsdp_offload_params": False}))
    for value, reshard, offload in (("full_shard auto_wrap", True, None), ('["shard_grad_op", "offload"]', False, True),
                                    ("true", None, None)):
        options = fsdp_options(SimpleNamespace(fsdp=value, fsdp_config=str(tmp_path / "fsdp.json"), where="test"))
        assert options.get("reshard_after_forward") == reshard and options.get("cpu_offload") == offload, value
        assert options["version"] == 2 and options["offload_params"] is False


# -- CPU: real 2-process runs ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["lora", "full"])
def cpu_runs(request, tiny_llama3_dir, tmp_path_factory):
    """4 steps, global batch 4: FSDP2 over 2 processes × 2 (checkpoint at step 2), the same from checkpoint-2 after a
    simulated crash, and 1 process × 4 without fsdp."""
    import torch

    if _gpus() > 0:
        pytest.skip("the CPU route")
    method = request.param
    root = tmp_path_factory.mktemp(f"fsdp-{method}")
    data = id_dataset(root / "data")
    (root / "fsdp.json").write_text(json.dumps(FSDP_CONFIG))
    extra = {**_extra(method, root / "fsdp.json"), **BATCH[method]}
    env = launch_env(FORCE_TORCHRUN="1", NPROC_PER_NODE="2")
    models = {name: recording_model(tiny_llama3_dir, root / f"m-{name}") for name in ("fsdp", "resumed", "single")}

    run = tunery(train_argv(models["fsdp"], data, root / "fsdp", **extra), env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "FSDP2 on CPU: fully_shard over 2 processes" in run.stderr

    (root / "resumed").mkdir()  # a crash right after checkpoint-2: the same command again resumes from it
    shutil.copytree(root / "fsdp" / "checkpoint-2", root / "resumed" / "checkpoint-2")
    resumed = tunery(train_argv(models["resumed"], data, root / "resumed", **extra), env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    single = {k: v for k, v in extra.items() if not k.startswith("fsdp")}
    single.update(per_device_train_batch_size=4, gradient_accumulation_steps=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(train_argv(models["single"], data, root / "single", **single)) == 0
    finally:
        torch.set_num_threads(threads)
    return {"method": method, "root": root, "models": models, "resumed_stderr": resumed.stderr,
            "weights": WEIGHTS[method], "tiny": tiny_llama3_dir}


def test_cpu_fsdp_shards_the_weights(cpu_runs):
    models = cpu_runs["models"]
    assert used_fsdp(models["fsdp"]) == {True} and used_fsdp(models["single"]) == {False}
    # layers.0.mlp.down_proj.weight is 64 × 128: each rank holds its own 32 rows (a DTensor shard) in every step
    assert shard_shapes(models["fsdp"]) == {0: {((64, 128), (32, 128))}, 1: {((64, 128), (32, 128))}}
    assert shard_shapes(models["single"]) == {0: {((64, 128), (64, 128))}}


def _per_step(ids: dict[int, list[list[int]]], forwards: int) -> dict[int, list[list[int]]]:
    """rank -> per optimizer step, the examples of its ``forwards`` accumulated forward passes."""
    return {rank: [sorted(sum(steps[i:i + forwards], [])) for i in range(0, len(steps), forwards)]
            for rank, steps in ids.items()}


def test_cpu_fsdp_ranks_train_different_examples(cpu_runs):
    forwards = BATCH[cpu_runs["method"]]["gradient_accumulation_steps"]
    raw = seen_ids(cpu_runs["models"]["fsdp"])
    assert len(raw[0]) == len(raw[1]) == 4 * forwards  # 4 steps of `forwards` accumulated micro-batches each
    fsdp, single = _per_step(raw, forwards), seen_ids(cpu_runs["models"]["single"])
    assert sorted(fsdp) == [0, 1] and len(fsdp[0]) == len(fsdp[1]) == len(single[0]) == 4
    for step, (r0, r1, one) in enumerate(zip(fsdp[0], fsdp[1], single[0])):
        assert len(r0) == len(r1) == 2 and len(one) == 4, step
        assert not set(r0) & set(r1), step  # each rank its own examples
        assert sorted(r0 + r1) == one, step  # together the 1-process run's batch
    assert sorted(i for steps in fsdp.values() for ids in steps for i in ids) == list(range(16))


def test_cpu_fsdp_equals_one_process_with_the_same_global_batch(cpu_runs):
    root = cpu_runs["root"]
    rows, single_rows = logged(root / "fsdp"), logged(root / "single")
    assert [r["current_steps"] for r in rows] == [1, 2, 3, 4]  # rank 0 alone writes the log: each step once
    for a, b in zip(rows, single_rows, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["total_tokens"] == b["total_tokens"]
    same_weights(root / "fsdp", root / "single", cpu_runs["weights"])
    assert json.loads((root / "fsdp" / "train_results.json").read_text())["epoch"] == pytest.approx(1.0)
    assert (root / "fsdp" / "tokenizer_config.json").is_file() and (root / "fsdp" / "run_card.json").is_file()


def test_cpu_fsdp_checkpoint_resumes_with_the_same_losses(cpu_runs):
    root, models = cpu_runs["root"], cpu_runs["models"]
    checkpoint = root / "fsdp" / "checkpoint-2"
    assert sorted(p.name for p in (checkpoint / "optimizer_fsdp").glob("*.distcp")) == ["__0_0.distcp",
                                                                                        "__1_0.distcp"]
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert (checkpoint / "scheduler.pt").is_file() and (checkpoint / cpu_runs["weights"]).is_file()
    assert "resuming from" in cpu_runs["resumed_stderr"]
    ids = seen_ids(models["fsdp"])
    skip = 2 * BATCH[cpu_runs["method"]]["gradient_accumulation_steps"]  # the forwards of steps 1 and 2
    assert seen_ids(models["resumed"]) == {rank: steps[skip:] for rank, steps in ids.items()}  # steps 3 and 4 only
    resumed, uninterrupted = logged(root / "resumed"), logged(root / "fsdp")
    assert [r["current_steps"] for r in resumed] == [3, 4]
    for a, b in zip(resumed, uninterrupted[2:], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)  # the optimizer's moments came back too
    same_weights(root / "resumed", root / "fsdp", cpu_runs["weights"], rtol=1e-5, atol=1e-7)


def test_cpu_fsdp_result_loads_in_one_process_chat(cpu_runs):
    out = cpu_runs["root"] / "fsdp"
    if cpu_runs["method"] == "lora":
        model = ["--adapter_name_or_path", str(out), "--model_name_or_path", str(cpu_runs["tiny"])]
    else:
        # The saved full weights in the plain tiny model's folder (the recording copy's remote code is a test device:
        # transformers saves a fully_shard-ed remote-code model with torch's FSDP files as its code).
        plain = shutil.copytree(cpu_runs["tiny"], cpu_runs["root"] / "plain")
        shutil.copy(out / "model.safetensors", plain / "model.safetensors")
        model = ["--model_name_or_path", str(plain)]
    cmd = [sys.executable, "-m", "tunery", "chat", *model, "--template", "llama3", "--do_sample", "false",
           "--max_new_tokens", "4"]
    proc = subprocess.run(cmd, input="Name a colour.\nexit\n", capture_output=True, text=True, timeout=300,
                          env={**launch_env(), "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() and "Traceback" not in proc.stderr


# -- GPU: accelerate's FSDP plugin -----------------------------------------------------------------------------------
@pytest.mark.skipif(_gpus() < 2, reason="needs 2 GPUs (accelerate runs FSDP only on GPU-like devices)")
@pytest.mark.parametrize("method", ["lora", "full"])
def test_fsdp2_two_gpus_checkpoint_and_resume(method, tiny_llama3_dir, tmp_path):
    data = id_dataset(tmp_path / "data")
    (tmp_path / "fsdp.json").write_text(json.dumps(FSDP_CONFIG))
    extra = _extra(method, tmp_path / "fsdp.json")
    env = launch_env(FORCE_TORCHRUN="1", NPROC_PER_NODE="2")
    env.pop("CUDA_VISIBLE_DEVICES")
    weights = WEIGHTS[method]

    model = recording_model(tiny_llama3_dir, tmp_path / "m-full-run")
    run = tunery(train_argv(model, data, tmp_path / "run", **extra), env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert used_fsdp(model) == {True}  # the decoder layers were fully_shard-ed in every forward
    ids = seen_ids(model)
    for r0, r1 in zip(ids[0], ids[1]):
        assert len(r0) == len(r1) == 2 and not set(r0) & set(r1)  # data parallel: each rank its own examples
    assert [r["current_steps"] for r in logged(tmp_path / "run")] == [1, 2, 3, 4]
    assert (tmp_path / "run" / "checkpoint-2").is_dir() and (tmp_path / "run" / weights).is_file()

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
