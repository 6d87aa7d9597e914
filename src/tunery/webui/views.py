"""What the board shows about data and runs: the data preview (trained tokens marked), the job's status line, the
progress bar, the loss curve, prediction metrics and samples. Plain functions of files and values (unit tested)."""

from __future__ import annotations

import html
import io
import json
import os
import time
from typing import Any

from tunery.webui.locales import t
from tunery.webui.runner import loss_points, progress

PREVIEW_NUM = 3


# ------------------------------------------------------------------ data preview (reuses `tunery preview`)
def render_preview(values: dict[str, Any], num: int = PREVIEW_NUM) -> tuple[str, str]:
    """(HTML of the first `num` training items with the trained tokens marked, summary text) for the options in
    `values` — the items `tunery preview --format json` prints, rendered as its text view marks them."""
    from tunery.config.loader import parse_config
    from tunery.data.preview import preview, print_summary, segments
    from tunery.data.records import IGNORE_INDEX
    from tunery.model.session import open_session

    cfg = parse_config("preview", overrides={**values, "preview_num": num, "preview_format": "json"})
    session = open_session(cfg, "preview")  # one tokenizer for the preview and for marking its tokens
    buffer = io.StringIO()
    summary = preview(cfg, stream=buffer, session=session)
    items = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    items = [item for item in items if "summary" not in item]
    tokenizer = session.tokenizer
    blocks = []
    for item in items:
        for name in ("chosen", "rejected") if "chosen_input_ids" in item else ("",):
            prefix = f"{name}_" if name else ""
            ids, labels = item[f"{prefix}input_ids"], item[f"{prefix}labels"]
            if len(labels) != len(ids):  # prompt-only items (predict, ppo)
                parts, trained = [(tokenizer.decode(ids, skip_special_tokens=False), False)], 0
            else:
                parts, trained = segments(tokenizer, ids, labels), sum(1 for x in labels if x != IGNORE_INDEX)
            head = (f"item {item['index'] + 1}{' · ' + name if name else ''} · {len(ids)} tokens, "
                    f"{trained} trained")
            body = "".join(f"<mark class='trained'>{html.escape(text)}</mark>" if on else
                           f"<span class='prompt'>{html.escape(text)}</span>" for text, on in parts)
            blocks.append(f"<div class='tunery-record'><div class='head'>{html.escape(head)}"
                          f"</div><pre>{body}</pre></div>")
    lines: list[str] = []

    class _Lines:  # print_summary writes through .line(text, style)
        def line(self, text: str = "", style: str | None = None) -> None:
            lines.append(text)

    print_summary(_Lines(), summary)
    return "<div class='tunery-preview'>" + "".join(blocks) + "</div>", "\n".join(lines).strip()


# ------------------------------------------------------------------ job status
def error_note(message: str) -> str:
    """A one-line error shown in red in a status line."""
    return f"<span class='tunery-error'>{html.escape(str(message))}</span>"


def status_markdown(job: dict, kind: str, lang: str = "en") -> str:
    """One line: what runs (or ran) and how it ended; a failure shows its one-line error."""
    if not job or job.get("kind") != kind:
        return t("idle", lang)
    state = job["state"]
    where = job.get("output_dir") or job.get("folder")
    line = f"**{t(state, lang)}** · `{job['command']}`"
    if state in ("running", "stopping"):
        line += f" · pid {job['pid']}"
    if state == "done":
        line += f" · output: `{where}`"
    if job.get("error"):
        line += f"\n\n{error_note(job['error'])}"
    return line


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_info(job: dict) -> dict[str, Any]:
    """Step/total, percent, elapsed and remaining for the job (100 % once a run has finished)."""
    if not job:
        return {}
    info = dict(progress(job.get("output_dir")))
    if job.get("state") == "done" and info.get("total"):
        info.update(step=info["total"], percent=100.0, remaining="0:00:00")
    end = job.get("ended") or time.time()
    info["elapsed"] = _clock(end - job["started"])
    return info


def progress_html(job: dict, kind: str) -> str:
    """A progress bar with `step/total · percent · elapsed · remaining`."""
    if not job or job.get("kind") != kind:
        return "<div class='tunery-progress'><div class='bar' style='width:0%'></div></div>"
    info = progress_info(job)
    percent = float(info.get("percent", 0.0))
    state = job["state"]
    if info.get("total"):
        text = (f"{info['step']}/{info['total']} · {percent:.0f}% · elapsed {info['elapsed']} · "
                f"remaining {info.get('remaining') or '?'}")
    else:
        text = f"elapsed {info['elapsed']}"
        percent = 100.0 if state == "done" else percent
    css = {"failed": " failed", "stopped": " failed"}.get(state, "")
    return (f"<div class='tunery-progress{css}' data-percent='{percent:.0f}'><div class='bar' "
            f"style='width:{percent:.1f}%'></div></div><div class='tunery-progress-text'>{html.escape(text)}</div>")


def loss_frame(output_dir: str | None):
    """A DataFrame (step, loss, curve) with the raw and the smoothed loss, for gr.LinePlot."""
    import pandas as pd

    points = loss_points(output_dir)
    rows = [(s, raw, "raw") for s, raw, _ in points] + [(s, sm, "smoothed") for s, _, sm in points]
    frame = pd.DataFrame(rows, columns=["step", "loss", "curve"])
    # typed even when empty: a plot whose first data has untyped columns draws loss on a categorical axis
    return frame.astype({"step": "int64", "loss": "float64", "curve": "str"})


# ------------------------------------------------------------------ prediction results
def prediction_tables(output_dir: str | None, samples: int = 10):
    """(metrics DataFrame, sample outputs DataFrame) from predict_results.json and generated_predictions.jsonl."""
    import pandas as pd

    from tunery.train.predict import PREDICTIONS_FILE

    metrics, rows = {}, []
    if output_dir:
        path = os.path.join(output_dir, "predict_results.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                metrics = json.load(fh)
        path = os.path.join(output_dir, PREDICTIONS_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip() and len(rows) < samples:
                        row = json.loads(line)
                        rows.append((row.get("prompt", ""), row.get("predict", ""), row.get("label", "")))
    table = pd.DataFrame([(k, round(v, 4) if isinstance(v, float) else v) for k, v in sorted(metrics.items())],
                         columns=["metric", "value"])
    return table, pd.DataFrame(rows, columns=["prompt", "predict", "label"])
