"""Every option of transformers' ``Seq2SeqTrainingArguments`` as Tunery options.

The fields are read from a snapshot (``hf_training_args.json``) so that ``tunery train -h`` does not import
transformers; ``python -m tunery.config.hf_args`` rewrites the snapshot from the installed transformers, and a test
fails when it is stale.
"""

from __future__ import annotations

import enum
import json
import sys
import typing
from functools import lru_cache
from pathlib import Path

from tunery.config.option import Option

SNAPSHOT = Path(__file__).with_name("hf_training_args.json")


def _kind_and_choices(tp) -> tuple[str, list | None]:
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    choices = None
    kinds = set()
    for a in args:
        origin = typing.get_origin(a) or a
        if isinstance(a, type) and issubclass(a, enum.Enum):
            choices = [m.value for m in a]
            kinds.add("str")
        elif origin in (list, tuple):
            kinds.add("list")
        elif origin is dict:
            kinds.add("dict")
        elif a is bool:
            kinds.add("bool")
        elif a is int:
            kinds.add("int")
        elif a is float:
            kinds.add("float")
        elif a is str:
            kinds.add("str")
        else:
            kinds.add("any")
    if kinds == {"float"} or kinds == {"int", "float"}:
        return "number", None
    for kind in ("bool", "int", "list", "dict"):
        if kinds == {kind} or (kind in ("list", "dict") and kind in kinds):
            return kind, (choices if kind == "list" else None)
    if kinds <= {"str"}:
        return "str", choices
    return "any", None


def build_snapshot() -> list[dict]:
    import dataclasses

    from transformers import Seq2SeqTrainingArguments

    hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    rows = []
    for f in dataclasses.fields(Seq2SeqTrainingArguments):
        if not f.init or f.name.startswith("_"):
            continue
        kind, choices = _kind_and_choices(hints.get(f.name, f.type))
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        if isinstance(default, enum.Enum):
            default = default.value
        try:
            json.dumps(default)
        except TypeError:
            default = str(default)
        help_text = " ".join(str(f.metadata.get("help", "")).split())
        rows.append({"name": f.name, "kind": kind, "default": default, "help": help_text, "choices": choices})
    return rows


@lru_cache(maxsize=1)
def hf_options() -> tuple[Option, ...]:
    rows = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    return tuple(
        Option(
            name=r["name"],
            kind=r["kind"],
            default=r["default"],
            help=r["help"] or "(transformers TrainingArguments)",
            group="training (transformers)",
            choices=tuple(r["choices"]) if r["choices"] and r["kind"] == "str" else None,
            hf=True,
            advanced=True,
        )
        for r in rows
    )


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(build_snapshot(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT}", file=sys.stderr)
