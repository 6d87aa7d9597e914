"""Raw rows -> :class:`AlignedRecord`, for the alpaca, sharegpt and openai layouts (LLaMA-Factory's converters).

Structural problems (a missing mapped column, a message without its role key, a malformed history) are
:class:`DataError`s naming the dataset, record and column. Records that LLaMA-Factory silently skips (roles out of
order, an odd/even turn count that cannot form prompt + response) are dropped here too, but counted by reason in the
``dropped`` dict the caller passes, and if *every* record of a dataset is dropped that is an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

from ..config.stages import stage_spec
from ..errors import DataError
from ..utils.logging import get_logger
from .records import ASSISTANT, FUNCTION, OBSERVATION, SYSTEM, USER, AlignedRecord
from .registry import ALPACA_DEFAULTS, COLUMN_FIELDS, OPENAI_TAGS, SHAREGPT_TAGS, DatasetSpec

logger = get_logger(__name__)

MEDIA_FIELDS = ("images", "videos", "audios")


class _Drop(Exception):
    """A record LLaMA-Factory would skip: ``reason`` is the count key, ``detail`` the first example."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def check_stage(stage: str) -> str:
    stage_spec(stage)  # an unknown stage is a ConfigError naming the stages
    return stage


def reads(stage: str) -> str:
    """The record kind ``stage`` converts its datasets to (config/stages.py)."""
    return stage_spec(stage).reads


# --------------------------------------------------------------------------------------------------------------------
# value helpers


def _text(value: Any, what: str, where: str) -> str:
    """Message content as a string: None -> "", numbers -> str, OpenAI content parts -> their joined text. NaN (a
    pandas missing cell, a NaN literal) drops the record instead of training the text "nan"."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        raise _Drop("NaN in a text field", f"{where}: {what} is NaN")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    kind = {bool: "a bool", list: "a list", dict: "an object"}.get(type(value), f"a {type(value).__name__}")
    raise DataError(
        f"{where}: {what} is {kind} ({json.dumps(value, ensure_ascii=False, default=str)[:60]}), expected text — "
        "fix the record or the column mapping in dataset_info.json"
    )


def _tools(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _kto_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    return None


def _msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


# --------------------------------------------------------------------------------------------------------------------
# converters: each returns (prompt, response, system, tools, kto_tag) or raises _Drop / DataError


def _alpaca(row: dict, spec: DatasetSpec, where: str):
    col = spec.columns
    prompt: list[dict] = []
    history = row.get(col["history"]) if col["history"] else None
    if isinstance(history, list):
        for j, pair in enumerate(history):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise DataError(
                    f"{where}: history[{j}] in column '{col['history']}' must be a [prompt, response] pair, "
                    f"got {json.dumps(pair, ensure_ascii=False)[:60]}"
                )
            prompt.append(_msg(USER, _text(pair[0], f"history[{j}][0]", where)))
            prompt.append(_msg(ASSISTANT, _text(pair[1], f"history[{j}][1]", where)))
    parts = []
    for key in ("prompt", "query"):
        if col[key]:
            value = _text(row.get(col[key]), f"column '{col[key]}'", where)
            if value:
                parts.append(value)
    prompt.append(_msg(USER, "\n".join(parts)))  # "instruction\ninput"

    kto_tag = _kto_bool(row.get(col["kto_tag"])) if col["kto_tag"] else None
    response: list[dict] = []
    if kto_tag is not None:
        response = [_msg(ASSISTANT, _text(row.get(col["response"]) if col["response"] else None, "response", where))]
    elif (
        spec.ranking
        and isinstance(row.get(col["chosen"] or ""), str)
        and isinstance(row.get(col["rejected"] or ""), str)
    ):
        response = [_msg(ASSISTANT, row[col["chosen"]]), _msg(ASSISTANT, row[col["rejected"]])]
    elif col["response"] and row.get(col["response"]) is not None:  # not text: _text says what it is instead
        response = [_msg(ASSISTANT, _text(row[col["response"]], f"column '{col['response']}'", where))]
    system = _text(row.get(col["system"]), f"column '{col['system']}'", where) if col["system"] else ""
    tools = _tools(row.get(col["tools"])) if col["tools"] else ""
    return prompt, response, system, tools, kto_tag


def _get(message: Any, key: str, where: str, turn: str) -> Any:
    if not isinstance(message, dict):
        raise DataError(f"{where}, {turn}: a message must be an object, got {type(message).__name__}")
    if key not in message:
        raise DataError(
            f"{where}, {turn}: message has no '{key}' key (keys: {', '.join(map(str, message)) or 'none'}) — "
            "fix the record or set tags.role_tag / tags.content_tag in dataset_info.json"
        )
    return message[key]


def _role_check(roles: list[str], spec: DatasetSpec, where: str, shown: list[str], offset: int = 0) -> None:
    """Odd turns (1st, 3rd...) must be user/observation, even ones assistant/function; count must fit the stage."""
    odd, even = (USER, OBSERVATION), (ASSISTANT, FUNCTION)
    for t, role in enumerate(roles):
        allowed = odd if t % 2 == 0 else even
        if role not in allowed:
            expected = " or ".join(
                f"'{spec.tags.get(k) or k}'"
                for k in (("user_tag", "observation_tag") if t % 2 == 0 else ("assistant_tag", "function_tag"))
            )
            raise _Drop(
                "invalid role order", f"{where}, turn {t + offset}: role '{shown[t]}' where {expected} expected"
            )
    if not roles:
        raise _Drop("empty conversation", f"{where}: no messages")
    if spec.ranking and len(roles) % 2 == 0:
        raise _Drop(
            "even turn count in a ranking prompt", f"{where}: {len(roles)} turns; the prompt must end with a user turn"
        )
    if not spec.ranking and len(roles) % 2 == 1:
        raise _Drop("odd turn count", f"{where}: {len(roles)} turns; a conversation must end with an assistant turn")


def _split_tail(aligned: list[dict], row: dict, spec: DatasetSpec, where: str, tag_map: dict):
    """prompt/response from aligned turns: kto (last turn + tag), ranking (chosen/rejected) or normal (last turn)."""
    col, tags = spec.columns, spec.tags
    kto_tag = _kto_bool(row.get(col["kto_tag"])) if col["kto_tag"] else None
    if kto_tag is not None:
        return aligned[:-1], aligned[-1:], kto_tag
    chosen, rejected = row.get(col["chosen"] or ""), row.get(col["rejected"] or "")
    if spec.ranking and isinstance(chosen, dict) and isinstance(rejected, dict):
        response = []
        for label, message in (("chosen", chosen), ("rejected", rejected)):
            role = _get(message, tags["role_tag"], where, label)
            if tag_map.get(role) not in (ASSISTANT, FUNCTION):
                raise _Drop(
                    "invalid chosen/rejected role",
                    f"{where}: {label} has role '{role}' where '{tags.get('assistant_tag')}' expected",
                )
            content = _text(_get(message, tags["content_tag"], where, label), f"{label} content", where)
            response.append(_msg(tag_map[role], content))
        return aligned, response, None
    if spec.ranking:
        raise _Drop(
            "chosen/rejected are not messages", f"{where}: chosen/rejected must be objects with role and content"
        )
    return aligned[:-1], aligned[-1:], None


def _leading_system(messages: list, row: dict, spec: DatasetSpec, where: str):
    tags, col = spec.tags, spec.columns
    if tags.get("system_tag") and messages and isinstance(messages[0], dict):
        if messages[0].get(tags["role_tag"]) == tags["system_tag"]:
            system = _text(_get(messages[0], tags["content_tag"], where, "turn 0"), "system content", where)
            return system, messages[1:]
    system = _text(row.get(col["system"]), f"column '{col['system']}'", where) if col["system"] else ""
    return system, messages


def _messages(row: dict, spec: DatasetSpec, where: str) -> list:
    col = spec.columns["messages"]
    messages = row.get(col)
    if not isinstance(messages, list):
        raise DataError(
            f"{where}: column '{col}' must be a list of messages, got {type(messages).__name__} — "
            "check formatting and columns.messages in dataset_info.json"
        )
    return messages


def _tag_map(spec: DatasetSpec) -> dict:
    t = spec.tags
    pairs = (
        ("user_tag", USER),
        ("assistant_tag", ASSISTANT),
        ("observation_tag", OBSERVATION),
        ("function_tag", FUNCTION),
        ("system_tag", SYSTEM),
    )
    return {t[k]: role for k, role in pairs if t.get(k)}


def _sharegpt(row: dict, spec: DatasetSpec, where: str):
    tags, tag_map = spec.tags, _tag_map(spec)
    raw = _messages(row, spec, where)
    system, messages = _leading_system(raw, row, spec, where)
    offset = len(raw) - len(messages)
    shown, aligned = [], []
    for t, message in enumerate(messages):
        turn = f"turn {t + offset}"
        role = _get(message, tags["role_tag"], where, turn)
        shown.append(str(role))
        content = _get(message, tags["content_tag"], where, turn)
        aligned.append(_msg(tag_map.get(role, "?"), _text(content, f"{turn} content", where)))
    _role_check([m["role"] for m in aligned], spec, where, shown, offset)
    prompt, response, kto_tag = _split_tail(aligned, row, spec, where, tag_map)
    tools = _tools(row.get(spec.columns["tools"])) if spec.columns["tools"] else ""
    return prompt, response, system, tools, kto_tag


def _tool_calls_json(calls: Any, where: str, turn: str) -> str:
    """OpenAI ``tool_calls`` -> the JSON list of ``{"name", "arguments"}`` LLaMA-Factory stores as a function turn."""
    if not isinstance(calls, list):
        raise DataError(f"{where}, {turn}: tool_calls must be a list, got {type(calls).__name__}")
    functions = []
    for k, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or "name" not in function:
            raise DataError(f"{where}, {turn}: tool_calls[{k}] has no function with a name")
        function = dict(function)
        args = function.get("arguments")
        if isinstance(args, str):  # OpenAI sends arguments as a JSON string; store the object, like sharegpt sets do
            try:
                function["arguments"] = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                pass
        functions.append(function)
    return json.dumps(functions, ensure_ascii=False)


def _openai(row: dict, spec: DatasetSpec, where: str):
    tags, tag_map = spec.tags, _tag_map(spec)
    raw = _messages(row, spec, where)
    system, messages = _leading_system(raw, row, spec, where)
    offset = len(raw) - len(messages)
    aligned, shown, pending = [], [], []  # pending: consecutive tool results, merged into one observation turn

    def flush() -> None:
        if pending:
            aligned.append(_msg(OBSERVATION, "\n</tool_response>\n<tool_response>\n".join(pending)))
            shown.append(str(tags.get("observation_tag")))
            pending.clear()

    for t, message in enumerate(messages):
        turn = f"turn {t + offset}"
        role = _get(message, tags["role_tag"], where, turn)
        content = message.get(tags["content_tag"]) if isinstance(message, dict) else None
        if role in (tags.get("assistant_tag"), tags.get("function_tag")) and message.get("tool_calls"):
            content, role = _tool_calls_json(message["tool_calls"], where, turn), tags.get("function_tag")
        elif tags["content_tag"] not in message:
            _get(message, tags["content_tag"], where, turn)  # raises the missing-key error
        content = _text(content, f"{turn} content", where)
        if role is not None and role == tags.get("observation_tag"):
            pending.append(content)
            continue
        flush()
        aligned.append(_msg(tag_map.get(role, "?"), content))
        shown.append(str(role))
    flush()  # LLaMA-Factory loses tool results at the very end; a ranking/ppo prompt may end with them
    _role_check([m["role"] for m in aligned], spec, where, shown, offset)
    prompt, response, kto_tag = _split_tail(aligned, row, spec, where, tag_map)
    tools = _tools(row.get(spec.columns["tools"])) if spec.columns["tools"] else ""
    return prompt, response, system, tools, kto_tag


_CONVERTERS = {"alpaca": _alpaca, "sharegpt": _sharegpt, "openai": _openai}


# --------------------------------------------------------------------------------------------------------------------
# column checks, format detection


def detect_format(rows: list[dict], spec: DatasetSpec) -> DatasetSpec:
    """Resolve ``formatting="auto"`` (a file given directly as the dataset) from the first record's columns."""
    if spec.formatting != "auto":
        return spec
    first = rows[0] if rows else {}
    keys = set(first)
    columns = {k: None for k in COLUMN_FIELDS}
    for key in ("system", "tools", "history", "images", "videos", "audios"):
        if key in keys:
            columns[key] = key
    for key in ("kto_tag", "label"):
        if key in keys and _kto_bool(first[key]) is not None:
            columns["kto_tag"] = key
    ranking = "chosen" in keys and "rejected" in keys
    if ranking:
        columns.update(chosen="chosen", rejected="rejected")
    for msg_col in ("conversations", "messages"):
        msgs = first.get(msg_col)
        if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict):
            columns["messages"] = msg_col
            if "from" in msgs[0]:
                return replace(spec, formatting="sharegpt", ranking=ranking, columns=columns, tags=dict(SHAREGPT_TAGS))
            return replace(spec, formatting="openai", ranking=ranking, columns=columns, tags=dict(OPENAI_TAGS))
    if "instruction" in keys:
        columns.update(ALPACA_DEFAULTS)
    elif "prompt" in keys:
        columns.update(
            prompt="prompt", response=next((k for k in ("response", "completion", "output") if k in keys), None)
        )
    elif "text" in keys:
        columns.update(prompt="text")
    else:
        raise DataError(
            f"dataset {spec.name}: cannot tell the format of {spec.dataset_name} from its columns "
            f"({', '.join(map(str, keys)) or 'none'}) — register it in dataset_info.json with formatting and columns"
        )
    return replace(spec, formatting="alpaca", ranking=ranking, columns=columns, tags=dict(SHAREGPT_TAGS))


def _required_fields(spec: DatasetSpec, stage: str) -> list[str]:
    """Column fields every record must have (key present) for this stage."""
    if spec.formatting == "alpaca":
        fields = ["prompt"] if spec.columns["prompt"] else []
        if reads(stage) in ("chat", "kto") and not spec.ranking and spec.columns["response"]:
            fields.append("response")
    else:
        fields = ["messages"]
    if spec.ranking and reads(stage) == "ranking":
        fields += ["chosen", "rejected"]
    if reads(stage) == "kto" and spec.columns["kto_tag"]:
        fields.append("kto_tag")
    return fields


def _check_columns(rows: list[dict], spec: DatasetSpec, stage: str, indices: list[int], seen: set | None) -> None:
    def origin(key: str) -> str:
        return f"in {spec.where()}" if key in spec.explicit_columns else "by default"

    if seen is None:
        seen = set()
        for row in rows:
            seen.update(row)
    required = _required_fields(spec, stage)
    for key in COLUMN_FIELDS:
        column = spec.columns.get(key)
        if (key not in required and key not in spec.explicit_columns) or not column or column in seen:
            continue
        have = ", ".join(sorted(map(str, seen))[:12]) or "none"
        raise DataError(
            f"dataset {spec.name}: no record has column '{column}' (mapped from {key} {origin(key)}); the records "
            f"have: {have} — set columns.{key} in dataset_info.json to one of them"
        )
    for key in required:
        column = spec.columns[key]
        for pos, row in enumerate(rows):
            if column not in row:
                raise DataError(
                    f"dataset {spec.name}, record {indices[pos]}: missing column '{column}' (mapped from {key} "
                    f"{origin(key)}) — add it to the record or fix columns.{key}"
                )


# --------------------------------------------------------------------------------------------------------------------
# public entry

PROMPT_FIELDS = ("prompt", "query", "history", "messages", "system", "tools") + MEDIA_FIELDS


def passthrough_columns(row: dict, spec: DatasetSpec) -> dict:
    """The columns of a row that do not make up the prompt (a reference answer, a label, test cases, ...): grpo hands
    them to the reward functions as keyword arguments, as TRL does."""
    used = {spec.columns.get(k) for k in PROMPT_FIELDS} - {None}
    return {k: v for k, v in row.items() if k not in used}



def _fit_stage(prompt, response, kto_tag, stage: str, where: str):
    """Apply the checks LLaMA-Factory's per-stage processors make; return the (prompt, response) to keep."""
    kind = reads(stage)
    if kind == "text":  # LLaMA-Factory pre-trains on the first prompt message only
        text = prompt[0]["content"] if prompt else ""
        if not text:
            raise _Drop("empty text", f"{where}: empty text")
        return [_msg(USER, text)], []
    if len(prompt) % 2 != 1:
        raise _Drop("prompt does not end with a user turn", f"{where}: {len(prompt)} prompt turns")
    if kind == "chat" and len(response) != 1:
        raise _Drop("no response", f"{where}: no response text (null or missing)")
    if kind == "ranking" and len(response) < 2:
        raise _Drop("no chosen/rejected pair", f"{where}: needs chosen and rejected responses")
    if kind == "kto":
        if kto_tag is None:
            raise _Drop("kto_tag is not true/false", f"{where}: kto_tag must be true or false")
        if len(response) != 1:
            raise _Drop("no response", f"{where}: no response text")
    if kind == "prompt" and len(response) > 1:
        response = []
    return prompt, response


def _refuse_media(spec: DatasetSpec, extra: dict, where: str) -> None:
    """Tunery trains text-only models: the record's images/videos/audios would be ignored while its <image>-style
    markers were trained as plain text."""
    key = next(iter(extra))
    raise DataError(
        f"{where} has {key} (column '{spec.columns[key]}'), but Tunery trains text-only models: the {key} would be "
        f"ignored and <{key[:-1]}> markers trained as text — this needs multimodal support (LLaMA-Factory's "
        f"mm_plugin); remove the {key} column mapping in {spec.where()} only if the text stands on its own"
    )


def to_aligned(
    rows: list[dict],
    spec: DatasetSpec,
    stage: str = "sft",
    *,
    dropped: dict[str, int] | None = None,
    indices: list[int] | None = None,
    columns_seen: set | None = None,
) -> list[AlignedRecord]:
    """Convert raw rows of one dataset to aligned records for ``stage``.

    ``indices`` are the rows' positions in the source (default 0..n-1), used in ``source = "name[index]"`` and in
    errors. Records LLaMA-Factory would skip are dropped and counted in ``dropped`` (``"name: reason" -> count``).
    ``columns_seen``: the column names of the whole source when ``rows`` is only part of it (max_samples).
    """
    check_stage(stage)
    spec = detect_format(rows, spec)
    if spec.formatting not in _CONVERTERS:
        raise DataError(f"dataset {spec.name}: unknown formatting '{spec.formatting}'")
    indices = list(range(len(rows))) if indices is None else indices
    _check_columns(rows, spec, stage, indices, columns_seen)
    convert = _CONVERTERS[spec.formatting]
    with_columns = "reward_funcs" in stage_spec(stage).uses  # the reward functions get the other columns
    media = [(k, spec.columns[k]) for k in MEDIA_FIELDS if spec.columns.get(k)]
    out: list[AlignedRecord] = []
    counts: dict[str, int] = {}
    first_detail: dict[str, str] = {}
    for pos, row in enumerate(rows):
        source = f"{spec.name}[{indices[pos]}]"
        where = f"dataset {spec.name}, record {indices[pos]}"
        try:
            prompt, response, system, tools, kto_tag = convert(row, spec, where)
            prompt, response = _fit_stage(prompt, response, kto_tag, stage, source)
        except _Drop as drop:
            counts[drop.reason] = counts.get(drop.reason, 0) + 1
            first_detail.setdefault(drop.reason, drop.detail.replace(where, source, 1))
            continue
        extra = {k: row[c] for k, c in media if row.get(c) not in (None, [], "")}
        if extra:
            _refuse_media(spec, extra, where)
        if with_columns:
            extra["columns"] = passthrough_columns(row, spec)
        out.append(AlignedRecord(prompt, response, system or "", tools or "", kto_tag, source, extra))

    for reason, count in counts.items():
        logger.warning(
            "dataset %s: dropped %d record(s): %s (first: %s)", spec.name, count, reason, first_detail[reason]
        )
        if dropped is not None:
            key = f"{spec.name}: {reason}"
            dropped[key] = dropped.get(key, 0) + count
    if rows and not out:
        reason = max(counts, key=counts.get)
        others = "".join(f", {n} x {r}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]) if r != reason)
        raise DataError(
            f"dataset {spec.name}: all {len(rows)} records were dropped ({counts[reason]} x {reason}; first: "
            f"{first_detail[reason]}{others}) — check formatting, columns and tags in dataset_info.json for stage "
            f"{stage}"
        )
    return out
