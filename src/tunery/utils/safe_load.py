"""Reading PyTorch pickles (checkpoint states, .bin weights) without running code: `torch.load(weights_only=True)`.

A file that holds Python objects besides tensors, numbers and numpy RNG states is refused with one line naming it.
"""

from __future__ import annotations

import os

from tunery.errors import TuneryError

_PICKLED = (".pt", ".pth", ".bin")


def refused_file(path: str) -> TuneryError:
    return TuneryError(f"{path}: refused to read it — it holds Python objects besides tensors and numbers, so "
                       "loading it could run code (Tunery never writes such files); use a checkpoint or model you "
                       "made yourself, or one in safetensors")


def safe_load(path: str):
    """`torch.load` with weights_only=True (tensors, numbers, numpy RNG states); anything else is one line."""
    import pickle

    import torch
    from transformers.trainer_pt_utils import safe_globals

    try:
        with safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise refused_file(path) from None


def unsafe_file(folder: str) -> TuneryError | None:
    """The one-line error for the first pickled file in a checkpoint that weights_only loading refuses (None: none)."""
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(_PICKLED):
            try:
                safe_load(os.path.join(folder, name))
            except TuneryError as err:
                return err
            except Exception:  # noqa: BLE001 - a corrupt file is not this check's concern
                continue
    return None
