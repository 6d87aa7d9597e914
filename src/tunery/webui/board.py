"""What every tab shares: the saves folder and its runs, the top bar's values, the job runner, the language words."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tunery.webui.fields import UNSET
from tunery.webui.locales import t
from tunery.webui.runner import Runner
from tunery.webui.sandbox import Sandbox

SAVES_ENV = "TUNERY_SAVES_DIR"
STATE_DIR = ".webui"
_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json",
            "pytorch_model.bin", "pytorch_model.bin.index.json")


def saves_dir_from(value: str | None = None) -> str:
    """The saves folder: the given one, else $TUNERY_SAVES_DIR, else ./saves."""
    return os.path.abspath(os.path.expanduser(value or os.environ.get(SAVES_ENV) or "saves"))


def default_dataset_dir() -> str:
    """`data` (LLaMA-Factory's layout) when this folder has one, else Tunery's bundled demo datasets."""
    if os.path.isfile(os.path.join("data", "dataset_info.json")):
        return "data"
    from tunery.demo import DATA_DIR

    return str(DATA_DIR)


def is_run(path: str) -> bool:
    """A folder that holds an adapter or a model (a finished run, a checkpoint-N or an export)."""
    has = set(os.listdir(path)) if os.path.isdir(path) else set()
    return bool(has & set(_WEIGHTS)) and ("adapter_config.json" in has or "config.json" in has)


def list_runs(saves_dir: str, depth: int = 5) -> list[tuple[str, str]]:
    """(label relative to the saves folder, absolute path) of every run and checkpoint in it, newest first."""
    found: list[tuple[float, str, str]] = []
    root = os.path.abspath(saves_dir)
    if not os.path.isdir(root):
        return []
    for current, dirs, _files in os.walk(root):
        rel = os.path.relpath(current, root)
        level = 0 if rel == "." else rel.count(os.sep) + 1
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if level < depth else []
        if level and is_run(current):
            found.append((os.path.getmtime(current), rel, current))
    found.sort(key=lambda item: (-item[0], item[1]))
    return [(rel, path) for _, rel, path in found]


def model_label(model: str | None) -> str:
    name = os.path.basename(os.path.normpath(model)) if model else "model"
    return name.replace(" ", "_") or "model"


def default_output_dir(saves_dir: str, model: str | None, finetuning_type: str | None, kind: str) -> str:
    """LLaMA-Factory's layout: <saves>/<model>/<finetuning type>/<kind>_<date-time>."""
    stamp = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
    return os.path.join(saves_dir, model_label(model), finetuning_type or "lora", f"{kind}_{stamp}")


def top_overrides(model: str | None, picks: Any, finetuning_type: str | None,
                  template: str | None) -> dict[str, Any]:
    """The option values the top bar sets. A picked run is an adapter for LoRA, else the model folder itself."""
    values: dict[str, Any] = {}
    if model and model.strip():
        values["model_name_or_path"] = model.strip()
    picks = [p for p in ([picks] if isinstance(picks, str) else picks or []) if p]
    if picks:
        if (finetuning_type or "lora") == "lora":
            values["adapter_name_or_path"] = picks
        else:
            values["model_name_or_path"] = picks[-1]
    values["finetuning_type"] = finetuning_type or "lora"
    if template and template != UNSET:
        values["template"] = template
    return values


@dataclass
class Board:
    """The board's shared state: one per `create_app`, used by every page and every tab."""

    saves_dir: str
    runner: Runner
    sandbox: Sandbox  # the folders pages may read and write
    initial: dict = field(default_factory=dict)  # option values of a config given to `tunery webui`
    words: list = field(default_factory=list)  # (component, locale key, property) re-labelled on a language change
    top: dict = field(default_factory=dict)  # option name -> top bar component
    lang_box: Any = None  # the language selector
    chat: dict = field(default_factory=lambda: {"engines": [], "labels": [], "what": ""})

    @classmethod
    def create(cls, saves_dir: str | None = None, initial: dict | None = None) -> Board:
        saves = saves_dir_from(saves_dir)
        initial = dict(initial or {})
        allowed = initial.get("webui_allowed_paths") or []
        allowed = [p.strip() for p in allowed.split(",")] if isinstance(allowed, str) else list(allowed)
        sandbox = Sandbox.create(saves, default_dataset_dir(), initial, allowed)
        return cls(saves, Runner(os.path.join(saves, STATE_DIR)), sandbox, initial)

    def word(self, component, key: str, prop: str = "label"):
        """Register a component whose `prop` shows the fixed word `key`; returns the component."""
        self.words.append((component, key, prop))
        return component

    def relabel(self, lang: str) -> list:
        import gradio as gr

        return [gr.update(**{prop: t(key, lang)}) for _, key, prop in self.words]

    def top_components(self) -> list:
        return [self.top[name] for name in ("model_name_or_path", "adapter_name_or_path", "finetuning_type",
                                            "template")]

    def runs(self) -> list[tuple[str, str]]:
        return list_runs(self.saves_dir)

    def outside(self, values: dict) -> str | None:
        """The one-line refusal when `values` name a path outside the board's folders (None: all inside)."""
        from tunery.errors import TuneryError

        try:
            self.sandbox.check_values(values)
        except TuneryError as err:
            return str(err)
        return None


_FIRST = ("model_name_or_path", "adapter_name_or_path", "template", "stage", "do_train", "finetuning_type")


class Form:
    """A tab's form: the top bar's four components followed by the tab's option fields. Handlers receive their
    values positionally (`*args`); `values(args)` turns them into the option values a run uses."""

    def __init__(self, board: Board, options: list, components: dict[str, Any], command: str):
        by_name = {o.name: o for o in options}
        self.board, self.command = board, command
        self.options = [by_name[name] for name in components]  # in the order of the components (the handlers')
        self.fields = components
        self.components = {**board.top, **components}  # option name -> component, top bar first

    @property
    def inputs(self) -> list:
        return list(self.components.values())

    def values(self, args) -> dict[str, Any]:
        """Top bar values, then every field that differs from its declared default (model and method first)."""
        from tunery.webui.fields import changed_values

        top, rest = args[:4], args[4:4 + len(self.options)]
        values = {**top_overrides(*top), **changed_values(self.options, list(rest))}
        return {**{k: values[k] for k in _FIRST if k in values}, **{k: v for k, v in values.items() if k not in _FIRST}}

    def helps(self) -> dict[str, str]:
        from tunery.webui.fields import help_text

        return {o.name: help_text(o) for o in self.options}

    def flags(self, message: str | None, previously: list[str]) -> tuple[list, list[str]]:
        """(one update per component, the fields now flagged) for an error message (None: clear every flag)."""
        from tunery.webui.fields import clean, flag_updates, named_fields

        message = clean(message) if message else message
        bad = named_fields(message, self.components) if message else []
        return flag_updates(self.components, self.helps(), bad, message or "", previously), bad
