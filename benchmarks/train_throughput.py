"""Training throughput: `tunery train` and LLaMA-Factory's `llamafactory-cli train` on the same YAML, side by side.

Each run is its own process (Tunery under /usr/bin/time -v, LLaMA-Factory through ../shared/bench/llamafactory/run.sh,
which does the same), watched by benchmarks.common.Monitor. Variants run in turn and the whole round repeats, so that
Tunery and LLaMA-Factory alternate on a shared machine. Figures per run:

* samples/s       transformers' train_samples_per_second (optimizer steps × batch × grad-accum ÷ train_runtime;
                  with packing a "sample" is a packed row, see examples/s)
* tokens/s        non-pad input tokens (num_input_tokens_seen) ÷ train_runtime
* examples/s      samples/s; for packing and group_by_length: tokens/s ÷ the mean tokens of one example in the
                  random-order runs (a packed row holds several examples; a short group_by_length run sees the
                  longest examples first), so that all variants compare
* steady s/step   wall seconds per optimizer step from the first to the last logged step (no start-up, no eval)
* CPU s/step      CPU seconds of the whole process tree per step over the same span (less sensitive to other load)
* peak RSS        maximum resident set of the training process (GNU time)
* first step      process start → first trainer_log.jsonl line (logging_steps 1): start-up + data + model + 1 step
* train / eval loss  mean training loss; eval_loss on the val_size split after training

    python benchmarks/train_throughput.py                       # tunery vs llamafactory, 2 rounds
    python benchmarks/train_throughput.py --variants all --repeats 1 --max-steps 20
    python benchmarks/train_throughput.py --list
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

CONFIG = common.CONFIGS / "sft_lora_bench.yaml"

# name: (tool, YAML overrides, extra environment, what it shows)
VARIANTS: dict[str, tuple[str, dict, dict, str]] = {
    "tunery": ("tunery", {}, {}, "Tunery defaults (padding-free batches, no gradient checkpointing, glibc mmap "
                                 "threshold 1 MiB)"),
    "llamafactory": ("lf", {}, {}, "LLaMA-Factory defaults (gradient checkpointing on)"),
    "tunery-padding_free": ("tunery", {"padding_free": "false"}, {}, "batches padded to their longest example"),
    "tunery-mmap_threshold": ("tunery", {"malloc_mmap_threshold_mb": "0"}, {},
                              "glibc's own adaptive mmap threshold (heap fragmentation grows RSS)"),
    "tunery+mmap_4MiB": ("tunery", {"malloc_mmap_threshold_mb": "4"}, {}, "mmap threshold 4 MiB"),
    "tunery+group_by_length": ("tunery", {"train_sampling_strategy": "group_by_length"}, {},
                               "batches of similar lengths (transformers 5: train_sampling_strategy)"),
    "llamafactory+group_by_length": ("lf", {"train_sampling_strategy": "group_by_length"}, {}, "same, LF"),
    "tunery+packing": ("tunery", {"packing": "true"}, {}, "examples packed into cutoff_len rows (they see each other)"),
    "llamafactory+packing": ("lf", {"packing": "true"}, {}, "same, LF"),
    "tunery+neat_packing": ("tunery", {"neat_packing": "true"}, {}, "packed rows, examples kept apart"),
    "tunery+gradient_checkpointing": ("tunery", {"gradient_checkpointing": "true"}, {},
                                      "what LF does by default: less memory, more compute"),
    "llamafactory-gradient_checkpointing": ("lf", {"disable_gradient_checkpointing": "true"}, {},
                                            "LF with checkpointing off"),
    "tunery+1thread": ("tunery", {}, {"OMP_NUM_THREADS": "1"}, "torch intra-op threads = 1"),
    "llamafactory+1thread": ("lf", {}, {"OMP_NUM_THREADS": "1"}, "same, LF"),
    "tunery+eager": ("tunery", {"flash_attn": "disabled"}, {}, "eager attention instead of SDPA"),
    "tunery+dataloader_workers": ("tunery", {"dataloader_num_workers": "1", "dataloader_persistent_workers": "true"},
                                  {}, "collate in a worker process"),
}
DEFAULT_VARIANTS = ["tunery", "llamafactory"]
SUITE_VARIANTS = ["tunery", "llamafactory", "tunery-padding_free", "tunery-mmap_threshold",
                  "tunery+gradient_checkpointing", "llamafactory-gradient_checkpointing"]


def _yaml() -> dict:
    import yaml

    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_one(variant: str, max_steps: int, round_no: int, timeout: float, extra: dict | None = None) -> dict:
    tool, overrides, env_extra, _ = VARIANTS[variant]
    overrides = {**(extra or {}), **overrides}
    safe = variant.replace("+", "_").replace("-", "_")
    out = common.fresh_dir(common.WORK / "train" / f"{safe}_r{round_no}")
    run_dir = out / "run"  # the tool's output_dir; out/ keeps the log and GNU time's report
    pairs = {**overrides, "max_steps": str(max_steps), "output_dir": str(run_dir)}
    kv = [f"{k}={v}" for k, v in pairs.items()]
    env = common.bench_env(env_extra)
    if tool == "tunery":
        cmd = [common.TIME_BIN, "-v", "-o", str(out / "time.txt"), *common.tunery_cmd(), "train", str(CONFIG), *kv]
    else:
        env["LF_VENV"] = str(common.LF_VENV)
        cmd = ["bash", str(common.LF_DIR / "run.sh"), str(CONFIG), *kv]
    load_before = common.load_avg()
    mon = common.Monitor(cmd, log_file=run_dir / "trainer_log.jsonl", env=env, stdout_path=out / "log.txt")
    mon.run(timeout=timeout)
    res = {"variant": variant, "tool": tool, "round": round_no, "returncode": mon.returncode,
           "load_avg_before": load_before, "load_avg_after": common.load_avg(), "log": str(out / "log.txt")}
    if mon.returncode != 0:
        tail = (out / "log.txt").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        res["error"] = " | ".join(tail)
        return res
    if tool == "tunery":
        res.update(common.parse_time_v(out / "time.txt"))
    else:
        lines = (out / "log.txt").read_text(encoding="utf-8", errors="replace").strip().splitlines()
        lf = json.loads(lines[-1])
        res.update({k: lf.get(k) for k in ("wall_s", "peak_rss_mib", "import_s", "preprocess_s", "load_model_s")})
    res["tree_cpu_s"] = round(mon.cpu_s, 1)
    res["peak_tree_rss_mib"] = round(mon.peak_tree_rss_mib, 1)
    allr = _read_json(run_dir / "all_results.json")
    state = _read_json(run_dir / "trainer_state.json")
    runtime = allr.get("train_runtime")
    tokens = allr.get("num_input_tokens_seen") or state.get("num_input_tokens_seen")
    res.update({
        "train_runtime_s": runtime, "samples_per_s": allr.get("train_samples_per_second"),
        "tokens_seen": tokens, "tokens_per_s": round(tokens / runtime, 1) if tokens and runtime else None,
        "train_loss": allr.get("train_loss"), "eval_loss": allr.get("eval_loss"), "steps": state.get("global_step"),
    })
    res["heldout_loss"] = heldout_loss(run_dir, extra)  # after the measured process, not timed
    steps = [ln for ln in mon.lines if ln["row"].get("loss") is not None and ln["row"].get("current_steps")]
    res["timeline"] = [[ln["row"]["current_steps"], round(ln["wall"], 2), round(ln["cpu"], 1)] for ln in steps]
    if steps:
        res["first_step_s"] = round(steps[0]["wall"], 2)
        res["last_loss"] = steps[-1]["row"]["loss"]
    if len(steps) >= 2:
        n = steps[-1]["row"]["current_steps"] - steps[0]["row"]["current_steps"]
        if n > 0:
            res["steady_step_s"] = round((steps[-1]["wall"] - steps[0]["wall"]) / n, 3)
            res["cpu_s_per_step"] = round((steps[-1]["cpu"] - steps[0]["cpu"]) / n, 3)
    return res


def heldout_loss(run_dir: Path, extra: dict | None = None) -> float | None:
    """Token-mean loss of a run's final adapter on the YAML's held-out split, computed the same way for both tools.

    The tools' own ``eval_loss`` averages per-batch losses differently (here: Tunery weights each batch by its
    examples, LLaMA-Factory counts every batch alike), so the same adapter gets two figures; this one sums the loss
    over every labelled token and divides by their number. The split is Tunery's encoding of the YAML (with
    ``--set`` overrides, not the variant's), which equals LLaMA-Factory's (tests/test_parity_llamafactory.py)."""
    import tempfile

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    from tunery.config import parse_config
    from tunery.data.records import IGNORE_INDEX
    from tunery.data.template_select import resolve_template
    from tunery.model.load import load_tokenizer
    from tunery.train.workflow import load_data

    if not (run_dir / "adapter_model.safetensors").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        kv = [f"{k}={v}" for k, v in (extra or {}).items()] + [f"output_dir={tmp}/out"]
        cfg = parse_config("train", [str(CONFIG), *kv])
        tokenizer = load_tokenizer(cfg)
        data = load_data(cfg, tokenizer, resolve_template(cfg, tokenizer))
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, attn_implementation="sdpa")
    model = PeftModel.from_pretrained(model, str(run_dir)).eval()
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)
    examples = [{k: e[k] for k in ("input_ids", "attention_mask", "labels")} for e in data.eval]
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), 8):
            batch = collate(examples[i:i + 8])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                                       ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += int((labels != IGNORE_INDEX).sum())
    return round(total / count, 7) if count else None


def _reorders(variant: str) -> bool:
    """Variants whose optimizer steps hold other examples than random batches do: packing (a row holds several),
    group_by_length (a short run sees the longest examples first). Their examples/s is tokens/s ÷ the mean tokens of
    one example in the random-order runs."""
    return "packing" in variant or "group_by_length" in variant


def _best(key: str, values: list):
    """The least disturbed run's figure: the highest rate, the lowest time or memory (None when none)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return max(values) if key.endswith("_per_s") else min(values)


def summarize(runs: list[dict], batch: int) -> dict:
    """Median (and spread) per variant; examples/s; ratios of each variant to Tunery's and LF's defaults."""
    by: dict[str, list[dict]] = {}
    for r in runs:
        if r.get("returncode") == 0:
            by.setdefault(r["variant"], []).append(r)
    # Mean tokens of one unpacked example, per tool (from its unpacked runs): converts tokens/s to examples/s.
    per_example = {}
    for r in runs:
        if r.get("tokens_seen") and r.get("steps") and not _reorders(r["variant"]):
            per_example.setdefault(r["tool"], []).append(r["tokens_seen"] / (r["steps"] * batch))
    mean_tokens = {t: sum(v) / len(v) for t, v in per_example.items()}
    mean_all = sum(mean_tokens.values()) / len(mean_tokens) if mean_tokens else None
    rows = {}
    keys = ("samples_per_s", "tokens_per_s", "steady_step_s", "cpu_s_per_step", "peak_rss_mib", "first_step_s",
            "train_loss", "eval_loss", "heldout_loss", "wall_s", "train_runtime_s")
    for variant, rs in by.items():
        row = {k: [r.get(k) for r in rs] for k in keys}
        row["examples_per_s"] = [(r["tokens_per_s"] / mean_all) if (r.get("tokens_per_s") and mean_all) else None
                                 for r in rs] if _reorders(variant) else row["samples_per_s"]
        row["steady_samples_per_s"] = [batch / r["steady_step_s"] if r.get("steady_step_s") else None for r in rs]
        rows[variant] = {"n": len(rs), "values": row,
                         "median": {k: common.median(v) for k, v in row.items()},
                         "best": {k: _best(k, v) for k, v in row.items()}}
    ratios = {}
    base_t, base_lf = rows.get("tunery"), rows.get("llamafactory")
    for variant, row in rows.items():
        for base_name, base in (("tunery", base_t), ("llamafactory", base_lf)):
            if base is None or variant == base_name:
                continue
            ratios.setdefault(variant, {})[base_name] = {
                k: common.ratio(row["median"][k], base["median"][k])
                for k in ("examples_per_s", "tokens_per_s", "steady_samples_per_s", "cpu_s_per_step", "peak_rss_mib",
                          "first_step_s")}
            ratios[variant][base_name]["best_examples_per_s"] = common.ratio(row["best"]["examples_per_s"],
                                                                             base["best"]["examples_per_s"])
            ratios[variant][base_name]["heldout_loss_diff"] = (
                round(row["median"]["heldout_loss"] - base["median"]["heldout_loss"], 7)
                if row["median"]["heldout_loss"] is not None and base["median"]["heldout_loss"] is not None else None)
            ratios[variant][base_name]["eval_loss_diff"] = (
                round(row["median"]["eval_loss"] - base["median"]["eval_loss"], 4)
                if row["median"]["eval_loss"] is not None and base["median"]["eval_loss"] is not None else None)
    return {"rows": rows, "ratios": ratios, "mean_tokens_per_example": mean_tokens}


def _loss(values: list) -> str:
    """Held-out losses to 6 decimals (the tools' trained models agree to about 1e-7)."""
    got = [v for v in values if v is not None]
    if not got:
        return "—"
    lo, hi, mid = min(got), max(got), common.median(got)
    return f"{mid:.6f}" if lo == hi else f"{mid:.6f} ({lo:.6f}–{hi:.6f})"


def to_markdown(data: dict) -> str:
    summary = data["summary"]
    intro = (f"Config `{data['config']}` with max_steps={data['max_steps']} (batch {data['batch']} per optimizer "
             f"step){', overrides ' + str(data['overrides']) if data.get('overrides') else ''}. Each process runs "
             "alone, the variants one after another and the rounds repeated (tunery and llamafactory defaults in "
             "every round, the other variants in fewer: column runs). Median (min–max) over the runs.")
    out = [intro, ""]
    headers = ["variant", "runs", "examples/s", "tokens/s", "steady examples/s", "CPU s/step", "peak RSS MiB",
               "first step s", "train loss", "eval loss (tool's)", "held-out loss (token mean)", "wall s"]
    rows = []
    for variant, row in summary["rows"].items():
        v = row["values"]
        rows.append([variant, str(row["n"]), common.spread(v["examples_per_s"]), common.spread(v["tokens_per_s"]),
                     common.spread(v["steady_samples_per_s"]), common.spread(v["cpu_s_per_step"]),
                     common.spread(v["peak_rss_mib"]), common.spread(v["first_step_s"]),
                     common.spread(v["train_loss"]), common.spread(v["eval_loss"]), _loss(v["heldout_loss"]),
                     common.spread(v["wall_s"])])
    out.append(common.markdown_table(headers, rows))
    if summary["ratios"]:
        out += ["", "Ratios of medians (variant ÷ base; CPU s/step and RSS: lower is better; losses: difference):", ""]
        rrows = []
        for variant, bases in summary["ratios"].items():
            for base, r in bases.items():
                rrows.append([variant, base, r["examples_per_s"], r.get("best_examples_per_s"), r["tokens_per_s"],
                              r["cpu_s_per_step"], r["peak_rss_mib"], r["first_step_s"], r["eval_loss_diff"],
                              r.get("heldout_loss_diff")])
        out.append(common.markdown_table(["variant", "vs", "examples/s", "best examples/s", "tokens/s", "CPU s/step",
                                          "peak RSS", "first step", "Δ eval loss (tool's)", "Δ held-out loss"], rrows))
    failed = [r for r in data["runs"] if r.get("returncode") != 0]
    for r in failed:
        out.append(f"\n- {r['variant']} round {r['round']} failed (rc={r['returncode']}): {r.get('error', '')}")
    for name, why in data.get("skipped", {}).items():
        out.append(f"\n- {name}: not run — {why}")
    loads = [r.get("load_avg_before") for r in data["runs"]]
    if loads:
        out.append(f"\n1-minute load average before the runs: {common.spread(loads)} (on {data['cores']} cores).")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated names from --list, 'suite' (run_all's set) or 'all'")
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds; tunery and llamafactory (the defaults) run in every round (default 2)")
    parser.add_argument("--lever-repeats", type=int, default=1,
                        help="rounds in which the other variants run too (default 1)")
    parser.add_argument("--max-steps", type=int, default=None, help="override the YAML's max_steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra YAML override for every run (e.g. val_size=16 for a quick try)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a run is killed")
    parser.add_argument("--json", help="write all runs and the summary to this file")
    parser.add_argument("--append", action="store_true",
                        help="keep the runs already in --json (same max_steps and overrides) and summarize all")
    parser.add_argument("--rescore", action="store_true",
                        help="only compute the held-out loss of the runs in --json whose adapters are still there")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    args = parser.parse_args(argv)
    if args.rescore:
        if not args.json:
            parser.error("--rescore needs --json")
        data = json.loads(Path(args.json).read_text(encoding="utf-8"))
        for r in data["runs"]:
            if r.get("returncode") == 0 and r.get("heldout_loss") is None:
                run_dir = Path(r["log"]).parent / "run"
                r["heldout_loss"] = heldout_loss(run_dir, data.get("overrides"))
                print(f"[train] {r['variant']} round {r['round']}: held-out loss {r['heldout_loss']}", file=sys.stderr)
        data["summary"] = summarize(data["runs"], data["batch"])
        common.write_json(args.json, data)
        print(to_markdown(data))
        return 0
    if args.list:
        for name, (tool, over, env, why) in VARIANTS.items():
            print(f"{name:38s} {why}  {over or ''} {env or ''}")
        return 0
    names = {"all": list(VARIANTS), "suite": SUITE_VARIANTS}.get(args.variants, args.variants.split(","))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; see --list")
    skipped = {}
    if not common.lf_available():
        skipped.update({n: f"LLaMA-Factory venv missing at {common.LF_VENV} (bash {common.LF_DIR}/setup.sh)"
                        for n in names if VARIANTS[n][0] == "lf"})
    names = [n for n in names if n not in skipped]
    common.ensure_bench_model()
    cfg = _yaml()
    max_steps = args.max_steps or cfg["max_steps"]
    batch = cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"]
    extra = dict(kv.split("=", 1) for kv in args.set)
    runs = []
    if args.append and args.json and Path(args.json).exists():
        old = json.loads(Path(args.json).read_text(encoding="utf-8"))
        if old.get("max_steps") != max_steps or old.get("overrides") != extra:
            parser.error(f"--append: {args.json} holds runs with max_steps={old.get('max_steps')} and overrides "
                         f"{old.get('overrides')}; use the same settings or another file")
        runs = old["runs"]
        skipped = {**old.get("skipped", {}), **skipped}
    done = {}
    for r in runs:
        done[r["variant"]] = max(done.get(r["variant"], 0), r["round"])
    for round_no in range(1, args.repeats + 1):
        for name in names:
            if name not in DEFAULT_VARIANTS and round_no > args.lever_repeats:
                continue
            print(f"[train] round {round_no}/{args.repeats}: {name} ...", file=sys.stderr, flush=True)
            res = run_one(name, max_steps, done.get(name, 0) + round_no, args.timeout, extra)
            runs.append(res)
            print(json.dumps(res), flush=True)
    rounds = max([r["round"] for r in runs] or [0])
    ran = {r["variant"] for r in runs if r.get("returncode") == 0}
    skipped = {k: v for k, v in skipped.items() if k not in ran}
    data = {"config": str(CONFIG.relative_to(common.REPO)), "max_steps": max_steps, "batch": batch,
            "repeats": max(args.repeats, rounds), "lever_repeats": args.lever_repeats, "overrides": extra,
            "cores": common.machine_info()["cores"], "runs": runs, "skipped": skipped}
    data["summary"] = summarize(runs, batch)
    common.write_json(args.json, data)
    print(to_markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
