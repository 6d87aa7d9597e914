"""The Train tab: every training option as a field, datasets picked from the registry with a preview, the exact
command and YAML, save/load, start/stop, and a live view of the run (progress, log tail, loss curve; for grpo also
the reward curve and the latest completions with their rewards)."""

from __future__ import annotations

import os
from typing import Any

from tunery.errors import TuneryError
from tunery.webui import fields as F
from tunery.webui.board import Board, Form, default_dataset_dir, default_output_dir
from tunery.webui.grpo_view import completions_frame, reward_frame, reward_points
from tunery.webui.locales import t
from tunery.webui.runner import loss_points, tail
from tunery.webui.sandbox import save_config
from tunery.webui.views import error_note, loss_frame, progress_html, render_preview, status_markdown

KIND = "train"


def dataset_names(dataset_dir: Any) -> tuple[list[str], Any]:
    """(names in dataset_dir's dataset_info.json, the problem when it cannot be read)."""
    from tunery.data.registry import load_registry

    try:
        return sorted(load_registry(str(dataset_dir or "data"))), None
    except TuneryError as err:
        return [], str(err)


def train_values(form: Form, args) -> dict:
    """The options of a training run from the form (do_train made explicit unless do_eval/do_predict is set)."""
    values = form.values(args)
    if not any(k in values for k in ("do_train", "do_eval", "do_predict")):
        head = {k: v for k, v in values.items() if k in ("model_name_or_path", "adapter_name_or_path", "template")}
        values = {**head, "stage": values.get("stage", "sft"), "do_train": True, **values}
    values.setdefault("stage", "sft")
    return values


def run_values(form: Form, args, auto_dir: str | None) -> tuple[dict, str | None]:
    """`train_values` with a fresh output_dir when none was given (or when the one the board made up last time
    already holds a run). Returns (values, the made-up output_dir or None)."""
    values = train_values(form, args)
    out = values.get("output_dir")
    made = None
    if not out or (out == auto_dir and os.path.isdir(out) and os.listdir(out)):
        made = default_output_dir(form.board.saves_dir, values.get("model_name_or_path"),
                                  values.get("finetuning_type"), KIND)
        values["output_dir"] = made
    return values, made


def build(board: Board, lang: str = "en") -> dict:
    import gradio as gr

    options = F.board_options(KIND)
    given = {"dataset_dir": default_dataset_dir(), **board.initial}
    shown = F.initial_values(options, given)
    names, _ = dataset_names(given.get("dataset_dir"))
    extras: dict[str, Any] = {}

    def data_extras():
        with gr.Row():
            extras["preview"] = board.word(gr.Button(t("preview", lang), size="sm", elem_id="train-preview-btn"),
                                           "preview", "value")
        extras["preview_html"] = gr.HTML(elem_id="train-preview")
        extras["preview_summary"] = gr.Textbox(show_label=False, lines=4, max_lines=12, visible=False,
                                               elem_id="train-preview-summary")

    comps = F.build_form(options, shown, board.word, KIND, "train", names, extras={"data": data_extras},
                         lang=lang)
    form = Form(board, options, comps, "train")
    with gr.Row():
        show = board.word(gr.Button(t("show_command", lang), elem_id="train-show"), "show_command", "value")
        start = board.word(gr.Button(t("start", lang), variant="primary", elem_id="train-start"), "start", "value")
        stop = board.word(gr.Button(t("stop", lang), variant="stop", elem_id="train-stop"), "stop", "value")
    with gr.Row(equal_height=True):
        path = board.word(gr.Textbox(os.path.join(board.saves_dir, "webui_train.yaml"), label=t("config_path", lang),
                                     scale=6, elem_id="train-config-path"), "config_path")
        save = board.word(gr.Button(t("save_config", lang), scale=1, elem_id="train-save"), "save_config", "value")
        load = board.word(gr.Button(t("load_config", lang), scale=1, elem_id="train-load"), "load_config", "value")
    status = gr.Markdown(t("idle", lang), elem_id="train-status")
    bar = gr.HTML(progress_html({}, KIND), elem_id="train-progress")
    with gr.Row():
        log = board.word(gr.Textbox(label=t("log", lang), lines=16, max_lines=16, autoscroll=True,
                                    elem_id="train-log"), "log")
        plot = board.word(gr.LinePlot(x="step", y="loss", color="curve", label=t("loss", lang), height=300,
                                      elem_id="loss-plot"), "loss")
        reward_plot = board.word(gr.LinePlot(x="step", y="reward", color="curve", label=t("reward", lang),
                                             height=300, visible=False, elem_id="reward-plot"), "reward")
    samples = board.word(gr.Dataframe(label=t("completions", lang), wrap=True, max_height=320, visible=False,
                                      interactive=False, elem_id="grpo-completions"), "completions")
    with gr.Row():
        command = board.word(gr.Code(label=t("command", lang), language="shell", interactive=False, lines=8,
                                     max_lines=30, elem_id="train-command"), "command")
        config = board.word(gr.Code(label=t("yaml", lang), language="yaml", interactive=False, lines=8,
                                    max_lines=30, elem_id="train-yaml"), "yaml")
    flagged = gr.State([])
    auto_dir = gr.State(None)
    out_index = list(form.components).index("output_dir")

    def _with_dir(updates: list, made):
        if made:
            updates[out_index] = {**updates[out_index], "value": made}
        return updates

    def on_show(previously, auto, *args):
        values, made = run_values(form, args, auto)
        _, problem = F.validate(KIND, values)
        updates, bad = form.flags(problem, previously)
        note = error_note(problem) if problem else gr.skip()
        return (F.command_text(KIND, values), F.yaml_text(values), note, bad, made or auto,
                *_with_dir(updates, made))

    def on_start(previously, auto, *args):
        values, made = run_values(form, args, auto)
        problem = board.outside(values)
        if not problem:
            _, problem = F.validate(KIND, values)
        updates, bad = form.flags(problem, previously)
        text, yaml_text = F.command_text(KIND, values), F.yaml_text(values)
        if problem:
            note = error_note(problem)
        else:
            try:
                job = board.runner.start(KIND, KIND, values)
                note = status_markdown(job, KIND)
            except TuneryError as err:
                note = error_note(err)
        return (text, yaml_text, note, bad, made or auto, *_with_dir(updates, made))

    outs = [command, config, status, flagged, auto_dir, *form.inputs]
    show.click(on_show, [flagged, auto_dir, *form.inputs], outs)
    start.click(on_start, [flagged, auto_dir, *form.inputs], outs, concurrency_limit=1)
    stop.click(lambda: status_markdown(board.runner.stop(), KIND), None, status)

    def on_preview(previously, *args):
        values = form.values(args)
        try:
            board.sandbox.check_values(values)
            body, summary = render_preview(values)
        except TuneryError as err:
            updates, bad = form.flags(str(err), previously)
            return (error_note(F.clean(str(err))), gr.update(visible=False), bad,
                    *updates)
        updates, bad = form.flags(None, previously)
        return (body, gr.update(value=summary, visible=True), bad, *updates)

    extras["preview"].click(on_preview, [flagged, *form.inputs],
                            [extras["preview_html"], extras["preview_summary"], flagged, *form.inputs])

    def on_dataset_dir(folder):
        try:
            if folder != "ONLINE":
                board.sandbox.readable(str(folder or "data"), "option 'dataset_dir'")
            found, problem = dataset_names(folder)
        except TuneryError as err:
            found, problem = [], str(err)
        mark = (gr.update(info=f"⚠ {problem}", elem_classes=[F.INVALID_CLASS]) if problem else
                gr.update(info=form.helps()["dataset_dir"], elem_classes=[]))
        return gr.update(choices=found), gr.update(choices=found), mark

    comps["dataset_dir"].change(on_dataset_dir, comps["dataset_dir"],
                                [comps["dataset"], comps["eval_dataset"], comps["dataset_dir"]])

    def on_save(file, *args):
        values = train_values(form, args)
        try:
            target = board.sandbox.config_to_save(str(file or ""))
            save_config(target, F.yaml_text(values))
        except TuneryError as err:
            return error_note(err)
        except OSError as err:
            return error_note(f"cannot write {file}: {err.strerror} — choose another config file")
        return f"saved `{file}`"

    save.click(on_save, [path, *form.inputs], status)

    def form_from(given: dict) -> list:
        """Values for every input of the form (top bar first) from a config: missing keys get their default."""
        picks = given.get("adapter_name_or_path") or []
        picks = [p.strip() for p in picks.split(",")] if isinstance(picks, str) else list(picks)
        top = [given.get("model_name_or_path") or "", gr.update(value=picks),
               given.get("finetuning_type") or "lora", given.get("template") or F.UNSET]
        return [*top, *F.initial_values(form.options, given, defaults={})]

    def on_load(file):
        try:
            given = read_config(board.sandbox.config_to_load(str(file or "")))
        except TuneryError as err:
            return (error_note(err), *[gr.skip()] * len(form.inputs))
        return (f"loaded `{file}`", *form_from(given))

    load.click(on_load, path, [status, *form.inputs])

    def restore(job: dict) -> list:
        """On a page (re)load while a training run goes on: the form, command and YAML as that run started."""
        skip = [gr.skip()] * (len(form.inputs) + 2)
        if job.get("state") not in ("running", "stopping") or job.get("kind") != KIND:
            return skip
        try:
            given = read_config(job["argv"][-1])
        except (TuneryError, KeyError, IndexError):
            return skip
        return [*form_from(given), F.command_text(KIND, given), F.yaml_text(given)]

    def render(job: dict, memo: dict, lang: str) -> tuple[list, dict]:
        """Updates for (status, progress, log, plot, reward plot, completions) from the job, skipping what has not
        changed (the last two show for grpo runs only)."""
        mine = job if job.get("kind") == KIND else {}
        text = tail(mine["log"]) if mine else ""
        out = mine.get("output_dir") if mine else None
        rows = len(loss_points(out))
        key = (mine.get("id"), mine.get("state"))
        fresh_plot = rows != memo.get("rows") or memo.get("key", (None,))[0] != key[0]
        updates = [status_markdown(mine, KIND, lang) if memo.get("key") != key or memo.get("lang") != lang
                   else gr.skip(),
                   progress_html(mine, KIND),
                   text if text != memo.get("log") else gr.skip(),
                   (loss_frame(out) if rows else None) if fresh_plot else gr.skip()]  # None: no plot yet
        rewards = len(reward_points(out))
        if rewards != memo.get("rewards") or fresh_plot:
            updates += [gr.update(value=reward_frame(out), visible=True) if rewards else gr.update(visible=False),
                        gr.update(value=completions_frame(out), visible=True) if rewards else
                        gr.update(visible=False)]
        else:
            updates += [gr.skip(), gr.skip()]
        return updates, {"key": key, "log": text, "rows": rows, "lang": lang, "rewards": rewards}

    return {"outputs": [status, bar, log, plot, reward_plot, samples], "render": render, "form": form,
            "restore": restore, "restore_outputs": [*form.inputs, command, config]}


def read_config(path: str) -> dict:
    """A YAML/JSON config's options; unknown keys are an error naming them."""
    from tunery.config.loader import read_config_file
    from tunery.config.registry import all_options

    given = read_config_file(path)
    unknown = [k for k in given if k not in all_options()]
    if unknown:
        raise TuneryError(f"{path}: unknown option(s) {', '.join(unknown)} — `tunery train -h` lists them")
    return given
