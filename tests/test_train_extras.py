"""The effect of each LLaMA-Factory option Tunery implements beyond the basics, on the tiny model: the optimizer's
state, the loss value, which weights train, the token count, the files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import one_error_line

from tunery.cli import main
from tunery.config import parse_config
from tunery.demo import DATA_DIR

FAST = {"max_steps": 2, "max_samples": 16, "cutoff_len": 96, "logging_steps": 1, "per_device_train_batch_size": 2,
        "report_to": "none", "overwrite_output_dir": "true", "template": "llama3", "dataset": "identity",
        "dataset_dir": DATA_DIR}


pytestmark = pytest.mark.usefixtures("one_thread")


def train(model: Path, out: Path, **options) -> int:
    values = dict(FAST, model_name_or_path=model, output_dir=out, **options)
    return main(["train", *(f"{k}={v}" for k, v in values.items())])


def log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def config(model, out, **options):
    values = dict(FAST, model_name_or_path=model, output_dir=out, **options)
    return parse_config("train", [f"{k}={v}" for k, v in values.items()])


# -- optimizers --------------------------------------------------------------------------------------------------------
def needs(module: str):
    """The optimizer packages are the `optimizers` extra (the README's test command installs it)."""
    return pytest.importorskip(module, reason=f"{module} missing — pip install -e '.[optimizers]'")


def one_step(tiny_llama3_dir, tmp_path, **options):
    """Build the optimizer the options ask for on the full tiny model and take one step on a real batch."""
    from transformers import AutoModelForCausalLM

    from tunery.train.artifacts import training_arguments
    from tunery.train.optimizers import create_custom_optimizer

    cfg = config(tiny_llama3_dir, tmp_path / "out", finetuning_type="full", **options)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama3_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = create_custom_optimizer(model, training_arguments(cfg), cfg)
    ids = torch.randint(0, 4000, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    return model, optimizer, changed


def test_galore_projects_the_targeted_weights(tiny_llama3_dir, tmp_path):
    needs("galore_torch")
    model, optimizer, changed = one_step(tiny_llama3_dir, tmp_path, use_galore="true", galore_rank=4,
                                         galore_target="mlp", galore_scale=0.5)
    assert type(optimizer).__module__.startswith("galore_torch")
    projected = [g for g in optimizer.param_groups if "rank" in g]
    assert len(projected) == 1 and projected[0]["rank"] == 4 and projected[0]["scale"] == 0.5
    mlp = {id(p) for n, p in model.named_parameters() if ".mlp." in n}
    assert {id(p) for p in projected[0]["params"]} == mlp  # 2 layers x gate/up/down
    state = optimizer.state[projected[0]["params"][0]]
    assert "projector" in state and state["projector"].ortho_matrix.shape[-1] == 4 or \
        state["projector"].ortho_matrix.shape[0] == 4
    assert any(".mlp." in n for n in changed) and any("self_attn" in n for n in changed)


def test_galore_layerwise_steps_inside_backward(tiny_llama3_dir, tmp_path):
    needs("galore_torch")
    from transformers.trainer_pt_utils import LayerWiseDummyOptimizer

    model, optimizer, changed = one_step(tiny_llama3_dir, tmp_path, use_galore="true", galore_layerwise="true")
    assert isinstance(optimizer, LayerWiseDummyOptimizer)  # its step() does nothing: the hooks stepped the weights
    assert len(changed) == len(list(model.parameters()))


def test_apollo_uses_its_scaling_and_scale_front(tiny_llama3_dir, tmp_path):
    needs("apollo_torch")
    model, optimizer, changed = one_step(tiny_llama3_dir, tmp_path, use_apollo="true", apollo_rank=4,
                                         apollo_scale_type="tensor", apollo_scale_front="true")
    assert type(optimizer).__module__ == "apollo_torch.apollo" and optimizer.scale_front
    group = next(g for g in optimizer.param_groups if "rank" in g)
    assert group["scale_type"] == "tensor" and group["proj"] == "random" and group["scale"] == 32.0
    assert "projector" in optimizer.state[group["params"][0]]
    assert changed


def test_badam_layer_mode_trains_one_block(tiny_llama3_dir, tmp_path):
    needs("badam")
    model, optimizer, changed = one_step(tiny_llama3_dir, tmp_path, use_badam="true", badam_switch_mode="descending")
    assert type(optimizer).__name__ == "BlockOptimizer"
    assert changed and all(".layers.1." in n for n in changed)  # descending: the last layer first


def test_badam_ratio_mode_trains_with_clipping(tiny_llama3_dir, tmp_path):
    needs("badam")
    out = tmp_path / "ratio"
    assert train(tiny_llama3_dir, out, finetuning_type="full", use_badam="true", badam_mode="ratio",
                 badam_update_ratio=0.1) == 0
    assert all(r["grad_norm"] > 0 for r in log(out) if "grad_norm" in r)


def test_adam_mini_keeps_one_second_moment_per_block(tiny_llama3_dir, tmp_path):
    needs("adam_mini")
    model, optimizer, changed = one_step(tiny_llama3_dir, tmp_path, use_adam_mini="true")
    assert type(optimizer).__name__ == "Adam_mini"
    q = model.model.layers[0].self_attn.q_proj.weight
    vmean = optimizer.state[q]["vmean"]
    assert vmean.numel() == model.config.num_attention_heads  # one second moment per head, not one per weight
    assert "v" not in optimizer.state[q]
    assert changed


def test_muon_on_hidden_matrices_adamw_on_the_rest(tiny_llama3_dir, tmp_path):
    model, optimizer, changed = one_step(tiny_llama3_dir, tmp_path, use_muon="true")
    muon_ids = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in muon_ids}
    assert names and all(p.ndim == 2 for n, p in model.named_parameters() if n in names)
    assert not any("embed" in n or "lm_head" in n or "norm" in n for n in names)
    assert all("momentum_buffer" in optimizer.muon.state[p] for g in optimizer.muon.param_groups for p in g["params"])
    assert len(changed) == len(list(model.parameters()))


def test_optimizer_errors_are_one_line(tiny_llama3_dir, tmp_path, capsys):
    assert train(tiny_llama3_dir, tmp_path / "x", use_galore="true") == 2  # lora + GaLore
    assert train(tiny_llama3_dir, tmp_path / "x", finetuning_type="full", use_galore="true", use_muon="true") == 2
    assert train(tiny_llama3_dir, tmp_path / "x", finetuning_type="full", use_apollo="true", apollo_layerwise="true",
                 gradient_accumulation_steps=2) == 2
    err = capsys.readouterr().err
    assert "set finetuning_type: full" in err and "keep one" in err and "gradient_accumulation_steps: 1" in err


# -- sft losses --------------------------------------------------------------------------------------------------------
def test_dft_eaft_asft_losses_by_hand():
    import torch.nn.functional as F

    from tunery.train.sft_losses import asft_loss, dft_loss, eaft_loss, token_kl

    torch.manual_seed(0)
    logits = torch.randn(2, 6, 30)
    labels = torch.randint(0, 30, (2, 6))
    labels[:, :2] = -100
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, 30), labels[:, 1:].reshape(-1), reduction="none",
                         ignore_index=-100)
    mask = labels[:, 1:].reshape(-1) != -100
    assert torch.allclose(dft_loss(logits, labels), (ce[mask] * torch.exp(-ce[mask])).mean())
    assert torch.allclose(dft_loss(logits, labels, num_items_in_batch=20), (ce[mask] * torch.exp(-ce[mask])).sum() / 20)
    top = torch.topk(logits[:, :-1].reshape(-1, 30)[mask], 20).values.log_softmax(-1)
    weight = (-(top.exp() * top).sum(-1) / 3.0) ** 2.0
    assert torch.allclose(eaft_loss(logits, labels, alpha=2.0), (ce[mask] * weight).mean())
    assert token_kl(logits, logits, labels).abs() < 1e-6
    ref = torch.randn(2, 6, 30)
    kl = token_kl(logits, ref, labels)
    assert kl > 0 and torch.allclose(asft_loss(logits, labels, ref, alpha=0.5), dft_loss(logits, labels) + 0.5 * kl)


def test_dft_and_asft_train_with_their_loss(tiny_llama3_dir, tmp_path):
    plain, dft, asft = tmp_path / "plain", tmp_path / "dft", tmp_path / "asft"
    assert train(tiny_llama3_dir, plain) == 0
    assert train(tiny_llama3_dir, dft, use_dft_loss="true") == 0
    assert train(tiny_llama3_dir, asft, use_asft_loss="true", asft_alpha=1.0) == 0
    ce, weighted, anchored = (log(o)[0]["loss"] for o in (plain, dft, asft))
    assert ce > 5 and weighted < 0.05  # p ≈ 1/4096 on the random tiny model: the weighted loss is tiny
    assert anchored == pytest.approx(weighted, abs=1e-3)  # first step: the adapter is zero, KL to the base is 0


# -- methods -----------------------------------------------------------------------------------------------------------
def test_oft_adapter_through_peft(tiny_llama3_dir, tmp_path):
    out = tmp_path / "oft"
    assert train(tiny_llama3_dir, out, finetuning_type="oft", oft_block_size=16, oft_target="q_proj,v_proj",
                 module_dropout=0.1) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "OFT" and config["oft_block_size"] == 16 and config["module_dropout"] == 0.1
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert main(["chat", f"model_name_or_path={tiny_llama3_dir}", f"adapter_name_or_path={out}",
                 "finetuning_type=oft", "template=llama3", "--help"]) == 0


def test_pissa_iter_and_convert(tiny_llama3_dir, tmp_path):
    out = tmp_path / "pissa"
    assert train(tiny_llama3_dir, out, pissa_init="true", pissa_iter=4, pissa_convert="true", lora_rank=4) == 0
    assert json.loads((out / "adapter_config.json").read_text())["init_lora_weights"] == "pissa_niter_4"
    converted = json.loads((out / "pissa_converted" / "adapter_config.json").read_text())
    assert converted["r"] == 8 and converted["init_lora_weights"] is True  # a plain LoRA of rank 2r on the base
    assert (out / "pissa_init" / "adapter_model.safetensors").exists()


def test_llama_pro_trains_only_the_expanded_blocks(tiny_llama3_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "pro"
    assert train(tiny_llama3_dir, out, finetuning_type="freeze", use_llama_pro="true", freeze_trainable_layers=1,
                 learning_rate=1e-2) == 0
    base, tuned = load_file(tiny_llama3_dir / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in base if k in tuned and not torch.equal(base[k], tuned[k])}
    assert changed and all(".layers.1." in k for k in changed)  # 2 layers, 1 expanded block: the last one
    lora = tmp_path / "prolora"
    assert train(tiny_llama3_dir, lora, use_llama_pro="true", freeze_trainable_layers=1) == 0
    targets = json.loads((lora / "adapter_config.json").read_text())["target_modules"]
    assert targets and all(".layers.1." in t for t in targets)


def test_train_from_scratch_starts_from_random_weights(tiny_llama3_dir, tmp_path):
    from tunery.model.load import load_model, load_tokenizer

    cfg = config(tiny_llama3_dir, tmp_path / "o", finetuning_type="full", train_from_scratch="true")
    torch.manual_seed(1)
    model = load_model(cfg, load_tokenizer(cfg))
    from safetensors.torch import load_file

    saved = load_file(tiny_llama3_dir / "model.safetensors")
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, saved["model.layers.0.mlp.up_proj.weight"])
    assert model.config.num_hidden_layers == 2


def test_reentrant_gradient_checkpointing(tiny_llama3_dir, tmp_path):
    from tunery.model.adapters import prepare_for_training
    from tunery.model.load import load_model, load_tokenizer

    for flag in (True, False):
        cfg = config(tiny_llama3_dir, tmp_path / "o", gradient_checkpointing="true", use_reentrant_gc=str(flag),
                     finetuning_type="freeze")
        model = prepare_for_training(load_model(cfg, load_tokenizer(cfg)), cfg)
        assert model.model.layers[1]._gradient_checkpointing_func.keywords["use_reentrant"] is flag
        ids = torch.randint(0, 4000, (1, 12))
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        assert model.model.layers[1].mlp.up_proj.weight.grad is not None  # reentrant still reaches frozen-input layers


def test_early_stopping_steps_stops_training(tiny_llama3_dir, tmp_path):
    out = tmp_path / "es"
    assert train(tiny_llama3_dir, out, max_steps=8, val_size=4, eval_strategy="steps", eval_steps=1,
                 early_stopping_steps=1, metric_for_best_model="eval_loss", greater_is_better="true") == 0
    # a falling eval_loss is "worse" when greater is better: patience 1 stops after the second evaluation
    assert max(r["current_steps"] for r in log(out)) == 2


def test_moe_aux_loss_coef_adds_the_router_loss(tiny_llama3_dir, tmp_path):
    from transformers import AutoTokenizer, MixtralConfig, MixtralForCausalLM

    from tunery.model.load import load_model, load_tokenizer

    folder = tmp_path / "tiny-moe"
    torch.manual_seed(0)
    MixtralForCausalLM(MixtralConfig(vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                     num_experts_per_tok=2)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_llama3_dir).save_pretrained(folder)
    ids = torch.randint(0, 4000, (1, 16))
    losses = {}
    for coef in (0.0, 5.0):
        cfg = config(folder, tmp_path / "o", moe_aux_loss_coef=coef, finetuning_type="full")
        model = load_model(cfg, load_tokenizer(cfg))
        assert model.config.router_aux_loss_coef == coef and model.config.output_router_logits
        out = model(input_ids=ids, labels=ids)
        losses[coef] = out.loss.item()
        assert out.aux_loss is not None
    assert losses[5.0] > losses[0.0] + 1.0  # 5 × the load-balancing loss (≥ 1 per layer) is added


# -- tokens and generation ---------------------------------------------------------------------------------------------
def test_new_tokens_are_added_and_initialised(tiny_llama3_dir, tmp_path):
    from tunery.model.load import load_model, load_tokenizer

    described = tmp_path / "tokens.yaml"
    described.write_text('"<|start_of_svg|>": "the beginning of a picture"\n"<|end_of_svg|>": "the end"\n')
    cfg = config(tiny_llama3_dir, tmp_path / "o", add_tokens="hellothere", new_special_tokens_config=described,
                 init_special_tokens="desc_init", finetuning_type="full")
    tokenizer = load_tokenizer(cfg)
    assert len(tokenizer) == 4096 + 3
    assert tokenizer.tokenize("<|start_of_svg|>hellothere") == ["<|start_of_svg|>", "hellothere"]
    special = {t.content: t.special for t in tokenizer.added_tokens_decoder.values()}
    assert special["<|end_of_svg|>"] and not special["hellothere"]
    model = load_model(cfg, tokenizer)
    weight = model.get_input_embeddings().weight
    desc = tokenizer("the end", add_special_tokens=False)["input_ids"]
    new_id = tokenizer.convert_tokens_to_ids("<|end_of_svg|>")
    assert torch.allclose(weight[new_id], weight[desc].mean(0), atol=1e-6)


def test_new_tokens_with_lora_train_the_embeddings(tiny_llama3_dir, tmp_path):
    out = tmp_path / "tok"
    assert train(tiny_llama3_dir, out, add_special_tokens="<|x|>,<|y|>") == 0
    config_ = json.loads((out / "adapter_config.json").read_text())
    assert set(config_["modules_to_save"]) >= {"embed_tokens", "lm_head"}
    assert "<|x|>" in json.loads((out / "tokenizer.json").read_text())["added_tokens"][-2]["content"]


def test_kv_cache_and_eval_beams(tiny_llama3_dir, tmp_path):
    from tunery.chat.engine import HuggingFaceEngine
    from tunery.data.template_select import resolve_template
    from tunery.model.load import load_tokenizer
    from tunery.train.predict import generation_kwargs

    chat = parse_config("chat", [f"model_name_or_path={tiny_llama3_dir}", "template=llama3", "use_kv_cache=false",
                                 "max_new_tokens=4", "do_sample=false"])
    engine = HuggingFaceEngine(chat)
    assert engine.model.generation_config.use_cache is False
    assert engine.chat([{"role": "user", "content": "hi"}]).completion_tokens > 0  # generates without the cache
    cfg = config(tiny_llama3_dir, tmp_path / "o", eval_num_beams=3, num_beams=1)
    tokenizer = load_tokenizer(cfg)
    assert generation_kwargs(cfg, resolve_template(cfg, tokenizer), tokenizer)["num_beams"] == 3


def test_gpu_only_options_refused_on_cpu(tiny_llama3_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert train(tiny_llama3_dir, tmp_path / "q", stage="dpo", dataset="dpo_en_demo",
                 ref_model_quantization_bit=4) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "ref_model_quantization_bit" in err


# -- logging -----------------------------------------------------------------------------------------------------------
def test_swanlab_offline_logs_the_run(tiny_llama3_dir, tmp_path):
    pytest.importorskip("swanlab")
    logdir = tmp_path / "swanlog"
    assert train(tiny_llama3_dir, tmp_path / "sw", use_swanlab="true", swanlab_mode="offline",
                 swanlab_logdir=logdir, swanlab_project="tunery-test", swanlab_run_name="tiny") == 0
    runs = list(logdir.glob("run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*"))
