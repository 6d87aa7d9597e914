"""The chat engine: base model (+ LoRA adapters merged at load), template, generation; sync and streaming."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Optional

from tunery.utils.logging import get_logger

logger = get_logger(__name__)

GENERATION_KEYS = ("do_sample", "temperature", "top_p", "top_k", "num_beams", "max_new_tokens", "max_length",
                   "repetition_penalty", "length_penalty")


@dataclass
class Response:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


class HuggingFaceEngine:
    """Generation with transformers on whatever device torch offers (CPU works)."""

    def __init__(self, cfg):
        import torch

        from tunery.data.template_select import resolve_template
        from tunery.model.adapters import load_adapters
        from tunery.model.load import load_model, load_tokenizer

        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg)
        self.template = resolve_template(cfg, self.tokenizer)
        model = load_model(cfg, self.tokenizer)
        model = load_adapters(model, cfg, is_trainable=False)
        if torch.cuda.is_available() and cfg.quantization_bit is None:
            model = model.to("cuda")
        self.model = model.eval()
        self.lock = threading.Lock()  # one generation at a time per model

    def _prompt_ids(self, messages: list[dict], system: Optional[str], tools: Optional[str]) -> list[int]:
        convo = list(messages) + [{"role": "assistant", "content": ""}]
        prompt_ids, _ = self.template.encode_oneturn(self.tokenizer, convo, system, tools)
        return prompt_ids

    def generation_kwargs(self, **overrides) -> dict:
        params = {k: getattr(self.cfg, k) for k in GENERATION_KEYS}
        params.update({k: v for k, v in overrides.items() if v is not None and k in GENERATION_KEYS})
        if not params["do_sample"]:
            for key in ("temperature", "top_p", "top_k"):
                params.pop(key)
        if params.get("temperature") is not None and params["temperature"] <= 1e-5:
            params["do_sample"] = False
            for key in ("temperature", "top_p", "top_k"):
                params.pop(key, None)
        if "max_new_tokens" in params and params["max_new_tokens"]:
            params.pop("max_length")
        params["eos_token_id"] = self.template.stop_token_ids(self.tokenizer)
        params["pad_token_id"] = self.tokenizer.pad_token_id
        return params

    def _inputs(self, messages, system, tools):
        import torch

        ids = self._prompt_ids(messages, system, tools)
        input_ids = torch.tensor([ids], device=self.model.device)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def chat(self, messages: list[dict], system: Optional[str] = None, tools: Optional[str] = None,
             **overrides) -> Response:
        import torch

        inputs = self._inputs(messages, system, tools)
        kwargs = self.generation_kwargs(**overrides)
        with self.lock, torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        new = output[0, inputs["input_ids"].shape[1]:].tolist()
        stops = set(kwargs["eos_token_id"])
        finish = "stop" if new and new[-1] in stops else "length"
        text = self.tokenizer.decode(new, skip_special_tokens=self.cfg.skip_special_tokens)
        return Response(text, inputs["input_ids"].shape[1], len(new), finish)

    def stream_chat(self, messages: list[dict], system: Optional[str] = None, tools: Optional[str] = None,
                    **overrides) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        inputs = self._inputs(messages, system, tools)
        kwargs = self.generation_kwargs(**overrides)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=self.cfg.skip_special_tokens)
        errors: list[BaseException] = []

        def work():
            import torch

            try:
                with self.lock, torch.inference_mode():
                    self.model.generate(**inputs, **kwargs, streamer=streamer)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        for piece in streamer:
            if piece:
                yield piece
        thread.join()
        if errors:
            raise errors[0]


def create_engine(cfg):
    if cfg.infer_backend == "vllm":
        from tunery.errors import TuneryError

        raise TuneryError("infer_backend: vllm is not available in this version — use infer_backend: huggingface")
    return HuggingFaceEngine(cfg)
