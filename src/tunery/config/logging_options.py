"""Experiment tracking with SwanLab (LLaMA-Factory's use_swanlab / swanlab_* names), beside transformers' own
report_to (tensorboard, wandb, mlflow, …). SwanLab is an optional extra: pip install 'tunery[swanlab]'."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from tunery.config.option import Option, Rule
from tunery.errors import ConfigError

if TYPE_CHECKING:
    from tunery.config.loader import Config

G = "logging"

OPTIONS = [
    Option("use_swanlab", "bool", False, "Log the run to SwanLab (needs swanlab).", G),
    Option("swanlab_project", "str", "llamafactory", "SwanLab project.", G, advanced=True),
    Option("swanlab_workspace", "str", None, "SwanLab workspace (default: your own).", G, advanced=True),
    Option("swanlab_run_name", "str", None, "SwanLab experiment name (default: SwanLab's own).", G, advanced=True),
    Option("swanlab_mode", "str", "cloud", "cloud: upload to the SwanLab service; local: the logs stay in "
           "swanlab_logdir (view them with `swanlab watch`); offline: logged locally for a later `swanlab sync`; "
           "disabled: nothing.", G, choices=("cloud", "local", "offline", "disabled"), advanced=True),
    Option("swanlab_api_key", "str", None, "SwanLab API key (logs in before the run).", G, advanced=True),
    Option("swanlab_logdir", "str", None, "Folder of SwanLab's local logs (default: swanlog/ in the working "
           "folder).", G, advanced=True),
    Option("swanlab_lark_webhook_url", "str", None, "Lark (Feishu) webhook notified when the run ends.", G,
           advanced=True),
    Option("swanlab_lark_secret", "str", None, "Secret of the Lark webhook.", G, advanced=True),
]


def _swanlab(cfg: Config) -> None:
    if not cfg.use_swanlab:
        return
    if importlib.util.find_spec("swanlab") is None:
        raise ConfigError(f"{cfg.where}: use_swanlab needs the swanlab package — pip install 'tunery[swanlab]' (or "
                          "pip install swanlab), or drop use_swanlab")
    if cfg.swanlab_mode == "local" and importlib.util.find_spec("swanboard") is None:
        raise ConfigError(f"{cfg.where}: swanlab_mode local needs swanboard (SwanLab's local dashboard) — pip install "
                          "swanboard, or use swanlab_mode: offline")
    names = [cfg.report_to] if isinstance(cfg.report_to, str) else (cfg.report_to or [])
    if "swanlab" in names or "all" in names:
        raise ConfigError(f"{cfg.where}: use_swanlab and report_to swanlab would log the run twice — keep one")


RULES = [Rule(_swanlab, frozenset({"train"}))]
