"""What every stage's transformers Trainer shares: LoRA+ optimizer groups, optional in-order batches, and metrics
that a stage computes inside its loss (rewards/…, accuracy) averaged over the logging interval and all processes."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING

import torch

from tunery.train.cpu_fsdp import ShardedCheckpoints
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)


def loraplus_param_groups(model, lr: float, ratio: float, embedding_lr: float, weight_decay: float,
                          decay_names: set[str]) -> list[dict]:
    """LoRA+ (Hayou et al. 2024): the B matrices learn `ratio` times faster than A; LoRA embedding factors get their
    own learning rate. Biases and norms are in the no-decay groups."""
    groups: dict[str, list] = defaultdict(list)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "lora_embedding_" in name:
            key = "embedding"
        elif "lora_B" in name or param.ndim == 1:
            key = "b" if name in decay_names else "b_nodecay"
        else:
            key = "a" if name in decay_names else "a_nodecay"
        groups[key].append(param)
    settings = {
        "a": (lr, weight_decay), "a_nodecay": (lr, 0.0), "b": (lr * ratio, weight_decay),
        "b_nodecay": (lr * ratio, 0.0), "embedding": (embedding_lr, weight_decay),
    }
    return [{"params": groups[k], "lr": settings[k][0], "weight_decay": settings[k][1]}
            for k in settings if groups[k]]


class TuneryTrainerMixin(ShardedCheckpoints):
    """Mixed into a transformers Trainer (first in the bases). ``cfg`` is the run's Config. A model transformers
    sharded at load time (FSDP2 on CPU) gets resumable checkpoints from :class:`ShardedCheckpoints`."""

    def __init__(self, *args, cfg: Config, **kwargs):
        self.cfg = cfg
        super().__init__(*args, **kwargs)
        self._stored: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            from tunery.train.optimizers import create_custom_optimizer

            self.optimizer = create_custom_optimizer(self.model if model is None else model, self.args, self.cfg)
        if self.optimizer is None and self.cfg.loraplus_lr_ratio and self.cfg.finetuning_type == "lora":
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            groups = loraplus_param_groups(opt_model, self.args.learning_rate, self.cfg.loraplus_lr_ratio,
                                           self.cfg.loraplus_lr_embedding, self.args.weight_decay, decay)
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, **kwargs)
            logger.info("LoRA+ optimizer: lora_B learning rate %g (ratio %g)",
                        self.args.learning_rate * self.cfg.loraplus_lr_ratio, self.cfg.loraplus_lr_ratio)
        return super().create_optimizer(model)

    def _sparse_grads(self) -> bool:
        return bool(getattr(self.cfg, "use_badam", False)) and self.cfg.badam_mode == "ratio"

    def _clip_grad_norm(self, model):
        if self._sparse_grads():  # ratio-wise BAdam: sparse gradients, which torch's clip_grad_norm_ cannot norm
            from tunery.train.optimizers import clip_sparse_aware

            return clip_sparse_aware(model.parameters(), self.args.max_grad_norm)
        return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model, grad_norm=None):
        if grad_norm is None and self._sparse_grads():
            from tunery.train.optimizers import clip_sparse_aware

            grad_norm = clip_sparse_aware(model.parameters(), float("inf"))
        return super()._get_grad_norm(model, grad_norm)

    def _get_train_sampler(self, train_dataset=None):
        if self.cfg.disable_shuffling:
            return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None
                                                      else self.train_dataset)
        return super()._get_train_sampler(train_dataset)

    # -- metrics computed inside the loss ------------------------------------------------------------------------
    def store_metrics(self, metrics: dict[str, torch.Tensor], split: str) -> None:
        """Remember this batch's metrics (0-d tensors, NaN where a batch has none), averaged over processes."""
        if not metrics:
            return
        keys = list(metrics)
        values = torch.stack([metrics[k].detach().float().reshape(()) for k in keys]).to(self.args.device)
        if self.accelerator.num_processes > 1:
            values = self.accelerator.gather(values.unsqueeze(0)).nanmean(0)
        for key, value in zip(keys, values.tolist()):
            if not math.isnan(value):
                self._stored[split][key].append(value)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        for key, values in self._stored[split].items():
            if values:
                logs[prefix + key] = round(sum(values) / len(values), 6)
        self._stored[split].clear()
        super().log(logs, *args, **kwargs)


# -- TRL's trainers (dpo, kto, rm) ------------------------------------------------------------------------------------
def trl_arguments(config_cls, args, **options):
    """A TRL config (DPOConfig, KTOConfig, RewardConfig) from Tunery's TrainingArguments: every TrainingArguments
    field as Tunery set it — so TRL's own defaults (learning_rate 1e-6, bf16, gradient_checkpointing, logging_steps
    10) do not apply — plus the trainer's own ``options``."""
    import dataclasses

    from transformers import TrainingArguments

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    return config_cls(**{**values, **options})


def as_dataset(examples):
    """TRL's trainers take a datasets.Dataset; Tunery's encoders give lists of dicts."""
    if examples is None:
        return None
    from datasets import Dataset

    return examples if isinstance(examples, Dataset) else Dataset.from_list(list(examples))


class TrlTrainerMixin(TuneryTrainerMixin):
    """Mixed into one of TRL's trainers (first in the bases): turns Tunery's TrainingArguments into the trainer's TRL
    config (``trl_config`` returns its class and options) and the encoded examples into datasets. Tunery writes its
    own artifacts: no model card README.md in output_dir (it could overwrite a user's file) and no usage ping."""

    def trl_config(self, cfg: Config, args) -> tuple[type, dict]:
        raise NotImplementedError

    def __init__(self, *args, cfg: Config, **kwargs):
        config_cls, options = self.trl_config(cfg, kwargs["args"])
        kwargs["args"] = trl_arguments(config_cls, kwargs["args"], **options)
        train, evaluation = as_dataset(kwargs.get("train_dataset")), as_dataset(kwargs.get("eval_dataset"))
        # TRL's trainers need a train_dataset even to evaluate only: the evaluation examples stand in (never trained).
        kwargs["train_dataset"], kwargs["eval_dataset"] = train if train is not None else evaluation, evaluation
        super().__init__(*args, cfg=cfg, **kwargs)

    def create_model_card(self, *args, **kwargs) -> None:
        return None

    def _send_telemetry(self) -> None:
        return None


def init_with_policy_as_reference(init, *args, **kwargs) -> None:
    """Run a TRL trainer's ``init`` so that a LoRA run's reference is the policy with its adapter off: TRL's copy of
    the adapter ("ref") is dropped, and made without PiSSA's init (which would run on the base weights again)."""
    lora = getattr(kwargs["model"], "peft_config", {}).get("default")
    saved = getattr(lora, "init_lora_weights", None)
    if lora is not None:
        lora.init_lora_weights = True
    try:
        init(*args, **kwargs)
    finally:
        if lora is not None:
            lora.init_lora_weights = saved
    trainer = getattr(init, "__self__", None)
    if trainer is not None and "ref" in getattr(trainer.model, "peft_config", {}):
        trainer.model.delete_adapter("ref")  # TRL then disables the adapter for the reference pass


class TrlPreferenceMixin(TrlTrainerMixin):
    """dpo/kto on TRL's trainers. The encoded examples go in as they are (TRL's own tokenization and in-batch KL
    pairing are skipped: Tunery's encoder is LLaMA-Factory's), and a LoRA run's reference model is the policy with
    its adapter switched off, as in LLaMA-Factory — not TRL's frozen copy of the starting adapter."""

    def __init__(self, *args, **kwargs):
        init_with_policy_as_reference(super().__init__, *args, **kwargs)

    def _prepare_dataset(self, dataset, *args, **kwargs):
        return dataset
