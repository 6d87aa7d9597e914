"""The option declaration: one object per option yields its CLI flag, YAML key, help, validation and board field."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from tunery.errors import ConfigError

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}

Check = Callable[[Any], Optional[str]]  # returns a problem description (what is wrong + fix) or None


@dataclass(frozen=True)
class Option:
    name: str
    kind: str
    default: Any
    help: str
    group: str
    choices: Optional[tuple] = None
    check: Optional[Check] = None  # validation of the value alone, next to its declaration
    hf: bool = False  # forwarded to transformers' (Seq2Seq)TrainingArguments
    advanced: bool = False  # folded away on the web board
    nullable: bool = True  # None is an accepted value
    unsupported: str = ""  # a non-default value is refused with this reason
    aliases: tuple = ()

    @property
    def flag(self) -> str:
        return "--" + self.name

    def coerce(self, raw: Any, where: str) -> Any:
        """Turn a YAML value or a command-line string into this option's kind."""
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null") and self.kind != "str"):
            return None
        try:
            value = _COERCE[self.kind](raw)
        except (ValueError, TypeError, json.JSONDecodeError):
            raise ConfigError(
                f"{where}: option '{self.name}' expects {_KIND_WORDS[self.kind]}, got {raw!r} — fix the value"
            ) from None
        return value

    def validate(self, value: Any, where: str) -> None:
        if value is None:
            return
        if self.choices is not None:
            values = value if isinstance(value, list) else [value]
            for v in values:
                if v not in self.choices:
                    raise ConfigError(
                        f"{where}: option '{self.name}' got {v!r}; choose one of: {', '.join(map(str, self.choices))}"
                    )
        if self.unsupported and value != self.default:
            raise ConfigError(f"{where}: option '{self.name}' is not supported by Tunery yet ({self.unsupported})")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(f"{where}: option '{self.name}' = {value!r}: {problem}")

    def default_text(self) -> str:
        if self.default is None:
            return "None"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return str(self.default)


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, (int, float)) and raw in (0, 1):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(raw)


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError(raw)
    if isinstance(raw, float):
        if raw != int(raw):
            raise ValueError(raw)
        return int(raw)
    return int(str(raw).strip())


def _to_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError(raw)
    return float(str(raw).strip()) if isinstance(raw, str) else float(raw)


def _to_number(raw: Any) -> int | float:
    """An int where it is whole (e.g. steps), else a float (e.g. a ratio)."""
    value = _to_float(raw)
    return int(value) if value == int(value) and not (isinstance(raw, str) and "." in raw and value < 1) else value


def _to_list(raw: Any) -> list:
    if isinstance(raw, (list, tuple)):
        return [str(x).strip() if not isinstance(x, (dict, list)) else x for x in raw]
    text = str(raw).strip()
    if text.startswith("["):
        return list(json.loads(text))
    return [part.strip() for part in text.split(",") if part.strip()]


def _to_dict(raw: Any) -> dict | str:
    if isinstance(raw, dict):
        return raw
    text = str(raw).strip()
    if text.startswith("{"):
        return json.loads(text)
    return text  # a path to a JSON file (deepspeed) is also accepted where the option allows it


def _to_any(raw: Any) -> Any:
    if isinstance(raw, str):
        text = raw.strip()
        if text[:1] in "[{":
            return json.loads(text)
    return raw


_COERCE = {
    "str": lambda raw: raw if isinstance(raw, str) else (json.dumps(raw) if isinstance(raw, (dict, list)) else str(raw)),
    "int": _to_int,
    "float": _to_float,
    "number": _to_number,
    "bool": _to_bool,
    "list": _to_list,
    "dict": _to_dict,
    "any": _to_any,
}
_KIND_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "number": "a number",
    "bool": "true or false",
    "list": "a list (YAML list or comma-separated)",
    "dict": "a mapping (YAML mapping or JSON object)",
    "any": "a value",
}


@dataclass
class Rule:
    """A check across several options, declared next to the options it concerns."""

    func: Callable[[Any], None]
    commands: frozenset = field(default_factory=frozenset)


# --- small reusable checks -------------------------------------------------------------------------------------------


def positive(value) -> Optional[str]:
    return None if value > 0 else "must be greater than 0"


def non_negative(value) -> Optional[str]:
    return None if value >= 0 else "must be 0 or more"


def probability(value) -> Optional[str]:
    return None if 0 <= value <= 1 else "must be between 0 and 1"
