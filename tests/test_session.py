"""One session (tokenizer → template → model → adapters per purpose), one generation module, one encoding entry and
the packing options checked once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tunery.config import parse_config

SRC = Path(__file__).resolve().parents[1] / "src" / "tunery"


def _chat_cfg(model_dir, *extra):
    return parse_config("chat", ["--model_name_or_path", str(model_dir), "--template", "llama3", *extra])


def test_infer_session_merges_the_adapter(tiny_llama3_dir, tiny_llama3_lora):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunery.model.session import open_session

    session = open_session(_chat_cfg(tiny_llama3_dir, "--adapter_name_or_path", str(tiny_llama3_lora)), "infer")
    assert session.template.name == "llama3" and session.stop_ids
    model = session.load_model()
    assert not model.training and session.model is model
    want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama3_dir),
                                     tiny_llama3_lora).merge_and_unload().eval()
    ids = torch.tensor([session.tokenizer("Hello there")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, want(ids).logits, atol=1e-5)
    base = open_session(_chat_cfg(tiny_llama3_dir, "--adapter_name_or_path", str(tiny_llama3_lora)), "infer")
    base.load_model(adapters=False)
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(tiny_llama3_dir).eval()
        assert torch.allclose(base.model(ids).logits, plain(ids).logits, atol=1e-5)
        assert torch.allclose(base.merge_adapters()(ids).logits, want(ids).logits, atol=1e-5)
    with pytest.raises(ValueError, match="unknown session purpose"):
        open_session(_chat_cfg(tiny_llama3_dir), "serve")


def test_train_session_loads_the_stage_head(tiny_llama3_dir, tmp_path):
    """stage rm saves a score head (config/stages.py): its session loads the model with one, LoRA attached."""
    from tunery.model.session import open_session

    cfg = parse_config("train", ["--model_name_or_path", str(tiny_llama3_dir), "--template", "llama3", "--stage", "rm",
                                 "--dataset", "dpo_en_demo", "--output_dir", str(tmp_path / "out")])
    model = open_session(cfg, "train").load_model()
    assert type(model.base_model.model).__name__ == "LlamaForSequenceClassification"
    assert any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("extra, want", [
    (["--do_sample", "false"], {"do_sample": False}),
    (["--do_sample", "true", "--temperature", "0.7", "--top_p", "0.9", "--top_k", "20"],
     {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 20}),
    (["--do_sample", "true", "--temperature", "0.000001"], {"do_sample": False}),
])
def test_predict_kwargs_are_the_generation_options(tiny_llama3_dir, extra, want):
    """do_predict's generate() arguments: LLaMA-Factory's rule (greedy drops the sampling values), from the one
    generation module the chat engines use too."""
    from transformers import AutoTokenizer

    from tunery.data.templates import get_template
    from tunery.model.generation import chat_generate_kwargs, predict_generate_kwargs

    cfg = _chat_cfg(tiny_llama3_dir, "--max_new_tokens", "7", "--num_beams", "2", *extra)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    template = get_template("llama3")
    template.fix_tokenizer(tokenizer)
    kwargs = predict_generate_kwargs(cfg, template, tokenizer)
    assert kwargs == {"num_beams": 2, "max_new_tokens": 7, "repetition_penalty": cfg.repetition_penalty,
                      "length_penalty": cfg.length_penalty, "eos_token_id": template.stop_token_ids(tokenizer),
                      "pad_token_id": tokenizer.pad_token_id, "use_cache": cfg.use_kv_cache, **want}
    chat = chat_generate_kwargs(cfg, tokenizer, [1, 2], context_length=10, prompt_len=6, stop=["x"])
    assert chat["max_new_tokens"] == 4 and chat["eos_token_id"] == [1, 2] and chat["stop_strings"] == ["x"]
    assert {k: chat[k] for k in want} == want


def test_one_place_loads_tokenizer_template_and_model():
    """Only the session loads tokenizer and template (and the model for a purpose); generation values are built only
    in model/generation.py; the packing options are checked only with the config."""
    allowed = {"model/session.py", "model/load.py", "data/template_select.py", "eval/run.py", "webui/views.py"}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        text = path.read_text(encoding="utf-8")
        if rel not in allowed and re.search(r"(?<!def )\b(load_tokenizer|resolve_template)\(", text):
            found.append(f"{rel}: loads the tokenizer or template itself")
        if rel != "model/generation.py" and re.search(r"temperature\s*[<>]=?\s*1e-5|GENERATION_KEYS\s*=", text):
            found.append(f"{rel}: builds generation values itself")
        if rel != "config/data_options.py" and "works with stage" in text and "packing" in text:
            found.append(f"{rel}: checks the packing options")
    assert not found, "\n".join(found)
