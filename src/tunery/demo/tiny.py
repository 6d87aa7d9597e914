"""Build Tunery's embedded default model: a tiny, randomly initialised Llama-3 or Qwen2 style checkpoint.

Nothing is downloaded. The byte-level BPE tokenizer is trained locally on the bundled demo datasets (English and
Chinese), the model is initialised from ``torch.manual_seed(seed)`` and, optionally, warmed up by a few steps of
full-parameter causal-LM training on the bundled generic text (``pretrain_demo.json`` and ``adgen_local.json``,
never the identity answers). The result is an ordinary Hugging Face folder that ``AutoTokenizer`` /
``AutoModelForCausalLM`` load like a real checkpoint, with the official chat template of the family.

Command line::

    tunery demo --output models/tiny-llama3 [--family llama3|qwen] [--size tiny|bench] [--seed 0]

Identity quickstart on the ``tiny`` build (measured with transformers Trainer + peft, prompt labels -100): LoRA rank 16,
alpha 32, dropout 0, all linear layers, learning rate 1e-2 (5e-3 works too), cosine schedule, batch size 8, 15 epochs
(165 steps over the 87 identity records). Greedy answers to "Who are you?" / "你是谁" then begin with the learned
identity sentence ("I am Tunery, an AI assistant developed by the Tunery team." / "我是 Tunery，由 the Tunery team
开发的人工智能助手。"), while the base model produces unrelated text. 10 epochs are not enough (the Chinese question
gets the English answer). The model is too small to recite every one of the 87 answers word for word.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

from tunery.demo import DATA_DIR
from tunery.demo.chat_templates import LLAMA3_CHAT_TEMPLATE, QWEN2_5_CHAT_TEMPLATE

BUILDER_VERSION = 1
MARKER = "tunery_build.json"
FAMILIES = ("llama3", "qwen")

# vocab is the total size (BPE pieces + special tokens). initializer_range: "tiny" uses 1/sqrt(hidden) instead of the
# usual 0.02, otherwise its logits start (and, with frozen lm_head under LoRA, stay) almost flat: 0.02 * sqrt(64) is
# a logit scale of ~0.16, and a LoRA fine-tune then cannot get below a loss of ~7 however long it trains.
SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, initializer_range=0.125, vocab=4096),
    "bench": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
                  intermediate_size=1376, initializer_range=0.02, vocab=8192),
}

# Llama 3 reserves 256 special ids after the BPE vocabulary; the first eleven, in their upstream order.
LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_ADDED = ["<tool_call>", "</tool_call>"]  # added (not special) tokens, as in Qwen2.5

# Pre-tokenisation split: contractions, letter runs (CJK included) with one leading non-letter, digits in groups of
# at most three, punctuation runs, newlines, spaces. Bytes are mapped afterwards by the ByteLevel pre-tokenizer.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# A little extra text so that chat roles, code-ish and tool-call-ish strings tokenize sensibly.
EXTRA_TEXT = [
    "system user assistant tool function observation",
    "Hello, world! How are you today? I am fine, thank you. And you?",
    "Yes, no, maybe. Please, thanks, sorry, okay, sure, of course.",
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July August "
    "September October November December",
    "one two three four five six seven eight nine ten hundred thousand million 0 1 2 3 4 5 6 7 8 9 10 42 100 2024",
    'def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n',
    'for i in range(10):\n    if i % 2 == 0:\n        print(i)\n',
    '{"name": "get_weather", "arguments": {"city": "Beijing", "unit": "celsius"}}',
    '{"type": "function", "function": {"name": "search", "description": "Search the web", "parameters": '
    '{"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}',
    "你好，世界！今天天气怎么样？我很好，谢谢。你呢？",
    "是的，不是，也许。请，谢谢，对不起，好的，当然可以。",
    "一二三四五六七八九十百千万亿 零 年 月 日 星期一 星期二 星期三 星期四 星期五 星期六 星期日",
    "中文 英文 翻译 问题 回答 帮助 学习 工作 生活 朋友 家人 时间 地方 东西 知道 觉得 可以 需要 应该 喜欢",
    "人工智能 机器学习 深度学习 神经网络 数据 模型 训练 推理 计算机 程序 语言 文本",
]


def _read_json(name: str):
    with open(DATA_DIR / name, encoding="utf-8") as f:
        return json.load(f)


def training_corpus() -> list[str]:
    """The text the tokenizer is trained on, in a fixed order (determinism)."""
    lines: list[str] = []
    for rec in _read_json("identity.json"):
        lines.append(rec["instruction"])
        lines.append(rec["output"])
    for rec in _read_json("adgen_local.json"):
        lines.append(rec["content"])
        lines.append(rec["summary"])
    lines.extend(rec["text"] for rec in _read_json("pretrain_demo.json"))
    lines.extend(EXTRA_TEXT)
    return lines


def warmup_corpus() -> list[str]:
    """Generic text for the optional warm-up: never the identity answers."""
    texts = [rec["text"] for rec in _read_json("pretrain_demo.json")]
    texts += [rec["summary"] for rec in _read_json("adgen_local.json")]
    texts += EXTRA_TEXT
    return texts


def _specials(family: str) -> list[str]:
    return LLAMA3_SPECIALS if family == "llama3" else QWEN_SPECIALS


def build_tokenizer(family: str = "llama3", vocab_size: int = 4096):
    """Train a deterministic byte-level BPE tokenizer and wrap it in ``PreTrainedTokenizerFast``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    specials = _specials(family)
    added = QWEN_ADDED if family == "qwen" else []
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(specials) - len(added),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    if family == "llama3":
        # Like Llama 3's 256 reserved ids: fill up to exactly ``vocab_size`` (the corpus caps the BPE merges).
        n_reserved = vocab_size - tok.get_vocab_size() - len(specials)
        specials = specials + [f"<|reserved_special_token_{i}|>" for i in range(3, 3 + max(0, n_reserved))]
    # Special tokens go after the BPE pieces, as in Llama 3 and Qwen2.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if added:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])

    if family == "llama3":
        bos = "<|begin_of_text|>"
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
        )
        kwargs = dict(bos_token=bos, eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>",
                      chat_template=LLAMA3_CHAT_TEMPLATE, model_input_names=["input_ids", "attention_mask"])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        kwargs = dict(bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
                      additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                      chat_template=QWEN2_5_CHAT_TEMPLATE, errors="replace")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=2048, clean_up_tokenization_spaces=False, **kwargs
    )


def _model_config(family: str, size: str, tokenizer):
    dims = {k: v for k, v in SIZES[size].items() if k != "vocab"}
    # Llama 3: exactly len(tokenizer). Qwen2 pads its embedding matrix beyond len(tokenizer) (151936 > 151665);
    # the qwen family does the same, up to the size's nominal vocabulary.
    vocab = len(tokenizer) if family == "llama3" else max(len(tokenizer), SIZES[size]["vocab"])
    common = dict(
        vocab_size=vocab,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        use_cache=True,
        **dims,
    )
    if family == "llama3":
        from transformers import LlamaConfig

        return LlamaConfig(
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            bos_token_id=tokenizer.convert_tokens_to_ids("<|begin_of_text|>"),
            eos_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"),
            **common,
        )
    from transformers import Qwen2Config

    return Qwen2Config(
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        **common,
    )


def _stop_ids(family: str, tokenizer) -> list[int]:
    names = ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"] if family == "llama3" else ["<|im_end|>", "<|endoftext|>"]
    return [tokenizer.convert_tokens_to_ids(t) for t in names]


def _warm_up(model, tokenizer, family: str, steps: int, seed: int, lr: float = 3e-3, batch_size: int = 8,
             max_len: int = 96) -> list[float]:
    """Deterministic full-parameter causal-LM training on the generic bundled text. Returns the losses."""
    import torch

    texts = warmup_corpus()
    eos = tokenizer.convert_tokens_to_ids("<|end_of_text|>" if family == "llama3" else "<|endoftext|>")
    seqs = [tokenizer(t, add_special_tokens=True)["input_ids"][: max_len - 1] + [eos] for t in texts]
    gen = torch.Generator().manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    pad = tokenizer.pad_token_id
    losses: list[float] = []
    for step in range(steps):
        idx = torch.randint(len(seqs), (batch_size,), generator=gen).tolist()
        batch = [seqs[i] for i in idx]
        width = max(len(s) for s in batch)
        ids = torch.full((batch_size, width), pad, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for row, s in enumerate(batch):
            ids[row, : len(s)] = torch.tensor(s)
            labels[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        for group in opt.param_groups:  # linear decay to 10 %
            group["lr"] = lr * (1.0 - 0.9 * step / max(1, steps))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def _build_args(family: str, size: str, seed: int, warmup_steps: int) -> dict:
    return {"builder_version": BUILDER_VERSION, "family": family, "size": size, "seed": int(seed),
            "warmup_steps": int(warmup_steps)}


REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", MARKER)


def is_built(output_dir: Union[str, os.PathLike], family: str = "llama3", size: str = "tiny", seed: int = 0,
             warmup_steps: int = 0) -> bool:
    """True when ``output_dir`` already holds a complete model built with these arguments."""
    out = Path(output_dir)
    if not all((out / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    want = _build_args(family, size, seed, warmup_steps)
    return all(marker.get(k) == v for k, v in want.items())


def build_tiny_model(
    output_dir: Union[str, os.PathLike],
    family: str = "llama3",
    size: str = "tiny",
    seed: int = 0,
    overwrite: bool = False,
    warmup_steps: int = 0,
) -> Path:
    """Build (or reuse) a tiny random ``family`` model with a locally trained tokenizer in ``output_dir``.

    Deterministic: the same arguments give the same bytes of weights and tokenizer. When ``output_dir`` already holds
    a complete build with the same arguments (see ``tunery_build.json``) it is returned untouched unless ``overwrite``;
    an earlier build with other arguments is replaced; a non-empty folder holding anything else is refused unless
    ``overwrite`` (which empties it first).

    ``warmup_steps`` > 0 first trains all parameters for that many steps (batches of 8 texts of up to 96 tokens,
    AdamW) on generic bundled text, never the identity answers. It is not needed for the LoRA quickstart: the plain
    ``tiny`` build learns the identity set in about 15 epochs (see the module docstring).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {tuple(SIZES)}")
    if warmup_steps < 0:
        raise ValueError("warmup_steps must be >= 0")
    out = Path(output_dir).expanduser().resolve()
    if not overwrite and is_built(out, family, size, seed, warmup_steps):
        return out
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    # An earlier Tunery build (other arguments) is ours to replace; anything else needs overwrite=True.
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not overwrite:
        raise FileExistsError(
            f"{out} is not empty and holds no Tunery tiny model; pass overwrite=True (--overwrite) to replace it"
        )

    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        tokenizer = build_tokenizer(family, SIZES[size]["vocab"])
        config = _model_config(family, size, tokenizer)
        rng_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            losses = _warm_up(model, tokenizer, family, warmup_steps, seed) if warmup_steps else []
        finally:
            torch.random.set_rng_state(rng_state)
        stop = _stop_ids(family, tokenizer)
        model.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id if family == "llama3" else None,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
        )
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        n_params = sum(p.numel() for p in model.parameters())
        marker = dict(_build_args(family, size, seed, warmup_steps), num_parameters=n_params,
                      vocab_size=config.vocab_size, tokenizer_size=len(tokenizer))
        if losses:
            marker["warmup_loss_first"] = round(losses[0], 4)
            marker["warmup_loss_last"] = round(losses[-1], 4)
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")

        # Swap in: drop the old marker first (the folder is not complete any more), clear the folder when
        # overwriting, move the new files over, and the marker last: its presence means "complete".
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).unlink(missing_ok=True)
        if overwrite:
            for child in out.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        for child in sorted(tmp.iterdir()):
            child.chmod(0o644)  # some writers create 0600 files
            if child.name != MARKER:
                os.replace(child, out / child.name)
        os.replace(tmp / MARKER, out / MARKER)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
