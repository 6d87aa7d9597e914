"""The typed, frozen Config: one annotation per option (kept in step with the declarations), no writes after
validation, one validated way to derive a config (``cfg.replace``), and no ``getattr(cfg, name, default)`` probes."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from tunery.config import Config, parse_config
from tunery.config.registry import all_options
from tunery.config.typed import FIELDS_PATH, fields_source
from tunery.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "tunery"


def _cfg(tmp_path, *extra):
    return parse_config("train", ["model_name_or_path=org/model", "dataset=identity", "template=llama3",
                                  f"output_dir={tmp_path / 'out'}", *extra])


def test_fields_are_generated_from_the_declarations():
    assert FIELDS_PATH.read_text(encoding="utf-8") == fields_source(), "run `python -m tunery.config.docs`"
    hints = typing.get_type_hints(Config)
    own = {name: opt for name, opt in all_options().items() if not opt.hf}
    assert set(own) <= set(hints)  # every Tunery option is typed (TrainingArguments fields: the shipped snapshot's)
    assert hints["cutoff_len"] is int and hints["stage"] is str and hints["do_train"] is bool
    assert hints["adapter_name_or_path"] == typing.Optional[list]  # default None
    assert hints["explicit"] == frozenset[str]


def test_a_validated_config_is_frozen(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(AttributeError, match="frozen: option 'cutoff_len' cannot be set — derive another with "
                                             r"cfg.replace\(cutoff_len=...\)"):
        cfg.cutoff_len = 64
    with pytest.raises(AttributeError, match="frozen"):
        cfg.resize_vocab = True
    with pytest.raises(AttributeError):
        cfg.no_such_option  # noqa: B018
    assert isinstance(cfg.explicit, frozenset) and cfg.cutoff_len == 2048


def test_replace_validates_and_leaves_the_original(tmp_path):
    cfg = _cfg(tmp_path, "lora_rank=4")
    new = cfg.replace(cutoff_len=64, adapter_name_or_path=None)
    assert (new.cutoff_len, cfg.cutoff_len) == (64, 2048)
    assert "cutoff_len" in new.explicit and "cutoff_len" not in cfg.explicit and new.sources["cutoff_len"] == "derived"
    assert new.lora_rank == 4 and new.command == cfg.command
    assert cfg.replace(cutoff_len="128").cutoff_len == 128  # strings are coerced as on the command line
    with pytest.raises(ConfigError, match="option 'cutoff_len' = -1: must be greater than 0"):
        cfg.replace(cutoff_len=-1)
    with pytest.raises(ConfigError, match="unknown option 'cutof_len' \\(did you mean 'cutoff_len'\\?\\)"):
        cfg.replace(cutof_len=64)
    with pytest.raises(ConfigError, match="pref_loss.*used by stage dpo only"):  # the cross-field rules run again
        cfg.replace(stage="kto", dataset=["kto_en_demo"], pref_loss="orpo")
    back = new.replace(unset=("cutoff_len",))
    assert back.cutoff_len == 2048 and "cutoff_len" not in back.explicit


def test_derived_configs_go_through_replace(tmp_path):
    """The chat engine's compare base and the estimate probe derive their configs validated."""
    from tunery.chat.engine import derive_config
    from tunery.estimate.probe import _probe_cfg

    cfg = _cfg(tmp_path, "adapter_name_or_path=org/adapter")
    base = derive_config(cfg, adapter_name_or_path=None)
    assert base.adapter_name_or_path is None and cfg.adapter_name_or_path == ["org/adapter"]
    with pytest.raises(ConfigError):
        derive_config(cfg, temperature=-1.0)
    probe = _probe_cfg(cfg, gradient_checkpointing=True)
    assert probe.gradient_checkpointing and not probe.disable_gradient_checkpointing and not probe.adapter_name_or_path


def test_no_probing_or_writing_of_options():
    """Options are plain attributes: no ``getattr(cfg, "name", default)``, no ``cfg.name = value``, no Config built
    by hand outside the loader."""
    probe = re.compile(r"getattr\(\s*cfg\s*,|hasattr\(\s*cfg\s*,")
    write = re.compile(r"^\s*cfg\.[a-z_]+\s*=[^=]", re.M)
    built = re.compile(r"(?<![\w.])Config\(\s*cfg\.command")
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for pattern in (probe, write, built):
            found += [f"{path.relative_to(SRC)}: {m.group(0).strip()}" for m in pattern.finditer(text)]
    assert not found, "\n".join(found)
