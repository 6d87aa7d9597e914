"""`tunery webui` without a browser: fields generated from the option declarations, form values → YAML / command
that `tunery train` accepts, validation messages attached to their fields, the job runner (real processes: start,
refuse a second run, re-attach from a fresh Runner, stop with SIGINT then SIGTERM, one-line errors), the run views."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import pytest

from tunery.config.loader import parse_config
from tunery.config.option import Option
from tunery.config.registry import options_for
from tunery.demo import DATA_DIR
from tunery.webui import fields as F
from tunery.webui.board import Form, list_runs, top_overrides
from tunery.webui.runner import BusyError, Runner, last_error, tail

SLEEPER = "import sys, time\nprint('started', flush=True)\n{setup}\nfor _ in range(600):\n    time.sleep(0.1)\n"


# ------------------------------------------------------------------ fields from the declarations
def test_every_train_option_but_the_top_bar_is_a_field():
    shown = {o.name for o in F.board_options("train")}
    declared = {o.name for o in options_for("train") if not o.unsupported}
    assert shown == declared - set(F.TOP_BAR)
    assert {"learning_rate", "lora_rank", "pref_beta", "freeze_trainable_layers", "dataset"} <= shown


def test_advanced_options_are_folded_per_group():
    groups = {g: (unfolded, folded) for g, unfolded, folded in F.grouped(F.board_options("train"))}
    assert list(groups)[:3] == ["model", "data", "method"]
    names = lambda opts: {o.name for o in opts}
    assert "lora_rank" in names(groups["method: lora"][0]) and "use_dora" in names(groups["method: lora"][1])
    assert "pref_beta" in names(groups["method: rlhf"][1])
    hf_unfolded, hf_folded = groups["training (transformers)"]
    assert set(F.PROMINENT) == names(hf_unfolded)
    assert "weight_decay" in names(hf_folded)


def test_component_kinds_follow_the_declarations():
    gr = pytest.importorskip("gradio")
    extra = Option("brand_new_option", "int", 3, "An option added after the board was written.", "method: lora",
                   advanced=True)
    options = F.board_options("train") + [extra]
    with gr.Blocks():
        comps = F.build_form(options, F.initial_values(options), lambda c, k: c, prefix="t")
    assert set(comps) == {o.name for o in options}
    new = comps["brand_new_option"]
    assert isinstance(new, gr.Number) and new.label == "brand_new_option" and new.value == 3
    assert new.elem_id == "t-brand_new_option" and "added after" in new.info
    assert isinstance(comps["plot_loss"], gr.Checkbox) and comps["plot_loss"].value is True  # board default
    assert isinstance(comps["stage"], gr.Dropdown) and "dpo" in [c[1] for c in comps["stage"].choices]
    assert isinstance(comps["dataset"], gr.Dropdown) and comps["dataset"].multiselect
    assert isinstance(comps["packing"], gr.Dropdown) and comps["packing"].value == F.UNSET  # true/false/unset
    assert isinstance(comps["max_samples"], gr.Textbox)  # an int that may stay unset
    assert isinstance(comps["lora_target"], gr.Textbox) and comps["lora_target"].value == "all"


# ------------------------------------------------------------------ values, YAML, command
def _form_values(tiny_llama3_dir, out_dir, **changes):
    options = F.board_options("train")
    shown = dict(zip((o.name for o in options), F.initial_values(options, {"dataset_dir": str(DATA_DIR)})))
    shown.update({"dataset": ["identity"], "max_steps": 5.0, "lora_target": "q_proj, v_proj",
                  "output_dir": str(out_dir), "placeholders": '{"name": "Tunery", "author": "me"}'}, **changes)
    values = top_overrides(str(tiny_llama3_dir), [], "lora", "llama3")
    values.update(F.changed_values(options, [shown[o.name] for o in options]))
    return values


def test_changed_values_keep_only_what_differs_from_the_declaration(tiny_llama3_dir, tmp_path):
    values = _form_values(tiny_llama3_dir, tmp_path / "out")
    assert values["max_steps"] == 5 and isinstance(values["max_steps"], int)
    assert values["lora_target"] == ["q_proj", "v_proj"]
    assert values["placeholders"] == {"name": "Tunery", "author": "me"}
    assert values["logging_steps"] == 5 and values["plot_loss"] is True  # board defaults differ: they are written
    assert "learning_rate" not in values and "cutoff_len" not in values and "packing" not in values


def test_yaml_and_command_give_the_same_config(tiny_llama3_dir, tmp_path):
    values = _form_values(tiny_llama3_dir, tmp_path / "out")
    path = tmp_path / "train.yaml"
    path.write_text(F.yaml_text(values), encoding="utf-8")
    from_yaml = parse_config("train", [str(path)])
    argv = shlex.split(F.command_text("train", values).replace("\\\n", " "))
    assert argv[:2] == ["tunery", "train"]
    from_flags = parse_config("train", argv[2:])
    for key, value in values.items():
        assert getattr(from_yaml, key) == value == getattr(from_flags, key), key


def test_validation_names_the_field(tiny_llama3_dir, tmp_path):
    values = _form_values(tiny_llama3_dir, tmp_path / "out", lora_rank=0)
    cfg, problem = F.validate("train", values)
    assert cfg is None and problem == "option 'lora_rank' = 0: must be greater than 0"
    assert F.named_fields(problem, ["lora_rank", "lora_alpha"]) == ["lora_rank"]
    values = _form_values(tiny_llama3_dir, tmp_path / "out", max_samples="lots")
    _, problem = F.validate("train", values)
    assert "'max_samples' expects an integer, got 'lots'" in problem
    values = _form_values(tiny_llama3_dir, tmp_path / "out", dataset=[])
    _, problem = F.validate("train", values)
    assert F.named_fields(problem, ["dataset", "dataset_dir"])[0] == "dataset"
    assert F.validate("train", _form_values(tiny_llama3_dir, tmp_path / "out"))[1] is None


def test_flags_mark_the_named_field_and_clear_it_later():
    pytest.importorskip("gradio")
    options = F.pick_options(("lora_rank", "lora_alpha"))
    board = type("B", (), {"top": {"model_name_or_path": "m", "adapter_name_or_path": "a", "finetuning_type": "f",
                                   "template": "t"}, "saves_dir": "/tmp"})()
    form = Form(board, options, {"lora_rank": "r", "lora_alpha": "a"}, "train")
    updates, bad = form.flags("option 'lora_rank' = 0: must be greater than 0", [])
    assert bad == ["lora_rank"]
    assert updates[4]["info"].startswith("⚠ option 'lora_rank'") and F.INVALID_CLASS in updates[4]["elem_classes"]
    assert updates[5] == {"__type__": "update"}  # untouched
    updates, bad = form.flags(None, ["lora_rank"])
    assert bad == [] and updates[4]["elem_classes"] == [] and updates[4]["info"].startswith("LoRA rank r.")


def test_top_bar_picks_an_adapter_or_a_full_checkpoint():
    assert top_overrides("m", ["/s/a"], "lora", "llama3") == {"model_name_or_path": "m", "adapter_name_or_path":
                                                              ["/s/a"], "finetuning_type": "lora", "template": "llama3"}
    assert top_overrides("m", ["/s/full"], "full", F.UNSET) == {"model_name_or_path": "/s/full",
                                                               "finetuning_type": "full"}


def test_saves_listing_finds_runs_and_checkpoints(tmp_path):
    run = tmp_path / "llama3" / "lora" / "sft"
    for folder in (run, run / "checkpoint-5"):
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / ".webui" / "x").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    labels = [label for label, _ in list_runs(str(tmp_path))]
    assert sorted(labels) == ["llama3/lora/sft", "llama3/lora/sft/checkpoint-5"]
    assert dict(list_runs(str(tmp_path)))["llama3/lora/sft"] == str(run)


def test_webui_argv(tmp_path):
    from tunery.errors import TuneryError
    from tunery.cli import webui_args as parse_argv

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_name_or_path: m\nlora_rank: 16\n")
    assert parse_argv([str(cfg), "--saves_dir", "s"]) == ("s", {"model_name_or_path": "m", "lora_rank": 16})
    cfg.write_text("lora_rnak: 16\n")
    with pytest.raises(TuneryError, match="lora_rnak"):
        parse_argv([str(cfg)])
    with pytest.raises(TuneryError, match="unexpected argument"):
        parse_argv(["--port", "1"])


# ------------------------------------------------------------------ the runner (real processes)
def _sleeper(runner: Runner, setup: str = "") -> dict:
    folder = os.path.join(runner.state_dir, "runs", f"t{time.time_ns()}")
    return runner.start_process("train", [sys.executable, "-c", SLEEPER.format(setup=setup)], folder)


def _wait_for(predicate, timeout=20.0):
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        time.sleep(0.1)
    return predicate()


def test_runner_reattaches_refuses_a_second_run_and_stops(tmp_path):
    runner = Runner(str(tmp_path / "state"))
    job = _sleeper(runner)
    assert _wait_for(lambda: "started" in tail(job["log"]))
    again = Runner(str(tmp_path / "state"))  # a refreshed page / a new board: only the state file is shared
    status = again.status()
    assert status["state"] == "running" and status["pid"] == job["pid"] and status["id"] == job["id"]
    with pytest.raises(BusyError, match="already going on"):
        _sleeper(again)
    assert again.stop()["state"] == "stopping"
    final = again.wait(20)
    assert final["state"] == "stopped" and final["ended"] >= final["started"]


def test_stop_escalates_to_sigterm_when_sigint_is_ignored(tmp_path):
    runner = Runner(str(tmp_path / "state"), grace=1.0)
    job = _sleeper(runner, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)")
    assert _wait_for(lambda: "started" in tail(job["log"]))
    runner.stop()
    time.sleep(0.5)
    assert runner.status()["state"] == "stopping"  # SIGINT ignored, still within the grace time
    assert runner.wait(20)["state"] == "stopped"


def test_ended_job_found_without_its_popen(tmp_path):
    """A board restarted while its run went on has no Popen: the state comes from the process table and the log."""
    from tunery.webui import runner as runner_module

    runner = Runner(str(tmp_path / "state"))
    job = _sleeper(runner)
    child = runner_module._CHILDREN.pop(job["pid"])
    assert runner.status()["state"] == "running"
    with open(job["log"], "a", encoding="utf-8") as fh:
        fh.write("error: something went wrong — fix it\n")
    child.kill()
    assert _wait_for(lambda: runner.status()["state"] != "running")  # a zombie counts as ended
    child.wait()
    status = runner.status()
    assert status["state"] == "failed" and status["error"] == "error: something went wrong — fix it"


def test_failing_train_run_shows_its_one_line_error(tiny_llama3_dir, tmp_path):
    runner = Runner(str(tmp_path / "state"))
    values = {"model_name_or_path": str(tiny_llama3_dir), "template": "llama3", "dataset": ["no_such_set"],
              "dataset_dir": str(DATA_DIR), "output_dir": str(tmp_path / "out"), "max_steps": 1}
    assert F.validate("train", values)[1] is None  # valid options; the dataset name fails in the run
    runner.start("train", "train", values)
    final = runner.wait(120)
    assert final["state"] == "failed" and final["returncode"] == 2
    assert final["error"].startswith("error: ") and "no_such_set" in final["error"]
    assert "Traceback" not in tail(final["log"], 200)
    assert last_error(final["log"]) == final["error"]


# ------------------------------------------------------------------ views
def test_progress_and_loss_from_the_trainer_log(tmp_path):
    from tunery.webui.views import loss_frame, progress_html, progress_info, status_markdown

    rows = [{"current_steps": s, "total_steps": 4, "loss": 3.0 - s / 2, "percentage": 25.0 * s,
             "elapsed_time": f"0:00:0{s}", "remaining_time": f"0:00:0{4 - s}"} for s in (1, 2)]
    (tmp_path / "trainer_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = {"kind": "train", "state": "running", "output_dir": str(tmp_path), "started": time.time() - 3,
           "ended": None, "command": "tunery train x.yaml", "pid": 1, "error": None, "id": "a"}
    info = progress_info(job)
    assert (info["step"], info["total"], info["percent"], info["remaining"]) == (2, 4, 50.0, "0:00:02")
    assert "2/4 · 50%" in progress_html(job, "train") and "data-percent='50'" in progress_html(job, "train")
    frame = loss_frame(str(tmp_path))
    assert list(frame["curve"]) == ["raw", "raw", "smoothed", "smoothed"] and list(frame["step"][:2]) == [1, 2]
    done = dict(job, state="done", ended=time.time())
    assert "4/4 · 100%" in progress_html(done, "train")
    failed = dict(job, state="failed", error="error: boom — fix it")
    assert "error: boom" in status_markdown(failed, "train") and "failed" in progress_html(failed, "train")
    assert status_markdown(failed, "predict") == "No run yet."


def test_data_preview_marks_the_trained_tokens(tiny_llama3_dir):
    from tunery.webui.views import render_preview

    body, summary = render_preview({"model_name_or_path": str(tiny_llama3_dir), "template": "llama3",
                                    "dataset": ["identity"], "dataset_dir": str(DATA_DIR)}, num=2)
    assert body.count("class='tunery-record'") == 2
    assert "<mark class='trained'>" in body and "I am {{name}}" in body
    assert "&lt;|start_header_id|&gt;user" in body  # escaped, the prompt unmarked
    assert "training records" in summary and "trained tokens:" in summary


def test_locales_cover_both_languages():
    from tunery.webui.locales import WORDS, t

    assert all(len(pair) == 2 and all(pair) for pair in WORDS.values())
    assert t("tab_train", "zh") == "训练" and t("tab_train") == "Train"
    assert t("group:method: galore") == "method: galore"  # a new group keeps its own name


def test_cli_lists_webui():
    from tunery.cli import COMMANDS, USAGE

    assert "webui" in COMMANDS and "webui" in USAGE


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    pytest.importorskip("gradio")
    from tunery.webui import create_app

    demo = create_app(str(tmp_path_factory.mktemp("saves")))
    yield demo
    demo.close()


def test_app_has_every_field_and_the_four_tabs(app):
    ids = {getattr(b, "elem_id", None) for b in app.blocks.values()}
    assert {f"train-{o.name}" for o in F.board_options("train")} <= ids
    assert {"tab-train", "tab-eval", "tab-chat", "tab-export", "top-model", "top-adapter", "top-finetuning-type",
            "top-template", "top-lang", "train-progress", "loss-plot", "chatbot-0", "export-export_size",
            "export-infer_dtype", "eval-eval_dataset"} <= ids
    assert Path(app.board.saves_dir).name.startswith("saves")


def test_chat_tab_loads_base_beside_fine_tuned(tiny_llama3_dir, tiny_llama3_lora, tmp_path):
    from tunery.errors import TuneryError
    from tunery.webui.board import Board
    from tunery.webui.chat_tab import load_engines, unload_engines

    # the model folders of the board's start-up config are inside its sandbox
    board = Board.create(str(tmp_path), {"model_name_or_path": str(tiny_llama3_dir),
                                         "adapter_name_or_path": [str(tiny_llama3_lora)]})
    values = {**top_overrides(str(tiny_llama3_dir), [str(tiny_llama3_lora)], "lora", "llama3"), "compare": True}
    what = load_engines(board, values)
    assert "tiny-llama3-lora" in what and board.chat["labels"] == ["fine_tuned", "base"]
    tuned, base = board.chat["engines"]
    question = [{"role": "user", "content": "Who are you?"}]
    assert tuned.chat(question, max_new_tokens=8, temperature=0).text != base.chat(question, max_new_tokens=8,
                                                                                 temperature=0).text
    unload_engines(board)
    assert board.chat["engines"] == []
    with pytest.raises(TuneryError, match="compare"):
        load_engines(board, {**top_overrides(str(tiny_llama3_dir), [], "lora", "llama3"), "compare": True})
