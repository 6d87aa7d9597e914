"""Data at scale: peak RSS, preprocessing records/s and command-to-first-step of ``tunery train`` against
LLaMA-Factory 0.9.5's ``llamafactory-cli train`` on synthetic alpaca records (25–270 words each, generated here).

Each run is ``train`` with stage sft, LoRA, ``max_steps: 1``, ``cutoff_len: 1024``, one preprocessing worker, the
tiny Llama-3 tokenizer and model, under GNU time (peak RSS of the whole process); both tools read the same JSON
Lines file. Figures per size (default 20k, 100k, 300k records):

* *peak RSS* (MiB) of an uncached run (Tunery: ``overwrite_cache: true``; LLaMA-Factory: a fresh datasets cache);
* *growth per 1,000 records*: the slope of peak RSS between the smallest and each larger size;
* *preprocessing records/s*: records ÷ the seconds from the dataset names to the encoded training set (the same
  timers benchmarks/preprocess.py uses; imports and tokenizer loading not timed);
* *command to first step* of a second Tunery run on the same data (its encoding cache hit): wall seconds from the
  command to the first trainer_log.jsonl line, and the CPU seconds of that whole run (user + system: on a shared
  machine the figure least disturbed by the other load). ``--cached-only`` reruns just that run.

    python benchmarks/data_scale.py [--sizes 20000,100000,300000] [--tools tunery,llamafactory] [--report-only]

Generated data goes to saves/bench/data_scale/ (git-ignored) and is reused across runs of the same size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

WORK = common.WORK / "data_scale"


def _word_stream() -> list[str]:
    """The words of ../shared/datasets/alpaca_en_demo.json in order (sampling from them keeps English frequencies)."""
    rows = json.loads((common.DATASETS / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    text = " ".join(f"{r['instruction']} {r['input']} {r['output']}" for r in rows)
    return re.findall(r"[A-Za-z]+(?:'[a-z]+)?[,.]?", text)


def make_records(path: Path, records: int, seed: int = 0) -> Path:
    """``records`` alpaca rows of 25–270 words in all (instruction, sometimes input, output), as JSON Lines."""
    rng = random.Random(seed)
    vocab = _word_stream()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(records):
            total = rng.randint(25, 270)
            n_instr = rng.randint(5, min(30, total - 10))
            n_input = rng.randint(0, min(60, total - n_instr - 5)) if rng.random() < 0.4 else 0
            n_out = total - n_instr - n_input
            words = rng.choices(vocab, k=total)
            row = {"instruction": " ".join(words[:n_instr]).capitalize() + "?",
                   "input": " ".join(words[n_instr:n_instr + n_input]),
                   "output": " ".join(words[n_instr + n_input:]).capitalize() + "."}
            fh.write(json.dumps(row) + "\n")
    return path


def dataset_dir(records: int) -> Path:
    folder = WORK / f"data-{records}"
    data = folder / "synthetic_alpaca.jsonl"
    if not data.exists():
        make_records(data, records)
        (folder / "dataset_info.json").write_text(json.dumps({"synthetic_alpaca": {"file_name": data.name}}))
    return folder


CONFIG = common.CONFIGS / "sft_data_scale.yaml"
PREP_RE = re.compile(r"data ready in ([0-9.]+) s")


def tiny_model() -> Path:
    from tunery.demo.tiny import build_tiny_model

    return build_tiny_model(common.WORK / "tiny-llama3", family="llama3")


def lf_run(records: int) -> dict | None:
    """llamafactory-cli train through ../shared/bench/llamafactory/run.sh (fresh datasets cache, overwrite_cache)."""
    if not common.lf_available():
        return None
    out = WORK / f"lf-out-{records}"
    res = subprocess.run(["bash", str(common.LF_DIR / "run.sh"), str(CONFIG), f"dataset_dir={dataset_dir(records)}",
                          f"output_dir={out}"], capture_output=True, text=True, cwd=common.REPO,
                         env=common.bench_env({"HF_HOME": tempfile.mkdtemp(prefix="hf-", dir=WORK)}), timeout=7200)
    if res.returncode != 0:
        print(f"LLaMA-Factory failed at {records}: {res.stderr.strip().splitlines()[-3:]}", file=sys.stderr)
        return None
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    return {"records": records, "peak_rss_mib": figures["peak_rss_mib"], "preprocess_s": figures["preprocess_s"],
            "wall_s": figures["wall_s"]}


def tunery_run(records: int, cached: bool) -> dict:
    """``tunery train`` under GNU time; ``cached``: without overwrite_cache (the second run on the same data)."""
    out = WORK / f"tunery-out-{records}"
    shutil.rmtree(out, ignore_errors=True)  # the first trainer_log.jsonl line must be this run's
    log = WORK / f"tunery-{records}{'-cached' if cached else ''}.log"
    timing = WORK / "time.txt"
    cmd = [common.TIME_BIN, "-v", "-o", str(timing), *common.tunery_cmd(), "train", str(CONFIG),
           f"dataset_dir={dataset_dir(records)}", f"output_dir={out}", f"overwrite_cache={str(not cached).lower()}"]
    monitor = common.Monitor(cmd, log_file=out / "trainer_log.jsonl", env=common.bench_env(), stdout_path=log).run(
        timeout=7200)
    if monitor.returncode != 0:
        raise SystemExit(f"tunery failed at {records} (rc={monitor.returncode}); log: {log}")
    text = log.read_text(encoding="utf-8", errors="replace")
    found = PREP_RE.findall(text)
    figures = common.parse_time_v(timing)
    return {"records": records, "peak_rss_mib": figures.get("peak_rss_mib"), "wall_s": round(monitor.wall_s, 2),
            "cpu_s": figures.get("cpu_s"),
            "preprocess_s": float(found[-1]) if found else None,
            "first_step_s": round(monitor.lines[0]["wall"], 2) if monitor.lines else None,
            "cache_hit": "encoding cache hit" in text}


def _cached_figures(cached: dict) -> dict:
    return {"cached_first_step_s": cached["first_step_s"], "cached_wall_s": cached["wall_s"],
            "cached_cpu_s": cached["cpu_s"], "cached_peak_rss_mib": cached["peak_rss_mib"],
            "cached_hit": cached["cache_hit"], "cached_load_avg": common.load_avg()}


def remeasure_cached(records: int) -> dict:
    """Only the cached run again (its cache entry must exist), merged into the saved figures."""
    saved = json.loads(_saved("tunery", records).read_text())
    saved.update(_cached_figures(tunery_run(records, cached=True)))
    common.write_json(_saved("tunery", records), saved)
    return saved


def _saved(tool: str, records: int) -> Path:
    return WORK / "results" / f"{tool}-{records}.json"


def measure(tool: str, records: int) -> dict | None:
    dataset_dir(records)
    if tool == "llamafactory":
        result = lf_run(records)
    else:
        result = tunery_run(records, cached=False)
        cached = tunery_run(records, cached=True)
        result.update(_cached_figures(cached))
    if result is not None:
        result.update(load_avg=common.load_avg(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        common.write_json(_saved(tool, records), result)
    return result


def _growth(rows: dict[int, dict], records: int) -> float | None:
    smallest = min(rows)
    if records == smallest or rows[records].get("peak_rss_mib") is None:
        return None
    return (rows[records]["peak_rss_mib"] - rows[smallest]["peak_rss_mib"]) / ((records - smallest) / 1000)


def to_markdown(sizes: list[int]) -> str:
    data = {tool: {n: json.loads(_saved(tool, n).read_text()) for n in sizes if _saved(tool, n).exists()}
            for tool in ("tunery", "llamafactory")}
    t, lf = data["tunery"], data["llamafactory"]
    out = ["| records | peak RSS MiB Tunery / LF | growth MiB per 1k records Tunery / LF | preprocessing records/s "
           "Tunery / LF (ratio) | cached run: command → first step, wall s (CPU s of the whole run) |",
           "|---|---|---|---|---|"]
    for n in sizes:
        a, b = t.get(n, {}), lf.get(n, {})
        ga, gb = (_growth(t, n) if n in t else None), (_growth(lf, n) if n in lf else None)
        ra = n / a["preprocess_s"] if a.get("preprocess_s") else None
        rb = n / b["preprocess_s"] if b.get("preprocess_s") else None
        out.append(f"| {n:,} | {common.fmt(a.get('peak_rss_mib'), 0)} / {common.fmt(b.get('peak_rss_mib'), 0)} | "
                   f"{common.fmt(ga, 2)} / {common.fmt(gb, 2)} | {common.fmt(ra, 0)} / {common.fmt(rb, 0)} "
                   f"({'×%.2f' % (ra / rb) if ra and rb else '–'}) | {common.fmt(a.get('cached_first_step_s'), 1)} "
                   f"({common.fmt(a.get('cached_cpu_s'), 1)}) |")
    loads = sorted({r['load_avg'] for d in data.values() for r in d.values() if r.get('load_avg') is not None})
    out.append("")
    out.append(f"Load average during the runs: {', '.join(map(str, loads))} (2 shared cores).")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,100000,300000")
    parser.add_argument("--tools", default="tunery,llamafactory")
    parser.add_argument("--report-only", action="store_true", help="print the table from the saved figures")
    parser.add_argument("--cached-only", action="store_true", help="rerun only Tunery's cached run of each size")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.cached_only:
        for n in sizes:
            print("tunery cached", n, json.dumps(remeasure_cached(n)), flush=True)
    elif not args.report_only:
        tiny_model()
        for n in sizes:
            for tool in args.tools.split(","):
                print(tool, n, json.dumps(measure(tool, n)), flush=True)
    print(to_markdown(sizes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
