"""Reward models (`stage: rm`) behind the same engine interface: `get_scores` instead of chat.

Two layouts are read:
* LLaMA-Factory's: a causal LM (+ LoRA adapters) with a value head saved as `value_head.safetensors`
  (`v_head.summary.weight` / `.bias`) in the last adapter folder or the model folder, or inside the model weights;
* a transformers `*ForSequenceClassification` checkpoint with one label (Tunery's full/freeze `stage: rm`, TRL's
  RewardTrainer), or a causal LM plus a LoRA adapter of task SEQ_CLS (Tunery's LoRA `stage: rm`).
The score of a text is the head's value at its last token.
"""

from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING, Optional

from tunery.chat.stream import ContextLengthError
from tunery.errors import TuneryError
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

VALUE_HEAD_FILE = "value_head.safetensors"
HEAD_KEYS = ("v_head.summary.weight", "v_head.summary.bias")


def _is_sequence_classifier(path: str) -> bool:
    config_file = os.path.join(os.path.expanduser(path), "config.json")
    if not os.path.isfile(config_file):
        return False
    with open(config_file, encoding="utf-8") as fh:
        architectures = json.load(fh).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def _is_classifier_adapter(path: str) -> bool:
    """A LoRA adapter trained by `tunery train --stage rm` (peft task SEQ_CLS, the score head saved with it)."""
    config_file = os.path.join(os.path.expanduser(path), "adapter_config.json")
    if not os.path.isfile(config_file):
        return False
    with open(config_file, encoding="utf-8") as fh:
        return json.load(fh).get("task_type") == "SEQ_CLS"


def _read_value_head(folders: list[str]) -> Optional[dict]:
    from safetensors import safe_open

    for folder in folders:
        folder = os.path.expanduser(folder)
        candidates = [os.path.join(folder, VALUE_HEAD_FILE), os.path.join(folder, "model.safetensors")]
        for path in candidates:
            if not os.path.isfile(path):
                continue
            with safe_open(path, framework="pt") as fh:
                if HEAD_KEYS[0] in fh.keys():
                    return {key: fh.get_tensor(key) for key in HEAD_KEYS if key in fh.keys()}
    return None


class RewardEngine:
    """Scores texts with a reward model; it cannot chat."""

    backend = "huggingface"
    can_generate = False

    def __init__(self, cfg: Config):
        import torch

        from tunery.model.adapters import load_adapters
        from tunery.model.load import load_model
        from tunery.model.session import open_session

        self.cfg = cfg
        session = open_session(cfg, "score")  # the head is picked below: a classifier's own, or a value head
        self.tokenizer, self.template = session.tokenizer, session.template
        adapters = list(cfg.adapter_name_or_path or [])
        self.head = None
        if _is_sequence_classifier(cfg.model_name_or_path) or (adapters and _is_classifier_adapter(adapters[-1])):
            from transformers import AutoModelForSequenceClassification

            model = load_model(cfg, self.tokenizer, model_class=AutoModelForSequenceClassification,
                               what="reward model", num_labels=1)
            model.config.pad_token_id = self.tokenizer.pad_token_id
            if model.config.num_labels != 1:
                raise TuneryError(f"'{cfg.model_name_or_path}' classifies into {model.config.num_labels} labels; a "
                                  "reward model has one score (num_labels: 1)")
            model = load_adapters(model, cfg, is_trainable=False)
        else:
            model = load_adapters(load_model(cfg, self.tokenizer), cfg, is_trainable=False)
            weights = _read_value_head(adapters[::-1] + [cfg.model_name_or_path])
            if weights is None:
                where = adapters[-1] if adapters else cfg.model_name_or_path
                raise TuneryError(f"stage: rm needs a reward model, but '{where}' has no value head "
                                  f"({VALUE_HEAD_FILE}) — give the output_dir of a reward-model training run "
                                  "(stage: rm), or drop stage: rm to chat with the model")
            weight = weights[HEAD_KEYS[0]]
            self.head = torch.nn.Linear(weight.shape[-1], 1, bias=HEAD_KEYS[1] in weights)
            self.head.weight.data.copy_(weight.reshape(1, -1))
            if self.head.bias is not None:
                self.head.bias.data.copy_(weights[HEAD_KEYS[1]].reshape(1))
        if torch.cuda.is_available() and cfg.quantization_bit is None:
            model = model.to("cuda")
        self.model = model.eval()
        if self.head is not None:
            self.head = self.head.to(device=self.model.device, dtype=torch.float32)
        config = self.model.config
        self.context_length = getattr(config, "max_position_embeddings", None) or 1 << 20
        self.lock = threading.Lock()

    def get_scores(self, texts: list[str], max_length: Optional[int] = None) -> list[float]:
        """One score per text (already formatted as the reward model expects; no template is applied)."""
        import torch

        limit = min(max_length or self.context_length, self.context_length)
        encoded = [self.tokenizer.encode(text, add_special_tokens=False) for text in texts]
        too_long = [len(ids) for ids in encoded if len(ids) > limit]
        if too_long:
            raise ContextLengthError(max(too_long), limit)
        scores = []
        with self.lock, torch.inference_mode():
            for ids in encoded:  # one at a time: no padding side to get wrong, and texts are short
                ids = ids or [self.tokenizer.eos_token_id]
                input_ids = torch.tensor([ids], device=self.model.device)
                if self.head is None:
                    value = self.model(input_ids=input_ids).logits[0, 0]
                else:
                    hidden = self.model(input_ids=input_ids, output_hidden_states=True).hidden_states[-1]
                    value = self.head(hidden[0, -1].float())[0]
                scores.append(float(value))
        return scores

    def _refuse(self, *args, **kwargs):
        raise TuneryError("this model is a reward model (stage: rm): it scores texts (get_scores, "
                          "/v1/score/evaluation) and cannot chat — drop stage: rm to chat")

    chat = chat_n = stream_chat = prompt_ids = _refuse
