"""Read options from a YAML/JSON file, `--flag value` pairs and `key=value` overrides into a validated Config."""

from __future__ import annotations

import os
from typing import Any, Iterable

from tunery.config.registry import all_options, all_rules
from tunery.errors import ConfigError, did_you_mean
from tunery.utils.logging import get_logger

logger = get_logger(__name__)

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class Config:
    """Validated option values for one command. Attribute access by option name."""

    def __init__(self, command: str, values: dict[str, Any], explicit: set[str], where: str,
                 sources: dict[str, str] | None = None, env: dict[str, str] | None = None):
        self.__dict__["env"] = dict(env or {})  # environment variables the run sets (e.g. from logging_dir)
        self.__dict__["command"] = command
        self.__dict__["sources"] = dict(sources or {})  # option -> the file or "command line" its value came from
        self.__dict__["values"] = values
        self.__dict__["explicit"] = explicit
        self.__dict__["where"] = where

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self.values:
            raise AttributeError(f"unknown option {name}")
        self.values[name] = value

    def hf_training_kwargs(self) -> dict[str, Any]:
        """The transformers TrainingArguments values the user set (transformers' own defaults fill the rest)."""
        options = all_options()
        return {k: v for k, v in self.values.items() if options[k].hf and k in self.explicit}

    def to_dict(self, explicit_only: bool = True) -> dict[str, Any]:
        keys = [k for k in self.values if k in self.explicit] if explicit_only else list(self.values)
        return {k: self.values[k] for k in keys}


def read_config_file(path: str) -> dict[str, Any]:
    """The option: value mapping of a YAML/JSON file (UTF-8, no duplicate keys, bounded aliases, no ``${VAR}``)."""
    from tunery.config.files import read_config_mapping

    return read_config_mapping(path)


def split_argv(argv: Iterable[str]) -> tuple[list[str], list[tuple[str, Any, str]]]:
    """Split argv into config files and (key, raw value, where) pairs. A bare `--flag` means true."""
    options = all_options()
    argv = list(argv)
    files: list[str] = []
    pairs: list[tuple[str, Any, str]] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            key, eq, value = token[2:].partition("=")
            key = key.replace("-", "_")
            if not eq:
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                opt = options.get(key)
                takes_value = nxt is not None and not nxt.startswith("--")
                if opt is not None and opt.kind == "bool":
                    takes_value = takes_value and nxt.lower() in ("true", "false", "1", "0", "yes", "no")
                if takes_value:
                    value, i = nxt, i + 1
                elif opt is None or opt.kind == "bool":
                    value = "true"
                else:
                    raise ConfigError(f"command line: option '--{key}' needs a value — e.g. --{key} VALUE")
            pairs.append((key, value, "command line"))
        elif "=" in token and not token.startswith("-"):
            key, _, value = token.partition("=")
            pairs.append((key.strip().replace("-", "_"), value, "command line"))
        elif token.endswith(CONFIG_SUFFIXES) and not pairs:
            files.append(token)
        else:
            raise ConfigError(f"command line: unexpected argument '{token}' — options look like --name value, "
                              "name=value, or a config.yaml file first")
        i += 1
    return files, pairs


def parse_config(command: str, argv: Iterable[str] = (), overrides: dict[str, Any] | None = None) -> Config:
    """Build and validate the Config for ``command`` from argv (and Python-side overrides)."""
    files, pairs = split_argv(argv)
    raw: list[tuple[str, Any, str]] = []
    for path in files:
        raw.extend((k, v, path) for k, v in read_config_file(path).items())
    raw.extend(pairs)
    raw.extend((k, v, "arguments") for k, v in (overrides or {}).items())
    where = " + ".join(files + (["command line"] if pairs else [])) or "arguments"
    return build_config(command, raw, where)


def _translated(raw: list[tuple[str, Any, str]], options: dict, env: dict[str, str]):
    """The (key, value, where) triples with TrainingArguments names the installed transformers dropped translated
    (:mod:`tunery.config.hf_compat`); environment variables they become go into ``env``."""
    from tunery.config.hf_compat import translate

    for key, value, source in raw:
        result = None if key in options else translate(key, value, source, set(options))
        if result is None:
            yield key, value, source
            continue
        pairs, notice = result
        if notice and os.environ.get("RANK", "0") == "0":
            logger.warning("%s: %s", source, notice)
        for new_key, new_value in pairs:
            if new_key.startswith("env:"):
                env[new_key[4:]] = new_value
            else:
                yield new_key, new_value, source


def build_config(command: str, raw: list[tuple[str, Any, str]], where: str) -> Config:
    options = all_options()
    values = {name: opt.default for name, opt in options.items()}
    values = {k: (list(v) if isinstance(v, list) else v) for k, v in values.items()}
    sources: dict[str, str] = {}  # option -> where its final value came from
    env: dict[str, str] = {}  # environment variables the run sets (translated options)
    for key, value, source in _translated(raw, options, env):
        opt = options.get(key)
        if opt is None:
            raise ConfigError(f"{source}: unknown option '{key}'{did_you_mean(key, options)} — "
                              f"`tunery {command} -h` lists every option")
        value = opt.coerce(value, source)
        if isinstance(value, dict) and isinstance(values.get(key), dict) and key in sources:
            value = {**values[key], **value}  # e.g. accelerator_config built from several legacy names
        values[key] = value
        sources[key] = source
    for key, source in sources.items():  # validate final values only: a later override may fix an earlier one
        options[key].validate(values[key], source)
    explicit = set(sources)
    if command == "train" and not explicit & {"do_train", "do_eval", "do_predict"}:
        values["do_train"] = True  # `tunery train` trains unless told to only evaluate or predict
    cfg = Config(command, values, explicit, where, sources, env)
    for rule in all_rules():
        if command in rule.commands:
            rule.func(cfg)
    return cfg
