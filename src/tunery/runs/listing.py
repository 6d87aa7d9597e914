"""``tunery runs [SAVES_DIR]``: every run under a saves folder, with its status, as a table or as rows for the board.

A run is a folder with a ``run_card.json`` or a ``trainer_log.jsonl`` (runs made before run cards existed are listed
from their log). Status: ``finished`` / ``interrupted`` / ``failed`` as the card says; a card still ``running``
is ``running`` while its process lives (same host) and ``crashed`` otherwise, with the last complete checkpoint a
rerun resumes from.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from tunery.runs.card import CARD_FILE, read_card
from tunery.train.plots import LOG_FILE, read_log

MAX_DEPTH = 4  # saves/<model>/<method>/<run>/ as LLaMA-Factory lays it out, and a level more


@dataclass
class RunInfo:
    path: str
    name: str
    status: str
    model: str = ""
    datasets: list[str] = field(default_factory=list)
    stage: str = ""
    method: str = ""
    steps: int | None = None
    total_steps: int | None = None
    final_loss: float | None = None
    best_loss: float | None = None
    elapsed: str = ""
    resume_from: str | None = None
    card: dict | None = None

    def row(self) -> list[str]:
        status = self.status + (f" (resume: {os.path.basename(self.resume_from)})" if self.resume_from else "")
        steps = "" if self.steps is None else f"{self.steps}/{self.total_steps or '?'}"
        return [self.name, status, self.stage, self.method, os.path.basename(os.path.normpath(self.model or "")),
                ",".join(self.datasets), steps, _num(self.final_loss), _num(self.best_loss), self.elapsed]


HEADERS = ["run", "status", "stage", "method", "model", "datasets", "steps", "final loss", "best loss", "time"]


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _alive(pid: Any, host: Any) -> bool:
    from tunery.utils.processes import pid_running

    return isinstance(pid, int) and host == socket.gethostname() and pid_running(pid)


def is_run(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CARD_FILE)) or os.path.isfile(os.path.join(path, LOG_FILE))


def find_runs(saves_dir: str) -> list[str]:
    """Run folders under saves_dir (saves_dir itself when it is one), sorted by path; checkpoints are not runs."""
    if is_run(saves_dir):
        return [saves_dir]
    found = []
    base_depth = saves_dir.rstrip(os.sep).count(os.sep)
    for root, dirs, _files in os.walk(saves_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "checkpoint-")) and d != "runs")
        if root != saves_dir and is_run(root):
            found.append(root)
            dirs[:] = []
        elif root.count(os.sep) - base_depth >= MAX_DEPTH:
            dirs[:] = []
    return found


def run_info(path: str, saves_dir: str | None = None) -> RunInfo:
    from tunery.utils.checkpoint_dirs import last_checkpoint

    card = read_card(path)
    log = read_log(path)
    name = os.path.relpath(path, saves_dir) if saves_dir and path != saves_dir else os.path.basename(path)
    losses = [row["loss"] for row in log if isinstance(row.get("loss"), (int, float))]
    evals = [row["eval_loss"] for row in log if isinstance(row.get("eval_loss"), (int, float))]
    last = log[-1] if log else {}
    info = RunInfo(path=path, name=name, status="unknown", card=card)
    info.steps = last.get("current_steps")
    info.total_steps = last.get("total_steps")
    info.final_loss = losses[-1] if losses else None
    info.best_loss = min(evals) if evals else (min(losses) if losses else None)
    info.elapsed = str(last.get("elapsed_time", ""))
    if card is not None:
        opts = card.get("options", {})
        info.model = card.get("model_name_or_path") or ""
        info.stage, info.method = card.get("stage", ""), card.get("finetuning_type", "")
        info.datasets = list(opts.get("dataset", {}).get("value") or [])
        info.status = card.get("status", "unknown")
        metrics = card.get("metrics") or {}
        if info.status in ("finished", "interrupted", "failed"):
            info.steps = metrics.get("global_step", info.steps)
        if info.status == "running" and card.get("host") != socket.gethostname():
            info.status = f"running on {card.get('host')}?"  # cannot look at another machine's processes
        elif info.status == "running" and not _alive(card.get("pid"), card.get("host")):
            info.status = "crashed"
        if info.elapsed == "" and card.get("started_at") and card.get("ended_at"):
            info.elapsed = _span(card["started_at"], card["ended_at"])
    else:
        info.status = "finished" if os.path.isfile(os.path.join(path, "all_results.json")) else "no run card"
    if info.status in ("crashed", "interrupted", "failed"):
        info.resume_from = last_checkpoint(path)
    return info


def _span(start: str, end: str) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S%z"
    try:
        seconds = time.mktime(time.strptime(end, fmt)) - time.mktime(time.strptime(start, fmt))
    except ValueError:
        return ""
    return time.strftime("%H:%M:%S", time.gmtime(max(0, seconds)))


def list_runs(saves_dir: str) -> list[RunInfo]:
    return [run_info(path, saves_dir) for path in find_runs(saves_dir)]


def format_table(runs: list[RunInfo]) -> str:
    rows = [HEADERS] + [r.row() for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
