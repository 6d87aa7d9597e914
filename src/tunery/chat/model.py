"""The Python API: `from tunery import ChatModel`.

    chat_model = ChatModel({"model_name_or_path": "models/tiny-llama3", "adapter_name_or_path": "saves/lora",
                            "template": "llama3"})
    replies = chat_model.chat([{"role": "user", "content": "Who are you?"}])
    for piece in chat_model.stream_chat(messages): ...
    scores = ChatModel({..., "stage": "rm"}).get_scores(["text 1", "text 2"])

The options are the command line's (validated the same way); messages use the roles user/assistant (plus
function/observation or OpenAI's tool messages); `system` and `tools` (a JSON string) are optional; generation options
(temperature, top_p, max_new_tokens, do_sample, stop, ...) may be given per call.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Union

from tunery.chat.stream import Response


class ChatModel:
    def __init__(self, args: Optional[Union[dict[str, Any], list[str]]] = None):
        from tunery.chat.engine import create_engine
        from tunery.config import parse_config

        if isinstance(args, (list, tuple)):
            cfg = parse_config("chat", list(args))
        else:
            cfg = parse_config("chat", overrides=dict(args or {}))
        self.cfg = cfg
        self.engine = create_engine(cfg)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def template(self):
        return self.engine.template

    def chat(self, messages: list[dict], system: Optional[str] = None, tools: Optional[str] = None,
             num_return_sequences: int = 1, **generation) -> list[Response]:
        """Replies (`num_return_sequences` of them), each with text, token counts and finish reason."""
        return self.engine.chat_n(messages, system, tools, n=num_return_sequences, **generation)

    def stream_chat(self, messages: list[dict], system: Optional[str] = None, tools: Optional[str] = None,
                    **generation) -> Iterator[str]:
        """Text pieces of one reply as they are generated."""
        yield from self.engine.stream_chat(messages, system, tools, **generation)

    def get_scores(self, batch_input: list[str], max_length: Optional[int] = None) -> list[float]:
        """Reward scores, one per text (needs a reward model: stage rm)."""
        return self.engine.get_scores(list(batch_input), max_length)
