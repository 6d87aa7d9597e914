"""The chat engine on the tiny model: sync and streaming agree, adapters are merged, stop strings, limits, the Python
API, reward scores, `tunery chat --compare` and the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tunery.cli import main

HELLO = [{"role": "user", "content": "Hello, who are you?"}]


@pytest.fixture(scope="module")
def chat_model(tiny_llama3_dir, tiny_llama3_lora):
    from tunery import ChatModel

    return ChatModel({"model_name_or_path": str(tiny_llama3_dir), "adapter_name_or_path": str(tiny_llama3_lora),
                      "template": "llama3", "do_sample": False, "max_new_tokens": 24})


def test_import_tunery_stays_light():
    code = "import sys, tunery; assert 'torch' not in sys.modules; print(tunery.ChatModel.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ChatModel"


def test_sync_and_stream_give_the_same_greedy_reply(chat_model):
    (reply,) = chat_model.chat(HELLO)
    assert reply.text and reply.prompt_tokens > 0 and 0 < reply.completion_tokens <= 24
    assert reply.finish_reason in ("stop", "length")
    stream = chat_model.engine.stream_chat(HELLO)
    pieces = list(stream)
    assert len(pieces) > 1  # it streamed
    assert "".join(pieces) == reply.text
    assert stream.completion_tokens == reply.completion_tokens and stream.finish_reason == reply.finish_reason
    assert stream.tokens_per_second > 0
    assert "".join(chat_model.stream_chat(HELLO)) == reply.text


def test_adapter_is_merged_like_peft(chat_model, tiny_llama3_dir, tiny_llama3_lora):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    engine = chat_model.engine
    ids = engine.prompt_ids(HELLO)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama3_dir), tiny_llama3_lora).eval()
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=engine.stop_ids,
                             pad_token_id=engine.tokenizer.pad_token_id)
    expected = engine._cut(out[0, len(ids):].tolist())[0]
    (reply,) = chat_model.chat(HELLO)
    assert reply.text == engine._decode(expected)


def test_stop_strings_cut_sync_and_stream(chat_model):
    (full,) = chat_model.chat(HELLO)
    stop = full.text[4:7]
    assert stop and full.text.find(stop) >= 0
    (cut,) = chat_model.chat(HELLO, stop=[stop])
    expected = full.text[: full.text.find(stop)]
    assert cut.text == expected and cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens
    stream = chat_model.engine.stream_chat(HELLO, stop=[stop])
    assert "".join(stream) == expected and stream.finish_reason == "stop"


def test_several_sampled_replies_and_generation_overrides(chat_model):
    replies = chat_model.chat(HELLO, num_return_sequences=3, temperature=1.0, top_p=1.0, max_new_tokens=8)
    assert len(replies) == 3 and all(r.completion_tokens <= 8 for r in replies)
    assert len({r.text for r in replies}) > 1
    (short,) = chat_model.chat(HELLO, max_new_tokens=3)
    assert short.completion_tokens <= 3


def test_system_prompt_and_tool_messages_reach_the_template(chat_model):
    engine = chat_model.engine
    plain = engine.prompt_ids(HELLO)
    with_system = engine.prompt_ids([{"role": "system", "content": "Be brief."}] + HELLO)
    assert len(with_system) > len(plain)
    assert engine.prompt_ids(HELLO, system="Be brief.") == with_system
    tools = json.dumps([{"type": "function", "function": {"name": "get_time", "description": "Current time",
                                                            "parameters": {"type": "object", "properties": {}}}}])
    assert "get_time" in engine.tokenizer.decode(engine.prompt_ids(HELLO, tools=tools))
    convo = HELLO + [{"role": "assistant", "content": "",
                      "tool_calls": [{"type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                     {"role": "tool", "content": "12:00"}]
    assert "12:00" in engine.tokenizer.decode(engine.prompt_ids(convo, tools=tools))


def test_bad_conversations_are_clear_errors(chat_model):
    from tunery.chat.stream import ContextLengthError
    from tunery.errors import DataError

    with pytest.raises(ContextLengthError, match="context is 2048 tokens"):
        chat_model.chat([{"role": "user", "content": "hello " * 3000}])
    with pytest.raises(DataError, match="empty"):
        chat_model.chat([])
    with pytest.raises(DataError, match="message 0 has role 'assistant'"):
        chat_model.chat([{"role": "assistant", "content": "hi"}])
    with pytest.raises(DataError, match="message 1 has role 'robot'"):
        chat_model.chat([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"},
                         {"role": "user", "content": "c"}])
    from tunery.chat.stream import NotARewardModel

    with pytest.raises(NotARewardModel, match="stage: rm"):
        chat_model.get_scores(["text"])


def test_reward_model_scores(tiny_llama3_dir, tiny_llama3_lora, tmp_path):
    import shutil

    import torch
    from safetensors.torch import save_file

    from tunery import ChatModel

    rm_dir = tmp_path / "rm"
    shutil.copytree(tiny_llama3_lora, rm_dir)
    torch.manual_seed(0)
    save_file({"v_head.summary.weight": torch.randn(1, 64), "v_head.summary.bias": torch.zeros(1)},
              str(rm_dir / "value_head.safetensors"))
    rm = ChatModel({"model_name_or_path": str(tiny_llama3_dir), "adapter_name_or_path": str(rm_dir),
                    "template": "llama3", "stage": "rm"})
    scores = rm.get_scores(["A helpful answer.", "Something else entirely."])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores) and scores[0] != scores[1]
    assert rm.get_scores(["A helpful answer."]) == scores[:1]
    from tunery.errors import TuneryError

    with pytest.raises(TuneryError, match="reward model"):
        rm.chat(HELLO)
    with pytest.raises(TuneryError, match="no value head"):
        ChatModel({"model_name_or_path": str(tiny_llama3_dir), "adapter_name_or_path": str(tiny_llama3_lora),
                   "template": "llama3", "stage": "rm"})


def test_sequence_classification_reward_model(tiny_llama3_dir, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from tunery import ChatModel

    config = AutoConfig.from_pretrained(tiny_llama3_dir, num_labels=1)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(tmp_path / "seqcls")
    AutoTokenizer.from_pretrained(tiny_llama3_dir).save_pretrained(tmp_path / "seqcls")
    rm = ChatModel({"model_name_or_path": str(tmp_path / "seqcls"), "template": "llama3", "stage": "rm",
                    "finetuning_type": "full"})
    scores = rm.get_scores(["one text", "another text"])
    assert len(scores) == 2 and scores[0] != scores[1]


def test_vllm_backend_missing_is_a_clear_error(tiny_llama3_dir, capsys):
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed")
    except ImportError:
        pass
    code = main(["chat", "--model_name_or_path", str(tiny_llama3_dir), "--infer_backend", "vllm"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'tunery[vllm]'" in err and err.count("\n") == 1


def test_adapter_of_another_base_and_unknown_template(tiny_llama3_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from conftest import make_lora_adapter

    other = tmp_path / "other-base"
    config = LlamaConfig(vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    AutoModelForCausalLM.from_config(config).save_pretrained(other)
    adapter = make_lora_adapter(other, tmp_path / "other-lora")
    code = main(["chat", "--model_name_or_path", str(tiny_llama3_dir), "--adapter_name_or_path", str(adapter),
                 "--template", "llama3"])
    err = capsys.readouterr().err.splitlines()[-1]
    assert code == 2 and err.startswith("error: adapter") and "trained on another base model" in err
    assert str(other) in err and "expects input size 64, the loaded model has 128" in err
    code = main(["chat", "--model_name_or_path", str(tiny_llama3_dir), "--template", "llama9"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown template 'llama9'" in err and "llama3" in err


def test_terminal_compare_shows_both_models_and_speed(tiny_llama3_dir, tiny_llama3_lora):
    cmd = [sys.executable, "-m", "tunery", "chat", "--model_name_or_path", str(tiny_llama3_dir),
           "--adapter_name_or_path", str(tiny_llama3_lora), "--template", "llama3", "--compare",
           "--do_sample", "false", "--max_new_tokens", "10"]
    proc = subprocess.run(cmd, input="/system You are terse.\nHello\nexit\n", capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "System prompt set to: You are terse." in lines
    tuned = [line for line in lines if line.startswith("Fine-tuned: ")]
    base = [line for line in lines if line.startswith("Base: ")]
    assert len(tuned) == 1 and len(base) == 1 and tuned[0][len("Fine-tuned: "):] != base[0][len("Base: "):]
    assert sum("tokens/s]" in line for line in lines) == 2


def test_stop_trimmer_holds_back_a_stop_split_across_pieces():
    from tunery.chat.stream import StopTrimmer

    trimmer = StopTrimmer(["o w", "###"])
    out = [trimmer.feed(p) for p in ("Hel", "lo", " wo", "rld")]
    assert out == ["Hel", "l", "", ""] and trimmer.stopped and trimmer.flush() == ""
    trimmer = StopTrimmer(["###"])
    assert [trimmer.feed(p) for p in ("a#", "#b", "c")] == ["a", "##b", "c"] and trimmer.flush() == ""
    trimmer = StopTrimmer(["###"])
    assert trimmer.feed("x##") == "x" and trimmer.flush() == "##"
