"""``debug_data``: the first encoded training example printed before training — its token ids, its text, and the
text of the tokens it is trained on (LLaMA-Factory prints the same for every run)."""

from __future__ import annotations

import sys

from tunery.data.records import IGNORE_INDEX


def print_first_example(examples, tokenizer, stream=None) -> None:
    """Every ``*input_ids`` column of the first example (and its ``*labels``), as ids and as text."""
    stream = stream or sys.stdout
    if examples is None or not len(examples):
        print("debug_data: no training examples", file=stream)
        return
    example = examples[0]
    print("debug_data: the first training example", file=stream)
    for key in [k for k in example if k.endswith("input_ids")]:
        ids = list(example[key])
        print(f"{key}:\n{ids}", file=stream)
        print(f"{key.replace('input_ids', 'inputs')}:\n{tokenizer.decode(ids, skip_special_tokens=False)}",
              file=stream)
        label_key = key.replace("input_ids", "labels")
        if label_key in example:
            labels = list(example[label_key])
            trained = [t for t in labels if t != IGNORE_INDEX]
            print(f"{label_key}:\n{labels}", file=stream)
            print(f"{label_key.replace('labels', 'trained')}:\n{tokenizer.decode(trained, skip_special_tokens=False)}",
                  file=stream)
    stream.flush()
