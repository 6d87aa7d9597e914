"""`tunery eval`: benchmark → tokenizer + template → prompts → model (+ adapters) → letter scores → results.

Everything that can be checked without the model (the task, every CSV row, n_shot, the template) is checked first.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tunery.errors import ConfigError
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)


def eval_template(cfg: Config, tokenizer):
    """The chat template for the prompts; a model with none and no `template` option is refused (one line)."""
    from tunery.data.template_select import resolve_template

    if cfg.template is None and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"'{cfg.model_name_or_path}' has no chat template and option 'template' is not set — give "
                          "--template NAME (the model's family, e.g. llama3 or qwen; fewshot for a base model)")
    return resolve_template(cfg, tokenizer)


def _set_seed(seed) -> None:
    import random

    import torch

    seed = 42 if seed is None else int(seed)
    random.seed(seed)
    torch.manual_seed(seed)


def _score(model, bench, prompts: dict, letters, pad_id: int, batch_size: int, desc: str) -> dict:
    """Score every question of every subject in one pass; return the run's summary."""
    from tunery.eval.report import summarize
    from tunery.eval.scorer import score_prompts

    flat = [ids for subject in bench.subjects for ids in prompts[subject.key]]
    picked = score_prompts(model, flat, letters, pad_id, batch_size, desc=desc)
    choices, at = {}, 0
    for subject in bench.subjects:
        n = len(subject.questions)
        choices[subject.key] = [c for c, _ in picked[at:at + n]]
        at += n
    return summarize(bench.subjects, choices)


def run_eval(cfg: Config) -> int:
    if cfg.backend == "lm_eval":
        from tunery.eval.lm_eval_backend import run_lm_eval

        return run_lm_eval(cfg)
    started = time.perf_counter()
    from tunery.eval.prompt import STYLES
    from tunery.eval.report import document, format_compare, format_table, write_results
    from tunery.eval.scorer import EncodeStats, encode_subject, letter_tokens
    from tunery.eval.tasks import load_benchmark

    bench = load_benchmark(cfg.task, cfg.task_dir, cfg.split, cfg.n_shot, cfg.lang,
                           split_explicit="split" in cfg.explicit, download_mode=cfg.download_mode)
    logger.info("benchmark %s (%s): %d subjects, %d %s questions, %d-shot, prompts in %s", bench.name, bench.source,
                len(bench.subjects), bench.size, bench.split, cfg.n_shot, bench.lang)

    from tunery.model.session import open_session

    session = open_session(cfg, "infer", resolve=eval_template)
    tokenizer, template = session.tokenizer, session.template
    style = STYLES[bench.lang]
    letters = letter_tokens(template, tokenizer, style)
    stats = EncodeStats()
    prompts = {s.key: encode_subject(template, tokenizer, s, style, cfg.n_shot, cfg.cutoff_len, letters, stats)
               for s in bench.subjects}
    if stats.fewer_shots:
        logger.warning("%d question(s) kept fewer than %d examples to fit cutoff_len %d", stats.fewer_shots,
                       cfg.n_shot, cfg.cutoff_len)
    if stats.truncated:
        logger.warning("%d question(s) were cut from the left to cutoff_len %d even without examples — raise "
                       "cutoff_len", stats.truncated, cfg.cutoff_len)

    _set_seed(cfg.seed)
    model = session.load_model(adapters=False)  # the base first: --compare scores it before merging
    pad_id = tokenizer.pad_token_id
    runs = {}
    if cfg.compare:
        runs["base"] = _score(model, bench, prompts, letters, pad_id, cfg.batch_size, "Scoring base")
        model = session.merge_adapters()
        runs["finetuned"] = _score(model, bench, prompts, letters, pad_id, cfg.batch_size, "Scoring fine-tuned")
    else:
        model = session.merge_adapters()
        runs["model"] = _score(model, bench, prompts, letters, pad_id, cfg.batch_size, "Scoring")
    doc = document(bench, cfg, runs, time.perf_counter() - started, template.name)

    if cfg.compare:
        print(format_table(bench, cfg.n_shot, runs["base"], "base"))
        print()
        print(format_table(bench, cfg.n_shot, runs["finetuned"], "fine-tuned"))
        print()
        print(format_compare(bench, cfg.n_shot, runs["base"], runs["finetuned"]))
    else:
        print(format_table(bench, cfg.n_shot, runs["model"]))
    if cfg.save_dir:
        path = write_results(cfg.save_dir, doc)
        print(f"results saved to {path}")
    return 0
