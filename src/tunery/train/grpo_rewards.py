"""Reward functions of stage grpo (``reward_funcs``), each with TRL's signature
``f(prompts, completions, **kwargs) -> list[float | None]``.

Built-ins: ``accuracy`` (the completion's final answer equals the record's reference), ``format`` (R1-style
``<think>…</think><answer>…</answer>``, or the regex ``format_pattern``), ``length`` (a character target, or a
token-budget penalty) and ``reward_model`` (a stage-rm model or an API, as ppo uses). Anything else is a user
function ``path/to/file.py:name``, loaded and checked (file, name, signature) when the config is read, before the
model loads; what it returns is checked on every call (one number or None per completion).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import numbers
import re
from fractions import Fraction
from typing import TYPE_CHECKING

from tunery.config.reward_specs import load_user_function, reward_name
from tunery.errors import TuneryError

R1_FORMAT = r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*"
# Columns that hold a record's reference answer, in the order accuracy looks for them ("reference" is the record's
# response: alpaca's output column, or the conversation's last assistant turn).
REFERENCE_COLUMNS = ("answer", "solution", "reference")

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")


# ------------------------------------------------------------------ answers
def _last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (braces balanced), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None


def final_answer(text: str) -> str:
    """The final answer of a text: the last <answer>…</answer>, else the last \\boxed{}, else what follows a GSM8K
    '####', else the last number, else the whole text (stripped)."""
    text = str(text)
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return tags[-1].strip()
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    numbers = _NUMBER.findall(_FRAC.sub(r"\1/\2", text))
    if numbers:
        return numbers[-1].strip()
    return text.strip()


def parse_number(text: str) -> Fraction | None:
    """An exact number from '42', '-3.5', '1,234', '3/4', '\\frac{3}{4}', '$12', '50%' (= 1/2); None otherwise."""
    s = _FRAC.sub(r"\1/\2", str(text)).strip().rstrip(".")
    s = s.replace("$", "").replace("\\!", "").replace(" ", "").replace("\\%", "%")
    percent = s.endswith("%")
    s = s.rstrip("%")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    try:
        if re.fullmatch(r"-?\d+/\d+", s):
            num, den = s.split("/")
            value = Fraction(int(num), int(den)) if int(den) else None
        elif re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)", s):
            value = Fraction(s)
        else:
            return None
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if value is not None and percent else value


def _normal_text(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().strip(".").lower()


def _math_verify_equal(predicted: str, reference: str) -> bool | None:
    """math-verify's verdict when the package is installed and parses the reference; None otherwise."""
    if importlib.util.find_spec("math_verify") is None:
        return None
    from math_verify import parse, verify

    def parsed(text: str):
        return parse(text) or parse(f"${text}$")

    gold = parsed(reference)
    if not gold:
        return None
    return bool(verify(gold, parsed(predicted)))


def answers_match(predicted: str, reference: str) -> bool:
    """Whether two final answers are the same: equal numbers (exactly, as fractions: 0.5 = 1/2 = 50%), equal text up
    to case, spaces and a final period, or — when math-verify is installed — equal as math-verify parses them
    (LaTeX, expressions, sets)."""
    left, right = parse_number(predicted), parse_number(reference)
    if left is not None and right is not None:
        if left == right:
            return True
    elif _normal_text(predicted) == _normal_text(reference):
        return True
    return bool(_math_verify_equal(predicted, reference))


# ------------------------------------------------------------------ built-ins
def _texts(completions) -> list[str]:
    """Completions as text (TRL passes strings for text prompts, message lists for conversational ones)."""
    return [c[-1]["content"] if isinstance(c, list) and c and isinstance(c[-1], dict) else str(c)
            for c in completions]


def accuracy(prompts, completions, **kwargs) -> list[float | None]:
    """1.0 when the completion's final answer equals the record's reference (the first of the columns answer,
    solution, reference it has), else 0.0; None for a record without a reference."""
    columns = [kwargs[c] for c in REFERENCE_COLUMNS if c in kwargs]
    rewards: list[float | None] = []
    for i, text in enumerate(_texts(completions)):
        reference = next((col[i] for col in columns if col[i] not in (None, "")), None)
        if reference is None:
            rewards.append(None)
            continue
        rewards.append(1.0 if answers_match(final_answer(text), final_answer(str(reference))) else 0.0)
    return rewards


def format_reward(pattern: str | None):
    """1.0 when the whole completion matches ``pattern`` (default: R1's <think>…</think><answer>…</answer>)."""
    compiled = re.compile(pattern or R1_FORMAT, re.S)

    def format(prompts, completions, **kwargs) -> list[float]:  # noqa: A001 — the reward's name in the logs
        return [1.0 if compiled.fullmatch(text) else 0.0 for text in _texts(completions)]

    return format


def length_reward(target: int | None, max_completion_length: int):
    """With ``target`` (characters): 1 − |length − target| / target, at least 0 — 1.0 at the target, 0.0 at none or
    twice the target. Without: −(completion tokens) / max_completion_length, a penalty from 0 (empty) to −1 (the whole
    budget)."""

    def length(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        if target:
            return [max(0.0, 1.0 - abs(len(text) - target) / target) for text in _texts(completions)]
        if completion_ids is None:
            raise TuneryError("reward 'length' without length_target needs the completions' token ids — set "
                              "length_target (characters)")
        return [-len(ids) / max_completion_length for ids in completion_ids]

    return length


class RewardModelReward:
    """The reward model of ppo (``reward_model``, ``reward_model_type``) scoring prompt + completion tokens."""

    __name__ = "reward_model"

    def __init__(self, scorer, prompt_ids: dict[str, list[int]], tokenizer):
        self.scorer, self.prompt_ids, self.tokenizer = scorer, prompt_ids, tokenizer

    def __call__(self, prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        texts = [str(p) + t for p, t in zip(prompts, _texts(completions))]
        if completion_ids is None:
            completion_ids = [self.tokenizer.encode(t, add_special_tokens=False) for t in _texts(completions)]
        sequences = [list(self.prompt_ids.get(p) or self.tokenizer.encode(str(p), add_special_tokens=False)) +
                     list(ids) for p, ids in zip(prompts, completion_ids)]
        return [float(s) for s in self.scorer(sequences, texts).tolist()]


def _check_output(name: str, rewards, expected: int) -> list:
    if not isinstance(rewards, (list, tuple)):
        raise TuneryError(f"reward function '{name}' returned {type(rewards).__name__}, not a list — return one "
                          "float (or None where it does not apply) per completion")
    if len(rewards) != expected:
        raise TuneryError(f"reward function '{name}' returned {len(rewards)} rewards for {expected} completions — "
                          "return one float (or None) per completion")
    for i, value in enumerate(rewards):
        if value is not None and not isinstance(value, numbers.Real):
            raise TuneryError(f"reward function '{name}' returned {type(value).__name__} {value!r} at position {i} "
                              "— return floats (or None where it does not apply)")
    return [None if v is None else float(v) for v in rewards]


def checked(func, name: str):
    """``func`` with its output checked (one float or None per completion); keeps its name and async-ness."""
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None)):
        async def async_wrapper(prompts, completions, **kwargs):
            return _check_output(name, await func(prompts=prompts, completions=completions, **kwargs), len(prompts))

        wrapper = async_wrapper
    else:
        def wrapper(prompts, completions, **kwargs):
            return _check_output(name, func(prompts=prompts, completions=completions, **kwargs), len(prompts))

    functools.update_wrapper(wrapper, func, assigned=("__module__", "__doc__"), updated=())
    wrapper.__name__ = wrapper.__qualname__ = name
    return wrapper


def build_reward_funcs(cfg, tokenizer, prompt_ids: dict[str, list[int]], device) -> list:
    """The run's reward functions in reward_funcs order, each checked."""
    funcs = []
    for spec in cfg.reward_funcs:
        if spec == "accuracy":
            func = accuracy
        elif spec == "format":
            func = format_reward(cfg.format_pattern)
        elif spec == "length":
            func = length_reward(cfg.length_target, cfg.max_completion_length)
        elif spec == "reward_model":
            from tunery.train.rewards import load_scorer

            func = RewardModelReward(load_scorer(cfg, tokenizer, device), prompt_ids, tokenizer)
        else:
            func = load_user_function(spec)
        funcs.append(checked(func, reward_name(spec)))
    return funcs
