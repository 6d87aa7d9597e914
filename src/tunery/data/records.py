"""The data contract between file formats and encoders.

Everything upstream of the encoder (registry, sources, formats) produces :class:`AlignedRecord`s and knows nothing of
tokens; everything downstream (templates, encoders, collators) knows nothing of file formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# Message roles, as LLaMA-Factory names them.
USER = "user"
ASSISTANT = "assistant"
SYSTEM = "system"
FUNCTION = "function"  # an assistant turn that calls a tool (content is the JSON call)
OBSERVATION = "observation"  # a tool result, in the user position

IGNORE_INDEX = -100


@dataclass
class AlignedRecord:
    """One training example, independent of the file format it came from.

    ``prompt``: messages (``{"role", "content"}``) alternating user/observation and assistant/function, ending with a
    user or observation turn. ``response``: one assistant message for sft; two (chosen, rejected) for ranking; one
    plus ``kto_tag`` for kto; empty for pt text and ppo prompts (for pt, the text is the single prompt message).
    """

    prompt: list[dict]
    response: list[dict]
    system: str = ""
    tools: str = ""
    kto_tag: Optional[bool] = None
    source: str = ""  # "dataset_name[index]" for error messages
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "response": self.response,
            "system": self.system,
            "tools": self.tools,
            "kto_tag": self.kto_tag,
            "source": self.source,
        }
