"""`tunery eval`: the bundled benchmarks, CSV reading, letter scoring end to end on tiny models, results.json,
--compare, and every bad input (one line, exit 2, before the model loads)."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest

from tunery.cli import main
from tunery.errors import ConfigError, DataError
from tunery.eval import BENCHMARKS_DIR
from tunery.eval.prompt import STYLES, build_messages
from tunery.eval.tasks import (
    CATEGORIES,
    CHOICES,
    load_benchmark,
    read_csv,
    resolve_task,
)

REPO = Path(__file__).resolve().parents[1]


def run_eval(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(["eval", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, err: str) -> str:
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    # no traceback from the command (a "--- Logging error ---" is the log handler writing to an earlier test's
    # captured stderr, not the command failing)
    assert err.count("Traceback") == err.count("--- Logging error ---"), err
    return lines[0]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return path


def q(text: str, answer: str) -> list[str]:
    return [text, "one", "two", "three", "four", answer]


@pytest.fixture(scope="session")
def weightless_model(tiny_llama3_dir, tmp_path_factory) -> Path:
    """The tiny model's config and tokenizer without weights: loading the model would fail, so an error about the
    data or the template proves it came before the model load."""
    out = tmp_path_factory.mktemp("weightless") / "model"
    shutil.copytree(tiny_llama3_dir, out, ignore=shutil.ignore_patterns("*.safetensors"))
    return out


# ----------------------------------------------------------------------------------------- data and layout
def test_bundled_benchmarks():
    for name, lang in (("tunery_demo", "en"), ("tunery_demo_zh", "zh")):
        bench = load_benchmark(name, None, "test", 5)
        assert bench.lang == lang
        assert len(bench.subjects) == 4
        assert sorted(s.category for s in bench.subjects) == sorted(CATEGORIES)
        for subject in bench.subjects:
            assert len(subject.dev) == 5 and len(subject.questions) == 8
            assert sorted(x.answer for x in subject.questions) == list("AABBCCDD")  # a constant guess scores 25 %
        assert len(load_benchmark(name, None, "validation", 0).subjects[0].questions) == 3
    zh = load_benchmark("tunery_demo_zh", None, "test", 0)
    assert {s.name for s in zh.subjects} == {"初等数学", "中国地理", "中国历史", "日常生活常识"}


def test_bundled_data_ships_with_the_package():
    from pathlib import PurePosixPath

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["tunery"]
    package = BENCHMARKS_DIR.parents[1]
    files = [PurePosixPath(p.relative_to(package).as_posix()) for p in BENCHMARKS_DIR.rglob("*") if p.is_file()]
    assert len(files) == 2 * (12 + 1) + 3  # two benchmarks: 4 subjects x 3 splits + mapping; 3 hub mappings
    missing = [str(f) for f in files if not any(f.match(pattern) for pattern in patterns)]
    assert not missing, missing


def test_csv_with_and_without_header(tmp_path):
    plain = write_csv(tmp_path / "a_test.csv", [q("What, with a comma?", "b"), [], q("Second", "D")])
    rows = read_csv(plain)
    assert [r.answer for r in rows] == ["B", "D"]
    assert rows[0].question == "What, with a comma?" and rows[1].where.endswith("a_test.csv:3")
    cmmlu = write_csv(tmp_path / "b_test.csv", [["", "Question", "A", "B", "C", "D", "Answer"],
                                                 ["0", "Q?", "w", "x", "y", "z", "C"]])
    assert read_csv(cmmlu)[0].choices == ("w", "x", "y", "z") and read_csv(cmmlu)[0].answer == "C"
    ceval = write_csv(tmp_path / "c_val.csv", [["id", "question", "A", "B", "C", "D", "answer", "explanation"],
                                                ["0", "Q?", "w", "x", "y", "z", "A", "because"]])
    assert read_csv(ceval)[0].answer == "A"
    gbk = tmp_path / "d_test.csv"
    gbk.write_bytes("问题,甲,乙,丙,丁,A\n".encode("gbk"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_csv(gbk)


def test_folder_layouts_and_mapping(tmp_path):
    flat = tmp_path / "flat"
    write_csv(flat / "physics_test.csv", [q("P?", "A")])
    write_csv(flat / "physics_dev.csv", [q("D1", "B"), q("D2", "C")])
    (flat / "mapping.json").write_text(json.dumps({"physics": {"name": "physics", "category": "STEM"}}))
    bench = load_benchmark(str(flat), None, "test", 2)
    assert bench.subjects[0].category == "STEM" and len(bench.subjects[0].dev) == 2
    nested = tmp_path / "nested"  # CMMLU: dev/SUBJECT.csv, test/SUBJECT.csv; C-Eval style mapping
    write_csv(nested / "test" / "law.csv", [q("中国的法律？", "A")])
    write_csv(nested / "dev" / "law.csv", [q("D", "B")])
    (nested / "subject_mapping.json").write_text(json.dumps({"law": ["Law", "法学", "Humanities"]}),
                                                 encoding="utf-8")
    bench = load_benchmark("nested", str(tmp_path), "test", 1)
    assert bench.lang == "zh" and bench.subjects[0].name == "法学" and bench.subjects[0].category == "Humanities"


def test_task_suffix_picks_the_split():
    assert resolve_task("tunery_demo_validation", None, "test").split == "validation"
    assert resolve_task("tunery_demo_test", None, "test").split == "test"
    with pytest.raises(ConfigError, match="picks split 'validation'"):
        resolve_task("tunery_demo_validation", None, "test", split_explicit=True)


def test_hub_name_fails_fast_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(DataError, match="cannot reach the Hugging Face hub for 'cais/mmlu'"):
        load_benchmark("mmlu_test", None, "test", 5)
    assert time.perf_counter() - started < 20
    with pytest.raises(ConfigError, match="cmmlu has no 'validation' split"):
        load_benchmark("cmmlu", None, "validation", 0)


# ----------------------------------------------------------------------------------------- bad input: one line, exit 2
def test_missing_task_folder(weightless_model, tmp_path, capsys):
    code, _, err = run_eval(["--model_name_or_path", str(weightless_model), "--task", str(tmp_path / "nope")], capsys)
    line = one_line_error(code, err)
    assert "no benchmark" in line and "tunery_demo" in line


def test_bad_csv_rows(weightless_model, tmp_path, capsys):
    bench = tmp_path / "bad"
    write_csv(bench / "x_test.csv", [q("ok", "A"), q("ok", "B"), ["too", "few", "columns"]])
    code, _, err = run_eval(["--model_name_or_path", str(weightless_model), "--task", str(bench), "--n_shot", "0"],
                            capsys)
    line = one_line_error(code, err)
    assert f"{bench / 'x_test.csv'}:3: expected 6 columns" in line
    write_csv(bench / "x_test.csv", [["question", "A", "B", "C", "D", "answer"], q("ok", "A"), q("bad", "E")])
    code, _, err = run_eval(["--model_name_or_path", str(weightless_model), "--task", str(bench), "--n_shot", "0"],
                            capsys)
    line = one_line_error(code, err)
    assert f"{bench / 'x_test.csv'}:3: answer 'E' is not one of A, B, C, D" in line


def test_n_shot_larger_than_dev(weightless_model, capsys):
    code, _, err = run_eval(["--model_name_or_path", str(weightless_model), "--task", "tunery_demo", "--n_shot", "6"],
                            capsys)
    line = one_line_error(code, err)
    assert "'n_shot' = 6" in line and "only 5 dev" in line


def test_model_without_template(weightless_model, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(weightless_model, bare)
    (bare / "chat_template.jinja").unlink()
    code, _, err = run_eval(["--model_name_or_path", str(bare), "--task", "tunery_demo"], capsys)
    line = one_line_error(code, err)
    assert "has no chat template" in line and "--template" in line


def test_option_combinations(weightless_model, capsys):
    base = ["--model_name_or_path", str(weightless_model)]
    assert "option 'task' is required" in one_line_error(*run_eval(base, capsys)[::2])
    assert "give adapter_name_or_path" in one_line_error(*run_eval(base + ["--task", "tunery_demo", "--compare"],
                                                                   capsys)[::2])
    assert "needs 'tasks'" in one_line_error(*run_eval(base + ["--backend", "lm_eval"], capsys)[::2])


def test_lm_eval_missing_says_how_to_install(weightless_model, capsys):
    pytest.importorskip("tunery")  # always present; lm-eval must be absent for this check
    try:
        import lm_eval  # noqa: F401

        pytest.skip("lm-eval is installed")
    except ImportError:
        pass
    code, _, err = run_eval(["--model_name_or_path", str(weightless_model), "--backend", "lm_eval", "--tasks",
                             "arc_easy"], capsys)
    assert "pip install lm-eval" in one_line_error(code, err)


def test_help_lists_the_eval_options(capsys):
    assert main(["eval", "-h"]) == 0
    out = capsys.readouterr().out
    for flag in ("--task ", "--task_dir", "--n_shot", "--lang", "--split", "--batch_size", "--save_dir", "--compare",
                 "--backend", "--tasks", "--adapter_name_or_path", "--template"):
        assert flag in out, flag


# ----------------------------------------------------------------------------------------- scoring end to end
def check_results(doc: dict, bench) -> None:
    """Counts in results.json agree with each other and with the answers in the CSV files."""
    subjects = doc["subjects"]
    assert set(subjects) == {s.key for s in bench.subjects}
    for s in bench.subjects:
        entry = subjects[s.key]
        assert entry["total"] == len(s.questions) == len(entry["predictions"])
        assert entry["correct"] == sum(p == x.answer for p, x in zip(entry["predictions"], s.questions))
        assert entry["category"] == s.category
        assert entry["accuracy"] == pytest.approx(entry["correct"] / entry["total"], abs=1e-6)
    for name, cat in doc["categories"].items():
        members = [subjects[k] for k in cat["subjects"]]
        assert all(m["category"] == name for m in members)
        assert cat["correct"] == sum(m["correct"] for m in members)
        assert cat["total"] == sum(m["total"] for m in members)
        assert cat["accuracy"] == pytest.approx(cat["correct"] / cat["total"], abs=1e-6)
    assert doc["average"]["total"] == sum(c["total"] for c in doc["categories"].values()) == bench.size
    assert doc["average"]["correct"] == sum(c["correct"] for c in doc["categories"].values())


def test_random_model_scores_near_chance(tiny_llama3_dir, tmp_path, capsys):
    code, out, _ = run_eval(["--model_name_or_path", str(tiny_llama3_dir), "--task", "tunery_demo",
                             "--save_dir", str(tmp_path)], capsys)
    assert code == 0
    doc = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    check_results(doc, load_benchmark("tunery_demo", None, "test", 5))
    assert doc["n_shot"] == 5 and doc["lang"] == "en" and doc["split"] == "test" and doc["template"] == "tokenizer"
    assert 0.1 <= doc["average"]["accuracy"] <= 0.45
    assert list(doc["categories"]) == list(CATEGORIES)
    assert "Average" in out and "world geography" in out and "%" in out


def test_scoring_is_deterministic_and_batch_invariant(tiny_qwen_dir):
    from tunery.config import parse_config
    from tunery.eval.run import eval_template
    from tunery.eval.scorer import (
        EncodeStats,
        encode_subject,
        letter_tokens,
        score_prompts,
    )
    from tunery.model.load import load_model, load_tokenizer

    cfg = parse_config("eval", ["--model_name_or_path", str(tiny_qwen_dir), "--task", "tunery_demo_zh"])
    bench = load_benchmark("tunery_demo_zh", None, "test", 3)
    tokenizer = load_tokenizer(cfg)
    template = eval_template(cfg, tokenizer)
    letters = letter_tokens(template, tokenizer, STYLES["zh"])
    assert all(len(ids) >= 1 for ids in letters.ids) and len({i for ids in letters.ids for i in ids}) >= 4
    prompts = [p for s in bench.subjects
               for p in encode_subject(template, tokenizer, s, STYLES["zh"], 3, 2048, letters, EncodeStats())]
    assert "以下是中国关于" in tokenizer.decode(prompts[0])
    assert len({len(p) for p in prompts}) > 1  # padding is exercised
    model = load_model(cfg, tokenizer).eval()
    one = score_prompts(model, prompts, letters, tokenizer.pad_token_id, batch_size=1)
    many = score_prompts(model, prompts, letters, tokenizer.pad_token_id, batch_size=7)
    again = score_prompts(model, prompts, letters, tokenizer.pad_token_id, batch_size=7)
    assert [c for c, _ in one] == [c for c, _ in many]
    assert many == again
    for (_, p1), (_, p2) in zip(one, many):
        assert p1 == pytest.approx(p2, abs=1e-4)
        assert sum(p1) == pytest.approx(1.0, abs=1e-4)


def test_reasoning_template_prefix(tiny_qwen_dir):
    from tunery.config import parse_config
    from tunery.eval.run import eval_template
    from tunery.eval.scorer import letter_tokens
    from tunery.model.load import load_tokenizer

    cfg = parse_config("eval", ["--model_name_or_path", str(tiny_qwen_dir), "--task", "tunery_demo",
                                "--template", "qwen3"])
    tokenizer = load_tokenizer(cfg)
    letters = letter_tokens(eval_template(cfg, tokenizer), tokenizer, STYLES["en"])
    assert tokenizer.decode(list(letters.prefix)) == "<think>\n\n</think>\n\n"  # the empty thought, then the letter
    assert [tokenizer.decode(list(ids[:1])) for ids in letters.ids] == list(CHOICES)


@pytest.fixture(scope="module")
def finetuned_dir(tiny_llama3_dir, tmp_path_factory) -> Path:
    """Full fine-tuning of the tiny model on the bundled benchmark's own test answers, through `tunery train`:
    the 0-shot prompt of each question as an alpaca instruction, the answer letter as output."""
    import torch

    root = tmp_path_factory.mktemp("eval_ft")
    bench = load_benchmark("tunery_demo", None, "test", 0)
    rows = [{"instruction": build_messages(x, [], s.name, STYLES["en"])[0]["content"], "input": "", "output": x.answer}
            for s in bench.subjects for x in s.questions]
    (root / "data").mkdir()
    (root / "data" / "mc.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (root / "data" / "dataset_info.json").write_text(json.dumps({"demo_mc": {"file_name": "mc.json"}}))
    out = root / "full"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on busy shared cores trains faster on one thread
    try:
        assert main(["train", "--stage", "sft", "--model_name_or_path", str(tiny_llama3_dir), "--dataset", "demo_mc",
                     "--dataset_dir", str(root / "data"), "--template", "llama3", "--finetuning_type", "full",
                     "--output_dir", str(out), "--overwrite_output_dir", "--per_device_train_batch_size", "4",
                     "--learning_rate", "3e-3", "--lr_scheduler_type", "constant", "--num_train_epochs", "25",
                     "--logging_steps", "20", "--save_strategy", "no", "--report_to", "none", "--seed", "0"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_finetuned_on_the_answers_scores_nearly_100(finetuned_dir, tmp_path, capsys):
    code, out, _ = run_eval(["--model_name_or_path", str(finetuned_dir), "--template", "llama3", "--task",
                             "tunery_demo", "--n_shot", "0", "--batch_size", "8", "--save_dir", str(tmp_path)], capsys)
    assert code == 0
    doc = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    check_results(doc, load_benchmark("tunery_demo", None, "test", 0))
    assert doc["average"]["accuracy"] >= 0.9, out
    print(out)


def test_compare_base_and_adapter(tiny_llama3_dir, tmp_path, capsys):
    """--compare = the model without its adapter and with it, in one run; each equals the separate run."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    base_model = AutoModelForCausalLM.from_pretrained(tiny_llama3_dir)
    lora = get_peft_model(base_model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 init_lora_weights=False))
    lora.save_pretrained(adapter)
    common = ["--task", "tunery_demo_zh", "--n_shot", "0", "--batch_size", "8"]
    model = ["--model_name_or_path", str(tiny_llama3_dir)]
    code, out, _ = run_eval(model + common + ["--adapter_name_or_path", str(adapter), "--compare", "--save_dir",
                                              str(tmp_path / "cmp")], capsys)
    assert code == 0
    assert "base vs fine-tuned" in out and "Δ" in out
    doc = json.loads((tmp_path / "cmp" / "results.json").read_text(encoding="utf-8"))
    bench = load_benchmark("tunery_demo_zh", None, "test", 0)
    check_results(doc["base"], bench)
    check_results(doc["finetuned"], bench)
    for name, delta in doc["difference"].items():
        base = doc["base"]["average" if name == "Average" else "categories"]
        tuned = doc["finetuned"]["average" if name == "Average" else "categories"]
        if name != "Average":
            base, tuned = base[name], tuned[name]
        assert delta == pytest.approx(tuned["accuracy"] - base["accuracy"], abs=1e-6)
    assert run_eval(model + common + ["--save_dir", str(tmp_path / "b")], capsys)[0] == 0
    assert run_eval(model + common + ["--adapter_name_or_path", str(adapter), "--save_dir", str(tmp_path / "f")],
                    capsys)[0] == 0
    alone_base = json.loads((tmp_path / "b" / "results.json").read_text(encoding="utf-8"))
    alone_tuned = json.loads((tmp_path / "f" / "results.json").read_text(encoding="utf-8"))
    assert doc["base"]["subjects"] == alone_base["subjects"]
    assert doc["finetuned"]["subjects"] == alone_tuned["subjects"]
    assert doc["base"]["subjects"] != doc["finetuned"]["subjects"]  # the adapter changed the answers
