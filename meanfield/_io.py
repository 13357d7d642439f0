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
    try:
        if not parent.is_dir():
            raise DomainError(f"output folder does not exist: {str(parent)!r} (for {str(p)!r})")
        if p.is_dir():
            raise DomainError(f"output path is a folder, not a file: {str(p)!r}")
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise DomainError(f"cannot write {str(p)[:200]!r}: {exc.strerror or exc}") from None
    return p


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary(p: Path, suffix: str) -> str:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=suffix or p.suffix, dir=str(p.parent or "."))
    except OSError as exc:
        raise DomainError(f"cannot write {str(p)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    return tmp


def atomic_write_many(items) -> list[Path]:
    """Write several files together: each ``(path, write, suffix)`` calls ``write(tmp_path)`` on
    a temporary file in the target folder; only when every write succeeded are they renamed into
    place (os.replace), so a failure leaves none of them changed.  Files get the mode a plain
    open() would give (0666 less the umask), not mkstemp's 0600.  An OSError becomes a
    DomainError naming the file (the CLI's one line and exit 2)."""
    items = [(check_output_path(path), write, suffix) for path, write, suffix in items]
    mode = 0o666 & ~_umask()
    tmps: list[str] = []
    try:
        for p, write, suffix in items:
            tmp = _temporary(p, suffix)
            tmps.append(tmp)
            try:
                write(tmp)
                os.chmod(tmp, mode)
            except OSError as exc:
                raise DomainError(f"cannot write {str(p)!r}: {exc.strerror or exc}") from None
        for (p, _, _), tmp in zip(items, tmps):
            try:
                os.replace(tmp, p)
            except OSError as exc:
                raise DomainError(f"cannot write {str(p)!r}: {exc.strerror or exc}") from None
    except BaseException:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    return [p for p, _, _ in items]


def atomic_write(path: "str | os.PathLike[str]", write: Callable[[str], None], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` on a temporary file in the target folder, then rename it over
    ``path`` (os.replace is atomic on POSIX); the temporary file is removed on failure."""
    return atomic_write_many([(path, write, suffix)])[0]


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


def savez_writer(**arrays) -> Callable[[str], None]:
    """A ``write(tmp)`` for :func:`atomic_write_many` that saves ``arrays`` as an .npz archive."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return write


def savefig_writer(fig, path, **kwargs) -> Callable[[str], None]:
    """A ``write(tmp)`` for :func:`atomic_write_many` that saves ``fig`` in the format of ``path``."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return lambda tmp: fig.savefig(tmp, format=fmt, **kwargs)


def load_array(path: "str | os.PathLike[str]", what: str = "input"):
    """A real numeric array from a .npy file, or DomainError saying why not: unreadable, not a
    .npy array (never numpy's advice to allow pickles), an .npz archive, complex or non-numeric."""
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise DomainError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    except ValueError:
        raise DomainError(f"{what} {str(path)!r} is not a numeric .npy array (numpy cannot read it as one)") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise DomainError(f"{what} {str(path)!r} is an .npz archive; give a .npy file holding one array")
    if np.iscomplexobj(arr):
        raise DomainError(f"{what} {str(path)!r} holds complex numbers; the kernels take real inputs")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DomainError(f"{what} {str(path)!r} holds {arr.dtype} values, not numbers")
    return arr.astype(float)
