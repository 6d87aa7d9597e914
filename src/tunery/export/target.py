"""Where an export goes, safely: the folder is checked before the model loads, written beside the target and swapped in.

An export folder carries a marker (`.tunery_export.json`, listing the files Tunery wrote). `tunery export` writes into
a fresh `.<name>.tunery-partial-<pid>` folder next to `export_dir` and renames it into place only once every file is
written, so a run killed mid-way leaves the previous export as it was. An existing `export_dir` is replaced only when
it is empty or holds Tunery's own export (its marker lists every file in it) and `export_overwrite` is set; a folder
with any file Tunery did not write is refused and left untouched. No torch here: the board checks with it too.
"""

from __future__ import annotations

import json
import os
import shutil

from tunery.errors import TuneryError

MARKER = ".tunery_export.json"
_PARTIAL = ".tunery-partial-"
_OLD = ".tunery-old-"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def read_marker(folder: str) -> dict | None:
    """The marker of a folder Tunery exported to (None when there is none or it is unreadable)."""
    try:
        with open(os.path.join(folder, MARKER), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), list) else None


def write_marker(folder: str, complete: bool) -> None:
    files = sorted(name for name in os.listdir(folder) if name != MARKER)
    with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as fh:
        json.dump({"written_by": "tunery export", "complete": complete, "files": files}, fh, indent=1)


def foreign_files(folder: str) -> list[str]:
    """The files in `folder` that Tunery's export marker does not list (every file when it has no marker)."""
    names = sorted(os.listdir(folder))
    marker = read_marker(folder)
    ours = set(marker["files"]) | {MARKER} if marker else set()
    return [name for name in names if name not in ours]


def _existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def weights_bytes(model_dir: str) -> int:
    """Bytes of the weight files of a local model folder (0 for a hub id)."""
    folder = os.path.expanduser(model_dir or "")
    if not os.path.isdir(folder):
        return 0
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)
               if n.endswith(_WEIGHT_SUFFIXES) and os.path.isfile(os.path.join(folder, n)))


def check_export_target(export_dir: str, overwrite: bool, needed_bytes: int = 0) -> str:
    """Refuse (one line) an export_dir that holds files Tunery did not write, an earlier export without
    `export_overwrite`, a place that is not writable or a disk without room for `needed_bytes`. Returns the absolute
    target. Nothing is changed."""
    target = os.path.abspath(os.path.expanduser(export_dir))
    if os.path.lexists(target) and not os.path.isdir(target):
        raise TuneryError(f"export_dir '{export_dir}' is a file, not a folder — choose a new folder")
    if os.path.islink(target):
        raise TuneryError(f"export_dir '{export_dir}' is a symbolic link — give the real folder or a new one")
    if os.path.isdir(target) and os.listdir(target):
        foreign = foreign_files(target)
        if foreign:
            shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
            raise TuneryError(f"export_dir '{export_dir}' holds files Tunery did not write ({shown}) — choose an "
                              "empty or new folder; nothing was changed")
        if not overwrite:
            raise TuneryError(f"export_dir '{export_dir}' holds an earlier Tunery export — set export_overwrite: "
                              "true to replace it, or choose another folder")
    parent = _existing_ancestor(os.path.dirname(target))
    if not os.path.isdir(parent):
        raise TuneryError(f"export_dir '{export_dir}': '{parent}' is a file, not a folder — choose another place")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TuneryError(f"export_dir '{export_dir}': cannot write in '{parent}' (permission denied) — choose a "
                          "folder you can write to")
    if needed_bytes:
        free = shutil.disk_usage(parent).free
        if free < needed_bytes:
            raise TuneryError(f"export_dir '{export_dir}': the disk holding '{parent}' has {free / 2**30:.2f} GiB "
                              f"free, the export needs about {needed_bytes / 2**30:.2f} GiB — free some space or choose "
                              "another disk")
    return target


def _siblings(target: str, kind: str) -> list[str]:
    parent, name = os.path.split(target)
    prefix = f".{name}{kind}"
    try:
        return [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return []


def begin(target: str) -> str:
    """A fresh partial folder beside `target` (leftovers of killed runs — ours, marked — are removed first)."""
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    if not os.path.exists(target):  # killed between the two renames of a swap: the old export is put back
        for old in _siblings(target, _OLD):
            if read_marker(old) is not None:
                os.rename(old, target)
                break
    for leftover in _siblings(target, _PARTIAL) + _siblings(target, _OLD):
        if read_marker(leftover) is not None:
            shutil.rmtree(leftover, ignore_errors=True)
    partial = os.path.join(parent, f".{name}{_PARTIAL}{os.getpid()}")
    os.makedirs(partial)
    write_marker(partial, complete=False)  # marks the folder as ours from the start
    return partial


def finish(partial: str, target: str) -> None:
    """Mark the partial folder complete and swap it in place of `target` (the old export is removed last)."""
    write_marker(partial, complete=True)
    old = None
    if os.path.isdir(target) and foreign_files(target):  # files appeared there while the export ran
        raise TuneryError(f"export_dir '{target}' now holds files Tunery did not write — the export is in "
                          f"'{partial}'; move it yourself")
    if os.path.isdir(target):
        parent, name = os.path.split(target)
        old = os.path.join(parent, f".{name}{_OLD}{os.getpid()}")
        os.rename(target, old)
    os.rename(partial, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def abandon(partial: str) -> None:
    """Remove a partial folder after a failed export (only ours: it carries the marker)."""
    if os.path.isdir(partial) and read_marker(partial) is not None:
        shutil.rmtree(partial, ignore_errors=True)
