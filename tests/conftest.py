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


@pytest.fixture(scope="module")
def one_thread():
    """Two cores shared by several test runs: one torch thread is many times faster than two fighting ones.
    A module that trains takes it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


# ---------------------------------------------------------------- servers and the headless browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason=f"{CHROMIUM} is not installed (apt-get install chromium)")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_gradio(demo) -> str:
    """Serve a Gradio app on a free local port, without blocking; returns its URL."""
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, inbrowser=False,
                        quiet=True, **getattr(demo, "launch_kwargs", {}))
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium through Playwright (test modules importorskip playwright first)."""
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
