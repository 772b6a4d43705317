"""The worker's memory budget against glibc's malloc (payflow.runtime.process): freed batch
memory goes back to the kernel. Each case runs in a fresh interpreter (malloc settings are
per process): 600 blocks of 300 KB (a batch's arrays and lists), each followed by a small block
that stays allocated, then the large ones freed."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import sys
    from payflow.runtime import process

    def rss_mb():
        return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024

    mode = sys.argv[1]
    if mode == "limits":
        process.limit_malloc_retention()
    warm = bytearray(300 * 1024)
    del warm  # a mapped block freed: glibc raises its mmap threshold to its size
    base = rss_mb()
    big, small = [], []
    for _ in range(600):
        big.append(bytearray(300 * 1024))
        small.append(bytearray(64))
    del big
    if mode == "trim":
        process.return_free_memory()
    print(round(rss_mb() - base))
""")


def retained_mb(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_batch_memory_goes_back_to_the_kernel():
    assert retained_mb("none") > 100  # glibc's defaults keep the ~175 MB freed in its heap
    assert retained_mb("limits") < 20  # a fixed mmap threshold: each block unmapped when freed
    assert retained_mb("trim") < 20  # malloc_trim: the free pages inside the heap handed back
