"""Memory estimates checked before a large allocation: a request that cannot fit is refused with
the number (a DomainError: the CLI's one line and exit 2) instead of a MemoryError traceback, or
the machine swapping, halfway through."""

from __future__ import annotations

import math
import os

from .errors import DomainError

#: share of the free memory one result may claim (the estimates count the result's own arrays;
#: temporaries and the CLI's printed copy come on top)
_SHARE = 0.5


def _meminfo_available() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _address_space_left() -> float | None:
    # an address-space limit (ulimit -v, or a test's setrlimit) binds before physical memory
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/statm") as fh:
            used = float(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        return max(float(soft) - used, 0.0)
    except (ImportError, OSError, ValueError, IndexError):
        return None


def available_bytes() -> float:
    """Bytes this process can still allocate: the smaller of the free physical memory
    (MemAvailable) and what an address-space limit leaves; inf where neither can be read."""
    found = [b for b in (_meminfo_available(), _address_space_left()) if b is not None]
    return min(found) if found else float("inf")


def format_bytes(n: float) -> str:
    """1.5 GB-style sizes (powers of 1000), for messages."""
    if not math.isfinite(n):
        return "over 1e308 bytes"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} bytes"


def format_count(n: int) -> str:
    """An integer as written, or 1.23e+400-style past 15 digits (messages about huge requests)."""
    digits = str(abs(int(n)))
    if len(digits) <= 15:
        return str(int(n))
    return f"{'-' if n < 0 else ''}{digits[0]}.{digits[1:3]}e+{len(digits) - 1}"


def check_memory(nbytes: float, what: str, hint: str = "") -> None:
    """Refuse (DomainError) when ``what`` needs about ``nbytes`` bytes, more than half of
    :func:`available_bytes`; ``hint`` says how to ask for less."""
    free = available_bytes()
    try:
        nbytes = float(nbytes)  # an int past the float range (a depth of 10^400) is inf bytes
    except OverflowError:
        nbytes = math.inf
    if nbytes > _SHARE * free:
        size = f"about {format_bytes(nbytes)}" if math.isfinite(nbytes) else format_bytes(nbytes)
        raise DomainError(f"{what} needs {size} of memory, more than half of the "
                          f"{format_bytes(free)} free" + (f"; {hint}" if hint else ""))
