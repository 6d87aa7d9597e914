"""Several processes through torchrun: the hand-off, a real 2-process DDP run on CPU (gloo) that matches one
process with the same global batch, and the launch-time errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import one_error_line

from tunery.cli import main
from tunery.demo import DATA_DIR
from tunery.launch import torchrun_command, torchrun_plan


def test_no_torchrun_for_one_device():
    assert torchrun_plan({}, devices=0) is None
    assert torchrun_plan({}, devices=1) is None


def test_torchrun_when_asked_or_when_several_gpus():
    plan = torchrun_plan({"FORCE_TORCHRUN": "1"}, devices=0)
    assert plan["nproc_per_node"] == "1" and plan["nnodes"] == "1" and plan["master_addr"] == "127.0.0.1"
    assert int(plan["master_port"]) > 0
    assert torchrun_plan({}, devices=4)["nproc_per_node"] == "4"
    env = {"NPROC_PER_NODE": "8", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    assert torchrun_plan(env, devices=8) == {"nnodes": "2", "node_rank": "1", "nproc_per_node": "8",
                                             "master_addr": "10.0.0.1", "master_port": "29500"}


def test_workers_do_not_relaunch():
    assert torchrun_plan({"FORCE_TORCHRUN": "1", "LOCAL_RANK": "0"}, devices=2) is None


def test_command_uses_torch_distributed_run():
    plan = {"nnodes": "1", "node_rank": "0", "nproc_per_node": "2", "master_addr": "127.0.0.1", "master_port": "1"}
    command = torchrun_command(["cfg.yaml", "max_steps=2"], plan)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[-4:] == ["-m", "tunery.launch", "cfg.yaml", "max_steps=2"]
    assert command[command.index("--nproc_per_node") + 1] == "2"


def test_missing_deepspeed_config_is_one_line(tiny_llama3_dir, tmp_path, capsys):
    code = main(["train", f"model_name_or_path={tiny_llama3_dir}", "dataset=identity", f"dataset_dir={DATA_DIR}",
                 f"output_dir={tmp_path}", "deepspeed=examples/deepspeed/ds_z9_config.json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and one_error_line(err)
    assert "deepspeed config file 'examples/deepspeed/ds_z9_config.json' does not exist" in err


def _argv(model: Path, out: Path, per_device: int) -> list[str]:
    options = {"model_name_or_path": model, "output_dir": out, "dataset": "identity", "dataset_dir": DATA_DIR,
               "template": "llama3", "max_samples": 16, "cutoff_len": 96, "max_steps": 3, "logging_steps": 1,
               "learning_rate": 1e-2, "lora_dropout": 0, "disable_shuffling": "true", "save_strategy": "no",
               "per_device_train_batch_size": per_device, "report_to": "none", "seed": 1}
    return ["train", *(f"{k}={v}" for k, v in options.items())]


def _losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines() if '"loss"' in line]


def test_two_process_ddp_matches_one_process(tiny_llama3_dir, tmp_path):
    """per_device 1 × 2 processes (gloo, CPU) = per_device 2 × 1 process: same losses, same adapter."""
    import torch
    from safetensors.torch import load_file

    ddp, single = tmp_path / "ddp", tmp_path / "single"
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    env.update(FORCE_TORCHRUN="1", NPROC_PER_NODE="2", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run([sys.executable, "-m", "tunery", *_argv(tiny_llama3_dir, ddp, 1)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "through torchrun" in run.stderr

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_argv(tiny_llama3_dir, single, 2)) == 0
    finally:
        torch.set_num_threads(torch_threads)

    ddp_rows, single_rows = _losses(ddp), _losses(single)
    assert [r["current_steps"] for r in ddp_rows] == [1, 2, 3]  # rank 0 alone writes the log: each step once
    for a, b in zip(ddp_rows, single_rows):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["total_tokens"] == b["total_tokens"]  # both ranks' tokens counted: both trained
    left, right = load_file(ddp / "adapter_model.safetensors"), load_file(single / "adapter_model.safetensors")
    for key in left:
        assert torch.allclose(left[key], right[key], rtol=1e-3, atol=1e-5), key
    assert (ddp / "train_results.json").is_file() and (ddp / "tokenizer_config.json").is_file()
