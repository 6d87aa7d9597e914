"""A reward model trained by `tunery train --stage rm` (LoRA) is served by ChatModel.get_scores unchanged."""

from __future__ import annotations

import pytest

from tunery.cli import main


def test_lora_reward_model_scores_match_peft(tiny_llama3_dir, shared_datasets, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunery import ChatModel

    out = tmp_path / "rm"
    assert main(["train", "--stage", "rm", "--model_name_or_path", str(tiny_llama3_dir), "--dataset", "dpo_en_demo",
                 "--dataset_dir", str(shared_datasets), "--template", "llama3", "--finetuning_type", "lora",
                 "--output_dir", str(out), "--max_samples", "8", "--max_steps", "2",
                 "--per_device_train_batch_size", "2", "--learning_rate", "1e-2"]) == 0
    texts = ["a short answer", "a somewhat longer answer with more words in it"]
    scores = ChatModel({"model_name_or_path": str(tiny_llama3_dir), "adapter_name_or_path": str(out),
                        "template": "llama3", "stage": "rm", "finetuning_type": "lora"}).get_scores(texts)

    tokenizer = AutoTokenizer.from_pretrained(out)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_llama3_dir, num_labels=1)
    base.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(base, out).eval()
    with torch.inference_mode():
        expected = [float(model(input_ids=torch.tensor([tokenizer.encode(t, add_special_tokens=False)])).logits[0, 0])
                    for t in texts]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert scores[0] != pytest.approx(scores[1])
