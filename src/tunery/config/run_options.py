"""Options about a run as a whole: estimating it before it starts, rerunning it from its run card."""

from __future__ import annotations

import os

from tunery.config.option import Option, positive

R = "run"

def _run_card(path):
    if not os.path.isfile(os.path.join(path, "run_card.json")):
        return f"'{path}' holds no run_card.json — give the output_dir of a Tunery training run"
    return None


OPTIONS = [
    Option("dry_run", "bool", False, "tunery train: print the estimate (memory per device, time, whether it fits) "
           "instead of training — the same as `tunery estimate`.", R),
    Option("reproduce", "str", None, "tunery train: rerun the run recorded in this output_dir's run_card.json with "
           "the same options (into OUTPUT_DIR-reproduce unless output_dir is given), saying what differs now "
           "(library versions, data files, tokenizer). Options given beside it override the card's.", R,
           check=_run_card),
    Option("estimate_probe", "bool", True, "tunery estimate: time a few steps of the stage's own Trainer on the run's "
           "encoded examples, with a randomly initialised copy of the model (1-2 layers for large models).", "estimate"),
    Option("estimate_tflops", "float", None, "tunery estimate: the device's throughput in TFLOP/s; given, the step "
           "time comes from FLOPs instead of the probe.", "estimate", check=positive),
    Option("estimate_device_memory_gb", "float", None, "tunery estimate: memory per device to fit in, GiB "
           "(default: what the device found here has free).", "estimate", check=positive),
    Option("estimate_format", "str", "text", "tunery estimate: `text` (a report) or `json` (one object) (--format).",
           "estimate", choices=("text", "json")),
]
RULES: list = []
