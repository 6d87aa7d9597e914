"""The ``reward_funcs`` entries of stage grpo, checked when the config is read: a built-in name or a user function
``path/to/file.py:name`` (file, name and signature checked, before the model loads). The rewards themselves are in
:mod:`tunery.train.grpo_rewards`."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re

from tunery.errors import ConfigError

BUILTINS = ("accuracy", "format", "length", "reward_model")


def _signature_problem(func) -> str | None:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None  # a builtin or C callable: trust it
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    has_kwargs = any(p.kind == p.VAR_KEYWORD for p in params)
    missing = [n for n in ("prompts", "completions") if n not in names and not has_kwargs]
    if missing:
        return f"it takes no '{missing[0]}' argument"
    if not has_kwargs:
        return "it takes no **kwargs (the trainer also passes completion_ids, trainer_state and the dataset columns)"
    return None


def load_user_function(spec: str):
    """The function named by 'path/to/file.py:name', its file, name and signature checked (ConfigError)."""
    fix = "write it as path/to/rewards.py:function_name with def function_name(prompts, completions, **kwargs)"
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise ConfigError(f"reward function '{spec}' is neither a built-in ({', '.join(BUILTINS)}) nor a "
                          f"file:function — {fix}")
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ConfigError(f"reward function '{spec}': no such file '{path}' — check the path (relative to the "
                          "folder you run tunery in)")
    module_name = "tunery_rewards_" + re.sub(r"\W", "_", os.path.abspath(path))
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # the user's code: any error it raises at import is reported on one line
        raise ConfigError(f"reward function '{spec}': importing '{path}' failed ({type(err).__name__}: {err}) — "
                          "fix the file") from None
    func = getattr(module, name, None)
    if func is None:
        found = [n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")]
        listed = f"; it defines {', '.join(found)}" if found else ""
        raise ConfigError(f"reward function '{spec}': '{path}' has no function '{name}'{listed} — check the name")
    if not callable(func):
        raise ConfigError(f"reward function '{spec}': '{name}' in '{path}' is not a function — {fix}")
    problem = _signature_problem(func)
    if problem:
        raise ConfigError(f"reward function '{spec}': {problem} — {fix}")
    return func


def reward_name(spec: str) -> str:
    """How a reward is named in the logs: the built-in's name, or a user function's name."""
    return spec if spec in BUILTINS else spec.rpartition(":")[2]


def check_reward_specs(specs: list[str]) -> None:
    """Config-time check of every reward_funcs entry (user files imported here, before the model loads)."""
    names = [reward_name(s) for s in specs]
    for spec in specs:
        if spec not in BUILTINS:
            load_user_function(spec)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"reward_funcs names '{duplicates[0]}' twice — each reward is logged under its name; "
                          "list it once (weigh it with reward_weights)")
