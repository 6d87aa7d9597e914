"""The board's sandbox: every path a page can make the board read or write lies inside roots fixed at start-up.

Read roots: the saves folder, the dataset folder (the config's `dataset_dir`, else ./data or the bundled demo data),
the model/adapter folders of the config `tunery webui` starts with, and `webui_allowed_paths`. Write roots: the saves
folder and `webui_allowed_paths`. Paths are compared after resolving symbolic links and `..`. A hub id (`org/name`
that is no local path) is no file and passes. Configs are saved only as `.yaml` inside the saves folder, with a first
line that marks them as the board's; a file without that line is never overwritten.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

from tunery.errors import TuneryError

MARK = "# saved by the Tunery board"  # the first line of every config the board writes

# Options whose values are paths the run reads / writes (a dict value, e.g. an inline deepspeed config, is no path).
READ_OPTIONS = ("model_name_or_path", "adapter_name_or_path", "dataset_dir", "media_dir", "ref_model",
                "ref_model_adapters", "reward_model", "reward_model_adapters", "compare_model",
                "resume_from_checkpoint", "task_dir", "deepspeed", "fsdp_config", "accelerator_config",
                "generation_config")
WRITE_OPTIONS = ("output_dir", "logging_dir", "tokenized_path", "export_dir", "save_dir", "cache_dir")


class OutsideError(TuneryError):
    """A path outside the board's roots."""


def real(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(str(path))))


def _within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def _paths(value: Any) -> list[str]:
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()] if "," in value else ([value] if value else [])
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if isinstance(v, str) and v]
    return []


def is_hub_id(value: str) -> bool:
    """An `org/name` (or `name`) that is no local file or folder: nothing on this machine is read by its name."""
    from tunery.config.model_options import looks_like_hub_id

    return looks_like_hub_id(value) and not os.path.lexists(os.path.expanduser(value)) and \
        ".." not in value.split("/")


@dataclass(frozen=True)
class Sandbox:
    saves_dir: str
    read_roots: tuple
    write_roots: tuple

    @classmethod
    def create(cls, saves_dir: str, dataset_dir: str, initial: dict | None = None,
               allowed: Iterable[str] = ()) -> Sandbox:
        initial = initial or {}
        saves, extra = real(saves_dir), [real(p) for p in allowed]
        reads = [saves, real(dataset_dir), *extra]
        if initial.get("dataset_dir") and initial["dataset_dir"] != "ONLINE":
            reads.append(real(initial["dataset_dir"]))
        for name in ("model_name_or_path", "adapter_name_or_path", "compare_model"):
            reads += [real(p) for p in _paths(initial.get(name)) if os.path.isdir(os.path.expanduser(p))]
        unique = tuple(dict.fromkeys(reads))
        return cls(saves, unique, tuple(dict.fromkeys([saves, *extra])))

    # ------------------------------------------------------------ single paths
    def readable(self, path: str, what: str) -> str:
        """The resolved path when it lies in a read root, else one line saying so (nothing is read)."""
        resolved = real(path)
        if not any(_within(resolved, root) for root in self.read_roots):
            raise OutsideError(f"{what} '{path}' is outside the folders this board may read "
                               f"({', '.join(self.read_roots)}) — start the board with webui_allowed_paths naming it")
        return resolved

    def writable(self, path: str, what: str) -> str:
        resolved = real(path)
        if not any(_within(resolved, root) for root in self.write_roots):
            raise OutsideError(f"{what} '{path}' is outside the folders this board may write "
                               f"({', '.join(self.write_roots)}) — choose a folder inside the saves folder, or start "
                               "the board with webui_allowed_paths naming it")
        return resolved

    # ------------------------------------------------------------ a run's option values
    def check_values(self, values: dict) -> None:
        """Every path option of `values` inside the roots, and every local dataset file inside a read root."""
        from tunery.data.registry import ONLINE

        for name in READ_OPTIONS:
            for path in _paths(values.get(name)):
                if not is_hub_id(path) and not (name == "dataset_dir" and path == ONLINE):
                    self.readable(path, f"option '{name}'")
        for name in WRITE_OPTIONS:
            for path in _paths(values.get(name)):
                self.writable(path, f"option '{name}'")
        names = [*_paths(values.get("dataset")), *_paths(values.get("eval_dataset"))]
        if names:
            self.check_datasets(names, str(values.get("dataset_dir") or "data"))

    def check_datasets(self, names: list[str], dataset_dir: str) -> None:
        """The local files the named datasets resolve to (absolute names, `..` in a file_name) inside a read root."""
        from tunery.data.registry import ONLINE, get_dataset_specs

        if dataset_dir != ONLINE:
            self.readable(dataset_dir, "option 'dataset_dir'")
        for spec in get_dataset_specs(names, dataset_dir):
            if spec.load_from == "file" or (spec.load_from == "script" and os.path.lexists(spec.path)):
                self.readable(spec.path, f"dataset '{spec.name}'")

    # ------------------------------------------------------------ config files
    def config_to_save(self, path: str) -> str:
        """Where a config may be saved: a `.yaml` inside the saves folder that is new or was saved by the board."""
        if not str(path).endswith(".yaml"):
            raise OutsideError(f"config file '{path}': the board saves configs only as .yaml files — end the name "
                               "with .yaml")
        if not os.path.isabs(os.path.expanduser(str(path))):
            path = os.path.join(self.saves_dir, str(path))
        resolved = real(path)
        if not _within(resolved, self.saves_dir):
            raise OutsideError(f"config file '{path}' is outside the saves folder {self.saves_dir} — the board saves "
                               "configs only there")
        if os.path.lexists(resolved):
            if not os.path.isfile(resolved) or not _marked(resolved):
                raise OutsideError(f"config file '{path}' exists and was not saved by the board — choose a new name; "
                                   "the file was left as it is")
        return resolved

    def config_to_load(self, path: str) -> str:
        if not str(path).endswith((".yaml", ".yml", ".json")):
            raise OutsideError(f"config file '{path}': give a .yaml, .yml or .json config")
        return self.readable(path, "config file")


def _marked(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().rstrip("\n") == MARK
    except OSError:
        return False


def save_config(path: str, text: str) -> None:
    """Write `text` with the board's mark atomically (a temporary file beside it, then a rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f"{MARK}\n{text}")
    os.replace(tmp, path)
