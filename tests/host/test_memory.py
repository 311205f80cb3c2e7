"""The host's malloc settings take effect: a large buffer freed and allocated again is still returned to
the system (mmapped), where glibc's default would have raised its threshold and kept it in the heap."""
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
from fedfunc.host.memory import tune_malloc
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.mallinfo2.restype = [ctypes.c_void_p], Info
if sys.argv[1] == "tuned":
    assert tune_malloc()
libc.free(libc.malloc(1 << 20))  # by default this raises the mmap threshold past 1 MB
p = libc.malloc(1 << 20)
print(libc.mallinfo2().hblkhd >= 1 << 20)
libc.free(p)
"""


@pytest.mark.parametrize("mode, mapped", [("default", "False"), ("tuned", "True")])
def test_a_large_buffer_freed_twice_is_mapped_only_with_the_hosts_settings(mode, mapped):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == mapped, out.stderr
