"""The preference losses on TRL's trainers equal the hand-written implementation Tunery had before (its math is kept
here as the reference) on the same batches of a tiny LoRA model; Tunery's own losses (orpo, simpo) against TRL's
experimental trainers' formulas; and the PPO arithmetic."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import one_error_line

from tunery.train.losses import orpo_loss, sequence_logps, simpo_loss
from tunery.train.ppo_core import (
    AdaptiveKL,
    advantages_and_returns,
    masked_whiten,
    token_rewards,
)

ACCELERATOR = SimpleNamespace(device=torch.device("cpu"))
BETA = 0.3


# -- the reference: Tunery's hand-written losses before they moved onto TRL (LLaMA-Factory's math) -----------------
def old_dpo_loss(chosen, rejected, ref_chosen, ref_rejected, loss_type, beta, label_smoothing=0.0):
    logits = (chosen - rejected) - (ref_chosen - ref_rejected)
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    if loss_type == "hinge":
        return torch.relu(1 - beta * logits)
    if loss_type == "ipo":
        return (logits - 1 / (2 * beta)) ** 2
    raise ValueError(loss_type)


def old_kto_loss(logps, ref_logps, kl, desirable, beta, chosen_weight, rejected_weight):
    logratios = logps - ref_logps
    return torch.where(desirable, chosen_weight * (1 - torch.sigmoid(beta * (logratios - kl))),
                       rejected_weight * (1 - torch.sigmoid(beta * (kl - logratios))))


def _logps(model, batch, prefix=""):
    logits = model(input_ids=batch[prefix + "input_ids"], attention_mask=batch[prefix + "attention_mask"]).logits
    return sequence_logps(logits, batch[prefix + "labels"])


def old_dpo_step(model, batch, loss_type, beta, label_smoothing=0.0, ftx=0.0):
    """The old DpoTrainer.preference_loss: sums (averages for ipo), reference = the adapter switched off."""
    logps, lengths = _logps(model, batch)
    with torch.no_grad(), model.disable_adapter():
        ref_logps, _ = _logps(model, batch)
    if loss_type == "ipo":
        logps, ref_logps = logps / lengths, ref_logps / lengths
    (chosen, rejected), (ref_chosen, ref_rejected) = logps.chunk(2), ref_logps.chunk(2)
    loss = old_dpo_loss(chosen, rejected, ref_chosen, ref_rejected, loss_type, beta, label_smoothing).mean()
    avg_chosen = (_logps(model, batch)[0] / lengths).chunk(2)[0]
    return loss + ftx * (-avg_chosen).mean() if ftx else loss


# -- a tiny LoRA policy (random non-zero adapter, so policy and reference differ) and batches of pairs -------------
@pytest.fixture(scope="module")
def policy(tiny_llama3_dir, tiny_llama3_lora):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama3_dir), tiny_llama3_lora,
                                      is_trainable=True)
    return model, AutoTokenizer.from_pretrained(tiny_llama3_dir)


def _pair(gen, prompt_len, chosen_len, rejected_len, vocab=200):
    prompt = torch.randint(5, vocab, (prompt_len,), generator=gen).tolist()
    out = {}
    for name, n in (("chosen", chosen_len), ("rejected", rejected_len)):
        answer = torch.randint(5, vocab, (n,), generator=gen).tolist()
        out[f"{name}_input_ids"] = prompt + answer
        out[f"{name}_attention_mask"] = [1] * (prompt_len + n)
        out[f"{name}_labels"] = [-100] * prompt_len + answer
    return out


def _pairs(equal_chosen=False):
    gen = torch.Generator().manual_seed(3)
    shapes = [(6, 5, 9), (3, 5, 2), (8, 5, 4)] if equal_chosen else [(6, 4, 9), (3, 7, 2), (8, 1, 5)]
    return [_pair(gen, *shape) for shape in shapes]


def _config(tmp_path, model_dir, **options):
    from tunery.config.loader import parse_config

    values = dict(stage="dpo", do_train=True, output_dir=str(tmp_path), model_name_or_path=str(model_dir),
                  dataset="dpo_en_demo")
    return parse_config("train", overrides={**values, **options})


def _trl_trainer(cls, policy, cfg, examples, collator):
    from transformers import Seq2SeqTrainingArguments

    model, tokenizer = policy
    args = Seq2SeqTrainingArguments(output_dir=cfg.output_dir, report_to="none", remove_unused_columns=False,
                                    per_device_train_batch_size=len(examples))
    return cls(cfg=cfg, model=model, args=args, train_dataset=examples, data_collator=collator,
               processing_class=tokenizer)


CASES = {  # name: (pref_loss, dpo_label_smoothing, pref_ftx, equal chosen lengths)
    "sigmoid": ("sigmoid", 0.0, 0.0, False),
    "sigmoid-smoothing": ("sigmoid", 0.2, 0.0, False),
    "hinge": ("hinge", 0.0, 0.0, False),
    "ipo": ("ipo", 0.0, 0.0, False),
    "sigmoid-ftx": ("sigmoid", 0.0, 0.5, True),
    "ipo-ftx": ("ipo", 0.0, 1.0, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dpo_on_trl_equals_the_old_loss(case, policy, tiny_llama3_dir, tmp_path, capsys):
    from tunery.train.collators import PairwiseCollator, TrlPairwiseCollator
    from tunery.train.dpo import DpoTrainer

    kind, smoothing, ftx, equal = CASES[case]
    model, tokenizer = policy
    examples = _pairs(equal)
    with torch.no_grad():
        expected = old_dpo_step(model, PairwiseCollator(tokenizer.pad_token_id)(examples), kind, BETA, smoothing, ftx)
    cfg = _config(tmp_path, tiny_llama3_dir, pref_loss=kind, pref_beta=BETA, dpo_label_smoothing=smoothing, pref_ftx=ftx)
    trainer = _trl_trainer(DpoTrainer, policy, cfg, examples, TrlPairwiseCollator(tokenizer.pad_token_id))
    assert "ref" not in model.peft_config  # the reference is the adapter switched off, as before
    with torch.no_grad():
        got = trainer.compute_loss(model, TrlPairwiseCollator(tokenizer.pad_token_id)(examples))
    with capsys.disabled():
        print(f"\n  dpo {case}: old {expected.item():.8f}  TRL {got.item():.8f}")
    assert expected.item() > 0.05 and got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_trl_reference_copy_leaves_a_pissa_model_alone(tiny_llama3_dir, tmp_path):
    """TRL copies the starting adapter as its reference; Tunery drops the copy (the reference is the adapter switched
    off), and the copy must not run PiSSA's initialisation on the base weights a second time."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunery.train.collators import TrlPairwiseCollator
    from tunery.train.dpo import DpoTrainer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama3_dir), LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=2, target_modules=["q_proj", "v_proj"], init_lora_weights="pissa_niter_2"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = _config(tmp_path, tiny_llama3_dir)
    _trl_trainer(DpoTrainer, (model, tokenizer), cfg, _pairs(), TrlPairwiseCollator(tokenizer.pad_token_id))
    assert list(model.peft_config) == ["default"] and model.peft_config["default"].init_lora_weights == "pissa_niter_2"
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_pref_ftx_on_trl_averages_over_tokens(policy, tiny_llama3_dir, tmp_path):
    """With unequal chosen lengths TRL's sft term (token mean) differs from LLaMA-Factory's per-answer mean."""
    from tunery.train.collators import PairwiseCollator, TrlPairwiseCollator
    from tunery.train.dpo import DpoTrainer

    model, tokenizer = policy
    examples = _pairs(equal_chosen=False)
    batch = PairwiseCollator(tokenizer.pad_token_id)(examples)
    with torch.no_grad():
        logps, lengths = _logps(model, batch)
        dpo = old_dpo_step(model, batch, "sigmoid", BETA)
        token_mean = -(logps.chunk(2)[0].sum() / lengths.chunk(2)[0].sum())
        answer_mean = -(logps / lengths).chunk(2)[0].mean()
    cfg = _config(tmp_path, tiny_llama3_dir, pref_beta=BETA, pref_ftx=1.0)
    trainer = _trl_trainer(DpoTrainer, policy, cfg, examples, TrlPairwiseCollator(tokenizer.pad_token_id))
    with torch.no_grad():
        got = trainer.compute_loss(model, TrlPairwiseCollator(tokenizer.pad_token_id)(examples)).item()
    assert got == pytest.approx((dpo + token_mean).item(), rel=1e-5)
    assert abs(token_mean - answer_mean) > 1e-3


def _kto_examples(seed=5):
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i, (p, n, m) in enumerate([(5, 4, 6), (3, 6, 4), (7, 2, 3), (4, 5, 5)]):
        pair = _pair(gen, p, n, m)
        rows.append({"input_ids": pair["chosen_input_ids"], "attention_mask": pair["chosen_attention_mask"],
                     "labels": pair["chosen_labels"], "kl_input_ids": pair["rejected_input_ids"],
                     "kl_attention_mask": pair["rejected_attention_mask"], "kl_labels": pair["rejected_labels"],
                     "kto_tags": i != 1})
    return rows


def test_kto_on_trl_equals_the_old_loss(policy, tiny_llama3_dir, tmp_path, capsys):
    from tunery.train.collators import KtoCollator, TrlKtoCollator
    from tunery.train.kto import KtoTrainer

    model, tokenizer = policy
    for seed in range(5, 25):  # a batch whose KL estimate is above 0 (it is clamped at 0)
        examples = _kto_examples(seed)
        batch = KtoCollator(tokenizer.pad_token_id)(examples)
        with torch.no_grad():  # the old KtoTrainer.kto_step
            logps, _ = _logps(model, batch)
            kl_logps, _ = _logps(model, batch, "kl_")
            with model.disable_adapter():
                ref_logps, _ = _logps(model, batch)
                ref_kl_logps, _ = _logps(model, batch, "kl_")
            kl = (kl_logps - ref_kl_logps).mean().clamp(min=0)
            expected = old_kto_loss(logps, ref_logps, kl, batch["kto_tags"], BETA, 1.5, 0.7).mean()
            lengths = (batch["labels"][:, 1:] != -100).sum(-1)
            expected = expected + 0.5 * (-logps / lengths)[batch["kto_tags"]].mean()  # pref_ftx 0.5
        if kl > 0:
            break
    assert kl > 0
    cfg = _config(tmp_path, tiny_llama3_dir, stage="kto", pref_beta=BETA, kto_chosen_weight=1.5, kto_rejected_weight=0.7,
                  pref_ftx=0.5)
    trainer = _trl_trainer(KtoTrainer, policy, cfg, examples, TrlKtoCollator(tokenizer.pad_token_id))
    with torch.no_grad():
        got = trainer.compute_loss(model, TrlKtoCollator(tokenizer.pad_token_id)(examples))
    with capsys.disabled():
        print(f"\n  kto (KL {kl.item():.5f}): old {expected.item():.8f}  TRL {got.item():.8f}")
    assert got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_kto_keeps_the_run_sampling_and_batch_size(policy, tiny_llama3_dir, tmp_path):
    """TRL's KTOTrainer asks for in-order batches of two or more; Tunery's KL pairs do not need them."""
    from tunery.train.collators import TrlKtoCollator
    from tunery.train.kto import KtoTrainer

    model, tokenizer = policy
    cfg = _config(tmp_path, tiny_llama3_dir, stage="kto")
    trainer = _trl_trainer(KtoTrainer, policy, cfg, _kto_examples()[:1], TrlKtoCollator(tokenizer.pad_token_id))
    assert trainer.args.per_device_train_batch_size == 1 and trainer._train_batch_size == 1
    assert isinstance(trainer._get_train_sampler(), torch.utils.data.RandomSampler)


def test_reward_on_trl_equals_the_old_loss(tiny_llama3_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Seq2SeqTrainingArguments

    from tunery.train.collators import PairwiseCollator
    from tunery.train.rm import RewardTrainer, _collator

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama3_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    examples = _pairs()
    with torch.no_grad():
        batch = PairwiseCollator(tokenizer.pad_token_id)(examples)
        scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        chosen, rejected = scores.chunk(2)
        expected = -F.logsigmoid(chosen - rejected).mean()
    cfg = _config(tmp_path, tiny_llama3_dir, stage="rm")
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), report_to="none", remove_unused_columns=False)
    trainer = RewardTrainer(cfg=cfg, model=model, args=args, train_dataset=examples, processing_class=tokenizer,
                            data_collator=_collator(cfg, tokenizer, None))
    trl_batch = _collator(cfg, tokenizer, None)([{"chosen_ids": e["chosen_input_ids"],
                                                  "rejected_ids": e["rejected_input_ids"]} for e in examples])
    with torch.no_grad():
        got = trainer.compute_loss(model, trl_batch)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


# -- TRL's further DPO losses and options, end to end --------------------------------------------------------------
def _train(model_dir, out, datasets, **options):
    import json

    from tunery.cli import main

    values = dict(stage="dpo", dataset="dpo_en_demo", dataset_dir=datasets, model_name_or_path=model_dir,
                  output_dir=out, max_steps=1, max_samples=8, cutoff_len=96, logging_steps=1, save_steps=10,
                  per_device_train_batch_size=2, report_to="none", overwrite_output_dir="true", **options)
    code = main(["train", *(f"{k}={v}" for k, v in values.items())])
    return code, [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()] if code == 0 \
        else []


# Before the first update the policy equals its reference (logratios 0), so the first loss is known exactly.
FIRST = {
    "apo_zero": dict(pref_loss="apo_zero", expect=1.0),  # (1 − σ(0)) + σ(0)
    "bco weight": dict(pref_bco_weight=1.0, expect=(math.log(2) + 2 * math.log(2)) / 2),  # (dpo + bco)/(1 + 1)
    "ld_alpha": dict(ld_alpha=0.5, expect=math.log(2)),
    "robust": dict(pref_loss="robust", dpo_label_smoothing=0.1, expect=math.log(2)),
}


@pytest.mark.parametrize("case", sorted(FIRST))
def test_trl_losses_and_options_train(case, tiny_llama3_dir, shared_datasets, tmp_path):
    options = dict(FIRST[case])
    expect = options.pop("expect")
    code, rows = _train(tiny_llama3_dir, tmp_path / "out", shared_datasets, **options)
    assert code == 0 and rows[0]["loss"] == pytest.approx(expect, rel=1e-4)
    assert rows[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("options,expected", [
    (dict(pref_loss="exo_pair"), "needs dpo_label_smoothing > 0"),
    (dict(dpo_label_smoothing=0.5), "below 0.5"),
    (dict(pref_loss="orpo", ld_alpha=0.5), "TRL's DPOTrainer"),
])
def test_bad_preference_options_are_one_line(options, expected, tiny_llama3_dir, shared_datasets, tmp_path, capsys):
    code, _ = _train(tiny_llama3_dir, tmp_path / "out", shared_datasets, **options)
    err = capsys.readouterr().err.strip()
    assert code == 2 and one_error_line(err) and expected in err, err


# -- Tunery's own losses against the formulas of TRL's experimental trainers --------------------------------------
def _trl(cls, **attrs):
    """A TRL trainer object with only the attributes its loss method reads (its __init__ needs a whole run)."""
    obj = object.__new__(cls)
    obj.__dict__.update(dict({"accelerator": ACCELERATOR, "label_smoothing": 0.0}, **attrs))
    return obj


def test_simpo_and_orpo_match_trl_experimental():
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    chosen, rejected = (-torch.rand(5) * 2 - 0.01 for _ in range(2))  # average log-probabilities (< 0)
    cpo = _trl(CPOTrainer, beta=2.0, simpo_gamma=0.5, loss_type="simpo", alpha=0.0)
    assert torch.allclose(simpo_loss(chosen, rejected, 2.0, 0.5), cpo.cpo_loss(chosen, rejected)[0], atol=1e-6)
    orpo = _trl(ORPOTrainer, beta=0.1)
    _, _, odds_ratio = orpo_loss(chosen, rejected, 0.1)
    trl_losses = orpo.odds_ratio_loss(chosen, rejected)[0]  # β·log σ(log-odds), subtracted from the NLL by TRL
    assert torch.allclose(0.1 * odds_ratio, -trl_losses, atol=1e-6)


def test_sequence_logps_counts_only_labelled_tokens():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, -100, -100, -100]])
    logps, lengths = sequence_logps(logits, labels)
    manual = logits.log_softmax(-1)
    assert lengths.tolist() == [3, 1]
    assert torch.allclose(logps[0], manual[0, 1, 3] + manual[0, 2, 4] + manual[0, 3, 1])
    assert torch.allclose(logps[1], manual[1, 0, 2])


def test_gae_matches_a_step_by_step_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [0.3, 0.4, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = advantages_and_returns(rewards, values, mask)
    # γ = 1, λ = 0.95; masked values are 0
    v = values * mask
    raw = torch.zeros_like(rewards)
    for row in range(2):
        gae = 0.0
        for t in reversed(range(3)):
            nxt = v[row, t + 1] if t < 2 else 0.0
            gae = rewards[row, t] + nxt - v[row, t] + 0.95 * gae
            raw[row, t] = gae
    assert torch.allclose(returns, raw + v)
    assert torch.allclose(advantages, masked_whiten(raw, mask) * mask)


def test_kl_penalty_and_controller():
    scores = torch.tensor([1.0, -1.0])
    logps = torch.tensor([[-1.0, -2.0], [-1.0, -3.0]])
    ref = torch.tensor([[-1.5, -2.0], [-1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    rewards, kl = token_rewards(scores, logps, ref, mask, kl_coef=0.1)
    assert torch.allclose(rewards, torch.tensor([[-0.05, 1.0], [-1.0, 0.0]]))
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0], [0.0, 0.0]]))
    control = AdaptiveKL(value=0.2, target=6.0, horizon=100)
    control.update(12.0, n_steps=10)  # KL above target: the coefficient grows (error clipped at +0.2)
    assert control.value == pytest.approx(0.2 * 1.02)
