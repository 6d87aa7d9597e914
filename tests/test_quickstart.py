"""The README's main job: `tunery quickstart` teaches the tiny model its identity, which the base model lacks."""

from __future__ import annotations

import json

from tunery.cli import main


def test_quickstart_learns_the_identity(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["quickstart"]) == 0
    out = capsys.readouterr().out
    assert "names itself 'Tunery' in 2/2 answers (base: 0/2)" in out, out
    run = tmp_path / "saves" / "tiny-llama3" / "lora" / "quickstart"
    assert (run / "adapter_model.safetensors").exists() and (run / "training_loss.png").exists()
    losses = [json.loads(line)["loss"] for line in (run / "trainer_log.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses[-1] < losses[0] / 2
