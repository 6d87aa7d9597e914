"""Start-up: wall time of `tunery --help` and `tunery train -h` (the console script, a fresh process each time),
next to a bare `python -c pass` and, for reference, LLaMA-Factory's `llamafactory-cli help` / `train -h`.

Time to the first training step is measured by train_throughput.py (first step s: process start → first
trainer_log.jsonl line) and shown with these figures by run_all.py.

    python benchmarks/startup.py [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def commands() -> dict[str, list[str]]:
    tunery = common.tunery_cmd()
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "tunery --help": [*tunery, "--help"],
        "tunery train -h": [*tunery, "train", "-h"],
        "tunery version": [*tunery, "version"],
    }
    if common.lf_available():
        lf = str(common.LF_VENV / "bin" / "llamafactory-cli")
        cmds["llamafactory-cli help"] = [lf, "help"]
        cmds["llamafactory-cli train -h"] = [lf, "train", "-h"]
    return cmds


def measure(repeats: int) -> dict:
    env = common.bench_env()
    times: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    cmds = commands()
    for i in range(repeats):  # alternate the commands so that load changes hit all of them alike
        for name, cmd in cmds.items():
            if name.startswith("llamafactory") and i >= max(2, repeats // 2):
                continue  # seconds each: a few calls are enough for a reference
            t = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=common.REPO)
            dt = time.perf_counter() - t
            if res.returncode != 0:
                errors[name] = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"rc={res.returncode}"]
                continue
            times.setdefault(name, []).append(round(dt, 3))
    return {"repeats": repeats, "times_s": times, "errors": errors, "load_avg": common.load_avg()}


def to_markdown(data: dict, first_step: dict | None = None) -> str:
    rows = []
    for name, values in data["times_s"].items():
        rows.append([f"`{name}`", str(len(values)), common.spread(values), min(values)])
    for name, values in (first_step or {}).items():
        rows.append([f"time to first training step, {name}", str(len(values)), common.spread(values), min(values)])
    out = f"Wall seconds per call, fresh process each (load average {data['load_avg']}).\n\n"
    out += common.markdown_table(["command", "calls", "median (min–max) s", "min s"], rows)
    for name, err in data["errors"].items():
        out += f"\n\n- `{name}` failed: {err}"
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    data = measure(args.repeats)
    common.write_json(args.json, data)
    print(to_markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
