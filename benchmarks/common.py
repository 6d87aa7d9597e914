"""What the benchmark scripts share: paths, the offline environment, the bench model, machine facts, a process
monitor (wall, CPU and RSS of a whole process tree, and the time each trainer_log.jsonl line appeared), tables.

Figures only — nothing here asserts on time. Run the scripts from anywhere; paths resolve from this file.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"
LF_DIR = SHARED / "bench" / "llamafactory"
LF_VENV = Path(os.environ.get("LF_VENV", os.path.join(os.environ.get("TMPDIR", "/tmp"), "llamafactory-venv")))
CONFIGS = Path(__file__).resolve().parent / "configs"
BENCH_MODEL = REPO / "models" / "bench-llama3"
WORK = REPO / "saves" / "bench"  # run outputs (git-ignored)
TIME_BIN = "/usr/bin/time"

# The same environment LLaMA-Factory's run.sh sets, so that both tools run under equal conditions.
OFFLINE_ENV = {
    "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "DISABLE_VERSION_CHECK": "1",
}


def bench_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env.update(extra or {})
    return env


def tunery_cmd() -> list[str]:
    """The `tunery` console script next to this interpreter (what users run), else `python -m tunery`."""
    script = Path(sys.executable).with_name("tunery")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tunery"]


def lf_available() -> bool:
    return (LF_VENV / "bin" / "llamafactory-cli").exists() and (LF_DIR / "run.sh").exists()


def ensure_bench_model() -> Path:
    """The ~25.8M-parameter Llama-style model (`size="bench"`), built once into models/bench-llama3."""
    from tunery.demo.tiny import build_tiny_model

    return build_tiny_model(BENCH_MODEL, family="llama3", size="bench")


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------- machine facts


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tunery"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except Exception:  # noqa: BLE001 - a missing library is just not listed
            pass
    return out


def _lf_versions() -> dict | None:
    if not lf_available():
        return None
    code = ("import importlib.metadata as m, json; print(json.dumps({k: m.version(k) for k in "
            "('llamafactory', 'torch', 'transformers', 'peft', 'trl', 'datasets')}))")
    try:
        res = subprocess.run([str(LF_VENV / "bin" / "python"), "-c", code], capture_output=True, text=True,
                             timeout=60)
        return json.loads(res.stdout)
    except Exception:  # noqa: BLE001
        return None


def machine_info() -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 0.0
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
        "os": f"{platform.system()} {platform.release()}", "load_avg": [round(x, 2) for x in os.getloadavg()],
        "versions": _versions(), "lf_versions": _lf_versions(),
    }


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------- process monitor


def _tree_cpu_rss(proc) -> tuple[float, float]:
    """user+system seconds and RSS (MiB) summed over a live process and all its descendants."""
    import psutil

    cpu = rss = 0.0
    procs = [proc]
    try:
        procs += proc.children(recursive=True)
    except psutil.Error:
        pass
    for p in procs:
        try:
            t = p.cpu_times()
            cpu += t.user + t.system
            rss += p.memory_info().rss
        except psutil.Error:
            continue
    return cpu, rss / 2**20


class Monitor:
    """Start a command and watch it: wall time, tree CPU seconds and RSS every `interval` seconds, and the wall/CPU
    time at which each line of `log_file` (trainer_log.jsonl) first appeared."""

    def __init__(self, cmd: list[str], log_file: Path | None = None, env: dict | None = None,
                 stdout_path: Path | None = None, interval: float = 0.1):
        self.cmd, self.log_file, self.env, self.interval = cmd, log_file, env, interval
        self.stdout_path = stdout_path
        self.lines: list[dict] = []  # {"wall": s, "cpu": s, "row": {...}}
        self.peak_tree_rss_mib = 0.0
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.returncode: int | None = None

    def run(self, timeout: float | None = None) -> "Monitor":
        import psutil

        out = open(self.stdout_path, "w", encoding="utf-8") if self.stdout_path else subprocess.DEVNULL
        start = time.perf_counter()
        popen = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        proc = psutil.Process(popen.pid)
        offset = 0
        try:
            while True:
                done = popen.poll() is not None
                now = time.perf_counter() - start
                cpu, rss = _tree_cpu_rss(proc) if not done else (self.cpu_s, 0.0)
                self.cpu_s = max(self.cpu_s, cpu)
                self.peak_tree_rss_mib = max(self.peak_tree_rss_mib, rss)
                if self.log_file is not None and self.log_file.exists():
                    with open(self.log_file, encoding="utf-8") as fh:
                        fh.seek(offset)
                        chunk = fh.read()
                    complete = chunk[: chunk.rfind("\n") + 1]
                    offset += len(complete.encode("utf-8"))
                    for line in complete.splitlines():
                        if line.strip():
                            self.lines.append({"wall": now, "cpu": cpu, "row": json.loads(line)})
                if done:
                    break
                if timeout and now > timeout:
                    popen.kill()
                    popen.wait()
                    break
                time.sleep(self.interval)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self.wall_s = time.perf_counter() - start
        self.returncode = popen.returncode
        return self


def parse_time_v(path: Path) -> dict:
    """wall, peak RSS, user/sys CPU of the process GNU time watched (`/usr/bin/time -v -o path`)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")

    def grab(pattern):
        m = re.search(pattern, text)
        return m.group(1) if m else None

    parts = [float(x) for x in (grab(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)") or "0").split(":")]
    return {
        "wall_s": round(sum(x * 60 ** i for i, x in enumerate(reversed(parts))), 2),
        "peak_rss_mib": round(int(grab(r"Maximum resident set size \(kbytes\): (\d+)") or 0) / 1024, 1),
        "cpu_s": round(float(grab(r"User time \(seconds\): (\S+)") or 0) + float(grab(r"System time \(seconds\): (\S+)")
                                                                                or 0), 2),
    }


# ---------------------------------------------------------------- numbers and tables


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values) -> str:
    """'median (min–max)' of the non-missing values."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def ratio(a, b) -> float | None:
    if a is None or b in (None, 0):
        return None
    return round(a / b, 2)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | os.PathLike | None, data) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
