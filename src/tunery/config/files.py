"""Reading a config file strictly and with bounded work: UTF-8 only, no duplicate keys, a size limit, and YAML
aliases that may not expand past a node budget (a 1 KB "billion laughs" file fails at once instead of taking the
machine's memory). ``${VAR}`` in a value is refused rather than kept literally or expanded (see README,
Configuration): the shell expands it on the command line instead."""

from __future__ import annotations

import json
import re
from typing import Any

from tunery.errors import ConfigError
from tunery.utils.strict_json import DuplicateKey, loads_unique

MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a config is a few KB; anything near this is not one
MAX_YAML_NODES = 100_000  # values after expanding every alias (a LLaMA-Factory config has ~50)
_ENV_REF = re.compile(r"\$\{[^}\s]*\}")


def read_text(path: str) -> str:
    """The file's text; one-line errors for a missing, oversized or non-UTF-8 file."""
    import os

    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' does not exist — check the path")
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file '{path}' is {size / 2**20:.1f} MiB, more than a config can be "
                          f"({MAX_CONFIG_BYTES // 2**20} MiB at most) — check that it is the right file")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}) — "
                          "save it as UTF-8") from None


def _yaml_loader():
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice in one mapping (YAML's merge key ``<<`` excepted)."""

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        if key in seen:
                            raise ConfigError(f"{self.name}:{line}: key '{key}' is given twice (first on line "
                                              f"{seen[key]}) — keep one (YAML would silently use the last)")
                        seen[key] = line
                    except TypeError:  # an unhashable key: construction reports it
                        continue
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def _expanded_size(node, memo: dict) -> int:
    """Nodes the document has once every alias is expanded (shared nodes counted each time they are used)."""
    import yaml

    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a recursive alias counts once per cycle; the constructor handles recursion itself
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def _load_yaml(text: str, path: str) -> Any:
    loader = _yaml_loader()(text)
    loader.name = path
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_NODES:
            raise ConfigError(f"{path}: its aliases (*name) expand to {size:,} values, more than a config can hold "
                              f"({MAX_YAML_NODES:,}) — write the values out or remove the aliases")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _env_references(value: Any, key: str):
    """(option, text) of the first string holding ``${...}`` in a value (walking lists and mappings)."""
    if isinstance(value, str):
        match = _ENV_REF.search(value)
        return (key, match.group(0)) if match else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for sub, item in items:
        found = _env_references(item, f"{key}.{sub}" if isinstance(value, dict) else f"{key}[{sub}]")
        if found:
            return found
    return None


def _line_of(text: str, needle: str) -> str:
    pos = text.find(needle)
    return f":{text.count(chr(10), 0, pos) + 1}" if pos >= 0 else ""


def load_config_text(text: str, path: str) -> Any:
    """Parse a config file's text (JSON when ``path`` ends in .json, else YAML); malformed -> one line."""
    import yaml

    try:
        if path.endswith(".json"):
            return loads_unique(text)
        return _load_yaml(text, path)
    except DuplicateKey as err:
        at = f":{err.line}" if err.line else ""
        raise ConfigError(f"{path}{at}: key '{err.key}' is given twice — keep one (JSON would silently use the "
                          "last)") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}:{err.colno}: malformed JSON ({err.msg}) — fix the file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        loc = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{loc}: malformed YAML ({problem}) — fix the file") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config — fix the file") from None


def read_config_mapping(path: str) -> dict[str, Any]:
    """The option: value mapping of a YAML/JSON config file, strictly read (see the module docstring)."""
    text = read_text(path)
    data = load_config_text(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value at the top level")
    for key, value in data.items():
        found = _env_references(value, str(key))
        if found:
            option, ref = found
            raise ConfigError(f"{path}{_line_of(text, ref)}: option '{option}' holds {ref}, which Tunery does not "
                              f"expand (LLaMA-Factory keeps it as literal text) — write the value out, or pass "
                              f"{option.split('.')[0].split('[')[0]}=... on the command line, where your shell "
                              f"expands variables")
    return data
