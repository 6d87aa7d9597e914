"""`tunery eval --backend lm_eval`: EleutherAI's lm-evaluation-harness tasks on the same model + LoRA adapter.

lm-eval is optional (not a Tunery dependency); without it the command says how to install it.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from tunery.errors import ConfigError, TuneryError

if TYPE_CHECKING:
    from tunery.config.loader import Config

INSTALL_HINT = "pip install lm-eval (recent releases: pip install \"lm-eval[hf]\")"


def _import_lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as err:
        raise TuneryError(f"backend: lm_eval needs the lm-eval package, which is not installed ({err}) — "
                          f"{INSTALL_HINT}, or use backend: native") from None
    return lm_eval, HFLM


def run_lm_eval(cfg: Config) -> int:
    adapters = list(cfg.adapter_name_or_path or [])
    if len(adapters) > 1:
        raise ConfigError("backend: lm_eval loads one adapter — merge the others first (tunery export) or give one "
                          "adapter_name_or_path")
    lm_eval, HFLM = _import_lm_eval()
    dtype = cfg.infer_dtype if cfg.infer_dtype != "auto" else "auto"
    lm = HFLM(pretrained=os.path.expanduser(cfg.model_name_or_path), peft=adapters[0] if adapters else None,
              batch_size=cfg.batch_size, dtype=dtype, trust_remote_code=cfg.trust_remote_code,
              revision=cfg.model_revision)
    results = lm_eval.simple_evaluate(model=lm, tasks=list(cfg.tasks), num_fewshot=cfg.n_shot,
                                      batch_size=cfg.batch_size, random_seed=cfg.seed, numpy_random_seed=cfg.seed,
                                      torch_random_seed=cfg.seed)
    if results is None:  # non-zero ranks in a distributed run
        return 0
    try:
        from lm_eval.utils import make_table

        print(make_table(results))
    except ImportError:
        print(json.dumps(results.get("results", {}), indent=2, default=str))
    if cfg.save_dir:
        os.makedirs(cfg.save_dir, exist_ok=True)
        path = os.path.join(cfg.save_dir, "results.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({k: results[k] for k in ("results", "groups", "configs", "versions", "n-shot") if k in results},
                      fh, indent=2, default=str, ensure_ascii=False)
        print(f"results saved to {path}")
    return 0
