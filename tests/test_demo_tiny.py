"""The embedded demo model builder (tunery.demo.tiny) and the bundled datasets (tunery.demo.DATA_DIR)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tunery.demo import DATA_DIR
from tunery.demo.chat_templates import LLAMA3_CHAT_TEMPLATE, QWEN2_5_CHAT_TEMPLATE, QWEN_DEFAULT_SYSTEM
from tunery.cli import main as tunery_main
from tunery.demo.tiny import MARKER, build_tiny_model, is_built

CJK = re.compile(r"[\u4e00-\u9fff]")
LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
    "<|python_tag|>", "<|finetune_right_pad_id|>",
]
SAMPLES = [
    "Hello, world! How are you today?",
    "Please remember to bring an umbrella tomorrow: it will rain at 3 pm.",
    "您好，我是人工智能助手，很高兴为您服务。",
    "这条连衣裙选用清透的蓝色，看上去干净又有质感。",
    "混合 text: Tunery 支持 LoRA 微调 (rank=8)。\n第二行\tand tabs",
    "emoji and rare bytes: ✓ ü ß ½ 𝔘",
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tok(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# --------------------------------------------------------------------------------------------------- bundled data


def _load(name: str):
    return json.loads((DATA_DIR / name).read_text(encoding="utf-8"))


def test_data_dir_is_exported():
    assert isinstance(DATA_DIR, Path) and DATA_DIR.is_dir()
    assert (DATA_DIR / "dataset_info.json").is_file()


def test_dataset_info_registers_the_tutorial_entries():
    info = _load("dataset_info.json")
    assert info["identity"] == {"file_name": "identity.json"}
    assert info["adgen_local"] == {"file_name": "adgen_local.json", "columns": {"prompt": "content", "response": "summary"}}
    for entry in info.values():
        assert (DATA_DIR / entry["file_name"]).is_file()


def test_identity_dataset():
    recs = _load("identity.json")
    assert len(recs) >= 80
    for r in recs:
        assert set(r) == {"instruction", "input", "output"}
        assert r["input"] == "" and r["instruction"].strip() and r["output"].strip()
        assert "{{name}}" in r["output"] and "{{author}}" in r["output"], r
    instructions = [r["instruction"] for r in recs]
    assert len(set(instructions)) == len(instructions)
    for must in ("Who are you?", "你是谁", "你是谁？", "who are you"):
        assert must in instructions
    chinese = sum(bool(CJK.search(r["instruction"] + r["output"])) for r in recs)
    assert 0.4 <= chinese / len(recs) <= 0.6  # about half Chinese, half English


def test_adgen_dataset():
    recs = _load("adgen_local.json")
    assert len(recs) >= 200
    pair = r"[^#*]+#[^#*]+"
    shape = re.compile(rf"^类型#[^#*]+(\*{pair})+$")
    for r in recs:
        assert set(r) == {"content", "summary"}
        assert shape.match(r["content"]), r["content"]
        assert len(r["summary"]) >= 40 and CJK.search(r["summary"]) and r["summary"].endswith("。")
    assert len({r["content"] for r in recs}) == len(recs)
    assert len({r["summary"] for r in recs}) == len(recs)
    assert {r["content"].split("*")[0] for r in recs} >= {"类型#裙", "类型#上衣", "类型#裤"}


def test_pretrain_demo_dataset():
    recs = _load("pretrain_demo.json")
    assert len(recs) >= 50 and all(set(r) == {"text"} and r["text"].strip() for r in recs)
    assert not any("{{name}}" in r["text"] or "Tunery" in r["text"] for r in recs)


# ---------------------------------------------------------------------------------------------------------- builder


def test_builder_is_deterministic(tiny_llama3_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again", family="llama3", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "generation_config.json"):
        assert _sha(again / name) == _sha(tiny_llama3_dir / name), name
    other = build_tiny_model(tmp_path / "seed1", family="llama3", seed=1)
    assert _sha(other / "model.safetensors") != _sha(again / "model.safetensors")
    assert _sha(other / "tokenizer.json") == _sha(again / "tokenizer.json")  # the tokenizer does not depend on seed


def test_builder_reuses_a_complete_build(tiny_llama3_dir):
    weights = tiny_llama3_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert is_built(tiny_llama3_dir, family="llama3")
    assert not is_built(tiny_llama3_dir, family="llama3", seed=7)
    assert build_tiny_model(tiny_llama3_dir, family="llama3") == tiny_llama3_dir
    assert weights.stat().st_mtime_ns == before
    marker = json.loads((tiny_llama3_dir / MARKER).read_text())
    assert marker["family"] == "llama3" and marker["size"] == "tiny" and marker["seed"] == 0


def test_builder_refuses_foreign_folder_unless_overwrite(tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_tiny_model(target)
    assert (target / "notes.txt").read_text() == "keep me"
    build_tiny_model(target, overwrite=True)
    assert not (target / "notes.txt").exists() and is_built(target)
    with pytest.raises(ValueError):
        build_tiny_model(tmp_path / "x", family="mistral")
    with pytest.raises(ValueError):
        build_tiny_model(tmp_path / "y", size="huge")


def test_tiny_llama3_model_files_and_config(tiny_llama3_dir):
    import torch
    from transformers import AutoModelForCausalLM

    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", MARKER):
        assert (tiny_llama3_dir / name).is_file(), name
    assert (tiny_llama3_dir / "model.safetensors").stat().st_size < 8_000_000
    model = AutoModelForCausalLM.from_pretrained(tiny_llama3_dir)
    tok = _tok(tiny_llama3_dir)
    cfg = model.config
    assert cfg.model_type == "llama" and not cfg.tie_word_embeddings
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.max_position_embeddings) == (64, 2, 4, 2, 128, 2048)
    assert cfg.vocab_size == len(tok) and 3500 <= len(tok) <= 4500
    assert cfg.bos_token_id == tok.bos_token_id and cfg.eos_token_id == tok.convert_tokens_to_ids("<|eot_id|>")
    eos = model.generation_config.eos_token_id
    assert tok.convert_tokens_to_ids("<|eot_id|>") in eos and tok.convert_tokens_to_ids("<|end_of_text|>") in eos
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 2_000_000
    ids = tok("Who are you?", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], cfg.vocab_size) and torch.isfinite(logits).all()
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 4


def test_tiny_qwen_model_config(tiny_qwen_dir):
    from transformers import AutoConfig, GenerationConfig

    cfg = AutoConfig.from_pretrained(tiny_qwen_dir)
    tok = _tok(tiny_qwen_dir)
    assert cfg.model_type == "qwen2" and not cfg.tie_word_embeddings and cfg.hidden_size == 64
    assert cfg.vocab_size >= len(tok)  # Qwen2 pads its embedding matrix past the tokenizer
    assert cfg.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    gen = GenerationConfig.from_pretrained(tiny_qwen_dir)
    assert tok.convert_tokens_to_ids("<|im_end|>") in gen.eos_token_id
    assert gen.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")


def test_bench_size_is_about_25m_parameters():
    import torch
    from transformers import AutoModelForCausalLM

    from tunery.demo.tiny import SIZES, _model_config

    class _FakeTok:  # _model_config only needs len() and convert_tokens_to_ids()
        def __len__(self):
            return SIZES["bench"]["vocab"]

        def convert_tokens_to_ids(self, token):
            return 0

    cfg = _model_config("llama3", "bench", _FakeTok())
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert 20e6 <= n <= 30e6, n


def test_warmup_is_deterministic_and_trains(tmp_path, tiny_llama3_dir):
    a = build_tiny_model(tmp_path / "wa", warmup_steps=3)
    b = build_tiny_model(tmp_path / "wb", warmup_steps=3)
    assert _sha(a / "model.safetensors") == _sha(b / "model.safetensors")
    assert _sha(a / "model.safetensors") != _sha(tiny_llama3_dir / "model.safetensors")
    marker = json.loads((a / MARKER).read_text())
    assert marker["warmup_steps"] == 3 and marker["warmup_loss_last"] < marker["warmup_loss_first"]
    assert not is_built(a)  # a warm-up build is not the plain build


def test_cli_main(tmp_path, capsys):
    def main(argv):
        return tunery_main(["demo", *argv])

    out = tmp_path / "cli-model"
    assert main(["--output", str(out), "--family", "qwen", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "Parameters:" in text
    assert is_built(out, family="qwen", seed=3)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert main(["--output", str(tmp_path / "busy")]) == 2


# -------------------------------------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("fixture", ["tiny_llama3_dir", "tiny_qwen_dir"])
def test_tokenizer_round_trips_chinese_and_english(fixture, request):
    tok = _tok(request.getfixturevalue(fixture))
    for text in SAMPLES:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    # Learned merges: common text takes far fewer tokens than bytes.
    for text in SAMPLES[:4]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) < len(text.encode("utf-8")) / 2.5, (text, tok.convert_ids_to_tokens(ids))


def test_llama3_special_tokens_are_single_tokens(tiny_llama3_dir):
    tok = _tok(tiny_llama3_dir)
    seen = set()
    for special in LLAMA3_SPECIALS:
        ids = tok(special, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, special
        assert tok.convert_ids_to_tokens(ids[0]) == special
        seen.add(ids[0])
    assert len(seen) == len(LLAMA3_SPECIALS)
    assert tok.bos_token == "<|begin_of_text|>" and tok.eos_token == "<|eot_id|>"
    assert tok.pad_token == "<|finetune_right_pad_id|>"
    assert tok("hello")["input_ids"][0] == tok.bos_token_id  # bos is added, as by the Llama 3 tokenizer
    assert tok.decode(tok("hello")["input_ids"], skip_special_tokens=True) == "hello"


def test_llama3_chat_template_renders_llama3_text(tiny_llama3_dir):
    tok = _tok(tiny_llama3_dir)
    assert tok.chat_template == LLAMA3_CHAT_TEMPLATE
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "  Who are you?\n"},
        {"role": "assistant", "content": "I am Tunery."},
        {"role": "user", "content": "你是谁"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nI am Tunery.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n你是谁<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    no_prompt = tok.apply_chat_template(messages[:3], tokenize=False)
    assert no_prompt.endswith("I am Tunery.<|eot_id|>")
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert tok.decode(ids) == text


def test_qwen_chat_template_renders_chatml(tiny_qwen_dir):
    tok = _tok(tiny_qwen_dir)
    assert tok.chat_template == QWEN2_5_CHAT_TEMPLATE
    assert tok.bos_token is None and tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    assert tok("hello")["input_ids"] == tok("hello", add_special_tokens=False)["input_ids"]  # no bos

    user = [{"role": "user", "content": "你好"}]
    assert tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == (
        f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )
    chat = [{"role": "system", "content": "Be brief."}, *user, {"role": "assistant", "content": "您好！"}]
    assert tok.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
        "<|im_start|>assistant\n您好！<|im_end|>\n"
    )


def test_qwen_chat_template_tools_section(tiny_qwen_dir):
    tok = _tok(tiny_qwen_dir)
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                             "parameters": {"type": "object",
                                                            "properties": {"city": {"type": "string"}}}}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18 C"},
    ]
    text = tok.apply_chat_template(messages, tools=[tool], tokenize=False, add_generation_prompt=True)
    assert text.startswith(f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}\n\n# Tools\n\n")
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n' in text
    assert "<|im_start|>user\n<tool_response>\n18 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n" in text
    assert len(tok("<tool_call>", add_special_tokens=False)["input_ids"]) == 1
