"""The typed view of a Config, generated from the option declarations: ``config/fields.py`` holds one annotated
attribute per option (Tunery's own and the shipped snapshot's TrainingArguments fields), which :class:`Config`
inherits, so that an editor or a type checker knows ``cfg.cutoff_len`` is an int and ``cfg.lora_rnk`` no option.

``python -m tunery.config.docs`` rewrites it together with docs/options.md; a test fails when it is stale.
"""

from __future__ import annotations

from pathlib import Path

FIELDS_PATH = Path(__file__).resolve().parent / "fields.py"

_TYPES = {"str": "str", "int": "int", "float": "float", "number": "int | float", "bool": "bool", "list": "list",
          "dict": "dict | str", "any": "Any"}


def annotation(opt) -> str:
    """The Python type of an option's value (``| None`` where its default is None)."""
    base = _TYPES[opt.kind]
    if opt.default is None and base != "Any":
        return f"{base} | None"
    return base


def fields_source() -> str:
    from tunery.config.hf_args import SNAPSHOT, options_from, read_snapshot
    from tunery.config.registry import merged_options

    shipped = read_snapshot(SNAPSHOT)
    lines = [
        '"""One annotated attribute per option: the typed view of a Config (config/loader.py).',
        "",
        "Generated from the option declarations by `python -m tunery.config.docs` (TrainingArguments fields: transformers",
        f"{shipped['transformers']}'s snapshot); do not edit by hand.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Any",
        "",
        "",
        "class ConfigFields:",
        '    """The option values of a Config, by name (values are set by the loader, never on these class',
        '    attributes)."""',
        "",
    ]
    group = None
    for opt in merged_options(options_from(shipped["fields"])).values():
        if opt.group != group:
            group = opt.group
            lines.append(f"    # {group}")
        lines.append(f"    {opt.name}: {annotation(opt)}")
    return "\n".join(lines) + "\n"


def write_fields() -> Path:
    FIELDS_PATH.write_text(fields_source(), encoding="utf-8")
    return FIELDS_PATH
