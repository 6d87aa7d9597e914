"""Tunery: fine-tune large language models (LoRA/SFT/DPO and more), LLaMA-Factory compatible."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from tunery import ChatModel` without importing torch on `import tunery`."""
    if name == "ChatModel":
        from tunery.chat.model import ChatModel

        return ChatModel
    raise AttributeError(f"module 'tunery' has no attribute {name!r}")
