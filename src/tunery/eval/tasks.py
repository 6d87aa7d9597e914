"""Benchmarks on disk: find the folder a `task` names and read its MMLU-layout CSV files into subjects.

Layout (MMLU's, also LLaMA-Factory's evaluation folders and C-Eval's/CMMLU's downloads)::

    TASK/[dev/]SUBJECT_dev.csv   few-shot examples      (CMMLU: dev/SUBJECT.csv)
    TASK/[val/]SUBJECT_val.csv   split: validation      (also validation/SUBJECT.csv)
    TASK/[test/]SUBJECT_test.csv split: test            (CMMLU: test/SUBJECT.csv)
    TASK/mapping.json            optional: {SUBJECT: {"name": ..., "category": STEM|Social Sciences|Humanities|Other}}

Rows are ``question,A,B,C,D,answer``; a header row naming those columns (any case, extra columns such as an id or
an explanation allowed) is recognised, otherwise each row must have exactly those six columns.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from tunery.errors import ConfigError, DataError, did_you_mean
from tunery.eval import BENCHMARKS_DIR
from tunery.eval.benchmark import (CATEGORIES, CHOICES, Benchmark, Question, Subject, TaskRef,  # noqa: F401
                                   parse_mapping, pretty_name)

SPLIT_SUFFIX = {"dev": "dev", "validation": "val", "test": "test"}
_SPLIT_DIRS = {"dev": ("dev",), "validation": ("val", "validation"), "test": ("test",)}

# Bundled benchmarks (folders in BENCHMARKS_DIR) and their prompt language.
BUNDLED = {"tunery_demo": "en", "tunery_demo_zh": "zh"}


# ------------------------------------------------------------------------------------------------ finding the task
def resolve_task(task: str, task_dir: str | None, split: str, split_explicit: bool = False) -> TaskRef:
    """Where `task` lives: an existing folder, a folder under task_dir (default: the bundled ones) or a hub name.
    A trailing _test / _validation (LLaMA-Factory's `mmlu_test`) picks the split."""
    from tunery.eval.hub import HUB

    base = Path(os.path.expanduser(task_dir)) if task_dir else BENCHMARKS_DIR
    candidates = [(task, split)]
    for suffix, sp in (("_test", "test"), ("_validation", "validation"), ("_val", "validation")):
        if task.endswith(suffix) and len(task) > len(suffix):
            candidates.append((task[: -len(suffix)], sp))
    for name, sp in candidates:
        for folder in (Path(os.path.expanduser(name)), base / name):
            if folder.is_dir():
                return _with_split(TaskRef(Path(name).name or name, sp, folder=folder), split, split_explicit, task)
        if name in HUB:
            return _with_split(TaskRef(name, sp, hub=name), split, split_explicit, task)
    known = sorted(set(_folders(base)) | set(HUB))
    raise ConfigError(f"option 'task': no benchmark '{task}'{did_you_mean(task, known)} — give a folder in MMLU CSV "
                      f"layout, a folder name under {base}, or one of: {', '.join(known)}")


def _with_split(ref: TaskRef, split: str, split_explicit: bool, task: str) -> TaskRef:
    if split_explicit and ref.split != split:
        raise ConfigError(f"option 'task' = '{task}' picks split '{ref.split}' but option 'split' is '{split}' — "
                          "drop one of them")
    return ref


def _folders(base: Path) -> list[str]:
    try:
        return [p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith((".", "_")) and p.name != "hub"]
    except OSError:
        return []


def default_lang(ref: TaskRef, subjects: list) -> str:
    """The benchmark's own language: registered ones say; folders are zh when their questions are mostly CJK."""
    from tunery.eval.hub import HUB

    if ref.hub:
        return HUB[ref.hub].lang
    if ref.folder is not None and ref.folder.resolve().parent == BENCHMARKS_DIR and ref.name in BUNDLED:
        return BUNDLED[ref.name]
    text = "".join(q.question for s in subjects for q in s.questions[:5])
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    letters = sum(ch.isalpha() for ch in text)
    return "zh" if letters and cjk / letters > 0.3 else "en"


# ------------------------------------------------------------------------------------------------ reading folders
def split_files(folder: Path, split: str) -> dict[str, Path]:
    """SUBJECT -> CSV file of `split` in the folder (searched recursively)."""
    suffix = "_" + SPLIT_SUFFIX[split]
    other = tuple("_" + s for s in SPLIT_SUFFIX.values() if s != SPLIT_SUFFIX[split])
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.csv")):
        stem = path.stem
        if stem.endswith(suffix):
            subject = stem[: -len(suffix)]
        elif path.parent.name in _SPLIT_DIRS[split] and not stem.endswith(other):
            subject = stem
        else:
            continue
        if subject in found:
            raise DataError(f"{path}: subject '{subject}' of split '{split}' is also in {found[subject]} — keep one "
                            "file per subject and split")
        found[subject] = path
    return found


def read_csv(path: Path) -> list[Question]:
    """The questions of one file; a bad row raises DataError naming file:line and the fix."""
    try:
        return _read_rows(path)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}) — save the file as UTF-8") from None
    except csv.Error as err:
        raise DataError(f"{path}: malformed CSV ({err}) — fix the quoting") from None


def _read_rows(path: Path) -> list[Question]:
    questions: list[Question] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        columns: list[int] | None = None
        width, header = 6, False
        start = 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row or all(not cell.strip() for cell in row):
                continue
            if columns is None:
                columns = _header_columns(row)
                if columns is not None:
                    width, header = len(row), True
                    continue
                columns = list(range(6))
            if len(row) != width:
                layout = "as the header" if header else "question,A,B,C,D,answer"
                raise DataError(f"{path}:{line}: expected {width} columns ({layout}), got {len(row)} — fix the row "
                                "(quote fields that contain commas)")
            question, a, b, c, d, answer = (row[i] for i in columns)
            letter = answer.strip().upper()
            if letter not in CHOICES:
                if not letter:
                    raise DataError(f"{path}:{line}: the answer is empty — give the letter A, B, C or D (C-Eval's "
                                    "test split has no public answers: use split: validation)")
                raise DataError(f"{path}:{line}: answer '{answer.strip()}' is not one of A, B, C, D — fix the row")
            questions.append(Question(question.strip(), (a.strip(), b.strip(), c.strip(), d.strip()), letter,
                                      f"{path}:{line}"))
    if not questions:
        raise DataError(f"{path}: no questions — the file is empty")
    return questions


def _header_columns(row: list[str]) -> list[int] | None:
    names = [cell.strip().lower() for cell in row]
    wanted = ["question", "a", "b", "c", "d", "answer"]
    if "question" not in names or "answer" not in names:
        return None
    missing = [w for w in wanted if w not in names]
    if missing:
        raise DataError(f"header row {row} lacks column(s) {', '.join(m.upper() if len(m) == 1 else m for m in missing)}"
                        " — name the columns question,A,B,C,D,answer")
    return [names.index(w) for w in wanted]


def read_mapping(folder: Path, lang: str) -> dict[str, tuple[str, str]]:
    """SUBJECT -> (name, category) from mapping.json (LLaMA-Factory) or subject_mapping.json (C-Eval), if present."""
    for file_name in ("mapping.json", "subject_mapping.json"):
        path = folder / file_name
        if path.is_file():
            return parse_mapping(path, lang)
    return {}


def apply_mapping(subjects: list, mapping: dict[str, tuple[str, str]]) -> None:
    for subject in subjects:
        subject.name, subject.category = mapping.get(subject.key, (pretty_name(subject.key), "Other"))


def load_folder(ref: TaskRef, n_shot: int) -> list[Subject]:
    folder = ref.folder
    files = split_files(folder, ref.split)
    if not files:
        hint = " (unzip the archive in it first)" if any(folder.glob("*.zip")) else ""
        raise DataError(f"{folder}: no files of split '{ref.split}' — expected SUBJECT_{SPLIT_SUFFIX[ref.split]}.csv "
                        f"files (MMLU CSV layout){hint}" + (", or use split: test" if ref.split == "validation" else ""))
    dev_files = split_files(folder, "dev") if n_shot > 0 else {}
    subjects = []
    for key, path in files.items():
        subject = Subject(key, pretty_name(key), "Other", read_csv(path), source=str(path))
        if n_shot > 0:
            if key not in dev_files:
                raise DataError(f"{folder}: subject '{key}' has no dev split ({key}_dev.csv) for the few-shot "
                                "examples — add it or use n_shot: 0")
            subject.dev = read_csv(dev_files[key])
        subjects.append(subject)
    return subjects


def check_n_shot(subjects: list, n_shot: int) -> None:
    for subject in subjects:
        if n_shot > len(subject.dev):
            raise ConfigError(f"option 'n_shot' = {n_shot} but subject '{subject.key}' has only {len(subject.dev)} "
                              f"dev question(s) for the examples — lower n_shot (e.g. --n_shot {len(subject.dev)})")


def load_benchmark(task: str, task_dir: str | None, split: str, n_shot: int, lang: str | None = None,
                   split_explicit: bool = False, download_mode: str | None = None) -> Benchmark:
    """Resolve `task`, read (or download) every subject, check n_shot; nothing heavy is imported for folders."""
    ref = resolve_task(task, task_dir, split, split_explicit)
    if ref.hub:
        from tunery.eval.hub import hub_mapping, load_hub

        subjects, source = load_hub(ref.hub, ref.split, n_shot, download_mode), ref.hub
        lang = lang or default_lang(ref, subjects)
        apply_mapping(subjects, hub_mapping(ref.hub))
    else:
        subjects, source = load_folder(ref, n_shot), str(ref.folder)
        lang = lang or default_lang(ref, subjects)
        apply_mapping(subjects, read_mapping(ref.folder, lang))
    check_n_shot(subjects, n_shot)
    subjects.sort(key=lambda s: s.key)
    return Benchmark(ref.name, source, ref.split, lang, subjects)
