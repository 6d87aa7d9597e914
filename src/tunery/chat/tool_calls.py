"""Read function calls back out of a generated reply, for each tool format of the templates (data/templates/tools.py
writes them: this is the inverse). A reply that is not a well-formed call is plain text."""

from __future__ import annotations

import json
import re
from typing import NamedTuple, Optional


class ToolCall(NamedTuple):
    name: str
    arguments: str  # JSON text


def _json(text: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _from_objects(objs, args_key: str) -> Optional[list[ToolCall]]:
    objs = objs if isinstance(objs, list) else [objs]
    calls = []
    for obj in objs:
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or args_key not in obj:
            return None
        calls.append(ToolCall(obj["name"], _dumps(obj[args_key])))
    return calls or None


def _default(text: str):
    found = re.findall(r"Action:\s*(.+?)\s*Action Input:\s*(.+?)(?=\s*Action:|\s*$)", text, re.DOTALL)
    calls = []
    for name, raw in found:
        raw = raw.strip().strip("`").strip()
        args = _json(raw)
        if not isinstance(args, dict):
            return None
        calls.append(ToolCall(name.strip(), _dumps(args)))
    if not calls:
        return None
    return text[: text.find("Action:")].strip(), calls


def _qwen(text: str):
    bodies = re.findall(r"<tool_call>\s*(.+?)\s*</tool_call>", text, re.DOTALL)
    if not bodies:
        return None
    calls = []
    for body in bodies:
        found = _from_objects(_json(body), "arguments")
        if found is None:
            return None
        calls += found
    return text[: text.find("<tool_call>")].strip(), calls


def _whole_json(args_key: str, prefix: str = ""):
    def parse(text: str):
        body = text.strip()
        if prefix and body.startswith(prefix):
            body = body[len(prefix):].strip()
        calls = _from_objects(_json(body), args_key)
        return ("", calls) if calls else None

    return parse


def _glm4(text: str):
    name, _, rest = text.strip().partition("\n")
    args = _json(rest.strip())
    if not name.strip() or not isinstance(args, dict) or " " in name.strip():
        return None
    return "", [ToolCall(name.strip(), _dumps(args))]


def _value(raw: str):
    """An XML-style argument value: JSON where it parses (numbers, lists, objects), else the text itself."""
    raw = raw.strip()
    parsed = _json(raw)
    return raw if parsed is None else parsed


def _tagged(start: str, pattern: str, arg_pattern: str):
    """Calls written as tags (GLM-4.5, Seed-OSS, MiniMax-M2): ``pattern`` finds (name, body) per call,
    ``arg_pattern`` (key, value) per argument in the body."""
    def parse(text: str):
        found = re.findall(pattern, text, re.DOTALL)
        if not found:
            return None
        calls = [ToolCall(name.strip(), _dumps({k.strip(): _value(v) for k, v in re.findall(arg_pattern, body,
                                                                                              re.DOTALL)}))
                 for name, body in found]
        return text[: text.find(start)].strip(), calls

    return parse


def _json_block(start: str, end: str):
    def parse(text: str):
        bodies = re.findall(re.escape(start) + r"\s*(.+?)\s*" + re.escape(end), text, re.DOTALL)
        calls = []
        for body in bodies:
            for line in body.splitlines():
                found = _from_objects(_json(line.strip()), "arguments") if line.strip() else []
                if found is None:
                    return None
                calls += found
        return (text[: text.find(start)].strip(), calls) if calls else None

    return parse


PARSERS = {
    "glm4_moe": _tagged("<tool_call>", r"<tool_call>\s*([^\n<]+)(.*?)(?=<tool_call>|</tool_call>|$)",
                        r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>"),
    "seed_oss": _tagged("<seed:tool_call>", r"<function=([^>\n]+)>?(.*?)</function>",
                        r"<parameter=([^>]+)>(.*?)</parameter>"),
    "minimax1": _json_block("<tool_calls>", "</tool_calls>"),
    "minimax2": _tagged("<invoke", r'<invoke name="([^"]+)">(.*?)</invoke>',
                        r'<parameter name="([^"]+)">(.*?)</parameter>'),
    "default": _default,
    "qwen": _qwen,
    "llama3": _whole_json("parameters"),
    "mistral": _whole_json("arguments", prefix="[TOOL_CALLS]"),
    "glm4": _glm4,
}


def parse_tool_calls(text: str, tool_format: Optional[str]) -> Optional[tuple[str, list[ToolCall]]]:
    """(text before the calls, calls) when `text` is a function call in `tool_format`, else None. Without a known
    format (template: tokenizer), the common JSON shapes are tried: Qwen's <tool_call> tags, then a bare JSON call."""
    if tool_format in PARSERS:
        return PARSERS[tool_format](text)
    for parser in (_qwen, _whole_json("arguments"), _whole_json("parameters")):
        found = parser(text)
        if found:
            return found
    return None
