"""Plots of trainer_log.jsonl: raw and smoothed curves, one PNG per metric."""

from __future__ import annotations

import json
import math
import os

LOG_FILE = "trainer_log.jsonl"
COMPLETIONS_FILE = "completions.jsonl"  # stage grpo: sampled completions and their rewards


def smooth(values: list[float]) -> list[float]:
    """Exponential moving average whose weight grows with the number of points (TensorBoard-like)."""
    if not values:
        return []
    weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    out, last = [], values[0]
    for v in values:
        last = last * weight + (1 - weight) * v
        out.append(last)
    return out


def read_log(output_dir: str) -> list[dict]:
    path = os.path.join(output_dir, LOG_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_metric(output_dir: str, key: str) -> str | None:
    """Write training_{key}.png (training_loss.png for `loss`, training_rewards_accuracies.png for
    `rewards/accuracies`); None when nothing was logged for it."""
    points = [(row["current_steps"], row[key]) for row in read_log(output_dir) if row.get(key) is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, values = zip(*points)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(steps, values, color="#1f77b4", alpha=0.35, label="original")
    if len(values) > 1:
        ax.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
    ax.set_title(f"{key} of {os.path.basename(os.path.normpath(output_dir))}")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.subplots_adjust(left=0.1, right=0.97, top=0.9, bottom=0.12)  # tight_layout costs more than the plot
    path = os.path.join(output_dir, f"training_{key.replace('/', '_')}.png")
    fig.savefig(path)
    plt.close(fig)
    return path


# Columns of trainer_log.jsonl that are bookkeeping rather than metrics.
NOT_PLOTTED = {"current_steps", "total_steps", "lr", "epoch", "percentage", "elapsed_time", "remaining_time",
               "total_tokens", "throughput", "grad_norm", "train_loss"}


def logged_metrics(output_dir: str) -> list[str]:
    """Every metric trainer_log.jsonl has a value for, in first-seen order (loss, eval_loss, rewards/…)."""
    keys: dict[str, None] = {}
    for row in read_log(output_dir):
        for key, value in row.items():
            if key not in NOT_PLOTTED and isinstance(value, (int, float)):
                keys.setdefault(key)
    return list(keys)


def plot_all(output_dir: str, keys=None) -> list[str]:
    """One PNG per metric (all logged metrics unless ``keys`` names some)."""
    keys = logged_metrics(output_dir) if keys is None else keys
    return [p for p in (plot_metric(output_dir, k) for k in keys) if p]
