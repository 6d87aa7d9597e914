"""`infer_backend: vllm`: the same engine interface on vLLM's AsyncLLMEngine (optional extra, CUDA GPU).

The prompt is encoded by Tunery's template (as with the huggingface backend) and handed to vLLM as token ids; one LoRA
adapter is served with a LoRARequest. vLLM runs on an asyncio loop in a background thread, so the synchronous
`chat`/`stream_chat` calls (terminal, web chat, API worker threads) can all share one engine that batches them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import threading
from typing import TYPE_CHECKING, Iterator, Optional

from tunery.chat.stream import ContextLengthError, NotARewardModel, Response, Stream, check_messages
from tunery.errors import TuneryError

if TYPE_CHECKING:
    from tunery.config.loader import Config

_DONE = object()


def _import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise TuneryError("infer_backend: vllm needs the vllm package (pip install 'tunery[vllm]'; Linux with a "
                          "CUDA GPU) — or use infer_backend: huggingface") from None
    from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams
    from vllm.lora.request import LoRARequest

    return AsyncEngineArgs, AsyncLLMEngine, SamplingParams, LoRARequest


class VllmEngine:
    backend = "vllm"
    can_generate = True

    def __init__(self, cfg: Config):
        AsyncEngineArgs, AsyncLLMEngine, SamplingParams, LoRARequest = _import_vllm()
        from tunery.model.session import open_session

        adapters = list(cfg.adapter_name_or_path or [])
        if len(adapters) > 1:
            raise TuneryError(f"infer_backend: vllm serves one LoRA adapter, got {len(adapters)} — merge them into "
                              "the model first (`tunery export`) and serve the exported folder")
        if cfg.quantization_bit is not None:
            raise TuneryError("infer_backend: vllm does not use quantization_bit (bitsandbytes) — drop it, or use "
                              "infer_backend: huggingface")
        self.cfg = cfg
        self.SamplingParams = SamplingParams
        session = open_session(cfg, "infer")  # tokenizer and template; vLLM loads the weights itself
        self.tokenizer, self.template = session.tokenizer, session.template
        self.stop_ids = session.stop_ids
        self.context_length = cfg.vllm_maxlen
        engine_args = {
            "model": os.path.expanduser(cfg.model_name_or_path),
            "trust_remote_code": cfg.trust_remote_code,
            "download_dir": cfg.cache_dir,
            "dtype": "auto" if cfg.infer_dtype == "auto" else cfg.infer_dtype,
            "max_model_len": cfg.vllm_maxlen,
            "gpu_memory_utilization": cfg.vllm_gpu_util,
            "enforce_eager": cfg.vllm_enforce_eager,
            "enable_lora": bool(adapters),
            "max_lora_rank": cfg.vllm_max_lora_rank,
            "disable_log_stats": True,
        }
        engine_args.update(cfg.vllm_config if isinstance(cfg.vllm_config, dict) else {})
        self.lora = LoRARequest("default", 1, os.path.expanduser(adapters[0])) if adapters else None
        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True, name="tunery-vllm-loop").start()

        async def build():
            return AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**engine_args))

        self.engine = asyncio.run_coroutine_threadsafe(build(), self._loop).result()

    # ------------------------------------------------------------ shared with the huggingface backend
    def prompt_ids(self, messages: list[dict], system: Optional[str] = None, tools: Optional[str] = None) -> list[int]:
        from tunery.data.templates import split_system

        system, messages = split_system(messages, system)
        check_messages(messages)
        ids, _ = self.template.encode_oneturn(self.tokenizer, list(messages) + [{"role": "assistant", "content": ""}],
                                              system, tools)
        if len(ids) >= self.context_length:
            raise ContextLengthError(len(ids), self.context_length)
        return ids

    def _params(self, prompt_len: int, n: int, overrides: dict):
        from tunery.model.generation import vllm_sampling

        return vllm_sampling(self.cfg, self.SamplingParams, self.stop_ids, self.context_length, prompt_len, n,
                             overrides)

    async def _generate(self, ids: list[int], params, request_id: str):
        final = None
        async for output in self.engine.generate({"prompt_token_ids": ids}, params, request_id,
                                                 lora_request=self.lora):
            final = output
        return final

    # ------------------------------------------------------------ sync
    def chat(self, messages, system=None, tools=None, **overrides) -> Response:
        return self.chat_n(messages, system, tools, n=1, **overrides)[0]

    def chat_n(self, messages, system=None, tools=None, n: int = 1, **overrides) -> list[Response]:
        ids = self.prompt_ids(messages, system, tools)
        params = self._params(len(ids), n, overrides)
        request_id = f"tunery-{next(self._ids)}"
        final = asyncio.run_coroutine_threadsafe(self._generate(ids, params, request_id), self._loop).result()
        return [Response(out.text, len(ids), len(out.token_ids), "length" if out.finish_reason == "length" else "stop")
                for out in final.outputs]

    # ------------------------------------------------------------ streaming
    def stream_chat(self, messages, system=None, tools=None, **overrides) -> Stream:
        ids = self.prompt_ids(messages, system, tools)
        params = self._params(len(ids), 1, overrides)
        stream = Stream(len(ids))
        stream._source = self._pieces(stream, ids, params)
        return stream

    def _pieces(self, stream: Stream, ids: list[int], params) -> Iterator[str]:
        pieces: "queue.Queue" = queue.Queue()
        request_id = f"tunery-{next(self._ids)}"

        async def produce():
            sent = ""
            try:
                async for output in self.engine.generate({"prompt_token_ids": ids}, params, request_id,
                                                         lora_request=self.lora):
                    out = output.outputs[0]
                    if out.text[len(sent):]:
                        pieces.put(out.text[len(sent):])
                        sent = out.text
                    stream.completion_tokens = len(out.token_ids)
                    if output.finished:
                        stream.finish_reason = "length" if out.finish_reason == "length" else "stop"
                    if stream.cancelled.is_set():
                        await self.engine.abort(request_id)
                        break
            except BaseException as err:  # noqa: BLE001 - handed to the consumer's thread
                pieces.put(err)
            finally:
                pieces.put(_DONE)

        asyncio.run_coroutine_threadsafe(produce(), self._loop)
        while True:
            item = pieces.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def get_scores(self, texts: list[str], max_length: Optional[int] = None) -> list[float]:
        raise NotARewardModel("scores need a reward model (stage: rm) on infer_backend: huggingface")
