"""`tunery export`: the merged model, loaded with plain transformers, generates what base + adapter generate; the
folder has the tokenizer, chat template and an Ollama Modelfile whose Go TEMPLATE renders like Tunery's template."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tunery.cli import main

CONVERSATION = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a joke."},
]


@pytest.fixture(scope="module")
def exported(tiny_llama3_dir, tiny_llama3_lora, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "merged"
    code = main(["export", "--model_name_or_path", str(tiny_llama3_dir), "--adapter_name_or_path",
                 str(tiny_llama3_lora), "--template", "llama3", "--export_dir", str(out), "--export_size", "1"])
    assert code == 0
    return out


def test_folder_contents(exported: Path):
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja", "Modelfile"):
        assert (exported / name).exists(), name
    from safetensors import safe_open

    with safe_open(str(exported / "model.safetensors"), framework="pt") as fh:
        keys = list(fh.keys())
    assert keys and not any("lora" in k for k in keys)  # merged, not an adapter


def test_plain_transformers_generates_like_base_plus_adapter(exported, tiny_llama3_dir, tiny_llama3_lora):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported)
    ids = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    settings = dict(max_new_tokens=24, do_sample=False, eos_token_id=[], pad_token_id=tokenizer.pad_token_id)
    merged = AutoModelForCausalLM.from_pretrained(exported).eval()
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama3_dir),
                                          tiny_llama3_lora).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama3_dir).eval()
    with torch.inference_mode():
        got = merged.generate(ids, **settings)[0, ids.shape[1]:].tolist()
        want = reference.generate(ids, **settings)[0, ids.shape[1]:].tolist()
        plain = base.generate(ids, **settings)[0, ids.shape[1]:].tolist()
    assert len(got) == 24 and got == want
    assert got != plain  # the adapter changed the model


def test_tokenizer_keeps_the_training_template(exported):
    from transformers import AutoTokenizer

    from tunery.data.templates import get_template

    tokenizer = AutoTokenizer.from_pretrained(exported)
    rendered = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert rendered == get_template("llama3").render(CONVERSATION, tokenizer=tokenizer)
    config = json.loads((exported / "generation_config.json").read_text())
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert eot in (config["eos_token_id"] if isinstance(config["eos_token_id"], list) else [config["eos_token_id"]])


def test_modelfile_has_template_system_and_stops(exported):
    text = (exported / "Modelfile").read_text()
    lines = text.splitlines()
    assert "FROM ." in lines
    assert any(line.startswith('TEMPLATE """') for line in lines)
    assert 'PARAMETER stop "<|eot_id|>"' in lines and 'PARAMETER stop "<|eom_id|>"' in lines
    assert "{{ range .Messages }}" in text and "{{ .Content }}" in text


@pytest.mark.parametrize("legacy, pattern", [(False, "model-*.safetensors"), (True, "pytorch_model-*.bin")])
def test_shards_and_legacy_format_load_the_same_weights(exported, tiny_llama3_dir, tiny_llama3_lora, tmp_path,
                                                        legacy, pattern):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "sharded"
    argv = ["export", "--model_name_or_path", str(tiny_llama3_dir), "--adapter_name_or_path", str(tiny_llama3_lora),
            "--template", "llama3", "--export_dir", str(out), "--export_size", "0.0002"]  # 200 kB shards
    assert main(argv + (["--export_legacy_format"] if legacy else [])) == 0
    assert len(list(out.glob(pattern))) > 2
    assert (out / ("pytorch_model.bin.index.json" if legacy else "model.safetensors.index.json")).exists()
    sharded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    single = AutoModelForCausalLM.from_pretrained(exported).state_dict()
    assert sharded.keys() == single.keys() and all(torch.equal(sharded[k], single[k]) for k in single)


def test_dtype_and_one_line_errors(tiny_llama3_dir, tiny_llama3_lora, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bf16"
    assert main(["export", "--model_name_or_path", str(tiny_llama3_dir), "--template", "llama3",
                 "--export_dir", str(out), "--infer_dtype", "bfloat16"]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    capsys.readouterr()

    def error(argv):
        code = main(["export", "--model_name_or_path", str(tiny_llama3_dir)] + argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2, lines
        return lines[-1]

    assert "'export_dir' is required" in error([])
    assert "export_quantization_bit" in error(["--export_dir", str(out), "--export_quantization_bit", "4"])
    assert "is the folder of the model" in error(["--export_dir", str(tiny_llama3_dir)])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = error(["--adapter_name_or_path", str(tiny_llama3_lora), "--template", "llama3",
                     "--export_dir", str(tmp_path / "hub"), "--export_hub_model_id", "someone/tiny"])
    assert "offline" in message and "someone/tiny" in message
    assert (tmp_path / "hub" / "model.safetensors").exists()  # the export itself completed


GO_RENDER = r"""
package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct{ Role, Content string }
type Data struct {
	System   string
	Messages []Message
}
type Case struct {
	Template string
	Data     Data
}

func main() {
	var cases []Case
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	out := []string{}
	for _, c := range cases {
		t := template.Must(template.New("m").Parse(c.Template))
		var b stringsBuilder
		if err := t.Execute(&b, c.Data); err != nil {
			panic(err)
		}
		out = append(out, string(b))
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

type stringsBuilder []byte

func (s *stringsBuilder) Write(p []byte) (int, error) { *s = append(*s, p...); return len(p), nil }
"""


def test_modelfile_template_renders_like_tunery_in_go(tiny_llama3_dir, tmp_path):
    """Ollama's TEMPLATE is Go text/template: execute it with Go's own engine and compare with Template.render."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain is not installed (apt-get install golang-go)")
    from transformers import AutoTokenizer

    from tunery.data.templates import TEMPLATES
    from tunery.export.modelfile import _Writer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    cases, expected, names = [], [], []
    for name, template in sorted(TEMPLATES.items()):
        body = _Writer(template, tokenizer).template()
        if body is None:
            continue
        for system in ("You are terse.", ""):
            messages = ([{"role": "system", "content": system}] if system else []) + CONVERSATION
            cases.append({"Template": body, "Data": {"System": system or template.default_system,
                                                      "Messages": [{"Role": m["role"], "Content": m["content"]}
                                                                   for m in CONVERSATION]}})
            expected.append(template.render(messages, tokenizer=tokenizer))
            names.append(f"{name} (system={system!r})")
    assert len(names) > 20
    (tmp_path / "render.go").write_text(GO_RENDER)
    env = {"HOME": str(tmp_path), "GOCACHE": str(tmp_path / "gocache"), "GOPATH": str(tmp_path / "gopath"),
           "GO111MODULE": "off", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([go, "run", str(tmp_path / "render.go")], input=json.dumps(cases), capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    rendered = json.loads(proc.stdout)
    mismatches = [n for n, got, want in zip(names, rendered, expected) if got != want]
    assert not mismatches, mismatches
