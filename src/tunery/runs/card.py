"""The run card: ``run_card.json`` + ``RUN.md`` in every output_dir.

Written when training starts (status ``running``, with this process's pid and host), updated with the data figures
once they are known, and finished with the final metrics (``finished``, ``interrupted`` or ``failed``). A card still
``running`` whose process is gone is a crash (``tunery runs`` says so, with the last complete checkpoint).

The card holds every option with where its value came from (a file, the command line, or the default), the library
versions, the hardware, each dataset file's fingerprint, the template and the tokenizer's hash — what
``tunery train --reproduce OUTPUT_DIR`` needs to rerun the run and to say what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import time
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunery.config.loader import Config

CARD_FILE = "run_card.json"
SUMMARY_FILE = "RUN.md"
CARD_VERSION = 1
LIBRARIES = ("tunery", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def versions() -> dict[str, str]:
    out = {}
    for pkg in LIBRARIES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpus": os.cpu_count(), "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    try:
        import torch

        if torch.cuda.is_available():
            info["accelerators"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def file_fingerprint(path: str) -> dict[str, Any]:
    """Size and sha256 of a file — for a file over 8 MiB a ``sampled_sha256`` of its size and three 1 MiB blocks,
    as the encoding cache keys it (so that a large dataset does not cost every run a full read); a folder gets the
    fingerprints of its files."""
    from tunery.data.encoding_cache import content_fingerprint

    if os.path.isdir(path):
        return {"files": {name: file_fingerprint(os.path.join(path, name)) for name in sorted(os.listdir(path))
                          if not name.startswith(".")}}
    return {"size": os.path.getsize(path), **content_fingerprint(path)}


def dataset_fingerprints(cfg: Config) -> dict[str, Any]:
    """name -> where the data comes from and, for local files, their size and sha256."""
    from tunery.data.registry import get_dataset_specs

    out: dict[str, Any] = {}
    for split, names in (("train", list(cfg.dataset or [])), ("eval", list(cfg.eval_dataset or []))):
        if not names:
            continue
        for spec in get_dataset_specs(names, cfg.dataset_dir):
            entry: dict[str, Any] = {"split": split, "load_from": spec.load_from}
            if spec.load_from == "file" and os.path.exists(spec.path):
                entry["path"] = os.path.abspath(spec.path)
                entry.update(file_fingerprint(spec.path))
            else:
                entry["source"] = spec.dataset_name
            out[spec.name] = entry
    return out


def tokenizer_hash(model_path: str | None) -> str | None:
    """sha256 over the tokenizer files of a local model folder (None for a hub id)."""
    if not model_path or not os.path.isdir(model_path):
        return None
    digest = hashlib.sha256()
    found = False
    for name in TOKENIZER_FILES:
        path = os.path.join(model_path, name)
        if os.path.isfile(path):
            found = True
            digest.update(name.encode())
            with open(path, "rb") as fh:
                digest.update(fh.read())
    return digest.hexdigest() if found else None


def resolved_options(cfg: Config) -> dict[str, dict[str, Any]]:
    """Every option: its value and where it came from (a config file, 'command line', or 'default')."""
    sources = cfg.sources or {}
    out = {}
    for name, value in sorted(cfg.values.items()):
        out[name] = {"value": value, "source": sources.get(name, "default")}
    return out


def card_path(output_dir: str) -> str:
    return os.path.join(output_dir, CARD_FILE)


def read_card(output_dir: str) -> dict | None:
    try:
        with open(card_path(output_dir), encoding="utf-8") as fh:
            card = json.load(fh)
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def _write(output_dir: str, card: dict) -> None:
    os.makedirs(output_dir, exist_ok=True)
    tmp = card_path(output_dir) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, ensure_ascii=False, default=str)
    os.replace(tmp, card_path(output_dir))  # a reader never sees half a card
    with open(os.path.join(output_dir, SUMMARY_FILE), "w", encoding="utf-8") as fh:
        fh.write(summary_markdown(card))


def begin(cfg: Config, resume: str | None = None) -> None:
    """Write the card of a run that starts now (rank 0 only). A resumed run keeps its card and adds an attempt."""
    if not _is_main():
        return
    previous = read_card(cfg.output_dir) if resume else None
    attempt = {"started_at": _now(), "pid": os.getpid(), "host": socket.gethostname(), "resumed_from": resume}
    card = {
        "card_version": CARD_VERSION,
        "status": "running",
        "stage": cfg.stage,
        "finetuning_type": cfg.finetuning_type,
        "model_name_or_path": cfg.model_name_or_path,
        "output_dir": os.path.abspath(cfg.output_dir),
        "started_at": (previous or {}).get("started_at") or attempt["started_at"],
        "attempts": (previous or {}).get("attempts", []) + [attempt],
        "pid": attempt["pid"],
        "host": attempt["host"],
        "options": resolved_options(cfg),
        "explicit": sorted(cfg.explicit),
        "versions": versions(),
        "hardware": hardware(),
        "datasets": dataset_fingerprints(cfg),
        "template": cfg.template,
        "tokenizer_sha256": tokenizer_hash(cfg.model_name_or_path),
        "data": (previous or {}).get("data", {}),
        "metrics": {},
    }
    _write(cfg.output_dir, card)


def note_data(cfg: Config, prepared) -> None:
    """Add the dataset figures (examples, drops by cause, trained tokens) once the data is encoded."""
    if not _is_main():
        return
    card = read_card(cfg.output_dir)
    if card is None:
        return
    card["data"] = data_figures(prepared)
    _write(cfg.output_dir, card)


def data_figures(prepared) -> dict[str, Any]:
    from tunery.data.records import IGNORE_INDEX

    figures: dict[str, Any] = {"dropped": dict(getattr(prepared, "dropped", {}) or {})}
    counted = getattr(prepared, "figures", None) or {}
    for split in ("train", "eval"):
        examples = getattr(prepared, split, None)
        if not examples:
            continue
        if not hasattr(examples, "__len__"):  # streaming: counted by nobody, read only by the Trainer
            figures[split] = {"streaming": True}
            continue
        if split in counted:  # counted while the encoding was written: the dataset is not read again
            known = counted[split]
            figures[split] = {k: int(known.get(k, 0)) for k in ("examples", "tokens", "trained_tokens")}
            continue
        n, tokens, trained = 0, 0, 0
        for example in _iter_rows(examples):
            n += 1
            for key in ("labels", "chosen_labels"):
                if key in example:
                    tokens += len(example[key])
                    trained += sum(1 for t in example[key] if t != IGNORE_INDEX)
                    break
            else:
                tokens += len(example.get("input_ids", ()))
        figures[split] = {"examples": n, "tokens": tokens, "trained_tokens": trained}
    figures["loaded"] = figures.get("train", {}).get("examples", 0) + sum(figures["dropped"].values())
    return figures


def _iter_rows(examples):
    """Rows of a list of dicts or of a datasets.Dataset, read in batches (an Arrow dataset stays on disk)."""
    if hasattr(examples, "iter"):
        for batch in examples.iter(batch_size=1000):
            keys = list(batch)
            for i in range(len(batch[keys[0]]) if keys else 0):
                yield {k: batch[k][i] for k in keys}
    else:
        yield from examples


def finish(output_dir: str, status: str, error: str | None = None) -> None:
    """Close the card: final status, end time and the metrics the run saved (all_results.json, best checkpoint)."""
    if not _is_main():
        return
    card = read_card(output_dir)
    if card is None or card.get("status") != "running" or card.get("pid") != os.getpid():
        return  # not this process's run (e.g. it stopped before training began, beside an older run's card)
    card["status"] = status
    card["ended_at"] = _now()
    if card.get("attempts"):
        card["attempts"][-1]["ended_at"] = card["ended_at"]
        card["attempts"][-1]["status"] = status
    if error:
        card["error"] = error
    card["metrics"] = final_metrics(output_dir)
    _write(output_dir, card)


def final_metrics(output_dir: str) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for name in ("all_results.json", "train_results.json"):
        try:
            with open(os.path.join(output_dir, name), encoding="utf-8") as fh:
                metrics.update(json.load(fh))
            break
        except (OSError, ValueError):
            continue
    try:
        with open(os.path.join(output_dir, "trainer_state.json"), encoding="utf-8") as fh:
            state = json.load(fh)
        if state.get("best_metric") is not None:
            metrics["best_metric"] = state["best_metric"]
            metrics["best_model_checkpoint"] = state.get("best_model_checkpoint")
        metrics["global_step"] = state.get("global_step")
    except (OSError, ValueError):
        pass
    return metrics


def summary_markdown(card: dict) -> str:
    opts = card.get("options", {})
    explicit = [name for name in card.get("explicit", []) if name in opts]
    lines = [f"# Run: {os.path.basename(card.get('output_dir', '').rstrip('/'))}", "",
             f"- status: **{card.get('status')}** (started {card.get('started_at')}"
             + (f", ended {card['ended_at']}" if card.get("ended_at") else "") + ")",
             f"- stage `{card.get('stage')}`, method `{card.get('finetuning_type')}`, model "
             f"`{card.get('model_name_or_path')}`, template `{card.get('template')}`",
             "- datasets: " + (", ".join(f"`{n}`" for n in card.get("datasets", {})) or "none")]
    data = card.get("data") or {}
    if data.get("train", {}).get("streaming"):
        lines.append("- training examples: streamed (encoded on the fly, not counted)")
    elif data.get("train"):
        train = data["train"]
        lines.append(f"- training examples: {train['examples']} ({train['trained_tokens']} trained tokens of "
                     f"{train['tokens']}); dropped: {sum(data.get('dropped', {}).values())}")
    metrics = card.get("metrics") or {}
    shown = {k: v for k, v in metrics.items() if k in ("train_loss", "eval_loss", "global_step", "train_runtime",
                                                       "best_metric")}
    if shown:
        lines.append("- results: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in shown.items()))
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in card.get("versions", {}).items()))
    lines += ["", "## Options set", "", "| option | value | from |", "|---|---|---|"]
    for name in explicit:
        lines.append(f"| `{name}` | `{json.dumps(opts[name]['value'], default=str)}` | {opts[name]['source']} |")
    lines += ["", f"Rerun it: `tunery train --reproduce {card.get('output_dir')}`", ""]
    return "\n".join(lines)
