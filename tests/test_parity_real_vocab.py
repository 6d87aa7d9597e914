"""LLaMA-Factory's own encoding on the real vocabularies: Tunery's named templates give its ids token for token, and
LLaMA-Factory's templates train what the official chat templates serve, or not (the table of the closing note).

LLaMA-Factory runs in its virtualenv (as tests/test_parity_templates.py; skipped without it) on each family's
tokenizer as the model ships it (llama_cpp_material.family_tokenizer), saved to a folder.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from llama_cpp_material import family_tokenizer, llama_cpp_material  # noqa: F401
from test_parity_templates import LF_PYTHON, VENV
from tunery.data.templates import get_template
from tunery.data.templates.serving import PROBES, serving_probe

THOUGHT = [{"role": "user", "content": "Hi"},
           {"role": "assistant", "content": "<think>\nA greeting.\n</think>\n\nHello!"},
           {"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]
CONVERSATIONS = [[system, messages] for system, messages in PROBES] + [[None, THOUGHT]]
# family -> LLaMA-Factory template names for it; gemma4 is multimodal in LLaMA-Factory (Tunery refuses the name)
NAMED = {"llama3.1": ["llama3"], "llama2": ["llama2"], "qwen2.5": ["qwen"], "qwen3": ["qwen3", "qwen3_nothink"],
         "deepseek-r1-distill-llama": ["deepseekr1"], "deepseek-r1-distill-qwen": ["deepseekr1", "deepseek3"],
         "phi3.5": ["phi"], "gemma4": ["gemma", "gemma4"], "command-r": ["cohere"]}
# what the official template serves (enable_thinking) for a LLaMA-Factory template with thinking on
SERVED_AS = {"qwen3_nothink": {"enable_thinking": False}, "qwen3": {"enable_thinking": True}}
# measured: where LLaMA-Factory's template (and so Tunery's of that name) encodes the probes as the model serves them
SAME_AS_SERVED = {("qwen2.5", "qwen"), ("command-r", "cohere"), ("deepseek-r1-distill-qwen", "deepseek3")}

LF_SCRIPT = r'''
import json, sys, types
from transformers import AutoTokenizer
from llamafactory.data.template import get_template_and_fix_tokenizer
spec = json.load(open(sys.argv[1]))
out = {}
for job in spec["jobs"]:
    tok = AutoTokenizer.from_pretrained(job["dir"])
    args = types.SimpleNamespace(template=job["template"], train_on_prompt=False, tool_format=None,
                                 default_system=None, enable_thinking=True, preserve_thinking=False)
    template = get_template_and_fix_tokenizer(tok, args)
    out[job["key"]] = [template.encode_multiturn(tok, messages, system, None) for system, messages in spec["conversations"]]
json.dump(out, open(sys.argv[2], "w"))
'''


@pytest.fixture(scope="module")
def lf_real(llama_cpp_material, tmp_path_factory):  # noqa: F811
    if not LF_PYTHON.exists():
        pytest.skip(f"LLaMA-Factory virtualenv not found at {VENV} — run `bash ../shared/bench/llamafactory/setup.sh` "
                    "(or set LF_VENV) to compare with LLaMA-Factory")
    work = tmp_path_factory.mktemp("lf-real")
    jobs = []
    for family, names in NAMED.items():
        folder = work / family
        family_tokenizer(llama_cpp_material, family).save_pretrained(str(folder))
        jobs += [{"dir": str(folder), "template": name, "key": f"{family}|{name}"} for name in names]
    (work / "spec.json").write_text(json.dumps({"jobs": jobs, "conversations": CONVERSATIONS}))
    (work / "lf.py").write_text(LF_SCRIPT)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1",
           "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(LF_PYTHON), str(work / "lf.py"), str(work / "spec.json"), str(work / "out.json")],
                            env=env, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        pytest.fail("LLaMA-Factory failed:\n" + result.stderr[-3000:])
    return json.loads((work / "out.json").read_text())


CASES = [(family, name) for family, names in NAMED.items() for name in names]


@pytest.mark.parametrize("family,name", CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_real_vocabulary_parity_and_serving(family, name, lf_real, llama_cpp_material):  # noqa: F811
    theirs = [[list(map(list, pair)) for pair in pairs] for pairs in lf_real[f"{family}|{name}"]]
    tok = family_tokenizer(llama_cpp_material, family)
    served = [probe.ids for probe in serving_probe(tok, SERVED_AS.get(name))]
    if name == "gemma4":  # Tunery refuses the multimodal name; LLaMA-Factory's text encoding is still measured
        template = None
    else:
        template = get_template(name)
        template.fix_tokenizer(tok)
        ours = [[list(map(list, pair)) for pair in template.encode_multiturn(tok, messages, system)]
                for system, messages in CONVERSATIONS]
        assert ours == theirs, f"{family} {name}: Tunery and LLaMA-Factory differ"
    lf_ids = [[i for prompt, response in pairs for i in prompt + response] for pairs in theirs[:len(PROBES)]]
    assert len(served) == len(PROBES)
    assert (lf_ids == served) is ((family, name) in SAME_AS_SERVED), (family, name)
    if name == "gemma4":  # LLaMA-Factory's gemma4 always trains thinking on (<|think|> in a system turn), served: off
        think = tok.convert_tokens_to_ids("<|think|>")
        assert think in lf_ids[0] and think not in served[0]
