"""Memory levers of one SFT-LoRA training process: peak RSS and CPU seconds of a few optimizer steps on the
longest batches of the bench data (4 × 512 tokens: the batch that sets a run's peak), each lever in a fresh process.

The model, data, LoRA and optimizer are Tunery's own (the benchmark YAML through `parse_config`, `prepare_datasets`,
`load_model`, `prepare_for_training`), without the Trainer, start-up or evaluation — minutes instead of a full run,
so that memory levers can be compared quickly. Levers:

* default                  no gradient checkpointing, glibc's own malloc settings (`tunery train` sets a 1 MiB
                           mmap threshold on CPU: malloc_mmap_threshold_mb)
* gradient_checkpointing   what LLaMA-Factory does by default
* mmap_1MiB / mmap_4MiB    glibc `MALLOC_MMAP_THRESHOLD_`: tensors of at least that size are always mmapped and go
                           back to the OS when freed (glibc otherwise raises the threshold after the first big free,
                           serves later tensors from its heap and keeps the freed pages: RSS grows with fragmentation)
* trim_0                   `MALLOC_TRIM_THRESHOLD_=0` (also freezes the dynamic mmap threshold, at 128 KiB)
* labelled_logits          the LM head and the loss only on positions that have a label (no logits for padding
                           and prompt tokens) — a change to the SFT loss, emulated here

    python benchmarks/train_memory.py [--levers default,mmap_1MiB,...] [--steps 3] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

LEVERS = {
    "default": ({}, []),
    "gradient_checkpointing": ({}, ["gradient_checkpointing=true"]),
    "mmap_1MiB": ({"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}, []),
    "mmap_4MiB": ({"MALLOC_MMAP_THRESHOLD_": str(4 << 20)}, []),
    "trim_0": ({"MALLOC_TRIM_THRESHOLD_": "0"}, []),
    "labelled_logits": ({}, []),
    "mmap_1MiB+labelled_logits": ({"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}, []),
}


def _labelled_loss(model, batch):
    """Causal-LM loss computing the head only where a label exists (same value as transformers' mean loss)."""
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = base.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), labels[keep])


def child(lever: str, steps: int) -> dict:
    """One lever, in this process: returns peak RSS (MiB) and CPU seconds of `steps` optimizer steps."""
    import resource
    import time

    import torch
    from transformers import DataCollatorForSeq2Seq

    from tunery.config import parse_config
    from tunery.data.dataset import prepare_datasets
    from tunery.data.template_select import resolve_template
    from tunery.model.adapters import prepare_for_training
    from tunery.model.load import load_model, load_tokenizer

    def rss() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    _, overrides = LEVERS[lever]
    out = common.WORK / "memory" / lever
    cfg = parse_config("train", [str(common.CONFIGS / "sft_lora_bench.yaml"), f"output_dir={out}", *overrides])
    tokenizer = load_tokenizer(cfg)
    template = resolve_template(cfg, tokenizer)
    train = prepare_datasets(cfg, tokenizer, template).train
    rss_data = rss()
    torch.manual_seed(0)
    model = prepare_for_training(load_model(cfg, tokenizer), cfg)
    model.train()
    rss_model = rss()
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    longest = sorted(train, key=lambda e: -len(e["input_ids"]))[: 4 * steps]
    keys = [k for k in ("input_ids", "attention_mask", "labels") if k in longest[0]]
    batches = [collate([{k: e[k] for k in keys} for e in longest[i:i + 4]])
               for i in range(0, len(longest), 4)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    labelled = "labelled_logits" in lever
    wall, cpu = time.perf_counter(), time.process_time()
    losses = []
    for batch in batches:
        loss = _labelled_loss(model, batch) if labelled else model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(float(loss), 4))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"lever": lever, "peak_rss_mib": round(rss()), "rss_after_data_mib": round(rss_data),
            "rss_after_model_mib": round(rss_model), "steps": len(batches),
            "batch_shape": list(batches[0]["input_ids"].shape), "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(time.process_time() - cpu, 1), "minor_faults": usage.ru_minflt, "losses": losses,
            "threads": torch.get_num_threads()}


def measure(levers: list[str], steps: int, threads: int | None) -> dict:
    results = []
    for lever in levers:
        env_extra = dict(LEVERS[lever][0])
        if threads:
            env_extra["OMP_NUM_THREADS"] = str(threads)
        print(f"[memory] {lever} ...", file=sys.stderr, flush=True)
        res = subprocess.run([sys.executable, __file__, "--child", lever, "--steps", str(steps)], capture_output=True,
                             text=True, env=common.bench_env(env_extra), cwd=common.REPO, check=False)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode != 0 or not lines:
            results.append({"lever": lever, "error": (res.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            results.append({**json.loads(lines[-1]), "env": LEVERS[lever][0], "load_avg": common.load_avg()})
        print(json.dumps(results[-1]), flush=True)
    return {"steps": steps, "threads": threads, "results": results}


def to_markdown(data: dict) -> str:
    base = next((r for r in data["results"] if r["lever"] == "default" and "error" not in r), None)
    rows = []
    for r in data["results"]:
        if "error" in r:
            rows.append([r["lever"], "failed: " + r["error"], "", "", "", ""])
            continue
        rows.append([r["lever"], r["peak_rss_mib"], common.ratio(r["peak_rss_mib"], base["peak_rss_mib"]) if base
                     else None, r["cpu_s"], common.ratio(r["cpu_s"], base["cpu_s"]) if base else None,
                     str(r["losses"][-1])])
    head = (f"{data['steps']} optimizer steps on the longest batches (4 × 512 tokens), torch threads "
            f"{data['threads'] or 'default'}, each lever a fresh process. RSS after imports + data ≈ "
            f"{base['rss_after_data_mib'] if base else '?'} MiB, after the model ≈ "
            f"{base['rss_after_model_mib'] if base else '?'} MiB.\n\n")
    return head + common.markdown_table(["lever", "peak RSS MiB", "÷ default", "CPU s", "÷ default", "last loss"],
                                        rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levers", default="default,gradient_checkpointing,mmap_1MiB,mmap_4MiB,labelled_logits",
                        help=f"comma-separated, from {', '.join(LEVERS)}")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for every lever (0: torch's default)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        for key, value in common.OFFLINE_ENV.items():
            os.environ.setdefault(key, value)
        print(json.dumps(child(args.child, args.steps)))
        return 0
    levers = args.levers.split(",")
    unknown = [x for x in levers if x not in LEVERS]
    if unknown:
        parser.error(f"unknown lever(s) {unknown}")
    data = measure(levers, args.steps, args.threads or None)
    common.write_json(args.json, data)
    print(to_markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
