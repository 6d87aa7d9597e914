"""Every option of the INSTALLED transformers' ``Seq2SeqTrainingArguments`` as Tunery options.

``tunery train -h`` must not import transformers (seconds), so the fields are read from a snapshot: the one shipped
beside this file (``hf_training_args.json``, which names its transformers version) when that is the installed
version, else one built once from the installed transformers and kept in the user's cache
(``$XDG_CACHE_HOME/tunery`` or ``~/.cache/tunery``, one file per transformers version). ``python -m
tunery.config.hf_args`` rewrites the shipped snapshot (docs/options.md documents the shipped version's fields).
Values get range checks by field name (batch sizes, steps, rates, betas); names the installed transformers dropped
are translated in :mod:`tunery.config.hf_compat`.
"""

from __future__ import annotations

import enum
import json
import os
import sys
import typing
from functools import lru_cache
from pathlib import Path

from tunery.config.option import Option, non_negative, positive

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


def installed_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return None


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tunery"


def read_snapshot(path: Path = SNAPSHOT) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def load_rows(snapshot: Path = SNAPSHOT, cache: Path | None = None, version: str | None = None) -> dict:
    """{"transformers": version, "fields": rows} for the installed transformers (see the module doc)."""
    shipped = read_snapshot(snapshot)
    version = version or installed_version()
    if version is None or version == shipped["transformers"]:
        return shipped
    path = (cache or cache_dir()) / f"hf_training_args-{version}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("transformers") == version:
            return cached
    except (OSError, ValueError):
        pass
    rows = {"transformers": version, "fields": build_snapshot()}
    try:  # best effort: a read-only home only means building it again next time
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
    return rows


# -- range checks by field name (transformers' metadata holds no ranges) ---------------------------------------------
def _at_least_minus_one(value):
    return None if value == -1 or value > 0 else "must be -1 (unset) or greater than 0"


def _beta(value):
    return None if 0 <= value < 1 else "must be at least 0 and below 1"


def _fraction(value):
    return None if 0 <= value <= 1 else "must be between 0 and 1"


# save_steps/eval_steps also must be > 0 when their strategy is steps (a Rule in train_options: they are ignored
# otherwise); below 1 they are a fraction of the run's steps (transformers' meaning).
_CHECKS = {"gradient_accumulation_steps": positive, "max_steps": _at_least_minus_one, "adam_beta1": _beta,
           "adam_beta2": _beta, "label_smoothing_factor": _fraction, "warmup_ratio": _fraction,
           "logging_steps": positive, "eval_accumulation_steps": positive, "torch_empty_cache_steps": positive,
           "neftune_noise_alpha": positive, "eval_delay": non_negative, "ddp_bucket_cap_mb": positive,
           "dataloader_prefetch_factor": positive}
_POSITIVE_SUFFIXES = ("_batch_size", "generation_max_length", "generation_num_beams")
_NON_NEGATIVE_SUFFIXES = ("_steps", "_epochs", "_num_workers", "_limit", "learning_rate", "weight_decay", "_epsilon",
                          "max_grad_norm", "prefetch_factor", "_patience", "_timeout")


def range_check(name: str, kind: str):
    if kind not in ("int", "float", "number"):
        return None
    if name in _CHECKS:
        return _CHECKS[name]
    if name.endswith(_POSITIVE_SUFFIXES):
        return positive
    if name.endswith(_NON_NEGATIVE_SUFFIXES):
        return non_negative
    return None


def options_from(rows: list[dict]) -> tuple[Option, ...]:
    return tuple(
        Option(
            name=r["name"],
            kind=r["kind"],
            default=r["default"],
            help=r["help"] or "(transformers TrainingArguments)",
            group="training (transformers)",
            choices=tuple(r["choices"]) if r["choices"] and r["kind"] == "str" else None,
            check=range_check(r["name"], r["kind"]),
            hf=True,
            advanced=True,
        )
        for r in rows
    )


@lru_cache(maxsize=1)
def hf_options() -> tuple[Option, ...]:
    """The installed transformers' fields."""
    return options_from(load_rows()["fields"])


@lru_cache(maxsize=1)
def hf_field_names() -> frozenset:
    return frozenset(opt.name for opt in hf_options())


if __name__ == "__main__":
    from transformers import __version__

    SNAPSHOT.write_text(json.dumps({"transformers": __version__, "fields": build_snapshot()}, indent=1,
                                   ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT}", file=sys.stderr)
