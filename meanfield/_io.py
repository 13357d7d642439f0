"""Atomic file output: a result is either completely written or not there at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import DomainError


def check_output_path(path: "str | os.PathLike[str]") -> Path:
    """Refuse an output path whose folder does not exist (before any work is done)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise DomainError(f"output folder does not exist: {str(parent)!r} (for {str(p)!r})")
    if p.is_dir():
        raise DomainError(f"output path is a folder, not a file: {str(p)!r}")
    return p


def atomic_write(path: "str | os.PathLike[str]", write: Callable[[str], None], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` on a temporary file in the target folder, then rename it over
    ``path`` (os.replace is atomic on POSIX); the temporary file is removed on failure."""
    p = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=suffix or p.suffix, dir=str(p.parent or "."))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return p


def atomic_savez(path, **arrays) -> Path:
    """np.savez to ``path`` atomically."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return atomic_write(path, write, suffix=".npz")


def atomic_savefig(fig, path, **kwargs) -> Path:
    """fig.savefig to ``path`` atomically (format from the target's extension)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))
