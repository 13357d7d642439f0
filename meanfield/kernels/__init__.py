"""Infinite-width NNGP and NTK kernels (docs/theory.md §A4.1).

``kernel(arch, activation, X, X2=None, *, depth, sigma_w2, sigma_b2, ...)`` returns a frozen
:class:`KernelResult` with the N x M matrices ``nngp`` and ``ntk`` of a deep MLP (docs/theory.md §A4.1,
4.2) or residual MLP (4.3), in the NTK or the standard parametrisation.  The per-entry Gaussian
maps are ``gaussian.w_phi`` / ``gaussian.w_dphi`` (closed forms) or tables built from
``gaussian.expect2`` (everything else), so a pair of inputs gets exactly what
``maps.iterate`` predicts for their lengths and correlation.
"""

from __future__ import annotations

from ._tables import clear_cache
from .core import (ARCHS, PARAMETRIZATIONS, KernelResult, LayerDiagonals, condition_number, kernel,
                   kernel_trace)

__all__ = ["kernel", "kernel_trace", "KernelResult", "LayerDiagonals", "condition_number", "clear_cache", "ARCHS",
           "PARAMETRIZATIONS"]
