"""Training format = serving format, on the real vocabularies and official chat templates (llama_cpp_material).

A named template that encodes the sample conversations differently from the model's own chat template warns in one
line before training and in ``tunery preview``, with the first differing text and ``template: tokenizer`` (which
trains exactly the served format); it is silent when they encode alike and when the tokenizer has no chat template.
"""

from __future__ import annotations

import types

import pytest
import yaml

from llama_cpp_material import family_tokenizer, llama_cpp_material  # noqa: F401
from tunery.data.template_select import resolve_template
from tunery.data.templates import get_template
from tunery.data.templates.serving import serving_difference, serving_probe
from tunery.errors import ConfigError

# (family, named template, what the warning shows at the first difference; None: the named template is the serving
# format, token for token)
CASES = [
    ("llama3.1", "llama3", "Cutting"),  # the official template opens with a "Cutting Knowledge Date" system block
    ("llama2", "llama2", "tokens '▁['"),  # each slot tokenized apart: a prefix space the served text has not
    ("qwen2.5", "qwen", None),
    ("qwen3", "qwen3", "'<think>\\n\\n</think>\\n\\nHello"),  # an empty think block trained on an earlier turn
    ("qwen3", "qwen3_nothink", "where the model's template has '<think>\\n\\n</think>"),  # the last turn has one
    ("deepseek-r1-distill-llama", "deepseekr1", "<think>"),
    ("deepseek-r1-distill-qwen", "deepseekr1", "<think>"),
    ("deepseek-r1-distill-qwen", "deepseek3", None),
    ("phi3.5", "phi", "'\\n<|assistant|>"),  # replace_eos re-registers <|end|> without its rstrip: a "\n" token
    ("gemma4", "gemma", "<start_of_turn>"),  # Gemma 1-3's turn markers, not Gemma 4's <|turn>
    ("command-r", "cohere", None),
]


def _cfg(name, **over):
    values = dict(template=name, default_system=None, enable_thinking=True, tool_format=None, stage="sft", sources={})
    values.update(over)
    return types.SimpleNamespace(**values)


@pytest.mark.parametrize("family,name,shown", CASES, ids=[f"{f}-{n}" for f, n, _ in CASES])
def test_named_template_against_serving_format(family, name, shown, llama_cpp_material, capsys):  # noqa: F811
    tok = family_tokenizer(llama_cpp_material, family)
    resolve_template(_cfg(name), tok, check_serving=True)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "trains another format" in line]
    if shown is None:
        assert warnings == []
        return
    assert len(warnings) == 1, warnings
    assert shown in warnings[0] and warnings[0].endswith("use template: tokenizer"), warnings[0]
    assert f"template '{name}'" in warnings[0]


@pytest.mark.parametrize("family", ["llama3.1", "qwen3", "phi3.5", "gemma4"])
def test_template_tokenizer_is_the_serving_format(family, llama_cpp_material):  # noqa: F811
    """What the warning advises: with template: tokenizer the sample conversations encode exactly as served."""
    tok = family_tokenizer(llama_cpp_material, family)
    probes = serving_probe(tok)
    own = get_template("tokenizer", tokenizer=tok)
    own.fix_tokenizer(tok)
    assert probes and serving_difference(own, tok, probes) is None
    for probe in probes:
        ids = [i for prompt, response in own.encode_multiturn(tok, probe.messages, probe.system)
               for i in prompt + (response or [])]
        assert ids == probe.ids


def test_no_warning_without_a_chat_template(llama_cpp_material, capsys):  # noqa: F811
    tok = family_tokenizer(llama_cpp_material, "llama3.1")
    tok.chat_template = None
    resolve_template(_cfg("llama3"), tok, check_serving=True)
    assert "trains another format" not in capsys.readouterr().err


def test_no_check_unless_asked_or_for_pretraining(llama_cpp_material, capsys):  # noqa: F811
    tok = family_tokenizer(llama_cpp_material, "qwen3")
    resolve_template(_cfg("qwen3"), tok)  # chat, api, export: no check
    resolve_template(_cfg("qwen3", stage="pt"), family_tokenizer(llama_cpp_material, "qwen3"), check_serving=True)
    assert "trains another format" not in capsys.readouterr().err


def test_enable_thinking_false_is_compared_with_thinking_off(llama_cpp_material, capsys):  # noqa: F811
    """qwen3 with enable_thinking: false still differs (its empty think block sits in the prompt of every turn,
    the official template puts one only before the last answer)."""
    tok = family_tokenizer(llama_cpp_material, "qwen3")
    probes = serving_probe(tok, {"enable_thinking": False})
    template = get_template("qwen3", enable_thinking=False)
    template.fix_tokenizer(tok)
    assert "<think>" in tok.decode(probes[0].ids)
    assert serving_difference(template, tok, probes) is not None


def test_gemma4_name_says_multimodal_and_points_at_the_own_template():
    with pytest.raises(ConfigError, match="needs multimodal support.*template: tokenizer"):
        get_template("gemma4")


def test_preview_warns_before_the_records(llama_cpp_material, tmp_path, capsys):  # noqa: F811
    from tunery.cli import main
    from tunery.demo import DATA_DIR

    from transformers import Qwen2Config

    folder = tmp_path / "qwen3-tokenizer"  # a model folder without weights: preview reads the tokenizer only
    tok = family_tokenizer(llama_cpp_material, "qwen3")
    tok.save_pretrained(str(folder))
    Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1).save_pretrained(str(folder))
    for name, warned in (("qwen3", True), ("tokenizer", False)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(dict(model_name_or_path=str(folder), template=name, dataset="identity",
                                              dataset_dir=str(DATA_DIR), cutoff_len=512, max_samples=2)))
        assert main(["preview", str(config), "--num", "1"]) == 0
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "trains another format" in line]
        assert len(lines) == int(warned), err[-2000:]


def test_jinja_syntax_error_is_one_line(tiny_llama3_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    tok.chat_template = "{% for message in messages %}{{ message['content'] }}{% endfor"
    with pytest.raises(ConfigError, match=r"is not valid Jinja \(line 1: .*\) — fix its chat_template") as err:
        resolve_template(_cfg(None), tok)
    assert "\n" not in str(err.value)


def test_missing_tokens_name_them_and_resize_vocab(tiny_llama3_dir):
    from transformers import AutoTokenizer

    from tunery.data.dataset import check_template_tokens

    tok = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    template = resolve_template(_cfg("phi"), tok)
    with pytest.raises(ConfigError, match=r"needs the special token <\|system\|>.*"
                       r"new_special_tokens: <\|system\|>,<\|user\|>,<\|assistant\|>\) with resize_vocab: true") as err:
        check_template_tokens(template, tok, str(tiny_llama3_dir))
    assert "\n" not in str(err.value)


def test_own_template_gets_enable_thinking_only_when_set(llama_cpp_material):  # noqa: F811
    """Gemma 4 serves with thinking off unless asked: the option's default (true, for LLaMA-Factory's reasoning
    templates) must not switch on <|think|> in the model's own template."""
    tok = family_tokenizer(llama_cpp_material, "gemma4")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    default = resolve_template(_cfg(None), tok)
    asked = resolve_template(_cfg(None, sources={"enable_thinking": "command line"}), tok)
    off = resolve_template(_cfg(None, enable_thinking=False, sources={"enable_thinking": "command line"}), tok)
    assert "<|think|>" not in default.render(messages, tokenizer=tok)
    assert "<|think|>" in asked.render(messages, tokenizer=tok)
    assert "<|think|>" not in off.render(messages, tokenizer=tok)
