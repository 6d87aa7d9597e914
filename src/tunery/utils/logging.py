"""Logging set-up: concise INFO lines on stderr for the main process."""

from __future__ import annotations

import logging
import os
import sys

_CONFIGURED = False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (it may be replaced after set-up, e.g. by pytest or a web UI)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def get_logger(name: str) -> logging.Logger:
    global _CONFIGURED
    if not _CONFIGURED:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[%(levelname)s|%(name)s] %(message)s"))
        root = logging.getLogger("tunery")
        root.addHandler(handler)
        root.setLevel(logging.INFO if os.environ.get("LOCAL_RANK", "0") in ("0", "-1") else logging.WARNING)
        root.propagate = False
        _CONFIGURED = True
    return logging.getLogger(name if name.startswith("tunery") else f"tunery.{name}")
