"""When `tunery train` runs as several processes (GPUs, nodes) and how it hands itself over to torchrun:
``python -m tunery.torchrun … -m tunery.launch ARGS`` (torch.distributed.run) when the environment asks for it —
FORCE_TORCHRUN=1, NPROC_PER_NODE, NNODES > 1 — or when several CUDA devices are visible.

Environment: NPROC_PER_NODE (default: the CUDA devices, at least 1), NNODES (1), NODE_RANK (0), MASTER_ADDR
(127.0.0.1), MASTER_PORT (a free port), FORCE_TORCHRUN.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping

_TRUE = ("1", "true", "yes", "y", "on")


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _free_port() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def is_worker(env: Mapping[str, str] = os.environ) -> bool:
    """True inside a process started by torchrun (or any launcher that sets the ranks)."""
    return "LOCAL_RANK" in env or "TORCHELASTIC_RUN_ID" in env


def torchrun_plan(env: Mapping[str, str] = os.environ, devices: int | None = None) -> dict[str, str] | None:
    """torchrun's arguments when this run should use several processes, else None."""
    if is_worker(env):
        return None
    force = env.get("FORCE_TORCHRUN", "").lower() in _TRUE
    nnodes = env.get("NNODES", "1")
    asked = force or env.get("NPROC_PER_NODE") or nnodes != "1"
    if not asked:
        devices = _cuda_devices() if devices is None else devices
        if devices <= 1:
            return None
    if not env.get("NPROC_PER_NODE") and devices is None:
        devices = _cuda_devices()
    return {
        "nnodes": nnodes,
        "node_rank": env.get("NODE_RANK", "0"),
        "nproc_per_node": env.get("NPROC_PER_NODE") or str(max(devices or 0, 1)),
        "master_addr": env.get("MASTER_ADDR", "127.0.0.1"),
        "master_port": env.get("MASTER_PORT") or _free_port(),
    }


def torchrun_command(argv: list[str], plan: dict[str, str]) -> list[str]:
    command = [sys.executable, "-m", "tunery.torchrun"]  # torchrun, quiet where a worker already explained
    for key in ("nnodes", "node_rank", "nproc_per_node", "master_addr", "master_port"):
        command += [f"--{key}", plan[key]]
    return command + ["-m", "tunery.launch", *argv]


def hand_off(argv: list[str], plan: dict[str, str]) -> int:
    """Run the training under torchrun and return its exit code."""
    from tunery.utils.logging import get_logger

    get_logger(__name__).info("starting %s process(es) on node %s of %s through torchrun (master %s:%s)",
                              plan["nproc_per_node"], plan["node_rank"], plan["nnodes"], plan["master_addr"],
                              plan["master_port"])
    process = subprocess.Popen(torchrun_command(argv, plan))
    try:
        return process.wait()
    except KeyboardInterrupt:  # torchrun got the Ctrl-C too: let the workers save their checkpoint and stop
        return process.wait()
