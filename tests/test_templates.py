"""Chat templates: renders and token ids against the models' official Jinja chat templates."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tunery.data.templates import (
    TEMPLATES,
    Template,
    TokenizerTemplate,
    get_template,
    template_names,
    text_encoder,
    to_hf_messages,
)
from tunery.errors import ConfigError, DataError

JINJA_DIR = Path(__file__).parent / "data" / "jinja"

SINGLE = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi! How can I help?"}]
WITH_SYSTEM = [{"role": "system", "content": "You are a terse assistant."}] + SINGLE
HISTORY = SINGLE + [
    {"role": "user", "content": "你好，今天天气怎么样？"},
    {"role": "assistant", "content": "It is sunny.\nEnjoy it."},
    {"role": "user", "content": "Thanks. Write code:\n  def f(x): return x"},
    {"role": "assistant", "content": "def f(x):\n    return x"},
]
HISTORY_WITH_SYSTEM = [{"role": "system", "content": "Answer briefly."}] + HISTORY
CONVERSATIONS = {"single": SINGLE, "system": WITH_SYSTEM, "history": HISTORY, "history_system": HISTORY_WITH_SYSTEM}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "the city"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Beijing?"},
    {"role": "function", "content": json.dumps({"name": "get_weather", "arguments": {"city": "Beijing"}})},
    {"role": "observation", "content": '{"temperature": 25}'},
    {"role": "assistant", "content": "It is 25 degrees."},
]


def load(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def llama3_tok(tiny_llama3_dir):
    tok = load(tiny_llama3_dir)
    get_template("llama3").fix_tokenizer(tok)
    return tok


@pytest.fixture(scope="module")
def qwen_tok(tiny_qwen_dir):
    tok = load(tiny_qwen_dir)
    get_template("qwen").fix_tokenizer(tok)
    return tok


def split(messages):
    """(system, messages) the way a dataset record holds them."""
    if messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return None, messages


def official_ids(tok, messages, **kw):
    return tok.encode(tok.apply_chat_template(messages, tokenize=False, **kw), add_special_tokens=False)


# ---------------------------------------------------------------- llama3 / qwen against the official templates
@pytest.mark.parametrize("family", ["llama3", "qwen"])
@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_render_and_ids_match_official_jinja(family, case, request):
    tok = request.getfixturevalue(f"{family}_tok")
    template = get_template(family)
    messages = CONVERSATIONS[case]
    system, body = split(messages)

    # the whole conversation
    assert template.render(messages, tokenizer=tok) == tok.apply_chat_template(messages, tokenize=False)
    prompt, response = template.encode_oneturn(tok, body, system)
    assert prompt + response == official_ids(tok, messages)
    pairs = template.encode_multiturn(tok, body, system)
    assert [i for p, r in pairs for i in p + r] == prompt + response
    # the last response alone is what the official template adds after the generation prompt
    generation = official_ids(tok, messages[:-1], add_generation_prompt=True)
    assert prompt == generation
    assert template.render(messages[:-1], add_generation_prompt=True, tokenizer=tok) == tok.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )


def test_render_without_tokenizer_uses_declared_tokens(llama3_tok):
    template = get_template("llama3")
    assert template.render(WITH_SYSTEM) == template.render(WITH_SYSTEM, tokenizer=llama3_tok)
    with pytest.raises(ConfigError, match="tokenizer"):
        get_template("default").render(SINGLE)


def test_llama3_official_trims_content_lf_does_not(llama3_tok):
    """Known difference, kept on purpose: LLaMA-Factory's llama3 template does not trim message content."""
    messages = [{"role": "user", "content": " padded "}, {"role": "assistant", "content": "x"}]
    ours = get_template("llama3").render(messages, tokenizer=llama3_tok)
    assert "\n\n padded <|eot_id|>" in ours
    assert "\n\npadded<|eot_id|>" in llama3_tok.apply_chat_template(messages, tokenize=False)


def test_qwen_tools_function_and_observation_match_official(qwen_tok):
    template = get_template("qwen")
    tools = json.dumps(TOOLS)
    hf = to_hf_messages(TOOL_CONVERSATION)
    official = qwen_tok.apply_chat_template(hf, tools=TOOLS, tokenize=False)
    assert template.render(TOOL_CONVERSATION, tools=tools, tokenizer=qwen_tok) == official
    prompt, response = template.encode_oneturn(qwen_tok, TOOL_CONVERSATION, tools=tools)
    assert prompt + response == qwen_tok.encode(official, add_special_tokens=False)
    # with a system prompt the tool text follows it
    official_sys = qwen_tok.apply_chat_template([{"role": "system", "content": "Be nice."}] + hf, tools=TOOLS,
                                                tokenize=False)
    assert template.render(TOOL_CONVERSATION, system="Be nice.", tools=tools, tokenizer=qwen_tok) == official_sys


def test_parallel_function_calls_qwen(qwen_tok):
    calls = [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": "é"}}]
    messages = [{"role": "user", "content": "go"}, {"role": "function", "content": json.dumps(calls)}]
    official = qwen_tok.apply_chat_template(to_hf_messages(messages), tokenize=False)
    assert get_template("qwen").render(messages, tokenizer=qwen_tok) == official
    assert '{"name": "b", "arguments": {"y": "é"}}' in official


def test_default_tool_format_text():
    template = get_template("default")
    text = template.render([{"role": "user", "content": "q"}], tools=json.dumps(TOOLS), tokenizer=_FakeSpecials())
    assert text.startswith("System: You have access to the following tools:\n> Tool Name: get_weather\n")
    assert "  - city (string, required): the city\n" in text
    assert "Action: tool name (one of [get_weather])" in text
    fn = template.render([{"role": "user", "content": "q"}, {"role": "function", "content": json.dumps(
        {"name": "get_weather", "arguments": {"city": "Paris"}})}], tokenizer=_FakeSpecials())
    assert fn.endswith('Action: get_weather\nAction Input: {"city": "Paris"}</s>\n')
    with pytest.raises(DataError, match="not valid JSON"):
        template.render([{"role": "user", "content": "q"}], tools="[{oops", tokenizer=_FakeSpecials())


class _FakeSpecials:
    bos_token, bos_token_id, eos_token, eos_token_id = "<s>", 1, "</s>", 2


# ---------------------------------------------------------------- default / empty: to_jinja == render
@pytest.mark.parametrize("name", ["default", "empty", "alpaca", "vicuna", "baichuan2", "llama2", "mistral", "glm4",
                                  "chatglm3", "deepseek", "phi", "yi", "gemma", "qwen", "llama3", "qwen3_nothink", "qwen3"])
@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_to_jinja_renders_like_render(name, case, llama3_tok):
    tok = copy.deepcopy(llama3_tok)
    template = get_template(name)
    tok.chat_template = template.to_jinja(tok)
    messages = CONVERSATIONS[case]
    assert tok.apply_chat_template(messages, tokenize=False) == template.render(messages, tokenizer=tok)
    assert tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True) == template.render(
        messages[:-1], add_generation_prompt=True, tokenizer=tok)


def test_to_jinja_escapes_quotes_and_backslashes(llama3_tok):
    tok = copy.deepcopy(llama3_tok)
    template = get_template("default").replace(default_system="It's a \\test\\ with 'quotes'\r\n.")
    tok.chat_template = template.to_jinja(tok)
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert tok.apply_chat_template(messages, tokenize=False) == template.render(messages, tokenizer=tok)
    assert "It's a \\test\\ with 'quotes'\r\n." in template.render(messages, tokenizer=tok)


def test_default_and_empty_slots(llama3_tok):
    text = get_template("default").render(WITH_SYSTEM, tokenizer=llama3_tok)
    assert text == ("System: You are a terse assistant.<|eot_id|>\nHuman: Hello there<|eot_id|>\nAssistant:"
                    "Hi! How can I help?<|eot_id|>\n")
    assert get_template("empty").render(WITH_SYSTEM) == "You are a terse assistant.Hello thereHi! How can I help?"


# ---------------------------------------------------------------- registry and tokenizer fixes
def test_unknown_template_error():
    with pytest.raises(ConfigError) as err:
        get_template("lama3")
    message = str(err.value)
    assert "\n" not in message and "did you mean 'llama3'" in message and "qwen" in message


def test_registry():
    names = template_names()
    for required in ("llama3", "qwen", "default", "empty", "llama2", "qwen3", "mistral", "gemma", "glm4", "chatglm3",
                     "deepseek", "yi", "baichuan2", "phi", "alpaca", "vicuna", "tokenizer"):
        assert required in names
    assert all(isinstance(t, Template) for t in TEMPLATES.values())
    assert TEMPLATES["qwen"].default_system == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    with pytest.raises(ConfigError, match="placeholder"):
        Template(name="bad", user="no placeholder")


def test_get_template_overrides():
    assert get_template("qwen", default_system="Hi.").default_system == "Hi."
    assert get_template("qwen3", enable_thinking=False).enable_thinking is False
    changed = get_template("qwen", tool_format="default")
    assert changed.tool_format == "default" and changed.function[0] == "{{content}}"
    assert get_template("qwen") is TEMPLATES["qwen"]  # the table entry is untouched


def test_fix_tokenizer_reuses_existing_tokens(tiny_llama3_dir, tiny_qwen_dir):
    tok = load(tiny_llama3_dir)
    size = len(tok)
    get_template("llama3").fix_tokenizer(tok)
    assert len(tok) == size and tok.eos_token == "<|eot_id|>" and tok.pad_token_id is not None
    eom = tok.convert_tokens_to_ids("<|eom_id|>")
    assert get_template("llama3").stop_token_ids(tok) == [tok.eos_token_id, eom]

    tok = load(tiny_qwen_dir)
    tok.add_special_tokens({"eos_token": "<|endoftext|>"})  # as a base (non-instruct) Qwen checkpoint
    size = len(tok)
    get_template("qwen").fix_tokenizer(tok)
    assert len(tok) == size and tok.eos_token == "<|im_end|>"


def test_fix_tokenizer_adds_missing_stop_words(tiny_llama3_dir):
    tok = load(tiny_llama3_dir)
    size = len(tok)
    get_template("chatml").fix_tokenizer(tok)  # <|im_end|>, <|im_start|> are not in a llama3 vocabulary
    assert len(tok) == size + 2 and tok.eos_token == "<|im_end|>"
    assert tok.encode("<|im_start|>", add_special_tokens=False) == [tok.convert_tokens_to_ids("<|im_start|>")]


def test_text_encoder_matches_encode(llama3_tok, qwen_tok):
    texts = ["", "Hello world", " leading", "trailing \n\n", "<|eot_id|>x<|start_header_id|>", "你好 <|im_end|>\n",
             "def f():\n\treturn 1", "  \n  "]
    for tok in (llama3_tok, qwen_tok):
        encode = text_encoder(tok)
        for text in texts:
            assert encode(text) == tok.encode(text, add_special_tokens=False), text


# ---------------------------------------------------------------- template: tokenizer
@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_tokenizer_template_matches_named_template(case, qwen_tok, llama3_tok):
    """The whole conversation is the official rendering; each trained span is the turn's content and its
    end-of-turn token (Qwen's newline after <|im_end|> belongs to the next turn, untrained)."""
    messages = CONVERSATIONS[case]
    system, body = split(messages)
    for tok, name, eot in ((qwen_tok, "qwen", "<|im_end|>"), (llama3_tok, "llama3", "<|eot_id|>")):
        ours = TokenizerTemplate().encode_multiturn(tok, body, system)
        named = get_template(name).encode_multiturn(tok, body, system)
        flat = [i for p, r in ours for i in p + (r or [])]
        assert flat == [i for p, r in named for i in p + r] == official_ids(tok, messages)
        targets = [tok.decode(r) for p, r in ours if r is not None]
        assert targets == [m["content"] + eot for m in body if m["role"] == "assistant"]
        assert get_template("tokenizer", tokenizer=tok).render(messages) == tok.apply_chat_template(
            messages, tokenize=False)


def test_tokenizer_template_tools(qwen_tok):
    tools = json.dumps(TOOLS)
    ours = TokenizerTemplate().encode_oneturn(qwen_tok, TOOL_CONVERSATION, tools=tools)
    theirs = get_template("qwen").encode_oneturn(qwen_tok, TOOL_CONVERSATION, tools=tools)
    assert ours[0] + ours[1] == theirs[0] + theirs[1]
    assert ours[0] == theirs[0]


def test_tokenizer_template_errors(llama3_tok):
    tok = copy.deepcopy(llama3_tok)
    tok.chat_template = None
    with pytest.raises(ConfigError, match="no chat template"):
        TokenizerTemplate().encode_oneturn(tok, SINGLE)
    tok.chat_template = "{% for m in messages %}{% if loop.last %}{{ m['content'] }}{% endif %}{% endfor %}"
    with pytest.raises(DataError, match="cannot find assistant turn 1 .* use a named template"):
        TokenizerTemplate().encode_multiturn(tok, HISTORY)
    tok.chat_template = "{{ raise_exception('only user and assistant roles are supported') }}"
    with pytest.raises(DataError, match=r"fails to render this conversation \(only user and assistant roles"):
        TokenizerTemplate().encode_multiturn(tok, SINGLE)


# ---------------------------------------------------------------- other families against their official Jinja
# Special tokens each family's official template needs, added to a copy of the tiny Llama-3 tokenizer.
FAMILY_TOKENS = {
    "llama2": ("<s>", "</s>", []),
    "mistral": ("<s>", "</s>", []),
    "gemma": ("<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    "phi": ("<s>", "<|endoftext|>", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]),
    "deepseek": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", []),
    "yi": ("<|startoftext|>", "<|im_end|>", ["<|im_start|>"]),
    "glm4": (None, "<|endoftext|>", ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]),
}


def official_template(family: str) -> str:
    text = (JINJA_DIR / f"{family}.jinja").read_text(encoding="utf-8")
    first, rest = text.split("\n", 1)
    assert first.startswith("{# source:")  # every stored template says where it came from
    return rest


@pytest.fixture(scope="module")
def family_tokenizers(tiny_llama3_dir):
    """family -> (official: tokenizer as shipped with its Jinja, ours: the same after template.fix_tokenizer)."""
    out = {}
    for family, (bos, eos, extra) in FAMILY_TOKENS.items():
        tok = load(tiny_llama3_dir)
        tokens = {"eos_token": eos, "extra_special_tokens": extra}
        if bos:
            tokens["bos_token"] = bos
        tok.add_special_tokens(tokens)
        tok.chat_template = official_template(family)
        ours = copy.deepcopy(tok)
        get_template(family).fix_tokenizer(ours)
        out[family] = (tok, ours)
    return out


def check_family(family, messages, tokenizers, generation: bool, ids: bool = True):
    official_tok, tok = tokenizers[family]
    template = get_template(family)
    shown = messages[:-1] if generation else messages
    official = official_tok.apply_chat_template(shown, tokenize=False, add_generation_prompt=generation)
    assert template.render(shown, add_generation_prompt=generation, tokenizer=tok) == official
    if ids:
        system, body = split(messages)
        prompt, response = template.encode_oneturn(tok, body, system)
        assert (prompt if generation else prompt + response) == tok.encode(official, add_special_tokens=False)


ALL = list(CONVERSATIONS)


@pytest.mark.parametrize(
    "family, full_cases, generation_cases",
    [
        ("yi", ALL, ALL),
        ("glm4", ALL, ALL),
        ("gemma", ["single", "history"], ["single", "history"]),  # gemma-7b-it has no system role
        # Mistral shows the system only in the last user turn (and not at all once that turn is answered)
        ("mistral", ["single", "history"], ["single", "system", "history"]),
    ],
)
def test_family_matches_official_jinja(family, full_cases, generation_cases, family_tokenizers):
    for case in full_cases:
        check_family(family, CONVERSATIONS[case], family_tokenizers, generation=False)
    for case in generation_cases:
        check_family(family, CONVERSATIONS[case], family_tokenizers, generation=True)


@pytest.mark.parametrize("family", ["llama2", "deepseek"])
@pytest.mark.parametrize("case", ["single", "system"])
def test_family_generation_prompt_matches_official(family, case, family_tokenizers):
    check_family(family, CONVERSATIONS[case], family_tokenizers, generation=True)


@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_phi_matches_phi3_official(case, family_tokenizers):
    check_family("phi", CONVERSATIONS[case], family_tokenizers, generation=True)
    official_tok, tok = family_tokenizers["phi"]
    messages = CONVERSATIONS[case]
    official = official_tok.apply_chat_template(messages, tokenize=False)
    # Phi-3 closes a full conversation with its original eos; LLaMA-Factory's phi template does not
    assert official == get_template("phi").render(messages, tokenizer=tok) + "<|endoftext|>"


def test_known_differences_from_official(family_tokenizers):
    """Kept on purpose (LLaMA-Factory's definitions rely on SentencePiece prefix spaces / put the system first)."""
    official_tok, tok = family_tokenizers["llama2"]
    official = official_tok.apply_chat_template(SINGLE, tokenize=False)
    assert official.endswith("[/INST] Hi! How can I help? </s>")
    assert get_template("llama2").render(SINGLE, tokenizer=tok).endswith("[/INST]Hi! How can I help?</s>")
    official_tok, tok = family_tokenizers["deepseek"]
    assert "Assistant: Hi!" in official_tok.apply_chat_template(SINGLE, tokenize=False)
    assert "Assistant:Hi!" in get_template("deepseek").render(SINGLE, tokenizer=tok)
    official_tok, tok = family_tokenizers["mistral"]
    official = official_tok.apply_chat_template(HISTORY_WITH_SYSTEM[:-1], tokenize=False)
    assert official.count("Answer briefly.") == 1 and "[INST] Answer briefly.\n\nThanks." in official
    assert "[INST] Answer briefly.\n\nHello there" in get_template("mistral").render(HISTORY_WITH_SYSTEM, tokenizer=tok)


# ---------------------------------------------------------------- qwen3 (reasoning)
THOUGHT_ANSWER = "<think>\nLet me add.\n</think>\n\n4"


@pytest.fixture(scope="module")
def qwen3_tok(tiny_qwen_dir):
    tok = load(tiny_qwen_dir)
    tok.chat_template = official_template("qwen3")
    get_template("qwen3").fix_tokenizer(tok)
    return tok


@pytest.mark.parametrize("enable_thinking", [True, False])
@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_qwen3_matches_official(enable_thinking, case, qwen3_tok):
    template = get_template("qwen3", enable_thinking=enable_thinking)
    messages = CONVERSATIONS[case]
    system, body = split(messages)
    kw = {"enable_thinking": enable_thinking}
    full = qwen3_tok.apply_chat_template(messages, tokenize=False, **kw)
    generation = qwen3_tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True, **kw)
    assert template.render(messages, tokenizer=qwen3_tok) == full
    assert template.render(messages[:-1], add_generation_prompt=True, tokenizer=qwen3_tok) == generation
    prompt, response = template.encode_oneturn(qwen3_tok, body, system)
    assert prompt + response == qwen3_tok.encode(full, add_special_tokens=False)
    assert prompt == qwen3_tok.encode(generation, add_special_tokens=False)
    empty_thought = qwen3_tok.encode("<think>\n\n</think>\n\n", add_special_tokens=False)
    # the empty thought is trained when thinking is enabled, part of the prompt otherwise
    assert (response[: len(empty_thought)] == empty_thought) is enable_thinking


def test_qwen3_thoughts(qwen3_tok):
    template = get_template("qwen3")
    history = [user("1+1?"), bot("<think>\nsmall\n</think>\n\n2"), user("2+2?"), bot(THOUGHT_ANSWER)]
    # the last answer keeps its thought, earlier ones lose it (as the official template shows them)
    full = qwen3_tok.apply_chat_template(history, tokenize=False)
    assert template.render(history, tokenizer=qwen3_tok) == full
    assert "small" not in full
    prompt, response = template.encode_oneturn(qwen3_tok, history)
    assert prompt + response == qwen3_tok.encode(full, add_special_tokens=False)
    assert qwen3_tok.decode(response) == THOUGHT_ANSWER + "<|im_end|>\n"
    # multi-turn: every turn trained; a turn without a thought gets the empty one
    pairs = template.encode_multiturn(qwen3_tok, [user("a"), bot("b"), user("c"), bot(THOUGHT_ANSWER)])
    assert qwen3_tok.decode(pairs[0][1]) == "<think>\n\n</think>\n\nb<|im_end|>\n"
    assert qwen3_tok.decode(pairs[1][1]) == THOUGHT_ANSWER + "<|im_end|>\n"
    no_think = get_template("qwen3", enable_thinking=False)
    pairs = no_think.encode_multiturn(qwen3_tok, [user("a"), bot("b"), user("c"), bot(THOUGHT_ANSWER)])
    assert qwen3_tok.decode(pairs[1][0]).endswith("<think>\n\n</think>\n\n")
    assert qwen3_tok.decode(pairs[1][1]) == "4<|im_end|>\n"


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def test_qwen3_to_jinja_without_thinking(llama3_tok):
    tok = copy.deepcopy(llama3_tok)
    template = get_template("qwen3", enable_thinking=False)
    tok.chat_template = template.to_jinja(tok)
    messages = HISTORY[:-1] + [bot(THOUGHT_ANSWER)]
    assert tok.apply_chat_template(messages, tokenize=False) == template.render(messages, tokenizer=tok)
    assert tok.apply_chat_template(HISTORY[:-1], tokenize=False, add_generation_prompt=True) == template.render(
        HISTORY[:-1], add_generation_prompt=True, tokenizer=tok)
