"""Methods and their options (LoRA variants, LoRA+, continuing adapters), the DPO losses, evaluation, prediction
and the one-line errors for bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import one_error_line

from tunery.cli import main
from tunery.demo import DATA_DIR

FAST = {"max_steps": 2, "max_samples": 16, "cutoff_len": 128, "logging_steps": 1, "save_steps": 2,
        "per_device_train_batch_size": 2, "report_to": "none", "overwrite_output_dir": "true", "template": "llama3"}


pytestmark = pytest.mark.usefixtures("one_thread")


def train(model: Path, out: Path, **options) -> int:
    values = dict(FAST, model_name_or_path=model, output_dir=out, **options)
    values.setdefault("dataset", "identity")
    values.setdefault("dataset_dir", DATA_DIR)
    return main(["train", *(f"{k}={v}" for k, v in values.items())])


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sft_adapter(tiny_llama3_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adapter") / "sft"
    assert train(tiny_llama3_dir, out, lora_rank=4) == 0
    return out


# -- LoRA variants ---------------------------------------------------------------------------------------------------
def test_lora_variants_in_one_run(tiny_llama3_dir, tmp_path):
    """DoRA + rsLoRA + LoRA+ + extra full module + gradient checkpointing + NEFTune all train together."""
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "variants"
    assert train(tiny_llama3_dir, out, use_dora="true", use_rslora="true", loraplus_lr_ratio=16,
                 additional_target="embed_tokens", gradient_checkpointing="true", neftune_noise_alpha=5) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["use_dora"] and config["use_rslora"] and config["modules_to_save"] == ["embed_tokens"]
    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_magnitude_vector" in k for k in weights)
    assert any("embed_tokens" in k and "lora" not in k for k in weights)
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.neftune_noise_alpha == 5


def test_loraplus_groups_give_lora_b_the_higher_rate(tiny_llama3_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunery.train.trainer_base import loraplus_param_groups

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama3_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    groups = loraplus_param_groups(model, 1e-4, 16.0, 1e-6, 0.01, decay_names=names)
    by_id = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        kinds = {"B" if "lora_B" in by_id[id(p)] else "A" for p in group["params"]}
        assert len(kinds) == 1
        assert math.isclose(group["lr"], 1.6e-3 if kinds == {"B"} else 1e-4)
    assert sum(len(g["params"]) for g in groups) == len(names)


def test_continuing_an_adapter_starts_from_its_weights(tiny_llama3_dir, sft_adapter, tmp_path):
    """learning_rate 0 makes the start point visible: continuing keeps the adapter, create_new_adapter starts a
    fresh one (lora_B = 0) on top of the merged adapter."""
    import torch
    from safetensors.torch import load_file

    old = load_file(sft_adapter / "adapter_model.safetensors")
    out = tmp_path / "continued"
    assert train(tiny_llama3_dir, out, adapter_name_or_path=sft_adapter, learning_rate=0, lora_rank=4) == 0
    continued = load_file(out / "adapter_model.safetensors")
    assert continued.keys() == old.keys() and all(torch.equal(old[k], continued[k]) for k in old)

    out = tmp_path / "new"
    assert train(tiny_llama3_dir, out, adapter_name_or_path=sft_adapter, create_new_adapter="true", learning_rate=0,
                 lora_rank=2) == 0
    fresh = load_file(out / "adapter_model.safetensors")
    assert all(v.abs().sum() == 0 for k, v in fresh.items() if "lora_B" in k)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2


# -- DPO losses ------------------------------------------------------------------------------------------------------
# Before the first update the policy equals its reference, so the first loss is known exactly.
FIRST_LOSS = {"sigmoid": math.log(2), "hinge": 1.0, "ipo": (1 / (2 * 0.1)) ** 2, "kto_pair": 0.5}


@pytest.mark.parametrize("loss", sorted(FIRST_LOSS))
def test_dpo_losses_start_where_the_reference_is(loss, tiny_llama3_dir, shared_datasets, tmp_path):
    out = tmp_path / loss
    assert train(tiny_llama3_dir, out, stage="dpo", dataset="dpo_en_demo", dataset_dir=shared_datasets,
                 pref_loss=loss, max_steps=1) == 0
    first = _log(out)[0]
    assert first["loss"] == pytest.approx(FIRST_LOSS[loss], rel=1e-4)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)


def test_dpo_with_a_separate_reference_model(tiny_llama3_dir, shared_datasets, tmp_path):
    out = tmp_path / "ref"
    assert train(tiny_llama3_dir, out, stage="dpo", dataset="dpo_en_demo", dataset_dir=shared_datasets,
                 ref_model=tiny_llama3_dir, max_steps=1) == 0
    assert _log(out)[0]["loss"] == pytest.approx(math.log(2), rel=1e-4)


def test_pref_ftx_adds_the_sft_loss(tiny_llama3_dir, shared_datasets, tmp_path):
    out = tmp_path / "ftx"
    assert train(tiny_llama3_dir, out, stage="dpo", dataset="dpo_en_demo", dataset_dir=shared_datasets,
                 pref_ftx=1.0, max_steps=1) == 0
    first = _log(out)[0]
    # log 2 + the mean per-token NLL of the chosen answers (≈ log(vocab) on an untrained tiny model)
    assert first["loss"] > math.log(2) + 1.0


# -- evaluation and prediction ---------------------------------------------------------------------------------------
def test_eval_with_best_model_at_end(tiny_llama3_dir, tmp_path):
    out = tmp_path / "eval"
    assert train(tiny_llama3_dir, out, val_size=4, eval_strategy="steps", eval_steps=1, save_strategy="steps",
                 save_steps=1, load_best_model_at_end="true", compute_accuracy="true", plot_loss="true") == 0
    rows = _log(out)
    assert sum("eval_loss" in r for r in rows) == 2 and any("eval_accuracy" in r for r in rows)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"].endswith(("checkpoint-1", "checkpoint-2"))
    assert (out / "training_eval_loss.png").is_file()


def test_evaluate_only(tiny_llama3_dir, sft_adapter, tmp_path):
    out = tmp_path / "eval_only"
    assert main(["train", "do_eval=true", f"model_name_or_path={tiny_llama3_dir}",
                 f"adapter_name_or_path={sft_adapter}", "eval_dataset=identity", f"dataset_dir={DATA_DIR}",
                 "template=llama3", "max_samples=4", f"output_dir={out}", "report_to=none"]) == 0
    assert "eval_loss" in json.loads((out / "eval_results.json").read_text())
    assert not (out / "adapter_model.safetensors").exists()


def test_predict_writes_predictions_and_scores(tiny_llama3_dir, sft_adapter, tmp_path):
    pytest.importorskip("rouge_chinese")
    out = tmp_path / "predict"
    example = Path(__file__).resolve().parents[1] / "examples" / "train_lora" / "llama3_lora_predict.yaml"
    assert main(["train", str(example), f"model_name_or_path={tiny_llama3_dir}", f"adapter_name_or_path={sft_adapter}",
                 f"dataset_dir={DATA_DIR}", f"output_dir={out}", "max_samples=3", "max_new_tokens=8",
                 "report_to=none"]) == 0
    rows = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(set(r) == {"prompt", "predict", "label"} for r in rows)
    assert "<|start_header_id|>user" in rows[0]["prompt"] and rows[0]["label"]
    results = json.loads((out / "predict_results.json").read_text())
    for key in ("predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l"):
        assert 0 <= results[key] <= 100


def test_similarity_scores_identical_text_as_perfect():
    pytest.importorskip("rouge_chinese")
    from tunery.train.metrics import similarity

    scores = similarity(["我爱北京天安门", "hello world"], ["我爱北京天安门", "hello world"])
    assert scores["rouge-1"] == pytest.approx(100) and scores["bleu-4"] == pytest.approx(100)
    assert similarity([""], ["text"])["rouge-l"] == 0


def test_missing_metrics_extra_is_one_line(tiny_llama3_dir, sft_adapter, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "rouge_chinese", None)  # as if the package were not installed
    code = main(["train", "do_predict=true", f"model_name_or_path={tiny_llama3_dir}", "eval_dataset=identity",
                 f"dataset_dir={DATA_DIR}", "template=llama3", f"output_dir={tmp_path / 'p'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and one_error_line(err) and "tunery[metrics]" in err


# -- bad input: one line, exit 2, before the model loads -------------------------------------------------------------
@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a model starts loading (the errors below must come first)."""
    import tunery.model.load as load

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(load, "load_model", refuse)


BAD = {
    "ranking data for sft": (dict(dataset="dpo_en_demo"), "preference (ranking) dataset"),
    "plain data for dpo": (dict(stage="dpo", dataset="alpaca_en_demo"), "not a preference dataset"),
    "ppo without reward model": (dict(stage="ppo"), "needs option 'reward_model'"),
    "ppo reward folder of the wrong kind": (dict(stage="ppo", reward_model="{shared}"), "not a LoRA reward model"),
    "quantization without gpu": (dict(quantization_bit=4), "needs a CUDA GPU"),
    "predict with dpo": (dict(stage="dpo", dataset="dpo_en_demo", do_predict="true", eval_dataset="dpo_en_demo"),
                         "only stage sft"),
    "pref_loss with kto": (dict(stage="kto", dataset="kto_en_demo", pref_loss="orpo"), "used by stage dpo only"),
    "missing fsdp config": (dict(fsdp="full_shard", fsdp_config="nope.json"), "fsdp_config file 'nope.json'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line(case, tiny_llama3_dir, shared_datasets, tmp_path, capsys, no_model_load):
    options, expected = BAD[case]
    options = {k: str(v).replace("{shared}", str(shared_datasets)) for k, v in options.items()}
    options.setdefault("dataset_dir", shared_datasets)
    code = train(tiny_llama3_dir, tmp_path / "out", **options)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert one_error_line(err) and expected in err, err


def test_missing_report_to_package_is_one_line(tiny_llama3_dir, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb"):
        pytest.skip("wandb is installed")
    assert train(tiny_llama3_dir, tmp_path / "out", report_to="wandb") == 2
    assert "pip install wandb" in capsys.readouterr().err


# -- ppo with rewards from an HTTP service, and its resume -----------------------------------------------------------
@pytest.fixture
def reward_server():
    """A reward API on 127.0.0.1: longer texts score higher; remembers how many texts it scored."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    scored = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            scored.extend(body["messages"])
            reply = json.dumps({"scores": [len(text) / 100 for text in body["messages"]]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/score", scored
    server.shutdown()


def test_ppo_with_api_rewards_resumes_exactly(tiny_llama3_dir, reward_server, tmp_path):
    """3 PPO steps; then the run is cut back to checkpoint-2 and rerun: step 3 again gives the same adapter."""
    import shutil

    import torch
    from safetensors.torch import load_file

    url, scored = reward_server
    out = tmp_path / "ppo"
    options = dict(stage="ppo", reward_model=url, reward_model_type="api", max_steps=3, save_steps=1,
                   max_new_tokens=6, overwrite_output_dir="false", lora_rank=4)
    assert train(tiny_llama3_dir, out, **options) == 0
    assert len(scored) == 3 * 2 and all("<|start_header_id|>assistant" in text for text in scored)
    rows = _log(out)
    assert [r["current_steps"] for r in rows] == [1, 2, 3] and rows[0]["kl"] == pytest.approx(0, abs=1e-6)
    first = load_file(out / "adapter_model.safetensors")
    assert (out / "value_head.safetensors").is_file()

    shutil.rmtree(out / "checkpoint-3")
    assert train(tiny_llama3_dir, out, **options) == 0
    again = load_file(out / "adapter_model.safetensors")
    assert all(torch.allclose(first[k], again[k], atol=1e-6) for k in first)
    assert [r["current_steps"] for r in _log(out)] == [1, 2, 3]


def test_ppo_resume_refuses_a_poisoned_optimizer_state(tiny_llama3_dir, reward_server, tmp_path, capsys):
    """A checkpoint someone hands over with code in optimizer.pt: one line naming it, and the code never runs."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    url, _ = reward_server
    out = tmp_path / "ppo"
    options = dict(stage="ppo", reward_model=url, reward_model_type="api", max_steps=1, save_steps=1,
                   max_new_tokens=4, overwrite_output_dir="false", lora_rank=4)
    assert train(tiny_llama3_dir, out, **options) == 0
    with open(out / "checkpoint-1" / "optimizer.pt", "wb") as fh:
        pickle.dump({"state": Payload()}, fh)
    capsys.readouterr()
    assert train(tiny_llama3_dir, out, **{**options, "max_steps": 2}) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "checkpoint-1/optimizer.pt: refused to read it" in err, err
    assert not (tmp_path / "pwned").exists()


def test_ppo_reward_api_down_is_one_line(tiny_llama3_dir, tmp_path, capsys):
    assert train(tiny_llama3_dir, tmp_path / "ppo", stage="ppo", reward_model="http://127.0.0.1:9/score",
                 reward_model_type="api", max_steps=1, max_new_tokens=4) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "gave no scores" in err and "check that the server is up" in err
