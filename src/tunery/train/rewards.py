"""Where ppo's rewards come from (``reward_model_type``): a reward model trained with stage rm — a LoRA adapter on
``model_name_or_path`` (lora) or a full model folder (full) — or an HTTP service (api)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from tunery.errors import TuneryError
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)


class ModelScorer:
    """Scores sequences (prompt + answer token ids) with a sequence-classification reward model on ``device``."""

    def __init__(self, model, pad_id: int, device):
        self.model = model.to(device).eval()
        self.pad_id = pad_id
        self.device = device

    def __call__(self, sequences: list[list[int]], texts: list[str]):
        import torch

        from tunery.train.collators import pad

        input_ids = pad(sequences, self.pad_id).to(self.device)
        mask = pad([[1] * len(s) for s in sequences], 0).to(self.device)
        with torch.no_grad():
            return self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float()


class ApiScorer:
    """POSTs ``{"model": "model", "messages": [text, …]}`` (each text a full prompt + answer, as LLaMA-Factory's
    reward server protocol) and reads ``{"scores": [float, …]}``."""

    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url
        self.timeout = timeout

    def __call__(self, sequences: list[list[int]], texts: list[str]):
        import torch

        body = json.dumps({"model": "model", "messages": texts}).encode("utf-8")
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                scores = json.loads(response.read().decode("utf-8"))["scores"]
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as err:
            raise TuneryError(f"reward_model {self.url} gave no scores ({type(err).__name__}: {err}) — check that "
                              'the server is up and answers {"scores": [...]}') from None
        if len(scores) != len(texts):
            raise TuneryError(f"reward_model {self.url} returned {len(scores)} scores for {len(texts)} texts — it "
                              "must score every message")
        return torch.tensor([float(s) for s in scores])


def load_scorer(cfg: Config, tokenizer, device):
    from tunery.train.models import freeze, load_reward_model, merge_adapter

    if cfg.reward_model_type == "api":
        logger.info("rewards from %s", cfg.reward_model)
        return ApiScorer(cfg.reward_model)
    if cfg.reward_model_type == "lora":
        from peft import PeftModel

        base = load_reward_model(cfg, tokenizer, cfg.model_name_or_path)
        model = PeftModel.from_pretrained(base, cfg.reward_model).merge_and_unload()
    else:
        model = merge_adapter(load_reward_model(cfg, tokenizer, cfg.reward_model), cfg.reward_model_adapters)
    logger.info("rewards from the %s reward model %s", cfg.reward_model_type, cfg.reward_model)
    return ModelScorer(freeze(model), tokenizer.pad_token_id, device)
