"""Exceptions of meanfield.

Solvers over grids report a per-point status; scalar wrappers raise one of these with a
one-line reason that names the bad value. The CLI maps DomainError (and its subclasses) to
exit code 2 and ConvergenceError to exit code 1.
"""

from __future__ import annotations


class MeanfieldError(Exception):
    """Base class of every error meanfield raises on purpose."""


class DomainError(MeanfieldError, ValueError):
    """An argument is outside the domain where the theory (or the function) is defined."""


class NoFixedPoint(DomainError):
    """The requested fixed point does not exist for these parameters; the message says why."""


class ConvergenceError(MeanfieldError, RuntimeError):
    """A numerical procedure did not converge to the requested accuracy."""


__all__ = ["MeanfieldError", "DomainError", "NoFixedPoint", "ConvergenceError"]
