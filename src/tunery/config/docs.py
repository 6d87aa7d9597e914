"""Help text and the options reference (docs/options.md), both generated from the option declarations; running this
module also rewrites config/fields.py (the typed view of a Config, config/typed.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from tunery.config.hf_args import SNAPSHOT, options_from, read_snapshot
from tunery.config.registry import COMMAND_GROUPS, merged_options, options_for

DOCS_PATH = Path(__file__).resolve().parents[3] / "docs" / "options.md"


def format_help(command: str, summary: str) -> str:
    lines = [f"usage: tunery {command} [CONFIG.yaml] [--option value ...] [option=value ...]", "", summary, "",
             "A bare --flag means true; list options take comma-separated values. Options:"]
    current = None
    for opt in options_for(command):
        if opt.group != current:
            current = opt.group
            lines += ["", f"{current}:"]
        kind = f"{{{','.join(map(str, opt.choices))}}}" if opt.choices else opt.kind.upper()
        if len(kind) > 40:
            kind = opt.kind.upper()
        note = " [not supported yet]" if opt.unsupported else ""
        lines.append(f"  --{opt.name} {kind}")
        lines.append(f"      {opt.help}{note} (default: {opt.default_text()})")
    return "\n".join(lines)


def options_markdown() -> str:
    """The reference for the shipped TrainingArguments snapshot's transformers version (the installed transformers'
    fields, which `tunery train -h` lists, may differ: the file must not change with each transformers release)."""
    shipped = read_snapshot(SNAPSHOT)
    out = ["# Tunery options", "",
           "Generated from the option declarations in `src/tunery/config/` by "
           "`python -m tunery.config.docs`; do not edit by hand.", "",
           "Every option works as a YAML key, as `--name value` and as `name=value`. Names follow LLaMA-Factory, "
           f"and every `Seq2SeqTrainingArguments` field of the installed transformers is accepted (listed here: "
           f"transformers {shipped['transformers']}'s; `tunery train -h` lists the installed version's). Names "
           "LLaMA-Factory files use that transformers has dropped (`warmup_ratio`, `logging_dir`, "
           "`evaluation_strategy`, ...) are translated, or refused with one line naming the replacement.", ""]
    groups: dict[str, list] = {}
    for opt in merged_options(options_from(shipped["fields"])).values():
        groups.setdefault(opt.group, []).append(opt)
    order = [g for gs in COMMAND_GROUPS.values() for g in gs]
    for group in sorted(groups, key=lambda g: order.index(g) if g in order else len(order)):
        out += [f"## {group}", "", "| option | type | default | description |", "|---|---|---|---|"]
        for opt in groups[group]:
            kind = " / ".join(map(str, opt.choices)) if opt.choices and len(opt.choices) <= 8 else opt.kind
            text = opt.help.replace("|", "\\|") + (f" *Not supported yet: {opt.unsupported}.*" if opt.unsupported
                                                   else "")
            default = opt.default_text().replace("|", "\\|")
            out.append(f"| `{opt.name}` | {kind} | `{default}` | {text} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    from tunery.config.typed import write_fields

    DOCS_PATH.write_text(options_markdown(), encoding="utf-8")
    print(f"wrote {DOCS_PATH}", file=sys.stderr)
    print(f"wrote {write_fields()}", file=sys.stderr)  # the typed view of a Config, from the same declarations
