"""`tunery chat`: a terminal conversation; piped stdin gives one user turn per line, so it can be scripted.

Commands typed as a turn: `clear` (reset the history), `exit`, `/system TEXT` (set the system prompt; `/system` alone
clears it). The system prompt starts as `default_system`. With `--compare`, every turn is answered by the
fine-tuned model and by the base model (each keeps its own history), side by side on a wide terminal, one after the
other otherwise. Speed (tokens, tokens/s) follows each reply.
"""

from __future__ import annotations

import shutil
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunery.config.loader import Config

HELP = "Type a message; `clear` resets the history, `/system TEXT` sets the system prompt, `exit` quits."


def _read_turns(interactive: bool):
    if hasattr(sys.stdin, "reconfigure"):  # bytes that are not UTF-8 become U+FFFD instead of ending the chat
        sys.stdin.reconfigure(errors="replace")
    number = 0
    while True:
        try:
            line = input("\nUser: ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        number += 1
        if not interactive and line == "":
            return
        line = line.strip()
        if "\ufffd" in line:
            print(f"warning: input line {number} is not valid UTF-8 — the undecodable bytes were replaced by \ufffd",
                  file=sys.stderr, flush=True)
        if line:
            yield line


def _speed(stream) -> str:
    return f"[{stream.completion_tokens} tokens, {stream.elapsed:.2f} s, {stream.tokens_per_second:.1f} tokens/s]"


def _answer(engine, history, system, label: str = "Assistant"):
    """Stream one reply to stdout; returns the Stream (text and speed)."""
    print(f"{label}: ", end="", flush=True)
    stream = engine.stream_chat(history, system=system)
    for piece in stream:
        print(piece, end="", flush=True)
    print()
    print(_speed(stream), flush=True)
    return stream


def _side_by_side(pairs, system, width: int):
    """Both replies, streamed into two live columns (rich)."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    texts = ["", ""]
    speeds = ["", ""]

    def table():
        grid = Table(expand=True, show_lines=False)
        grid.add_column("fine-tuned", ratio=1, overflow="fold")
        grid.add_column("base", ratio=1, overflow="fold")
        grid.add_row(texts[0], texts[1])
        grid.add_row(speeds[0], speeds[1], style="dim")
        return grid

    streams = []
    console = Console(width=width)
    with Live(table(), console=console, refresh_per_second=12) as live:
        for k, (engine, history) in enumerate(pairs):
            stream = engine.stream_chat(history, system=system)
            for piece in stream:
                texts[k] += piece
                live.update(table())
            speeds[k] = _speed(stream)
            live.update(table())
            streams.append(stream)
    return streams


def run_chat(cfg: Config) -> int:
    from tunery.chat.engine import create_compare_engines, create_engine

    if cfg.compare:
        tuned, base = create_compare_engines(cfg)
    else:
        tuned, base = create_engine(cfg), None
    interactive = sys.stdin.isatty()
    if interactive:
        print(HELP)
    system = cfg.default_system
    histories: list[list[dict]] = [[], []]
    for query in _read_turns(interactive):
        if query == "exit":
            break
        if query == "clear":
            histories = [[], []]
            print("History has been removed.")
            continue
        if query == "/system" or query.startswith("/system "):
            system = query[len("/system"):].strip() or None
            print(f"System prompt set to: {system}" if system else "System prompt cleared.")
            continue
        for history in histories[: 1 if base is None else 2]:
            history.append({"role": "user", "content": query})
        if base is None:
            replies = [_answer(tuned, histories[0], system)]
        else:
            width = shutil.get_terminal_size((80, 24)).columns
            pairs = [(tuned, histories[0]), (base, histories[1])]
            if interactive and sys.stdout.isatty() and width >= 80:
                replies = _side_by_side(pairs, system, width)
            else:
                replies = [_answer(tuned, histories[0], system, "Fine-tuned"),
                           _answer(base, histories[1], system, "Base")]
        for history, reply in zip(histories, replies):
            history.append({"role": "assistant", "content": reply.text})
    return 0
