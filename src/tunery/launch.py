"""Entry of each torchrun process: ``python -m tunery.launch ARGS`` runs `tunery train ARGS` in this process.
Each process then runs the same training (transformers/accelerate do the distributed part: DDP, DeepSpeed or FSDP
from the options); :mod:`tunery.utils.handoff` decides when `tunery train` starts torchrun and builds its command.
"""

from __future__ import annotations

import sys

from tunery.utils.handoff import hand_off, is_worker, torchrun_command, torchrun_plan

__all__ = ["hand_off", "is_worker", "main", "torchrun_command", "torchrun_plan"]


def main() -> None:
    """Entry of each torchrun process: `python -m tunery.launch ARGS` = `tunery train ARGS` in this process."""
    from tunery.cli import main as cli_main

    raise SystemExit(cli_main(["train", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
