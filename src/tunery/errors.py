"""User-facing errors: one line saying what, where and how to fix; exit code 2."""

from __future__ import annotations

import difflib
from typing import Iterable


class TuneryError(Exception):
    """An error caused by the user's input (config, data, paths).

    The CLI prints ``str(err)`` as one line and exits with code 2; no traceback unless ``--debug``.
    Compose messages as: what is wrong, where (file, field, record), and the fix.
    """

    exit_code = 2


class ConfigError(TuneryError):
    """A bad option value or combination."""


class DataError(TuneryError):
    """A bad dataset, dataset_info.json entry or record."""


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return " (did you mean X?)" or "" for a misspelt name."""
    matches = difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.6)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(f"'{m}'" for m in matches) + "?)"
