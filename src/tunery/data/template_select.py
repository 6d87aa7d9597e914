"""Pick the chat template for a run and keep the tokenizer's Jinja chat template consistent with it."""

from __future__ import annotations

from tunery.errors import ConfigError
from tunery.utils.logging import get_logger

logger = get_logger(__name__)

_PROBE = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a joke."},
]


def resolve_template(cfg, tokenizer):
    """The Template named by `template` (or the tokenizer's own chat template when unset), tokenizer fixed for it."""
    from tunery.data.templates import get_template

    name = cfg.template
    if name is None:
        if getattr(tokenizer, "chat_template", None):
            name = "tokenizer"
            logger.info("no template given: using the tokenizer's own chat template")
        else:
            name = "empty"
            logger.warning("no template given and the tokenizer has no chat template: using 'empty' "
                           "(set template: NAME for a chat model)")
    template = get_template(name, default_system=cfg.default_system, enable_thinking=cfg.enable_thinking,
                            tool_format=cfg.tool_format, tokenizer=tokenizer)
    template.fix_tokenizer(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return template


def sync_chat_template(tokenizer, template) -> None:
    """Keep the tokenizer's Jinja template when it renders exactly like `template`; otherwise save the template's
    own Jinja, so that `apply_chat_template` on the saved tokenizer formats chats the way the model was trained."""
    own = getattr(tokenizer, "chat_template", None)
    if own:
        try:
            rendered = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True)
            if rendered == template.render(_PROBE, add_generation_prompt=True, tokenizer=tokenizer):
                return
        except Exception:  # noqa: BLE001 - a Jinja template that cannot render the probe is replaced
            pass
    try:
        tokenizer.chat_template = template.to_jinja(tokenizer)
    except NotImplementedError:
        if not own:
            raise ConfigError("the chosen template cannot be written as a Jinja chat template") from None
