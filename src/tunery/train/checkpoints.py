"""Finding the checkpoint to resume from. Only complete checkpoints (trainer_state.json written last) count."""

from __future__ import annotations

import os
import re

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "trainer_state.json"))


def list_checkpoints(output_dir: str) -> list[str]:
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def last_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint-N folder in output_dir, or None."""
    for path in reversed(list_checkpoints(output_dir)):
        if is_complete(path):
            return path
    return None
