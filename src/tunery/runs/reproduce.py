"""``tunery train --reproduce OUTPUT_DIR``: the run card's options again, and what differs from when it ran."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tunery.errors import ConfigError
from tunery.runs.card import dataset_fingerprints, read_card, tokenizer_hash, versions
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)
NOT_REPLAYED = ("reproduce", "dry_run", "resume_from_checkpoint")


def reproduce_target(argv: list[str]) -> str | None:
    """The folder named by --reproduce DIR / --reproduce=DIR / reproduce=DIR, if any."""
    for i, arg in enumerate(argv):
        if arg in ("--reproduce",) and i + 1 < len(argv):
            return argv[i + 1]
        for prefix in ("--reproduce=", "reproduce="):
            if arg.startswith(prefix):
                return arg[len(prefix):]
    return None


def _without_reproduce(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--reproduce":
            skip = True
            continue
        if arg.startswith(("--reproduce=", "reproduce=")):
            continue
        out.append(arg)
    return out


def _free_output_dir(original: str) -> str:
    base = original.rstrip("/") + "-reproduce"
    candidate, n = base, 2
    while os.path.exists(candidate) and os.listdir(candidate):
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def reproduce_config(argv: list[str]):
    """(the Config of the recorded run with argv's other options on top, the argv that rebuilds it)."""
    from tunery.config.loader import build_config, split_argv

    folder = reproduce_target(argv)
    card = read_card(folder) if folder else None
    if card is None:
        raise ConfigError(f"--reproduce {folder}: no readable run_card.json there — give the output_dir of a Tunery "
                          "training run (runs made before run cards cannot be reproduced this way)")
    rest = _without_reproduce(argv)
    files, pairs = split_argv(rest)
    if files:
        raise ConfigError("--reproduce takes its options from the run card: give overrides as --name value, "
                          f"not a config file ({files[0]})")
    where = f"run card {folder}"
    options = card.get("options", {})
    raw = [(name, options[name]["value"], where) for name in card.get("explicit", [])
           if name in options and name not in NOT_REPLAYED]
    given = {key for key, _, _ in pairs}
    if "output_dir" not in given:
        out = _free_output_dir(options.get("output_dir", {}).get("value") or folder)
        pairs.append(("output_dir", out, "command line"))
        logger.info("reproducing %s into %s (pass --output_dir to choose)", folder, out)
    cfg = build_config("train", raw + pairs, where + (" + command line" if pairs else ""))
    for line in differences(card, cfg):
        logger.warning("reproduce: %s", line)
    replay = [f"--reproduce={folder}"] + [f"--output_dir={cfg.output_dir}"] * ("output_dir" not in given) + rest
    return cfg, replay


def differences(card: dict, cfg: Config) -> list[str]:
    """What is not the same as when the run ran: library versions, data files, tokenizer files."""
    out = []
    then, now = card.get("versions", {}), versions()
    for pkg in sorted(set(then) | set(now)):
        if then.get(pkg) != now.get(pkg):
            out.append(f"{pkg} {now.get(pkg)} now, {then.get(pkg)} in the recorded run")
    try:
        data_now = dataset_fingerprints(cfg)
    except Exception as err:  # the data may be gone: the run itself will say so in its own words
        out.append(f"the datasets cannot be read now ({str(err).splitlines()[0]})")
        data_now = {}
    for name, entry in (card.get("datasets") or {}).items():
        current = data_now.get(name)
        if current is None:
            continue
        if any(entry.get(k) != current.get(k) for k in ("sha256", "sampled_sha256", "files")):
            out.append(f"dataset {name}: its file changed since the recorded run ({entry.get('path')})")
    if card.get("tokenizer_sha256") and tokenizer_hash(cfg.model_name_or_path) != card["tokenizer_sha256"]:
        out.append(f"the tokenizer files in {cfg.model_name_or_path} changed since the recorded run")
    return out
