"""Resident memory of this process from /proc, in KiB: the benchmarks' one reader (Linux only).

``rss_kib()`` is the resident set now; ``hwm_kib()`` its high-water mark (``VmHWM``) since the
process started. The benchmarks import it by name (``python benchmarks/x.py`` puts this folder
first on ``sys.path``).
"""

from __future__ import annotations

import os
import re


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
