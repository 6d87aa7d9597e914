"""Options that change what a run does, each shown doing it on the tiny model (or refused in one line):
rope_scaling, upcast_layernorm, upcast_lmhead_output, ignore_pad_token_for_loss, eval_on_each_dataset, debug_data,
include_effective_tokens_per_second — and the range checks of transformers' TrainingArguments."""

from __future__ import annotations

import json

import pytest
from conftest import one_error_line

from tunery.cli import main
from tunery.config import parse_config
from tunery.demo import DATA_DIR

FAST = {"max_steps": 1, "max_samples": 8, "cutoff_len": 64, "logging_steps": 1, "save_strategy": "no",
        "per_device_train_batch_size": 2, "report_to": "none", "template": "llama3", "lora_rank": 4,
        "dataset": "identity", "dataset_dir": DATA_DIR}


def train_cfg(model, tmp_path, **options):
    values = dict(FAST, model_name_or_path=model, output_dir=tmp_path / "out", **options)
    return parse_config("train", [f"{k}={v}" for k, v in values.items()])


def run_train(capsys, model, tmp_path, **options) -> tuple[int, str, str]:
    values = dict(FAST, model_name_or_path=model, output_dir=tmp_path / "out", **options)
    capsys.readouterr()
    code = main(["train", *(f"{k}={v}" for k, v in values.items())])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------ rope_scaling
def _inv_freq(model):
    return model.model.rotary_emb.inv_freq.clone()


def test_rope_scaling_linear_divides_the_frequencies_by_the_factor(tiny_llama3_dir, tmp_path):
    import torch

    from tunery.model.load import load_model, load_tokenizer

    plain = train_cfg(tiny_llama3_dir, tmp_path, cutoff_len=4096)  # the tiny model has 2048 positions
    tokenizer = load_tokenizer(plain)
    base = load_model(plain, tokenizer)
    scaled = load_model(train_cfg(tiny_llama3_dir, tmp_path, cutoff_len=4096, rope_scaling="linear"), tokenizer)
    assert scaled.config.rope_parameters["rope_type"] == "linear"
    assert scaled.config.rope_parameters["factor"] == 2.0  # ceil(4096 / 2048)
    assert scaled.config.max_position_embeddings == 4096
    assert torch.allclose(_inv_freq(scaled), _inv_freq(base) / 2)
    ids = torch.tensor([tokenizer.encode("a rotary test of some length")])
    assert not torch.allclose(base(ids).logits, scaled(ids).logits)  # the positions are read differently


@pytest.mark.parametrize("kind", ["dynamic", "yarn", "llama3"])
def test_rope_scaling_kinds_record_the_original_length(tiny_llama3_dir, tmp_path, kind):
    from tunery.model.load import load_model, load_tokenizer

    cfg = train_cfg(tiny_llama3_dir, tmp_path, cutoff_len=5000, rope_scaling=kind)
    model = load_model(cfg, load_tokenizer(cfg))
    params = model.config.rope_parameters
    assert params["rope_type"] == kind and params["factor"] == 3.0  # ceil(5000 / 2048)
    assert params["original_max_position_embeddings"] == 2048
    if kind == "llama3":
        assert (params["low_freq_factor"], params["high_freq_factor"]) == (1.0, 4.0)


def test_rope_scaling_is_off_when_cutoff_fits_and_2_for_inference(tiny_llama3_dir, tmp_path, caplog):
    from tunery.model.load import load_model, load_tokenizer

    cfg = train_cfg(tiny_llama3_dir, tmp_path, cutoff_len=1024, rope_scaling="linear")
    tokenizer = load_tokenizer(cfg)
    with caplog.at_level("WARNING"):
        model = load_model(cfg, tokenizer)
    assert model.config.rope_parameters["rope_type"] == "default"
    assert "RoPE scaling disabled" in caplog.text
    chat = parse_config("chat", [f"model_name_or_path={tiny_llama3_dir}", "template=llama3", "rope_scaling=linear"])
    assert load_model(chat, tokenizer).config.rope_parameters["factor"] == 2.0


# ------------------------------------------------------------------ upcasts
def test_upcast_layernorm_and_lmhead_output_on_a_half_precision_model(tiny_llama3_dir, tmp_path):
    import torch

    from tunery.model.adapters import prepare_for_training
    from tunery.model.load import load_model, load_tokenizer

    def prepared(**options):
        cfg = train_cfg(tiny_llama3_dir, tmp_path, **options)
        model = load_model(cfg, load_tokenizer(cfg)).to(torch.bfloat16)
        return prepare_for_training(model, cfg)

    ids = torch.tensor([[1, 2, 3, 4]])
    plain = prepared()
    norms = {n: p.dtype for n, p in plain.named_parameters() if "norm" in n}
    assert norms and set(norms.values()) == {torch.bfloat16}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert plain(input_ids=ids).logits.dtype == torch.bfloat16

    upcast = prepared(upcast_layernorm="true", upcast_lmhead_output="true")
    dtypes = {n: p.dtype for n, p in upcast.named_parameters()}
    assert all(dtypes[n] == torch.float32 for n in norms)  # every norm weight
    assert dtypes["base_model.model.model.embed_tokens.weight"] == torch.bfloat16  # nothing else
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert upcast(input_ids=ids).logits.dtype == torch.float32


# ------------------------------------------------------------------ ignore_pad_token_for_loss
def test_ignore_pad_token_for_loss_false_trains_the_padding(tiny_llama3_dir, tmp_path):
    import torch

    from tunery.data.collate import build_collator
    from tunery.data.records import IGNORE_INDEX
    from tunery.model.load import load_model, load_tokenizer

    features = [{"input_ids": [5, 6, 7, 8, 9], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9],
                 "attention_mask": [1] * 5},
                {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7], "attention_mask": [1] * 3}]
    ignored_cfg = train_cfg(tiny_llama3_dir, tmp_path, padding_free="false")
    trained_cfg = train_cfg(tiny_llama3_dir, tmp_path, ignore_pad_token_for_loss="false")
    tokenizer = load_tokenizer(ignored_cfg)
    model = load_model(ignored_cfg, tokenizer)
    ignored = build_collator(ignored_cfg, tokenizer, model=model)(features)
    trained = build_collator(trained_cfg, tokenizer, model=model)(features)
    assert ignored["labels"][1].tolist()[-2:] == [IGNORE_INDEX, IGNORE_INDEX]
    assert trained["labels"][1].tolist()[-2:] == [tokenizer.pad_token_id] * 2
    with torch.no_grad():
        assert model(**ignored).loss.item() != pytest.approx(model(**trained).loss.item())


@pytest.mark.parametrize("options,says", [
    ({"stage": "kto"}, "works with stage sft only"),
    ({"padding_free": "true"}, "padding_free batches have none"),
])
def test_ignore_pad_token_for_loss_false_is_refused_where_nothing_is_padded(tiny_llama3_dir, tmp_path, capsys,
                                                                            options, says):
    code, _, err = run_train(capsys, tiny_llama3_dir, tmp_path, ignore_pad_token_for_loss="false", **options)
    assert code == 2 and one_error_line(err) and says in err


# ------------------------------------------------------------------ eval_on_each_dataset, debug_data, tokens/s
def test_each_eval_dataset_debug_data_and_tokens_per_second(tiny_llama3_dir, tmp_path, capsys):
    both = {"eval_dataset": "identity,adgen_local", "do_train": "true", "do_eval": "true", "eval_strategy": "no"}
    code, out, err = run_train(capsys, tiny_llama3_dir, tmp_path, eval_on_each_dataset="true", debug_data="true",
                               include_effective_tokens_per_second="true", **both)
    assert code == 0, err[-2000:]
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert {"eval_identity_loss", "eval_adgen_local_loss"} <= set(results) and "eval_loss" not in results
    assert results["effective_tokens_per_sec"] > 0
    assert "debug_data: the first training example" in out
    assert "input_ids:\n[" in out and "labels:\n[" in out and "<|start_header_id|>" in out

    code, out, err = run_train(capsys, tiny_llama3_dir, tmp_path / "plain", **both)
    assert code == 0, err[-2000:]
    results = json.loads((tmp_path / "plain" / "out" / "all_results.json").read_text())
    assert "eval_loss" in results and "eval_identity_loss" not in results
    assert "effective_tokens_per_sec" not in results and "debug_data" not in out


@pytest.mark.parametrize("options,says", [
    ({"eval_on_each_dataset": "true"}, "eval_dataset, which is not set"),
    ({"stage": "grpo", "debug_data": "true", "reward_funcs": "format", "dataset": "arithmetic_demo"},
     "'debug_data' is not supported in stage grpo"),
])
def test_options_without_their_inputs_are_one_line(tiny_llama3_dir, tmp_path, capsys, options, says):
    code, _, err = run_train(capsys, tiny_llama3_dir, tmp_path, **options)
    assert code == 2 and one_error_line(err) and says in err, err


# ------------------------------------------------------------------ TrainingArguments ranges
@pytest.mark.parametrize("option,value,says", [
    ("per_device_train_batch_size", -1, "must be greater than 0"),
    ("per_device_eval_batch_size", 0, "must be greater than 0"),
    ("gradient_accumulation_steps", 0, "must be greater than 0"),
    ("learning_rate", -0.001, "must be 0 or more"),
    ("warmup_steps", -1, "must be 0 or more"),
    ("save_steps", 0, "with save_strategy steps: must be greater than 0"),
    ("eval_steps", 0, "with eval_strategy steps: must be greater than 0"),
    ("logging_steps", 0, "must be greater than 0"),
    ("neftune_noise_alpha", -5, "must be greater than 0"),
    ("torch_empty_cache_steps", 0, "must be greater than 0"),
    ("dataloader_prefetch_factor", 2, "transformers refuses these training options: --dataloader_prefetch_factor"),
])
def test_training_arguments_out_of_range_are_one_line(tiny_llama3_dir, tmp_path, capsys, option, value, says):
    extra = {"save_strategy": "steps"} if option == "save_steps" else {}
    if option == "eval_steps":
        extra = {"eval_strategy": "steps", "val_size": 0.25}
    code, _, err = run_train(capsys, tiny_llama3_dir, tmp_path, **{option: value, **extra})
    assert code == 2 and one_error_line(err), err[-2000:]
    assert f"'{option}'" in err or option in err
    assert says in err


def test_save_steps_0_is_fine_when_saving_by_epoch(tiny_llama3_dir, tmp_path):
    cfg = train_cfg(tiny_llama3_dir, tmp_path, save_steps=0, save_strategy="epoch")
    assert cfg.save_steps == 0
