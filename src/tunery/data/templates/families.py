"""The template table: one declaration per family, slots copied from LLaMA-Factory 0.9.x ``register_template`` calls.

A slot is a string or a tuple of strings (``{{content}}``/``{{idx}}`` placeholders), :data:`BOS`/:data:`EOS` (the
tokenizer's own tokens) and ``Token("...")`` (one token by its text). Unset slots take LLaMA-Factory's defaults:
assistant = content + eos (content only with ``efficient_eos``), system = content, function = assistant,
observation = user.
"""

from __future__ import annotations

from .template import BOS, EOS, Template, Token

# ---------------------------------------------------------------- shared slot sets
_CHATML = {
    "user": "<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n",
    "assistant": "{{content}}<|im_end|>\n",
    "system": "<|im_start|>system\n{{content}}<|im_end|>\n",
}
_CHATML_TOOL = dict(_CHATML, observation="<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n")
_QWEN = dict(
    _CHATML,
    function="{{content}}<|im_end|>\n",
    observation="<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
    tool_format="qwen",
    stop_words=("<|im_end|>",),
    replace_eos=True,
)
_LLAMA3 = {
    "user": "<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "assistant": "{{content}}<|eot_id|>",
    "system": "<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>",
    "function": "{{content}}<|eot_id|>",
    "observation": "<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "tool_format": "llama3",
    "prefix": BOS,
    "stop_words": ("<|eot_id|>", "<|eom_id|>"),
    "replace_eos": True,
    "special_texts": (("bos_token", "<|begin_of_text|>"),),
}
_GEMMA = {
    "user": "<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n",
    "assistant": "{{content}}<end_of_turn>\n",
    "system": "{{content}}\n\n",
    "observation": "<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n",
    "prefix": BOS,
    "stop_words": ("<end_of_turn>",),
    "replace_eos": True,
    "system_in_user": True,
    "special_texts": (("bos_token", "<bos>"),),
}
_GLM4 = {
    "user": "<|user|>\n{{content}}<|assistant|>",
    "assistant": "\n{{content}}",
    "system": "<|system|>\n{{content}}",
    "function": "{{content}}",
    "observation": "<|observation|>\n{{content}}<|assistant|>",
    "tool_format": "glm4",
    "prefix": "[gMASK]<sop>",
    "stop_words": ("<|user|>", "<|observation|>"),
    "efficient_eos": True,
}
_MISTRAL = {
    "user": "[INST] {{content}}[/INST]",
    "assistant": (" {{content}}", EOS),
    "system": "{{content}}\n\n",
    "function": ("[TOOL_CALLS] {{content}}", EOS),
    "observation": '[TOOL_RESULTS] {"content": {{content}}}[/TOOL_RESULTS]',
    "tool_format": "mistral",
    "prefix": BOS,
    "system_in_user": True,
    "special_texts": (("bos_token", "<s>"), ("eos_token", "</s>")),
}
_PHI = {
    "user": "<|user|>\n{{content}}<|end|>\n<|assistant|>\n",
    "assistant": "{{content}}<|end|>\n",
    "system": "<|system|>\n{{content}}<|end|>\n",
    "stop_words": ("<|end|>",),
    "replace_eos": True,
}
_LLAMA2 = {
    "user": (BOS, "[INST] {{content}} [/INST]"),
    "system": "<<SYS>>\n{{content}}\n<</SYS>>\n\n",
    "system_in_user": True,
    "special_texts": (("bos_token", "<s>"), ("eos_token", "</s>")),
}
_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# ---------------------------------------------------------------- the table
_FAMILIES: dict[str, dict] = {
    "alpaca": {
        "user": "### Instruction:\n{{content}}\n\n### Response:\n",
        "assistant": ("{{content}}", EOS, "\n\n"),
        "default_system": "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n",
        "replace_jinja_template": True,
    },
    "baichuan2": {"user": "<reserved_106>{{content}}<reserved_107>", "efficient_eos": True},
    "chatglm3": {
        "user": (Token("<|user|>"), "\n", "{{content}}", Token("<|assistant|>")),
        "assistant": ("\n", "{{content}}"),
        "system": (Token("<|system|>"), "\n", "{{content}}"),
        "function": "{{content}}",
        "observation": (Token("<|observation|>"), "\n", "{{content}}", Token("<|assistant|>")),
        "tool_format": "glm4",
        "prefix": (Token("[gMASK]"), Token("sop")),
        "stop_words": ("<|user|>", "<|observation|>"),
        "efficient_eos": True,
    },
    "chatml": dict(_CHATML_TOOL, stop_words=("<|im_end|>", "<|im_start|>"), replace_eos=True,
                   replace_jinja_template=True),
    "deepseek": {"user": "User: {{content}}\n\nAssistant:", "system": "{{content}}\n\n", "prefix": BOS},
    "deepseek3": {"user": "<｜User｜>{{content}}<｜Assistant｜>", "prefix": BOS},
    "default": {
        "user": ("Human: {{content}}", EOS, "\nAssistant:"),
        "assistant": ("{{content}}", EOS, "\n"),
        "system": ("System: {{content}}", EOS, "\n"),
        "replace_jinja_template": True,
    },
    "empty": {"assistant": "{{content}}"},
    "falcon": {"user": "User: {{content}}\nFalcon:", "assistant": "{{content}}\n", "efficient_eos": True},
    "fewshot": {"assistant": "{{content}}\n\n", "efficient_eos": True, "replace_jinja_template": True},
    "gemma": _GEMMA,
    "gemma2": dict(_GEMMA, stop_words=("<eos>", "<end_of_turn>"), replace_eos=False, efficient_eos=True),
    "gemma3": _GEMMA,
    "glm4": _GLM4,
    "llama2": _LLAMA2,
    "llama2_zh": dict(_LLAMA2, default_system="You are a helpful assistant. 你是一个乐于助人的助手。"),
    "llama3": _LLAMA3,
    "mistral": _MISTRAL,
    "phi": _PHI,
    "phi4": {
        "user": "<|im_start|>user<|im_sep|>{{content}}<|im_end|><|im_start|>assistant<|im_sep|>",
        "assistant": "{{content}}<|im_end|>",
        "system": "<|im_start|>system<|im_sep|>{{content}}<|im_end|>",
        "stop_words": ("<|im_end|>",),
        "replace_eos": True,
    },
    "qwen": dict(_QWEN, default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
    "qwen3": dict(_QWEN, reasoning=True),
    "qwen3_nothink": _QWEN,
    "vicuna": {"user": "USER: {{content}} ASSISTANT:", "default_system": _VICUNA_SYSTEM, "replace_jinja_template": True},
    "yi": dict(_CHATML, stop_words=("<|im_end|>",)),
    "zephyr": {
        "user": ("<|user|>\n{{content}}", EOS, "<|assistant|>\n"),
        "system": ("<|system|>\n{{content}}", EOS),
        "default_system": "You are Zephyr, a helpful assistant.",
    },
}

TEMPLATES: dict[str, Template] = {name: Template(name=name, **spec) for name, spec in sorted(_FAMILIES.items())}
