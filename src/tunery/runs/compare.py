"""``tunery runs diff A B`` (the options and data that differ) and ``tunery runs plot A B …`` (curves overlaid)."""

from __future__ import annotations

import json
import os
from typing import Any

from tunery.errors import TuneryError
from tunery.runs.card import read_card
from tunery.train.plots import read_log, smooth

# Options that name where a run lives rather than what it does: listed last, never the reason two runs differ.
PLACE_OPTIONS = ("output_dir", "logging_dir", "run_name")


def _card_or_error(path: str) -> dict:
    card = read_card(path)
    if card is None:
        raise TuneryError(f"{path}: no run_card.json — it is not a Tunery run folder (or was made before run cards)")
    return card


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def diff_cards(a: dict, b: dict) -> list[tuple[str, str, str]]:
    """(what, A's value, B's value) for every option, library version and dataset fingerprint that differs."""
    rows: list[tuple[str, str, str]] = []
    oa, ob = a.get("options", {}), b.get("options", {})
    for name in sorted(set(oa) | set(ob), key=lambda n: (n in PLACE_OPTIONS, n)):
        va, vb = oa.get(name, {}).get("value"), ob.get(name, {}).get("value")
        if va != vb:
            rows.append((name, _show(va), _show(vb)))
    for pkg in sorted(set(a.get("versions", {})) | set(b.get("versions", {}))):
        va, vb = a.get("versions", {}).get(pkg), b.get("versions", {}).get(pkg)
        if va != vb:
            rows.append((f"version: {pkg}", str(va), str(vb)))
    da, db = a.get("datasets", {}), b.get("datasets", {})
    for name in sorted(set(da) & set(db)):
        ha, hb = (d[name].get("sha256") or d[name].get("sampled_sha256") for d in (da, db))
        if ha != hb or da[name].get("files") != db[name].get("files"):
            rows.append((f"data: {name}", "content " + str(ha or "?")[:12], "content " + str(hb or "?")[:12]))
    if a.get("tokenizer_sha256") != b.get("tokenizer_sha256"):
        rows.append(("tokenizer files", str(a.get("tokenizer_sha256"))[:12], str(b.get("tokenizer_sha256"))[:12]))
    return rows


def diff_runs(path_a: str, path_b: str) -> list[tuple[str, str, str]]:
    return diff_cards(_card_or_error(path_a), _card_or_error(path_b))


def format_diff(path_a: str, path_b: str, rows: list[tuple[str, str, str]]) -> str:
    if not rows:
        return f"{path_a} and {path_b}: same options, versions and data"
    head = ("", f"A = {path_a}", f"B = {path_b}")
    table = [("what", "A", "B")] + rows
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    lines = [head[1], head[2], ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    return "\n".join(lines)


def curve_keys(paths: list[str]) -> list[str]:
    """The metrics worth overlaying that at least one run logged: loss, eval_loss, reward(s)."""
    wanted = []
    for key in ("loss", "eval_loss", "reward", "rewards/accuracies", "rewards/chosen", "objective/scores"):
        if any(any(row.get(key) is not None for row in read_log(p)) for p in paths):
            wanted.append(key)
    return wanted


def plot_runs(paths: list[str], output: str, keys: list[str] | None = None) -> str:
    """One PNG, a panel per metric, each run's curve (smoothed, raw faint) on the same axes."""
    for path in paths:
        if not read_log(path):
            raise TuneryError(f"{path}: no trainer_log.jsonl to plot — is it a run folder?")
    keys = keys or curve_keys(paths)
    if not keys:
        raise TuneryError("none of these runs logged a loss or reward yet")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(6.2 * len(keys), 4.2), dpi=110, squeeze=False)
    names = _short_names(paths)
    for ax, key in zip(axes[0], keys):
        for i, path in enumerate(paths):
            points = [(r["current_steps"], r[key]) for r in read_log(path) if r.get(key) is not None]
            if not points:
                continue
            steps, values = zip(*points)
            color = f"C{i % 10}"
            ax.plot(steps, values, color=color, alpha=0.25)
            ax.plot(steps, smooth(list(values)) if len(values) > 1 else values, color=color, label=names[i])
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.13, wspace=0.25)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output)
    plt.close(fig)
    return output


def _short_names(paths: list[str]) -> list[str]:
    """The shortest trailing path parts that tell the runs apart."""
    parts = [os.path.normpath(p).split(os.sep) for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = [os.sep.join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [os.path.normpath(p) for p in paths]
