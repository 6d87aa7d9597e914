"""Every LLaMA-Factory 0.9.5 text template: Tunery's declaration encodes token for token as LLaMA-Factory's own.

LLaMA-Factory runs in its virtualenv (``bash ../shared/bench/llamafactory/setup.sh``; ``LF_VENV`` or
/tmp/llamafactory-venv) in one subprocess: for each template it fixes a fresh copy of the tiny Llama-3 tokenizer
(``get_template_and_fix_tokenizer``) and encodes conversations (single and multi-turn, system prompts, tools with
function calls and observations, reasoning in assistant turns) with ``encode_multiturn`` and ``encode_oneturn``, with
thinking on and (for reasoning templates) off. Skipped when that virtualenv is absent (CI).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tunery.data.templates import MULTIMODAL_TEMPLATES, TEMPLATES, get_template
from tunery.errors import ConfigError, DataError

VENV = Path(os.environ.get("LF_VENV") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "llamafactory-venv"))
LF_PYTHON = VENV / "bin" / "python"

TOOLS = json.dumps([{"name": "get_weather", "description": "Weather of a city",
                     "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "a city"}},
                                    "required": ["city"]}}])
CALL = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})
THOUGHT = "<think>\nThe user greets me.\n</think>\n\nHello! How can I help?"
CONVERSATIONS = {
    "single": (None, None, [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]),
    "history": ("You are terse.", None, [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": THOUGHT},
        {"role": "user", "content": "你好，天气怎么样？"}, {"role": "assistant", "content": "Sunny.\nEnjoy it."},
        {"role": "user", "content": "Code:\n  def f(x): return x"}, {"role": "assistant", "content": "def f(x):\n    return x"}]),
    "tools": ("Use tools.", TOOLS, [
        {"role": "user", "content": "Weather in Paris?"}, {"role": "function", "content": CALL},
        {"role": "observation", "content": '{"temperature": 21}'}, {"role": "assistant", "content": "It is 21 degrees."}]),
}

LF_SCRIPT = r'''
import json, sys, types
from transformers import AutoTokenizer
from llamafactory.data.template import TEMPLATES, get_template_and_fix_tokenizer
spec = json.load(open(sys.argv[1]))
out = {}
for name in spec["names"]:
    for thinking in (True, False):
        tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
        args = types.SimpleNamespace(template=name, train_on_prompt=False, tool_format=None, default_system=None,
                                     enable_thinking=thinking, preserve_thinking=False)
        template = get_template_and_fix_tokenizer(tok, args)
        for case, (system, tools, messages) in spec["conversations"].items():
            key = f"{name}|{thinking}|{case}"
            try:
                out[key] = {"multi": template.encode_multiturn(tok, messages, system, tools),
                            "one": template.encode_oneturn(tok, messages, system, tools),
                            "eos": tok.eos_token_id, "vocab": len(tok)}
            except Exception as err:
                out[key] = {"error": type(err).__name__}
json.dump(out, open(sys.argv[2], "w"))
'''


@pytest.fixture(scope="module")
def lf_encodings(tiny_llama3_dir, tmp_path_factory):
    if not LF_PYTHON.exists():
        pytest.skip(f"LLaMA-Factory virtualenv not found at {VENV} — run `bash ../shared/bench/llamafactory/setup.sh` "
                    "(or set LF_VENV) to compare with LLaMA-Factory")
    work = tmp_path_factory.mktemp("lf-templates")
    names = sorted(set(TEMPLATES) - {"baichuan2"})
    (work / "spec.json").write_text(json.dumps({"names": names, "tokenizer": str(tiny_llama3_dir),
                                                "conversations": CONVERSATIONS}))
    (work / "lf.py").write_text(LF_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DISABLE_VERSION_CHECK="1",
               TOKENIZERS_PARALLELISM="false")
    result = subprocess.run([str(LF_PYTHON), str(work / "lf.py"), str(work / "spec.json"), str(work / "out.json")],
                            env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail("LLaMA-Factory failed:\n" + result.stderr[-3000:])
    return json.loads((work / "out.json").read_text())


def test_every_lf_text_template_is_declared(lf_encodings):
    """73 LLaMA-Factory text templates under their names (+ text-only gemma3, 0.9.x's baichuan2); multimodal apart."""
    lf_text = {key.split("|")[0] for key in lf_encodings}
    assert len(TEMPLATES) == 75 and len(MULTIMODAL_TEMPLATES) == 47
    assert lf_text == set(TEMPLATES) - {"baichuan2"}


def test_same_ids_as_llamafactory(lf_encodings, tiny_llama3_dir):
    from transformers import AutoTokenizer

    problems, compared = [], 0
    for name in sorted(set(TEMPLATES) - {"baichuan2"}):
        for thinking in (True, False):
            tok = AutoTokenizer.from_pretrained(tiny_llama3_dir)
            template = get_template(name, enable_thinking=thinking)
            template.fix_tokenizer(tok)
            for case, (system, tools, messages) in CONVERSATIONS.items():
                theirs = lf_encodings[f"{name}|{thinking}|{case}"]
                if tools and template.tool_format == "lfm2":  # not ported yet: says so in one line
                    with pytest.raises(DataError, match="tool_format 'lfm2' is not supported"):
                        template.encode_multiturn(tok, messages, system, tools)
                    continue
                if "error" not in theirs and None in [i for pair in theirs["multi"] for part in pair for i in part]:
                    # LLaMA-Factory puts None ids for a token the tokenizer lacks; Tunery says so in one line
                    with pytest.raises(ConfigError, match="needs the token .* that the tokenizer lacks"):
                        template.encode_multiturn(tok, messages, system, tools)
                    continue
                if "error" in theirs:  # e.g. glm4's format refuses parallel calls: Tunery must refuse as well
                    with pytest.raises(Exception):
                        template.encode_multiturn(tok, messages, system, tools)
                    continue
                ours = {"multi": [list(map(list, p)) for p in template.encode_multiturn(tok, messages, system, tools)],
                        "one": list(map(list, template.encode_oneturn(tok, messages, system, tools))),
                        "eos": tok.eos_token_id, "vocab": len(tok)}
                compared += 1
                for key in ("eos", "vocab", "multi", "one"):
                    if ours[key] != theirs[key]:
                        problems.append(f"{name} thinking={thinking} {case}: {key} differs: "
                                        f"{str(ours[key])[:160]} vs LLaMA-Factory {str(theirs[key])[:160]}")
                        break
    assert compared > 300
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:30])
