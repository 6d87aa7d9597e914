"""What the Train tab shows of a grpo run: the reward curve (total, smoothed, and per reward function) beside the loss,
and the latest sampled completions with their rewards. Plain functions of the run's files (unit tested)."""

from __future__ import annotations

import json
import os

from tunery.train.plots import COMPLETIONS_FILE, read_log, smooth

TAIL_BYTES = 1 << 18  # the latest completions are at the end of completions.jsonl: read at most its last 256 KiB
PROMPT_CHARS = 160


def reward_points(output_dir: str | None) -> list[tuple[int, float, str]]:
    """(step, value, curve) for the total reward (raw and smoothed) and each reward function's mean."""
    rows = [r for r in read_log(output_dir) if r.get("reward") is not None] if output_dir else []
    points = [(r["current_steps"], float(r["reward"]), "reward") for r in rows]
    points += [(r["current_steps"], s, "reward (smoothed)") for r, s in zip(rows, smooth([p[1] for p in points]))]
    names = sorted({k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    if len(names) > 1:  # with one function its mean is the total
        points += [(r["current_steps"], float(r[k]), k.split("/")[1]) for k in names for r in rows
                   if r.get(k) is not None]
    return points


def reward_frame(output_dir: str | None):
    """A DataFrame (step, reward, curve) for gr.LinePlot."""
    import pandas as pd

    frame = pd.DataFrame(reward_points(output_dir), columns=["step", "reward", "curve"])
    return frame.astype({"step": "int64", "reward": "float64", "curve": "str"})


def latest_completions(output_dir: str | None) -> list[dict]:
    """The completions of the last logged step in completions.jsonl (read from its end)."""
    path = os.path.join(output_dir, COMPLETIONS_FILE) if output_dir else ""
    if not path or not os.path.isfile(path):
        return []
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - TAIL_BYTES))
        lines = fh.read().decode("utf-8", errors="replace").splitlines()
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first one may be cut
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    if not rows:
        return []
    last = rows[-1].get("step")
    return [r for r in rows if r.get("step") == last]


def completions_frame(output_dir: str | None):
    """A DataFrame of the latest completions, best reward first: step, reward, each function's reward, the
    completion and the end of its prompt."""
    import pandas as pd

    rows = latest_completions(output_dir)
    names = list(dict.fromkeys(k for r in rows for k in (r.get("rewards") or {})))
    table = [{"step": r.get("step"), "reward": r.get("reward"), **{n: (r.get("rewards") or {}).get(n) for n in names},
              "completion": str(r.get("completion", "")), "prompt": str(r.get("prompt", ""))[-PROMPT_CHARS:]}
             for r in rows]
    table.sort(key=lambda r: -(r["reward"] if r["reward"] is not None else float("-inf")))
    return pd.DataFrame(table, columns=["step", "reward", *names, "completion", "prompt"])
