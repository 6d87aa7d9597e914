"""Pick the chat template for a run and keep the tokenizer's Jinja chat template consistent with it."""

from __future__ import annotations

from tunery.config.stages import stage_spec
from tunery.errors import ConfigError
from tunery.utils.logging import get_logger

logger = get_logger(__name__)

_PROBE = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a joke."},
]


def resolve_template(cfg, tokenizer, check_serving: bool = False):
    """The Template named by `template` (or the tokenizer's own chat template when unset), tokenizer fixed for it.

    ``check_serving`` (before training, in preview): warn in one line when the named template encodes a sample
    conversation differently from the tokenizer's own chat template, the format the model is served with."""
    from tunery.data.templates import get_template
    from tunery.data.templates.serving import serving_difference, serving_probe

    name = cfg.template
    if name is None:
        if getattr(tokenizer, "chat_template", None):
            name = "tokenizer"
            logger.info("no template given: using the tokenizer's own chat template")
        else:
            name = "empty"
            logger.warning("no template given and the tokenizer has no chat template: using 'empty' "
                           "(set template: NAME for a chat model)")
    # the model's own template gets enable_thinking only when asked (its default is the model's: off for Gemma 4)
    thinking = cfg.enable_thinking if name != "tokenizer" or _given(cfg, "enable_thinking") else None
    template = get_template(name, default_system=cfg.default_system, enable_thinking=thinking,
                            tool_format=cfg.tool_format, tokenizer=tokenizer)
    check = check_serving and name != "tokenizer" and stage_spec(cfg.stage).reads != "text"  # pt: no chat format
    probes = serving_probe(tokenizer, _thinking_kwargs(cfg, template)) if check else None
    template.fix_tokenizer(tokenizer)
    difference = serving_difference(template, tokenizer, probes)
    if difference:
        logger.warning(difference)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return template


def _thinking_kwargs(cfg, template) -> dict | None:
    """enable_thinking for the model's own template when the named one is a reasoning template (qwen3 and
    enable_thinking: false are served with enable_thinking=False, the _nothink variants as well)."""
    if str(getattr(template, "name", "")).endswith("_nothink"):
        return {"enable_thinking": False}
    if getattr(template, "reasoning", False) or _given(cfg, "enable_thinking"):
        return {"enable_thinking": bool(cfg.enable_thinking)}
    return None


def _given(cfg, option: str) -> bool:
    """Whether the user set ``option`` (in a file, on the command line or in Python), not left it at its default."""
    return option in cfg.sources


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
