"""Read options from a YAML/JSON file, `--flag value` pairs and `key=value` overrides into a validated Config.

A Config is frozen once validated: writing an option raises; :meth:`Config.replace` is the one way to derive another
(validated again). Values a run derives (e.g. "the tokenizer gained tokens") live in the objects that derive them.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable

from tunery.config.fields import ConfigFields
from tunery.config.registry import all_options, all_rules
from tunery.errors import ConfigError, did_you_mean
from tunery.utils.logging import get_logger

logger = get_logger(__name__)

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class FrozenConfigError(AttributeError):
    """An option was written into a validated Config."""


class Config(ConfigFields):
    """Validated option values for one command, frozen. Attribute access by option name (typed in
    config/fields.py, generated from the declarations)."""

    command: str  # the tunery command the options are for (train, chat, export, ...)
    values: dict[str, Any]  # every option's value (defaults included); read it, never write it
    explicit: frozenset[str]  # the options the user set
    where: str  # the files and/or "command line" the options came from, for messages
    sources: dict[str, str]  # option -> the file or "command line" its value came from
    env: dict[str, str]  # environment variables the run sets (e.g. from logging_dir)

    def __init__(self, command: str, values: dict[str, Any], explicit: set[str], where: str,
                 sources: dict[str, str] | None = None, env: dict[str, str] | None = None):
        self.__dict__["env"] = dict(env or {})
        self.__dict__["command"] = command
        self.__dict__["sources"] = dict(sources or {})
        self.__dict__["values"] = dict(values)
        self.__dict__["explicit"] = frozenset(explicit)
        self.__dict__["where"] = where

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenConfigError(f"the config is frozen: option '{name}' cannot be set — derive another with "
                                f"cfg.replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise FrozenConfigError(f"the config is frozen: option '{name}' cannot be removed")

    def __reduce__(self):
        return (Config, (self.command, self.values, set(self.explicit), self.where, self.sources, self.env))

    def replace(self, *, unset: Iterable[str] = (), **changes: Any) -> "Config":
        """A new Config with ``changes`` applied (and the options in ``unset`` back to their defaults, no longer
        explicit), validated as a loaded one is: each changed value by its declaration, then every cross-field rule
        of the command. This Config is not changed. Warnings the rules give are not repeated (they were given for
        this one)."""
        options = all_options()
        values, explicit, sources = dict(self.values), set(self.explicit), dict(self.sources)
        source = "derived"
        for name in unset:
            if name not in options:
                raise ConfigError(f"{source}: unknown option '{name}'{did_you_mean(name, options)}")
            default = options[name].default
            values[name] = list(default) if isinstance(default, list) else default
            explicit.discard(name)
            sources.pop(name, None)
        for name, value in changes.items():
            opt = options.get(name)
            if opt is None:
                raise ConfigError(f"{source}: unknown option '{name}'{did_you_mean(name, options)}")
            if isinstance(value, str) and opt.kind != "str":
                value = opt.coerce(value, source)
            opt.validate(value, f"{self.where} ({source})")
            values[name] = value
            explicit.add(name)
            sources[name] = source
        cfg = Config(self.command, values, explicit, self.where, sources, self.env)
        _run_rules(cfg, quiet=True)
        return cfg

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
    _run_rules(cfg)
    return cfg


def _run_rules(cfg: Config, quiet: bool = False) -> None:
    """Every cross-field rule of the config's command; ``quiet``: without their warnings (a derived config)."""
    log = logging.getLogger("tunery")
    level = log.level
    if quiet:
        log.setLevel(logging.ERROR)
    try:
        for rule in all_rules():
            if cfg.command in rule.commands:
                rule.func(cfg)
    finally:
        log.setLevel(level)
