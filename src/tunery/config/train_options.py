"""Output and run options Tunery adds on top of transformers' TrainingArguments (which come from hf_args)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tunery.config.option import Option, Rule
from tunery.config.stages import names_text, stages_using, uses
from tunery.errors import ConfigError

if TYPE_CHECKING:
    from tunery.config.loader import Config

G = "output"


def _mmap_threshold(value) -> str | None:
    if value is not None and not 0 <= value <= 32:
        return "must be between 0 and 32 (MiB; glibc's largest threshold is 32 MiB)"
    return None


OPTIONS = [
    Option("overwrite_output_dir", "bool", False, "Allow writing into a non-empty output_dir (its old checkpoints "
           "are removed).", G),
    Option("resume_from_checkpoint", "str", None, "Checkpoint folder to resume from; by default the last complete "
           "checkpoint in output_dir is used.", G),
    Option("debug_data", "bool", False, "Print the first encoded training example before training: its token ids, "
           "its text and the text it is trained on.", G, advanced=True),
    Option("malloc_mmap_threshold_mb", "int", None, "CPU training on Linux: tensors of at least this many MiB get "
           "their own memory maps, returned to the system when freed, so peak memory stays near what is live instead "
           "of growing with heap fragmentation (a few % more page faults). Unset: 1 on CPU, off on GPU; 0: glibc's "
           "own adaptive threshold.", G, check=_mmap_threshold, advanced=True),
]


def _output_dir(cfg: Config) -> None:
    if not cfg.output_dir:
        raise ConfigError(f"{cfg.where}: option 'output_dir' is required — e.g. saves/llama3/lora/sft")
    out = cfg.output_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"{cfg.where}: output_dir '{out}' is a file — choose a folder")
    if not cfg.do_train or cfg.overwrite_output_dir or not os.path.isdir(out) or not os.listdir(out):
        return
    from tunery.utils.checkpoint_dirs import last_checkpoint, only_crash_leftovers

    if cfg.resume_from_checkpoint or last_checkpoint(out) or only_crash_leftovers(out):
        return
    raise ConfigError(f"{cfg.where}: output_dir '{out}' is not empty and holds no checkpoint to resume from — "
                      "pass --overwrite_output_dir to replace it, or choose another output_dir")


def _training_length(cfg: Config) -> None:
    """transformers trains one step for max_steps 0 and saves an untrained model for num_train_epochs 0."""
    if not cfg.do_train:
        return
    if cfg.max_steps == 0:
        raise ConfigError(f"{cfg.where}: option 'max_steps' is 0, which trains nothing — give the number of steps, "
                          "or drop max_steps (-1) to train num_train_epochs")
    steps_unset = cfg.max_steps is None or cfg.max_steps < 0
    if steps_unset and cfg.num_train_epochs is not None and cfg.num_train_epochs <= 0:
        raise ConfigError(f"{cfg.where}: option 'num_train_epochs' is {cfg.num_train_epochs:g}, which trains nothing "
                          "— give a positive number of epochs (e.g. 3.0) or max_steps")


def _precision(cfg: Config) -> None:
    from tunery.utils import device

    if cfg.fp16 and not device.fp16_supported():
        raise ConfigError(f"{cfg.where}: option 'fp16' needs a CUDA GPU and this machine has none — drop fp16 "
                          "(training runs in fp32 on CPU)")
    if (cfg.bf16 or cfg.pure_bf16) and not device.bf16_supported():
        name = "pure_bf16" if cfg.pure_bf16 else "bf16"
        raise ConfigError(f"{cfg.where}: option '{name}' needs a GPU with bfloat16 support and this machine has none "
                          f"— drop {name} (training runs in fp32 on CPU)")
    if cfg.fp16 and cfg.bf16:
        raise ConfigError(f"{cfg.where}: options 'fp16' and 'bf16' are both set — choose one")


def _eval_needs_data(cfg: Config) -> None:
    if cfg.eval_strategy not in (None, "no") and not (cfg.val_size or cfg.eval_dataset):
        raise ConfigError(f"{cfg.where}: eval_strategy '{cfg.eval_strategy}' needs evaluation data — set val_size "
                          "(e.g. 0.1) or eval_dataset")
    if cfg.load_best_model_at_end and cfg.eval_strategy in (None, "no"):
        raise ConfigError(f"{cfg.where}: load_best_model_at_end needs eval_strategy steps or epoch")
    if cfg.load_best_model_at_end and cfg.save_strategy != cfg.eval_strategy:
        raise ConfigError(f"{cfg.where}: load_best_model_at_end needs save_strategy ({cfg.save_strategy}) equal to "
                          f"eval_strategy ({cfg.eval_strategy})")


def _step_intervals(cfg) -> None:
    """save_steps / eval_steps are used when their strategy is steps: then 0 would never save or evaluate."""
    for option, strategy in (("save_steps", "save_strategy"), ("eval_steps", "eval_strategy")):
        value = cfg.values[option]
        if cfg.values[strategy] == "steps" and value is not None and value <= 0:
            raise ConfigError(f"{cfg.where}: option '{option}' = {value:g} with {strategy} steps: must be greater "
                              f"than 0 (a step count, or below 1 a fraction of the run's steps) — or set {strategy} "
                              "epoch or no")


# Options that only some stages' training has (config/stages.py: the feature of each)
_FEATURE_OF = {"debug_data": "workflow", "eval_on_each_dataset": "workflow",
               "include_effective_tokens_per_second": "train_metrics"}


def _stage_support(cfg) -> None:
    for name, feature in _FEATURE_OF.items():
        if cfg.values[name] and not uses(cfg.stage, feature):
            raise ConfigError(f"{cfg.where}: option '{name}' is not supported in stage {cfg.stage} (only "
                              f"{names_text(stages_using(feature))}) — drop it")


def _predict(cfg) -> None:
    if not cfg.do_predict:
        return
    if not uses(cfg.stage, "predict"):
        which = stages_using("predict")
        raise ConfigError(f"{cfg.where}: do_predict generates answers, which only stage {names_text(which)} does "
                          f"(stage is {cfg.stage}) — use stage: {which[0]} with the adapter or model to evaluate")
    if not (cfg.eval_dataset or (cfg.val_size and cfg.dataset)):
        raise ConfigError(f"{cfg.where}: do_predict needs data to answer — set eval_dataset (e.g. "
                          "eval_dataset: identity) or val_size with dataset")


def _deepspeed(cfg: Config) -> None:
    fsdp_config = cfg.fsdp_config
    if isinstance(fsdp_config, str) and not os.path.isfile(fsdp_config):
        raise ConfigError(f"{cfg.where}: fsdp_config file '{fsdp_config}' does not exist — check the path (example: "
                          "examples/accelerate/fsdp_training_config.json)")
    from tunery.config import cpu_fsdp

    if cpu_fsdp.on_cpu(cfg):  # no GPU: FSDP2 through transformers' load-time sharding (train/cpu_fsdp.py)
        cpu_fsdp.check(cfg)
    ds = cfg.deepspeed
    if not ds:
        return
    if isinstance(ds, str) and not os.path.isfile(ds):
        raise ConfigError(f"{cfg.where}: deepspeed config file '{ds}' does not exist — check the path (examples: "
                          "examples/deepspeed/ds_z2_config.json, ds_z3_config.json)")
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"{cfg.where}: option 'deepspeed' needs the deepspeed package — pip install "
                          "'tunery[deepspeed]' (on a machine with CUDA), or drop deepspeed")


# report_to value -> the module transformers needs for it
_REPORTERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
              "swanlab": ("swanlab",), "trackio": ("trackio",), "comet_ml": ("comet_ml",), "clearml": ("clearml",)}


def _report_to(cfg: Config) -> None:
    import importlib.util

    names = [cfg.report_to] if isinstance(cfg.report_to, str) else (cfg.report_to or [])
    for name in names:
        modules = _REPORTERS.get(name)
        if modules and not any(importlib.util.find_spec(m) for m in modules):
            raise ConfigError(f"{cfg.where}: report_to {name} needs the {modules[0]} package — pip install "
                              f"{modules[0]}, or use report_to: none")


RULES = [
    Rule(_output_dir, frozenset({"train"})),
    Rule(_training_length, frozenset({"train"})),
    Rule(_precision, frozenset({"train"})),
    Rule(_eval_needs_data, frozenset({"train"})),
    Rule(_step_intervals, frozenset({"train"})),
    Rule(_stage_support, frozenset({"train"})),
    Rule(_predict, frozenset({"train"})),
    Rule(_deepspeed, frozenset({"train"})),
    Rule(_report_to, frozenset({"train"})),
]
