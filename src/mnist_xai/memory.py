"""Refuse, in one line, work that cannot fit in this machine's memory, before it starts."""

from __future__ import annotations

import os

from mnist_xai.errors import ParamError

USABLE_FRACTION = 0.8  # of the memory available now: leave room for the OS, torch itself and other processes


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping); total memory elsewhere."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _size(count: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.3g} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def require(needed: int, what: str, advice: str) -> None:
    """ParamError unless `needed` bytes fit in what this machine has available."""
    usable = USABLE_FRACTION * available_bytes()
    if needed > usable:
        raise ParamError(f"{what} needs about {_size(needed)} of memory, more than the {_size(usable)} this machine "
                         f"can spare: {advice}")
