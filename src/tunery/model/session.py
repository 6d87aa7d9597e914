"""One session: tokenizer → template → model → adapters, loaded once for a purpose.

Every command that needs the model (or only its tokenizer and template) opens a session instead of writing the
sequence again:

* ``train`` — the recipes (train/workflow.py, ppo, grpo): tokenizer and template first (the data is encoded before the
  model loads), then :meth:`Session.load_model` gives the model with its fine-tuning method attached (or, evaluating
  without training, its adapters merged); a stage that saves a score head (config/stages.py) loads with one.
* ``infer`` — chat engines, eval: the model with its adapters merged, in eval mode, on the GPU when there is one.
* ``export`` — as ``infer``, on the device export_device asks for.
* ``score`` — the reward scorer: tokenizer and template (chat/scorer.py picks the head).
* ``preview`` — preview, estimate, the board's data view: tokenizer and template only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from tunery.config.loader import Config

PURPOSES = ("train", "infer", "export", "score", "preview")


@dataclass
class Session:
    cfg: Config
    purpose: str
    tokenizer: Any
    template: Any
    model: Any = None

    @property
    def stop_ids(self) -> list[int]:
        """The token ids that end an assistant turn (eos and the template's stop words)."""
        return self.template.stop_token_ids(self.tokenizer)

    def load_model(self, *, adapters: bool = True, trainable: bool | None = None, to_gpu: bool | None = None,
                   **load_kwargs):
        """The model for this session's purpose (kept as ``self.model``).

        ``train``: the fine-tuning method attached when ``trainable`` (default: do_train), else the adapters merged;
        ``infer``/``export``: the adapters merged (``adapters=False``: the base alone; :meth:`merge_adapters` adds
        them later), moved to the GPU when one is there and the model is not quantized (``to_gpu`` overrides).
        ``load_kwargs`` go to ``from_pretrained`` of the causal LM (e.g. train/cpu_fsdp.py's load-time sharding)."""
        import torch

        from tunery.config.stages import stage_spec
        from tunery.model.adapters import load_adapters, prepare_for_training
        from tunery.model.load import load_model, load_reward_model

        cfg = self.cfg
        assert self.purpose in ("train", "infer", "export"), self.purpose
        if self.purpose == "train":
            score_head = stage_spec(cfg.stage).saves == "score"  # e.g. rm: a 1-output score head
            model = load_reward_model(cfg, self.tokenizer) if score_head else load_model(cfg, self.tokenizer,
                                                                                          **load_kwargs)
            trainable = cfg.do_train if trainable is None else trainable
            self.model = prepare_for_training(model, cfg) if trainable else load_adapters(model, cfg,
                                                                                          is_trainable=False)
            return self.model
        model = load_model(cfg, self.tokenizer, **load_kwargs)
        if to_gpu is None:
            to_gpu = torch.cuda.is_available() and cfg.quantization_bit is None
        if to_gpu:
            model = model.to("cuda")
        self.model = load_adapters(model, cfg, is_trainable=False).eval() if adapters else model.eval()
        return self.model

    def merge_adapters(self):
        """The adapters merged into a model loaded with ``adapters=False`` (eval --compare: base first)."""
        from tunery.model.adapters import load_adapters

        self.model = load_adapters(self.model, self.cfg, is_trainable=False).eval()
        return self.model


def open_session(cfg: Config, purpose: str, resolve: Callable | None = None) -> Session:
    """Tokenizer and template for ``purpose`` (one of PURPOSES); ``resolve(cfg, tokenizer)`` picks the template
    (default: data/template_select.resolve_template). The model loads with :meth:`Session.load_model`."""
    from tunery.data.template_select import resolve_template
    from tunery.model.load import load_tokenizer

    if purpose not in PURPOSES:
        raise ValueError(f"unknown session purpose {purpose!r}; one of {', '.join(PURPOSES)}")
    tokenizer = load_tokenizer(cfg)
    if resolve is not None:
        template = resolve(cfg, tokenizer)
    else:  # before training and in preview: say when the template encodes unlike the model's own chat template
        template = resolve_template(cfg, tokenizer, check_serving=purpose in ("train", "preview"))
    return Session(cfg, purpose, tokenizer, template)
