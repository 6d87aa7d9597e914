"""The encoding cache: a run's encoded datasets, kept as Arrow files under a key made of everything that decides the
tokens, so that a second run on the same data goes straight to training.

The key hashes (see :func:`encoding_inputs`):

* each data file of the run's datasets (and its ``dataset_info.json``): path, size and modification time, plus the
  content hash of files up to ``HASH_CONTENT_BYTES`` (small files can be edited within one mtime tick) and of three
  1 MiB blocks of larger ones (hashing a large file whole would cost every run seconds);
* the tokenizer: its files (content hashes), vocabulary size, special tokens and chat template;
* the template: its declaration and the ids it gives a probe conversation;
* the stage, cutoff_len and every option that changes the tokens (cache.ENCODING_OPTIONS), and the source of the
  modules that load, convert and encode (an upgrade of Tunery re-encodes).

A change of any of them gives another key, hence a new encoding; ``overwrite_cache: true`` re-encodes on the same
key. Entries live in ``HF_DATASETS_CACHE/tunery-encoded/KEY/`` (the ``datasets`` cache folder, under ``HF_HOME``):
Arrow shards plus ``meta.json``, which is written last, so a folder without it is an unfinished encoding and is
never read. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

from ..utils.logging import get_logger

logger = get_logger(__name__)

HASH_CONTENT_BYTES = 8 << 20
SAMPLE_BYTES = 1 << 20
META = "meta.json"
VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "vocab.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")
CODE_MODULES = ("encode.py", "formats.py", "loader.py", "sources.py", "records.py", "packing.py", "encoded.py",
                "dataset.py", "templates")


def cache_root() -> str:
    import datasets.config

    return os.path.join(str(datasets.config.HF_DATASETS_CACHE), "tunery-encoded")


def _hash_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sampled_hash(path: str, size: int) -> str:
    """sha256 of a large file's size and three ``SAMPLE_BYTES`` blocks (start, middle, end): reading it costs the
    same for any size, and it catches most edits that keep the size and modification time."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        for offset in (0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)):
            fh.seek(offset)
            digest.update(fh.read(SAMPLE_BYTES))
    return digest.hexdigest()


def content_fingerprint(path: str) -> dict:
    """``sha256`` of a file up to HASH_CONTENT_BYTES, ``sampled_sha256`` (:func:`sampled_hash`) of a larger one."""
    size = os.path.getsize(path)
    if size <= HASH_CONTENT_BYTES:
        return {"sha256": _hash_file(path)}
    return {"sampled_sha256": sampled_hash(path, size)}


def file_fingerprint(path: str) -> dict:
    """Path, size and mtime of a file, plus its content hash (sampled when it is large)."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            **content_fingerprint(path)}


def _dataset_files(cfg) -> list:
    from .registry import get_dataset_specs
    from .sources import data_files

    names = list(cfg.dataset or []) + list(cfg.eval_dataset or [])
    out = []
    for spec in get_dataset_specs(names, cfg.dataset_dir):
        entry = {"name": spec.name, "source": spec.load_from, "dataset": spec.dataset_name, "split": spec.split,
                 "subset": spec.subset, "revision": spec.revision}
        if spec.info_path and os.path.isfile(spec.info_path):
            entry["dataset_info"] = file_fingerprint(spec.info_path)
        if spec.load_from == "file":
            entry["files"] = [file_fingerprint(path) for path in data_files(spec)]
        out.append(entry)
    return out


def tokenizer_fingerprint(tokenizer) -> dict:
    folder = str(getattr(tokenizer, "name_or_path", "") or "")
    files = {}
    if os.path.isdir(folder):
        for name in TOKENIZER_FILES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                files[name] = _hash_file(path)
    special = {name: getattr(tokenizer, name, None) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
    template = getattr(tokenizer, "chat_template", None)
    return {"name_or_path": folder, "files": files, "vocab": len(tokenizer), "special": special,
            "chat_template": hashlib.sha256(str(template).encode()).hexdigest() if template else None}


PROBE = [{"role": "user", "content": "Hello, who are you?"}, {"role": "assistant", "content": "An assistant."},
         {"role": "user", "content": "Name three colours."}, {"role": "assistant", "content": "Red, green, blue."}]


def template_fingerprint(template, tokenizer) -> dict:
    """The template's declaration and the ids it gives a probe chat (catches any change in how it renders)."""
    out = {"name": getattr(template, "name", None), "declaration": hashlib.sha256(repr(template).encode()).hexdigest()}
    try:
        pairs = template.encode_multiturn(tokenizer, [dict(m) for m in PROBE], "You are helpful.", None)
        out["probe"] = hashlib.sha256(json.dumps(pairs, default=str).encode()).hexdigest()
    except Exception as err:  # noqa: BLE001 - a template that cannot render the probe still has a declaration
        out["probe"] = type(err).__name__
    return out


def code_fingerprint() -> str:
    digest = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in CODE_MODULES:
        path = os.path.join(here, name)
        paths = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".py")) \
            if os.path.isdir(path) else [path]
        for item in paths:
            if os.path.isfile(item):
                digest.update(item.encode())
                digest.update(_hash_file(item).encode())
    return digest.hexdigest()


def encoding_inputs(cfg, tokenizer, template, options: dict) -> dict:
    """Everything the key is made of (``options``: cache.fingerprint, the run's encoding options)."""
    return {"version": VERSION, "options": options, "data": _dataset_files(cfg),
            "tokenizer": tokenizer_fingerprint(tokenizer), "template": template_fingerprint(template, tokenizer),
            "code": code_fingerprint()}


def encoding_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:32]


def entry_folder(key: str) -> str:
    return os.path.join(cache_root(), key)


def lookup(key: str) -> dict | None:
    """The meta of a finished entry for ``key`` whose files are all there, else None."""
    path = os.path.join(entry_folder(key), META)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return None
    files = [f for split in ("train", "eval") for f in meta.get("files", {}).get(split) or []]
    if not all(os.path.isfile(os.path.join(entry_folder(key), f)) for f in files):
        return None
    return meta


def new_workdir(key: str) -> str:
    """A fresh folder beside the entry to encode into (renamed into place by :func:`commit`)."""
    root = cache_root()
    os.makedirs(root, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{key}.building-", dir=root)


def commit(key: str, workdir: str, meta: dict) -> str:
    """Write ``meta`` (file names relative to the entry) and move ``workdir`` into place; returns the entry."""
    with open(os.path.join(workdir, META), "w", encoding="utf-8") as fh:
        json.dump(dict(meta, version=VERSION), fh, ensure_ascii=False, indent=1)
    target = entry_folder(key)
    if os.path.isdir(target):  # overwrite_cache, or an unfinished entry: only ever Tunery's own cache folder
        shutil.rmtree(target, ignore_errors=True)
    os.replace(workdir, target)
    return target
