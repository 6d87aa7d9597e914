"""`tunery webui`: the board's layout (top bar + Train, Evaluate & Predict, Chat, Export tabs), polling and launch.

The top bar holds the model path, the adapter/checkpoint picker (the runs under the saves folder: `--saves_dir`,
$TUNERY_SAVES_DIR, or ./saves), the finetuning type, the template and the language. A 1-second gr.Timer reads the
job's state file, so any page — also one opened or refreshed while a run goes on — shows the live run.
Binds 127.0.0.1 unless GRADIO_SERVER_NAME says otherwise; GRADIO_SERVER_PORT and GRADIO_SHARE are honoured.
"""

from __future__ import annotations

import os

from tunery.errors import TuneryError
from tunery.webui import fields as F
from tunery.chat.webchat import FOOTER
from tunery.webui.board import Board
from tunery.webui.locales import LANGS, t

CSS = """
.tunery-invalid { border: 2px solid #d93025 !important; }
.tunery-invalid [data-testid="block-info"] + div, .tunery-invalid .info { color: #d93025 !important; }
.tunery-error { color: #d93025; font-weight: 600; }
.tunery-progress { height: 14px; border-radius: 7px; background: #e5e7eb; overflow: hidden; }
.tunery-progress .bar { height: 100%; background: #f97316; transition: width .4s; }
.tunery-progress.failed .bar { background: #d93025; }
.tunery-progress-text { font-size: 0.9em; margin-top: 4px; }
.tunery-record { margin-bottom: 10px; }
.tunery-record .head { font-weight: 600; font-size: 0.85em; }
.tunery-record pre { white-space: pre-wrap; font-size: 0.85em; padding: 6px; border: 1px solid #e5e7eb; }
.tunery-record mark.trained { background: #bbf7d0; color: #14532d; }
.tunery-record span.prompt { color: #6b7280; }
"""


def _top_bar(board: Board, lang: str) -> None:
    import gradio as gr

    from tunery.config.registry import all_options
    from tunery.data.templates import template_names

    given = board.initial
    options = all_options()
    picks = given.get("adapter_name_or_path") or []
    picks = [p.strip() for p in picks.split(",")] if isinstance(picks, str) else list(picks)
    kinds = [str(c) for c in options["finetuning_type"].choices]
    with gr.Group(elem_id="top-bar"):
        with gr.Row(equal_height=True):
            model = board.word(gr.Textbox(given.get("model_name_or_path") or "", label=t("model_path", lang), scale=4,
                                          placeholder="folder or hub id", elem_id="top-model"), "model_path")
            ftype = board.word(gr.Dropdown(kinds, value=given.get("finetuning_type") or
                                           options["finetuning_type"].default, label=t("finetuning_type", lang),
                                           scale=1, min_width=120, elem_id="top-finetuning-type"), "finetuning_type")
            template = board.word(gr.Dropdown([F.UNSET] + template_names(), value=given.get("template") or F.UNSET,
                                              label=t("template", lang), scale=1, min_width=120,
                                              elem_id="top-template"), "template")
            board.lang_box = board.word(gr.Dropdown(list(LANGS), value=lang, label=t("lang", lang), scale=0,
                                                    min_width=110, elem_id="top-lang"), "lang")
        with gr.Row(equal_height=True):
            picker = board.word(gr.Dropdown(board.runs(), value=picks, multiselect=True, allow_custom_value=True,
                                            label=t("checkpoint", lang), info=board.saves_dir, scale=8,
                                            elem_id="top-adapter"), "checkpoint")
            refresh = board.word(gr.Button(t("refresh", lang), scale=0, min_width=90, elem_id="top-refresh"),
                                 "refresh", "value")
    board.top.update(model_name_or_path=model, adapter_name_or_path=picker, finetuning_type=ftype,
                     template=template)
    refresh.click(lambda: gr.update(choices=board.runs()), None, picker, queue=False)


def create_app(saves_dir: str | None = None, initial: dict | None = None, lang: str = "en",
               poll_seconds: float = 1.0):
    """Build the board (nothing loads until asked: models load in the Chat tab, runs start as processes)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise TuneryError("tunery webui needs gradio — pip install 'tunery[webui]'") from None
    from tunery.webui import chat_tab, eval_tab, export_tab, runs_tab, train_tab

    board = Board.create(saves_dir, initial)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    with gr.Blocks(title="Tunery board", analytics_enabled=False) as demo:
        board.word(gr.Markdown(t("title", lang)), "title", "value")
        _top_bar(board, lang)
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab(t("tab_train", lang), id="train", elem_id="tab-train") as tab:
                board.word(tab, "tab_train")
                train = train_tab.build(board, lang)
            with gr.Tab(t("tab_eval", lang), id="eval", elem_id="tab-eval") as tab:
                board.word(tab, "tab_eval")
                evaluate = eval_tab.build(board, lang)
            with gr.Tab(t("tab_chat", lang), id="chat", elem_id="tab-chat") as tab:
                board.word(tab, "tab_chat")
                chat_tab.build(board, lang)
            with gr.Tab(t("tab_export", lang), id="export", elem_id="tab-export") as tab:
                board.word(tab, "tab_export")
                export_tab.build(board, lang)
            with gr.Tab(t("tab_runs", lang), id="runs", elem_id="tab-runs") as tab:
                board.word(tab, "tab_runs")
                runs_tab.build(board, lang)
        memo = gr.State({})
        timer = gr.Timer(poll_seconds)
        picker = board.top["adapter_name_or_path"]
        outputs = [*train["outputs"], *evaluate["outputs"], picker, memo]

        def poll(seen: dict, lang_now: str):
            job = board.runner.status()
            seen = dict(seen or {})
            first, second = train["render"](job, seen.get("train", {}), lang_now), \
                evaluate["render"](job, seen.get("eval", {}), lang_now)
            ended = bool(seen.get("job")) and seen.get("job") != (job.get("id"), job.get("state")) and \
                job.get("state") not in ("running", "stopping")
            picks = gr.update(choices=board.runs()) if ended or not seen else gr.skip()
            seen.update(train=first[1], eval=second[1], job=(job.get("id"), job.get("state")))
            return (*first[0], *second[0], picks, seen)

        timer.tick(poll, [memo, board.lang_box], outputs, queue=False, show_progress="hidden")
        demo.load(poll, [memo, board.lang_box], outputs, queue=False)
        demo.load(lambda: train["restore"](board.runner.status()), None, train["restore_outputs"], queue=False)
        board.lang_box.change(lambda lang_now: board.relabel(lang_now) + [{}], board.lang_box,
                              [c for c, _, _ in board.words] + [memo], queue=False)
    demo.board = board  # for tests and scripts
    demo.launch_kwargs = {"theme": theme, "css": CSS, "footer_links": FOOTER}  # Gradio 6 takes these at launch
    return demo


def run_webui(saves: str | None, initial: dict) -> int:
    """Start the board: `saves` and `initial` (the option values that prefill it) as `tunery webui` parsed them."""
    from tunery.chat.webchat import launch_options, login_settings

    options = launch_options()
    login, warning = login_settings(initial, options)
    demo = create_app(saves, initial)
    if warning:
        print(warning, flush=True)
    try:
        demo.queue(default_concurrency_limit=4).launch(inbrowser=False, **demo.launch_kwargs, **login, **options)
    except OSError as err:
        raise TuneryError(f"cannot start the board on {options['server_name']}:{options['server_port'] or 7860} "
                          f"({err}) — set GRADIO_SERVER_PORT to a free port") from None
    return 0
