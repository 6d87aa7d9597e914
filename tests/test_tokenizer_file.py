"""A model folder's tokenizer.json is what tokenizes: where transformers rebuilds the tokenizer differently (the
Qwen2-style demo model: digits; a Llama-2-layout folder: spaces), Tunery loads tokenizer.json as saved, keeps the
special tokens and chat template, and says so in one line; a tokenizer that agrees is kept as transformers built it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tunery.config import parse_config
from tunery.model.load import load_tokenizer
from tunery.model.tokenizer_file import PROBES

TEXTS = (*PROBES, "105", " 105", "  x  ", "\n\n", "你好")


def _load(path: Path, caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tunery"):
        tokenizer = load_tokenizer(parse_config("chat", [f"model_name_or_path={path}"]))
    notices = [r.getMessage() for r in caplog.records if "tokenizer.json as saved" in r.getMessage()]
    return tokenizer, notices


def _agrees(tokenizer, path: Path, special: bool = False) -> bool:
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(path / "tokenizer.json"))
    return all(tokenizer.encode(t, add_special_tokens=special) == reference.encode(t, add_special_tokens=special).ids
               for t in TEXTS)


def _check(path: Path, caplog):
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(path)
    tokenizer, notices = _load(path, caplog)
    assert _agrees(tokenizer, path)
    assert len(notices) == (0 if _agrees(auto, path) else 1), notices  # one line exactly when it had to step in
    assert tokenizer.chat_template == auto.chat_template and tokenizer.padding_side == "right"
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (auto.bos_token, auto.eos_token,
                                                                              auto.pad_token)
    assert set(auto.all_special_tokens) <= set(tokenizer.all_special_tokens) and len(tokenizer) == len(auto)
    return auto, tokenizer, notices


def test_qwen_demo_tokenizes_digits_as_its_tokenizer_json(tiny_qwen_dir, caplog):
    auto, tokenizer, notices = _check(tiny_qwen_dir, caplog)
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("105", add_special_tokens=False)) == ["10", "5"]
    if notices:  # transformers 5.24 overrides qwen2's tokenizer class and splits digits one by one
        assert "1|0|5" in notices[0] and "10|5" in notices[0] and type(auto).__name__ in notices[0]
        chat = [{"role": "user", "content": "What is 105?"}]
        assert tokenizer.apply_chat_template(chat, tokenize=False) == auto.apply_chat_template(chat, tokenize=False)


def test_llama2_layout_folder_keeps_its_spaces(tmp_path, caplog):
    """The hub's Llama-2 layout (Prepend + Replace normalizer, byte fallback, LlamaTokenizerFast, legacy)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    special = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    texts = ["Hello world, this is a test.", " leading spaces  and doubled  spaces", "numbers 105 2048", "你好世界"]
    tok.train_from_iterator(texts * 20, trainers.BpeTrainer(vocab_size=420, special_tokens=special,
                                                             show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "legacy": True, "add_bos_token": True,
        "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))

    auto, tokenizer, notices = _check(tmp_path, caplog)
    assert _agrees(tokenizer, tmp_path, special=True)  # <s> first, as the folder's post-processor says
    text = " leading spaces  and doubled  spaces"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    if notices:  # transformers 5.24 rebuilds it as LlamaTokenizer (Metaspace): the leading/doubled spaces change
        assert f"rebuilt the tokenizer as {type(auto).__name__}" in notices[0]


@pytest.mark.parametrize("fixture", ["tiny_llama3_dir"])
def test_a_tokenizer_that_agrees_is_kept(fixture, request, caplog):
    from transformers import AutoTokenizer

    path = request.getfixturevalue(fixture)
    tokenizer, notices = _load(path, caplog)
    assert not notices and type(tokenizer) is type(AutoTokenizer.from_pretrained(path))
