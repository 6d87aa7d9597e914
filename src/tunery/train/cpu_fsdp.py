"""FSDP2 on a CPU-only machine (gloo): the options ``fsdp`` / ``fsdp_config`` through transformers' own load-time
sharding, with checkpoints that resume.

Why not the usual route: accelerate turns a run into FSDP only on GPU-like devices (its state picks
``DistributedType.FSDP`` for MULTI_GPU/NPU/XPU/..., never for MULTI_CPU), so on CPU transformers' Trainer would drop
``fsdp`` and train plain DDP. transformers itself shards on any device:
``from_pretrained(distributed_config=DistributedConfig(fsdp_size=N))`` applies torch's ``fully_shard`` (FSDP2) to
the embeddings and each decoder layer, then the root; its Trainer neither wraps such a model in DDP nor shards it
again, averages the gradients of parameters added afterwards (a LoRA adapter: replicated, FSDP2 shards the base
weights) and gathers the full weights on save. What transformers leaves out is resuming (its Trainer refuses to
checkpoint the optimizer of such a model): :class:`ShardedCheckpoints` writes the optimizer state with
``torch.distributed.checkpoint`` (each rank its own shard), the scheduler and every rank's RNG state into the
checkpoint before transformers writes the weights and ``trainer_state.json`` (the mark of a complete checkpoint), and
reads them back on resume. GPU runs keep going through accelerate's FSDP plugin as before.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from tunery.config.cpu_fsdp import (_GPU_TUNING, _TRUE, check, fsdp_options, fsdp_requested,  # noqa: F401
                                   on_cpu, planned_world_size)
from tunery.errors import ConfigError
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

OPTIMIZER_DIR = "optimizer_fsdp"  # torch.distributed.checkpoint files, one per rank
SCHEDULER_FILE = "scheduler.pt"
def load_kwargs(cfg) -> dict:
    """``from_pretrained`` arguments for the model being trained: transformers' FSDP2 sharding over all ranks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.command != "train" or not on_cpu(cfg) or world < 2:
        return {}
    from transformers.distributed import DistributedConfig

    options = fsdp_options(cfg)
    handled = {"reshard_after_forward", "cpu_offload", "offload_params", "activation_checkpointing"}
    ignored = sorted(k for k in options if k not in _GPU_TUNING | handled)
    if str(options.get("cpu_offload", options.get("offload_params", False))).lower() in _TRUE:
        logger.info("fsdp offload: the parameters are in CPU memory already (nothing to offload)")
    if ignored:
        logger.info("fsdp_config %s: no effect with FSDP2 on CPU", ", ".join(ignored))
    logger.info("FSDP2 on CPU: fully_shard over %d processes (gloo), each decoder layer then the whole model", world)
    return {"distributed_config": DistributedConfig(fsdp_size=world)}


def check_wrapped(cfg: Config, model) -> None:
    """fsdp_config transformer_layer_cls_to_wrap: the classes it names that the model has are sharded units."""
    from torch.distributed.fsdp import FSDPModule

    names = fsdp_options(cfg).get("transformer_layer_cls_to_wrap") or []
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        return
    found = {_own_class(m): isinstance(m, FSDPModule) for m in model.modules() if _own_class(m) in names}
    if not found:
        raise ConfigError(f"{cfg.where}: fsdp_config transformer_layer_cls_to_wrap {names} names no layer of this "
                          f"model — name its decoder layer class (e.g. {_decoder_layer(model)})")
    unsharded = sorted(name for name, sharded in found.items() if not sharded)
    if unsharded:
        logger.info("fsdp_config transformer_layer_cls_to_wrap %s: FSDP2 on CPU shards whole decoder layers, these "
                    "stay inside them", ", ".join(unsharded))


def _own_class(module) -> str:
    """The module's class name without FSDP2's wrapper class (fully_shard turns LlamaDecoderLayer into
    FSDPLlamaDecoderLayer)."""
    from torch.distributed.fsdp import FSDPModule

    cls = type(module)
    if issubclass(cls, FSDPModule):
        cls = next(c for c in cls.__mro__[1:] if not issubclass(c, FSDPModule))
    return cls.__name__


def _decoder_layer(model) -> str:
    for module in model.modules():
        if _own_class(module).endswith("DecoderLayer"):
            return _own_class(module)
    return "LlamaDecoderLayer"


def training_kwargs(cfg: Config, kwargs: dict) -> None:
    """TrainingArguments for a CPU FSDP2 run: the sharding is the model's (load_kwargs), so no fsdp for accelerate;
    transformers checkpoints such a model only with save_only_model — :class:`ShardedCheckpoints` adds the rest."""
    kwargs.pop("fsdp", None)
    kwargs.pop("fsdp_config", None)
    kwargs["save_only_model"] = True


class ShardedCheckpoints:
    """Trainer mixin: optimizer (torch.distributed.checkpoint), scheduler and RNG states in the checkpoints of a
    model transformers sharded at load time, read back on resume; full/freeze weights loaded into the shards."""

    def _sharded_at_load(self) -> bool:
        return bool(getattr(self, "is_distributed_loading_by_transformers", False))

    def _optimizer_state(self):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return {"optimizer": get_optimizer_state_dict(self.model, self.optimizer)}

    def _save_checkpoint(self, model, trial):
        if self._sharded_at_load() and not getattr(self.cfg, "save_only_model", False):
            import torch
            import torch.distributed.checkpoint as dcp
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            step = self.state.global_step
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{step}")
            dcp.save(self._optimizer_state(), checkpoint_id=os.path.join(folder, OPTIMIZER_DIR))
            if self.args.should_save:
                torch.save(self.lr_scheduler.state_dict(), os.path.join(folder, SCHEDULER_FILE))
            self._save_rng_state(folder)
        super()._save_checkpoint(model, trial)  # the weights, then trainer_state.json

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is None or not self._sharded_at_load():
            return super()._load_optimizer_and_scheduler(checkpoint)
        if not os.path.isdir(os.path.join(checkpoint, OPTIMIZER_DIR)):
            logger.info("%s holds no optimizer state (save_only_model): the optimizer starts afresh", checkpoint)
            return None
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        state = self._optimizer_state()
        dcp.load(state, checkpoint_id=os.path.join(checkpoint, OPTIMIZER_DIR))
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"])
        self.lr_scheduler.load_state_dict(torch.load(os.path.join(checkpoint, SCHEDULER_FILE), weights_only=True))
        return None

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from tunery.train.checkpoints import ADAPTER_WEIGHTS

        target = self.model if model is None else model
        adapter = any(os.path.isfile(os.path.join(resume_from_checkpoint, n)) for n in ADAPTER_WEIGHTS)
        if not self._sharded_at_load() or adapter:  # a LoRA adapter is replicated: transformers loads it as usual
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        # The checkpoint holds the full weights (gathered on save); each rank keeps its shard of them.
        set_model_state_dict(target, _full_weights(resume_from_checkpoint),
                             options=StateDictOptions(full_state_dict=True, strict=False))
        return None


def _full_weights(folder: str) -> dict:
    from safetensors.torch import load_file

    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as fh:
            files = sorted(set(json.load(fh)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    weights = {}
    for name in files:
        weights.update(load_file(os.path.join(folder, name)))
    return weights
