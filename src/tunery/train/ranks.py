"""Several processes must train the same thing: before anything is written, every rank's options and encoded
training data are compared (a digest all-gathered over the process group); where they differ, rank 0 says which
and every rank stops."""

from __future__ import annotations

import hashlib
import json
from array import array
from typing import TYPE_CHECKING, Any

from tunery.errors import TuneryError

if TYPE_CHECKING:
    from tunery.config.loader import Config


class RanksDisagree(TuneryError):
    """The ranks of one run were given different options or data. Rank 0 carries the message; the others are quiet
    (an empty message: the CLI prints nothing for them)."""


def data_digest(examples: list[dict] | None) -> str:
    """A digest of the encoded examples (every token id, label and extra column, in order)."""
    digest = hashlib.blake2b(digest_size=16)
    for example in examples or []:
        for key in sorted(example):
            value = example[key]
            digest.update(key.encode())
            if isinstance(value, list) and all(isinstance(v, int) for v in value):
                digest.update(array("q", value).tobytes())
            else:
                digest.update(json.dumps(value, default=str).encode())
    return digest.hexdigest()


def rank_summary(cfg: Config, train: list[dict] | None, evaluation: list[dict] | None) -> dict[str, Any]:
    options = json.loads(json.dumps(cfg.to_dict(explicit_only=True), default=str, sort_keys=True))
    return {"options": options, "train": data_digest(train), "train_examples": len(train or []),
            "eval": data_digest(evaluation)}


def disagreement(summaries: list[dict[str, Any]]) -> str | None:
    """One line naming the first rank that differs from rank 0 and how, or None when all agree."""
    first = summaries[0]
    for rank, other in enumerate(summaries[1:], start=1):
        keys = sorted(set(first["options"]) | set(other["options"]))
        diff = [k for k in keys if first["options"].get(k) != other["options"].get(k)]
        if diff:
            shown = ", ".join(f"{k} ({json.dumps(first['options'].get(k))} on rank 0, "
                              f"{json.dumps(other['options'].get(k))} on rank {rank})" for k in diff[:3])
            more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
            return (f"the processes of this run were given different options: {shown}{more} — run the same "
                    "command and config on every node")
        if first["train"] != other["train"] or first["eval"] != other["eval"]:
            split = "training" if first["train"] != other["train"] else "evaluation"
            return (f"the processes of this run encoded different {split} data (rank 0: "
                    f"{first['train_examples']} examples, rank {rank}: {other['train_examples']}, contents differ) "
                    "— give every node the same dataset files and dataset_dir")
    return None


def check_ranks_agree(cfg: Config, args, train: list[dict] | None, evaluation: list[dict] | None) -> None:
    """Raise RanksDisagree on every rank (the message on rank 0 only) when the ranks' options or data differ."""
    if args.world_size <= 1:
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, rank_summary(cfg, train, evaluation))
    problem = disagreement(gathered)
    if problem:
        raise RanksDisagree(problem if dist.get_rank() == 0 else "")
