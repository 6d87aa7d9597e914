"""Host-memory settings of a training process.

CPU training allocates and frees the same large activation tensors every step. glibc's malloc serves allocations
of at least its *mmap threshold* with their own memory maps, returned to the system on free, and smaller ones from
its heap, whose freed pages it keeps. The threshold starts at 128 KiB but glibc raises it (up to 32 MiB) each time a
mapped block is freed, so after the first step most activations come from the heap and the process's resident memory
grows with fragmentation, well past what is live at any moment. Fixing the threshold with ``mallopt`` (which also
stops glibc from moving it) keeps large tensors mapped: peak RSS stays near the live peak, for a few percent more
page faults. The option ``malloc_mmap_threshold_mb`` sets it; see benchmarks/RESULTS.md for the measured trade.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from typing import TYPE_CHECKING

from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
ENV_VAR = "MALLOC_MMAP_THRESHOLD_"  # glibc's own environment tunable: when set, the user's choice stands


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def threshold_mb(cfg: Config) -> int:
    """The threshold to apply in MiB (0: leave malloc alone). Unset: 1 MiB for CPU training, 0 with a GPU (there the
    activations live in the device's own caching allocator). 1 MiB catches the hidden-state tensors of even small
    models (a 512-wide model's 1,000-token row is 2 MiB); 4 MiB let them fall back to the heap in the benchmark."""
    value = cfg.malloc_mmap_threshold_mb
    if value is not None:
        return value
    from tunery.utils import device

    if cfg.use_cpu:
        return 1
    return 0 if (device.cuda_available() or device.mps_available()) else 1


def apply_malloc_mmap_threshold(cfg: Config) -> bool:
    """Set glibc's mmap threshold for this process; True when it was set."""
    mb = threshold_mb(cfg)
    if mb <= 0:
        return False
    if os.environ.get(ENV_VAR):
        logger.info("%s is set in the environment; malloc_mmap_threshold_mb left unapplied", ENV_VAR)
        return False
    libc = _glibc()
    if libc is None:
        logger.info("malloc_mmap_threshold_mb applies to Linux with glibc only; nothing changed here")
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(mb << 20)))
    if not ok:
        logger.warning("glibc refused mmap threshold %d MiB (mallopt failed); malloc left as it was", mb)
    return ok
