"""Chat generation speed: Tunery's chat engine (`HuggingFaceEngine.chat` and `.stream_chat`, what `tunery chat` runs
per turn) against a bare `model.generate` on a plainly loaded copy of the same model and the same prompt ids.

Greedy decoding; every call generates exactly --max-new-tokens tokens (min_new_tokens = max_new_tokens on both
paths, so a random model's early end-of-turn cannot shorten one of them). Calls alternate bare / chat / stream;
one warm-up call each is not counted. tokens/s = generated tokens ÷ wall time of the call (prefill included).

    python benchmarks/chat_speed.py [--max-new-tokens 128] [--repeats 5] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

PROMPT = "Give three tips for staying healthy, and explain each of them in a few sentences."


def measure(max_new_tokens: int, repeats: int, threads: int | None) -> dict:
    import os

    for key, value in common.OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import torch
    from transformers import AutoModelForCausalLM

    from tunery.chat.engine import HuggingFaceEngine
    from tunery.config import parse_config

    if threads:
        torch.set_num_threads(threads)
    path = common.ensure_bench_model()
    n = max_new_tokens
    cfg = parse_config("chat", [f"model_name_or_path={path}", "template=llama3", "do_sample=false",
                                f"max_new_tokens={n}"])
    t0 = time.perf_counter()
    engine = HuggingFaceEngine(cfg)
    engine_load_s = time.perf_counter() - t0
    engine.model.generation_config.min_new_tokens = n

    t0 = time.perf_counter()
    bare = AutoModelForCausalLM.from_pretrained(path).eval()
    bare_load_s = time.perf_counter() - t0
    messages = [{"role": "user", "content": PROMPT}]
    prompt_ids = engine.prompt_ids(messages)
    stops = engine.stop_ids
    input_ids = torch.tensor([prompt_ids])

    def run_bare() -> int:
        with torch.inference_mode():
            out = bare.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                max_new_tokens=n, min_new_tokens=n, eos_token_id=stops,
                                pad_token_id=engine.tokenizer.pad_token_id)
        return out.shape[1] - input_ids.shape[1]

    def run_chat() -> int:
        return engine.chat(messages).completion_tokens

    def run_stream() -> int:
        stream = engine.stream_chat(messages)
        for _ in stream:
            pass
        return stream.completion_tokens

    paths = {"bare generate": run_bare, "engine.chat": run_chat, "engine.stream_chat (tunery chat)": run_stream}
    times: dict[str, list[float]] = {k: [] for k in paths}
    tokens: dict[str, int] = {}
    for name, fn in paths.items():  # warm-up
        tokens[name] = fn()
    for _ in range(repeats):
        for name, fn in paths.items():
            t = time.perf_counter()
            got = fn()
            dt = time.perf_counter() - t
            tokens[name] = got
            times[name].append(got / dt)
    return {"max_new_tokens": n, "repeats": repeats, "prompt_tokens": len(prompt_ids), "threads": torch.get_num_threads(),
            "engine_load_s": round(engine_load_s, 2), "bare_load_s": round(bare_load_s, 2),
            "generated_tokens": tokens, "tokens_per_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "load_avg": common.load_avg()}


def measure_cli(max_new_tokens: int, turns: int) -> dict:
    """`tunery chat` itself, stdin piped (the same prompt `turns` times, `clear` between): the tokens/s it prints.
    Its replies are not forced to full length (no min_new_tokens option), so a reply may stop early."""
    import re
    import subprocess

    path = common.ensure_bench_model()
    cmd = [*common.tunery_cmd(), "chat", f"model_name_or_path={path}", "template=llama3", "do_sample=false",
           f"max_new_tokens={max_new_tokens}"]
    t = time.perf_counter()
    res = subprocess.run(cmd, input=f"{PROMPT}\nclear\n" * turns, capture_output=True, text=True,
                         env=common.bench_env(), cwd=common.REPO)
    wall = time.perf_counter() - t
    found = re.findall(r"\[(\d+) tokens, ([\d.]+) s, ([\d.]+) tokens/s\]", res.stdout)
    return {"returncode": res.returncode, "wall_s": round(wall, 2), "tokens": [int(a) for a, _, _ in found],
            "tokens_per_s": [float(c) for _, _, c in found],
            "error": None if res.returncode == 0 else (res.stderr.strip().splitlines() or ["?"])[-1]}


def to_markdown(data: dict) -> str:
    tps = data["tokens_per_s"]
    base = common.median(tps["bare generate"])
    rows = []
    for name, values in tps.items():
        med = common.median(values)
        rows.append([name, str(data["generated_tokens"][name]), common.spread(values),
                     common.ratio(med, base) if name != "bare generate" else 1.0])
    head = (f"Bench model, greedy, {data['max_new_tokens']} new tokens per call (forced), prompt "
            f"{data['prompt_tokens']} tokens, {data['repeats']} calls each, alternating, torch threads "
            f"{data['threads']}; load average {data['load_avg']}. Model load: engine {data['engine_load_s']} s, "
            f"bare {data['bare_load_s']} s.\n\n")
    cli = data.get("cli")
    if cli and cli.get("tokens_per_s"):
        tokens = sorted(set(cli["tokens"]))
        rows.append(["`tunery chat` CLI (piped; prints its own tokens/s)", "/".join(map(str, tokens)),
                     common.spread(cli["tokens_per_s"]), common.ratio(common.median(cli["tokens_per_s"]), base)])
    table = common.markdown_table(["path", "tokens/call", "tokens/s median (min–max)", "÷ bare"], rows)
    if cli and cli.get("error"):
        table += f"\n\n- `tunery chat` CLI failed: {cli['error']}"
    return head + table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--cli-turns", type=int, default=3, help="turns piped into `tunery chat` (0: skip it)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    data = measure(args.max_new_tokens, args.repeats, args.threads)
    if args.cli_turns:
        data["cli"] = measure_cli(args.max_new_tokens, args.cli_turns)
    common.write_json(args.json, data)
    print(to_markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
