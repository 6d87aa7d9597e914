"""`tunery estimate` against measured runs: peak RSS and steady step time, per config, as ratios estimate/measured.

For each case: `tunery estimate --format json` (the probe included), then the same options as `tunery train`
(logging every step) under GNU time; the steady step time is the wall time between the 3rd and the last logged step
divided by the steps between them (the tiny model's steps take ~30 ms, so its runs are --tiny-steps long: the log
file is polled every 0.1 s). Target: every ratio within 0.75–1.25. Run it on a quiet machine: the probe and the run
are minutes apart, so load that comes and goes between them shows as error.

    .venv/bin/python benchmarks/estimate_check.py [--steps 30] [--tiny-steps 200] [--cases tiny-lora-b2-c256,...]
                                                  [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (REPO, TIME_BIN, WORK, Monitor, bench_env, ensure_bench_model, fresh_dir,  # noqa: E402
                    machine_info, markdown_table, parse_time_v, tunery_cmd, write_json)

TINY = REPO / "models" / "tiny-llama3"
DATA = REPO / "src" / "tunery" / "demo" / "data"
# name: (model, finetuning_type, per-device batch, cutoff_len, datasets)
CASES = {
    "tiny-lora-b2-c256": ("tiny", "lora", 2, 256, "identity,adgen_local"),
    "tiny-full-b4-c512": ("tiny", "full", 4, 512, "identity,adgen_local"),
    "bench-lora-b4-c512": ("bench", "lora", 4, 512, "identity,adgen_local"),
    "bench-lora-b8-c128": ("bench", "lora", 8, 128, "identity,adgen_local"),
    "bench-full-b2-c256": ("bench", "full", 2, 256, "identity,adgen_local"),
    "bench-full-b4-c512-gc": ("bench", "full", 4, 512, "identity,adgen_local"),
}


def _model(kind: str) -> Path:
    if kind == "bench":
        return ensure_bench_model()
    from tunery.demo.tiny import build_tiny_model

    return build_tiny_model(TINY, family="llama3")


def _options(name: str, steps: int, out: Path) -> list[str]:
    model, method, batch, cutoff, datasets = CASES[name]
    opts = [f"model_name_or_path={_model(model)}", f"dataset={datasets}", f"dataset_dir={DATA}", "template=llama3",
            f"finetuning_type={method}", f"per_device_train_batch_size={batch}", f"cutoff_len={cutoff}",
            f"max_steps={steps}", "logging_steps=1", "save_strategy=no", "report_to=none", "learning_rate=1e-5",
            f"output_dir={out}", "overwrite_output_dir=true", "placeholders={\"name\": \"Tunery\", \"author\": \"us\"}"]
    if name.endswith("-gc"):
        opts.append("gradient_checkpointing=true")
    return opts


def run_case(name: str, steps: int) -> dict:
    out = fresh_dir(WORK / "estimate" / name)
    opts = _options(name, steps, out)
    est = subprocess.run(tunery_cmd() + ["estimate", "--format", "json"] + opts, capture_output=True, text=True,
                         env=bench_env(), cwd=REPO)
    if est.returncode != 0:
        raise SystemExit(f"{name}: estimate failed: {est.stderr[-2000:]}")
    estimate = json.loads(est.stdout.strip().splitlines()[-1])
    time_file = out.parent / f"{name}.time"
    mon = Monitor([TIME_BIN, "-v", "-o", str(time_file)] + tunery_cmd() + ["train"] + opts,
                  log_file=out / "trainer_log.jsonl", env=bench_env(), stdout_path=out.parent / f"{name}.log").run()
    if mon.returncode != 0:
        raise SystemExit(f"{name}: training failed, see {out.parent / (name + '.log')}")
    lines = [line for line in mon.lines if "loss" in line["row"]]
    first, last = lines[min(2, len(lines) - 2)], lines[-1]
    step_s = (last["wall"] - first["wall"]) / max(1, last["row"]["current_steps"] - first["row"]["current_steps"])
    measured_rss = parse_time_v(time_file)["peak_rss_mib"]
    est_rss = estimate["memory"]["peak"] / 2**20
    est_step = estimate["time"]["step_seconds"]
    return {"case": name, "estimated_peak_mib": round(est_rss, 1), "measured_peak_mib": measured_rss,
            "rss_ratio": round(est_rss / measured_rss, 3), "estimated_step_s": round(est_step, 4),
            "measured_step_s": round(step_s, 4), "step_ratio": round(est_step / step_s, 3),
            "probe": estimate["time"]["method"], "peak_micro_batch": estimate["data"]["peak_micro_batch"]}


def report(rows: list[dict]) -> str:
    table = markdown_table(
        ["case", "peak RSS est. (MiB)", "measured", "ratio", "step est. (s)", "measured", "ratio"],
        [[r["case"], r["estimated_peak_mib"], r["measured_peak_mib"], r["rss_ratio"], r["estimated_step_s"],
          r["measured_step_s"], r["step_ratio"]] for r in rows])
    inside = sum(0.75 <= r["rss_ratio"] <= 1.25 and 0.75 <= r["step_ratio"] <= 1.25 for r in rows)
    return table + f"\n\n{inside}/{len(rows)} cases within ±25 % on both figures."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tiny-steps", type=int, default=200)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for name in args.cases.split(","):
        rows.append(run_case(name, args.tiny_steps if CASES[name][0] == "tiny" else args.steps))
        print(json.dumps(rows[-1]), flush=True)
    print(report(rows))
    write_json(args.json, {"machine": machine_info(), "rows": rows})


if __name__ == "__main__":
    main()
