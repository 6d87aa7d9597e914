"""The Export tab: `tunery export` of the top bar's model and adapter (merged), with the export options' fields
(shard size, dtype, device, legacy format, hub repo); shows where the model went and the files it wrote."""

from __future__ import annotations

import os

from tunery.config.registry import all_options
from tunery.webui import fields as F
from tunery.webui.board import Board, Form, default_output_dir
from tunery.webui.locales import t
from tunery.webui.runner import run_once
from tunery.webui.views import error_note

KIND = "export"


def export_options() -> list:
    """Every supported option of the export group, plus the dtype the weights are written in."""
    opts = [o for o in F.board_options(KIND) if o.group == KIND]
    return opts + [all_options()["infer_dtype"]]


def export_values(form: Form, args) -> dict:
    values = form.values(args)
    if not values.get("export_dir"):
        values["export_dir"] = default_output_dir(form.board.saves_dir, values.get("model_name_or_path"),
                                                  values.get("finetuning_type"), "export")
    return values


def listing(folder: str) -> list[tuple[str, str]]:
    """(file, size) of an export folder."""
    rows = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        size = os.path.getsize(os.path.join(folder, name))
        rows.append((name, f"{size / 2**20:.2f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"))
    return rows


def build(board: Board, lang: str = "en") -> dict:
    import gradio as gr

    options = export_options()
    shown = dict(zip((o.name for o in options), F.initial_values(options, board.initial)))
    comps = {}
    for start in range(0, len(options), 3):
        with gr.Row():
            for opt in options[start:start + 3]:
                comps[opt.name] = F.make_field(opt, shown[opt.name], "export")
    form = Form(board, options, comps, KIND)
    run = board.word(gr.Button(t("export", lang), variant="primary", elem_id="export-start"), "export", "value")
    status = gr.Markdown(elem_id="export-status")
    files = gr.Dataframe(headers=["file", "size"], interactive=False, elem_id="export-files")
    log = board.word(gr.Textbox(label=t("log", lang), lines=6, max_lines=10, elem_id="export-log"), "log")
    flagged = gr.State([])
    out_index = list(form.components).index("export_dir")

    def on_export(previously, *args):
        values = export_values(form, args)
        problem = board.outside(values) or export_refusal(values)
        if not problem:
            _, problem = F.validate(KIND, values)
        updates, bad = form.flags(problem, previously)
        if values["export_dir"] and not from_field(args, out_index):
            updates[out_index] = {**updates[out_index], "value": values["export_dir"]}
        if problem:
            yield (error_note(problem), gr.skip(), gr.skip(), bad, *updates)
            return
        yield (f"exporting to `{values['export_dir']}` …", gr.skip(), "", bad, *updates)
        ok, text, error = run_once(board.runner, KIND, KIND, values)
        if ok:
            note = f"exported to `{values['export_dir']}`"
        else:
            note = error_note(error)
        yield (note, listing(values["export_dir"]) if ok else gr.skip(), text, bad, *[gr.skip()] * len(updates))

    run.click(on_export, [flagged, *form.inputs], [status, files, log, flagged, *form.inputs], concurrency_limit=1)
    return {}


def export_refusal(values: dict) -> str | None:
    """`tunery export`'s own check of export_dir (foreign files, an earlier export without export_overwrite)."""
    from tunery.errors import TuneryError
    from tunery.export.target import check_export_target

    try:
        check_export_target(values["export_dir"], bool(values.get("export_overwrite")))
    except TuneryError as err:
        return str(err)
    return None


def from_field(args, index: int):
    value = args[index]
    return value.strip() if isinstance(value, str) else value
