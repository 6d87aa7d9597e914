"""Trainer callbacks: trainer_log.jsonl (the board's and the plots' source) and Ctrl-C handling."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import timedelta

from transformers import TrainerCallback

from tunery.train.plots import LOG_FILE
from tunery.utils.logging import get_logger

logger = get_logger(__name__)

# Keys of transformers' logs that are bookkeeping, not metrics worth a column or a plot.
_SKIP = {"epoch", "learning_rate", "total_flos", "num_input_tokens_seen", "train_runtime", "train_samples_per_second",
         "train_steps_per_second", "train_tokens_per_second"}


def _fmt(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


def _is_metric(key: str, value) -> bool:
    if key in _SKIP or not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return not key.endswith(("_runtime", "_samples_per_second", "_steps_per_second"))


class LogCallback(TrainerCallback):
    """Append one JSON line per log event: current_steps, total_steps, loss, lr, epoch, percentage, elapsed_time,
    remaining_time (LLaMA-Factory's fields), every metric the stage logs (eval_loss, rewards/accuracies, …) and,
    when transformers counts input tokens, total_tokens and throughput (tokens/s)."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOG_FILE)
        self.start = None
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()
        self.start_step = state.global_step
        if not state.is_world_process_zero:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if not os.path.exists(self.path):
            return
        if state.global_step == 0:
            os.remove(self.path)  # a fresh run
            return
        # Resuming: drop what the interrupted run logged after the checkpoint, so that each step appears once.
        with open(self.path, encoding="utf-8") as fh:
            rows = [line for line in fh
                    if line.strip() and json.loads(line).get("current_steps", 0) <= state.global_step]
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.writelines(rows)

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
        for key, value in logs.items():
            if key not in row and _is_metric(key, value):
                row[key] = value
        row = {k: v for k, v in row.items() if v is not None}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# signal -> (what the one line says, exit code): Ctrl-C and SIGTERM (a scheduler, `kill`, `docker stop`) both save
_STOPS = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: ("stopped by SIGTERM", 143)}


class InterruptCallback(TrainerCallback):
    """Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint and stops training; a second signal
    stops at once. With several processes, all of them stop at the same step (the request is shared every step)."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self.stopped_at: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        again = "press Ctrl-C again" if signum == signal.SIGINT else "send SIGTERM again"
        logger.warning("%s: saving a checkpoint after this step (%s to stop at once)", signal.Signals(signum).name,
                       again)

    def stop_reason(self) -> tuple[str, int]:
        return _STOPS.get(self.signum, _STOPS[signal.SIGINT])

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            for signum in _STOPS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _agreed(self, args) -> bool:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.requested
        import torch

        flag = torch.tensor([1.0 if self.requested else 0.0], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed(args):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def restore(self) -> None:
        """Put the previous signal handlers back (also when training ended with an exception)."""
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self._previous = {}
