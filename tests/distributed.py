"""Helpers of the multi-process tests (test_ddp.py, test_fsdp.py): a copy of the tiny model whose forward pass records,
per rank, which examples it trains on (the model's own code, loaded by transformers with trust_remote_code — no
Tunery internals touched), a dataset whose records carry their id, and launching `tunery train` the way users do."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

RECORDER = '''
import json, os
import torch
from transformers import LlamaForCausalLM


class RecordingLlamaForCausalLM(LlamaForCausalLM):
    """Appends each training forward's input_ids, whether FSDP shards the layers and, for the first decoder layer's
    MLP down-projection, its full and this rank's local shape to record_dir/rank{RANK}.jsonl."""

    def forward(self, input_ids=None, *args, **kwargs):
        if self.training and torch.is_grad_enabled() and input_ids is not None:
            from torch.distributed.fsdp import FSDPModule
            from torch.distributed.tensor import DTensor

            sharded = any(isinstance(m, FSDPModule) for m in self.modules())
            weight = self.model.layers[0].mlp.down_proj.weight  # held sharded between the layer's forwards
            local = weight.to_local() if isinstance(weight, DTensor) else weight
            path = os.path.join(self.config.record_dir, "rank%s.jsonl" % os.environ.get("RANK", "0"))
            with open(path, "a") as fh:
                fh.write(json.dumps({"input_ids": input_ids.tolist(), "fsdp": sharded,
                                     "shard": [list(weight.shape), list(local.shape)]}) + "\\n")
        return super().forward(input_ids, *args, **kwargs)
'''

N_RECORDS = 16


def recording_model(base: Path, dest: Path) -> Path:
    """A copy of the tiny Llama model at ``dest`` that records its training batches into ``dest/seen``."""
    shutil.copytree(base, dest)
    (dest / "modeling_recorder.py").write_text(RECORDER)
    config = json.loads((dest / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_recorder.RecordingLlamaForCausalLM"}
    config["record_dir"] = str(dest / "seen")
    (dest / "config.json").write_text(json.dumps(config, indent=1))
    (dest / "seen").mkdir()
    return dest


def id_dataset(folder: Path) -> Path:
    """16 alpaca records; record i's instruction carries the marker #iNN#."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ["red", "green", "blue", "cyan", "gold", "gray", "pink", "teal"]
    records = [{"instruction": f"#i{i:02d}# Name a colour.", "input": "",
                "output": " ".join(words[(i + k) % len(words)] for k in range(1 + i % 5))} for i in range(N_RECORDS)]
    (folder / "ids.json").write_text(json.dumps(records))
    (folder / "dataset_info.json").write_text(json.dumps({"ids": {"file_name": "ids.json"}}))
    return folder


def seen_ids(model: Path) -> dict[int, list[list[int]]]:
    """rank -> per training step, the sorted example ids that rank trained on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    out = {}
    for path in sorted((model / "seen").glob("rank*.jsonl")):
        steps = []
        for line in path.read_text().splitlines():
            rows = json.loads(line)["input_ids"]
            text = "".join(tokenizer.decode(row) for row in rows)
            steps.append(sorted(int(m) for m in re.findall(r"#i(\d\d)#", text)))
        out[int(path.stem[4:])] = steps
    return out


def used_fsdp(model: Path) -> set[bool]:
    return {json.loads(line)["fsdp"] for path in (model / "seen").glob("rank*.jsonl")
            for line in path.read_text().splitlines()}


def shard_shapes(model: Path) -> dict[int, set[tuple]]:
    """rank -> the (full shape, local shape) pairs its forwards saw for layers.0.mlp.down_proj.weight."""
    return {int(path.stem[4:]): {tuple(map(tuple, json.loads(line)["shard"])) for line in path.read_text().splitlines()}
            for path in (model / "seen").glob("rank*.jsonl")}


def train_argv(model: Path, data: Path, out: Path, **extra) -> list[str]:
    options = {"model_name_or_path": model, "trust_remote_code": "true", "output_dir": out, "dataset": "ids",
               "dataset_dir": data, "template": "llama3", "cutoff_len": 64, "max_steps": 3, "logging_steps": 1,
               "learning_rate": 1e-2, "lora_rank": 4, "lora_dropout": 0, "disable_shuffling": "true",
               "save_strategy": "no", "per_device_train_batch_size": 2, "report_to": "none", "seed": 1, **extra}
    return ["train", *(f"{k}={v}" for k, v in options.items())]


def launch_env(**extra: str) -> dict[str, str]:
    """This environment without any torchrun leftovers, one thread per process, no GPU, plus ``extra``."""
    drop = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MASTER_PORT", "NNODES", "NODE_RANK")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def tunery(argv: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunery", *map(str, argv)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def two_nodes(argvs: list[list[str]], port: int, timeout: int = 600) -> list[subprocess.CompletedProcess]:
    """Two `tunery train` commands on this machine as the two nodes of one run (NNODES=2, one process each)."""
    procs = []
    for rank, argv in enumerate(argvs):
        env = launch_env(NNODES="2", NODE_RANK=str(rank), NPROC_PER_NODE="1", MASTER_ADDR="127.0.0.1",
                         MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-m", "tunery", *map(str, argv)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def logged(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines() if '"loss"' in line]


def same_weights(a: Path, b: Path, name: str, rtol: float = 1e-3, atol: float = 1e-5) -> None:
    import torch
    from safetensors.torch import load_file

    left, right = load_file(a / name), load_file(b / name)
    assert left.keys() == right.keys()
    for key in left:
        assert torch.allclose(left[key], right[key], rtol=rtol, atol=atol), key
