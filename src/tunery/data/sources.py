"""Files, folders and hub datasets -> raw rows (plain Python dicts).

Local files are read with the standard library (and pyarrow for parquet/arrow), not through ``datasets``: it is
faster, needs no cache, and lets errors point at ``file:line:column``. Hub datasets go through
``datasets.load_dataset`` after a quick reachability check, so an offline machine gets a one-line error in about a
second instead of minutes of retries.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import socket
import threading
from urllib.parse import urlparse

from ..errors import DataError
from ..utils.logging import get_logger
from .registry import SUPPORTED_EXTS, DatasetSpec

logger = get_logger(__name__)

HUB_CHECK_TIMEOUT = 3.0  # seconds to decide whether the hub answers at all


def _file_type(path: str) -> str | None:
    return SUPPORTED_EXTS.get(os.path.splitext(path)[1][1:].lower())


def _where(spec: DatasetSpec) -> str:
    if spec.info_path:
        return f"file_name in {spec.info_path}"
    return "the dataset name"


# --------------------------------------------------------------------------------------------------------------------
# local files


def _check_records(rows: list, path: str, name: str) -> list[dict]:
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(
                f"dataset {name}, {path}: record {i} is a {type(row).__name__}, not an object — each record must be "
                "a JSON object with named columns"
            )
    return rows


def _read_json(path: str, name: str) -> list[dict]:
    """A JSON array of objects, or JSON lines (also when disguised as .json, and vice versa), as ``datasets`` allows."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise DataError(f"dataset {name}: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped[0] == "[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(
                f"dataset {name}: {path}:{err.lineno}:{err.colno}: invalid JSON ({err.msg}) — fix the file"
            ) from None
        if not isinstance(data, list):  # cannot happen with a leading "[", kept for clarity
            raise DataError(f"dataset {name}: {path} must hold a list of records")
        return _check_records(data, path, name)

    rows: list = []
    decoder = json.JSONDecoder()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj, end = decoder.raw_decode(line.strip())
            if line.strip()[end:].strip():
                raise json.JSONDecodeError("Extra data", line.strip(), end)
        except json.JSONDecodeError as err:
            if lineno == 1 or not rows:
                # maybe one pretty-printed object rather than JSON lines
                try:
                    whole = json.loads(text)
                except json.JSONDecodeError as werr:
                    raise DataError(
                        f"dataset {name}: {path}:{werr.lineno}:{werr.colno}: invalid JSON ({werr.msg}) — fix the file"
                    ) from None
                if isinstance(whole, dict):
                    raise DataError(
                        f"dataset {name}: {path} holds a single JSON object, not records — make it a list of "
                        "objects ([{...}, {...}]) or JSON lines (one object per line)"
                    ) from None
            indent = len(line) - len(line.lstrip())
            raise DataError(
                f"dataset {name}: {path}:{lineno}:{err.colno + indent}: invalid JSON line ({err.msg}) — fix the line"
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"dataset {name}: {path}:{lineno}: a {type(obj).__name__}, not an object — each JSON line must be "
                "an object with named columns"
            )
        rows.append(obj)
    return rows


def _read_csv(path: str, name: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            rows = []
            for row in reader:
                if None in row:  # more cells than header columns
                    raise DataError(
                        f"dataset {name}: {path}:{reader.line_num}: the row has more cells than the header has "
                        "columns — quote cells that contain commas"
                    )
                rows.append(dict(row))
            return rows
    except csv.Error as err:
        raise DataError(f"dataset {name}: {path}: invalid CSV ({err})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"dataset {name}: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _read_text(path: str, name: str) -> list[dict]:
    """One ``{"text": line}`` row per line, as ``datasets``' text builder does (blank lines included)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [{"text": line.rstrip("\n").rstrip("\r")} for line in f]
    except UnicodeDecodeError as err:
        raise DataError(f"dataset {name}: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _read_parquet(path: str, name: str) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for broken files
        raise DataError(f"dataset {name}: cannot read parquet file {path}: {err}") from None


def _read_arrow(path: str, name: str) -> list[dict]:
    import pyarrow as pa

    errors = []
    for opener in (pa.ipc.open_stream, pa.ipc.open_file):  # datasets writes the stream format
        try:
            with pa.memory_map(path) as source:
                return opener(source).read_all().to_pylist()
        except Exception as err:  # noqa: PERF203
            errors.append(str(err))
    raise DataError(f"dataset {name}: cannot read arrow file {path}: {errors[-1]}")


# ---------------------------------------------------------------- streaming reads (chunks of rows)
BLOCK_CHARS = 1 << 22


def _iter_json_array(fh, path: str, name: str, chunk: int):
    """Objects of a top-level JSON array, decoded block by block (the file is never read whole). Anything unusual
    (a syntax error, a non-object record) is left to the whole-file reader, which names file:line:column."""
    decoder = json.JSONDecoder()
    buf, pos, eof, rows = "", 0, False, []
    buf = fh.read(BLOCK_CHARS)
    pos = buf.index("[") + 1
    while True:
        while pos < len(buf) and buf[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(buf) or (not eof and len(buf) - pos < BLOCK_CHARS // 4):
            more = "" if eof else fh.read(BLOCK_CHARS)
            eof = eof or not more
            if more:
                buf, pos = buf[pos:] + more, 0
                continue
        if pos < len(buf) and buf[pos] == "]":
            break
        try:
            obj, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError:
            if eof:
                raise _Unusual() from None
            more = fh.read(BLOCK_CHARS)
            eof = not more
            buf, pos = buf[pos:] + more, 0
            continue
        if not isinstance(obj, dict):
            raise _Unusual()
        rows.append(obj)
        pos = end
        if len(rows) >= chunk:
            yield rows
            rows = []
    if rows:
        yield rows


class _Unusual(Exception):
    """The streaming JSON reader met something only the whole-file reader reports well."""


def _iter_json(path: str, name: str, chunk: int):
    try:
        with open(path, encoding="utf-8-sig") as fh:
            head = fh.read(4096)
            if not head.strip():
                return
            fh.seek(0)
            if head.lstrip()[0] == "[":
                yield from _iter_json_array(fh, path, name, chunk)
                return
            decoder, rows = json.JSONDecoder(), []
            for lineno, line in enumerate(fh, start=1):
                text = line.strip()
                if not text:
                    continue
                try:
                    obj, end = decoder.raw_decode(text)
                except json.JSONDecodeError:
                    raise _Unusual() from None
                if text[end:].strip() or not isinstance(obj, dict):
                    raise _Unusual()
                rows.append(obj)
                if len(rows) >= chunk:
                    yield rows
                    rows = []
            if rows:
                yield rows
    except _Unusual:
        _read_json(path, name)  # raises the error with file:line:column
        raise DataError(f"dataset {name}: {path}: invalid JSON — fix the file") from None
    except UnicodeDecodeError as err:
        raise DataError(f"dataset {name}: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _iter_csv(path: str, name: str, chunk: int):
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            rows = []
            for row in reader:
                if None in row:
                    raise DataError(
                        f"dataset {name}: {path}:{reader.line_num}: the row has more cells than the header has "
                        "columns — quote cells that contain commas"
                    )
                rows.append(dict(row))
                if len(rows) >= chunk:
                    yield rows
                    rows = []
            if rows:
                yield rows
    except csv.Error as err:
        raise DataError(f"dataset {name}: {path}: invalid CSV ({err})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"dataset {name}: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _iter_parquet(path: str, name: str, chunk: int):
    import pyarrow.parquet as pq

    try:
        for batch in pq.ParquetFile(path, memory_map=True).iter_batches(batch_size=chunk):
            yield batch.to_pylist()
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for broken files
        raise DataError(f"dataset {name}: cannot read parquet file {path}: {err}") from None


def _iter_arrow(path: str, name: str, chunk: int):
    import pyarrow as pa

    errors = []
    for opener in (pa.ipc.open_stream, pa.ipc.open_file):  # datasets writes the stream format
        try:
            with pa.memory_map(path) as source:
                reader = opener(source)
                batches = iter(reader) if opener is pa.ipc.open_stream else (
                    reader.get_batch(i) for i in range(reader.num_record_batches))
                for batch in batches:
                    for start in range(0, batch.num_rows, chunk):
                        yield batch.slice(start, chunk).to_pylist()
                return
        except DataError:
            raise
        except Exception as err:  # noqa: PERF203
            errors.append(str(err))
    raise DataError(f"dataset {name}: cannot read arrow file {path}: {errors[-1]}")


def _iter_text(path: str, name: str, chunk: int):
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                rows.append({"text": line.rstrip("\n").rstrip("\r")})
                if len(rows) >= chunk:
                    yield rows
                    rows = []
    except UnicodeDecodeError as err:
        raise DataError(f"dataset {name}: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if rows:
        yield rows


_STREAMERS = {"json": _iter_json, "csv": _iter_csv, "text": _iter_text, "parquet": _iter_parquet,
              "arrow": _iter_arrow}


def iter_row_chunks(spec: DatasetSpec, chunk: int = 10_000):
    """The dataset's raw rows in chunks of up to ``chunk`` rows, read as a stream (JSON arrays and lines, CSV and
    text line by line or block by block; Parquet and Arrow memory-mapped, batch by batch); hub datasets in one go.
    Errors are those of :func:`read_rows` (file:line for malformed lines)."""
    if spec.load_from != "file":
        rows = read_rows(spec)
        for start in range(0, len(rows), chunk):
            yield rows[start:start + chunk]
        return
    files = data_files(spec)
    any_rows = False
    for path in files:
        kind = _file_type(path)
        if kind is None:
            read_file(path, spec.name)  # raises the unsupported-type error
        try:
            for rows in _STREAMERS[kind](path, spec.name, chunk):
                any_rows = True
                yield rows
        except OSError as err:
            raise DataError(f"dataset {spec.name}: cannot read {path}: {err.strerror or err}") from None
    if not any_rows:
        shown = files[0] if len(files) == 1 else spec.path
        raise DataError(f"dataset {spec.name}: {shown} holds no records — fill it or remove the dataset")


_READERS = {"json": _read_json, "csv": _read_csv, "text": _read_text, "parquet": _read_parquet, "arrow": _read_arrow}


def read_file(path: str, name: str = "") -> list[dict]:
    """Rows of one local data file (type from the extension)."""
    kind = _file_type(path)
    if kind is None:
        raise DataError(
            f"dataset {name or path}: cannot read {path}: unsupported file type "
            f"'{os.path.splitext(path)[1] or '(none)'}' (supported: {', '.join(sorted(SUPPORTED_EXTS))})"
        )
    try:
        return _READERS[kind](path, name or os.path.basename(path))
    except OSError as err:
        raise DataError(f"dataset {name or path}: cannot read {path}: {err.strerror or err}") from None


def data_files(spec: DatasetSpec) -> list[str]:
    """The local files behind a ``file`` dataset: the file itself, or the data files of a folder (sorted)."""
    path = spec.path
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, f)
            for f in os.listdir(path)
            if not f.startswith(".") and os.path.isfile(os.path.join(path, f))
        )
        if not files:
            raise DataError(f"dataset {spec.name}: folder {path} holds no data files — put the data files there")
        kinds = {f: _file_type(f) for f in files}
        bad = [f for f, k in kinds.items() if k is None]
        if bad:
            raise DataError(
                f"dataset {spec.name}: folder {path} holds {os.path.basename(bad[0])}, which is not a supported data "
                f"file (supported: {', '.join(sorted(SUPPORTED_EXTS))}) — move it out of the folder"
            )
        if len(set(kinds.values())) > 1:
            raise DataError(
                f"dataset {spec.name}: folder {path} mixes file types ({', '.join(sorted(set(kinds.values())))}) — "
                "a folder dataset must hold files of one type"
            )
        return files
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise DataError(f"dataset {spec.name}: {path} is a symlink loop ({_where(spec)}: the link leads, "
                                "directly or through other links, back to itself) — point it at the real file") \
                    from None
        raise DataError(f"dataset {spec.name}: {path} is a broken symlink to '{os.readlink(path)}' "
                        f"({_where(spec)}) — point it at an existing file or fix file_name")
    raise DataError(
        f"dataset {spec.name}: {path} not found ({_where(spec)}) — put the file in dataset_dir "
        f"'{spec.dataset_dir or os.getcwd()}' or fix file_name"
    )


def read_local(spec: DatasetSpec) -> list[dict]:
    rows: list[dict] = []
    files = data_files(spec)
    for path in files:
        rows.extend(read_file(path, spec.name))
    if not rows:
        shown = files[0] if len(files) == 1 else spec.path
        raise DataError(f"dataset {spec.name}: {shown} holds no records — fill it or remove the dataset")
    return rows


# --------------------------------------------------------------------------------------------------------------------
# hub


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _hub_reachable(endpoint: str, timeout: float = HUB_CHECK_TIMEOUT) -> bool:
    """True if a TCP connection to the hub opens within ``timeout`` (DNS included, run in a thread to bound it)."""
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _offline_env() -> bool:
    return any(
        os.environ.get(v, "0").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_error(spec: DatasetSpec, why: str) -> DataError:
    url_key = {"hf_hub": "hf_hub_url", "ms_hub": "ms_hub_url", "om_hub": "om_hub_url"}.get(spec.load_from, "hf_hub_url")
    return DataError(
        f"dataset {spec.name} needs the Hugging Face hub ({url_key} '{spec.dataset_name}'), {why}; download it and "
        f"register a file_name in {spec.where()} instead"
    )


def _load_hub_dataset(spec: DatasetSpec, path: str, offline: bool) -> list[dict]:
    import datasets
    import datasets.config

    kwargs = dict(path=path, name=spec.subset, data_dir=spec.folder, split=spec.split)
    if spec.revision:
        kwargs["revision"] = spec.revision
    saved = []
    if offline:  # only the local cache may answer: flip the flags datasets/huggingface_hub read at call time
        import huggingface_hub.constants as hub_constants

        saved = [(datasets.config, "HF_HUB_OFFLINE", datasets.config.HF_HUB_OFFLINE)]
        saved.append((hub_constants, "HF_HUB_OFFLINE", hub_constants.HF_HUB_OFFLINE))
        for module, attr, _ in saved:
            setattr(module, attr, True)
    try:
        dataset = datasets.load_dataset(**kwargs)
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)
    if isinstance(dataset, dict):  # a DatasetDict (split=None): take the requested or first split
        dataset = dataset[spec.split] if spec.split in dataset else next(iter(dataset.values()))
    return dataset.to_list()


def read_hub(spec: DatasetSpec) -> list[dict]:
    """Rows of a hub (or script-folder) dataset through ``datasets.load_dataset``; never hangs offline."""
    if spec.load_from in ("ms_hub", "om_hub"):
        hub = "ModelScope" if spec.load_from == "ms_hub" else "Modelers (openmind)"
        raise DataError(
            f"dataset {spec.name} lives on {hub} ({spec.load_from}_url '{spec.dataset_name}'), which Tunery does not "
            f"load; download it and register a file_name in {spec.where()} instead"
            + (
                " (or unset USE_MODELSCOPE_HUB / USE_OPENMIND_HUB to use its hf_hub_url)"
                if "hf_hub_url" in spec.hub_urls
                else ""
            )
        )
    if spec.load_from == "script":
        path = os.path.join(spec.dataset_dir, spec.dataset_name)
        if not os.path.exists(path):
            raise DataError(
                f"dataset {spec.name}: script_url folder {path} not found — fix script_url in {spec.where()}"
            )
        try:
            return _load_hub_dataset(spec, path, offline=True)
        except Exception as err:
            raise DataError(f"dataset {spec.name}: cannot load script_url {path}: {str(err).splitlines()[0]}") from None

    offline = _offline_env()
    reachable = False if offline else _hub_reachable(_hub_endpoint())
    try:
        rows = _load_hub_dataset(spec, spec.dataset_name, offline=not reachable)
    except Exception as err:
        if not reachable:
            why = "and offline mode is set (HF_HUB_OFFLINE)" if offline else f"which is unreachable ({_hub_endpoint()})"
            raise _hub_error(spec, why + " and it is not in the local cache") from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _hub_error(spec, f"which failed: {first}") from None
    logger.info("loaded %d rows of %s from the hub (%s)", len(rows), spec.name, spec.dataset_name)
    return rows


def read_rows(spec: DatasetSpec, dataset_dir: str | None = None) -> list[dict]:
    """Raw rows of a dataset: local file or folder, hub dataset or script folder.

    ``dataset_dir`` overrides the one the spec was resolved with (normally leave it out).
    """
    if dataset_dir is not None and spec.dataset_dir != dataset_dir and not os.path.isabs(spec.dataset_name):
        from dataclasses import replace

        spec = replace(spec, dataset_dir=dataset_dir)
    if spec.load_from == "file":
        return read_local(spec)
    if spec.load_from in ("hf_hub", "ms_hub", "om_hub", "script"):
        return read_hub(spec)
    raise DataError(f"dataset {spec.name}: unknown source '{spec.load_from}'")
