"""Chat templates, declared as data (families.py) and rendered by one :class:`Template` class (template.py).

``get_template("llama3")`` returns the frozen family template; options return a modified copy. ``"tokenizer"`` gives a
:class:`TokenizerTemplate` that uses the tokenizer's own Jinja chat template.
"""

from __future__ import annotations

from ...errors import ConfigError, did_you_mean
from .families import MULTIMODAL_TEMPLATES, TEMPLATES
from .template import BOS, EOS, Special, Template, Token, split_system, text_encoder
from .tokenizer_template import TokenizerTemplate, to_hf_messages
from .tools import TOOL_FORMATS

__all__ = [
    "BOS",
    "EOS",
    "MULTIMODAL_TEMPLATES",
    "TEMPLATES",
    "TOOL_FORMATS",
    "Special",
    "Template",
    "Token",
    "TokenizerTemplate",
    "get_template",
    "split_system",
    "template_names",
    "text_encoder",
    "to_hf_messages",
]


def template_names() -> list[str]:
    """Names accepted by :func:`get_template` (sorted; plus ``tokenizer``)."""
    return sorted(TEMPLATES) + ["tokenizer"]


def get_template(
    name: str,
    *,
    default_system: str | None = None,
    enable_thinking: bool | None = None,
    tool_format: str | None = None,
    tokenizer=None,
) -> Template | TokenizerTemplate:
    """The template called ``name``; ``default_system`` / ``enable_thinking`` / ``tool_format`` override the family's
    (as LLaMA-Factory's data arguments of the same names). Unknown names raise :class:`ConfigError`."""
    if name == "tokenizer":
        return TokenizerTemplate(
            tokenizer,
            default_system=default_system or "",
            chat_template_kwargs={} if enable_thinking is None else {"enable_thinking": enable_thinking},
        )
    if name in MULTIMODAL_TEMPLATES:
        raise ConfigError(f"template {name} needs multimodal support (images, video or audio), which Tunery does not "
                          "have yet; for text-only data use template: tokenizer (the model's own chat template)")
    if name not in TEMPLATES:
        raise ConfigError(
            f"unknown template '{name}'{did_you_mean(str(name), template_names())}; "
            f"available: {', '.join(template_names())}"
        )
    template = TEMPLATES[name]
    changes: dict = {}
    if default_system is not None:
        changes["default_system"] = default_system
    if enable_thinking is not None and template.reasoning:
        changes["enable_thinking"] = enable_thinking
    if tool_format is not None:
        # LLaMA-Factory: tool_format also resets the function slot to content (+ eos unless efficient_eos)
        changes["tool_format"] = tool_format
        changes["function"] = ("{{content}}",) if template.efficient_eos else ("{{content}}", EOS)
    return template.replace(**changes) if changes else template
