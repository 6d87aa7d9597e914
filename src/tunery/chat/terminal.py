"""`tunery chat`: a terminal conversation; piped stdin gives one user turn per line, so it can be scripted."""

from __future__ import annotations

import sys
import time

HELP = "Type a message; `clear` resets the history, `exit` quits."


def _read_turns(interactive: bool):
    while True:
        try:
            line = input("\nUser: ") if interactive else sys.stdin.readline()
        except (EOFError, UnicodeDecodeError):
            return
        if not interactive and line == "":
            return
        line = line.strip()
        if line:
            yield line


def run_chat(cfg) -> int:
    from tunery.chat.engine import create_engine

    engine = create_engine(cfg)
    interactive = sys.stdin.isatty()
    if interactive:
        print(HELP)
    history: list[dict] = []
    for query in _read_turns(interactive):
        if query == "exit":
            break
        if query == "clear":
            history = []
            print("History has been removed.")
            continue
        history.append({"role": "user", "content": query})
        print("Assistant: ", end="", flush=True)
        pieces, start = [], time.time()
        for piece in engine.stream_chat(history, system=cfg.default_system):
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        reply = "".join(pieces)
        history.append({"role": "assistant", "content": reply})
    return 0
