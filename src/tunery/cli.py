"""`tunery <command>`: parse, validate, dispatch. Heavy modules are imported only inside the commands."""

from __future__ import annotations

import sys
from typing import Callable

USAGE = """usage: tunery <command> [CONFIG.yaml] [--option value ...] [option=value ...] [--debug]

Fine-tune large language models (pt, sft, rm, ppo, dpo/orpo/simpo, kto; LoRA/full/freeze), LLaMA-Factory
compatible.

commands:
  train       fine-tune a model (stage, method, data and every transformers TrainingArguments option);
              several GPUs/nodes through torchrun (NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, FORCE_TORCHRUN)
  chat        chat in the terminal with a model, optionally with a LoRA adapter (--compare: beside the base)
  webchat     chat in the browser (Gradio), same options as chat
  webui       the web board (Gradio): train, evaluate & predict, chat and export from one page
  api         serve an OpenAI-compatible API (API_HOST, API_PORT, API_KEY)
  export      merge LoRA adapters into the base model and save it (safetensors, tokenizer, Ollama Modelfile)
  eval        score a model on MMLU / CMMLU / C-Eval style multiple-choice benchmarks
  preview     show the training data as the trainer sees it (tokenizer only): rendered records, lengths, drops
  demo        build the embedded tiny model (offline) — `tunery demo -h`
  quickstart  build the tiny model, fine-tune it on the bundled identity data and compare answers
  estimate    before training: peak memory per device, time per step and for the run, whether it fits
  runs        list runs under a saves folder; `runs diff A B`, `runs plot A B ...`
  env         print library versions and the accelerators this machine has
  version     print Tunery's version

`tunery <command> -h` lists every option with its help and default.
Errors print one line and exit with code 2; add --debug for a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (data, model loading): unwinds like Ctrl-C (workers ended, nothing half
    written kept as complete), then exit 143. During training the loop's own handler saves a checkpoint first."""


def _raise_terminated(signum, frame):
    raise Terminated


def _train(argv: list[str]) -> int:
    from tunery.config import parse_config
    from tunery.runs.reproduce import reproduce_config, reproduce_target

    if reproduce_target(argv) is not None:  # the run card's options, then argv's overrides
        cfg, argv = reproduce_config(argv)
    else:
        cfg = parse_config("train", argv)  # every option error surfaces here, before any process or model starts
    if cfg.dry_run:
        from tunery.estimate.report import run_estimate

        return run_estimate(cfg)
    from tunery.utils.handoff import hand_off, torchrun_plan

    plan = torchrun_plan()
    if plan is not None:  # several devices or nodes: the same command in each torchrun process
        return hand_off(argv, plan)
    from tunery.train.run import run_train

    run_train(cfg)
    return 0


def _chat(argv: list[str]) -> int:
    from tunery.config import parse_config

    cfg = parse_config("chat", argv)
    from tunery.chat.terminal import run_chat

    return run_chat(cfg)


def _webchat(argv: list[str]) -> int:
    from tunery.config import parse_config

    cfg = parse_config("webchat", argv)
    from tunery.chat.webchat import run_webchat

    return run_webchat(cfg)


WEBUI_USAGE = ("tunery webui [CONFIG.yaml] [--saves_dir DIR] [--webui_allowed_paths DIR,DIR] "
               "[--webui_auth USER:PASSWORD]")


def webui_args(argv: list[str]) -> tuple[str | None, dict]:
    """`tunery webui [CONFIG.yaml] [--saves_dir DIR] [--webui_allowed_paths A,B] [--webui_auth U:P]` → (saves dir,
    option values: those that prefill the board and the board's own webui_* settings)."""
    from tunery.config.loader import CONFIG_SUFFIXES, read_config_file
    from tunery.config.registry import all_options
    from tunery.errors import TuneryError

    options = all_options()
    own = {o.name for o in options.values() if o.group == "webui"}
    saves, initial = None, {}
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name == "saves_dir" or name in own:
            if not eq:
                if not rest:
                    raise TuneryError(f"command line: option '--{name}' needs a value — e.g. --{name} VALUE")
                value = rest.pop(0)
            if name == "saves_dir":
                saves = value
            else:
                initial[name] = options[name].coerce(value, "command line")
        elif arg.endswith(CONFIG_SUFFIXES):
            initial = {**read_config_file(arg), **initial}
        else:
            raise TuneryError(f"command line: unexpected argument '{arg}' — usage: {WEBUI_USAGE}")
    unknown = [k for k in initial if k not in options]
    if unknown:
        raise TuneryError(f"unknown option(s) {', '.join(unknown)} in the config — `tunery train -h` lists them")
    return saves, initial


def _webui(argv: list[str]) -> int:
    saves, initial = webui_args(argv)
    from tunery.webui import run_webui

    return run_webui(saves, initial)


def _api(argv: list[str]) -> int:
    from tunery.config import parse_config

    cfg = parse_config("api", argv)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        from tunery.errors import TuneryError

        raise TuneryError("tunery api needs fastapi and uvicorn — pip install 'tunery[api]'") from None
    from tunery.api.app import run_api

    return run_api(cfg)


def _export(argv: list[str]) -> int:
    from tunery.config import parse_config

    cfg = parse_config("export", argv)
    from tunery.export import run_export

    run_export(cfg)
    return 0


def _env(argv: list[str]) -> int:
    from tunery.env import print_env

    print_env()
    return 0


def _version(argv: list[str]) -> int:
    from tunery import __version__

    print(f"tunery {__version__}")
    return 0


def _demo(argv: list[str]) -> int:
    import argparse
    import json

    from tunery.demo.tiny import FAMILIES, MARKER, SIZES, build_tiny_model
    from tunery.errors import TuneryError

    parser = argparse.ArgumentParser(prog="tunery demo", description="Build the embedded tiny model.")
    parser.add_argument("--output", "-o", required=True, help="folder to write the model to")
    parser.add_argument("--family", choices=FAMILIES, default="llama3")
    parser.add_argument("--size", choices=tuple(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-steps", type=int, default=0,
                        help="full-parameter warm-up steps on generic bundled text (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace whatever the output folder holds")
    args = parser.parse_args(argv)
    try:
        out = build_tiny_model(args.output, family=args.family, size=args.size, seed=args.seed,
                               overwrite=args.overwrite, warmup_steps=args.warmup_steps)
    except (FileExistsError, ValueError) as exc:
        raise TuneryError(str(exc)) from None
    marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    n = marker["num_parameters"]
    print(f"Built {args.family} ({args.size}) model at {out}")
    print(f"Parameters: {n:,} ({n / 1e6:.2f}M); vocabulary: {marker['vocab_size']} "
          f"(tokenizer: {marker['tokenizer_size']} tokens)")
    return 0


def _eval(argv: list[str]) -> int:
    from tunery.config import parse_config

    cfg = parse_config("eval", argv)
    from tunery.eval.run import run_eval

    return run_eval(cfg)


def _aliased(argv: list[str], aliases: dict[str, str]) -> list[str]:
    """A command's short flags (also ``--flag=value``) as the option names they stand for."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        out.append(aliases[flag] + eq + value if flag in aliases else arg)
    return out


def _preview(argv: list[str]) -> int:
    from tunery.config import parse_config

    cfg = parse_config("preview", _aliased(argv, {"--num": "--preview_num", "-n": "--preview_num",
                                                  "--format": "--preview_format"}))
    from tunery.data.preview import preview

    preview(cfg)
    return 0


def _estimate(argv: list[str]) -> int:
    from tunery.config import parse_config

    cfg = parse_config("train", _aliased(argv, {"--format": "--estimate_format"}))  # the checks of the run it estimates
    from tunery.estimate.report import run_estimate

    return run_estimate(cfg)


RUNS_USAGE = ("usage: tunery runs [SAVES_DIR]            list runs (default: TUNERY_SAVES_DIR or ./saves)\n"
         "       tunery runs diff RUN_A RUN_B       options, versions and data that differ\n"
         "       tunery runs plot RUN ... [--output FILE.png]   loss / eval loss / reward curves overlaid")


def _default_saves_dir() -> str:
    import os

    return os.environ.get("TUNERY_SAVES_DIR", "saves")


def _runs(argv: list[str]) -> int:
    from tunery.errors import ConfigError
    from tunery.runs import compare, listing

    if argv and argv[0] in ("-h", "--help"):
        print(RUNS_USAGE)
        return 0
    if argv and argv[0] == "diff":
        if len(argv) != 3:
            raise ConfigError("tunery runs diff needs two run folders — tunery runs diff RUN_A RUN_B")
        for path in argv[1:]:
            _must_be_folder(path)
        print(compare.format_diff(argv[1], argv[2], compare.diff_runs(argv[1], argv[2])))
        return 0
    if argv and argv[0] == "plot":
        paths, output = [], None
        rest = argv[1:]
        i = 0
        while i < len(rest):
            if rest[i] in ("--output", "-o") and i + 1 < len(rest):
                output, i = rest[i + 1], i + 2
                continue
            if rest[i].startswith("--output="):
                output = rest[i].split("=", 1)[1]
            else:
                paths.append(rest[i])
            i += 1
        if not paths:
            raise ConfigError("tunery runs plot needs at least one run folder — tunery runs plot RUN_A RUN_B")
        for path in paths:
            _must_be_folder(path)
        print(compare.plot_runs(paths, output or "runs_compared.png"))
        return 0
    if len(argv) > 1:
        raise ConfigError(f"tunery runs: unexpected arguments {' '.join(argv[1:])!r}\n{RUNS_USAGE}".splitlines()[0])
    saves = argv[0] if argv else _default_saves_dir()
    _must_be_folder(saves)
    runs = listing.list_runs(saves)
    if not runs:
        print(f"no runs under {saves}")
        return 0
    print(listing.format_table(runs))
    return 0


def _must_be_folder(path: str) -> None:
    import os

    from tunery.errors import TuneryError

    if not os.path.isdir(path):
        raise TuneryError(f"'{path}' is not a folder — give a run's output_dir (or a saves folder for the list)")


def _quickstart(argv: list[str]) -> int:
    import argparse

    from tunery.demo.quickstart import run_quickstart

    parser = argparse.ArgumentParser(prog="tunery quickstart", description="Build the tiny model, LoRA-fine-tune it "
                                     "on the bundled identity set and compare its answers with the base model's.")
    parser.add_argument("--model-dir", default="models/tiny-llama3", help="where the tiny model is built")
    parser.add_argument("--output-dir", default="saves/tiny-llama3/lora/quickstart", help="training output_dir")
    parser.add_argument("--epochs", type=float, default=None, help="training epochs (default: quickstart.yaml's)")
    args = parser.parse_args(argv)
    return run_quickstart(args.model_dir, args.output_dir, args.epochs)


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "train": (_train, "Fine-tune a model. Stage, method, data and every transformers TrainingArguments option."),
    "chat": (_chat, "Chat in the terminal. Type `clear` to reset the history, `/system TEXT` to set the system "
                    "prompt and `exit` to quit; piped stdin is read one user turn per line. --compare answers each "
                    "turn with the base model too (the model without its adapters, or compare_model); tokens/s "
                    "follow each reply."),
    "webchat": (_webchat, "Chat in the browser (Gradio): streaming replies, system prompt, generation sliders; "
                          "--compare puts the base model beside the fine-tuned one. Binds 127.0.0.1 unless "
                          "GRADIO_SERVER_NAME is set; GRADIO_SERVER_PORT and GRADIO_SHARE are honoured."),
    "webui": (_webui, "The web board (Gradio): `tunery webui [CONFIG.yaml] [--saves_dir DIR]`. Tabs Train (every "
                      "training option as a field, data preview, command and YAML, live progress, log and loss), "
                      "Evaluate & Predict, Chat and Export share a top bar (model, adapter/checkpoint from the saves "
                      "folder — --saves_dir, TUNERY_SAVES_DIR or ./saves — finetuning type, template, language). "
                      "Pages reach only the saves folder, the dataset folder, the config's model folders and "
                      "webui_allowed_paths; webui_auth asks for a login. Binds 127.0.0.1 unless GRADIO_SERVER_NAME "
                      "is set; GRADIO_SERVER_PORT and GRADIO_SHARE are honoured."),
    "api": (_api, "Serve an OpenAI-compatible API: GET /v1/models, POST /v1/chat/completions (streaming, tools), "
                  "POST /v1/score/evaluation (stage: rm). Environment: API_HOST (default 127.0.0.1), API_PORT "
                  "(8000), API_KEY (Bearer token), API_MODEL_NAME."),
    "export": (_export, "Merge the LoRA adapters (adapter_name_or_path) into the base model and save it to "
                        "export_dir: safetensors shards, tokenizer and chat template, generation config and an "
                        "Ollama Modelfile; export_hub_model_id also uploads it. The folder is swapped in when complete; "
                        "an earlier export is replaced only with export_overwrite, a folder of other files never."),
    "preview": (_preview, "Show the training data as the trainer will see it, without loading the model: the first "
                          "--num records rendered with their trained tokens marked ([[...]] when piped), then "
                          "token-length percentiles, cutoff_len truncation, dropped records by cause, placeholders "
                          "and the trained-token share; --format json prints the encoded items (input_ids, labels, "
                          "attention_mask, ...) one per line, then a summary."),
    "estimate": (_estimate, "Before training: peak memory per device (weights, gradients, optimizer states, "
                            "activations for the batch and cutoff; ZeRO/FSDP shards and QLoRA where configured), time "
                            "per step (a short probe on a randomly initialised copy of the model) and for the run, "
                            "whether it fits the device found, and which options would make it fit. Same options as "
                            "train (also `tunery train ... --dry_run`); --format json prints one object."),
    "runs": (_runs, "Runs side by side: `tunery runs [SAVES_DIR]` lists the runs (model, datasets, method, steps, "
                    "final/best loss, time, status: finished, running, crashed with its last complete checkpoint); "
                    "`tunery runs diff A B` shows the options, versions and data that differ; `tunery runs plot A B "
                    "... [--output FILE.png]` overlays their loss / eval loss / reward curves."),
    "env": (_env, "Print library versions and accelerators."),
    "version": (_version, "Print Tunery's version."),
    "demo": (_demo, "Build the embedded tiny model."),
    "quickstart": (_quickstart, "Build, fine-tune and compare on the embedded tiny model."),
    "eval": (_eval, "Score a model (optionally with its LoRA adapter) on multiple-choice benchmarks: MMLU / CMMLU / "
                    "C-Eval CSV folders, the bundled tunery_demo and tunery_demo_zh, or mmlu, cmmlu, ceval from the "
                    "hub. The answer is the letter A-D with the highest next-token score; --seed (default 42) seeds "
                    "the run."),
}
# Commands whose options come from the declarations (their -h is generated); the others' -h is their own.
CONFIG_COMMANDS = ("train", "chat", "eval", "webchat", "api", "export", "preview", "estimate", "webui")


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
    import signal
    import threading

    from tunery.errors import TuneryError

    previous = None
    if name == "train" and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return func(rest)
    except TuneryError as err:
        if debug:
            raise
        if str(err):  # an empty message: another process (rank 0 of a distributed run) reports this error
            print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except Terminated:
        print("\nstopped by SIGTERM", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    """The `tunery` command: main(), then the exit. After Ctrl-C or SIGTERM, further ones are ignored while the
    interpreter shuts down (torch's teardown can take seconds), so a second press never prints a traceback."""
    code = main()
    if code in (130, 143):
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(code)


if __name__ == "__main__":
    entry()
