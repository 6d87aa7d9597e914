"""`tunery env`: the tutorial's "verify the environment" step in one command."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers", "safetensors",
            "gradio", "fastapi", "vllm", "bitsandbytes", "deepspeed", "liger-kernel", "flash-attn")


def collect() -> list[tuple[str, str]]:
    from tunery import __version__
    from tunery.utils.device import device_summary

    rows = [("tunery", __version__), ("Platform", platform.platform()), ("Python", platform.python_version())]
    for pkg in PACKAGES:
        try:
            rows.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            if pkg in PACKAGES[:8]:
                rows.append((pkg, "not installed"))
    rows.extend(device_summary())
    return rows


def print_env() -> None:
    rows = collect()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"- {key.ljust(width)}  {value}")
