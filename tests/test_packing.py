"""sft packing: LLaMA-Factory's knapsack, packed rows, and neat packing's loss equal to the unpacked loss."""

from __future__ import annotations

import pytest
import torch

from tunery.config import parse_config
from tunery.data.collate import PackedCollator, build_collator
from tunery.data.dataset import encode_loaded, load_records
from tunery.data.packing import greedy_knapsack, pack_examples, packing_enabled
from tunery.data.records import IGNORE_INDEX
from tunery.demo import DATA_DIR
from tunery.errors import ConfigError

IGN = IGNORE_INDEX


def cfg_for(model_dir, tmp_path, **over):
    values = dict(model_name_or_path=str(model_dir), template="llama3", dataset="identity", dataset_dir=str(DATA_DIR),
                  output_dir=str(tmp_path / "out"), cutoff_len=128, max_samples=12,
                  placeholders={"name": "Tunery", "author": "the Tunery team"})
    values.update(over)
    return parse_config("train", overrides=values)


# ---------------------------------------------------------------- knapsack and rows
def test_greedy_knapsack_takes_the_longest_that_fits():
    # sorted: 2 3 5 7 8 -> [8, 2], [7, 3], [5]; indices of those lengths
    assert greedy_knapsack([5, 3, 8, 2, 7], 10) == [[2, 3], [4, 1], [0]]
    # equal lengths: the last example of a length goes first (LLaMA-Factory's length2indexes.pop())
    assert greedy_knapsack([4, 4, 4], 8) == [[2, 1], [0]]
    assert greedy_knapsack([], 8) == []
    with pytest.raises(ValueError):
        greedy_knapsack([9], 8)


def test_pack_examples_rows():
    examples = [{"input_ids": [10 + i] * n, "labels": [20 + i] * n, "attention_mask": [1] * n}
                for i, n in enumerate([5, 3, 8, 2, 7])]
    rows = pack_examples(examples, cutoff_len=11)  # capacity 10 (LLaMA-Factory packs to cutoff_len - 1)
    assert [r["input_ids"] for r in rows] == [[12] * 8 + [13] * 2, [14] * 7 + [11] * 3, [10] * 5]
    assert rows[0]["position_ids"] == list(range(8)) + [0, 1]
    # each packed example's first label is ignored: unpacked, that token is never predicted either
    assert rows[0]["labels"] == [IGN] + [22] * 7 + [IGN, 23]
    assert all(len(r["input_ids"]) <= 10 for r in rows)
    # batches are packed on their own (preprocessing_batch_size)
    assert len(pack_examples(examples, cutoff_len=100, batch_size=2)) == 3


def test_packing_options(tiny_llama3_dir, tmp_path):
    assert packing_enabled(cfg_for(tiny_llama3_dir, tmp_path, neat_packing=True))  # neat_packing implies packing
    assert not packing_enabled(cfg_for(tiny_llama3_dir, tmp_path))
    with pytest.raises(ConfigError, match="neat_packing.*sft only"):
        cfg_for(tiny_llama3_dir, tmp_path, neat_packing=True, stage="dpo")
    from transformers import DataCollatorForSeq2Seq

    assert isinstance(build_collator(cfg_for(tiny_llama3_dir, tmp_path), None), DataCollatorForSeq2Seq)
    collator = build_collator(cfg_for(tiny_llama3_dir, tmp_path, neat_packing=True, flash_attn="sdpa"), _Tok())
    assert isinstance(collator, PackedCollator) and collator.neat and not collator.flatten


class _Tok:
    pad_token_id = 0


# ---------------------------------------------------------------- neat packing = separate examples
@pytest.fixture(scope="module")
def tokenizer(tiny_llama3_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama3_dir)


def _prepared(cfg, tokenizer):
    from tunery.data.template_select import resolve_template

    template = resolve_template(cfg, tokenizer)
    return encode_loaded(cfg, load_records(cfg), template, tokenizer, keep_unpacked=True)


def _token_loss_sum(model, batch) -> tuple[float, int]:
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1),
                                             ignore_index=IGN, reduction="sum")
    return loss.item(), int((labels != IGN).sum())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_neat_packing_loss_equals_unpacked_loss(tiny_llama3_dir, tokenizer, tmp_path, attn):
    from transformers import AutoModelForCausalLM

    # train_on_prompt: the first token of each example is labelled too, so a leak across examples would show
    cfg = cfg_for(tiny_llama3_dir, tmp_path, neat_packing=True, train_on_prompt=True,
                  flash_attn="disabled" if attn == "eager" else attn)
    prepared = _prepared(cfg, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama3_dir, attn_implementation=attn).eval()
    assert model.config.use_cache  # the collator itself turns the cache off (packing is detected without one)
    assert len(prepared.train) < len(prepared.unpacked) == 12

    unpacked_sum, unpacked_n = 0.0, 0
    for example in prepared.unpacked:
        batch = {k: torch.tensor([example[k]]) for k in ("input_ids", "labels")}
        loss, n = _token_loss_sum(model, batch)
        unpacked_sum, unpacked_n = unpacked_sum + loss, unpacked_n + n

    collator = build_collator(cfg, tokenizer, model=model)
    packed = collator(prepared.train)
    assert "attention_mask" not in packed and packed["position_ids"].shape == packed["input_ids"].shape
    packed_sum, packed_n = _token_loss_sum(model, packed)
    assert packed_n == unpacked_n
    assert packed_sum == pytest.approx(unpacked_sum, rel=1e-4)

    # the flash-attention layout (whole batch in one row, no padding) gives the same loss on sdpa/eager too
    flat = PackedCollator(tokenizer.pad_token_id, neat=True, flatten=True)(prepared.train)
    assert flat["input_ids"].shape[0] == 1
    assert _token_loss_sum(model, flat)[0] == pytest.approx(unpacked_sum, rel=1e-4)

    # plain packing lets packed examples see each other (LLaMA-Factory's packing): a different loss
    leaky = PackedCollator(tokenizer.pad_token_id, neat=False)(prepared.train)
    assert "attention_mask" in leaky
    assert _token_loss_sum(model, leaky)[0] != pytest.approx(unpacked_sum, rel=1e-4)


def test_trainer_runs_on_packed_batches(tiny_llama3_dir, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, Seq2SeqTrainer, Seq2SeqTrainingArguments

    cfg = cfg_for(tiny_llama3_dir, tmp_path, neat_packing=True, cutoff_len=256)
    prepared = _prepared(cfg, tokenizer)
    assert prepared.packing["sequences"] == len(prepared.train) and prepared.packing["examples"] == 12
    model = AutoModelForCausalLM.from_pretrained(tiny_llama3_dir)
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=2,
                                    report_to=[], save_strategy="no", logging_steps=1, use_cpu=True)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=prepared.train,
                             data_collator=build_collator(cfg, tokenizer, model=model))
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0


# ---------------------------------------------------------------- padding-free batches
def test_padding_free_options(tiny_llama3_dir, tmp_path):
    collator = build_collator(cfg_for(tiny_llama3_dir, tmp_path, padding_free=True), _Tok())
    assert isinstance(collator, PackedCollator) and collator.flatten
    with pytest.raises(ConfigError, match="padding_free.*sft only"):
        cfg_for(tiny_llama3_dir, tmp_path, padding_free=True, stage="rm")
    with pytest.raises(ConfigError, match="neat_packing: true or remove padding_free"):
        cfg_for(tiny_llama3_dir, tmp_path, padding_free=True, packing=True)
    assert build_collator(cfg_for(tiny_llama3_dir, tmp_path, padding_free=True, neat_packing=True), _Tok()).flatten


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_loss_equals_padded_loss(tiny_llama3_dir, tokenizer, tmp_path, attn):
    from transformers import AutoModelForCausalLM

    cfg = cfg_for(tiny_llama3_dir, tmp_path, train_on_prompt=True, flash_attn="disabled" if attn == "eager" else attn)
    examples = list(_prepared(cfg, tokenizer).train)
    assert len({len(e["input_ids"]) for e in examples}) > 1  # padding is needed for a plain batch
    model = AutoModelForCausalLM.from_pretrained(tiny_llama3_dir, attn_implementation=attn).eval()
    padded = build_collator(cfg, tokenizer)(examples)
    padded_sum, padded_n = _token_loss_sum(model, padded)

    flat = build_collator(cfg_for(tiny_llama3_dir, tmp_path, train_on_prompt=True, padding_free=True), tokenizer)(
        examples)
    assert flat["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in examples))
    assert "attention_mask" not in flat and (flat["input_ids"] != tokenizer.pad_token_id).all()
    # each example's first token (position 0) is not a target: nothing is predicted across examples
    starts = flat["position_ids"][0] == 0
    assert int(starts.sum()) == len(examples) and (flat["labels"][0][starts] == IGN).all()
    flat_sum, flat_n = _token_loss_sum(model, flat)
    assert flat_n == padded_n
    assert flat_sum == pytest.approx(padded_sum, rel=1e-4)


def test_padding_free_training_follows_the_padded_run(tiny_llama3_dir, tmp_path):
    """Two optimizer steps through `tunery train`: the same losses with and without padding."""
    import json

    from tunery.train.run import run_train

    losses = {}
    for name, over in (("padded", {"padding_free": False}), ("flat", {"padding_free": True})):
        cfg = cfg_for(tiny_llama3_dir, tmp_path, output_dir=str(tmp_path / name), finetuning_type="lora",
                      per_device_train_batch_size=4, max_steps=2, logging_steps=1, report_to="none",
                      learning_rate=1e-2, save_strategy="no", **over)
        run_train(cfg)
        lines = (tmp_path / name / "trainer_log.jsonl").read_text().splitlines()
        losses[name] = [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]
    assert len(losses["padded"]) == 2
    assert losses["flat"] == pytest.approx(losses["padded"], rel=1e-3)


class _DropsPositions(torch.nn.Module):
    """A model that ignores position_ids, as architectures without packed-sequence masks do."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids, position_ids=None, use_cache=False):
        return self.model(input_ids=input_ids, use_cache=use_cache)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_by_default_only_where_the_model_keeps_examples_apart(tiny_llama3_dir, tmp_path, attn):
    from transformers import AutoModelForCausalLM

    from tunery.data.collate import padding_free_enabled
    from tunery.model.packed_attention import keeps_examples_apart

    model = AutoModelForCausalLM.from_pretrained(tiny_llama3_dir, attn_implementation=attn).train()
    assert keeps_examples_apart(model) and model.training  # the check leaves the model in training mode
    leaky = _DropsPositions(model)
    assert not keeps_examples_apart(leaky)

    cfg = cfg_for(tiny_llama3_dir, tmp_path)  # padding_free unset
    assert padding_free_enabled(cfg, model) and build_collator(cfg, _Tok(), model=model).flatten
    assert not padding_free_enabled(cfg, leaky)
    assert isinstance(build_collator(cfg, _Tok(), model=leaky), type(build_collator(cfg, _Tok())))  # padded
    assert not padding_free_enabled(cfg_for(tiny_llama3_dir, tmp_path, padding_free=False), model)
    assert not padding_free_enabled(cfg_for(tiny_llama3_dir, tmp_path, packing=True), model)  # rows already full
    assert padding_free_enabled(cfg_for(tiny_llama3_dir, tmp_path, neat_packing=True), model)
    assert not padding_free_enabled(cfg_for(tiny_llama3_dir, tmp_path, neftune_noise_alpha=5), model)
