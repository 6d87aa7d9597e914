"""The stage table (config/stages.py): every row's pieces exist, the other layers read it instead of testing stage
names, and a new row is picked up by the data layer without any other edit."""

from __future__ import annotations

import ast
import importlib
import inspect
from dataclasses import replace
from pathlib import Path

import pytest

from tunery.config import stages
from tunery.config.registry import all_options
from tunery.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "tunery"
TABLE = SRC / "config" / "stages.py"


def test_every_row_has_its_pieces():
    from tunery.data import encode

    assert tuple(all_options()["stage"].choices) == tuple(stages.STAGES)
    for spec in stages.STAGES.values():
        module, _, func = spec.trainer.partition(":")
        recipe = getattr(importlib.import_module(module), func)  # the trainer module and its entry exist
        assert callable(recipe) and list(inspect.signature(recipe).parameters) == ["cfg"], spec.name
        assert callable(getattr(encode, f"encode_{spec.encoder}")), spec.name
        assert spec.reads in stages.RECORD_KINDS and spec.uses <= set(stages.FEATURES)
        assert spec.sequences == (2 if spec.encoder in ("pairwise", "kto") else 1), spec.name
        assert spec.name in all_options()["stage"].help  # the option's help is generated from the rows
    # orpo and simpo are pref_loss values of dpo, not stages: the data layer knows no such names
    assert "orpo" not in stages.ENCODE_AS and "simpo" not in stages.ENCODE_AS
    with pytest.raises(ConfigError, match="unknown stage 'orpo'.*use one of pt, sft"):
        stages.stage_spec("orpo")


def test_run_train_follows_the_table():
    from tunery.train.run import recipe
    from tunery.train.sft import run_sft

    assert recipe("sft") is run_sft


def _is_stage_ref(node) -> bool:
    """``stage``, ``cfg.stage``, ``x["stage"]``."""
    if isinstance(node, ast.Name):
        return node.id == "stage"
    if isinstance(node, ast.Attribute):
        return node.attr == "stage"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "stage"
    return False


def _stage_names(node) -> list[str]:
    elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else \
        node.keys if isinstance(node, ast.Dict) else [node]
    return [e.value for e in elts if isinstance(e, ast.Constant) and e.value in stages.STAGES]


def test_the_table_is_the_only_place_stages_are_enumerated():
    """No module compares a stage with a name (``stage == "sft"``, ``cfg.stage in ("dpo", "kto")``) or lists two or
    more stage names in a literal: what a stage does is a lookup of its row."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == TABLE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(_is_stage_ref(s) for s in sides) and any(_stage_names(s) for s in sides):
                    found.append(f"{where}: compares a stage with a name")
            elif isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) and len(_stage_names(node)) >= 2:
                found.append(f"{where}: lists stages {_stage_names(node)}")
    assert not found, "\n".join(found)


def test_the_checker_sees_a_stage_test(tmp_path):
    """The AST check above catches what it is for (so that it cannot pass by looking at nothing)."""
    tree = ast.parse('if cfg.stage in ("dpo", "kto"): pass\nif stage == "sft": pass\nX = ("rm", "dpo")\n')
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    assert all(any(_is_stage_ref(s) for s in [c.left, *c.comparators]) for c in compares) and len(compares) == 2
    assert [len(_stage_names(n)) for n in ast.walk(tree) if isinstance(n, ast.Tuple)] == [2, 2]


def test_a_new_row_is_all_the_data_layer_needs(monkeypatch, tmp_path, tiny_llama3_dir):
    """A stage added as one row (here a copy of sft under a new name) converts, checks and encodes its records with
    no edit anywhere else in data/."""
    from transformers import AutoTokenizer

    from tunery.data.encoded import encode_dataset
    from tunery.data.formats import to_aligned
    from tunery.data.loader import check_stage_fit
    from tunery.data.registry import spec_from_entry
    from tunery.data.templates import get_template

    monkeypatch.setitem(stages.STAGES, "sft2", replace(stages.STAGES["sft"], name="sft2"))
    spec = spec_from_entry("ds", {"file_name": "x.json"}, "/data", "/data/dataset_info.json")
    rows = [{"instruction": "hi", "input": "", "output": "hello"}, {"instruction": "no answer", "output": None}]
    check_stage_fit(spec, "sft2")
    got, want = to_aligned(rows, spec, "sft2"), to_aligned(rows, spec, "sft")
    assert [(r.prompt, r.response) for r in got] == [(r.prompt, r.response) for r in want] and len(got) == 1
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    template = get_template("llama3")
    template.fix_tokenizer(tokenizer)
    assert list(encode_dataset(got, "sft2", template, tokenizer, 64)) == list(encode_dataset(want, "sft", template,
                                                                                          tokenizer, 64))
    with pytest.raises(ConfigError, match="unknown stage 'sft3'"):
        to_aligned(rows, spec, "sft3")
