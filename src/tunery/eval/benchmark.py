"""What a benchmark is: subjects of four-choice questions (A-D) in one of four categories, and the subject
mapping file that names and files them. Read from folders by :mod:`tunery.eval.tasks`, from the hub by
:mod:`tunery.eval.hub`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tunery.errors import DataError

CHOICES = ("A", "B", "C", "D")
CATEGORIES = ("STEM", "Social Sciences", "Humanities", "Other")
_CATEGORY_ALIASES = {c.lower(): c for c in CATEGORIES} | {"social science": "Social Sciences"}


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple  # the texts of A, B, C, D
    answer: str  # "A".."D"
    where: str  # file:line (or hub id:subject:row)


@dataclass
class Subject:
    key: str  # file stem, e.g. high_school_physics
    name: str  # shown in the prompt, e.g. "high school physics" or "高中物理"
    category: str
    questions: list = field(default_factory=list)  # the scored split
    dev: list = field(default_factory=list)  # few-shot examples
    source: str = ""  # the scored file (or hub id)


@dataclass
class Benchmark:
    name: str
    source: str  # folder or hub id
    split: str
    lang: str
    subjects: list  # list[Subject], sorted by key

    @property
    def size(self) -> int:
        return sum(len(s.questions) for s in self.subjects)


@dataclass(frozen=True)
class TaskRef:
    name: str
    split: str
    folder: Path | None = None  # a benchmark folder, or
    hub: str | None = None  # a registered hub benchmark (tunery.eval.hub.HUB key)


def parse_mapping(path: Path, lang: str = "en") -> dict[str, tuple[str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}:{err.colno}: malformed JSON ({err.msg}) — fix the file") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{SUBJECT: {{\"name\": ..., \"category\": ...}}}}")
    mapping = {}
    for subject, value in data.items():
        if isinstance(value, dict):
            name, category = value.get("name") or pretty_name(subject), value.get("category") or "Other"
        elif isinstance(value, list) and value:  # C-Eval: [english name, chinese name, category]
            name, category = (value[1] if len(value) > 2 and lang == "zh" else value[0]), value[-1]
        elif isinstance(value, str):
            name, category = pretty_name(subject), value
        else:
            raise DataError(f"{path}: subject '{subject}' has an unreadable entry {value!r} — give "
                            "{\"name\": ..., \"category\": ...}")
        mapping[subject] = (str(name), normalise_category(str(category)))
    return mapping


def normalise_category(category: str) -> str:
    return _CATEGORY_ALIASES.get(category.strip().lower(), category.strip())


def pretty_name(subject: str) -> str:
    return subject.replace("_", " ")
