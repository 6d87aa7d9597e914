"""Results: per subject, per category and overall counts (accuracy = correct / total over the questions), the
results.json document and the terminal tables."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from tunery.eval.benchmark import CATEGORIES, CHOICES

if TYPE_CHECKING:
    from tunery.config.loader import Config

AVERAGE = "Average"


def _acc(correct: int, total: int) -> dict:
    return {"correct": correct, "total": total, "accuracy": round(correct / total, 6) if total else 0.0}


def summarize(subjects: list, choices: dict[str, list[int]]) -> dict:
    """One run's scores from the chosen letter indices of each subject's questions."""
    per_subject, per_category = {}, {}
    for subject in subjects:
        picked = choices[subject.key]
        correct = sum(CHOICES[c] == q.answer for c, q in zip(picked, subject.questions))
        per_subject[subject.key] = dict(name=subject.name, category=subject.category,
                                        **_acc(correct, len(subject.questions)),
                                        predictions="".join(CHOICES[c] for c in picked))
        bucket = per_category.setdefault(subject.category, [0, 0, []])
        bucket[0] += correct
        bucket[1] += len(subject.questions)
        bucket[2].append(subject.key)
    order = [c for c in CATEGORIES if c in per_category] + sorted(set(per_category) - set(CATEGORIES))
    categories = {c: dict(**_acc(per_category[c][0], per_category[c][1]), subjects=per_category[c][2]) for c in order}
    total = sum(s["total"] for s in per_subject.values())
    correct = sum(s["correct"] for s in per_subject.values())
    return {"average": _acc(correct, total), "categories": categories, "subjects": per_subject}


def document(bench, cfg: Config, runs: dict[str, dict], elapsed_s: float, template: str) -> dict:
    doc = {
        "task": bench.name, "source": bench.source, "split": bench.split, "n_shot": cfg.n_shot, "lang": bench.lang,
        "model": cfg.model_name_or_path, "adapter": list(cfg.adapter_name_or_path or []) or None,
        "template": template, "seed": cfg.seed, "elapsed_s": round(elapsed_s, 3),
    }
    if len(runs) == 1:
        doc.update(next(iter(runs.values())))
    else:
        doc.update(runs)
        base, tuned = runs["base"], runs["finetuned"]
        doc["difference"] = {name: round(tuned_acc - base_acc, 6) for name, base_acc, tuned_acc in _rows(base, tuned)}
    return doc


def _rows(base: dict, tuned: dict):
    yield AVERAGE, base["average"]["accuracy"], tuned["average"]["accuracy"]
    for name in base["categories"]:
        yield name, base["categories"][name]["accuracy"], tuned["categories"][name]["accuracy"]


def write_results(save_dir: str, doc: dict) -> Path:
    os.makedirs(save_dir, exist_ok=True)
    path = Path(save_dir) / "results.json"
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _title(bench, n_shot: int) -> str:
    return f"{bench.name} · {bench.split} · {n_shot}-shot · {bench.lang} · {bench.size} questions"


def _cells(text: str) -> int:
    """Terminal columns of `text` (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _left(text: str, width: int) -> str:
    return text + " " * max(0, width - _cells(text))


def _width(names) -> int:
    return max([len(AVERAGE)] + [_cells(n) + 2 for n in names]) + 2


def format_table(bench, n_shot: int, summary: dict, label: str | None = None) -> str:
    """Average, each category and (indented) its subjects: correct, total, accuracy in percent."""
    names = {k: s["name"] for k, s in summary["subjects"].items()}
    w = _width(names.values())
    head = _title(bench, n_shot) + (f" · {label}" if label else "")
    lines = [head, f"{'':<{w}}{'correct':>9}{'total':>8}{'accuracy':>10}"]

    def row(name, entry):
        lines.append(f"{_left(name, w)}{entry['correct']:>9}{entry['total']:>8}{100 * entry['accuracy']:>9.2f}%")

    row(AVERAGE, summary["average"])
    for category, entry in summary["categories"].items():
        row(category, entry)
        for key in entry["subjects"]:
            row("  " + names[key], summary["subjects"][key])
    return "\n".join(lines)


def format_compare(bench, n_shot: int, base: dict, tuned: dict) -> str:
    """Base vs fine-tuned accuracy per category and the difference in points."""
    w = _width(base["categories"])
    lines = [_title(bench, n_shot) + " · base vs fine-tuned",
             f"{'':<{w}}{'base':>9}{'fine-tuned':>12}{'Δ':>9}"]
    for name, b, t in _rows(base, tuned):
        lines.append(f"{_left(name, w)}{100 * b:>8.2f}%{100 * t:>11.2f}%{100 * (t - b):>+9.2f}")
    return "\n".join(lines)
