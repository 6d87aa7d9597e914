"""Trainer callbacks: trainer_log.jsonl (the board's and the plots' source) with timing and throughput."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

from transformers import TrainerCallback

from tunery.train.plots import LOG_FILE


def _fmt(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


class LogCallback(TrainerCallback):
    """Append one JSON line per logging step: current_steps, total_steps, loss, lr, epoch, percentage,
    elapsed_time, remaining_time (LLaMA-Factory's fields), plus eval_loss and, when transformers counts input
    tokens (include_num_input_tokens_seen), total_tokens and throughput (tokens/s)."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOG_FILE)
        self.start = None
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()
        self.start_step = state.global_step
        if state.is_world_process_zero:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            if state.global_step == 0 and os.path.exists(self.path):
                os.remove(self.path)  # a fresh run (resuming keeps the log and appends)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.time() - (self.start or time.time())
        done = max(state.global_step - self.start_step, 1)
        total = max(state.max_steps, 1)
        remaining = elapsed / done * (total - state.global_step)
        row = {
            "current_steps": state.global_step,
            "total_steps": state.max_steps,
            "loss": logs.get("loss"),
            "eval_loss": logs.get("eval_loss"),
            "lr": logs.get("learning_rate"),
            "epoch": round(logs.get("epoch", state.epoch or 0), 4),
            "percentage": round(100 * state.global_step / total, 2),
            "elapsed_time": _fmt(elapsed),
            "remaining_time": _fmt(remaining),
        }
        tokens = getattr(state, "num_input_tokens_seen", 0) or 0
        if tokens:
            row["total_tokens"] = tokens
            row["throughput"] = round(tokens / max(elapsed, 1e-9), 2)
        for key in ("grad_norm", "train_loss"):
            if key in logs:
                row[key] = logs[key]
        row = {k: v for k, v in row.items() if v is not None}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
