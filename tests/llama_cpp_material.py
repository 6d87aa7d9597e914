"""Real test material from PyPI's llama-cpp-python source distribution (fetched once into pytest's cache).

``vendor/llama.cpp/models/ggml-vocab-*.gguf`` are the real vocabularies of Llama 3, Llama 2, Qwen2, Phi-3, Gemma 4,
Command-R, … with ``.gguf.inp``/``.gguf.out`` pairs beside them (test texts and the real tokenizer's ids), and
``models/templates/*.jinja`` are official chat templates. Transformers reads most .gguf vocabularies (``gguf_file=``,
the ``gguf`` package); that takes minutes, so each tokenizer is converted once and saved beside the material. Gemma 4's
and Command-R's it cannot read: :func:`gguf_tokenizer` builds those from the file's ``tokenizer.ggml.*`` metadata with
the ``tokenizers`` library, the way llama.cpp's own tokenizer reads them (the .inp/.out pairs check it).
"""

from __future__ import annotations

import struct
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
        path = root / "vocab" / f"ggml-vocab-{vocab}.gguf"
        if _built_here(read_metadata(path)):
            tok = gguf_tokenizer(path)
        else:
            tok = AutoTokenizer.from_pretrained(str(root / "vocab"), gguf_file=path.name)
        tok.save_pretrained(str(saved))
    return AutoTokenizer.from_pretrained(str(saved))


# ---------------------------------------------------------------- a .gguf vocabulary, read without transformers
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types (1 normal, 2 unknown, 5 unused, 6 byte)


def read_metadata(path: Path) -> dict:
    """The key/value section of a .gguf file (GGUF v2/v3 layout: magic, version, tensor count, kv count, pairs)."""
    import numpy as np

    data = memoryview(Path(path).read_bytes())
    pos = 4

    def take(fmt: str):
        nonlocal pos
        value = struct.unpack_from(fmt, data, pos)[0]
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("<Q")
        pos += n
        return bytes(data[pos - n:pos]).decode("utf-8")

    def value(kind: int):
        nonlocal pos
        if kind == 8:
            return string()
        if kind != 9:
            return take(_SCALARS[kind])
        item, n = take("<I"), take("<Q")
        if item == 8:
            return [string() for _ in range(n)]
        dtype = np.dtype(_SCALARS[item])
        array = np.frombuffer(data, dtype, n, pos)
        pos += n * dtype.itemsize
        return array.tolist()

    if bytes(data[:4]) != b"GGUF":
        raise ValueError(f"{path} is not a .gguf file")
    _version, _tensors, n_kv = take("<I"), take("<Q"), take("<Q")
    return {string(): value(take("<I")) for _ in range(n_kv)}


def _gemma4(meta: dict, vocab: dict, merges: list):
    """SentencePiece-style BPE on raw UTF-8: spaces become ▁, newline runs are pieces of their own, byte fallback."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab, merges, byte_fallback=True, fuse_unk=True, ignore_merges=False,
                               unk_token=meta["tokenizer.ggml.tokens"][meta.get("tokenizer.ggml.unknown_token_id", 3)]))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("\n+"), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok


def _gpt2(meta: dict, vocab: dict, merges: list):
    """GPT-2 byte-level BPE; Command-R's pre-tokenizer splits digits one by one first (llama.cpp's "command-r")."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in ("command-r", "gpt-2", "default"):
        raise ValueError(f"pre-tokenizer {pre!r} is not built here")
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    steps = [pre_tokenizers.Digits(individual_digits=True)] if pre == "command-r" else []
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps + [pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


_BUILDERS = {"gemma4": _gemma4, "gpt2": _gpt2}


def _built_here(meta: dict) -> bool:
    """The vocabularies transformers cannot read: Gemma 4's, and Command-R's (its other BPE ones it reads)."""
    kind = meta["tokenizer.ggml.model"]
    return kind == "gemma4" or (kind == "gpt2" and meta.get("tokenizer.ggml.pre") == "command-r")


def gguf_tokenizer(path: Path):
    """A transformers fast tokenizer from a .gguf file's ``tokenizer.ggml.*`` metadata: tokens and merges, control
    tokens as special added tokens, user-defined ones as added tokens, bos/eos/unk/pad ids, add_bos, chat template."""
    from tokenizers import AddedToken
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    meta = read_metadata(path)
    kind = meta["tokenizer.ggml.model"]
    if kind not in _BUILDERS:
        raise ValueError(f"{path.name}: tokenizer model {kind!r} is not built here")
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    merges = [(m[:m.index(" ", 1)], m[m.index(" ", 1) + 1:]) for m in meta["tokenizer.ggml.merges"]]
    tok = _BUILDERS[kind](meta, {t: i for i, t in enumerate(tokens)}, merges)
    tok.add_tokens([AddedToken(tokens[i], special=types[i] == CONTROL, normalized=False)
                    for i in range(len(tokens)) if types[i] in (CONTROL, USER_DEFINED)])
    named = {name: tokens[meta[f"tokenizer.ggml.{key}_token_id"]]
             for name, key in (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"),
                               ("pad_token", "padding")) if f"tokenizer.ggml.{key}_token_id" in meta}
    if meta.get("tokenizer.ggml.add_bos_token") and "bos_token" in named:
        bos = named["bos_token"]
        tok.post_processor = TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                special_tokens=[(bos, tokens.index(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **named)
    fast.chat_template = meta.get("tokenizer.chat_template")
    return fast


def official_template(root: Path, name: str) -> str:
    return (root / "templates" / f"{name}.jinja").read_text(encoding="utf-8")


JINJA_DIR = Path(__file__).parent / "data" / "jinja"
# (vocab, template file (None: tests/data/jinja/llama2.jinja; "gguf": the one the .gguf file carries), the end-of-turn
# text the template puts after an answer)
FAMILIES = {
    "llama3.1": ("llama-bpe", "meta-llama-Llama-3.1-8B-Instruct", "<|eot_id|>"),
    "deepseek-r1-distill-llama": ("llama-bpe", "deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "<｜end▁of▁sentence｜>"),
    "llama2": ("llama-spm", None, " </s>"),
    "qwen2.5": ("qwen2", "Qwen-Qwen2.5-7B-Instruct", "<|im_end|>"),
    "qwen3": ("qwen2", "Qwen-Qwen3-0.6B", "<|im_end|>"),
    "deepseek-r1-distill-qwen": ("qwen2", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "<｜end▁of▁sentence｜>"),
    "phi3.5": ("phi-3", "microsoft-Phi-3.5-mini-instruct", "<|end|>"),
    "gemma4": ("gemma-4", "google-gemma-4-31B-it", "<turn|>"),
    "command-r": ("command-r", "gguf", "<|END_OF_TURN_TOKEN|>"),  # c4ai-command-r's default template
}


def family_tokenizer(root: Path, family: str):
    """A fresh tokenizer of ``family`` (a FAMILIES key) as the model ships it: vocabulary, chat template, turn tokens."""
    vocab, name, _ = FAMILIES[family]
    tok = tokenizer(root, vocab)
    if name != "gguf":
        tok.chat_template = official_template(root, name) if name else (
            (JINJA_DIR / "llama2.jinja").read_text(encoding="utf-8").split("\n", 1)[1])
    if name and "DeepSeek-R1" in name:  # the distilled models' tokenizers add DeepSeek's turn tokens to the base vocabulary
        tok.add_tokens(["<｜User｜>", "<｜Assistant｜>"], special_tokens=True)
        tok.add_special_tokens({"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"})
    if vocab == "phi-3":  # Phi-3.5-mini-instruct's tokenizer.json strips the whitespace after its chat tokens (rstrip);
        from tokenizers import AddedToken  # the .gguf file has no field for it

        chat = [t for i, t in tok.added_tokens_decoder.items() if 32001 <= i <= 32010]
        tok._tokenizer.add_special_tokens([AddedToken(t.content, rstrip=True, normalized=False, special=True)
                                           for t in chat])
    return tok


@pytest.fixture(scope="session")
def llama_cpp_material(request) -> Path:
    try:
        import gguf  # noqa: F401
    except ImportError:
        pytest.skip("the gguf package is missing (pip install -e '.[dev]'): real vocabularies cannot be read")
    try:
        cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
        folder = cache.mkdir("llama-cpp-material") if cache is not None else \
            request.getfixturevalue("tmp_path_factory").mktemp("llama-cpp-material")
        return fetch(Path(folder))
    except (OSError, RuntimeError, subprocess.TimeoutExpired, tarfile.TarError) as err:
        pytest.skip(f"llama-cpp-python's source distribution could not be had ({err})")
