"""Tunery's built-in demo material: a tiny model builder (:mod:`tunery.demo.tiny`) and bundled datasets.

``DATA_DIR`` is a LLaMA-Factory style dataset folder (``dataset_info.json`` plus the files it names):

* ``identity``: self-cognition Q&A (alpaca format, English and Chinese) whose answers contain the placeholders
  ``{{name}}`` and ``{{author}}``.
* ``adgen_local``: AdvertiseGen-like product copy (``content`` attributes -> ``summary`` ad text, Chinese).
* ``pretrain_demo``: short generic English and Chinese paragraphs (``text``) for pre-training demos.
"""

from pathlib import Path

DATA_DIR: Path = Path(__file__).resolve().parent / "data"

__all__ = ["DATA_DIR"]
