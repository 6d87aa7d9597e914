"""Argument handling of ``tunery runs``: list, diff, plot."""

from __future__ import annotations

import os

from tunery.errors import ConfigError, TuneryError

USAGE = ("usage: tunery runs [SAVES_DIR]            list runs (default: TUNERY_SAVES_DIR or ./saves)\n"
         "       tunery runs diff RUN_A RUN_B       options, versions and data that differ\n"
         "       tunery runs plot RUN ... [--output FILE.png]   loss / eval loss / reward curves overlaid")


def default_saves_dir() -> str:
    return os.environ.get("TUNERY_SAVES_DIR", "saves")


def run_runs(argv: list[str]) -> int:
    from tunery.runs import compare, listing

    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv and argv[0] == "diff":
        if len(argv) != 3:
            raise ConfigError("tunery runs diff needs two run folders — tunery runs diff RUN_A RUN_B")
        for path in argv[1:]:
            _must_exist(path)
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
            _must_exist(path)
        print(compare.plot_runs(paths, output or "runs_compared.png"))
        return 0
    if len(argv) > 1:
        raise ConfigError(f"tunery runs: unexpected arguments {' '.join(argv[1:])!r}\n{USAGE}".splitlines()[0])
    saves = argv[0] if argv else default_saves_dir()
    _must_exist(saves)
    runs = listing.list_runs(saves)
    if not runs:
        print(f"no runs under {saves}")
        return 0
    print(listing.format_table(runs))
    return 0


def _must_exist(path: str) -> None:
    if not os.path.isdir(path):
        raise TuneryError(f"'{path}' is not a folder — give a run's output_dir (or a saves folder for the list)")
