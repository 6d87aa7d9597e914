"""Migration parity: Tunery encodes the same records into the same input_ids and labels as LLaMA-Factory 0.9.5.

LLaMA-Factory runs in its own virtualenv (``bash ../shared/bench/llamafactory/setup.sh``; ``LF_VENV`` or
/tmp/llamafactory-venv), through its own ``get_train_args`` → ``load_tokenizer`` → ``get_template_and_fix_tokenizer``
→ ``get_dataset``, in one subprocess for all cases. The test is skipped when that virtualenv is absent (CI).

Cases: identity (raw placeholders, and filled: Tunery's ``placeholders`` option vs. a pre-filled copy for
LLaMA-Factory), alpaca_en_demo, glaive_toolcall_en_demo (tools, function calls, observations), a multi-turn sharegpt
set with system prompts, and dpo_en_demo (chosen/rejected); templates llama3 and qwen on the tiny models' tokenizers;
cutoff_len 1024 and 64 (truncation), and mask_history.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tunery.config import parse_config

VENV = Path(os.environ.get("LF_VENV") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "llamafactory-venv"))
LF_PYTHON = VENV / "bin" / "python"
FILLED = {"name": "Tunery", "author": "the Tunery team"}
SFT_DATA = "identity,alpaca_en_demo,glaive_toolcall_en_demo,sharegpt_multiturn"
MAX_SAMPLES = 30

LF_SCRIPT = r'''
import json, sys
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
from llamafactory.data import get_template_and_fix_tokenizer, get_dataset

spec = json.load(open(sys.argv[1]))
out = {}
for case in spec["cases"]:
    args = dict(do_train=True, finetuning_type="lora", report_to="none", overwrite_cache=True,
                output_dir=spec["output_dir"], **case["args"])
    model_args, data_args, training_args, _, _ = get_train_args(args)
    module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
    stage = "rm" if args["stage"] == "dpo" else args["stage"]
    data = get_dataset(template, model_args, data_args, training_args, stage=stage, **module)["train_dataset"]
    out[case["name"]] = {key: list(data[key]) for key in case["keys"]}
json.dump(out, open(sys.argv[2], "w"))
'''

SFT_KEYS = ["input_ids", "labels"]
PAIR_KEYS = ["chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"]


def _cases(models: dict) -> list[dict]:
    cases = []
    for family, template in (("llama3", "llama3"), ("qwen", "qwen")):
        base = dict(model_name_or_path=models[family], template=template, max_samples=MAX_SAMPLES, stage="sft")
        for cutoff in (1024, 64):
            cases.append(dict(name=f"{family}-sft-{cutoff}", keys=SFT_KEYS,
                              args=dict(base, dataset=SFT_DATA, cutoff_len=cutoff)))
        cases.append(dict(name=f"{family}-identity-filled", keys=SFT_KEYS, tunery=dict(placeholders=FILLED,
                          dataset="identity"), args=dict(base, dataset="identity_filled", cutoff_len=1024)))
        cases.append(dict(name=f"{family}-dpo-64", keys=PAIR_KEYS,
                          args=dict(base, stage="dpo", dataset="dpo_en_demo", cutoff_len=64)))
    cases.append(dict(name="llama3-mask-history-64", keys=SFT_KEYS,
                      args=dict(cases[0]["args"], dataset="sharegpt_multiturn,glaive_toolcall_en_demo", cutoff_len=64,
                                mask_history=True)))
    return cases


def _dataset_dir(shared: Path, folder: Path) -> Path:
    """The shared demo files, a pre-filled identity copy and a multi-turn sharegpt set built from alpaca_en_demo."""
    folder.mkdir(parents=True, exist_ok=True)
    registry = json.loads((shared / "dataset_info.json").read_text())
    info = {name: registry[name] for name in ("identity", "alpaca_en_demo", "glaive_toolcall_en_demo", "dpo_en_demo")}
    for entry in info.values():
        (folder / entry["file_name"]).write_bytes((shared / entry["file_name"]).read_bytes())
    text = (shared / "identity.json").read_text(encoding="utf-8")
    for key, value in FILLED.items():
        text = text.replace("{{" + key + "}}", value)
    (folder / "identity_filled.json").write_text(text, encoding="utf-8")
    info["identity_filled"] = {"file_name": "identity_filled.json"}
    alpaca = json.loads((shared / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    conversations = []
    for i in range(MAX_SAMPLES):
        turns = []
        for row in alpaca[3 * i:3 * i + 2 + i % 2]:  # two or three user/assistant turns
            turns += [{"from": "human", "value": (row["instruction"] + "\n" + row["input"]).strip()},
                      {"from": "gpt", "value": row["output"]}]
        conversations.append({"conversations": turns, "system": "You are a careful assistant." if i % 3 else ""})
    (folder / "sharegpt_multiturn.json").write_text(json.dumps(conversations, ensure_ascii=False), encoding="utf-8")
    info["sharegpt_multiturn"] = {"file_name": "sharegpt_multiturn.json", "formatting": "sharegpt",
                                  "columns": {"messages": "conversations", "system": "system"}}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=1))
    return folder


@pytest.fixture(scope="module")
def parity(tiny_llama3_dir, tiny_qwen_dir, shared_datasets, tmp_path_factory):
    if not LF_PYTHON.exists():
        pytest.skip(f"LLaMA-Factory virtualenv not found at {VENV} — run `bash ../shared/bench/llamafactory/setup.sh` "
                    "(or set LF_VENV) to compare with LLaMA-Factory")
    work = tmp_path_factory.mktemp("lf-parity")
    data_dir = _dataset_dir(shared_datasets, work / "data")
    cases = _cases({"llama3": str(tiny_llama3_dir), "qwen": str(tiny_qwen_dir)})
    for case in cases:
        case["args"]["dataset_dir"] = str(data_dir)
    spec = work / "spec.json"
    spec.write_text(json.dumps({"output_dir": str(work / "out"), "cases": cases}))
    script = work / "lf_dump.py"
    script.write_text(LF_SCRIPT)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", DISABLE_VERSION_CHECK="1", TOKENIZERS_PARALLELISM="false",
               HF_HOME=str(work / "hf"), WANDB_DISABLED="true")
    result = subprocess.run([str(LF_PYTHON), str(script), str(spec), str(work / "lf.json")], env=env,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail("LLaMA-Factory failed:\n" + result.stderr[-3000:])
    return cases, json.loads((work / "lf.json").read_text())


def _tunery(case: dict, tmp_path) -> list[dict]:
    from tunery.data.dataset import encode_loaded
    from tunery.data.record_store import load_to_arrow
    from tunery.data.template_select import resolve_template
    from tunery.model.load import load_tokenizer

    values = dict(case["args"], output_dir=str(tmp_path / "out"), **case.get("tunery", {}))
    cfg = parse_config("train", overrides=values)
    tokenizer = load_tokenizer(cfg)
    template = resolve_template(cfg, tokenizer)
    folder = tmp_path / f"encoded-{case['name']}"
    folder.mkdir()
    loaded = load_to_arrow(cfg, str(folder))  # the path training takes: records streamed into Arrow, then encoded
    return encode_loaded(cfg, loaded, template, tokenizer, folder=str(folder)).train, [r.source for r in loaded.train]


def _first_difference(ours: list[dict], theirs: dict, keys: list[str], sources: list[str]) -> str:
    for key in keys:
        if len(theirs[key]) != len(ours):
            return f"{key}: {len(ours)} examples in Tunery, {len(theirs[key])} in LLaMA-Factory"
        for i, (a, b) in enumerate(zip((e[key] for e in ours), theirs[key])):
            if a != b:
                at = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                return (f"{key} of example {i} ({sources[i] if i < len(sources) else '?'}) differs at token {at}: "
                        f"Tunery {a[max(0, at - 3):at + 5]} (len {len(a)}) vs LLaMA-Factory "
                        f"{b[max(0, at - 3):at + 5]} (len {len(b)})")
    return ""


def test_same_tokens_as_llamafactory(parity, tmp_path):
    cases, lf = parity
    problems = []
    for case in cases:
        ours, sources = _tunery(case, tmp_path)
        key = case["keys"][0]
        assert len(ours) >= MAX_SAMPLES - 1, case["name"]
        if case["name"].endswith("-64"):  # truncation is exercised
            assert max(len(e[key]) for e in ours) == 64, case["name"]
        print(f"{case['name']}: {len(ours)} examples, {sum(len(e[key]) for e in ours)} tokens")
        diff = _first_difference(ours, lf[case["name"]], case["keys"], sources)
        if diff:
            problems.append(f"{case['name']}: {diff}")
    assert not problems, "\n".join(problems)
