"""The models' own chat templates on their real vocabularies (llama.cpp's ggml-vocab-*.gguf + official Jinja).

For each family: the converted tokenizer gives llama.cpp's reference ids for its test texts; with ``template:
tokenizer`` a conversation's input_ids are exactly ``apply_chat_template`` of it, and the trained tokens are exactly
each assistant turn's content and its end-of-turn text.
"""

from __future__ import annotations

import json

import pytest

from llama_cpp_material import FAMILIES, family_tokenizer, llama_cpp_material, vocab_cases  # noqa: F401
from tunery.data.encode import encode_supervised
from tunery.data.records import IGNORE_INDEX, AlignedRecord
from tunery.data.templates import TokenizerTemplate, to_hf_messages
from tunery.data.templates.tokenizer_template import openai_tools
from tunery.errors import DataError

# texts where transformers' conversion of the .gguf vocabulary differs from llama.cpp's reference ids
KNOWN_VOCAB_DIFFERENCES = {"llama-bpe": 1, "llama-spm": 15}  # a Vietnamese word; whitespace-only texts (prefix space)

PROMPT = [{"role": "user", "content": "Hi there"},
          {"role": "assistant", "content": "<think>\nA greeting.\n</think>\n\nHello! How can I help?"},
          {"role": "user", "content": "你好，今天天气怎么样？"}, {"role": "assistant", "content": "It is sunny.\nEnjoy."},
          {"role": "user", "content": "Write code:\n  def f(x): return x"}]
RESPONSE = [{"role": "assistant", "content": "def f(x):\n    return x"}]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, llama_cpp_material):  # noqa: F811
    vocab, _, eot = FAMILIES[request.param]
    return request.param, vocab, family_tokenizer(llama_cpp_material, request.param), eot


def test_vocabulary_matches_llama_cpp(family, llama_cpp_material):  # noqa: F811
    _, vocab, tok, _ = family
    bad = [text for text, ids in vocab_cases(llama_cpp_material, vocab) if tok.encode(text, add_special_tokens=False) != ids]
    assert len(bad) == KNOWN_VOCAB_DIFFERENCES.get(vocab, 0), bad


@pytest.mark.parametrize("system", [None, "You are terse."])
def test_own_template_ids_and_labels(family, system):
    name, _, tok, eot = family
    template = TokenizerTemplate(tok)
    messages = ([{"role": "system", "content": system}] if system else []) + PROMPT + RESPONSE
    expected = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    record = AlignedRecord(prompt=PROMPT, response=RESPONSE, system=system or "", tools="")
    example = encode_supervised(record, template, tok, cutoff_len=4096)
    assert example["input_ids"] == expected
    runs, run = [], []
    for i, label in zip(example["input_ids"], example["labels"]):
        if label != IGNORE_INDEX:
            assert label == i
            run.append(i)
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    trained = [tok.decode(r) for r in runs]
    answers = [m["content"] for m in PROMPT + RESPONSE if m["role"] == "assistant"]
    assert len(trained) == len(answers), trained
    for text, answer in zip(trained, answers):
        final = answer.split("</think>")[-1].strip()
        assert text.rstrip().endswith(final + eot.rstrip()) or text.endswith(final + eot), (name, text)
        assert "Hi there" not in text and "Write code" not in text
    assert template.stop_token_ids(tok)[-1] == tok.convert_tokens_to_ids(eot.strip()) or eot.strip() not in tok.get_vocab()


TOOLS = json.dumps([{"name": "get_weather", "description": "Weather of a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "description": "a city"}}, "required": ["city"]}}])
TOOL_PROMPT = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "function", "content": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
               {"role": "observation", "content": '{"temperature": 21}'}]
TOOL_RESPONSE = [{"role": "assistant", "content": "It is 21 degrees."}]
# measured: templates without a tool-call format say so (the record is dropped with that reason)
NO_TOOL_CALLS = {"llama2": "roles must alternate", "command-r": "roles must alternate",
                 "deepseek-r1-distill-llama": "without the function's name", "phi3.5": "without the function's name"}


def test_own_template_tools(family):
    """Tools in OpenAI format: ids are apply_chat_template's, the call and the answer are trained (each up to where
    the template ends it: Gemma 4 keeps call, tool response and answer in one turn), the tool's output is not."""
    name, _, tok, _ = family
    template = TokenizerTemplate(tok)
    record = AlignedRecord(prompt=TOOL_PROMPT, response=TOOL_RESPONSE, system="", tools=TOOLS)
    if name in NO_TOOL_CALLS:
        with pytest.raises(DataError, match=NO_TOOL_CALLS[name]) as err:
            encode_supervised(record, template, tok, cutoff_len=4096)
        assert "\n" not in str(err.value)
        return
    example = encode_supervised(record, template, tok, cutoff_len=4096)
    hf = to_hf_messages(TOOL_PROMPT + TOOL_RESPONSE)
    text = tok.apply_chat_template(hf, tools=openai_tools(TOOLS), tokenize=False)
    assert example["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    trained = tok.decode([i for i, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX])
    assert "get_weather" in trained and "Paris" in trained and "21 degrees." in trained
    assert "temperature" not in trained and "Weather in Paris" not in trained
