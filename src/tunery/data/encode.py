"""Token encoders: AlignedRecord -> model inputs, exactly as LLaMA-Factory 0.9.x's dataset processors.

* :func:`encode_supervised` = ``SupervisedDatasetProcessor._encode_data_example`` (every assistant turn trained);
* :func:`encode_pretrain` = ``PretrainDatasetProcessor`` (texts + eos, concatenated and cut in cutoff_len blocks);
* :func:`encode_pairwise` (rm/dpo), :func:`encode_unsupervised` (ppo / predict), :func:`encode_kto` (kto);
* :func:`encoding_plan` / :func:`chunk_bounds`: the checks and chunking every encoding path shares
  (:func:`tunery.data.encoded.encode_to_arrow` runs the encoders; ``encoded.encode_dataset`` reads its output back
  as a list for small uses).

Templates must have been applied to the tokenizer first (``template.fix_tokenizer(tokenizer)``): the eos id the
encoders use is the tokenizer's.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import Counter
from collections.abc import Sequence
from itertools import chain

from ..config.stages import ENCODE_AS
from ..errors import ConfigError, DataError, did_you_mean
from .records import ASSISTANT, IGNORE_INDEX, AlignedRecord
from .templates.template import batch_text_encoder, token_cache, tokenize_texts

logger = logging.getLogger(__name__)

TRUNCATION_WARN_SHARE = 0.5  # warn when at least this share of the examples is cut by cutoff_len
LF_BATCH_SIZE = 1000  # LLaMA-Factory's preprocessing_batch_size: pt packing and kto pairing work per batch

STAGE_ENCODERS = ENCODE_AS  # stage (or "predict") -> encoder, from the stage table (config/stages.py)


# Raw text is cut before tokenizing to what cutoff_len can use, so one huge record cannot take the machine's memory:
# a message keeps at most TEXT_BOUND_MARGIN x cutoff_len x (the longest token's characters), and never less than
# MIN_TEXT_BOUND characters. A message that fits in cutoff_len tokens is far below that bound, so its encoding is
# exactly LLaMA-Factory's; only a message over the bound (hundreds of thousands of tokens) is cut, which can move the
# prompt/response split of that record's truncation by a few tokens.
MIN_TEXT_BOUND = 1 << 20
TEXT_BOUND_MARGIN = 4


def text_bound(tokenizer, cutoff_len: int) -> int:
    """Characters of one message that encoding ``cutoff_len`` tokens can possibly use, with a wide margin."""
    try:
        longest = max((len(token) for token in tokenizer.get_vocab()), default=1)
    except (AttributeError, NotImplementedError, TypeError):
        longest = 64
    return max(MIN_TEXT_BOUND, TEXT_BOUND_MARGIN * cutoff_len * max(longest, 1))


def bound_texts(records: Sequence[AlignedRecord], limit: int) -> tuple[list[AlignedRecord], int]:
    """``records`` with every message, system prompt and tools text cut to ``limit`` characters; how many were cut."""
    from dataclasses import replace

    def cut(messages: list[dict]) -> list[dict]:
        return [{**m, "content": m["content"][:limit]} if len(m.get("content") or "") > limit else m
                for m in messages]

    out, n_cut = [], 0
    for record in records:
        texts = [m.get("content") or "" for m in record.prompt + record.response] + [record.system, record.tools]
        if any(len(t or "") > limit for t in texts):
            n_cut += 1
            record = replace(record, prompt=cut(record.prompt), response=cut(record.response),
                             system=(record.system or "")[:limit], tools=(record.tools or "")[:limit])
        out.append(record)
    return out, n_cut


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """Lengths after truncation to ``cutoff_len`` (LLaMA-Factory's rule): a short target keeps all of its tokens and
    the source gets the rest; else a short source is kept whole; else both are cut in proportion."""
    if target_len * 2 < cutoff_len:  # truncate source
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:  # truncate target
        max_target_len = cutoff_len - source_len
    else:  # truncate both
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def _where(record: AlignedRecord) -> str:
    return f" ({record.source})" if record.source else ""


def _check_prompt(record: AlignedRecord) -> None:
    if len(record.prompt) % 2 != 1:
        raise DataError(f"invalid example{_where(record)}: the prompt needs an odd number of messages "
                        f"(user/assistant pairs then a user turn), got {len(record.prompt)}")


def encode_supervised(
    record: AlignedRecord,
    template,
    tokenizer,
    cutoff_len: int,
    train_on_prompt: bool = False,
    mask_history: bool = False,
    discard_history_cot: bool = False,
) -> dict:
    """input_ids / labels / attention_mask for one sft example: prompts labelled ``IGNORE_INDEX``, every assistant
    turn trained (only the last with ``mask_history``, which also gives the last turns priority in the budget)."""
    _check_prompt(record)
    if len(record.response) != 1:
        raise DataError(f"invalid example{_where(record)}: sft needs exactly one response, got {len(record.response)}")
    if train_on_prompt and template.efficient_eos:
        raise ConfigError(f"template '{template.name}' does not support train_on_prompt (it uses efficient_eos)")
    pairs = template.encode_multiturn(tokenizer, record.prompt + record.response, record.system or None,
                                      record.tools or None, discard_history_cot=discard_history_cot)
    # a model's own chat template may render text after the last turn (Phi-3.5's <|endoftext|>): kept, not trained
    tail = pairs.pop()[0] if pairs and pairs[-1][1] is None else []
    eos = tokenizer.eos_token_id if template.efficient_eos else None
    input_ids: list[int] = []
    labels: list[int] = []
    total_length = 1 if template.efficient_eos else 0
    if mask_history:
        pairs = pairs[::-1]  # high priority for the last turns
    for turn_idx, (source_ids, target_ids) in enumerate(pairs):
        if total_length >= cutoff_len:
            break
        source_len, target_len = infer_seqlen(len(source_ids), len(target_ids), cutoff_len - total_length)
        source_ids, target_ids = source_ids[:source_len], target_ids[:target_len]
        total_length += source_len + target_len
        if train_on_prompt:
            source_label = source_ids
        elif template.efficient_eos and turn_idx != 0 and source_len > 0:
            source_label = [eos] + [IGNORE_INDEX] * (source_len - 1)  # the previous answer's eos sits here
        else:
            source_label = [IGNORE_INDEX] * source_len
        target_label = [IGNORE_INDEX] * target_len if (mask_history and turn_idx != 0) else target_ids
        if mask_history:
            input_ids = source_ids + target_ids + input_ids
            labels = source_label + target_label + labels
        else:
            input_ids += source_ids + target_ids
            labels += source_label + target_label
    if template.efficient_eos:
        input_ids.append(eos)
        labels.append(eos)
    tail = tail[:max(0, cutoff_len - len(input_ids))]
    input_ids, labels = input_ids + tail, labels + [IGNORE_INDEX] * len(tail)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids)}


def encode_pairwise(record: AlignedRecord, template, tokenizer, cutoff_len: int) -> dict:
    """chosen_* / rejected_* inputs from one prompt and (chosen, rejected) responses, sharing one truncation."""
    _check_prompt(record)
    if len(record.response) < 2:
        raise DataError(f"invalid example{_where(record)}: ranking needs (chosen, rejected) responses")
    system, tools = record.system or None, record.tools or None
    prompt_ids, chosen_ids = template.encode_oneturn(tokenizer, record.prompt + [record.response[0]], system, tools)
    _, rejected_ids = template.encode_oneturn(tokenizer, record.prompt + [record.response[1]], system, tools)
    if template.efficient_eos:
        chosen_ids = chosen_ids + [tokenizer.eos_token_id]
        rejected_ids = rejected_ids + [tokenizer.eos_token_id]
    source_len, target_len = infer_seqlen(len(prompt_ids), max(len(chosen_ids), len(rejected_ids)), cutoff_len)
    prompt_ids, chosen_ids, rejected_ids = prompt_ids[:source_len], chosen_ids[:target_len], rejected_ids[:target_len]
    out = {}
    for name, ids in (("chosen", chosen_ids), ("rejected", rejected_ids)):
        out[f"{name}_input_ids"] = prompt_ids + ids
        out[f"{name}_attention_mask"] = [1] * (source_len + len(ids))
        out[f"{name}_labels"] = [IGNORE_INDEX] * source_len + ids
    return out


def encode_unsupervised(record: AlignedRecord, template, tokenizer, cutoff_len: int) -> dict:
    """The prompt as input_ids and the reference response (if any) as labels, for ppo and generation."""
    _check_prompt(record)
    response = record.response if len(record.response) == 1 else [{"role": ASSISTANT, "content": ""}]
    input_ids, labels = template.encode_oneturn(tokenizer, record.prompt + response, record.system or None,
                                                record.tools or None)
    if hasattr(template, "encode_prompt"):  # a model's own template: the generation prompt exactly as served
        input_ids = template.encode_prompt(tokenizer, record.prompt, record.system or None, record.tools or None)
    if template.efficient_eos:
        labels = labels + [tokenizer.eos_token_id]
    source_len, target_len = infer_seqlen(len(input_ids), len(labels), cutoff_len)
    input_ids, labels = input_ids[:source_len], labels[:target_len]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def encode_kto(record: AlignedRecord, kl_record: AlignedRecord, template, tokenizer, cutoff_len: int) -> dict:
    """input_ids/labels for the record's response and kl_* for its prompt with ``kl_record``'s response (LLaMA-Factory
    pairs each example with the previous one's response in its batch); ``kto_tags`` is the desirability."""
    _check_prompt(record)
    if len(record.response) != 1 or record.kto_tag is None or len(kl_record.response) != 1:
        raise DataError(f"invalid example{_where(record)}: kto needs one response and a kto_tag")
    system, tools = record.system or None, record.tools or None
    out = {}
    for prefix, response in (("", record.response[0]), ("kl_", kl_record.response[0])):
        prompt_ids, response_ids = template.encode_oneturn(tokenizer, record.prompt + [response], system, tools)
        if template.efficient_eos:
            response_ids = response_ids + [tokenizer.eos_token_id]
        source_len, target_len = infer_seqlen(len(prompt_ids), len(response_ids), cutoff_len)
        prompt_ids, response_ids = prompt_ids[:source_len], response_ids[:target_len]
        out[prefix + "input_ids"] = prompt_ids + response_ids
        out[prefix + "attention_mask"] = [1] * (source_len + target_len)
        out[prefix + "labels"] = [IGNORE_INDEX] * source_len + response_ids
    out["kto_tags"] = bool(record.kto_tag)
    return out


def encode_pretrain(texts: Sequence[str], tokenizer, cutoff_len: int, template=None, packing: bool = True,
                    batch_size: int = LF_BATCH_SIZE) -> list[dict]:
    """LLaMA-Factory's pt encoding: each text + eos (``<|end_of_text|>`` for llama3); with ``packing`` the texts of
    each batch of ``batch_size`` are concatenated and cut into cutoff_len blocks (the remainder of a batch is dropped)
    and, for tokenizers that add a bos, each block starts with it; without, each text is one truncated example."""
    name = getattr(template, "name", None)
    eos_token = "<|end_of_text|>" if name == "llama3" else tokenizer.eos_token
    add_bos = bool(getattr(tokenizer, "add_bos_token", False))
    encode = batch_text_encoder(tokenizer)
    out: list[dict] = []
    for start in range(0, len(texts), batch_size):
        batch = [text + eos_token for text in texts[start:start + batch_size]]
        if not packing:
            if add_bos:
                batch = [tokenizer.bos_token + text for text in batch]
            blocks = [ids[:cutoff_len] for ids in encode(batch)]
        else:
            ids = list(chain.from_iterable(encode(batch)))
            total = (len(ids) // cutoff_len) * cutoff_len
            blocks = [ids[i:i + cutoff_len] for i in range(0, total, cutoff_len)]
            if add_bos:
                for block in blocks:
                    block[0] = tokenizer.bos_token_id
        out += [{"input_ids": b, "attention_mask": [1] * len(b), "labels": list(b)} for b in blocks]
    return out


# ---------------------------------------------------------------- datasets
class EncodedDataset(list):
    """A list of encoded examples; ``dropped`` counts the records left out, by reason."""

    def __init__(self, items=(), dropped: Counter | None = None):
        super().__init__(items)
        self.dropped = dropped if dropped is not None else Counter()


def _trained(labels: list[int]) -> bool:
    return labels.count(IGNORE_INDEX) < len(labels)


def _record_texts(record: AlignedRecord, kind: str, template, options: dict) -> list[str]:
    """The texts encoding ``record`` will tokenize (none for pretrain, which batches its own texts, for kto or for
    templates that cannot tell)."""
    if not hasattr(template, "texts") or kind in ("pretrain", "kto"):
        return []
    system, tools = record.system or None, record.tools or None
    try:
        if kind == "supervised":
            return template.texts(record.prompt + record.response, system, tools,
                                  discard_history_cot=options["discard_history_cot"])
        if kind == "pairwise":
            return [t for response in record.response[:2]
                    for t in template.texts(record.prompt + [response], system, tools, multiturn=False)]
        response = record.response if len(record.response) == 1 else [{"role": ASSISTANT, "content": ""}]
        return template.texts(record.prompt + response, system, tools, multiturn=False)
    except DataError:  # reported (and the record dropped) when it is encoded
        return []


def _chunk_tokens(records: list[AlignedRecord], kind: str, template, tokenizer, options: dict) -> dict:
    """{text: ids} of every text the chunk's records will tokenize, from one batched call."""
    return tokenize_texts(tokenizer, [t for record in records for t in _record_texts(record, kind, template, options)])


def _encode_chunk(records: list[AlignedRecord], kind: str, template, tokenizer, cutoff_len: int,
                  options: dict, memo: dict | None = None) -> tuple[list[dict], Counter]:
    """Encode one chunk: its texts are tokenized in one batched call first (unless ``memo`` holds them already),
    then each record is put together."""
    if memo is None:
        memo = _chunk_tokens(records, kind, template, tokenizer, options)
    with token_cache(tokenizer, memo):
        return _encode_records(records, kind, template, tokenizer, cutoff_len, options)


def _encode_records(records, kind, template, tokenizer, cutoff_len, options) -> tuple[list[dict], Counter]:
    dropped: Counter = Counter()
    if kind == "pretrain":
        texts = []
        for record in records:
            if not record.prompt:
                dropped["no text"] += 1
            else:
                texts.append(record.prompt[0]["content"])
        return encode_pretrain(texts, tokenizer, cutoff_len, template, packing=options["packing"],
                               batch_size=len(records) or 1), dropped
    out = []
    for i, record in enumerate(records):
        try:
            if kind == "supervised":
                example = encode_supervised(record, template, tokenizer, cutoff_len, options["train_on_prompt"],
                                            options["mask_history"], options["discard_history_cot"])
                keep = _trained(example["labels"])
            elif kind == "pairwise":
                example = encode_pairwise(record, template, tokenizer, cutoff_len)
                keep = _trained(example["chosen_labels"]) and _trained(example["rejected_labels"])
            elif kind == "unsupervised":
                example = encode_unsupervised(record, template, tokenizer, cutoff_len)
                keep = len(example["input_ids"]) > 0
            else:  # kto: the KL response is the previous record's in the same batch (the last one's for the first)
                example = encode_kto(record, records[i - 1], template, tokenizer, cutoff_len)
                keep = _trained(example["labels"])
        except DataError as err:
            reason = str(err)
            if reason.startswith("invalid example") and ": " in reason:
                reason = reason.split(": ", 1)[1]
            dropped["invalid: " + reason.strip()[:160]] += 1
            continue
        if keep:
            out.append(example)
        else:
            dropped["nothing to train on after truncation" if kind != "unsupervised" else "empty prompt"] += 1
    return out, dropped


def quiet_worker_signals() -> None:
    import signal

    # Ctrl-C reaches the whole process group: the parent alone handles it (and ends the workers), so no worker prints
    # a traceback; SIGTERM (what ending them sends) kills a worker at once, even one blocked writing to its pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def map_in_pool(context, workers: int, func, chunks: list, initializer, initargs: tuple) -> list:
    """``func`` over ``chunks`` in ``workers`` processes, in order (``initializer`` must call
    :func:`quiet_worker_signals`). Ctrl-C reaches the whole process group, so
    the workers ignore it (while they start, a handler that only takes note of it) and the parent alone handles it:
    the first Ctrl-C or SIGTERM ends every worker at once and then propagates; further presses while that happens are
    swallowed, so the clean-up always completes and no worker outlives the parent. A worker killed from outside (out
    of memory) is one line."""
    import signal
    import threading
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    main = threading.current_thread() is threading.main_thread()
    stops = (signal.SIGINT, signal.SIGTERM) if main else ()
    previous = {s: signal.getsignal(s) for s in stops}
    stopping = []

    def first_only(signum, frame):
        if stopping:
            return
        stopping.append(signum)
        handler = previous.get(signum)
        if callable(handler):
            handler(signum, frame)  # Ctrl-C's KeyboardInterrupt, the CLI's SIGTERM exception
        raise KeyboardInterrupt

    pending = []

    def defer(signum, frame):  # while the first submit forks the workers: they inherit this harmless handler
        pending.append(signum)

    others = {p.pid for p in multiprocessing.active_children()}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer, initargs=initargs)
    try:
        for s in stops:
            signal.signal(s, defer)
        futures = [pool.submit(func, chunks[0])]
        for s in stops:
            signal.signal(s, first_only)
        if pending:  # pressed while the workers were starting
            first_only(pending[0], None)
        futures += [pool.submit(func, chunk) for chunk in chunks[1:]]
        parts = [future.result() for future in futures]
    except BaseException as err:
        stopping.append(None)  # a signal during the clean-up is swallowed
        for process in multiprocessing.active_children():  # the pool's workers, even one blocked on its pipe
            if process.pid not in others:
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        if isinstance(err, BrokenProcessPool):
            raise DataError(f"a preprocessing worker was killed from outside (out of memory?) while encoding — "
                            f"lower preprocessing_num_workers (now {workers}) or free memory") from None
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return parts


def encoding_plan(stage: str, template, cutoff_len: int, *, train_on_prompt: bool = False,
                  mask_history: bool = False, packing: bool = True,
                  discard_history_cot: bool = False) -> tuple[str, dict]:
    """The encoder kind of ``stage`` and its options, after the checks every encoding path shares."""
    if stage not in STAGE_ENCODERS:
        raise ConfigError(f"unknown stage '{stage}'{did_you_mean(stage, STAGE_ENCODERS)}; "
                          f"available: {', '.join(STAGE_ENCODERS)}")
    if cutoff_len <= 0:
        raise ConfigError(f"cutoff_len must be positive, got {cutoff_len}")
    kind = STAGE_ENCODERS[stage]
    if kind == "supervised" and train_on_prompt and template.efficient_eos:
        raise ConfigError(f"template '{template.name}' does not support train_on_prompt (it uses efficient_eos)")
    return kind, {"train_on_prompt": train_on_prompt, "mask_history": mask_history, "packing": packing,
                  "discard_history_cot": discard_history_cot}


def chunk_bounds(kind: str, n_records: int, chunk_size: int) -> list[tuple[int, int]]:
    """(start, end) of each chunk: pt and kto follow LLaMA-Factory's batches of 1000 records (so that results do not
    depend on the number of workers), the others ``chunk_size``."""
    size = LF_BATCH_SIZE if kind in ("pretrain", "kto") else max(1, chunk_size)
    return [(i, min(i + size, n_records)) for i in range(0, n_records, size)]


def chunk_text_bound(kind: str, options: dict, tokenizer, cutoff_len: int) -> int | None:
    """The characters a message may keep before tokenizing (:func:`text_bound`); None for packed pre-training,
    which uses every token of a text."""
    return None if kind == "pretrain" and options["packing"] else text_bound(tokenizer, cutoff_len)
