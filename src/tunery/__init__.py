"""Tunery: fine-tune large language models (LoRA/SFT/DPO and more), LLaMA-Factory compatible."""

__version__ = "0.1.0"
