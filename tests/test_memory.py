"""malloc_mmap_threshold_mb: glibc keeps big tensors in their own maps once Tunery sets the threshold."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tunery.config import parse_config
from tunery.errors import ConfigError

PROBE = r"""
import ctypes, sys
import torch
from types import SimpleNamespace
from tunery.utils.memory import apply_malloc_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                               "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
print("applied", apply_malloc_mmap_threshold(SimpleNamespace(malloc_mmap_threshold_mb=int(sys.argv[1]))))
big = torch.empty(24 << 20, dtype=torch.uint8); big.fill_(1); del big  # glibc raises its own threshold on this free
before = libc.mallinfo2().hblkhd
tensor = torch.empty(6 << 20, dtype=torch.uint8)
print("mapped_mib", (libc.mallinfo2().hblkhd - before) / (1 << 20))
"""


def _probe(mb: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(mb)], capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_threshold_keeps_big_tensors_mapped():
    tuned = _probe(4)
    assert tuned["applied"] == "True" and float(tuned["mapped_mib"]) >= 6  # the 6 MiB tensor got its own map
    glibc_own = _probe(0)
    assert glibc_own["applied"] == "False" and float(glibc_own["mapped_mib"]) == 0  # served from the heap


def test_threshold_range_is_checked(tiny_llama3_dir, tmp_path):
    from tunery.demo import DATA_DIR

    with pytest.raises(ConfigError, match="malloc_mmap_threshold_mb.*between 0 and 32"):
        parse_config("train", overrides={"model_name_or_path": str(tiny_llama3_dir), "dataset": "identity",
                                         "dataset_dir": str(DATA_DIR), "output_dir": str(tmp_path / "o"),
                                         "malloc_mmap_threshold_mb": 64})
