"""Run the whole benchmark suite and write benchmarks/RESULTS.md.

Each part runs in its own process (`python benchmarks/<part>.py --json ...`) and leaves its raw figures in
saves/bench/results/<part>.json; this script then writes RESULTS.md: machine, versions, date, every table, and the
targets (met / not met, by how much). A hand-written block between the NOTES markers in an existing RESULTS.md is
kept as it is.

    python benchmarks/run_all.py                    # everything (about 20-40 min on 2 idle cores; longer when busy)
    python benchmarks/run_all.py --parts startup,chat
    python benchmarks/run_all.py --quick            # smoke run: 3 steps, 1 round, small eval split
    python benchmarks/run_all.py --report-only      # rewrite RESULTS.md from the saved JSON
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import chat_speed  # noqa: E402
import common  # noqa: E402
import preprocess  # noqa: E402
import startup  # noqa: E402
import train_throughput  # noqa: E402

RESULTS_DIR = common.WORK / "results"
RESULTS_MD = HERE / "RESULTS.md"
PARTS = ("startup", "chat", "preprocess", "train")
NOTES_BEGIN, NOTES_END = "<!-- NOTES -->", "<!-- /NOTES -->"
TARGETS = {"train_speed": 1.5, "preprocess_speed": 3.0, "help_s": 0.3, "chat_ratio": 0.9}


def _run(script: str, args: list[str], json_path: Path) -> bool:
    cmd = [sys.executable, str(HERE / script), *args, "--json", str(json_path)]
    print(f"[run_all] {' '.join(cmd)}", file=sys.stderr, flush=True)
    res = subprocess.run(cmd, cwd=common.REPO, env=common.bench_env())
    if res.returncode != 0:
        print(f"[run_all] {script} failed (rc={res.returncode})", file=sys.stderr)
    return res.returncode == 0


def _load(name: str):
    path = RESULTS_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _preprocess_ratios(pre: dict | None) -> dict[str, float]:
    """Tunery ÷ LLaMA-Factory records/s per worker count ("1", "2", ...)."""
    if not pre:
        return {}
    t, lf = pre.get("tunery_records_per_s") or {}, pre.get("llamafactory_records_per_s") or {}
    return {n: t[n] / lf[n] for n in t if n in lf and lf[n]}


def _verdict(value, target, higher_is_better=True) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "**met**"
    gap = (target / value if higher_is_better else value / target) if value else float("inf")
    return f"**not met** (×{gap:.2f} short)"


def targets_table(train, chat, start, pre) -> str:
    rows = []
    summ = (train or {}).get("summary", {})
    med = {k: v["median"] for k, v in summ.get("rows", {}).items()}
    t, lf = med.get("tunery"), med.get("llamafactory")
    if t and lf:
        sp = common.ratio(t["examples_per_s"], lf["examples_per_s"])
        best = summ["rows"]["tunery"].get("best", {})
        best_lf = summ["rows"]["llamafactory"].get("best", {})
        sp_best = common.ratio(best.get("examples_per_s"), best_lf.get("examples_per_s"))
        cpu = common.ratio(lf["cpu_s_per_step"], t["cpu_s_per_step"])
        rss = common.ratio(t["peak_rss_mib"], lf["peak_rss_mib"])
        dl = (t["heldout_loss"] - lf["heldout_loss"]) \
            if t.get("heldout_loss") is not None and lf.get("heldout_loss") is not None else None
        rows.append(["training samples/s ≥ 1.5× LF (Tunery defaults vs LF defaults, same YAML)",
                     f"×{common.fmt(sp)} median, ×{common.fmt(sp_best)} best run vs best run, "
                     f"×{common.fmt(cpu)} in CPU s/step", _verdict(sp, TARGETS["train_speed"]) + " (median)"])
        loss_text = "—" if dl is None else (f"Δ {dl:+.1e} ({t['heldout_loss']:.7f} vs {lf['heldout_loss']:.7f}, "
                                            "token-mean loss on the held-out split)")
        loss_verdict = ("not measured" if dl is None else "**met**" if dl <= 0 else
                        "**met** (equal to float precision)" if dl <= 1e-5 else "**not met**")
        rows.append(["… at equal-or-lower held-out loss", loss_text, loss_verdict])
        rss_text = f"×{common.fmt(rss)} ({common.fmt(t['peak_rss_mib'])} vs {common.fmt(lf['peak_rss_mib'])} MiB)"
        rows.append(["… with peak RSS no higher", rss_text, _verdict(rss, 1.0, higher_is_better=False)])
    else:
        rows.append(["training samples/s ≥ 1.5× LF", "—", "not measured"])
    ratios = _preprocess_ratios(pre)
    for n, pr in sorted(ratios.items()):
        rows.append([f"preprocessing ≥ 3× LF's records/s, {n} worker(s)", f"×{common.fmt(pr)}",
                     _verdict(pr, TARGETS["preprocess_speed"])])
    if not ratios:
        rows.append(["preprocessing ≥ 3× LF's records/s", "—", "not measured"])
    helps = (start or {}).get("times_s", {}).get("tunery --help")
    h = common.median(helps) if helps else None
    rows.append(["`tunery --help` ≤ 0.3 s", f"{common.fmt(h)} s", _verdict(h, TARGETS["help_s"], False)])
    if chat:
        tps = chat["tokens_per_s"]
        base = common.median(tps["bare generate"])
        c = common.ratio(common.median(tps["engine.stream_chat (tunery chat)"]), base)
        rows.append(["`tunery chat` (stream_chat) within 10 % of bare generate", f"×{common.fmt(c)} of bare",
                     _verdict(c, TARGETS["chat_ratio"])])
    else:
        rows.append(["`tunery chat` within 10 % of bare generate", "—", "not measured"])
    return common.markdown_table(["target", "measured", "verdict"], rows)


def _notes(old: str) -> str:
    if NOTES_BEGIN in old and NOTES_END in old:
        return old[old.index(NOTES_BEGIN): old.index(NOTES_END) + len(NOTES_END)]
    return f"{NOTES_BEGIN}\n(Analysis written by hand goes here; run_all.py keeps this block.)\n{NOTES_END}"


def machine_block(info: dict) -> str:
    v = info["versions"]
    lf = info.get("lf_versions") or {}
    lines = [f"- Date: {info['date']}",
             f"- Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB RAM, {info['os']}; CPU only "
             "(no GPU machine was available to this task, so the GPU profile part is skipped)",
             f"- Load average when the report was written: {info['load_avg']} — the cores are shared with other "
             "developers' test runs, so every figure is noisy; ratios come from back-to-back, alternating runs",
             "- Tunery venv: " + ", ".join(f"{k} {val}" for k, val in v.items())]
    if lf:
        lines.append("- LLaMA-Factory venv: " + ", ".join(f"{k} {val}" for k, val in lf.items()))
    return "\n".join(lines)


def write_report() -> str:
    info = _load("machine") or common.machine_info()
    train, chat, start, pre = _load("train"), _load("chat"), _load("startup"), _load("preprocess")
    first_step = {}
    if train:
        for r in train["runs"]:
            if r.get("first_step_s") is not None and r["variant"] in ("tunery", "llamafactory"):
                first_step.setdefault(r["variant"], []).append(r["first_step_s"])
    old = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.exists() else ""
    parts = ["# Benchmark results", "", "Written by `python benchmarks/run_all.py` (see README.md for each script).",
             "", machine_block(info), "", "## Targets", "", targets_table(train, chat, start, pre), "",
             "## Training throughput (SFT LoRA, bench model, same YAML for both tools)", "",
             train_throughput.to_markdown(train) if train else "not run", "", "## Preprocessing", ""]
    parts.append(preprocess.to_markdown(pre) if pre and pre.get("runs") else "not run")
    parts += ["", "## Start-up", "", startup.to_markdown(start, first_step) if start else "not run", "",
              "## Chat generation", "", chat_speed.to_markdown(chat) if chat else "not run", "", "## Notes", "",
              _notes(old), ""]
    text = "\n".join(parts)
    RESULTS_MD.write_text(text, encoding="utf-8")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {PARTS}")
    parser.add_argument("--variants", default="suite", help="training variants (train_throughput.py --list)")
    parser.add_argument("--repeats", type=int, default=2, help="training rounds (default 2)")
    parser.add_argument("--max-steps", type=int, default=None, help="override the YAML's max_steps")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 steps, 1 round, 16 eval records")
    parser.add_argument("--report-only", action="store_true", help="only rewrite RESULTS.md from saved JSON")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        parser.error(f"unknown part(s) {bad}; choose from {PARTS}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        common.ensure_bench_model()
        common.write_json(RESULTS_DIR / "machine.json", common.machine_info())
        if "startup" in parts:
            _run("startup.py", ["--repeats", "3" if args.quick else "7"], RESULTS_DIR / "startup.json")
        if "chat" in parts:
            _run("chat_speed.py", ["--repeats", "2" if args.quick else "5", "--max-new-tokens",
                                   "32" if args.quick else "128"], RESULTS_DIR / "chat.json")
        if "preprocess" in parts:
            _run("preprocess.py", ["--quick"] if args.quick else ["--repeats", "5"], RESULTS_DIR / "preprocess.json")
        if "train" in parts:
            targs = ["--variants", args.variants, "--repeats", "1" if args.quick else str(args.repeats)]
            if args.quick:
                targs += ["--max-steps", "3", "--set", "val_size=16"]
            elif args.max_steps:
                targs += ["--max-steps", str(args.max_steps)]
            _run("train_throughput.py", targs, RESULTS_DIR / "train.json")
    print(write_report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
