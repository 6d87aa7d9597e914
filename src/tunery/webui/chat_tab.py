"""The Chat tab: load the top bar's model (+ adapter) into the board, chat with streamed replies, and optionally put
the base model beside the fine-tuned one. The engines are `tunery.chat.engine`'s, as in `tunery webchat`."""

from __future__ import annotations

import gc
import os

from tunery.chat.webchat import stream_replies
from tunery.errors import TuneryError
from tunery.webui import fields as F
from tunery.webui.board import Board, Form, top_overrides
from tunery.webui.locales import t
from tunery.webui.views import error_note


def load_engines(board: Board, values: dict) -> str:
    """Load the engine(s) for validated `values` into the board (replacing any loaded ones); returns a summary."""
    from tunery.chat.engine import create_compare_engines, create_engine

    problem = board.outside(values)
    if not problem:
        cfg, problem = F.validate("webchat", values)
    if problem:
        raise TuneryError(problem)
    unload_engines(board)
    if cfg.compare:
        engines, labels = list(create_compare_engines(cfg)), ["fine_tuned", "base"]
    else:
        engines, labels = [create_engine(cfg)], ["chat"]
    if not engines[0].can_generate:
        raise TuneryError("chat needs a model that generates text; this is a reward model (stage: rm)")
    adapters = ", ".join(os.path.basename(os.path.normpath(a)) for a in cfg.adapter_name_or_path or [])
    what = f"`{cfg.model_name_or_path}`" + (f" + adapter `{adapters}`" if adapters else "")
    board.chat.update(engines=engines, labels=labels, what=what)
    return what


def unload_engines(board: Board) -> None:
    board.chat.update(engines=[], labels=[], what="")
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def build(board: Board, lang: str = "en") -> dict:
    import gradio as gr

    form = Form(board, [], {}, "webchat")
    with gr.Row(equal_height=True):
        load = board.word(gr.Button(t("load_model", lang), variant="primary", elem_id="chat-load"), "load_model",
                          "value")
        unload = board.word(gr.Button(t("unload_model", lang), elem_id="chat-unload"), "unload_model", "value")
        compare = board.word(gr.Checkbox(False, label=t("compare", lang), elem_id="chat-compare"), "compare")
    status = gr.Markdown(t("not_loaded", lang), elem_id="chat-status")
    with gr.Row():
        bots = [gr.Chatbot(label=t("chat", lang), height=380, elem_id="chatbot-0", allow_tags=False),
                gr.Chatbot(label=t("base", lang), height=380, elem_id="chatbot-1", allow_tags=False,
                           visible=False)]
    system = board.word(gr.Textbox(label=t("system", lang), lines=2, elem_id="chat-system"), "system")
    with gr.Row():
        query = board.word(gr.Textbox(show_label=False, placeholder=t("query", lang), scale=8, elem_id="chat-query"),
                           "query", "placeholder")
        send = board.word(gr.Button(t("send", lang), variant="primary", scale=1, elem_id="chat-send"), "send",
                          "value")
    with gr.Row():
        max_new = board.word(gr.Slider(1, 4096, value=512, step=1, label=t("max_new_tokens", lang),
                                       elem_id="chat-max-new-tokens"),
                             "max_new_tokens")
        temperature = board.word(gr.Slider(0.0, 1.5, value=0.95, step=0.01, label=t("temperature", lang),
                                           elem_id="chat-temperature"),
                                 "temperature")
        top_p = board.word(gr.Slider(0.01, 1.0, value=0.7, step=0.01, label=t("top_p", lang)), "top_p")
    speed = gr.Markdown(elem_id="chat-speed")
    clear = board.word(gr.Button(t("clear", lang), elem_id="chat-clear"), "clear", "value")
    flagged = gr.State([])

    def on_load_model(previously, lang_now, with_base, *top):
        values = {**top_overrides(*top), "compare": bool(with_base)}
        yield (f"loading {values.get('model_name_or_path', '')} …", gr.skip(), gr.skip(), previously,
               *[gr.skip()] * 4)
        try:
            what = load_engines(board, values)
        except TuneryError as err:
            updates, bad = form.flags(str(err), previously)
            yield (error_note(err), gr.skip(), gr.skip(), bad, *updates)
            return
        updates, bad = form.flags(None, previously)
        labels = [t(name, lang_now) for name in board.chat["labels"]]
        yield (f"loaded {what}", gr.update(label=labels[0], value=[]),
               gr.update(visible=len(labels) > 1, label=labels[-1], value=[]), bad, *updates)

    load.click(on_load_model, [flagged, board.lang_box, compare, *board.top_components()],
               [status, *bots, flagged, *board.top_components()], concurrency_limit=1)

    def on_unload():
        unload_engines(board)
        return t("not_loaded", "en"), gr.update(value=[]), gr.update(value=[], visible=False)

    unload.click(on_unload, None, [status, *bots])

    def add_user(message, *histories):
        message = (message or "").strip()
        if not message or not board.chat["engines"]:
            if message:
                gr.Warning("load a model first")
            return ("" if not message else message, *histories)
        count = len(board.chat["engines"])
        return ("", *[list(h or []) + [{"role": "user", "content": message}] if k < count else h
                      for k, h in enumerate(histories)])

    def respond(system_text, max_new_tokens, temp, top, *histories):
        yield from stream_replies(board.chat["engines"], board.chat["labels"], system_text, max_new_tokens, temp, top,
                                  histories)

    for trigger in (query.submit, send.click):
        trigger(add_user, [query, *bots], [query, *bots], queue=False).then(
            respond, [system, max_new, temperature, top_p, *bots], [*bots, speed])
    clear.click(lambda: ([], [], ""), None, [*bots, speed], queue=False)
    return {}
