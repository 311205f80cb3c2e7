"""glibc malloc settings for a long-lived host, so its resident memory follows what it holds.

Measured with memray over 16 rounds of 30 silos: the host's live heap is flat from the third round on,
yet its RSS grew about 1.5 MB a round — freed memory glibc kept: large temporary buffers (histories,
JSON, blob bodies) raise its dynamic mmap threshold, so later ones land in the heap and fragment it,
across one arena per busy thread. A fixed mmap threshold returns large buffers to the system when freed,
and two arenas bound the fragmentation: 30 silos × 16 rounds then grew 11 MB (27 MB over 20 before),
100 silos × 5 rounds not at all (``bench/scale.py``).
Elsewhere than glibc (musl, macOS) nothing is changed.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h
SETTINGS = {M_MMAP_THRESHOLD: 128 * 1024, M_TRIM_THRESHOLD: 128 * 1024, M_ARENA_MAX: 2}


def tune_malloc() -> bool:
    """Apply ``SETTINGS`` before the host starts its threads; False where the C library has no mallopt."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (AttributeError off glibc, whose mallopt options differ)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(option, value) == 1 for option, value in SETTINGS.items())
