"""Careless and hostile input, through the real CLI: each case is one line with exit 2 (or a warning where the run can
go on), never a traceback, a hang, memory exhaustion or silence; and nothing the user had is lost."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, one_error_line

from tunery.cli import main
from tunery.demo import DATA_DIR
from tunery.train.checkpoints import last_checkpoint

FAST = {"max_steps": 2, "max_samples": 8, "cutoff_len": 64, "logging_steps": 1, "save_steps": 1,
        "per_device_train_batch_size": 2, "report_to": "none", "template": "llama3", "lora_rank": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def train(capsys, model, out, *files, **options) -> tuple[int, str]:
    values = dict(FAST, model_name_or_path=model, output_dir=out, **options)
    values.setdefault("dataset", "identity")
    values.setdefault("dataset_dir", DATA_DIR)
    capsys.readouterr()
    code = main(["train", *map(str, files), *(f"{k}={v}" for k, v in values.items())])
    return code, capsys.readouterr().err


def dataset_dir(tmp_path: Path, rows, name: str = "careless", entry: dict | None = None) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(rows if isinstance(rows, str) else json.dumps(rows), encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({name: {"file_name": f"{name}.json", **(entry or {})}}))
    return folder


GOOD = [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"} for i in range(6)]


# -- 1. config files -------------------------------------------------------------------------------------------------
def test_yaml_alias_bomb_fails_fast_in_one_line(tmp_path, capsys):
    lines = ['output_dir: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]', "x:"]
    lines += [f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["train", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "aliases" in err and "expand to 490,329,066 values" in err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: nothing was expanded


def test_aliases_and_merge_keys_within_the_budget_still_work(tmp_path, capsys):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("model_name_or_path: &m org/model\nref_model: *m\nplaceholders: {<<: {name: A}, author: B}\n")
    from tunery.config import parse_config

    parsed = parse_config("chat", [str(cfg)])
    assert parsed.ref_model == "org/model" and parsed.placeholders == {"name": "A", "author": "B"}


@pytest.mark.parametrize("name,text,expected", [
    ("dup.yaml", "model_name_or_path: m\nlearning_rate: 1e-4\nlora_rank: 4\nlearning_rate: 2e-4\n",
     "dup.yaml:4: key 'learning_rate' is given twice (first on line 2)"),
    ("dup.json", '{"model_name_or_path": "m",\n "lora_rank": 4,\n "lora_rank": 8}',
     "dup.json:3: key 'lora_rank' is given twice"),
    ("env.yaml", "model_name_or_path: m\noutput_dir: ${HOME}/saves\n",
     "env.yaml:2: option 'output_dir' holds ${HOME}, which Tunery does not expand"),
])
def test_duplicate_keys_and_env_references_are_refused(tmp_path, capsys, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and expected in err, err


def test_config_not_in_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model_name_or_path: m\n# café\n".encode("latin-1"))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "is not UTF-8 text (byte 0xe9 on line 2) — save it as UTF-8" in err


# -- 2. data ---------------------------------------------------------------------------------------------------------
def test_nan_text_is_dropped_and_counted_not_trained_as_nan(tiny_llama3_dir, tmp_path, capsys):
    rows = json.dumps(GOOD[:4])[:-1] + ', {"instruction": NaN, "input": "", "output": "x"}, ' \
        '{"instruction": "q", "input": "", "output": NaN}]'
    data = dataset_dir(tmp_path, rows)
    code, err = train(capsys, tiny_llama3_dir, tmp_path / "out", dataset="careless", dataset_dir=data)
    assert code == 0, err[-2000:]
    assert "dropped 2 record(s): NaN in a text field (first: careless[4]: column 'instruction' is NaN)" in err

    from tunery.cli import main

    capsys.readouterr()
    assert main(["preview", f"model_name_or_path={tiny_llama3_dir}", "dataset=careless", f"dataset_dir={data}",
                 "template=llama3", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert "careless: NaN in a text field" in out and "nan" not in out.replace("NaN in", "")


@pytest.mark.parametrize("value,kind", [(True, "a bool (true)"), (["a", "b"], 'a list (["a", "b"])'),
                                        ({"t": 1}, 'an object ({"t": 1})')])
def test_non_text_response_is_named_by_type(tiny_llama3_dir, tmp_path, capsys, value, kind):
    data = dataset_dir(tmp_path, GOOD + [{"instruction": "q", "input": "", "output": value}])
    code, err = train(capsys, tiny_llama3_dir, tmp_path / "out", dataset="careless", dataset_dir=data)
    assert code == 2 and one_error_line(err), err[-2000:]
    assert f"dataset careless, record 6: column 'output' is {kind}" in err
    assert "expected text" in err and "null or missing" not in err


def test_media_columns_with_a_text_model_are_refused(tiny_llama3_dir, tmp_path, capsys):
    rows = [dict(r, images=[f"img{i}.png"], instruction="<image>" + r["instruction"]) for i, r in enumerate(GOOD)]
    data = dataset_dir(tmp_path, rows, entry={"columns": {"prompt": "instruction", "response": "output",
                                                          "images": "images"}})
    code, err = train(capsys, tiny_llama3_dir, tmp_path / "out", dataset="careless", dataset_dir=data)
    assert code == 2 and one_error_line(err)
    assert "record 0 has images (column 'images'), but Tunery trains text-only models" in err
    assert "needs multimodal support" in err


def test_dataset_defined_twice_is_refused(tiny_llama3_dir, tmp_path, capsys):
    data = dataset_dir(tmp_path, GOOD)
    (data / "dataset_info.json").write_text('{\n "careless": {"file_name": "careless.json"},\n'
                                            ' "careless": {"file_name": "other.json"}\n}\n')
    code, err = train(capsys, tiny_llama3_dir, tmp_path / "out", dataset="careless", dataset_dir=data)
    assert code == 2 and one_error_line(err)
    assert f"{data / 'dataset_info.json'}:3: dataset 'careless' is defined twice — rename or remove one" in err


def test_symlink_loop_is_named_as_one(tiny_llama3_dir, tmp_path, capsys):
    data = dataset_dir(tmp_path, GOOD)
    (data / "careless.json").unlink()
    os.symlink(data / "loop_b.json", data / "careless.json")
    os.symlink(data / "careless.json", data / "loop_b.json")
    code, err = train(capsys, tiny_llama3_dir, tmp_path / "out", dataset="careless", dataset_dir=data)
    assert code == 2 and one_error_line(err)
    assert "careless.json is a symlink loop" in err and "not found" not in err


def test_every_record_truncated_is_warned_with_the_share(tiny_llama3_dir, tmp_path, capsys):
    rows = [{"instruction": "word " * 200, "input": "", "output": "answer " * 100} for _ in range(6)]
    data = dataset_dir(tmp_path, rows)
    code, err = train(capsys, tiny_llama3_dir, tmp_path / "out", dataset="careless", dataset_dir=data)
    assert code == 0, err[-2000:]
    assert "cutoff_len 64 truncates 100% of the examples (6 of 6)" in err


def test_long_messages_are_cut_before_tokenizing_and_fitting_ones_are_untouched(tiny_llama3_dir):
    from transformers import AutoTokenizer

    from tunery.data.encode import encode_dataset, text_bound
    from tunery.data.records import AlignedRecord
    from tunery.data.templates import get_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    template = get_template("llama3")
    template.fix_tokenizer(tokenizer)
    limit = text_bound(tokenizer, 64)
    fits = AlignedRecord([{"role": "user", "content": "hello there"}], [{"role": "assistant", "content": "hi"}])
    huge = AlignedRecord([{"role": "user", "content": "lorem ipsum " * (limit // 4)}],
                         [{"role": "assistant", "content": "short answer"}])
    encoded = encode_dataset([fits, huge], "sft", template, tokenizer, 64)
    assert [len(e["input_ids"]) for e in encoded][1] == 64
    # the record that fits encodes exactly as it does alone, and the huge one as its first `limit` characters do
    alone = encode_dataset([fits], "sft", template, tokenizer, 64)
    assert encoded[0] == alone[0]
    cut = AlignedRecord([{"role": "user", "content": huge.prompt[0]["content"][:limit]}], huge.response)
    assert encoded[1] == encode_dataset([cut], "sft", template, tokenizer, 64)[0]


# -- 3. Ctrl-C and SIGTERM during multi-process preprocessing ----------------------------------------------------------
def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


@pytest.mark.skipif(not Path("/proc/self/task").exists() or (os.cpu_count() or 1) < 2,
                    reason="needs Linux /proc and two cores")
@pytest.mark.parametrize("sig,presses,code,last", [(signal.SIGINT, 1, 130, "interrupted"),
                                                    (signal.SIGINT, 2, 130, "interrupted"),
                                                    (signal.SIGTERM, 1, 143, "stopped by SIGTERM")])
def test_stop_during_preprocessing_ends_every_worker(tiny_llama3_dir, tmp_path, sig, presses, code, last):
    rows = [{"instruction": "the quick brown fox " * 40, "input": "", "output": "jumps over the dog " * 40}
            for _ in range(6000)]
    data = dataset_dir(tmp_path, rows)
    argv = [f"model_name_or_path={tiny_llama3_dir}", "dataset=careless", f"dataset_dir={data}",
            f"output_dir={tmp_path / 'out'}", "preprocessing_num_workers=2", "template=llama3", "report_to=none"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    process = subprocess.Popen([sys.executable, "-m", "tunery.cli", "train", *argv], stderr=subprocess.PIPE,
                               text=True, start_new_session=True, env=env)
    deadline = time.time() + 300
    while len(_children(process.pid)) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = _children(process.pid)
    assert len(workers) >= 2, "the encoding workers never started"
    for _ in range(presses):
        if sig == signal.SIGINT:
            os.killpg(process.pid, sig)  # what a terminal does: the whole process group gets it
        else:
            os.kill(process.pid, sig)
        time.sleep(0.2)
    try:
        _, err = process.communicate(timeout=120)  # a hang fails here (a healthy exit takes seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("tunery train hung after the signal")
    assert process.returncode == code, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == last
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


# -- 4. training loop ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options,expected", [
    ({"max_steps": 0}, "option 'max_steps' = 0: must be -1 (unset) or greater than 0"),
    ({"max_steps": -1, "num_train_epochs": 0}, "option 'num_train_epochs' is 0, which trains nothing"),
])
def test_zero_length_training_is_refused(tiny_llama3_dir, tmp_path, capsys, options, expected):
    code, err = train(capsys, tiny_llama3_dir, tmp_path / "out", **options)
    assert code == 2 and one_error_line(err) and expected in err
    assert not (tmp_path / "out").exists()


def test_lora_options_with_full_are_warned(tiny_llama3_dir, tmp_path, capsys):
    from tunery.config import parse_config

    capsys.readouterr()
    parse_config("train", [f"model_name_or_path={tiny_llama3_dir}", "finetuning_type=full", "lora_rank=16",
                           "lora_dropout=0.1", f"output_dir={tmp_path / 'out'}", "dataset=identity",
                           f"dataset_dir={DATA_DIR}"])
    err = capsys.readouterr().err
    assert "finetuning_type is full, so the lora option(s) lora_dropout, lora_rank are ignored" in err
    parse_config("train", [f"model_name_or_path={tiny_llama3_dir}", "lora_rank=16", f"output_dir={tmp_path / 'o'}",
                           "dataset=identity", f"dataset_dir={DATA_DIR}"])
    assert "ignored" not in capsys.readouterr().err


def test_unwritable_output_dir_is_one_line_before_the_model_loads(tiny_llama3_dir, tmp_path, capsys, monkeypatch):
    import tunery.model.load as load

    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    monkeypatch.setattr(load, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    code, err = train(capsys, tiny_llama3_dir, blocker / "out")
    assert code == 2 and one_error_line(err)
    assert f"output_dir '{blocker / 'out'}' is not writable (Not a directory)" in err
    assert blocker.read_text() == "mine"


def test_sigterm_during_training_saves_and_exits_143(tiny_llama3_dir, tmp_path, capsys):
    import threading

    out = tmp_path / "out"

    def send_sigterm():
        deadline = time.time() + 240
        while not last_checkpoint(str(out)) and time.time() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, lambda *a: None)  # a late signal must not end the test session
    try:
        watcher = threading.Thread(target=send_sigterm, daemon=True)
        watcher.start()
        code, err = train(capsys, tiny_llama3_dir, out, max_steps=40, save_steps=4)
        watcher.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: training stopped by SIGTERM at step") and "rerun the same command" in last
    saved = last_checkpoint(str(out))
    assert saved and saved.rsplit("-", 1)[1] in last
    code, err = train(capsys, tiny_llama3_dir, out, max_steps=40, save_steps=4)
    assert code == 0 and f"resuming from {saved}" in err


def test_disk_full_during_a_save_is_one_line_and_rerunning_resumes(tiny_llama3_dir, tmp_path, capsys, monkeypatch):
    import torch

    out = tmp_path / "out"
    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):  # the second checkpoint's optimizer state finds the disk full
        saves.append(str(f))
        if "checkpoint-2" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    code, err = train(capsys, tiny_llama3_dir, out, max_steps=3)
    assert code == 2 and one_error_line(err), err[-3000:]
    assert f"no space left on the disk holding {out / 'checkpoint-2'} while saving" in err
    assert "rerun the same command: it resumes from checkpoint-1" in err
    assert last_checkpoint(str(out)).endswith("checkpoint-1")  # the complete checkpoint is still there

    monkeypatch.setattr(torch, "save", real_save)
    code, err = train(capsys, tiny_llama3_dir, out, max_steps=3)
    assert code == 0 and "resuming from" in err and (out / "adapter_model.safetensors").exists()
