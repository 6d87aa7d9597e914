"""Data preprocessing speed: load + convert + encode N alpaca_zh-style records (default 10,000), Tunery vs
LLaMA-Factory 0.9.5, with 1 and 2 worker processes, on the same tokenizer, template, cutoff_len and files.

The records are ../shared/datasets/alpaca_zh_demo.json repeated with variations (each copy numbered in its
instruction, the answer's paragraphs rotated) written to a temporary dataset_dir. Timed: from the dataset names to
the encoded training set — Tunery's ``load_records`` + ``encode_loaded``; LLaMA-Factory's
``get_dataset`` in its own virtualenv (``LF_VENV``, see ../shared/bench/llamafactory), each run in a fresh process
with a fresh datasets cache. Imports and tokenizer loading are not timed (for either tool). The tokenizer is the
tiny Llama-3 one (built offline into a temp folder) unless --model names another.

    python benchmarks/preprocess.py [--records 10000] [--model DIR] [--cutoff-len 1024] [--workers 1,2] [--repeats 1]
                                    [--quick] [--json out.json]

The last line printed is a JSON object; ``speedup`` is Tunery's best records/s over LLaMA-Factory's best.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

LF_TIMER = r'''
import json, sys, time
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
from llamafactory.data import get_template_and_fix_tokenizer, get_dataset

args = json.loads(sys.argv[1])
model_args, data_args, training_args, _, _ = get_train_args(args)
module = load_tokenizer(model_args)
template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
start = time.perf_counter()
data = get_dataset(template, model_args, data_args, training_args, stage="sft", **module)["train_dataset"]
print(json.dumps({"seconds": time.perf_counter() - start, "examples": len(data)}))
'''


def make_dataset(folder: Path, records: int) -> Path:
    """``records`` alpaca_zh-style rows (alpaca_zh_demo repeated, every copy varied) + dataset_info.json."""
    base = json.loads((common.DATASETS / "alpaca_zh_demo.json").read_text(encoding="utf-8"))
    rows = []
    for i in range(records):
        row = base[i % len(base)]
        copy = i // len(base)
        paragraphs = row["output"].split("\n")
        shift = copy % max(1, len(paragraphs))
        rows.append({"instruction": f"{row['instruction']}（第{copy + 1}组）" if copy else row["instruction"],
                     "input": row["input"], "output": "\n".join(paragraphs[shift:] + paragraphs[:shift])})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alpaca_zh_bench.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({"alpaca_zh_bench": {"file_name": "alpaca_zh_bench.json"}}))
    return folder


TUNERY_TIMER = r'''
import json, sys, time
from tunery.config import parse_config
from tunery.data.dataset import encode_loaded, load_records
from tunery.data.template_select import resolve_template
from tunery.model.load import load_tokenizer

cfg = parse_config("train", overrides=json.loads(sys.argv[1]))
tokenizer = load_tokenizer(cfg)
template = resolve_template(cfg, tokenizer)
start = time.perf_counter()
prepared = encode_loaded(cfg, load_records(cfg), template, tokenizer)
print(json.dumps({"seconds": time.perf_counter() - start, "examples": len(prepared.train)}))
'''


def tunery_run(model: str, data_dir: Path, workers: int, cutoff_len: int, work: Path) -> dict:
    """One timed run in a fresh process, as LLaMA-Factory's."""
    args = dict(model_name_or_path=model, template="llama3", dataset="alpaca_zh_bench", dataset_dir=str(data_dir),
                cutoff_len=cutoff_len, preprocessing_num_workers=workers, output_dir=str(work / "out"))
    res = subprocess.run([sys.executable, "-c", TUNERY_TIMER, json.dumps(args)], capture_output=True, text=True,
                         env=common.bench_env(), timeout=1800, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def lf_run(model: str, data_dir: Path, workers: int, cutoff_len: int, work: Path) -> dict | None:
    python = common.LF_VENV / "bin" / "python"
    if not python.exists():
        return None
    args = dict(stage="sft", do_train=True, finetuning_type="lora", report_to="none", overwrite_cache=True,
                model_name_or_path=model, template="llama3", dataset="alpaca_zh_bench", dataset_dir=str(data_dir),
                cutoff_len=cutoff_len, output_dir=str(work / "lf-out"),
                preprocessing_num_workers=workers if workers > 1 else None)
    hf_home = tempfile.mkdtemp(prefix="hf-", dir=work)  # a fresh datasets cache: nothing reused between runs
    res = subprocess.run([str(python), "-c", LF_TIMER, json.dumps(args)], capture_output=True, text=True,
                         env=common.bench_env({"HF_HOME": hf_home}), timeout=1800)
    if res.returncode != 0:
        print(f"LLaMA-Factory failed (rc={res.returncode}): {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def to_markdown(data: dict) -> str:
    """RESULTS.md section: records/s of each tool and worker count, and Tunery's ratio per worker count."""
    out = [f"Load + convert + template + tokenize {data['records']} alpaca_zh-style records (cutoff_len "
           f"{data['cutoff_len']}, llama3 template, the tiny Llama-3 tokenizer), fastest of {data.get('repeats', 1)} "
           f"interleaved run(s) each, {data.get('cores', '?')} cores, load average {data.get('load_avg', '?')}. "
           "Imports and tokenizer loading are not timed for either tool.", "",
           "| tool | workers | examples | seconds | records/s | Tunery ÷ LF |", "|---|---|---|---|---|---|"]
    lf = data.get("llamafactory_records_per_s") or {}
    for run in data.get("runs", []):
        rate = data["records"] / run["seconds"]
        other = lf.get(str(run["workers"])) or lf.get(run["workers"])
        ratio = f"×{rate / other:.2f}" if run["tool"] == "tunery" and other else ""
        out.append(f"| {run['tool']} | {run['workers']} | {run['examples']} | {run['seconds']:.2f} | {rate:.0f} | "
                   f"{ratio} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--model", help="model folder whose tokenizer to use (default: the tiny llama3, built)")
    parser.add_argument("--cutoff-len", type=int, default=1024)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (tool, workers); the fastest is kept")
    parser.add_argument("--quick", action="store_true", help="2,000 records")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    records = 2_000 if args.quick else args.records
    workers = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory(prefix="tunery-preprocess-") as tmp:
        work = Path(tmp)
        model = args.model
        if not model:
            from tunery.demo.tiny import build_tiny_model

            model = str(build_tiny_model(work / "tiny-llama3", family="llama3"))
        data_dir = make_dataset(work / "data", records)
        best: dict[tuple[str, int], dict] = {}
        for _ in range(max(1, args.repeats)):  # interleaved, so that a change in machine load hits both tools
            for n in workers:
                for tool, run in (("tunery", tunery_run), ("llamafactory", lf_run)):
                    result = run(model, data_dir, n, args.cutoff_len, work)
                    kept = best.get((tool, n))
                    if result is not None and (kept is None or result["seconds"] < kept["seconds"]):
                        best[(tool, n)] = result
        rows = [(tool, n, best[(tool, n)]) for tool in ("tunery", "llamafactory") for n in workers
                if (tool, n) in best]

    print(f"load + convert + encode of {records} alpaca_zh-style records (cutoff_len {args.cutoff_len}, template "
          f"llama3, tokenizer {'tiny llama3' if not args.model else args.model}), {os.cpu_count()} CPU cores, "
          f"load average {common.load_avg():.1f}; fastest of {max(1, args.repeats)} interleaved run(s) each")
    print(f"{'tool':<14}{'workers':>8}{'examples':>10}{'seconds':>10}{'records/s':>12}")
    rps: dict[str, dict[int, float]] = {}
    for tool, n, result in rows:
        rate = records / result["seconds"]
        rps.setdefault(tool, {})[n] = round(rate, 1)
        print(f"{tool:<14}{n:>8}{result['examples']:>10}{result['seconds']:>10.2f}{rate:>12.0f}")
    summary = {"records": records, "cutoff_len": args.cutoff_len, "repeats": max(1, args.repeats),
               "cores": os.cpu_count(), "load_avg": round(common.load_avg(), 2),
               "tunery_records_per_s": rps.get("tunery"), "llamafactory_records_per_s": rps.get("llamafactory"),
               "runs": [{"tool": tool, "workers": n, "examples": result["examples"],
                         "seconds": round(result["seconds"], 3)} for tool, n, result in rows]}
    if "llamafactory" in rps:
        best_t, best_lf = max(rps["tunery"].values()), max(rps["llamafactory"].values())
        summary["speedup"] = round(best_t / best_lf, 2)
        for n in workers:
            if n in rps["llamafactory"] and n in rps["tunery"]:
                summary[f"speedup_{n}_workers"] = round(rps["tunery"][n] / rps["llamafactory"][n], 2)
        print(f"Tunery is {summary['speedup']}x LLaMA-Factory's records/s (best of each)")
    else:
        print(f"LLaMA-Factory not measured: no virtualenv at {common.LF_VENV} (bash ../shared/bench/llamafactory/"
              "setup.sh)")
    print(json.dumps(summary))
    if args.json:
        common.write_json(Path(args.json), summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
