"""Tool-use text formats: the system-prompt description of the tools and the text of an assistant's tool calls.

Each format mirrors the LLaMA-Factory 0.9.x ``tool_utils`` of the same name, character for character, so that a
migrated run renders the same prompts. A format is two functions: ``describe(tools) -> str`` (appended to the system
text) and ``calls(functions) -> str`` (the body of a ``function`` message). ``functions`` are ``(name, arguments)``
pairs where ``arguments`` is already a JSON string.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from ...errors import ConfigError, DataError, did_you_mean


class FunctionCall(NamedTuple):
    name: str
    arguments: str  # JSON text


def _dumps(obj, **kw) -> str:
    return json.dumps(obj, ensure_ascii=False, **kw)


def _unwrap(tool: dict) -> dict:
    return tool.get("function", "") if tool.get("type") == "function" else tool


def _wrap(tool: dict) -> dict:
    return tool if tool.get("type") == "function" else {"type": "function", "function": tool}


# ---------------------------------------------------------------- default (ReAct-style "Action:" text)
_DEFAULT_PROMPT = (
    "You have access to the following tools:\n{tool_text}"
    "Use the following format if using a tool:\n"
    "```\n"
    "Action: tool name (one of [{tool_names}])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    '(e.g. ```{{"input": "hello world", "num_beams": 5}}```)\n'
    "```\n"
)


def _default_describe(tools: list) -> str:
    tool_text, names = "", []
    for tool in tools:
        tool = _unwrap(tool)
        params = ""
        for pname, param in tool["parameters"]["properties"].items():
            required = ", required" if pname in tool["parameters"].get("required", []) else ""
            enum = ", should be one of [{}]".format(", ".join(param["enum"])) if param.get("enum") else ""
            items = ", where each item should be {}".format(param["items"].get("type", "")) if param.get("items") else ""
            params += f"  - {pname} ({param.get('type', '')}{required}): {param.get('description', '')}{enum}{items}\n"
        tool_text += f"> Tool Name: {tool['name']}\nTool Description: {tool.get('description', '')}\nTool Args:\n{params}\n"
        names.append(tool["name"])
    return _DEFAULT_PROMPT.format(tool_text=tool_text, tool_names=", ".join(names))


def _default_calls(functions: list[FunctionCall]) -> str:
    return "\n".join(f"Action: {name}\nAction Input: {arguments}" for name, arguments in functions)


# ---------------------------------------------------------------- qwen (Qwen2.5 <tool_call> JSON)
_QWEN_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, '
    '"arguments": <args-json-object>}}\n</tool_call>'
)


def _qwen_describe(tools: list) -> str:
    return _QWEN_PROMPT.format(tool_text="".join("\n" + _dumps(_wrap(tool)) for tool in tools))


def _qwen_calls(functions: list[FunctionCall]) -> str:
    texts = [_dumps({"name": name, "arguments": json.loads(args)}) for name, args in functions]
    return "\n".join(f"<tool_call>\n{text}\n</tool_call>" for text in texts)


# ---------------------------------------------------------------- llama3 (JSON-based tool calling)
_LLAMA3_PROMPT = (
    "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n"
    "You have access to the following functions. To call a function, please respond with JSON for a function call. "
    'Respond in the format {{"name": function name, "parameters": dictionary of argument name and its value}}. '
    "Do not use variables.\n\n{tool_text}"
)


def _llama3_describe(tools: list) -> str:
    tool_text = "".join(_dumps(_wrap(tool), indent=4) + "\n\n" for tool in tools)
    return _LLAMA3_PROMPT.format(date=datetime.now().strftime("%d %b %Y"), tool_text=tool_text)


def _llama3_calls(functions: list[FunctionCall]) -> str:
    objs = [{"name": name, "parameters": json.loads(args)} for name, args in functions]
    return _dumps(objs[0] if len(objs) == 1 else objs)


# ---------------------------------------------------------------- glm4 (GLM-4 / ChatGLM3)
_GLM4_PROMPT = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具{tool_text}"
)


def _glm4_describe(tools: list) -> str:
    tool_text = ""
    for tool in tools:
        tool = _unwrap(tool)
        tool_text += "\n\n## {name}\n\n{body}\n在调用上述函数时，请使用 Json 格式表示调用的参数。".format(
            name=tool["name"], body=_dumps(tool, indent=4)
        )
    return _GLM4_PROMPT.format(tool_text=tool_text)


def _glm4_calls(functions: list[FunctionCall]) -> str:
    if len(functions) > 1:
        raise DataError("the glm4 tool format does not support parallel function calls")
    return f"{functions[0].name}\n{functions[0].arguments}"


# ---------------------------------------------------------------- mistral (v0.3 [AVAILABLE_TOOLS])
def _mistral_describe(tools: list) -> str:
    return "[AVAILABLE_TOOLS] " + _dumps([_wrap(tool) for tool in tools]) + "[/AVAILABLE_TOOLS]"


def _mistral_calls(functions: list[FunctionCall]) -> str:
    return _dumps([{"name": name, "arguments": json.loads(args)} for name, args in functions])


# ---------------------------------------------------------------- glm4_moe (GLM-4.5/4.6/4.7 <arg_key>/<arg_value>)
_GLM4_MOE_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, output the function name and arguments within the following XML format:\n"
    "<tool_call>{{function-name}}\n<arg_key>{{arg-key-1}}</arg_key>\n<arg_value>{{arg-value-1}}</arg_value>\n"
    "<arg_key>{{arg-key-2}}</arg_key>\n<arg_value>{{arg-value-2}}</arg_value>\n...\n</tool_call>\n"
)


def _text_value(value) -> str:
    return value if isinstance(value, str) else _dumps(value)


def _glm4_moe_describe(tools: list) -> str:
    return _GLM4_MOE_PROMPT.format(tool_text="".join("\n" + _dumps(_wrap(tool)) for tool in tools))


def _glm4_moe_calls(functions: list[FunctionCall]) -> str:
    texts = []
    for name, args in functions:
        text = "\n<tool_call>" + name
        for key, value in json.loads(args).items():
            text += "\n<arg_key>" + key + "</arg_key>" + "\n<arg_value>" + _text_value(value) + "</arg_value>"
        texts.append(text)
    return "\n".join(texts)


# ---------------------------------------------------------------- ling (Ling/Bailing v2: qwen calls)
_LING_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, '
    '"arguments": <args-json-object>}}\n</tool_call>'
)


def _ling_describe(tools: list) -> str:
    tool_text = "".join("\n" + _dumps(_wrap(tool)) for tool in tools)
    return _LING_PROMPT.format(tool_text=tool_text) + "\n" + "detailed thinking off"


# ---------------------------------------------------------------- seed_oss (Seed-OSS <seed:tool_call>)
_SEED_PROMPT = (
    "system\nYou are Doubao, a helpful AI assistant. You may call one or more functions to assist with the user "
    "query.Tool List:\nYou are authorized to use the following tools (described in JSON Schema format). Before "
    "performing any task, you must decide how to call them based on the descriptions and parameters of these "
    "tools.{tool_text}\n工具调用请遵循如下格式:\n<seed:tool_call>\n<function=example_function_name>\n"
    "<parameter=example_parameter_1>value_1</parameter>\n<parameter=example_parameter_2>This is the value for the "
    "second parameter\nthat can span\nmultiple lines</parameter>\n</function>\n</seed:tool_call>\n"
)


def _seed_describe(tools: list) -> str:
    return _SEED_PROMPT.format(tool_text="\n" + _dumps(tools))


def _seed_calls(functions: list[FunctionCall]) -> str:
    texts = []
    for name, args in functions:
        text = "\n<seed:tool_call>\n<function=" + name
        for key, value in json.loads(args).items():
            text += "\n<parameter=" + key + ">" + _text_value(value) + "</parameter>"
        texts.append(text + "\n</function>\n</seed:tool_call>")
    return "\n".join(texts)


# ---------------------------------------------------------------- minimax1 / minimax2 (MiniMax-M1, -M2)
_MINIMAX1_PROMPT = (
    "You are provided with these tools:\n<tools>\n{tool_text}</tools>\n\n"
    "If you need to call tools, please respond with <tool_calls></tool_calls> XML tags, and provide tool-name and "
    "json-object of arguments, following the format below:\n<tool_calls>\n"
    '{{"name": <tool-name-1>, "arguments": <args-json-object-1>}}\n...\n</tool_calls>'
)
_MINIMAX2_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more tools to assist with the user query.\n"
    "Here are the tools available in JSONSchema format:\n\n<tools>\n{tool_text}</tools>\n\n"
    "When making tool calls, use XML format to invoke tools and pass parameters:\n"
    '\n<minimax:tool_call>\n<invoke name="tool-name-1">\n<parameter name="param-key-1">param-value-1</parameter>\n'
    '<parameter name="param-key-2">param-value-2</parameter>\n...\n</invoke>\n</minimax:tool_call>'
)


def _minimax1_describe(tools: list) -> str:
    return _MINIMAX1_PROMPT.format(tool_text="".join(_dumps(_unwrap(tool)) + "\n" for tool in tools))


def _minimax1_calls(functions: list[FunctionCall]) -> str:
    texts = [_dumps({"name": name, "arguments": json.loads(args)}) for name, args in functions]
    return "<tool_calls>\n" + "\n".join(texts) + "\n</tool_calls>"


def _minimax2_describe(tools: list) -> str:
    return _MINIMAX2_PROMPT.format(tool_text="".join("<tool>" + _dumps(_unwrap(t)) + "</tool>\n" for t in tools))


def _minimax2_calls(functions: list[FunctionCall]) -> str:
    texts = []
    for name, args in functions:
        text = f'<invoke name="{name}">'
        for key, value in json.loads(args).items():
            text += f'\n<parameter name="{key}">' + _text_value(value) + "</parameter>"
        texts.append(text + "\n</invoke>")
    return "\n".join(texts)


def _not_yet(name: str):
    def fail(*_):
        raise DataError(f"tool_format '{name}' is not supported by Tunery yet: train tool records with template: "
                        "tokenizer (the model's own chat template) or set tool_format to another format")
    return fail


class ToolFormat(NamedTuple):
    describe: Callable[[list], str]
    calls: Callable[[list[FunctionCall]], str]


TOOL_FORMATS: dict[str, ToolFormat] = {
    "default": ToolFormat(_default_describe, _default_calls),
    "qwen": ToolFormat(_qwen_describe, _qwen_calls),
    "llama3": ToolFormat(_llama3_describe, _llama3_calls),
    "glm4": ToolFormat(_glm4_describe, _glm4_calls),
    "mistral": ToolFormat(_mistral_describe, _mistral_calls),
    "glm4_moe": ToolFormat(_glm4_moe_describe, _glm4_moe_calls),
    "ling": ToolFormat(_ling_describe, _qwen_calls),
    "seed_oss": ToolFormat(_seed_describe, _seed_calls),
    "minimax1": ToolFormat(_minimax1_describe, _minimax1_calls),
    "minimax2": ToolFormat(_minimax2_describe, _minimax2_calls),
    "lfm2": ToolFormat(_not_yet("lfm2"), _not_yet("lfm2")),
}


def get_tool_format(name: str) -> ToolFormat:
    if name not in TOOL_FORMATS:
        raise ConfigError(
            f"unknown tool_format '{name}'{did_you_mean(name, TOOL_FORMATS)}; available: {', '.join(TOOL_FORMATS)}"
        )
    return TOOL_FORMATS[name]


def describe_tools(tool_format: str, tools: str) -> str:
    """The text a template appends to the system message for a JSON list of tools ("" for an empty list)."""
    try:
        parsed = json.loads(tools)
    except json.JSONDecodeError as err:
        raise DataError(f"tools is not valid JSON ({err}): {tools[:80]!r}; give a JSON list of tool schemas") from None
    if len(parsed) == 0:
        return ""
    return get_tool_format(tool_format).describe(parsed)


def format_function_calls(tool_format: str, content: str) -> str:
    """Turn a ``function`` message (JSON: one call or a list of {"name", "arguments"}) into the template's text."""
    try:
        calls = json.loads(content)
        calls = calls if isinstance(calls, list) else [calls]
        functions = [FunctionCall(call["name"], _dumps(call["arguments"])) for call in calls]
    except json.JSONDecodeError:
        raise DataError(f"function message is not valid JSON: {content[:80]!r}") from None
    except (KeyError, TypeError):
        raise DataError(f"function message needs 'name' and 'arguments': {content[:80]!r}") from None
    return get_tool_format(tool_format).calls(functions)
