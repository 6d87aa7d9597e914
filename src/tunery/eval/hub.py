"""Registered hub benchmarks (mmlu, cmmlu, ceval) loaded through `datasets`, with a quick, clear failure offline.

Subjects, their display names and categories come from the bundled ``data/hub/NAME.json``; the questions from the
Hugging Face hub (or the local `datasets` cache when HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tunery.errors import ConfigError, DataError
from tunery.eval import BENCHMARKS_DIR
from tunery.eval.benchmark import CHOICES, Question, Subject, parse_mapping

PROBE_TIMEOUT_S = 5


@dataclass(frozen=True)
class HubBenchmark:
    repo: str
    lang: str
    splits: tuple  # (tunery split, hub split name) pairs


HUB = {
    "mmlu": HubBenchmark("cais/mmlu", "en", (("dev", "dev"), ("validation", "validation"), ("test", "test"))),
    "cmmlu": HubBenchmark("haonan-li/cmmlu", "zh", (("dev", "dev"), ("test", "test"))),
    "ceval": HubBenchmark("ceval/ceval-exam", "zh", (("dev", "dev"), ("validation", "val"), ("test", "test"))),
}


def hub_mapping(name: str) -> dict[str, tuple[str, str]]:
    return parse_mapping(Path(BENCHMARKS_DIR) / "hub" / f"{name}.json", HUB[name].lang)


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def check_reachable(repo: str) -> None:
    """One short request instead of `datasets`' long retries; skipped with HF_HUB_OFFLINE=1 (cache only)."""
    if _offline():
        return
    from huggingface_hub import HfApi

    try:
        HfApi().dataset_info(repo, timeout=PROBE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - any failure means "not reachable from here"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"cannot reach the Hugging Face hub for '{repo}' ({reason[:160]}) — download the benchmark "
                        "in MMLU CSV layout elsewhere and pass its folder as task, or set HF_HUB_OFFLINE=1 to use "
                        "a copy in the datasets cache") from None


def _row(row: dict, where: str) -> Question:
    question = row.get("question", row.get("Question"))
    if "choices" in row:  # cais/mmlu: choices list, answer index
        choices, answer = list(row["choices"]), row["answer"]
        letter = CHOICES[answer] if isinstance(answer, int) and 0 <= answer < len(CHOICES) else str(answer)
    else:
        choices = [row.get(c) for c in CHOICES]
        letter = str(row.get("answer", row.get("Answer")) or "").strip().upper()
    if question is None or len(choices) != 4 or any(c is None for c in choices):
        raise DataError(f"{where}: expected question and four choices, got columns {sorted(row)}")
    if letter not in CHOICES:
        raise DataError(f"{where}: answer '{letter}' is not one of A, B, C, D (C-Eval's test split has no public "
                        "answers: use split: validation)")
    return Question(str(question).strip(), tuple(str(c).strip() for c in choices), letter, where)


def load_hub(name: str, split: str, n_shot: int, download_mode: str | None = None) -> list[Subject]:
    bench = HUB[name]
    splits = dict(bench.splits)
    if split not in splits:
        raise ConfigError(f"option 'split': {name} has no '{split}' split — use one of: "
                          f"{', '.join(s for s in splits if s != 'dev')}")
    check_reachable(bench.repo)
    import datasets
    from tqdm.auto import tqdm

    subjects = []
    for key in tqdm(sorted(hub_mapping(name)), desc=f"Loading {name}", unit="subject"):
        subject = Subject(key, key, "Other", source=f"{bench.repo}:{key}")
        for part, target in ((split, "questions"), ("dev", "dev")):
            if part == "dev" and n_shot == 0:
                continue
            try:
                rows = datasets.load_dataset(bench.repo, key, split=splits[part], download_mode=download_mode)
            except Exception as err:  # noqa: BLE001 - reported as one line with the fix
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise DataError(f"could not load {bench.repo} subject '{key}' split '{splits[part]}' through datasets "
                                f"({reason[:200]}) — download the CSV files and pass their folder as task") from None
            setattr(subject, target, [_row(r, f"{bench.repo}:{key}:{splits[part]}:{i}") for i, r in enumerate(rows)])
        subjects.append(subject)
    return subjects
