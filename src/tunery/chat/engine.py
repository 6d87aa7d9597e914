"""The chat engine: base model (+ LoRA adapters merged at load), template, generation; sync and streaming.

`create_engine(cfg)` picks the backend (`infer_backend`: huggingface, the default, or vllm) — or the reward scorer
for `stage: rm`. Every engine offers `chat`, `chat_n`, `stream_chat` and `get_scores` with the same arguments:
`messages` (user/assistant turns; a leading system message, OpenAI `tool` messages and assistant `tool_calls` are
accepted), `system`, `tools` (a JSON list of tool schemas) and generation overrides (`GENERATION_KEYS` + `stop`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterator, Optional

from tunery.chat.stream import (ContextLengthError, NotARewardModel, Response, StopTrimmer, Stream,
                                check_messages)
from tunery.config.stages import stage_spec
from tunery.errors import TuneryError
from tunery.model.generation import GENERATION_KEYS, chat_generate_kwargs, sampling_params  # noqa: F401
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

__all__ = ["GENERATION_KEYS", "HuggingFaceEngine", "Response", "Stream", "ContextLengthError", "create_engine",
           "create_compare_engines", "derive_config"]


def derive_config(cfg: Config, **changes) -> Config:
    """`cfg` with some option values changed (e.g. the base model of a comparison), validated again."""
    return cfg.replace(**changes)


class HuggingFaceEngine:
    """Generation with transformers on whatever device torch offers (CPU works). One generation at a time."""

    backend = "huggingface"
    can_generate = True

    def __init__(self, cfg: Config):
        from tunery.model.session import open_session

        self.cfg = cfg
        session = open_session(cfg, "infer")
        self.tokenizer, self.template = session.tokenizer, session.template
        self.model = session.load_model()  # adapters merged, eval mode, on the GPU when there is one
        self.stop_ids = session.stop_ids
        self.context_length = _context_length(self.model.config, cfg)
        self.lock = threading.Lock()  # one generation at a time per model

    # ------------------------------------------------------------ prompt
    def prompt_ids(self, messages: list[dict], system: Optional[str] = None, tools: Optional[str] = None) -> list[int]:
        """The token ids of the prompt that asks for the next assistant turn (checked, context-limited)."""
        from tunery.data.templates import split_system

        system, messages = split_system(messages, system)
        check_messages(messages)
        convo = list(messages) + [{"role": "assistant", "content": ""}]
        ids, _ = self.template.encode_oneturn(self.tokenizer, convo, system, tools)
        if len(ids) >= self.context_length:
            raise ContextLengthError(len(ids), self.context_length)
        return ids

    def generation_kwargs(self, prompt_len: int = 0, **overrides) -> dict:
        return chat_generate_kwargs(self.cfg, self.tokenizer, self.stop_ids, self.context_length, prompt_len,
                                    **overrides)

    def _inputs(self, ids: list[int]):
        import torch

        input_ids = torch.tensor([ids], device=self.model.device)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.cfg.skip_special_tokens)

    # ------------------------------------------------------------ sync
    def chat(self, messages: list[dict], system: Optional[str] = None, tools: Optional[str] = None,
             **overrides) -> Response:
        return self.chat_n(messages, system, tools, n=1, **overrides)[0]

    def chat_n(self, messages: list[dict], system: Optional[str] = None, tools: Optional[str] = None, n: int = 1,
               **overrides) -> list[Response]:
        """`n` independent replies (sampled; with greedy decoding the one reply is repeated)."""
        import torch

        ids = self.prompt_ids(messages, system, tools)
        kwargs = self.generation_kwargs(len(ids), **overrides)
        copies = n if kwargs.get("do_sample") or kwargs.get("num_beams", 1) >= n else 1
        with self.lock, torch.inference_mode():
            output = self.model.generate(**self._inputs(ids), **kwargs, num_return_sequences=copies)
        replies = []
        for row in output[:, len(ids):].tolist():
            new, finish = self._cut(row)
            text = self._decode(new)
            trimmer = StopTrimmer(overrides.get("stop"))
            trimmed = trimmer.trim(text)
            replies.append(Response(trimmed, len(ids), len(new), "stop" if trimmer.stopped else finish))
        return [replies[i % len(replies)] for i in range(n)]

    def _cut(self, row: list[int]) -> tuple[list[int], str]:
        """The generated tokens up to the first stop token (padding after it dropped), and why generation ended."""
        stops = set(self.stop_ids)
        for i, token in enumerate(row):
            if token in stops:
                return row[: i + 1], "stop"
        return row, "length"

    # ------------------------------------------------------------ streaming
    def stream_chat(self, messages: list[dict], system: Optional[str] = None, tools: Optional[str] = None,
                    **overrides) -> Stream:
        """Start a reply; iterate the returned Stream for text pieces (generation runs in a worker thread)."""
        ids = self.prompt_ids(messages, system, tools)
        kwargs = self.generation_kwargs(len(ids), **overrides)
        stream = Stream(len(ids))
        stream._source = self._stream_pieces(stream, ids, kwargs, overrides.get("stop"))
        return stream

    def _stream_pieces(self, stream: Stream, ids: list[int], kwargs: dict, stops) -> Iterator[str]:
        from transformers import StoppingCriteria, StoppingCriteriaList

        streamer = _counting_streamer(self.tokenizer, skip_prompt=True,
                                     skip_special_tokens=self.cfg.skip_special_tokens)

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                import torch

                return torch.full((input_ids.shape[0],), stream.cancelled.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        errors: list[BaseException] = []

        def work():
            import torch

            try:
                with self.lock, torch.inference_mode():
                    if stream.cancelled.is_set():
                        streamer.end()
                        return
                    self.model.generate(**self._inputs(ids), **kwargs, streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([_Cancelled()]))
            except BaseException as err:  # noqa: BLE001 - re-raised in the consumer's thread
                errors.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True, name="tunery-generate")
        thread.start()
        trimmer = StopTrimmer(stops)
        try:
            for piece in streamer:
                out = trimmer.feed(piece)
                if out:
                    yield out
                if trimmer.stopped:
                    stream.cancel()
                    break
            rest = trimmer.flush()
            if rest:
                yield rest
        finally:
            stream.cancel()
            thread.join()
            stream.completion_tokens = streamer.count
            last_is_stop = streamer.last in self.stop_ids
            stream.finish_reason = "stop" if trimmer.stopped or last_is_stop else "length"
        if errors:
            raise errors[0]

    # ------------------------------------------------------------ scores
    def get_scores(self, texts: list[str], max_length: Optional[int] = None) -> list[float]:
        raise NotARewardModel("this model generates text; scores need a reward model — start it with stage: rm "
                              "and the reward model's adapter (adapter_name_or_path)")


def _counting_streamer(tokenizer, **kwargs):
    """transformers' TextIteratorStreamer that also counts the generated tokens and remembers the last one."""
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        count = 0
        last = None

        def put(self, value):
            if not (self.skip_prompt and self.next_tokens_are_prompt):
                flat = value.reshape(-1).tolist()
                self.count += len(flat)
                if flat:
                    self.last = flat[-1]
            super().put(value)

    return CountingStreamer(tokenizer, **kwargs)


def _context_length(config, cfg: Config) -> int:
    sizes = [getattr(config, "max_position_embeddings", None), cfg.model_max_length]
    sizes = [s for s in sizes if isinstance(s, int) and s > 0]
    return min(sizes) if sizes else 1 << 20


def create_engine(cfg: Config):
    """The engine `cfg` asks for: a reward scorer for a stage that saves a score head (rm), else huggingface
    (default) or vllm."""
    if stage_spec(cfg.stage).saves == "score":
        from tunery.chat.scorer import RewardEngine

        return RewardEngine(cfg)
    if cfg.infer_backend == "vllm":
        from tunery.chat.vllm_engine import VllmEngine

        return VllmEngine(cfg)
    return HuggingFaceEngine(cfg)


def create_compare_engines(cfg: Config):
    """(fine-tuned, base) engines for `compare`: the base is compare_model, else the same model without adapters."""
    tuned = create_engine(cfg)
    if cfg.compare_model:
        base_cfg = derive_config(cfg, model_name_or_path=cfg.compare_model, adapter_name_or_path=None, compare=False)
    elif cfg.adapter_name_or_path:
        base_cfg = derive_config(cfg, adapter_name_or_path=None, compare=False)  # the base alone: no comparison
    else:
        raise TuneryError("compare needs two different models — give adapter_name_or_path or compare_model")
    return tuned, create_engine(base_cfg)
