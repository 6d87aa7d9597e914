"""Letter scoring: encode each question's few-shot conversation with the chat template, run the model once over the
prompt (batched, left padded) and pick the answer letter whose token has the highest next-token score.

The letter tokens are found from the template itself: the assistant turn "A".."D" is encoded for a probe question and
the first token where the four answers differ is the letter (whatever the template puts before it, e.g. an empty
thinking block, is appended to every prompt). Where the tokenizer also has distinct single tokens for the bare
letters "A".."D" or for " A".." D", their scores are pooled with it (log-sum-exp), so base models that answer
"Answer: A" with a leading space are scored fairly too.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from tunery.errors import TuneryError
from tunery.eval.prompt import PromptStyle, build_messages
from tunery.eval.benchmark import CHOICES, Question
from tunery.utils.logging import get_logger

logger = get_logger(__name__)

_PROBE = Question("1 + 1 = ?", ("1", "2", "3", "4"), "B", "probe")


@dataclass(frozen=True)
class LetterTokens:
    prefix: tuple  # ids the template puts in the assistant turn before the answer letter
    ids: tuple  # per letter (A..D): the token ids whose scores are pooled


def _answer(letter: str) -> dict:
    return {"role": "assistant", "content": letter}


def letter_tokens(template, tokenizer, style: PromptStyle) -> LetterTokens:
    messages = build_messages(_PROBE, [], "arithmetic", style)
    responses = [list(template.encode_oneturn(tokenizer, messages + [_answer(c)])[1]) for c in CHOICES]
    n = 0
    while all(len(r) > n for r in responses) and len({r[n] for r in responses}) == 1:
        n += 1
    variants = []
    if all(len(r) > n for r in responses) and len({r[n] for r in responses}) == len(CHOICES):
        variants.append([r[n] for r in responses])
    for form in ("{}", " {}"):
        encoded = [tokenizer.encode(form.format(c), add_special_tokens=False) for c in CHOICES]
        if all(len(e) == 1 for e in encoded) and len({e[0] for e in encoded}) == len(CHOICES):
            variants.append([e[0] for e in encoded])
    if not variants:
        raise TuneryError(f"the tokenizer of {getattr(tokenizer, 'name_or_path', 'the model')} has no distinct "
                          "tokens for the answer letters A-D, so choices cannot be scored by next-token logits")
    per_letter: list[list[int]] = [[] for _ in CHOICES]
    taken: set[int] = set()
    for variant in variants:
        if any(t in taken and t not in per_letter[j] for j, t in enumerate(variant)):
            continue  # a token already stands for another letter
        for j, t in enumerate(variant):
            if t not in per_letter[j]:
                per_letter[j].append(t)
        taken |= set(variant)
    return LetterTokens(tuple(responses[0][:n]), tuple(tuple(ids) for ids in per_letter))


def encode_question(template, tokenizer, messages: list[dict], letters: LetterTokens) -> list[int]:
    prompt, _ = template.encode_oneturn(tokenizer, messages + [_answer(CHOICES[0])])
    return list(prompt) + list(letters.prefix)


@dataclass
class EncodeStats:
    fewer_shots: int = 0  # prompts that kept fewer examples to fit cutoff_len
    truncated: int = 0  # prompts cut from the left even with no example


def encode_subject(template, tokenizer, subject, style: PromptStyle, n_shot: int, cutoff_len: int,
                   letters: LetterTokens, stats: EncodeStats) -> list[list[int]]:
    """Prompt ids of every question of a subject: the first n_shot dev questions as examples, fewer if too long."""
    prompts = []
    for question in subject.questions:
        for k in range(n_shot, -1, -1):
            ids = encode_question(template, tokenizer, build_messages(question, subject.dev[:k], subject.name, style),
                                  letters)
            if len(ids) <= cutoff_len:
                break
        if k < n_shot:
            stats.fewer_shots += 1
        if len(ids) > cutoff_len:
            stats.truncated += 1
            ids = ids[-cutoff_len:]
        prompts.append(ids)
    return prompts


def score_prompts(model, prompts: list[list[int]], letters: LetterTokens, pad_id: int, batch_size: int,
                  desc: str = "Scoring") -> list[tuple[int, list[float]]]:
    """For each prompt: (index of the chosen letter, the letters' probabilities). Longest prompts first (an
    out-of-memory error shows at once); order of the answers is the order of `prompts`."""
    import torch
    from tqdm.auto import tqdm

    params = inspect.signature(model.forward).parameters
    device = next(model.parameters()).device
    index = [torch.tensor(ids, dtype=torch.long) for ids in letters.ids]
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    results: list = [None] * len(prompts)
    with torch.inference_mode(), tqdm(total=len(prompts), desc=desc, unit="q", disable=None) as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                input_ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i], dtype=torch.long)
                mask[r, width - len(prompts[i]):] = 1
            kwargs = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
            if "position_ids" in params:
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
            if "logits_to_keep" in params:
                kwargs["logits_to_keep"] = 1
            logits = model(**kwargs).logits[:, -1, :].float().cpu()
            scores = torch.stack([torch.logsumexp(logits[:, ids], dim=-1) for ids in index], dim=-1)
            probs = torch.softmax(scores, dim=-1)
            for r, i in enumerate(rows):
                results[i] = (int(scores[r].argmax()), [round(float(p), 6) for p in probs[r]])
            bar.update(len(rows))
    return results
