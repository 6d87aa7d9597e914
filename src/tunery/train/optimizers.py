"""The optimizers LLaMA-Factory offers beside transformers' own: GaLore, APOLLO, BAdam, Adam-mini and Muon, built
from the libraries that implement them with LLaMA-Factory's parameter groups (weight decay on weights, none on
biases and norms; low-rank projection on the targeted linear weights).

Layer-wise GaLore/APOLLO step each weight from a post-accumulate-grad hook and hand the Trainer transformers'
LayerWiseDummyOptimizer, for which transformers' get_scheduler builds one scheduler per weight."""

from __future__ import annotations

import torch
from typing import TYPE_CHECKING

from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)


def custom_optimizer_name(cfg: Config) -> str | None:
    for name in ("use_galore", "use_apollo", "use_badam", "use_adam_mini", "use_muon"):
        if cfg.values[name]:
            return name
    return None


def _decay_names(model) -> set[str]:
    """Weights that get weight decay: not in layer norms, not biases (transformers' rule, as LLaMA-Factory's)."""
    from transformers.trainer_pt_utils import get_parameter_names

    try:
        from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS
    except ImportError:  # pragma: no cover - older transformers
        ALL_LAYERNORM_LAYERS = [torch.nn.LayerNorm]
    return {n for n in get_parameter_names(model, ALL_LAYERNORM_LAYERS) if "bias" not in n and "norm" not in n}


def low_rank_targets(model, targets: list[str]) -> list[torch.nn.Parameter]:
    """The 2-D trainable weights of the linear modules whose name contains a target ('all': every linear layer but
    the output head)."""
    from tunery.model.adapters import linear_module_names

    names = linear_module_names(model) if list(targets) == ["all"] else list(targets)
    output = model.get_output_embeddings()
    params = []
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output and any(t in module_name for t in names):
            params.extend(p for p in module.parameters() if p.requires_grad and p.ndim > 1)
    return params


def _split(model, special: list[torch.nn.Parameter]):
    """(non-special weights with decay, non-special without decay, every trainable parameter)."""
    decay_names = _decay_names(model)
    ids = {id(p) for p in special}
    decay, nodecay, trainable = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        trainable.append(param)
        if id(param) not in ids:
            (decay if name in decay_names else nodecay).append(param)
    return decay, nodecay, trainable


def library_kwargs(args, optimizer_cls) -> dict:
    """transformers' optimizer arguments for `optim` (lr, betas, eps, …) that `optimizer_cls` accepts (the libraries'
    AdamW take no `fused`)."""
    import inspect

    from transformers import Trainer

    _, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    accepted = inspect.signature(optimizer_cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in accepted}


def _low_rank_optimizer(model, args, optimizer_cls, low_rank: dict, targets: list[str], layerwise: bool,
                        what: str, **ctor):
    special = low_rank_targets(model, targets)
    if not special:
        from tunery.errors import TuneryError

        raise TuneryError(f"{what.lower()}_target {','.join(targets)} matched no linear layer — its linear layers "
                          "are named like q_proj, v_proj, up_proj, down_proj (or use 'all')")
    decay, nodecay, trainable = _split(model, special)
    kwargs = dict(library_kwargs(args, optimizer_cls), **ctor)
    wd = args.weight_decay
    groups = [dict(params=nodecay, weight_decay=0.0), dict(params=decay, weight_decay=wd),
              dict(params=special, weight_decay=wd, **low_rank)]
    logger.info("%s optimizer on %d projected weights: %s%s", what, len(special), low_rank,
                " (layer-wise)" if layerwise else "")
    if not layerwise:
        return optimizer_cls([g for g in groups if g["params"]], **kwargs)
    from transformers.trainer_pt_utils import LayerWiseDummyOptimizer

    per_param = {}
    for group in groups:
        for param in group["params"]:
            per_param[param] = optimizer_cls([dict(group, params=[param])], **kwargs)

    def step(param):
        if param.grad is not None:
            per_param[param].step()
            per_param[param].zero_grad()

    for param in trainable:
        param.register_post_accumulate_grad_hook(step)
    return LayerWiseDummyOptimizer(optimizer_dict=per_param, lr=args.learning_rate)


def galore_optimizer(model, args, cfg: Config):
    from galore_torch import GaLoreAdafactor, GaLoreAdamW, GaLoreAdamW8bit

    classes = {"adamw_torch": GaLoreAdamW, "adamw_torch_fused": GaLoreAdamW, "adamw_bnb_8bit": GaLoreAdamW8bit, "adamw_8bit": GaLoreAdamW8bit,
               "paged_adamw_8bit": GaLoreAdamW8bit, "adafactor": GaLoreAdafactor}
    optim = str(getattr(args.optim, "value", args.optim))
    low_rank = {"rank": cfg.galore_rank, "update_proj_gap": cfg.galore_update_interval, "scale": cfg.galore_scale,
                "proj_type": cfg.galore_proj_type}
    return _low_rank_optimizer(model, args, classes[optim], low_rank, cfg.galore_target, cfg.galore_layerwise,
                               "GaLore")


def apollo_optimizer(model, args, cfg: Config):
    from apollo_torch import APOLLOAdamW

    low_rank = {"rank": cfg.apollo_rank, "proj": cfg.apollo_proj, "proj_type": cfg.apollo_proj_type,
                "update_proj_gap": cfg.apollo_update_interval, "scale": cfg.apollo_scale,
                "scale_type": cfg.apollo_scale_type}
    return _low_rank_optimizer(model, args, APOLLOAdamW, low_rank, cfg.apollo_target, cfg.apollo_layerwise,
                               "APOLLO", scale_front=cfg.apollo_scale_front)


def badam_optimizer(model, args, cfg: Config):
    from transformers import Trainer

    decay, nodecay, _ = _split(model, [])
    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    groups = [dict(params=nodecay, weight_decay=0.0), dict(params=decay, weight_decay=args.weight_decay)]
    named = list(model.named_parameters())
    if cfg.badam_mode == "layer":
        from badam import BlockOptimizer

        logger.info("BAdam: one layer at a time (%s), switching every %d steps", cfg.badam_switch_mode,
                    cfg.badam_switch_interval)
        return BlockOptimizer(base_optimizer=optimizer_cls(groups, **kwargs), named_parameters_list=named,
                              block_prefix_list=None, switch_block_every=cfg.badam_switch_interval,
                              start_block=cfg.badam_start_block, switch_mode=cfg.badam_switch_mode,
                              verbose=cfg.badam_verbose, ds_zero3_enabled=_zero3())
    from badam import BlockOptimizerRatio

    logger.info("BAdam: %g of every weight updated (%s mask)", cfg.badam_update_ratio, cfg.badam_mask_mode)
    return BlockOptimizerRatio(param_groups=groups, named_parameters_list=named, update_ratio=cfg.badam_update_ratio,
                               mask_mode=cfg.badam_mask_mode, verbose=cfg.badam_verbose, include_embedding=False,
                               **library_kwargs(args, BlockOptimizerRatio))


def _zero3() -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def adam_mini_optimizer(model, args, cfg: Config):
    from adam_mini import Adam_mini
    from transformers.integrations import is_fsdp_enabled

    config = model.config
    return Adam_mini(named_parameters=model.named_parameters(), lr=args.learning_rate,
                     betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon, weight_decay=args.weight_decay,
                     model_sharding=is_fsdp_enabled() or _zero3(), dim=getattr(config, "hidden_size", None),
                     n_heads=getattr(config, "num_attention_heads", None),
                     n_kv_heads=getattr(config, "num_key_value_heads", None))


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on the 2-D hidden weights and AdamW on the rest (embeddings, output head, norms, biases),
    stepped together, as LLaMA-Factory's Muon. The learning rate schedule applies to both."""

    def __init__(self, muon_params, adamw_params, lr, weight_decay, betas, eps):
        self.muon = torch.optim.Muon(muon_params, lr=lr, weight_decay=weight_decay) if muon_params else None
        self.adamw = torch.optim.AdamW(adamw_params, lr=lr, weight_decay=weight_decay, betas=betas,
                                       eps=eps) if adamw_params else None
        self.parts = [o for o in (self.muon, self.adamw) if o is not None]
        super().__init__([{"params": []}], {"lr": lr})
        self.param_groups = [g for o in self.parts for g in o.param_groups]  # the scheduler sets their lr
        self.defaults = dict(lr=lr)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for part in self.parts:
            part.step()
        return loss

    def zero_grad(self, set_to_none: bool = True):
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"parts": [o.state_dict() for o in self.parts]}

    def load_state_dict(self, state_dict):
        for part, state in zip(self.parts, state_dict["parts"]):
            part.load_state_dict(state)
        self.param_groups = [g for o in self.parts for g in o.param_groups]

    @property
    def state(self):
        merged = {}
        for part in self.parts:
            merged.update(part.state)
        return merged

    @state.setter
    def state(self, value):  # torch.optim.Optimizer.__init__ assigns it
        pass


def muon_optimizer(model, args, cfg: Config):
    output = model.get_output_embeddings()
    head = {id(p) for p in output.parameters()} if output is not None else set()
    muon, adamw = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        hidden = param.ndim == 2 and "embed" not in name and "lm_head" not in name and id(param) not in head
        (muon if hidden else adamw).append(param)
    logger.info("Muon optimizer: %d Muon weights, %d AdamW parameters", len(muon), len(adamw))
    return MuonWithAdamW(muon, adamw, lr=args.learning_rate, weight_decay=args.weight_decay,
                         betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)


@torch.no_grad()
def clip_sparse_aware(parameters, max_norm: float) -> torch.Tensor:
    """torch's clip_grad_norm_ for gradients that may be sparse (ratio-wise BAdam keeps only a share of each
    gradient): the total 2-norm of all gradients, each scaled down when it exceeds ``max_norm``."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = [(g.coalesce().values() if g.is_sparse else g).float().norm() for g in grads]
    total = torch.stack([n.to(norms[0].device) for n in norms]).norm()
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g.mul_(coef.to(g.device, g.dtype))
    return total


BUILDERS = {"use_galore": galore_optimizer, "use_apollo": apollo_optimizer, "use_badam": badam_optimizer,
            "use_adam_mini": adam_mini_optimizer, "use_muon": muon_optimizer}


def create_custom_optimizer(model, args, cfg: Config):
    """The optimizer the options ask for, or None (then transformers builds its own from `optim`)."""
    name = custom_optimizer_name(cfg)
    return BUILDERS[name](model, args, cfg) if name else None
