"""Runs of the board as separate processes: `python -m tunery train CONFIG.yaml`, one at a time.

The board writes the run's YAML and log into its state folder (`<saves>/.webui/runs/<id>/`; not into output_dir,
which `tunery train` wants empty or holding checkpoints) and a run-state file (`<saves>/.webui/job.json`) naming the
process, so a refreshed browser page — or a restarted board — finds the running job again. Stop sends SIGINT (the
trainer saves a checkpoint and stops after the current step), then SIGTERM to the process group after a grace time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any

from tunery.errors import TuneryError
from tunery.train.plots import read_log, smooth

STATE_FILE = "job.json"
LOG_NAME = "run.log"
RUNNING = ("running", "stopping")

_CHILDREN: dict[int, subprocess.Popen] = {}  # our own processes (reaped through their Popen), by pid
_LOCK = threading.RLock()


class BusyError(TuneryError):
    """A run is going on; the board runs one at a time."""


def _now() -> float:
    return time.time()


def _pid_alive(pid: int) -> bool:
    from tunery.utils.processes import pid_running

    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    return pid_running(pid)


def last_error(log_path: str) -> str | None:
    """The last `error: ...` line of a log (the CLI's one-line message), else the last line of a traceback."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            lines = [line.rstrip() for line in fh.read()[-200_000:].splitlines() if line.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("error:"):
            return line
    if any(line.startswith("Traceback") for line in lines) and lines:
        return f"error: {lines[-1].strip()}"
    return None


def tail(path: str, lines: int = 40) -> str:
    """The last lines of a file (progress bars' carriage returns folded), '' when it does not exist."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    out = [part.split("\r")[-1] for part in text.splitlines()]
    return "\n".join(out[-lines:])


def progress(output_dir: str | None) -> dict[str, Any]:
    """Step/total, percentage, elapsed and remaining time from the last trainer_log.jsonl row ({} before the first)."""
    rows = [r for r in read_log(output_dir) if "current_steps" in r] if output_dir else []
    if not rows:
        return {}
    last = rows[-1]
    return {"step": last["current_steps"], "total": last.get("total_steps", 0),
            "percent": float(last.get("percentage", 0.0)), "elapsed": last.get("elapsed_time", ""),
            "remaining": last.get("remaining_time", "")}


def loss_points(output_dir: str | None) -> list[tuple[int, float, float]]:
    """(step, loss, smoothed loss) of every logged training step."""
    rows = [r for r in read_log(output_dir) if r.get("loss") is not None] if output_dir else []
    losses = [float(r["loss"]) for r in rows]
    return [(r["current_steps"], loss, s) for r, loss, s in zip(rows, losses, smooth(losses))]


class Runner:
    """Starts, watches and stops the board's one job; its state lives in `state_dir` (shared by every page)."""

    def __init__(self, state_dir: str, grace: float = 30.0):
        self.state_dir = os.path.abspath(os.path.expanduser(state_dir))
        self.grace = grace

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, STATE_FILE)

    # ------------------------------------------------------------ state file
    def _read(self) -> dict:
        try:
            with open(self.state_path, encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def _write(self, state: dict) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh, indent=1, ensure_ascii=False)
        os.replace(tmp, self.state_path)

    # ------------------------------------------------------------ start
    def write_config(self, kind: str, values: dict) -> tuple[str, str]:
        """A fresh run folder with `<kind>.yaml` holding `values`; returns (folder, yaml path)."""
        import yaml

        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        folder = os.path.join(self.state_dir, "runs", f"{stamp}-{kind}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{kind}.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(values, fh, sort_keys=False, allow_unicode=True)
        return folder, path

    def start(self, kind: str, command: str, values: dict) -> dict:
        """Run `tunery <command> <yaml>` for `values` (already validated) as the board's job."""
        self._refuse_if_busy()
        folder, path = self.write_config(kind, values)
        argv = [sys.executable, "-m", "tunery", command, path]
        return self.start_process(kind, argv, folder, output_dir=values.get("output_dir"),
                                  shown=f"tunery {command} {path}")

    def start_process(self, kind: str, argv: list[str], folder: str, output_dir: str | None = None,
                      shown: str | None = None) -> dict:
        """Start `argv` with stdout and stderr in `folder`/run.log and record it as the job."""
        with _LOCK:
            self._refuse_if_busy()
            os.makedirs(folder, exist_ok=True)
            log_path = os.path.join(folder, LOG_NAME)
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            with open(log_path, "ab") as log:
                child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
            _CHILDREN[child.pid] = child
            state = {"id": os.path.basename(folder), "kind": kind, "state": "running", "pid": child.pid,
                     "argv": argv, "command": shown or " ".join(argv), "folder": folder, "log": log_path,
                     "output_dir": output_dir, "started": _now(), "ended": None, "returncode": None,
                     "error": None, "stop_requested": None}
            self._write(state)
            return state

    def _refuse_if_busy(self) -> None:
        state = self.status()
        if state.get("state") in RUNNING:
            raise BusyError(f"a {state['kind']} run is already going on (pid {state['pid']}, output in "
                            f"{state.get('output_dir') or state['folder']}) — stop it or wait for it to finish")

    # ------------------------------------------------------------ watch
    def status(self) -> dict:
        """The job's state ({} when none ever ran), updated when its process has ended since the last look."""
        with _LOCK:
            return self._status()

    def _status(self) -> dict:
        state = self._read()
        if not state or state.get("state") not in RUNNING:
            return state
        pid = state["pid"]
        if _pid_alive(pid):
            asked = state.get("stop_requested")
            if asked and _now() - asked > self.grace:
                self._terminate(pid)
            return state
        child = _CHILDREN.pop(pid, None)
        code = child.returncode if child is not None else None
        error = last_error(state["log"])
        if state.get("stop_requested"):
            outcome = "stopped"
        elif code not in (None, 0) or (code is None and error):
            outcome = "failed"
            error = error or f"error: the run ended with exit status {code} — see the log"
        else:
            outcome = "done"
        state.update(state=outcome, ended=_now(), returncode=code, error=error if outcome != "done" else None)
        self._write(state)
        return state

    # ------------------------------------------------------------ stop
    def stop(self) -> dict:
        """SIGINT now (checkpoint, then exit); SIGTERM to its process group once `grace` seconds have passed."""
        with _LOCK:
            state = self.status()
            if state.get("state") != "running":
                return state
            pid = state["pid"]
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                return self.status()
            state.update(state="stopping", stop_requested=_now())
            self._write(state)
        timer = threading.Timer(self.grace, self._escalate, args=(pid,))
        timer.daemon = True
        timer.start()
        return state

    def _escalate(self, pid: int) -> None:
        if self._read().get("pid") == pid and _pid_alive(pid):
            self._terminate(pid)
        self.status()

    @staticmethod
    def _terminate(pid: int) -> None:
        try:
            os.killpg(os.getpgid(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float = 60.0, interval: float = 0.2) -> dict:
        """Poll until the job is no longer running (tests and scripts)."""
        deadline = _now() + timeout
        state = self.status()
        while state.get("state") in RUNNING and _now() < deadline:
            time.sleep(interval)
            state = self.status()
        return state


def run_once(runner: Runner, kind: str, command: str, values: dict, timeout: float | None = None) -> tuple:
    """Run `tunery <command> <yaml>` to the end outside the job slot (export): (ok, output tail, error line)."""
    folder, path = runner.write_config(kind, values)
    log_path = os.path.join(folder, LOG_NAME)
    with open(log_path, "ab") as log:
        code = subprocess.run([sys.executable, "-m", "tunery", command, path], stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                              timeout=timeout, check=False).returncode
    error = last_error(log_path) if code else None
    return code == 0, tail(log_path, 20), error or (f"error: exit status {code}" if code else None)
