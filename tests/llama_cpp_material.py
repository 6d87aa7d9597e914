"""Real test material from PyPI's llama-cpp-python source distribution (fetched once into pytest's cache).

``vendor/llama.cpp/models/ggml-vocab-*.gguf`` are the real vocabularies of Llama 3, Llama 2, Qwen2, Phi-3, Gemma 4,
Command-R, … with ``.gguf.inp``/``.gguf.out`` pairs beside them (test texts and the real tokenizer's ids), and
``models/templates/*.jinja`` are official chat templates. Transformers reads a .gguf vocabulary (``gguf_file=``, the
``gguf`` package); that takes minutes, so each tokenizer is converted once and saved beside the material.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

VERSION = "0.3.36"
MEMBERS = ("/vendor/llama.cpp/models/ggml-vocab-", "/vendor/llama.cpp/models/templates/")


def fetch(cache: Path) -> Path:
    """The folder holding ``vocab/`` and ``templates/`` (downloads and extracts on first use)."""
    root = cache / f"llama-cpp-python-{VERSION}"
    if (root / "complete").exists():
        return root
    sdist = root / "sdist"
    sdist.mkdir(parents=True, exist_ok=True)
    archives = list(sdist.glob("*.tar.gz"))
    if not archives:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                 f"llama-cpp-python=={VERSION}", "-d", str(sdist)],
                                capture_output=True, text=True, timeout=1800)
        archives = list(sdist.glob("*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError("pip download llama-cpp-python failed: " + result.stderr.strip()[-300:])
    with tarfile.open(archives[0]) as tar:
        for member in tar:
            for marker, folder in zip(MEMBERS, ("vocab", "templates")):
                if marker in member.name and member.isfile():
                    target = root / folder / member.name.rsplit("/", 1)[1]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())
    (root / "complete").write_text(VERSION)
    return root


def vocab_cases(root: Path, vocab: str) -> list[tuple[str, list[int]]]:
    """(text, the real tokenizer's ids) pairs of ``ggml-vocab-<vocab>.gguf``."""
    base = root / "vocab" / f"ggml-vocab-{vocab}.gguf"
    texts = base.with_suffix(".gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = base.with_suffix(".gguf.out").read_text(encoding="utf-8").split("\n")
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, ids)]


def tokenizer(root: Path, vocab: str):
    """The fast tokenizer of ``ggml-vocab-<vocab>.gguf`` (converted once, then loaded from its saved folder)."""
    from transformers import AutoTokenizer

    saved = root / "tokenizers" / vocab
    if not (saved / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(str(root / "vocab"), gguf_file=f"ggml-vocab-{vocab}.gguf")
        tok.save_pretrained(str(saved))
    return AutoTokenizer.from_pretrained(str(saved))


def official_template(root: Path, name: str) -> str:
    return (root / "templates" / f"{name}.jinja").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def llama_cpp_material(request) -> Path:
    try:
        import gguf  # noqa: F401
    except ImportError:
        pytest.skip("the gguf package is missing (pip install -e '.[dev]'): real vocabularies cannot be read")
    try:
        return fetch(Path(request.config.cache.mkdir("llama-cpp-material")))
    except (OSError, RuntimeError, subprocess.TimeoutExpired, tarfile.TarError) as err:
        pytest.skip(f"llama-cpp-python's source distribution could not be had ({err})")
