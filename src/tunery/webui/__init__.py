"""`tunery webui`: the web board (Gradio) — train, evaluate & predict, chat and export from one page.

Fields come from the option declarations (`tunery.config`), runs start as `tunery train` processes that a browser
refresh re-attaches to, and the chat/export tabs reuse `tunery.chat.engine` and `tunery export`.
"""

from __future__ import annotations


def run_webui(saves: str | None, initial: dict) -> int:
    from tunery.webui.app import run_webui as run

    return run(saves, initial)


def create_app(*args, **kwargs):
    from tunery.webui.app import create_app as create

    return create(*args, **kwargs)


__all__ = ["create_app", "run_webui"]
