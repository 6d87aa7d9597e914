"""JSON that refuses a key given twice in one object (Python's json silently keeps the last one)."""

from __future__ import annotations

import json
import re
from typing import Any


class DuplicateKey(ValueError):
    """``key`` appears twice in one object; ``top_level`` when that object is the document itself; ``line`` is the
    line of its second occurrence (as far as a text search finds it)."""

    def __init__(self, key: str, top_level: bool, line: int | None):
        super().__init__(key)
        self.key, self.top_level, self.line = key, top_level, line


def loads_unique(text: str) -> Any:
    """``json.loads`` that raises :class:`DuplicateKey` for the first key found twice in one object."""
    found: list[tuple[str, int]] = []

    def hook(pairs):
        obj = dict(pairs)
        if len(obj) != len(pairs) and not found:
            seen = set()
            for key, _ in pairs:
                if key in seen:
                    found.append((key, id(obj)))
                    break
                seen.add(key)
        return obj

    data = json.loads(text, object_pairs_hook=hook)
    if found:
        key, owner = found[0]
        hits = [m.start() for m in re.finditer(re.escape(json.dumps(key)) + r"\s*:", text)]
        line = text.count("\n", 0, hits[1]) + 1 if len(hits) > 1 else None
        raise DuplicateKey(key, owner == id(data), line)
    return data
