"""Load test of `tunery api`: N chat completions at C concurrent clients (the real openai client), against the real
server in a subprocess. Prints errors (expected 0), p50/p95/max latency, requests/s and generated tokens/s.

    python benchmarks/api_load.py                       # the tiny model, built offline into a temp folder
    python benchmarks/api_load.py --model DIR --template llama3 --requests 500 --concurrency 50 --max-tokens 16

The engine generates one reply at a time, so latency grows with the queue: p50 is roughly half the queue's wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int, key: str):
    env = {**os.environ, "API_PORT": str(port), "API_KEY": key, "API_MODEL_NAME": "bench", "API_LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "tunery", "api", "--model_name_or_path", args.model, "--template", args.template,
           "--do_sample", "false", "--max_new_tokens", str(args.max_tokens)]
    if args.adapter:
        cmd += ["--adapter_name_or_path", args.adapter]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx

    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=2)
            return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("server did not start in 300 s")


async def run_load(base_url: str, key: str, requests: int, concurrency: int, max_tokens: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = [0]
    errors: list[str] = []

    async def one(i: int) -> None:
        async with gate:
            start = time.perf_counter()
            try:
                reply = await client.chat.completions.create(
                    model="bench", messages=[{"role": "user", "content": f"Question number {i}: who are you?"}],
                    max_tokens=max_tokens)
                if not reply.choices or reply.choices[0].message.content is None:
                    raise ValueError("empty choice")
                tokens[0] += reply.usage.completion_tokens
                latencies.append(time.perf_counter() - start)
            except Exception as err:  # noqa: BLE001 - every failure is counted and shown
                errors.append(f"{type(err).__name__}: {err}")

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    wall = time.perf_counter() - start
    await client.close()
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")

    return {
        "requests": requests, "concurrency": concurrency, "max_tokens": max_tokens, "errors": len(errors),
        "error_samples": errors[:3], "wall_s": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 2),
        "p50_latency_s": round(pct(50), 3), "p95_latency_s": round(pct(95), 3), "max_latency_s": round(pct(100), 3),
        "mean_latency_s": round(statistics.fmean(latencies), 3) if latencies else None,
        "completion_tokens": tokens[0], "tokens_per_s": round(tokens[0] / wall, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the tiny Llama-3 model, built offline)")
    parser.add_argument("--adapter", help="LoRA adapter folder")
    parser.add_argument("--template", default="llama3")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.model:
            from tunery.demo.tiny import build_tiny_model

            args.model = str(build_tiny_model(os.path.join(tmp, "tiny-llama3"), family="llama3"))
        port, key = free_port(), "bench-key"
        proc = start_server(args, port, key)
        try:
            result = asyncio.run(run_load(f"http://127.0.0.1:{port}/v1", key, args.requests, args.concurrency,
                                          args.max_tokens))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{result['requests']} requests, {result['concurrency']} concurrent, max_tokens {result['max_tokens']}: "
          f"{result['errors']} errors; latency p50 {result['p50_latency_s']} s, p95 {result['p95_latency_s']} s, "
          f"max {result['max_latency_s']} s; {result['requests_per_s']} requests/s, "
          f"{result['tokens_per_s']} generated tokens/s (wall {result['wall_s']} s)")
    print(json.dumps(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
