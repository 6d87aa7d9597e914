"""Every stage × method example in examples/ trains a few steps on the tiny model and leaves its artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunery.cli import main
from tunery.demo import DATA_DIR

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# Stage × method examples that run on a CPU (qlora, deepspeed and fsdp need CUDA: checked in test_train_methods).
CPU_EXAMPLES = sorted(
    [p for p in EXAMPLES.glob("train_*/*.yaml") if "qlora" not in str(p) and "_ds" not in p.name
     and "fsdp" not in p.name and "predict" not in p.name] + [EXAMPLES / "llama3_lora_sft.yaml"]
)
FAST = {"max_steps": 2, "max_samples": 16, "cutoff_len": 128, "val_size": 0, "eval_strategy": "no",
        "logging_steps": 1, "save_steps": 2, "plot_loss": "false", "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1, "max_new_tokens": 8, "report_to": "none", "overwrite_output_dir": "true"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_example(tiny_llama3_dir, shared_datasets, tmp_path_factory):
    """Train one example (memoised: ppo reuses the reward models) and return its output_dir."""
    done: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("examples")

    def run(name: str, **extra) -> Path:
        if name in done:
            return done[name]
        path = next(p for p in CPU_EXAMPLES if p.name == name)
        spec = yaml.safe_load(path.read_text())
        out = root / path.stem
        overrides = dict(FAST, model_name_or_path=tiny_llama3_dir, output_dir=out,
                         dataset_dir=shared_datasets if "shared" in spec["dataset_dir"] else DATA_DIR, **extra)
        if spec["stage"] == "ppo":  # the reward model the matching *_reward.yaml trains
            overrides["reward_model"] = run(name.replace("_ppo", "_reward"))
        if spec["stage"] == "grpo":  # groups that fit FAST's batch of 2
            overrides.update(num_generations=2, max_completion_length=8)
        assert main(["train", str(path), *(f"{k}={v}" for k, v in overrides.items())]) == 0
        done[name] = out
        return out

    return run


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


STAGE_METRICS = {"rm": {"accuracy", "rewards/chosen", "rewards/rejected"},
                 "dpo": {"rewards/accuracies", "rewards/chosen", "rewards/margins", "logps/chosen"},
                 "kto": {"kl", "rewards/chosen", "rewards/rejected"}, "ppo": {"reward", "kl", "value_loss"},
                 "grpo": {"reward", "reward_std", "completions/mean_length", "clip_ratio/region_mean"}}


@pytest.mark.parametrize("example", CPU_EXAMPLES, ids=lambda p: p.stem)
def test_example_trains_and_saves(example: Path, run_example):
    spec = yaml.safe_load(example.read_text())
    stage, method = spec["stage"], spec["finetuning_type"]
    out = run_example(example.name)
    names = {p.name for p in out.iterdir()}
    assert {"trainer_log.jsonl", "train_results.json", "trainer_state.json", "tokenizer_config.json"} <= names
    if method == "lora":
        assert {"adapter_config.json", "adapter_model.safetensors"} <= names
        assert "model.safetensors" not in names
    else:
        assert {"config.json", "model.safetensors"} <= names
    rows = [r for r in _log(out) if "loss" in r]
    assert [r["current_steps"] for r in rows] == [1, 2]
    assert all(r["loss"] == r["loss"] for r in rows)  # not NaN
    seen = set().union(*rows)
    assert {"total_tokens", "throughput"} <= seen
    assert STAGE_METRICS.get(stage, set()) <= seen, seen
    if stage == "ppo":
        assert "value_head.safetensors" in names
    if stage == "grpo":
        assert "completions.jsonl" in names
    if stage == "rm" and method != "lora":
        config = json.loads((out / "config.json").read_text())
        assert config["architectures"][0].endswith("ForSequenceClassification")
    if stage != "ppo":
        assert "checkpoint-2" in names


def test_freeze_trains_only_the_last_layer(run_example, tiny_llama3_dir):
    """The freeze example (freeze_trainable_layers: 1) changed layer 1 and left layer 0 and the embeddings alone."""
    import torch
    from safetensors.torch import load_file

    out = run_example("llama3_freeze_sft.yaml")
    before, after = load_file(tiny_llama3_dir / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".layers.1." in k for k in changed)


def test_reward_model_ranks_with_its_score_head(run_example, tiny_llama3_dir):
    """The LoRA reward model is a plain PEFT sequence-classification adapter (with its trained score head)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    out = run_example("llama3_lora_reward.yaml")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_llama3_dir, num_labels=1)
    model = PeftModel.from_pretrained(base, out)
    assert any("score" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        scores = model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert scores.shape == (1, 1)


def test_plots_for_every_logged_metric(run_example, shared_datasets, tiny_llama3_dir, tmp_path):
    out = tmp_path / "dpo"
    argv = ["train", str(EXAMPLES / "train_lora" / "llama3_lora_dpo.yaml"),
            *(f"{k}={v}" for k, v in dict(FAST, model_name_or_path=tiny_llama3_dir, output_dir=out,
                                          dataset_dir=shared_datasets, plot_loss="true", val_size=4,
                                          eval_strategy="steps", eval_steps=2).items())]
    assert main(argv) == 0
    for name in ("training_loss.png", "training_eval_loss.png", "training_rewards_accuracies.png",
                 "training_rewards_chosen.png", "training_eval_rewards_accuracies.png"):
        assert (out / name).is_file(), name
    assert any("eval_rewards/accuracies" in r for r in _log(out))


GPU_EXAMPLES = sorted(set(EXAMPLES.glob("train_*/*.yaml")) - set(CPU_EXAMPLES) - {
    EXAMPLES / "train_lora" / "llama3_lora_predict.yaml"})


@pytest.mark.parametrize("example", GPU_EXAMPLES, ids=lambda p: p.stem)
def test_gpu_examples_use_only_known_options(example: Path, tiny_llama3_dir, tmp_path):
    """QLoRA, DeepSpeed and FSDP examples need CUDA: here they must get as far as the GPU check."""
    from tunery.config import parse_config
    from tunery.errors import ConfigError

    argv = [str(example), f"model_name_or_path={tiny_llama3_dir}", f"dataset_dir={DATA_DIR}",
            f"output_dir={tmp_path}"]
    try:
        parse_config("train", argv)
    except ConfigError as err:
        assert "unknown option" not in str(err)
        assert any(word in str(err) for word in ("GPU", "CUDA", "deepspeed")), err
