"""Board fields generated from the option declarations, and the way back: form values → options → YAML / command.

Every option a command shows (`options_for(command)`, the same list `tunery <command> -h` prints) becomes one
Gradio component chosen by its kind (Checkbox, Number, Dropdown for choices, Textbox for strings, lists and
mappings), labelled with its option name and its declared help. A new declaration therefore appears on the board
with no board code. `advanced` options are folded into a closed accordion of their group; the few transformers
TrainingArguments every run sets (PROMINENT) stay unfolded, as do the options without `advanced`.

Nothing here imports gradio at module level: the value conversions and validation are plain Python (unit tested).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from typing import Any

from tunery.config.option import Option
from tunery.config.registry import COMMAND_GROUPS, all_options, options_for
from tunery.errors import ConfigError

# Options the top bar holds (shared by every tab), not repeated in a tab's form.
TOP_BAR = ("model_name_or_path", "adapter_name_or_path", "finetuning_type", "template")
# transformers TrainingArguments (all declared advanced) that every run sets: shown unfolded on the Train tab.
PROMINENT = ("output_dir", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
             "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "logging_steps", "save_steps",
             "max_grad_norm", "seed")
# List options picked from the registry (dataset_info.json) of the chosen dataset_dir.
DATASET_PICKERS = ("dataset", "eval_dataset")
# Starting values the board uses where the declared default suits a script better than a first run on the board
# (LLaMA-Factory's board does the same). They differ from the declarations, so they show in the YAML.
BOARD_DEFAULTS = {"logging_steps": 5, "save_steps": 100, "plot_loss": True}
UNSET = "(unset)"
INVALID_CLASS = "tunery-invalid"
_HELP_CHARS = 240


def board_options(command: str = "train", options: Iterable[Option] | None = None) -> list[Option]:
    """The options a command's form shows: every declared one but the top bar's and those not supported yet."""
    opts = options_for(command) if options is None else list(options)
    return [o for o in opts if not o.unsupported and o.name not in TOP_BAR]


def pick_options(names: Iterable[str]) -> list[Option]:
    """Declarations by name (a tab that shows a few chosen options, e.g. Evaluate and Export)."""
    options = all_options()
    return [options[n] for n in names]


def is_folded(opt: Option) -> bool:
    return opt.advanced and opt.name not in PROMINENT


def grouped(options: list[Option], command: str = "train") -> list[tuple[str, list[Option], list[Option]]]:
    """(group, unfolded options, folded options) in the command's group order; unknown groups come last."""
    order = list(COMMAND_GROUPS.get(command, ()))
    groups: dict[str, list[Option]] = {}
    for opt in options:
        groups.setdefault(opt.group, []).append(opt)
    names = sorted(groups, key=lambda g: order.index(g) if g in order else len(order))
    return [(g, [o for o in groups[g] if not is_folded(o)], [o for o in groups[g] if is_folded(o)]) for g in names]


def help_text(opt: Option) -> str:
    text = opt.help if len(opt.help) <= _HELP_CHARS else opt.help[:_HELP_CHARS - 1].rstrip() + "…"
    return f"{text} (default: {opt.default_text()})"


def elem_id(opt: Option, prefix: str = "opt") -> str:
    return f"{prefix}-{opt.name}"


# ------------------------------------------------------------------ values: option value <-> component value
def _tri_state(opt: Option) -> bool:
    return opt.kind == "bool" and opt.default is None


def to_component(opt: Option, value: Any) -> Any:
    """The value a component shows for an option value."""
    if opt.name in DATASET_PICKERS:
        return list(value or [])
    if _tri_state(opt):
        return UNSET if value is None else ("true" if value else "false")
    if opt.kind == "bool":
        return bool(value)
    if opt.choices:
        if opt.kind == "list":
            return [str(v) for v in value or []]
        return UNSET if value is None else str(value)
    if opt.kind in ("int", "float", "number") and value is not None:
        return value
    if value is None:
        return ""
    if opt.kind == "list" and isinstance(value, (list, tuple)):
        if any(isinstance(v, (dict, list)) or "," in str(v) for v in value):
            return json.dumps(list(value), ensure_ascii=False)
        return ", ".join(str(v) for v in value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def from_component(opt: Option, shown: Any) -> Any:
    """A component's value as a raw option value for `Option.coerce` (None when left empty/unset)."""
    if shown is None or shown == UNSET:
        return None
    if isinstance(shown, str):
        shown = shown.strip()
        return shown or None
    if isinstance(shown, list):
        return shown or None
    if isinstance(shown, float) and opt.kind in ("int", "number") and shown == int(shown):
        return int(shown)
    return shown


def _normal(opt: Option, raw: Any) -> Any:
    value = opt.coerce(raw, "board")
    return [] if opt.kind == "list" and value is None else value


def changed_values(options: list[Option], shown: list[Any]) -> dict[str, Any]:
    """{option: value} for the fields whose value differs from the declared default, in declaration order.
    Values are coerced to the option's kind; a value that does not coerce is kept raw, so that `parse_config` names
    the problem."""
    out: dict[str, Any] = {}
    for opt, value in zip(options, shown):
        raw = from_component(opt, value)
        try:
            value = _normal(opt, raw)
            if value == _normal(opt, opt.default):
                continue
        except ConfigError:
            value = raw
        out[opt.name] = value
    return out


def initial_values(options: list[Option], given: dict | None = None,
                   defaults: dict | None = None) -> list[Any]:
    """What each field starts with: the value in `given`, else the board default (`defaults`, BOARD_DEFAULTS when
    None; pass {} for a loaded config, where a missing key means the declared default), else the declared default."""
    given = given or {}
    defaults = BOARD_DEFAULTS if defaults is None else defaults
    values = []
    for opt in options:
        value = given.get(opt.name, defaults.get(opt.name, opt.default))
        try:
            value = opt.coerce(value, "config") if value is not None else None
        except ConfigError:
            pass
        values.append(to_component(opt, value))
    return values


# ------------------------------------------------------------------ components
def make_field(opt: Option, shown: Any, prefix: str = "opt", choices: list | None = None):
    """The Gradio component for one option (created inside the current Blocks context)."""
    import gradio as gr

    common = {"label": opt.name, "info": help_text(opt), "elem_id": elem_id(opt, prefix), "interactive": True}
    if opt.name in DATASET_PICKERS:
        return gr.Dropdown(choices=choices or [], value=shown, multiselect=True, allow_custom_value=True, **common)
    if _tri_state(opt):
        return gr.Dropdown(choices=[UNSET, "true", "false"], value=shown, **common)
    if opt.kind == "bool":
        return gr.Checkbox(value=shown, **common)
    if opt.choices:
        options = [str(c) for c in opt.choices]
        if opt.kind == "list":
            return gr.Dropdown(choices=options, value=shown, multiselect=True, **common)
        return gr.Dropdown(choices=([UNSET] if opt.default is None else []) + options, value=shown, **common)
    if opt.kind in ("int", "float", "number") and opt.default is not None:  # a browser number box cannot be empty
        return gr.Number(value=shown, precision=0 if opt.kind == "int" else None, **common)
    placeholder = {"list": "comma-separated", "dict": "JSON object, e.g. {\"key\": \"value\"}", "int": "unset",
                   "float": "unset", "number": "unset"}.get(opt.kind)
    return gr.Textbox(value=shown, lines=1, max_lines=4, placeholder=placeholder, **common)


def build_form(options: list[Option], shown: list[Any], lang_words, command: str = "train", prefix: str = "opt",
               dataset_choices: list | None = None, extras: dict | None = None,
               lang: str = "en") -> dict[str, Any]:
    """Every option's field, grouped in accordions (advanced ones folded in a closed inner accordion).
    Returns {option name: component}; `lang_words(component, key)` registers a translatable accordion label;
    `extras[group]()` adds components of the caller's after that group's unfolded fields (e.g. the data preview)."""
    import gradio as gr

    from tunery.webui.locales import t

    values = dict(zip((o.name for o in options), shown))
    fields: dict[str, Any] = {}
    for group, unfolded, folded in grouped(options, command):
        is_open = bool(unfolded) and group in ("data", "method", "output", "training (transformers)")
        title = t(f"group:{group}", lang)
        with gr.Accordion(title, open=is_open, elem_id=f"{prefix}-group-{_slug(group)}") as box:
            lang_words(box, f"group:{group}")
            _grid(unfolded, values, fields, prefix, dataset_choices)
            if extras and group in extras:
                extras[group]()
            if folded:
                target = gr.Accordion(f"{title} — {t('more', lang)}", open=False,
                                      elem_id=f"{prefix}-more-{_slug(group)}") if unfolded else None
                if target is None:
                    _grid(folded, values, fields, prefix, dataset_choices)
                else:
                    with target:
                        _grid(folded, values, fields, prefix, dataset_choices)
    return fields


def _grid(options: list[Option], values: dict, fields: dict, prefix: str, dataset_choices) -> None:
    import gradio as gr

    for start in range(0, len(options), 3):
        with gr.Row(equal_height=False):
            for opt in options[start:start + 3]:
                fields[opt.name] = make_field(opt, values[opt.name], prefix, dataset_choices)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ------------------------------------------------------------------ YAML, command, validation
def yaml_text(values: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False, allow_unicode=True, default_flow_style=None)


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (dict, list)) or "," in str(v) for v in value):
            return json.dumps(list(value), ensure_ascii=False)
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def command_text(command: str, values: dict[str, Any]) -> str:
    """The equivalent `tunery <command> --name value ...` line (shell-quoted, one option per line)."""
    parts = [f"tunery {command}"] + [f"--{k} {shlex.quote(_flag_value(v))}" for k, v in values.items()]
    return " \\\n    ".join(parts)


def validate(command: str, values: dict[str, Any]):
    """(Config, None) when the values pass every declaration check and rule of `command`, else (None, message)."""
    from tunery.config.loader import parse_config

    try:
        return parse_config(command, overrides=values), None
    except ConfigError as err:
        return None, clean(str(err))


def clean(message: str) -> str:
    """An error message without the `arguments: ` origin `parse_config` gives values that come from the board."""
    return message.split(": ", 1)[1] if message.startswith("arguments: ") else message


def named_fields(message: str, names: Iterable[str]) -> list[str]:
    """The form fields an error message names (`option 'lora_rank'`, `options 'fp16' and 'bf16'`, …)."""
    known = set(names)
    found = []
    for name in re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)'", message or ""):
        if name in known and name not in found:
            found.append(name)
    return found


def flag_updates(components: dict[str, Any], helps: dict[str, str], bad: list[str], message: str,
                 previously: list[str]) -> list:
    """One update per component: the error under the fields in `bad`, the help back under the fields that were
    flagged before, nothing for the rest."""
    import gradio as gr

    updates = []
    for name in components:
        if name in bad:
            updates.append(gr.update(info=f"⚠ {message}", elem_classes=[INVALID_CLASS]))
        elif name in previously:
            updates.append(gr.update(info=helps.get(name, ""), elem_classes=[]))
        else:
            updates.append(gr.skip())
    return updates
