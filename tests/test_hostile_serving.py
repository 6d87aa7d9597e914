"""Hostile and careless input to what serves and writes models: the web board's sandbox (handlers of the real Gradio
app called directly), `tunery export` never deleting or half-replacing what it did not write, no unpickling of a
file a user did not make, bounded work in the API (the real FastAPI app through TestClient), and one line instead of
a traceback for bad bytes on `tunery chat`'s stdin and damaged adapters. Each case asserts the refusal and that
nothing was read, written or deleted."""

from __future__ import annotations

import hashlib
import html
import inspect
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_lora_adapter, one_error_line

from tunery.cli import main
from tunery.demo import DATA_DIR
from tunery.errors import TuneryError

REPO = Path(__file__).resolve().parents[1]


def digest(folder: Path) -> dict[str, str]:
    """name -> sha256 of every file under a folder (what 'nothing changed' means)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ====================================================================== the board's sandbox
gr = pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory) -> Path:
    """Files outside every root of the board: a token in a JSON config, a text file, another model's weights."""
    folder = tmp_path_factory.mktemp("outside")
    (folder / "token.json").write_text(json.dumps({"hf_hub_token": "hf_SECRET", "lora_rank": 99}))
    (folder / "notes.txt").write_text("private notes\n")
    (folder / "data.json").write_text(json.dumps([{"instruction": "secret", "output": "leaked"}]))
    return folder


@pytest.fixture(scope="module")
def board(tmp_path_factory, tiny_llama3_dir):
    from tunery.webui import create_app

    saves = tmp_path_factory.mktemp("saves")
    demo = create_app(str(saves), {"model_name_or_path": str(tiny_llama3_dir)})
    yield demo
    demo.close()


def handler(demo, name: str):
    return next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name)


def call(demo, name: str, **values):
    """Run a handler of the app with its inputs' current values, some replaced (by elem_id); the last output."""
    fn = handler(demo, name)
    args = [values.get(getattr(c, "elem_id", None) or "", getattr(c, "value", None)) for c in fn.inputs]
    out = fn.fn(*args)
    if inspect.isgenerator(out):
        out = list(out)[-1]
    plain = lambda o: html.unescape(o) if isinstance(o, str) else o  # noqa: E731 - the page's text
    return tuple(plain(o) for o in out) if isinstance(out, tuple) else plain(out)


def first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name, why", [
    ("{outside}/sitecustomize.py", "only as .yaml"),
    ("{outside}/evil.yaml", "outside the saves folder"),
    ("{saves}/../evil.yaml", "outside the saves folder"),
    ("{saves}/run.sh", "only as .yaml"),
])
def test_save_config_only_as_yaml_inside_the_saves_folder(board, secrets_dir, name, why):
    saves = Path(board.board.saves_dir)
    path = name.format(outside=secrets_dir, saves=saves)
    before = digest(secrets_dir), sorted(os.listdir(saves.parent))
    note = call(board, "on_save", **{"train-config-path": path, "top-model": "__import__('os').system('id')"})
    assert why in note and "tunery-error" in note
    assert not os.path.exists(path) and (digest(secrets_dir), sorted(os.listdir(saves.parent))) == before


def test_save_config_never_overwrites_a_file_the_board_did_not_write(board):
    saves = Path(board.board.saves_dir)
    theirs = saves / "mine.yaml"
    theirs.write_text("model_name_or_path: my/own\n")
    note = call(board, "on_save", **{"train-config-path": str(theirs)})
    assert "was not saved by the board" in note and theirs.read_text() == "model_name_or_path: my/own\n"
    link = saves / "link.yaml"  # a link inside the saves folder to a file outside it
    outside = saves.parent / "target.yaml"
    outside.write_text("x: 1\n")
    link.symlink_to(outside)
    assert "outside the saves folder" in call(board, "on_save", **{"train-config-path": str(link)})
    assert outside.read_text() == "x: 1\n"
    ours = saves / "board.yaml"
    assert "saved" in call(board, "on_save", **{"train-config-path": str(ours), "train-lora_rank": 16})
    assert ours.read_text().startswith("# saved by the Tunery board\n")
    assert "saved" in call(board, "on_save", **{"train-config-path": str(ours), "train-lora_rank": 32})  # its own
    assert "lora_rank: 32" in ours.read_text()
    out = call(board, "on_load", **{"train-config-path": str(ours)})
    assert out[0].startswith("loaded")


def test_load_config_only_from_inside_the_roots(board, secrets_dir):
    out = call(board, "on_load", **{"train-config-path": str(secrets_dir / "token.json")})
    assert "outside the folders this board may read" in out[0]
    assert all(isinstance(o, dict) and o.get("__type__") == "update" and len(o) == 1 for o in out[1:])  # skips
    assert "hf_SECRET" not in json.dumps([o for o in out if not isinstance(o, dict)], default=str)
    out = call(board, "on_load", **{"train-config-path": "/etc/passwd"})
    assert "give a .yaml, .yml or .json config" in out[0]


def test_preview_reads_only_datasets_inside_the_roots(board, secrets_dir, tmp_path):
    absolute = call(board, "on_preview", **{"train-dataset": [str(secrets_dir / "data.json")]})
    assert "outside the folders this board may read" in absolute[0] and "leaked" not in absolute[0]
    folder = call(board, "on_preview", **{"train-dataset_dir": str(secrets_dir), "train-dataset": ["x"]})
    assert "option 'dataset_dir'" in folder[0] and "outside" in folder[0]
    # a dataset folder inside the roots whose dataset_info.json points outside with `..`
    data = Path(board.board.saves_dir) / "data"
    data.mkdir(exist_ok=True)
    escape = os.path.relpath(secrets_dir / "data.json", data)
    (data / "dataset_info.json").write_text(json.dumps({"sneaky": {"file_name": escape}}))
    sneaky = call(board, "on_preview", **{"train-dataset_dir": str(data), "train-dataset": ["sneaky"]})
    assert "dataset 'sneaky'" in sneaky[0] and "outside" in sneaky[0] and "leaked" not in sneaky[0]
    names = call(board, "on_dataset_dir", **{"train-dataset_dir": str(secrets_dir)})
    assert names[0]["choices"] == [] and "outside" in names[2]["info"]
    ok = call(board, "on_preview", **{"train-dataset_dir": str(DATA_DIR), "train-dataset": ["identity"],
                                      "top-template": "llama3"})
    assert "tunery-record" in ok[0]  # the board's own dataset folder still previews


def test_runs_write_only_inside_the_write_roots(board, secrets_dir, tmp_path):
    out = call(board, "on_start", **{"train-output_dir": str(tmp_path / "elsewhere"), "top-template": "llama3",
                                     "train-dataset": ["identity"]})
    assert "outside the folders this board may write" in out[2]
    assert board.board.runner.status() == {} and not (tmp_path / "elsewhere").exists()
    out = call(board, "on_run", **{"eval-output_dir": str(tmp_path / "pred"), "eval-eval_dataset": ["identity"]})
    assert "outside the folders this board may write" in out[0] and board.board.runner.status() == {}
    note = call(board, "on_load_model", **{"top-model": str(tmp_path)})  # the Chat tab's load: a model outside
    assert "outside the folders this board may read" in first(note)


def test_board_export_never_writes_into_a_folder_of_other_files(board):
    victim = Path(board.board.saves_dir) / "someone-elses-model"
    victim.mkdir()
    (victim / "model.safetensors").write_bytes(b"precious weights")
    (victim / "config.json").write_text("{}")
    before = digest(victim)
    out = call(board, "on_export", **{"export-export_dir": str(victim)})
    assert "holds files Tunery did not write" in out[0] and digest(victim) == before
    out = call(board, "on_export", **{"export-export_dir": "/tmp/tunery-export-outside"})
    assert "outside the folders this board may write" in out[0]
    assert not os.path.exists("/tmp/tunery-export-outside")


def test_login_and_the_exposure_warning(tmp_path):
    from tunery.chat.webchat import auth_pairs, exposure_warning
    from tunery.cli import webui_args as parse_argv

    assert auth_pairs("alice:s3cret, bob:pa:ss") == [("alice", "s3cret"), ("bob", "pa:ss")]
    with pytest.raises(TuneryError, match="USER:PASSWORD") as info:
        auth_pairs("justapassword")
    assert "justapassword" not in str(info.value)  # a malformed secret is not echoed
    local, anywhere = {"server_name": "127.0.0.1", "share": False}, {"server_name": "0.0.0.0", "share": False}
    assert exposure_warning(local, None) is None and exposure_warning(anywhere, [("a", "b")]) is None
    line = exposure_warning(anywhere, None)
    assert line.startswith("warning:") and "0.0.0.0" in line and "webui_auth" in line and "\n" not in line
    assert "GRADIO_SHARE" in exposure_warning({"server_name": "127.0.0.1", "share": True}, None)
    saves, initial = parse_argv(["--saves_dir", "s", "--webui_allowed_paths", f"{tmp_path},/x",
                                 "--webui_auth", "a:b"])
    assert initial == {"webui_allowed_paths": [str(tmp_path), "/x"], "webui_auth": "a:b"}


def test_the_login_guards_the_launched_board(tmp_path):
    """webui_auth's pairs as `tunery webui` passes them to Gradio's launch."""
    httpx = pytest.importorskip("httpx")
    from conftest import free_port

    from tunery.webui import create_app
    from tunery.chat.webchat import login_settings

    options = {"server_name": "127.0.0.1", "server_port": free_port(), "share": False}
    login, warning = login_settings({"webui_auth": "alice:s3cret"}, options)
    assert warning is None and login_settings({}, {**options, "server_name": "0.0.0.0"})[1].startswith("warning:")
    demo = create_app(str(tmp_path / "saves"))
    port = options["server_port"]
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **login, **options, **demo.launch_kwargs)
    try:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/config", timeout=30).status_code == 401
        logged = httpx.post(url + "/login", data={"username": "alice", "password": "s3cret"}, timeout=30)
        assert logged.status_code == 200
        assert httpx.get(url + "/config", cookies=logged.cookies, timeout=30).status_code == 200
        secret = tmp_path / "secret.txt"
        secret.write_text("s")
        for path in (secret, Path("/etc/passwd")):  # Gradio's own file route serves none of them, even logged in
            assert httpx.get(f"{url}/gradio_api/file={path}", cookies=logged.cookies, timeout=30).status_code == 403
        wrong = httpx.post(url + "/login", data={"username": "alice", "password": "nope"}, timeout=30)
        assert wrong.status_code == 400
    finally:
        demo.close()


# ====================================================================== tunery export: nothing foreign deleted
def export_argv(model: Path, adapter: Path, out: Path, *extra: str) -> list[str]:
    return ["export", "--model_name_or_path", str(model), "--adapter_name_or_path", str(adapter), "--template",
            "llama3", "--export_dir", str(out), *extra]


def test_export_refuses_a_folder_of_other_weights(tiny_llama3_dir, tiny_llama3_lora, tmp_path, capsys):
    victim = tmp_path / "other-model"
    victim.mkdir()
    for name in ("model-00001-of-00002.safetensors", "pytorch_model.bin", "config.json"):
        (victim / name).write_bytes(os.urandom(64))
    before = digest(victim)
    assert main(export_argv(tiny_llama3_dir, tiny_llama3_lora, victim, "--export_overwrite")) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "holds files Tunery did not write" in err and "nothing was changed" in err
    assert digest(victim) == before and sorted(os.listdir(tmp_path)) == ["other-model"]


def test_reexport_needs_overwrite_and_replaces_atomically(tiny_llama3_dir, tiny_llama3_lora, tmp_path, capsys):
    from tunery.export import target as T

    out = tmp_path / "merged"
    assert main(export_argv(tiny_llama3_dir, tiny_llama3_lora, out)) == 0
    marker = json.loads((out / T.MARKER).read_text())
    assert marker["complete"] and set(marker["files"]) == set(os.listdir(out)) - {T.MARKER}
    first_export = digest(out)
    capsys.readouterr()
    assert main(export_argv(tiny_llama3_dir, tiny_llama3_lora, out)) == 2  # no export_overwrite
    err = capsys.readouterr().err
    assert one_error_line(err) and "export_overwrite" in err and digest(out) == first_export

    # a file the user added to the export folder makes it foreign: refused even with export_overwrite
    (out / "my_notes.txt").write_text("mine")
    assert main(export_argv(tiny_llama3_dir, tiny_llama3_lora, out, "--export_overwrite")) == 2
    assert "my_notes.txt" in capsys.readouterr().err and (out / "my_notes.txt").read_text() == "mine"
    (out / "my_notes.txt").unlink()

    # killed mid-way (SIGKILL leaves a marked partial folder and the target untouched): the next run cleans up
    partial = T.begin(str(out))
    (Path(partial) / "model.safetensors").write_bytes(b"half a shard")
    assert digest(out) == first_export
    # killed between the two renames of the swap: the old export is put back first
    os.rename(out, tmp_path / ".merged.tunery-old-1")
    T.begin(str(out))
    assert digest(out) == first_export
    assert main(export_argv(tiny_llama3_dir, tiny_llama3_lora, out, "--export_overwrite", "--export_size",
                            "0.0002")) == 0
    assert sorted(os.listdir(tmp_path)) == ["merged"] and len(list(out.glob("model-*.safetensors"))) > 2
    assert not (out / "model.safetensors").exists()  # the earlier single shard went with the earlier export


def test_a_failed_write_leaves_the_previous_export(tiny_llama3_dir, tiny_llama3_lora, tmp_path):
    out = tmp_path / "merged"
    assert main(export_argv(tiny_llama3_dir, tiny_llama3_lora, out)) == 0
    before = digest(out)
    limit = (out / "model.safetensors").stat().st_size // 2  # the shard cannot be written whole
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({0}, {0})); "
            "from tunery.cli import main; sys.exit(main(sys.argv[1:]))").format(limit)
    done = subprocess.run([sys.executable, "-c", code, *export_argv(tiny_llama3_dir, tiny_llama3_lora, out,
                                                                    "--export_overwrite")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 2 and one_error_line(done.stderr), done.stderr
    assert "cannot write there" in done.stderr and "untouched" in done.stderr
    assert digest(out) == before and sorted(os.listdir(tmp_path)) == ["merged"]


def test_export_checks_writability_before_the_model_loads(tiny_llama3_dir, tiny_llama3_lora, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    targets = [blocker / "out"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if not os.access(locked, os.W_OK):  # not root: a folder without write permission too
        targets.append(locked / "out")
    try:
        for target in targets:
            assert main(export_argv(tiny_llama3_dir, tiny_llama3_lora, target)) == 2
            err = capsys.readouterr().err
            assert one_error_line(err) and ("cannot write in" in err or "is a file, not a folder" in err), err
            assert "Loading weights" not in err and "merged" not in err  # refused before the model loaded
    finally:
        locked.chmod(0o700)
    assert blocker.read_text() == "not a folder"


def test_export_checks_free_space(tiny_llama3_dir, tmp_path):
    from tunery.export.target import check_export_target

    with pytest.raises(TuneryError, match="GiB free, the export needs about"):
        check_export_target(str(tmp_path / "out"), False, needed_bytes=2**62)
    assert not (tmp_path / "out").exists()


# ====================================================================== no unpickling of a user's file
class Payload:
    """Unpickling this runs code: it creates the file named `path`."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def poisoned(path: Path, flag: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump({"state": Payload(str(flag))}, fh)


def test_safe_load_refuses_code_in_a_pickle(tmp_path):
    from tunery.utils.safe_load import safe_load, unsafe_file

    flag = tmp_path / "pwned"
    poisoned(tmp_path / "optimizer.pt", flag)
    with pytest.raises(TuneryError, match="optimizer.pt: refused to read it") as info:
        safe_load(str(tmp_path / "optimizer.pt"))
    assert "\n" not in str(info.value) and not flag.exists()
    assert "optimizer.pt" in str(unsafe_file(str(tmp_path)))
    import numpy as np
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": (3, (1, 2), None)}
    torch.save(state, tmp_path / "rng_state.pth")  # what Tunery writes loads fine
    assert torch.equal(safe_load(str(tmp_path / "rng_state.pth"))["torch"], state["torch"])


def test_no_weights_only_false_anywhere():
    sources = [p for p in (REPO / "src" / "tunery").rglob("*.py")]
    offenders = [str(p) for p in sources if "weights_only=False" in p.read_text()]
    assert offenders == []


def test_sft_resume_from_a_poisoned_checkpoint_is_one_line(tiny_llama3_dir, tmp_path, capsys):
    out, flag = tmp_path / "run", tmp_path / "pwned"
    options = {"model_name_or_path": tiny_llama3_dir, "output_dir": out, "dataset": "identity",
               "dataset_dir": DATA_DIR, "template": "llama3", "max_samples": 8, "cutoff_len": 64,
               "per_device_train_batch_size": 2, "max_steps": 2, "save_steps": 2, "logging_steps": 1,
               "lora_rank": 4, "report_to": "none"}
    assert main(["train", *(f"{k}={v}" for k, v in options.items())]) == 0
    checkpoint = out / "checkpoint-2"
    poisoned(checkpoint / "optimizer.pt", flag)
    capsys.readouterr()
    code = main(["train", *(f"{k}={v}" for k, v in {**options, "max_steps": 4}.items())])
    err = capsys.readouterr().err
    assert code == 2 and one_error_line(err), err
    assert "optimizer.pt: refused to read it" in err and not flag.exists()


def test_poisoned_bin_weights_of_a_model_or_adapter_are_one_line(tiny_llama3_dir, tiny_llama3_lora, tmp_path, capsys):
    flag = tmp_path / "pwned"
    model = tmp_path / "model"
    shutil.copytree(tiny_llama3_dir, model)
    (model / "model.safetensors").unlink()
    poisoned(model / "pytorch_model.bin", flag)
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_llama3_lora, adapter)
    (adapter / "adapter_model.safetensors").unlink()
    poisoned(adapter / "adapter_model.bin", flag)
    for argv, name in (([str(model)], model / "pytorch_model.bin"),
                       ([str(tiny_llama3_dir), "--adapter_name_or_path", str(adapter)], adapter / "adapter_model.bin")):
        code = main(["chat", "--template", "llama3", "--model_name_or_path", *argv])
        err = capsys.readouterr().err
        assert code == 2 and one_error_line(err), err
        assert f"{name}: refused to read it" in err and not flag.exists()


# ====================================================================== the API: bounded work per request
@pytest.fixture(scope="module")
def api(tiny_llama3_dir):
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from tunery.api.app import create_app
    from tunery.chat.engine import create_engine
    from tunery.config import parse_config

    cfg = parse_config("api", overrides={"model_name_or_path": str(tiny_llama3_dir), "template": "llama3",
                                         "max_new_tokens": 4, "do_sample": False})
    engine = create_engine(cfg)
    with TestClient(create_app(engine, "tiny")) as client:
        yield client, engine


HELLO = [{"role": "user", "content": "Hello"}]


def assert_error(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"], error
    return error


def test_a_huge_body_is_refused_before_it_is_read(api):
    from tunery.api.protocol import MAX_BODY_BYTES

    client, _ = api
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "a" * (20 * 2**20)}]})
    error = assert_error(client.post("/v1/chat/completions", content=body,
                                     headers={"Content-Type": "application/json"}), 413, "larger than")
    assert error["code"] == "request_too_large"

    def pieces():  # no Content-Length: counted as it arrives
        chunk = b"a" * 2**20
        yield b'{"model": "x", "messages": [{"role": "user", "content": "'
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk
        yield b'"}]}'

    assert_error(client.post("/v1/chat/completions", content=pieces(),
                             headers={"Content-Type": "application/json"}), 413, "larger than")
    assert client.post("/v1/chat/completions", json={"model": "x", "messages": HELLO}).status_code == 200


@pytest.mark.parametrize("body, words", [
    ({"messages": HELLO * 1025}, ["at most 1024"]),
    ({"messages": HELLO, "stop": [f"s{i}" for i in range(17)]}, ["at most 16 stop strings"]),
    ({"messages": HELLO, "stop": "x" * 257}, ["at most 256 characters"]),
    ({"messages": [{"role": "user", "content": "word " * 200_000}]}, ["far more than the model's context"]),
])
def test_request_bounds_are_400s(api, body, words):
    client, _ = api
    assert_error(client.post("/v1/chat/completions", json={"model": "x", **body}), 400, *words)
    assert_error(client.post("/v1/score/evaluation", json={"messages": ["a"] * 1025}), 400, "at most 1024")


# ====================================================================== tunery chat and damaged adapters
def test_invalid_utf8_on_chat_stdin_is_replaced_and_said(tiny_llama3_dir):
    done = subprocess.run([sys.executable, "-m", "tunery", "chat", "--model_name_or_path", str(tiny_llama3_dir),
                           "--template", "llama3", "--max_new_tokens", "4", "--do_sample", "false"],
                          input=b"caf\xe9 \xff\xfe bad bytes\nHello\n", capture_output=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONIOENCODING": "utf-8"})
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0 and "Traceback" not in err, err
    assert "warning: input line 1 is not valid UTF-8" in err and "line 2" not in err
    assert done.stdout.decode().count("Assistant:") == 2  # both turns answered


@pytest.fixture(scope="module")
def damaged(tiny_llama3_lora, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("damaged")
    made = {}
    for kind in ("truncated", "garbage", "empty"):
        folder = root / kind
        shutil.copytree(tiny_llama3_lora, folder)
        weights = folder / "adapter_model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(len(data)),
                             "empty": b""}[kind])
        made[kind] = folder
    return made


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_a_damaged_adapter_is_one_line_naming_the_file(tiny_llama3_dir, damaged, kind, capsys):
    code = main(["chat", "--model_name_or_path", str(tiny_llama3_dir), "--adapter_name_or_path",
                 str(damaged[kind]), "--template", "llama3"])
    err = capsys.readouterr().err
    assert code == 2 and one_error_line(err), err
    assert f"{damaged[kind]}/adapter_model.safetensors: not a readable safetensors file" in err


def _adapter_with_base(adapter: Path, folder: Path, base: str) -> Path:
    shutil.copytree(adapter, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_an_adapter_of_another_base_model_warns(tiny_llama3_dir, tiny_llama3_lora, tmp_path, capsys):
    from tunery.config import parse_config
    from tunery.model.adapters import load_adapters
    from tunery.model.load import load_model, load_tokenizer

    cases = {"other": ("Qwen/Qwen2.5-7B-Instruct", True),
             "hub-id-of-the-same": (f"someone/{tiny_llama3_dir.name}", False),  # the hub id of the local folder
             "relative-path": (os.path.relpath(tiny_llama3_dir), False),
             "hub-cache": (f"/cache/models--someone--{tiny_llama3_dir.name}/snapshots/abc123", False)}
    for name, (base, warns) in cases.items():
        folder = _adapter_with_base(tiny_llama3_lora, tmp_path / name, base)
        cfg = parse_config("chat", overrides={"model_name_or_path": str(tiny_llama3_dir), "template": "llama3",
                                              "adapter_name_or_path": [str(folder)]})
        tokenizer = load_tokenizer(cfg)
        capsys.readouterr()
        load_adapters(load_model(cfg, tokenizer), cfg, is_trainable=False)
        err = capsys.readouterr().err
        assert ("was trained on 'Qwen/Qwen2.5-7B-Instruct'" in err) is warns, (name, err)
        assert "Traceback" not in err
