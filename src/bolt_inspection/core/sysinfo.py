"""What machine a measurement ran on (for reports and benchmarks; Linux /proc, else 'unknown')."""

from __future__ import annotations

import platform
from pathlib import Path


def _proc_field(path: str, key: str) -> str | None:
    """The value after ``key:`` in a /proc file, or None where the file or field is absent."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None             # not Linux, or /proc not mounted: the caller reports 'unknown'
    for line in text.splitlines():
        if line.startswith(key):
            return line.split(':', 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU model name, e.g. 'AMD EPYC 7B13'."""
    return _proc_field('/proc/cpuinfo', 'model name') or platform.processor() or 'unknown'


def memory_gb() -> float | None:
    """Total RAM in GiB, or None where unknown."""
    value = _proc_field('/proc/meminfo', 'MemTotal')
    return round(int(value.split()[0]) / 1024 / 1024, 1) if value else None
