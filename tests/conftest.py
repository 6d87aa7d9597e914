"""Shared fixtures: tiny models are built once per test session (a few MB, seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def tiny_llama3_dir(tmp_path_factory) -> Path:
    from tunery.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama3", family="llama3")


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    from tunery.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen", family="qwen")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "dataset_info.json").exists():
        pytest.skip("../shared/datasets not present")
    return SHARED_DATASETS


def make_lora_adapter(base_dir: Path, out_dir: Path, seed: int = 0, rank: int = 4) -> Path:
    """A real PEFT LoRA adapter on `base_dir` with random (non-zero) A and B, saved like a training run's output."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                        target_modules=["q_proj", "v_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, config)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_llama3_lora(tiny_llama3_dir, tmp_path_factory) -> Path:
    """A LoRA adapter for the tiny Llama-3 model (random, so base and tuned answers differ)."""
    return make_lora_adapter(tiny_llama3_dir, tmp_path_factory.mktemp("adapters") / "tiny-llama3-lora")


def one_error_line(err: str) -> bool:
    """A CLI error as users see it: exactly one `error:` line (log lines may precede it) and no traceback."""
    return "Traceback" not in err and sum(line.startswith("error:") for line in err.splitlines()) == 1
