"""The Evaluate & Predict tab: `tunery train` with do_predict / predict_with_generate on an evaluation dataset (the
model and adapter of the top bar), as a board job; shows BLEU/ROUGE metrics and sample outputs when it ends."""

from __future__ import annotations

from tunery.errors import TuneryError
from tunery.webui import fields as F
from tunery.webui.board import Board, Form, default_dataset_dir, default_output_dir
from tunery.webui.locales import t
from tunery.webui.runner import tail
from tunery.webui.train_tab import dataset_names
from tunery.webui.views import error_note, prediction_tables, progress_html, status_markdown

KIND = "predict"
# The options this tab shows (their fields come from the declarations like every other field).
OPTIONS = ("dataset_dir", "eval_dataset", "cutoff_len", "max_samples", "per_device_eval_batch_size", "max_new_tokens",
           "do_sample", "temperature", "top_p", "output_dir")


def predict_values(form: Form, args) -> dict:
    values = form.values(args)
    values.update(stage="sft", do_predict=True, predict_with_generate=True)
    if not values.get("output_dir"):
        values["output_dir"] = default_output_dir(form.board.saves_dir, values.get("model_name_or_path"),
                                                  values.get("finetuning_type"), "eval")
    return values


def build(board: Board, lang: str = "en") -> dict:
    import gradio as gr

    options = F.pick_options(OPTIONS)
    given = {"dataset_dir": default_dataset_dir(), **board.initial}
    names, _ = dataset_names(given.get("dataset_dir"))
    comps = {}
    shown = dict(zip(OPTIONS, F.initial_values(options, given)))
    for start in range(0, len(options), 3):
        with gr.Row():
            for opt in options[start:start + 3]:
                comps[opt.name] = F.make_field(opt, shown[opt.name], "eval", names)
    form = Form(board, options, comps, "train")
    with gr.Row():
        run = board.word(gr.Button(t("start_predict", lang), variant="primary", elem_id="eval-start"),
                         "start_predict", "value")
        stop = board.word(gr.Button(t("stop", lang), variant="stop", elem_id="eval-stop"), "stop", "value")
    status = gr.Markdown(t("idle", lang), elem_id="eval-status")
    bar = gr.HTML(progress_html({}, KIND), elem_id="eval-progress")
    with gr.Row():
        metrics = board.word(gr.Dataframe(label=t("metrics", lang), headers=["metric", "value"], interactive=False,
                                          elem_id="eval-metrics", scale=2), "metrics")
        samples = board.word(gr.Dataframe(label=t("samples", lang), headers=["prompt", "predict", "label"],
                                          interactive=False, wrap=True, elem_id="eval-samples", scale=5), "samples")
    log = board.word(gr.Textbox(label=t("log", lang), lines=8, max_lines=8, autoscroll=True, elem_id="eval-log"),
                     "log")
    flagged = gr.State([])

    def on_run(previously, *args):
        values = predict_values(form, args)
        problem = board.outside(values)
        if not problem:
            _, problem = F.validate("train", values)
        updates, bad = form.flags(problem, previously)
        if problem:
            return (error_note(problem), bad, *updates)
        try:
            note = status_markdown(board.runner.start(KIND, "train", values), KIND)
        except TuneryError as err:
            note = error_note(err)
        return (note, bad, *updates)

    run.click(on_run, [flagged, *form.inputs], [status, flagged, *form.inputs], concurrency_limit=1)
    stop.click(lambda: status_markdown(board.runner.stop(), KIND), None, status)

    def on_dataset_dir(folder):
        if board.outside({"dataset_dir": folder}):
            return gr.update(choices=[])
        return gr.update(choices=dataset_names(folder)[0])

    comps["dataset_dir"].change(on_dataset_dir, comps["dataset_dir"], comps["eval_dataset"])

    def render(job: dict, memo: dict, lang: str) -> tuple[list, dict]:
        mine = job if job.get("kind") == KIND else {}
        key = (mine.get("id"), mine.get("state"))
        text = tail(mine["log"]) if mine else ""
        fresh = memo.get("key") != key or memo.get("lang") != lang
        tables = prediction_tables(mine.get("output_dir")) if fresh else (gr.skip(), gr.skip())
        updates = [status_markdown(mine, KIND, lang) if fresh else gr.skip(), progress_html(mine, KIND),
                   *tables, text if text != memo.get("log") else gr.skip()]
        return updates, {"key": key, "log": text, "lang": lang}

    return {"outputs": [status, bar, metrics, samples, log], "render": render, "form": form}
