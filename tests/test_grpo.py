"""Stage grpo: the built-in rewards, the checks on reward functions (one line, before the model loads where they can
be known), the record's columns reaching user functions, the demo learning its reward, and kill -9 then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import one_error_line

from tunery.cli import main
from tunery.demo import DATA_DIR
from tunery.train.grpo_rewards import (
    accuracy,
    answers_match,
    final_answer,
    format_reward,
    length_reward,
    parse_number,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "train_lora" / "llama3_lora_grpo.yaml"
# a short grpo run: 2 prompts × 4 completions of at most 8 tokens per step
QUICK = {"dataset": "arithmetic_demo", "dataset_dir": DATA_DIR, "template": "llama3", "stage": "grpo",
         "max_samples": 16, "cutoff_len": 128, "per_device_train_batch_size": 8, "num_generations": 4,
         "max_completion_length": 8, "max_steps": 1, "logging_steps": 1, "save_steps": 100,
         "report_to": "none", "overwrite_output_dir": "true", "lora_rank": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def train(model: Path, out: Path, **options) -> int:
    values = dict(QUICK, model_name_or_path=model, output_dir=out, **options)
    return main(["train", *(f"{k}={v}" for k, v in values.items())])


def log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


# -- built-in rewards ------------------------------------------------------------------------------------------------
def test_final_answer_and_numbers():
    assert final_answer("<think>7 + 5 is 12</think><answer> 12 </answer>") == "12"
    assert final_answer(r"so \boxed{\frac{1}{3}} and then 5") == r"\frac{1}{3}"
    assert final_answer("Natalia sold 48/2 = 24 clips.\n#### 72") == "72"
    assert final_answer("first 3, then 4, finally -2.5.") == "-2.5"
    assert final_answer("Paris") == "Paris"
    assert parse_number("1,234") == 1234 and parse_number(r"\frac{3}{4}") == parse_number("0.75")
    assert parse_number("50%") == parse_number("1/2") and parse_number("$12.") == 12
    assert parse_number("1/0") is None and parse_number("twelve") is None
    assert answers_match("0.5", "1/2") and answers_match(" paris.", "Paris") and not answers_match("12", "13")


@pytest.mark.skipif(__import__("importlib").util.find_spec("math_verify") is None, reason="math-verify not installed")
def test_accuracy_uses_math_verify_when_installed():
    assert answers_match(r"\sqrt{16}", "4") and answers_match("2x + x^2", "x^2 + 2x")
    assert not answers_match(r"\sqrt{15}", "4")


def test_accuracy_reads_the_reference_columns():
    completions = ["<answer>83</answer>", "it is 84", "83", "whatever"]
    rewards = accuracy(["p"] * 4, completions, answer=["83", "83", None, None],
                       reference=["x", "x", "<think>..</think><answer>83</answer>", None])
    assert rewards == [1.0, 0.0, 1.0, None]  # answer first, then reference; None: nothing to compare with


def test_format_and_length():
    r1 = format_reward(None)
    assert r1([""] * 3, ["<think>a</think> <answer>b</answer>", "<answer>b</answer>", "<think>a</think>"]) == \
        [1.0, 0.0, 0.0]
    assert format_reward(r"\d+")([""] * 2, ["42", "42 apples"]) == [1.0, 0.0]
    target = length_reward(10, 16)
    assert target([""] * 3, ["x" * 10, "x" * 15, "x" * 30]) == [1.0, 0.5, 0.0]
    penalty = length_reward(None, 16)
    assert penalty([""] * 2, ["a", "b"], completion_ids=[[1] * 4, [1] * 16]) == [-0.25, -1.0]


# -- checks before the model loads -----------------------------------------------------------------------------------
def _error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2 and one_error_line(err), err
    return err


def test_reward_function_mistakes_are_one_line_before_loading(tiny_llama3_dir, tmp_path, capsys):
    rewards = tmp_path / "rewards.py"
    rewards.write_text("def good(prompts, completions, **kwargs):\n    return [0.0] * len(prompts)\n\n"
                       "def strict(prompts, completions):\n    return [0.0] * len(prompts)\n")
    out = tmp_path / "out"
    assert "needs option 'reward_funcs'" in _error(capsys, train(tiny_llama3_dir, out))
    err = _error(capsys, train(tiny_llama3_dir, out, reward_funcs=f"{tmp_path}/missing.py:good"))
    assert "no such file" in err and "missing.py" in err
    err = _error(capsys, train(tiny_llama3_dir, out, reward_funcs=f"{rewards}:nice"))
    assert "has no function 'nice'" in err and "good, strict" in err
    err = _error(capsys, train(tiny_llama3_dir, out, reward_funcs=f"{rewards}:strict"))
    assert ":strict'" in err and "no **kwargs" in err
    err = _error(capsys, train(tiny_llama3_dir, out, reward_funcs=f"length,{rewards}:good", reward_weights="1"))
    assert "1 value(s) for 2 reward function(s)" in err
    err = _error(capsys, train(tiny_llama3_dir, out, reward_funcs="lenght"))
    assert "neither a built-in" in err
    err = _error(capsys, train(tiny_llama3_dir, out, reward_funcs="length", stage="sft", dataset="identity"))
    assert "used by stage grpo only" in err
    err = _error(capsys, train(tiny_llama3_dir, out, reward_funcs="length", num_generations=3))
    assert "divisible by num_generations" in err  # TRL's own check, as one line
    assert not out.exists()  # nothing was trained or written


@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is not None, reason="vllm is installed")
def test_use_vllm_without_vllm_is_a_clear_error(tiny_llama3_dir, tmp_path, capsys):
    err = _error(capsys, train(tiny_llama3_dir, tmp_path / "out", reward_funcs="length", use_vllm="true"))
    assert "pip install 'tunery[vllm]'" in err


def test_wrong_return_is_one_line_naming_the_function(tiny_llama3_dir, tmp_path, capsys):
    rewards = tmp_path / "rewards.py"
    rewards.write_text("def short(prompts, completions, **kwargs):\n    return [1.0]\n\n"
                       "def texts(prompts, completions, **kwargs):\n    return ['good'] * len(prompts)\n")
    err = _error(capsys, train(tiny_llama3_dir, tmp_path / "a", reward_funcs=f"{rewards}:short"))
    assert "reward function 'short' returned 1 rewards for 8 completions" in err
    err = _error(capsys, train(tiny_llama3_dir, tmp_path / "b", reward_funcs=f"length,{rewards}:texts"))
    assert "reward function 'texts' returned str 'good'" in err


# -- the record's columns reach the reward functions ----------------------------------------------------------------
def test_columns_of_alpaca_and_sharegpt_records_reach_user_functions(tiny_llama3_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa.json").write_text(json.dumps([
        {"instruction": "Add", "input": "2 and 3", "output": "5", "label": "easy", "tests": [1, 2]},
        {"instruction": "Add", "input": "4 and 4", "output": "8", "label": "hard", "tests": [3]}]))
    (data / "chat.json").write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                           {"from": "human", "value": "Name a color"}, {"from": "gpt", "value": "blue"}],
         "system": "Be brief.", "difficulty": 1}]))
    (data / "dataset_info.json").write_text(json.dumps({
        "qa": {"file_name": "qa.json"},
        "chat": {"file_name": "chat.json", "formatting": "sharegpt", "columns": {"messages": "conversations",
                                                                                  "system": "system"}}}))
    seen = tmp_path / "seen.jsonl"
    rewards = tmp_path / "rewards.py"
    rewards.write_text(
        "import json\n"
        "def spy(prompts, completions, **kwargs):\n"
        f"    with open({str(seen)!r}, 'a') as fh:\n"
        "        keep = {k: v for k, v in kwargs.items() if k not in ('trainer_state', 'log_extra', 'log_metric')}\n"
        "        fh.write(json.dumps({'prompts': prompts, 'completions': completions, **keep}) + '\\n')\n"
        "    return [float(len(c)) for c in completions]\n")
    out = tmp_path / "out"
    assert train(tiny_llama3_dir, out, dataset="qa,chat", dataset_dir=data, reward_funcs=f"{rewards}:spy",
                 per_device_train_batch_size=12, max_steps=2, disable_shuffling="true") == 0
    calls = [json.loads(line) for line in seen.read_text().splitlines()]
    by_prompt = {}
    for call in calls:
        for i, prompt in enumerate(call["prompts"]):
            by_prompt[prompt] = {k: v[i] for k, v in call.items() if isinstance(v, list) and len(v) == len(
                call["prompts"])}
    qa = next(v for p, v in by_prompt.items() if "2 and 3" in p)
    assert "Add\n2 and 3" in qa["prompts"]
    assert qa["prompts"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert qa["output"] == "5" and qa["reference"] == "5" and qa["label"] == "easy" and qa["tests"] == [1, 2]
    assert "instruction" not in qa and "input" not in qa  # the prompt's own columns are not repeated
    chat = next(v for p, v in by_prompt.items() if "Name a color" in p)
    assert "Be brief." in chat["prompts"] and "Hello" in chat["prompts"] and "blue" not in chat["prompts"]
    assert chat["reference"] == "blue" and chat["difficulty"] == 1 and chat["label"] is None
    assert len(calls[0]["completion_ids"][0]) <= 8
    # completions.jsonl: every sampled completion of each logging step, with its reward
    lines = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1] * 12 + [2] * 12
    assert all(r["rewards"]["spy"] == float(len(r["completion"])) == r["reward"] for r in lines)
    rows = [r for r in log_rows(out) if "reward" in r]
    assert {"rewards/spy/mean", "rewards/spy/std", "reward_std", "completions/mean_length"} <= set(rows[0])


def test_reward_model_of_stage_rm_scores_the_completions(tiny_llama3_dir, shared_datasets, tmp_path):
    """reward_model: the LoRA reward model a stage-rm run saved (as ppo uses it) scores prompt + completion."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    rm = tmp_path / "rm"
    assert main(["train", str(REPO / "examples" / "train_lora" / "llama3_lora_reward.yaml"),
                 f"model_name_or_path={tiny_llama3_dir}", f"output_dir={rm}", f"dataset_dir={shared_datasets}",
                 "max_steps=2", "max_samples=8", "val_size=0", "eval_strategy=no", "plot_loss=false",
                 "report_to=none", "cutoff_len=128"]) == 0
    out = tmp_path / "grpo"
    assert train(tiny_llama3_dir, out, reward_funcs="reward_model", reward_model=rm, reward_model_type="lora") == 0
    lines = (out / "completions.jsonl").read_text().splitlines()
    scores = [json.loads(line)["rewards"]["reward_model"] for line in lines]
    assert len(scores) == 8 and len(set(scores)) > 1

    # the function scores the prompt's token ids + the completion's, with the reward model's head
    from tunery.config import parse_config
    from tunery.model.load import load_tokenizer
    from tunery.train.grpo_rewards import RewardModelReward
    from tunery.train.rewards import load_scorer

    cfg = parse_config("train", [f"model_name_or_path={tiny_llama3_dir}", f"reward_model={rm}", "stage=grpo",
                                 "reward_funcs=reward_model", "dataset=arithmetic_demo", f"dataset_dir={DATA_DIR}",
                                 f"output_dir={tmp_path / 'unused'}"])
    tokenizer = load_tokenizer(cfg)
    prompt, completion = [1, 5, 9, 2], [7, 7, 3]
    func = RewardModelReward(load_scorer(cfg, tokenizer, "cpu"), {"the prompt": prompt}, tokenizer)
    scorer = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_llama3_dir,
                                                                                          num_labels=1), rm).eval()
    with torch.no_grad():
        expected = scorer(input_ids=torch.tensor([prompt + completion])).logits[0, 0].item()
    assert func(["the prompt"], ["text"], completion_ids=[completion]) == [pytest.approx(expected, abs=1e-5)]
    assert "rewards/reward_model/mean" in log_rows(out)[0]


# -- the demo learns -------------------------------------------------------------------------------------------------
def test_demo_reward_rises(tiny_llama3_dir, tmp_path):
    """The example, shortened to 24 steps: the tiny random model learns the length reward (completions of about
    length_target characters); the mean reward of the last steps is well above that of the first ones."""
    out = tmp_path / "demo"
    assert main(["train", str(DEMO), f"model_name_or_path={tiny_llama3_dir}", f"output_dir={out}",
                 f"dataset_dir={DATA_DIR}", "max_steps=24", "save_steps=12", "beta=0.001"]) == 0
    rows = [r for r in log_rows(out) if "reward" in r]
    rewards = [r["reward"] for r in rows]
    assert len(rewards) == 24
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.3, rewards
    assert all(r["rewards/length/mean"] == pytest.approx(r["reward"] - r["rewards/accuracy/mean"], abs=1e-4)
               for r in rows)
    assert all("kl" in r and "clip_ratio/region_mean" in r and "completions/mean_length" in r for r in rows)
    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "checkpoint-12", "checkpoint-24", "completions.jsonl",
            "training_reward.png", "training_rewards_length_mean.png", "training_loss.png"} <= names


# -- kill -9, then the same command resumes --------------------------------------------------------------------------
def test_kill_9_then_rerun_gives_the_uninterrupted_result(tiny_llama3_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from tunery.train.checkpoints import last_checkpoint

    steps = 8
    args = ["train", *(f"{k}={v}" for k, v in dict(QUICK, model_name_or_path=tiny_llama3_dir, reward_funcs="length",
                                                    length_target=20, top_k=8, learning_rate=1e-2, max_steps=steps,
                                                    save_steps=2, overwrite_output_dir="false").items())]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert main([*args, f"output_dir={reference}"]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "tunery", *args, f"output_dir={killed}"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while process.poll() is None and not last_checkpoint(str(killed)) and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert main([*args, f"output_dir={killed}"]) == 0
    left, right = load_file(reference / "adapter_model.safetensors"), load_file(killed / "adapter_model.safetensors")
    assert left.keys() == right.keys() and all(torch.allclose(left[k], right[k], atol=1e-6) for k in left)
    assert [r["current_steps"] for r in log_rows(killed) if "reward" in r] == list(range(1, steps + 1))
    assert [r["reward"] for r in log_rows(killed) if "reward" in r] == \
        [r["reward"] for r in log_rows(reference) if "reward" in r]
    steps_seen = [json.loads(line)["step"] for line in (killed / "completions.jsonl").read_text().splitlines()]
    assert sorted(set(steps_seen)) == list(range(1, steps + 1)) and len(steps_seen) == 8 * steps


# -- the board -------------------------------------------------------------------------------------------------------
def test_board_has_the_grpo_options_in_the_rlhf_group():
    from tunery.webui import fields as F

    groups = {g: ({o.name for o in unfolded}, {o.name for o in folded})
              for g, unfolded, folded in F.grouped(F.board_options("train"))}
    unfolded, folded = groups["method: rlhf"]
    assert {"reward_funcs", "reward_weights", "num_generations", "max_completion_length"} <= unfolded
    assert {"beta", "epsilon", "epsilon_high", "loss_type", "importance_sampling_level", "scale_rewards",
            "mask_truncated_completions", "num_iterations", "generation_batch_size", "use_vllm", "vllm_mode",
            "length_target", "format_pattern"} <= folded


def _grpo_run_files(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    log = [{"current_steps": s, "total_steps": 3, "loss": 0.0, "reward": 0.2 * s, "rewards/length/mean": 0.2 * s,
            "rewards/accuracy/mean": 0.0, "percentage": 33.3 * s} for s in (1, 2, 3)]
    (out / "trainer_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    samples = [{"step": s, "prompt": "…user<|end_header_id|>\n\nWhat is 2 + 2?", "completion": f"answer {i}",
                "rewards": {"length": 0.1 * i, "accuracy": 0.0}, "reward": 0.1 * i, "advantage": 0.0}
               for s in (1, 2, 3) for i in range(4)]
    (out / "completions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in samples))


def test_board_reward_curve_and_latest_completions(tmp_path):
    from tunery.webui.grpo_view import completions_frame, reward_frame

    _grpo_run_files(tmp_path)
    frame = reward_frame(str(tmp_path))
    assert set(frame["curve"]) == {"reward", "reward (smoothed)", "length", "accuracy"}
    assert list(frame[frame["curve"] == "reward"]["reward"]) == pytest.approx([0.2, 0.4, 0.6])
    table = completions_frame(str(tmp_path))
    assert list(table.columns) == ["step", "reward", "length", "accuracy", "completion", "prompt"]
    assert set(table["step"]) == {3} and list(table["completion"]) == ["answer 3", "answer 2", "answer 1", "answer 0"]
    assert reward_frame(str(tmp_path / "nothing")).empty and completions_frame(None).empty


def test_train_tab_shows_them_for_a_grpo_run_only(tmp_path):
    gr = pytest.importorskip("gradio")
    from tunery.webui import train_tab
    from tunery.webui.board import Board

    board = Board.create(str(tmp_path / "saves"))
    with gr.Blocks():
        tab = train_tab.build(board)
    ids = [getattr(c, "elem_id", None) for c in tab["outputs"]]
    assert ids[-2:] == ["reward-plot", "grpo-completions"]
    job = {"kind": "train", "state": "running", "output_dir": str(tmp_path / "run"), "started": time.time(),
           "ended": None, "command": "tunery train x.yaml", "pid": 1, "error": None, "id": "a", "log": ""}
    _grpo_run_files(tmp_path / "run")
    updates, memo = tab["render"](job, {}, "en")
    assert updates[4]["visible"] and len(updates[4]["value"]) == 12  # 3 steps × (raw, smoothed, 2 functions)
    assert updates[5]["visible"] and len(updates[5]["value"]) == 4
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "trainer_log.jsonl").write_text(json.dumps({"current_steps": 1, "loss": 1.0}) + "\n")
    updates, _ = tab["render"](dict(job, output_dir=str(tmp_path / "sft"), id="b"), memo, "en")
    assert updates[4]["visible"] is False and updates[5]["visible"] is False
