"""Token encoders: masks, truncation (infer_seqlen), train_on_prompt, mask_history, efficient_eos, datasets."""

from __future__ import annotations

import pytest

from tunery.data.encode import (
    encode_kto,
    encode_pairwise,
    encode_pretrain,
    encode_supervised,
    encode_unsupervised,
    infer_seqlen,
)
from tunery.data.encoded import encode_dataset
from tunery.data.records import IGNORE_INDEX, AlignedRecord
from tunery.data.templates import Template, get_template
from tunery.errors import ConfigError

IGN = IGNORE_INDEX
# One token each in the tiny Llama-3 vocabulary, so sequence lengths are exact by construction.
R = [f"<|reserved_special_token_{i}|>" for i in range(3)] + ["<|python_tag|>"]


@pytest.fixture(scope="module")
def tok(tiny_llama3_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    get_template("llama3").fix_tokenizer(tokenizer)
    return tokenizer


@pytest.fixture(scope="module")
def ids(tok):
    return [tok.convert_tokens_to_ids(t) for t in R]


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def rec(*turns, system="", source="t[0]"):
    """A record from alternating user/assistant texts (the last one is the response)."""
    messages = [user(t) if i % 2 == 0 else bot(t) for i, t in enumerate(turns)]
    return AlignedRecord(prompt=messages[:-1], response=messages[-1:], system=system, source=source)


EMPTY = get_template("empty")  # user: content, assistant: content -> lengths are the texts' token counts
EFFICIENT = Template(name="efficient", efficient_eos=True)  # same slots, eos added once at the end


# ---------------------------------------------------------------- infer_seqlen
@pytest.mark.parametrize(
    "source, target, cutoff, expected",
    [
        (10, 5, 100, (10, 5)),  # fits
        (100, 20, 50, (30, 20)),  # short target kept whole, source cut
        (10, 100, 50, (10, 40)),  # short source kept whole, target cut
        (60, 40, 50, (30, 20)),  # both cut in proportion: int(50 * 40 / 100) = 20
        (30, 30, 10, (5, 5)),
        (0, 0, 10, (0, 0)),
        (7, 3, 0, (0, 0)),
    ],
)
def test_infer_seqlen(source, target, cutoff, expected):
    assert infer_seqlen(source, target, cutoff) == expected


# ---------------------------------------------------------------- supervised
def test_single_turn_masks_prompt(tok):
    template = get_template("llama3")
    record = rec("What is 2+2?", "4", system="Be brief.")
    out = encode_supervised(record, template, tok, cutoff_len=1024)
    prompt, response = template.encode_oneturn(tok, record.prompt + record.response, "Be brief.")
    assert out["input_ids"] == prompt + response
    assert out["labels"] == [IGN] * len(prompt) + response
    assert out["attention_mask"] == [1] * len(prompt + response)
    assert response[-1] == tok.convert_tokens_to_ids("<|eot_id|>")  # the answer is trained through its eot


def test_multi_turn_trains_every_assistant_turn(tok):
    template = get_template("llama3")
    record = rec("first question", "first answer", "second question", "second answer")
    out = encode_supervised(record, template, tok, cutoff_len=1024)
    pairs = template.encode_multiturn(tok, record.prompt + record.response)
    expected_labels = []
    for source, target in pairs:
        expected_labels += [IGN] * len(source) + target
    assert out["labels"] == expected_labels
    trained = tok.decode([t for t in out["labels"] if t != IGN])
    assert trained == "first answer<|eot_id|>second answer<|eot_id|>"


def test_truncation_follows_infer_seqlen(tok, ids):
    r0, r1, r2, r3 = ids
    # one turn: (30, 10) under 25 -> (15, 10)
    out = encode_supervised(rec(R[0] * 30, R[1] * 10), EMPTY, tok, cutoff_len=25)
    assert out["input_ids"] == [r0] * 15 + [r1] * 10
    assert out["labels"] == [IGN] * 15 + [r1] * 10
    # two turns (30, 10), (4, 6) under 45: the first fits (40), the second gets (2, 3) of the 5 left
    record = rec(R[0] * 30, R[1] * 10, R[2] * 4, R[3] * 6)
    out = encode_supervised(record, EMPTY, tok, cutoff_len=45)
    assert out["input_ids"] == [r0] * 30 + [r1] * 10 + [r2] * 2 + [r3] * 3
    assert out["labels"] == [IGN] * 30 + [r1] * 10 + [IGN] * 2 + [r3] * 3
    # the budget is spent: later turns are dropped
    out = encode_supervised(record, EMPTY, tok, cutoff_len=40)
    assert out["input_ids"] == [r0] * 30 + [r1] * 10


def test_train_on_prompt(tok, ids):
    out = encode_supervised(rec(R[0] * 3, R[1] * 2, R[2], R[3]), EMPTY, tok, cutoff_len=100, train_on_prompt=True)
    assert out["labels"] == out["input_ids"]
    with pytest.raises(ConfigError, match="train_on_prompt"):
        encode_supervised(rec("a", "b"), EFFICIENT, tok, cutoff_len=100, train_on_prompt=True)


def test_mask_history_trains_last_turn_and_keeps_it_first(tok, ids):
    r0, r1, r2, r3 = ids
    record = rec(R[0] * 30, R[1] * 10, R[2] * 4, R[3] * 6)
    out = encode_supervised(record, EMPTY, tok, cutoff_len=1000, mask_history=True)
    assert out["input_ids"] == [r0] * 30 + [r1] * 10 + [r2] * 4 + [r3] * 6
    assert out["labels"] == [IGN] * 44 + [r3] * 6
    # the last turn is budgeted first: (4, 6) fits, the first turn gets (25, 10) of the 35 left
    out = encode_supervised(record, EMPTY, tok, cutoff_len=45, mask_history=True)
    assert out["input_ids"] == [r0] * 25 + [r1] * 10 + [r2] * 4 + [r3] * 6
    assert out["labels"] == [IGN] * 39 + [r3] * 6


def test_efficient_eos_placement(tok, ids):
    r0, r1, r2, r3 = ids
    eos = tok.eos_token_id
    record = rec(R[0] * 3, R[1] * 2, R[2] * 2, R[3] * 2)
    out = encode_supervised(record, EFFICIENT, tok, cutoff_len=100)
    # no eos after the first answer's tokens: the next prompt's first label is eos instead; one eos at the end
    assert out["input_ids"] == [r0] * 3 + [r1] * 2 + [r2] * 2 + [r3] * 2 + [eos]
    assert out["labels"] == [IGN] * 3 + [r1] * 2 + [eos, IGN] + [r3] * 2 + [eos]
    # the final eos is reserved in the budget: (3, 2) -> 1 + 5, then 4 left for (2, 2)
    out = encode_supervised(record, EFFICIENT, tok, cutoff_len=8)
    assert len(out["input_ids"]) == 8
    assert out["input_ids"] == [r0] * 3 + [r1] * 2 + [r2] + [r3] + [eos]


def test_glm4_efficient_eos_labels(tok):
    template = get_template("glm4")
    out = encode_supervised(rec("q1", "a1", "q2", "a2"), template, tok, cutoff_len=1000)
    pairs = template.encode_multiturn(tok, rec("q1", "a1", "q2", "a2").prompt + [bot("a2")])
    (s0, t0), (s1, t1) = pairs
    eos = tok.eos_token_id
    assert out["input_ids"] == s0 + t0 + s1 + t1 + [eos]
    assert out["labels"] == [IGN] * len(s0) + t0 + [eos] + [IGN] * (len(s1) - 1) + t1 + [eos]


# ---------------------------------------------------------------- other stages
def test_pairwise(tok, ids):
    r0, r1, r2, _ = ids
    record = AlignedRecord(prompt=[user(R[0] * 30)], response=[bot(R[1] * 10), bot(R[2] * 4)])
    out = encode_pairwise(record, EMPTY, tok, cutoff_len=25)
    # infer_seqlen(30, max(10, 4), 25) = (15, 10)
    assert out["chosen_input_ids"] == [r0] * 15 + [r1] * 10
    assert out["chosen_labels"] == [IGN] * 15 + [r1] * 10
    assert out["rejected_input_ids"] == [r0] * 15 + [r2] * 4
    assert out["rejected_labels"] == [IGN] * 15 + [r2] * 4
    assert out["rejected_attention_mask"] == [1] * 19


def test_unsupervised(tok):
    template = get_template("llama3")
    record = rec("q", "a")
    out = encode_unsupervised(record, template, tok, cutoff_len=1024)
    prompt, response = template.encode_oneturn(tok, record.prompt + record.response)
    assert out["input_ids"] == prompt and out["labels"] == response
    no_answer = AlignedRecord(prompt=[user("q")], response=[])
    assert encode_unsupervised(no_answer, template, tok, cutoff_len=1024)["input_ids"] == prompt


def test_kto_uses_previous_response_for_kl(tok, ids):
    r0, r1, r2, _ = ids
    a = AlignedRecord(prompt=[user(R[0])], response=[bot(R[1] * 2)], kto_tag=True)
    b = AlignedRecord(prompt=[user(R[0])], response=[bot(R[2])], kto_tag=False)
    out = encode_kto(b, a, EMPTY, tok, cutoff_len=100)
    assert out["input_ids"] == [r0, r2] and out["labels"] == [IGN, r2]
    assert out["kl_input_ids"] == [r0, r1, r1] and out["kl_labels"] == [IGN, r1, r1]
    assert out["kto_tags"] is False
    data = encode_dataset([a, b], "kto", EMPTY, tok, cutoff_len=100)
    assert data[0]["kl_input_ids"] == [r0, r2]  # the first record pairs with the last of its batch
    assert data[1]["kl_input_ids"] == [r0, r1, r1]


def test_pretrain_packing(tok):
    texts = ["hello world", "a second text", "third"]
    eot = tok.convert_tokens_to_ids("<|end_of_text|>")
    stream = []
    for text in texts:
        stream += tok.encode(text, add_special_tokens=False) + [eot]  # llama3 ends pt texts with <|end_of_text|>
    blocks = encode_pretrain(texts, tok, cutoff_len=4, template=get_template("llama3"))
    assert [b["input_ids"] for b in blocks] == [stream[i:i + 4] for i in range(0, len(stream) // 4 * 4, 4)]
    unpacked = encode_pretrain(texts, tok, cutoff_len=3, template=get_template("llama3"), packing=False)
    assert len(unpacked) == 3 and all(len(b["input_ids"]) <= 3 for b in unpacked)
    # other templates use the tokenizer's eos
    qwenish = encode_pretrain(["hi"], tok, cutoff_len=100, template=EMPTY, packing=False)
    assert qwenish[0]["input_ids"][-1] == tok.eos_token_id


def test_pretrain_bos_replaces_first_token(tok):
    class WithBos:
        add_bos_token = True

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

    wrapped = WithBos(tok)
    blocks = encode_pretrain(["some words here and there"] * 3, wrapped, cutoff_len=5, template=EMPTY)
    assert blocks and all(b["input_ids"][0] == tok.bos_token_id for b in blocks)


# ---------------------------------------------------------------- datasets
def test_encode_dataset_drops_and_counts(tok):
    records = [
        rec("q", "a", source="d[0]"),
        AlignedRecord(prompt=[user("q"), bot("a")], response=[bot("b")], source="d[1]"),  # even prompt: invalid
        rec("q", "", source="d[2]"),  # nothing to train on with the empty template
        rec("q2", "a2", source="d[3]"),
    ]
    data = encode_dataset(records, "sft", EMPTY, tok, cutoff_len=100)
    assert len(data) == 2
    assert sum(data.dropped.values()) == 2
    assert any(reason.startswith("invalid") for reason in data.dropped)
    assert data.dropped["nothing to train on after truncation"] == 1
    with pytest.raises(ConfigError, match="unknown stage"):
        encode_dataset(records, "sfft", EMPTY, tok, cutoff_len=100)


def test_encode_dataset_parallel_matches_serial(tok):
    template = get_template("llama3")
    records = [rec(f"question {i}", f"answer {i} " * (i % 7), "next", f"end {i}") for i in range(60)]
    serial = encode_dataset(records, "sft", template, tok, cutoff_len=24)
    parallel = encode_dataset(records, "sft", template, tok, cutoff_len=24, num_workers=2, chunk_size=7)
    assert list(parallel) == list(serial)
    assert parallel.dropped == serial.dropped


@pytest.mark.parametrize("stage", ["sft", "rm", "ppo"])
def test_batched_tokenization_equals_one_text_at_a_time(tok, stage):
    """encode_dataset tokenizes each chunk's texts in one batched call; the examples are those of encoding every
    record alone (no prefetch), invalid records included."""
    from tunery.data.templates.template import batch_text_encoder, text_encoder, tokenize_texts

    template = get_template("qwen")  # Token elements, a default system prompt, multi-turn
    records = [rec(f"问题 {i}：" + "多轮对话" * (i % 5), f"answer {i} " * (i % 7), "next", f"结束 {i}")
               for i in range(40)]
    records[3] = AlignedRecord(prompt=[user("q"), bot("a")], response=[bot("b")], source="d[3]")  # invalid
    if stage == "rm":
        records = [AlignedRecord(prompt=r.prompt, response=[r.response[0], bot("worse")], source=r.source)
                   for r in records]
    batched = encode_dataset(records, stage, template, tok, cutoff_len=40, chunk_size=16)
    encoder = {"sft": encode_supervised, "rm": encode_pairwise, "ppo": encode_unsupervised}[stage]
    alone = []
    for r in records:
        try:
            alone.append(encoder(r, template, tok, 40))
        except Exception:
            continue
    assert list(batched) == alone and len(alone) == 39

    texts = ["héllo wörld", "  two  spaces", "中文", ""]
    assert batch_text_encoder(tok)(texts) == [text_encoder(tok)(t) for t in texts]
    assert tokenize_texts(tok, texts + texts[:2]) == {t: tok.encode(t, add_special_tokens=False) for t in texts if t}
