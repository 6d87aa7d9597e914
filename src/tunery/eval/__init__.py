"""`tunery eval`: score a model on multiple-choice benchmarks (MMLU / CMMLU / C-Eval CSV layout).

* :mod:`tunery.eval.tasks` finds a benchmark (folder, bundled name or hub name) and reads its CSV files;
* :mod:`tunery.eval.prompt` writes the few-shot conversation of a question;
* :mod:`tunery.eval.scorer` encodes it with the chat template and picks the answer letter with the highest
  next-token score;
* :mod:`tunery.eval.report` writes ``results.json`` and prints the tables; :mod:`tunery.eval.run` is the command.

``BENCHMARKS_DIR`` holds the bundled benchmarks ``tunery_demo`` (English) and ``tunery_demo_zh`` (Chinese).
"""

from pathlib import Path

BENCHMARKS_DIR: Path = Path(__file__).resolve().parent / "data"

__all__ = ["BENCHMARKS_DIR"]
