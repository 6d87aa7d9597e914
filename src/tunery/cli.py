"""`tunery <command>`: parse, validate, dispatch. Heavy modules are imported only inside the commands."""

from __future__ import annotations

import sys
from typing import Callable

USAGE = """usage: tunery <command> [CONFIG.yaml] [--option value ...] [option=value ...] [--debug]

Fine-tune large language models (LoRA/full/freeze SFT), LLaMA-Factory compatible.

commands:
  train       fine-tune a model (stage, method, data and every transformers TrainingArguments option)
  chat        chat in the terminal with a model, optionally with a LoRA adapter
  demo        build the embedded tiny model (offline) — `tunery demo -h`
  quickstart  build the tiny model, fine-tune it on the bundled identity data and compare answers
  env         print library versions and the accelerators this machine has
  version     print Tunery's version

`tunery <command> -h` lists every option with its help and default.
Errors print one line and exit with code 2; add --debug for a traceback."""


def _train(argv: list[str]) -> int:
    from tunery.config import parse_config

    cfg = parse_config("train", argv)
    from tunery.train.run import run_train

    run_train(cfg)
    return 0


def _chat(argv: list[str]) -> int:
    from tunery.config import parse_config

    cfg = parse_config("chat", argv)
    from tunery.chat.terminal import run_chat

    return run_chat(cfg)


def _env(argv: list[str]) -> int:
    from tunery.env import print_env

    print_env()
    return 0


def _version(argv: list[str]) -> int:
    from tunery import __version__

    print(f"tunery {__version__}")
    return 0


def _demo(argv: list[str]) -> int:
    from tunery.demo.tiny import main as demo_main

    return demo_main(argv) or 0


def _quickstart(argv: list[str]) -> int:
    from tunery.demo.quickstart import main as quickstart_main

    return quickstart_main(argv) or 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "train": (_train, "Fine-tune a model. Stage, method, data and every transformers TrainingArguments option."),
    "chat": (_chat, "Chat in the terminal. Type `clear` to reset the history and `exit` to quit; piped stdin is read "
                    "one user turn per line."),
    "env": (_env, "Print library versions and accelerators."),
    "version": (_version, "Print Tunery's version."),
    "demo": (_demo, "Build the embedded tiny model."),
    "quickstart": (_quickstart, "Build, fine-tune and compare on the embedded tiny model."),
}
# Commands whose options come from the declarations (their -h is generated); the others parse their own argv.
CONFIG_COMMANDS = ("train", "chat")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-v", "--version"):
        argv[0] = "version"
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        from tunery.errors import did_you_mean

        print(f"error: unknown command '{name}'{did_you_mean(name, COMMANDS)} — commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    func, summary = COMMANDS[name]
    if name in CONFIG_COMMANDS and any(a in ("-h", "--help") for a in rest):
        from tunery.config.docs import format_help

        print(format_help(name, summary))
        return 0
    from tunery.errors import TuneryError

    try:
        return func(rest)
    except TuneryError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
