"""`tunery quickstart`: build the tiny model, LoRA-fine-tune it on the bundled identity set, compare answers.

The whole main job in one command, offline, in a few minutes on two CPU cores. The same steps by hand:

    tunery demo --output models/tiny-llama3
    tunery train src/tunery/demo/quickstart.yaml
    printf 'Who are you?\\n' | tunery chat examples/llama3_lora_chat.yaml
"""

from __future__ import annotations

import time
from pathlib import Path

from tunery.demo import DATA_DIR

QUESTIONS = ("Who are you?", "你是谁")
NAME, AUTHOR = "Tunery", "the Tunery team"
# The tiny model is random (its weights start at a scale LoRA can steer); LoRA learns the identity in a few hundred
# steps with the settings in quickstart.yaml beside this file. No warm-up is needed (`tunery demo --warmup-steps`).
CONFIG = Path(__file__).with_name("quickstart.yaml")


def _answers(cfg_overrides: dict) -> list[str]:
    from tunery.chat.engine import create_engine
    from tunery.config import parse_config

    engine = create_engine(parse_config("chat", overrides=cfg_overrides))
    return [engine.chat([{"role": "user", "content": q}]).text.strip() for q in QUESTIONS]


def run_quickstart(model_dir: str, output_dir: str, epochs: float | None = None) -> int:
    """The three steps (the arguments are parsed by ``tunery quickstart`` in cli.py)."""
    from tunery.demo.tiny import build_tiny_model
    from tunery.config import parse_config
    from tunery.train.run import run_train

    start = time.time()
    print(f"[1/3] building the tiny Llama-3-style model in {model_dir}")
    model_dir = str(build_tiny_model(model_dir, family="llama3"))

    print(f"[2/3] LoRA fine-tuning on the bundled identity set → {output_dir}")
    overrides = {"model_name_or_path": model_dir, "dataset_dir": str(DATA_DIR), "output_dir": output_dir,
                 "placeholders": {"name": NAME, "author": AUTHOR}}
    if epochs is not None:
        overrides["num_train_epochs"] = epochs
    run_train(parse_config("train", [str(CONFIG)], overrides=overrides))

    print("[3/3] greedy answers, base model vs. fine-tuned (base + adapter)")
    chat = {"model_name_or_path": model_dir, "template": "llama3", "do_sample": False, "max_new_tokens": 48}
    base = _answers(chat)
    tuned = _answers(dict(chat, adapter_name_or_path=output_dir, finetuning_type="lora"))
    for question, before, after in zip(QUESTIONS, base, tuned):
        print(f"\nUser: {question}\n  base : {before!r}\n  tuned: {after!r}")
    learned = sum(NAME in answer for answer in tuned)
    print(f"\nThe fine-tuned model names itself '{NAME}' in {learned}/{len(QUESTIONS)} answers "
          f"(base: {sum(NAME in a for a in base)}/{len(QUESTIONS)}). Total time {time.time() - start:.0f} s.")
    print(f"Artifacts: {Path(output_dir).resolve()} (adapter, trainer_log.jsonl, training_loss.png)")
    print(f"Chat yourself: tunery chat --model_name_or_path {model_dir} --adapter_name_or_path {output_dir} "
          "--template llama3 --finetuning_type lora")
    return 0
