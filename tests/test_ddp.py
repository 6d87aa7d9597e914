"""Several processes through torchrun: the hand-off, a real 2-process DDP run on CPU (gloo) whose ranks train different
examples and match one process with the same global batch, two nodes on one machine, ranks that disagree, and the
launch-time errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from conftest import free_port, one_error_line
from distributed import (id_dataset, launch_env, logged, recording_model, same_weights, seen_ids, train_argv, tunery,
                         two_nodes)

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
    assert command[:3] == [sys.executable, "-m", "tunery.torchrun"]  # torch.distributed.run with Tunery's exit codes
    assert command[-4:] == ["-m", "tunery.launch", "cfg.yaml", "max_steps=2"]
    assert command[command.index("--nproc_per_node") + 1] == "2"


def test_missing_deepspeed_config_is_one_line(tiny_llama3_dir, tmp_path, capsys):
    code = main(["train", f"model_name_or_path={tiny_llama3_dir}", "dataset=identity", f"dataset_dir={DATA_DIR}",
                 f"output_dir={tmp_path}", "deepspeed=examples/deepspeed/ds_z9_config.json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and one_error_line(err)
    assert "deepspeed config file 'examples/deepspeed/ds_z9_config.json' does not exist" in err


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed")
def test_deepspeed_config_without_deepspeed_is_one_line(tiny_llama3_dir, tmp_path, capsys):
    code = main(["train", f"model_name_or_path={tiny_llama3_dir}", "dataset=identity", f"dataset_dir={DATA_DIR}",
                 f"output_dir={tmp_path / 'out'}", "deepspeed=examples/deepspeed/ds_z2_config.json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and one_error_line(err)
    assert "needs the deepspeed package — pip install 'tunery[deepspeed]'" in err
    assert not (tmp_path / "out").exists()


# -- real runs: 2 processes on CPU (gloo) ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tiny_llama3_dir, tmp_path_factory):
    """The same 3 steps, global batch 4: 2 processes × 2 (`tunery train` with NPROC_PER_NODE=2) and 1 process × 4."""
    import torch

    root = tmp_path_factory.mktemp("ddp")
    data = id_dataset(root / "data")
    ddp_model, single_model = recording_model(tiny_llama3_dir, root / "m-ddp"), recording_model(tiny_llama3_dir,
                                                                                                root / "m-single")
    run = tunery(train_argv(ddp_model, data, root / "ddp"), launch_env(FORCE_TORCHRUN="1", NPROC_PER_NODE="2"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "starting 2 process(es) on node 0 of 1 through torchrun" in run.stderr
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(train_argv(single_model, data, root / "single", per_device_train_batch_size=4)) == 0
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "data": data, "ddp": root / "ddp", "single": root / "single", "ddp_model": ddp_model,
            "single_model": single_model, "tiny": tiny_llama3_dir}


def test_ddp_ranks_train_different_examples(runs):
    ddp, single = seen_ids(runs["ddp_model"]), seen_ids(runs["single_model"])
    assert sorted(ddp) == [0, 1] and sorted(single) == [0]
    assert len(ddp[0]) == len(ddp[1]) == len(single[0]) == 3  # 3 steps in every process
    for step, (r0, r1, one) in enumerate(zip(ddp[0], ddp[1], single[0])):
        assert len(r0) == len(r1) == 2 and len(one) == 4, step  # 2 per device, global batch 2 × 2 = 4
        assert not set(r0) & set(r1), step  # each rank its own examples
        assert sorted(r0 + r1) == one, step  # together the 1-process run's batch
    seen = sorted(i for steps in ddp.values() for ids in steps for i in ids)
    assert seen == list(range(12))  # 12 different examples in 3 steps: nothing trained twice


def test_ddp_equals_one_process_with_the_same_global_batch(runs):
    ddp_rows, single_rows = logged(runs["ddp"]), logged(runs["single"])
    assert [r["current_steps"] for r in ddp_rows] == [1, 2, 3]  # rank 0 alone writes the log: each step once
    for a, b in zip(ddp_rows, single_rows):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["total_tokens"] == b["total_tokens"]  # both ranks' tokens counted
    same_weights(runs["ddp"], runs["single"], "adapter_model.safetensors")
    results = json.loads((runs["ddp"] / "train_results.json").read_text())
    assert results["epoch"] == pytest.approx(0.75)  # 12 of the 16 examples: the epoch counts both ranks' share
    assert (runs["ddp"] / "tokenizer_config.json").is_file()


def test_two_nodes_equal_two_processes_on_one_node(runs):
    """NNODES=2, NODE_RANK=0/1, MASTER_ADDR=127.0.0.1: two `tunery train` commands, one process each."""
    model = recording_model(runs["tiny"], runs["root"] / "m-nodes")
    argv = train_argv(model, runs["data"], runs["root"] / "nodes")
    node0, node1 = two_nodes([argv, argv], port=free_port())
    assert node0.returncode == 0, node0.stderr[-3000:]
    assert node1.returncode == 0, node1.stderr[-3000:]
    assert "on node 0 of 2" in node0.stderr and "on node 1 of 2" in node1.stderr
    assert seen_ids(model) == seen_ids(runs["ddp_model"])  # node 0 = rank 0, node 1 = rank 1
    rows, ddp_rows = logged(runs["root"] / "nodes"), logged(runs["ddp"])
    assert [r["current_steps"] for r in rows] == [1, 2, 3]
    for a, b in zip(rows, ddp_rows):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    same_weights(runs["root"] / "nodes", runs["ddp"], "adapter_model.safetensors", rtol=1e-5, atol=1e-7)


def test_ranks_that_disagree_stop_before_writing(runs):
    """Two nodes given different options: one line from rank 0, both stop, output_dir untouched."""
    out = runs["root"] / "disagree"
    argv = train_argv(recording_model(runs["tiny"], runs["root"] / "m-disagree"), runs["data"], out)
    node0, node1 = two_nodes([argv, [*argv, "learning_rate=0.02"]], port=free_port())
    assert node0.returncode == 2 and node1.returncode == 2
    assert "Traceback" not in node0.stderr + node1.stderr  # no torchrun report on top of the explanation
    errors = [line for line in (node0.stderr + node1.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, node0.stderr[-2000:] + node1.stderr[-2000:]
    assert "learning_rate (0.01 on rank 0, 0.02 on rank 1)" in errors[0]
    assert not out.exists() or not any(out.iterdir())


def test_disagreeing_data_is_named():
    from tunery.train.ranks import data_digest, disagreement

    same = {"options": {"lr": 1}, "train": data_digest([{"input_ids": [1, 2]}]), "train_examples": 1,
            "eval": data_digest(None)}
    other = dict(same, train=data_digest([{"input_ids": [1, 3]}]))
    assert disagreement([same, dict(same)]) is None
    assert "different training data" in disagreement([same, other])
    assert data_digest([{"input_ids": [1, 2]}]) != data_digest([{"input_ids": [2, 1]}])
