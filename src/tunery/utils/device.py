"""What the local accelerator can do (imports torch lazily)."""

from __future__ import annotations


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def accelerator_available() -> bool:
    """A CUDA, MPS, XPU, NPU, ... device torch can use (torch.accelerator where torch has it)."""
    import torch

    probe = getattr(torch, "accelerator", None)
    if probe is not None and hasattr(probe, "is_available"):
        return probe.is_available()
    return torch.cuda.is_available() or mps_available()


def mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def bf16_supported() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return False  # transformers' Trainer only does bf16 mixed precision on CUDA/NPU/XPU/MPS here


def fp16_supported() -> bool:
    return cuda_available()


def device_summary() -> list[tuple[str, str]]:
    import torch

    rows = [("CUDA available", str(torch.cuda.is_available()))]
    if torch.cuda.is_available():
        rows.append(("CUDA version", str(torch.version.cuda)))
        for i in range(torch.cuda.device_count()):
            rows.append((f"GPU {i}", torch.cuda.get_device_name(i)))
    rows.append(("MPS available", str(mps_available())))
    return rows
