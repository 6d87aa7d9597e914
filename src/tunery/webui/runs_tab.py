"""The Runs tab: the runs under the saves folder (what `tunery runs` lists), the options two runs differ in (`tunery
runs diff`), and their loss / eval loss / reward curves overlaid (`tunery runs plot`)."""

from __future__ import annotations

import os
import tempfile

from tunery.errors import TuneryError
from tunery.runs import compare, listing
from tunery.webui.board import Board
from tunery.webui.locales import t


def table(board: Board) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """(rows of the runs table, dropdown choices (label, path)) for the board's saves folder."""
    runs = listing.list_runs(board.saves_dir) if os.path.isdir(board.saves_dir) else []
    return [r.row() for r in runs], [(r.name, r.path) for r in runs]


def diff_rows(path_a: str | None, path_b: str | None) -> tuple[list[list[str]], str]:
    if not path_a or not path_b:
        return [], "pick two runs"
    try:
        rows = compare.diff_runs(path_a, path_b)
    except TuneryError as err:
        return [], str(err)
    return [list(r) for r in rows], f"{len(rows)} difference(s)" if rows else "same options, versions and data"


def plot(paths: list[str] | None) -> tuple[str | None, str]:
    if not paths:
        return None, "pick one or more runs"
    out = os.path.join(tempfile.gettempdir(), f"tunery-runs-{os.getpid()}-{abs(hash(tuple(paths)))}.png")
    try:
        return compare.plot_runs(list(paths), out), ""
    except TuneryError as err:
        return None, str(err)


def build(board: Board, lang: str) -> dict:
    import gradio as gr

    rows, choices = table(board)
    refresh = board.word(gr.Button(t("refresh", lang), elem_id="runs-refresh"), "refresh", "value")
    runs = gr.Dataframe(value=rows, headers=listing.HEADERS, interactive=False, wrap=True, elem_id="runs-table")
    with gr.Row():
        run_a = board.word(gr.Dropdown(choices=choices, label=t("run_a", lang), elem_id="runs-a"), "run_a")
        run_b = board.word(gr.Dropdown(choices=choices, label=t("run_b", lang), elem_id="runs-b"), "run_b")
    diff_btn = board.word(gr.Button(t("runs_diff", lang), elem_id="runs-diff-btn"), "runs_diff", "value")
    diff_note = gr.Markdown(elem_id="runs-diff-note")
    diff = gr.Dataframe(headers=["what", "A", "B"], interactive=False, wrap=True, elem_id="runs-diff")
    picked = board.word(gr.Dropdown(choices=choices, multiselect=True, label=t("runs_plot_pick", lang),
                                    elem_id="runs-plot-pick"), "runs_plot_pick")
    plot_btn = board.word(gr.Button(t("runs_plot", lang), elem_id="runs-plot-btn"), "runs_plot", "value")
    plot_note = gr.Markdown(elem_id="runs-plot-note")
    image = gr.Image(type="filepath", interactive=False, elem_id="runs-plot")

    def reload():
        new_rows, new_choices = table(board)
        return (new_rows, gr.update(choices=new_choices), gr.update(choices=new_choices),
                gr.update(choices=new_choices))

    def show_diff(a, b):
        found, note = diff_rows(a, b)
        return found, note

    refresh.click(reload, None, [runs, run_a, run_b, picked], queue=False)
    diff_btn.click(show_diff, [run_a, run_b], [diff, diff_note], queue=False)
    plot_btn.click(plot, picked, [image, plot_note], queue=False)
    return {"table": runs, "reload": reload}
