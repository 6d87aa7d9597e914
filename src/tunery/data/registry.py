"""``dataset_info.json`` -> :class:`DatasetSpec`, with LLaMA-Factory's semantics.

An entry names where the data lives (``hf_hub_url`` / ``ms_hub_url`` / ``om_hub_url`` / ``script_url`` /
``file_name``; a hub URL wins over ``file_name``), how it is laid out (``formatting``: alpaca, sharegpt or openai),
whether it is a preference set (``ranking``) and how its columns and sharegpt tags are named.

Column defaults follow LLaMA-Factory exactly: without a ``columns`` object an alpaca set reads
``instruction``/``input``/``output`` and a sharegpt set ``conversations``; *with* a ``columns`` object every column it
does not name is unset (so ``{"prompt": "text"}`` means "no query, no response column").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import DataError, did_you_mean
from ..utils.logging import get_logger

logger = get_logger(__name__)

DATA_CONFIG = "dataset_info.json"
ONLINE = "ONLINE"
FORMATTINGS = ("alpaca", "sharegpt", "openai")
SUPPORTED_EXTS = {"json": "json", "jsonl": "json", "csv": "csv", "parquet": "parquet", "arrow": "arrow", "txt": "text"}

COLUMN_FIELDS = (
    "prompt",
    "query",
    "response",
    "history",
    "messages",
    "system",
    "tools",
    "images",
    "videos",
    "audios",
    "chosen",
    "rejected",
    "kto_tag",
)
TAG_FIELDS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")

ALPACA_DEFAULTS = {"prompt": "instruction", "query": "input", "response": "output"}
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
# LLaMA-Factory reuses the sharegpt tag defaults for "openai"; real OpenAI-style data always needs these, so they are
# the defaults here (a dataset_info entry that sets tags explicitly behaves exactly as in LLaMA-Factory).
OPENAI_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "function_call",
    "system_tag": "system",
}
_ENTRY_KEYS = {
    "hf_hub_url",
    "ms_hub_url",
    "om_hub_url",
    "script_url",
    "file_name",
    "cloud_file_name",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "columns",
    "tags",
    "revision",
    "media_dir",
}


@dataclass
class DatasetSpec:
    """One resolved dataset entry.

    ``dataset_name`` is the hub id, the script folder or the ``file_name`` (relative to ``dataset_dir``);
    ``columns`` maps every column field (prompt, query, response, history, messages, system, tools, images, videos,
    audios, chosen, rejected, kto_tag) to a column name or None; ``explicit_columns`` are those the entry named in
    its ``columns`` object; ``tags`` holds the seven sharegpt tags.
    """

    name: str
    load_from: str
    dataset_name: str
    formatting: str = "alpaca"
    ranking: bool = False
    subset: str | None = None
    split: str = "train"
    folder: str | None = None
    num_samples: int | None = None
    revision: str | None = None
    columns: dict = field(default_factory=dict)
    explicit_columns: frozenset = frozenset()
    tags: dict = field(default_factory=dict)
    dataset_dir: str = ""
    info_path: str = ""  # the dataset_info.json it came from ("" for ONLINE / direct paths)
    hub_urls: dict = field(default_factory=dict)  # every hub URL of the entry, for error messages

    @property
    def path(self) -> str:
        """Local file or folder for ``load_from == "file"`` (``dataset_name`` joined to ``dataset_dir``)."""
        return os.path.join(self.dataset_dir, self.dataset_name) if self.dataset_dir else self.dataset_name

    def column(self, key: str) -> str | None:
        return self.columns.get(key)

    def where(self) -> str:
        """Where the entry is defined, for messages."""
        return self.info_path or "a dataset_info.json"


def _truthy_env(name: str) -> bool:
    return os.getenv(name, "0").strip().lower() in ("true", "y", "yes", "1")


def info_path(dataset_dir: str) -> str:
    return os.path.join(dataset_dir, DATA_CONFIG)


def load_registry(dataset_dir: str) -> dict[str, dict]:
    """Read ``DATASET_DIR/dataset_info.json`` (name -> raw entry). Missing or malformed file -> :class:`DataError`."""
    if dataset_dir == ONLINE:
        return {}
    if dataset_dir.startswith("REMOTE:"):
        raise DataError(
            f"dataset_dir '{dataset_dir}' needs the Hugging Face hub to fetch {DATA_CONFIG}, which is not supported "
            "offline — download that repository and set dataset_dir to the local folder"
        )
    path = info_path(dataset_dir)
    if not os.path.isdir(dataset_dir):
        raise DataError(
            f"dataset_dir '{dataset_dir}' does not exist — set dataset_dir to the folder holding {DATA_CONFIG} "
            "(LLaMA-Factory's data/ folder)"
        )
    if not os.path.isfile(path):
        raise DataError(
            f"no {DATA_CONFIG} in dataset_dir '{dataset_dir}' — set dataset_dir to the folder holding it "
            f"(LLaMA-Factory's data/ folder), or create {path} with an entry per dataset"
        )
    from ..utils.strict_json import DuplicateKey, loads_unique

    try:
        with open(path, encoding="utf-8") as f:
            info = loads_unique(f.read())
    except DuplicateKey as err:
        at = f":{err.line}" if err.line else ""
        what = (f"dataset '{err.key}' is defined twice" if err.top_level else
                f"key '{err.key}' is given twice in one entry")
        raise DataError(f"{path}{at}: {what} — rename or remove one (JSON would silently keep only the last)") \
            from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}:{err.colno}: invalid JSON ({err.msg}) — fix the file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object mapping dataset names to entries, got {type(info).__name__}")
    return info


def _unknown_name_error(name: str, info: dict, path: str) -> DataError:
    names = list(info)
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    return DataError(
        f"dataset '{name}' is not in {path} (registered: {shown or 'none'}){did_you_mean(name, names)} — "
        "add an entry there or fix the name"
    )


def _direct_path(name: str, dataset_dir: str) -> str | None:
    """A dataset name that is an existing data file or folder (absolute, cwd-relative or dataset_dir-relative)."""
    candidates = [name] if os.path.isabs(name) else [os.path.join(dataset_dir, name), name]
    for cand in candidates:
        if os.path.isdir(cand) or (
            os.path.isfile(cand)
            and os.path.splitext(cand)[1][1:].lower() in SUPPORTED_EXTS
            and os.path.basename(cand) != DATA_CONFIG
        ):
            return os.path.abspath(cand)
    return None


def _as_bool(value: Any, key: str, name: str, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise DataError(f"{path}: entry '{name}': '{key}' must be true or false, got {value!r}")


def spec_from_entry(name: str, entry: dict, dataset_dir: str, path: str = "") -> DatasetSpec:
    """Resolve one raw ``dataset_info.json`` entry the way LLaMA-Factory's ``DatasetAttr`` does."""
    where = path or DATA_CONFIG
    if not isinstance(entry, dict):
        raise DataError(f"{where}: entry '{name}' must be a JSON object, got {type(entry).__name__}")
    unknown = [k for k in entry if k not in _ENTRY_KEYS]
    for key in unknown:  # LLaMA-Factory ignores unknown keys; warn so typos do not go unnoticed
        logger.warning("%s: entry '%s': unknown key '%s' ignored%s", where, name, key, did_you_mean(key, _ENTRY_KEYS))

    hub_urls = {k: entry[k] for k in ("hf_hub_url", "ms_hub_url", "om_hub_url") if entry.get(k)}
    has_hf, has_ms, has_om = ("hf_hub_url" in hub_urls), ("ms_hub_url" in hub_urls), ("om_hub_url" in hub_urls)
    if has_hf or has_ms or has_om:
        if has_ms and (_truthy_env("USE_MODELSCOPE_HUB") or not has_hf):
            load_from, dataset_name = "ms_hub", hub_urls["ms_hub_url"]
        elif has_om and (_truthy_env("USE_OPENMIND_HUB") or not has_hf):
            load_from, dataset_name = "om_hub", hub_urls["om_hub_url"]
        else:
            load_from, dataset_name = "hf_hub", hub_urls["hf_hub_url"]
    elif entry.get("script_url"):
        load_from, dataset_name = "script", entry["script_url"]
    elif entry.get("file_name"):
        load_from, dataset_name = "file", entry["file_name"]
    else:
        raise DataError(
            f"{where}: entry '{name}' has none of file_name, hf_hub_url, ms_hub_url, om_hub_url or script_url — "
            "add file_name (a file or folder in dataset_dir) or a hub URL"
        )
    if not isinstance(dataset_name, str):
        raise DataError(f"{where}: entry '{name}': the file name / URL must be a string, got {dataset_name!r}")

    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise DataError(
            f"{where}: entry '{name}': unknown formatting '{formatting}'{did_you_mean(str(formatting), FORMATTINGS)} "
            f"— use one of {', '.join(FORMATTINGS)}"
        )
    ranking = _as_bool(entry.get("ranking", False), "ranking", name, where)
    num_samples = entry.get("num_samples")
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
    ):
        raise DataError(f"{where}: entry '{name}': num_samples must be a positive integer, got {num_samples!r}")

    columns: dict[str, str | None] = {k: None for k in COLUMN_FIELDS}
    explicit: set[str] = set()
    raw_columns = entry.get("columns")
    if raw_columns is not None:
        if not isinstance(raw_columns, dict):
            raise DataError(f"{where}: entry '{name}': 'columns' must be an object, got {type(raw_columns).__name__}")
        for key, value in raw_columns.items():
            if key not in COLUMN_FIELDS:
                logger.warning(
                    "%s: entry '%s': unknown column field '%s' ignored%s (known: %s)",
                    where,
                    name,
                    key,
                    did_you_mean(key, COLUMN_FIELDS),
                    ", ".join(COLUMN_FIELDS),
                )
                continue
            if value is not None and not isinstance(value, str):
                raise DataError(f"{where}: entry '{name}': columns.{key} must be a column name, got {value!r}")
            columns[key] = value or None
            if value:
                explicit.add(key)
    else:
        columns.update(ALPACA_DEFAULTS)
    if formatting in ("sharegpt", "openai") and not columns["messages"]:
        # LLaMA-Factory would fail on a missing messages column; fall back to the conventional name instead
        columns["messages"] = "messages" if formatting == "openai" else "conversations"

    tags = dict(OPENAI_TAGS if formatting == "openai" else SHAREGPT_TAGS)
    raw_tags = entry.get("tags")
    if raw_tags is not None:
        if not isinstance(raw_tags, dict):
            raise DataError(f"{where}: entry '{name}': 'tags' must be an object, got {type(raw_tags).__name__}")
        for key in raw_tags:
            if key not in TAG_FIELDS:
                logger.warning(
                    "%s: entry '%s': unknown tag '%s' ignored%s", where, name, key, did_you_mean(key, TAG_FIELDS)
                )
        # as in LLaMA-Factory, a tags object replaces every tag: the ones it leaves out become unset
        tags = {key: raw_tags.get(key) for key in TAG_FIELDS}
        for key in ("role_tag", "content_tag"):
            if not tags[key]:
                tags[key] = (OPENAI_TAGS if formatting == "openai" else SHAREGPT_TAGS)[key]

    return DatasetSpec(
        name=name,
        load_from=load_from,
        dataset_name=dataset_name,
        formatting=formatting,
        ranking=ranking,
        subset=entry.get("subset"),
        split=entry.get("split", "train") or "train",
        folder=entry.get("folder"),
        num_samples=num_samples,
        revision=entry.get("revision"),
        columns=columns,
        explicit_columns=frozenset(explicit),
        tags=tags,
        dataset_dir=dataset_dir,
        info_path=path,
        hub_urls=hub_urls,
    )


def _direct_spec(name: str, path: str) -> DatasetSpec:
    """A spec for a file or folder given directly as the dataset name; the formatting is detected from its rows."""
    columns = {k: None for k in COLUMN_FIELDS}
    columns.update(ALPACA_DEFAULTS)
    return DatasetSpec(
        name=name, load_from="file", dataset_name=path, formatting="auto", columns=columns, tags=dict(SHAREGPT_TAGS)
    )


def get_dataset_spec(name: str, dataset_dir: str, registry: dict | None = None) -> DatasetSpec:
    """Resolve ``name`` against ``DATASET_DIR/dataset_info.json``.

    ``dataset_dir == "ONLINE"`` treats every name as a Hugging Face hub id with default (alpaca) columns, as
    LLaMA-Factory does. A name that is not registered but is an existing data file or folder (absolute, relative to
    the working directory or to dataset_dir) is loaded directly with its formatting detected from the records.
    """
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"dataset name must be a non-empty string, got {name!r}")
    name = name.strip()
    if dataset_dir == ONLINE:
        direct = _direct_path(name, ".") if os.path.isabs(name) else None
        if direct:
            return _direct_spec(name, direct)
        load_from = (
            "ms_hub" if _truthy_env("USE_MODELSCOPE_HUB") else "om_hub" if _truthy_env("USE_OPENMIND_HUB") else "hf_hub"
        )
        columns = {k: None for k in COLUMN_FIELDS}
        columns.update(ALPACA_DEFAULTS)
        return DatasetSpec(
            name=name,
            load_from=load_from,
            dataset_name=name,
            columns=columns,
            tags=dict(SHAREGPT_TAGS),
            hub_urls={f"{load_from}_url": name},
        )

    path = info_path(dataset_dir)
    if registry is None:
        if not os.path.isfile(path):
            direct = _direct_path(name, dataset_dir)
            if direct:
                return _direct_spec(name, direct)
        registry = load_registry(dataset_dir)
    if name in registry:
        return spec_from_entry(name, registry[name], dataset_dir, path)
    direct = _direct_path(name, dataset_dir)
    if direct:
        return _direct_spec(name, direct)
    raise _unknown_name_error(name, registry, path)


def get_dataset_specs(names: list[str], dataset_dir: str) -> list[DatasetSpec]:
    """Resolve several names, reading ``dataset_info.json`` once."""
    registry = None
    if dataset_dir != ONLINE and os.path.isfile(info_path(dataset_dir)):
        registry = load_registry(dataset_dir)
    return [get_dataset_spec(n, dataset_dir, registry) for n in names]
