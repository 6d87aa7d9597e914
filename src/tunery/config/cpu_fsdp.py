"""The options of FSDP2 on a CPU-only machine (``fsdp`` / ``fsdp_config``), checked when the config is read;
the run itself is :mod:`tunery.train.cpu_fsdp`."""

from __future__ import annotations

import json
import os

from tunery.errors import ConfigError

_TRUE = ("true", "1", "yes", "on")
# fsdp_config keys that tune accelerate's GPU FSDP and change nothing on CPU (quiet: LLaMA-Factory's files set them)
_GPU_TUNING = {"version", "backward_prefetch", "forward_prefetch", "use_orig_params", "sync_module_states",
               "cpu_ram_efficient_loading", "state_dict_type", "limit_all_gathers", "auto_wrap_policy", "xla",
               "xla_fsdp_v2", "xla_fsdp_grad_ckpt", "transformer_layer_cls_to_wrap", "min_num_params"}


def fsdp_requested(cfg) -> bool:
    value = cfg.fsdp
    return bool(value) and str(value).strip().lower() not in ("", "false", "0", "no", "none", "[]")


def on_cpu(cfg) -> bool:
    """True when ``fsdp`` is set and there is no GPU-like device: Tunery's CPU FSDP2 route."""
    if not fsdp_requested(cfg):
        return False
    from tunery.utils.device import accelerator_available

    return not accelerator_available()


def fsdp_options(cfg) -> dict:
    """``fsdp_config`` (a dict or a JSON file; accelerate's ``fsdp_`` prefixes dropped) with the ``fsdp`` words
    folded in the way transformers does: full_shard/shard_grad_op → reshard_after_forward, offload → cpu_offload."""
    raw = cfg.fsdp_config
    if isinstance(raw, str):
        try:
            with open(raw, encoding="utf-8") as fh:
                raw = json.load(fh)
        except ValueError as err:
            raise ConfigError(f"{cfg.where}: fsdp_config file '{raw}' is not valid JSON ({err}) — fix it (example: "
                              "examples/accelerate/fsdp_training_config.json)") from None
    if not isinstance(raw, dict | None):
        raise ConfigError(f"{cfg.where}: fsdp_config must be a mapping of FSDP settings or a JSON file of one")
    options = {(k[5:] if k.startswith("fsdp_") else k): v for k, v in dict(raw or {}).items()}
    value = cfg.fsdp
    # a list, or the string the option keeps: "full_shard auto_wrap", '["full_shard", "auto_wrap"]', "true"
    text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    words = [w.strip("'\"").lower() for w in text.strip("[]").replace(",", " ").split()]
    for word in words:
        if word in _TRUE or word == "auto_wrap":
            continue
        if word == "full_shard":
            options.setdefault("reshard_after_forward", True)
        elif word == "shard_grad_op":
            options.setdefault("reshard_after_forward", False)
        elif word == "offload":
            options.setdefault("cpu_offload", True)
        else:
            raise ConfigError(f"{cfg.where}: fsdp '{word}' is not available with FSDP2 on CPU — use fsdp: "
                              "full_shard (optionally with auto_wrap)")
    return options


def planned_world_size() -> int:
    """The processes of this run: WORLD_SIZE inside torchrun, else what `tunery train` will start (handoff.py)."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    from tunery.utils.handoff import torchrun_plan

    plan = torchrun_plan(os.environ, devices=0)
    return int(plan["nproc_per_node"]) * int(plan["nnodes"]) if plan else 1


def check(cfg) -> None:
    """The CPU FSDP2 run's options, refused in one line before anything loads."""
    options = fsdp_options(cfg)
    where = cfg.where
    if str(options.get("reshard_after_forward", True)).lower() not in _TRUE:
        raise ConfigError(f"{where}: fsdp shard_grad_op (reshard_after_forward: false) is not available with FSDP2 "
                          "on CPU — use fsdp: full_shard")
    if str(options.get("activation_checkpointing", False)).lower() in _TRUE:
        raise ConfigError(f"{where}: fsdp_config activation_checkpointing is FSDP's own (GPU) checkpointing — on CPU "
                          "set gradient_checkpointing: true instead and drop it from fsdp_config")
    from tunery.config.stages import names_text, stages_using, uses

    if not uses(cfg.stage, "cpu_fsdp"):
        raise ConfigError(f"{where}: stage {cfg.stage} with fsdp needs GPUs (FSDP2 on CPU runs stage "
                          f"{names_text(stages_using('cpu_fsdp'))}) — drop fsdp/fsdp_config: several CPU processes "
                          "still train data parallel")
    if cfg.quantization_bit:
        raise ConfigError(f"{where}: QLoRA with fsdp needs GPUs — drop quantization_bit or fsdp")
    if planned_world_size() < 2:
        raise ConfigError(f"{where}: fsdp shards the model across processes and this run has one — start several "
                          "(FORCE_TORCHRUN=1 NPROC_PER_NODE=2 tunery train ...) or drop fsdp/fsdp_config")
