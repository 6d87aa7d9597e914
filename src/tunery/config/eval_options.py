"""`tunery eval` options: multiple-choice benchmarks (MMLU / CMMLU / C-Eval layout), LLaMA-Factory's EvaluationArguments
names plus `compare`, `backend` and `tasks`. The seed is transformers' `seed` option (default 42)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tunery.config.option import Option, Rule, non_negative, positive
from tunery.errors import ConfigError

if TYPE_CHECKING:
    from tunery.config.loader import Config

G = "eval"


def _folder(value: str):
    return None if os.path.isdir(os.path.expanduser(value)) else "no such folder — it should hold benchmark folders"


OPTIONS = [
    Option("task", "str", None, "Benchmark: a folder in MMLU CSV layout (SUBJECT_dev/_val/_test.csv), a folder name "
           "under task_dir, or a registered name (tunery_demo, tunery_demo_zh, mmlu, cmmlu, ceval). A _test or "
           "_validation suffix picks the split, as LLaMA-Factory's mmlu_test.", G),
    Option("task_dir", "str", None, "Folder holding benchmark folders; unset: Tunery's bundled benchmarks.", G,
           check=_folder),
    Option("n_shot", "int", 5, "Solved examples from the dev split shown before each question.", G,
           check=non_negative),
    Option("lang", "str", None, "Prompt language; unset: the benchmark's own (zh for cmmlu, ceval and Chinese "
           "folders, else en).", G, choices=("en", "zh")),
    Option("split", "str", "test", "Split that is scored.", G, choices=("test", "validation")),
    Option("batch_size", "int", 4, "Questions scored per forward pass.", G, check=positive),
    Option("save_dir", "str", None, "Folder for results.json (not written when unset).", G),
    Option("backend", "str", "native", "native: Tunery's scorer; lm_eval: EleutherAI's lm-evaluation-harness "
           "(pip install lm-eval) on the same model and adapter.", G, choices=("native", "lm_eval")),
    Option("download_mode", "str", "reuse_dataset_if_exists", "Hub benchmarks: reuse_dataset_if_exists (the "
           "prepared cache), reuse_cache_if_exists (the downloaded files) or force_redownload.", G,
           choices=("reuse_dataset_if_exists", "reuse_cache_if_exists", "force_redownload"), advanced=True),
    Option("tasks", "list", None, "lm_eval task names, comma-separated (backend: lm_eval).", G),
]


def _task_given(cfg: Config) -> None:
    if cfg.backend == "native" and not cfg.task:
        raise ConfigError(f"{cfg.where}: option 'task' is required — give a benchmark folder or a registered name "
                          "(e.g. --task tunery_demo, the bundled demo benchmark)")


def _compare_needs_adapter(cfg: Config) -> None:
    if cfg.compare and not cfg.adapter_name_or_path:
        raise ConfigError(f"{cfg.where}: option 'compare' scores the model with and without its adapter — give "
                          "adapter_name_or_path (the training output_dir)")


def _lm_eval_options(cfg: Config) -> None:
    if cfg.backend != "lm_eval":
        if cfg.tasks:
            raise ConfigError(f"{cfg.where}: option 'tasks' is for backend: lm_eval — use 'task' with the native "
                              "backend, or add --backend lm_eval")
        return
    if not cfg.tasks:
        raise ConfigError(f"{cfg.where}: backend: lm_eval needs 'tasks' — e.g. --tasks mmlu,arc_easy")
    if cfg.compare:
        raise ConfigError(f"{cfg.where}: option 'compare' works with backend: native only — run lm_eval twice "
                          "(with and without adapter_name_or_path)")


RULES = [
    Rule(_task_given, frozenset({"eval"})),
    Rule(_compare_needs_adapter, frozenset({"eval"})),
    Rule(_lm_eval_options, frozenset({"eval"})),
]
