"""The elementwise step shared by every kernel recursion (docs/theory.md §A4.1, 4.3).

Given the pre-activation covariance block K (rows x columns) of one layer and the variances on
its diagonal (q_r for rows, q_s for columns), return

    E  = E[phi(u) phi(v)]     = W_phi(q_r, q_s, c)     (gaussian.w_phi)
    Ed = E[phi'(u) phi'(v)]   = dW_phi / dq_rs         (gaussian.w_dphi, Price identity)

with c = K / sqrt(q_r q_s), exactly as ``maps.covariance_map`` and ``maps.iterate`` form it:
closed forms of the registry (relu family, erf, sin, cos, linear, alpha_relu) are called
directly through ``gaussian.w_phi`` / ``gaussian.w_dphi``; every other activation reads the
tables of :mod:`meanfield.kernels._tables`, built by ``gaussian.expect2``.  Diagonal entries
(the same input twice) take the 1-D moments V_phi(q), V_phi'(q) so that the kernel's diagonal is
the length map of docs/theory.md §A1.2 to the last bit.
"""

from __future__ import annotations

import numpy as np

from .. import gaussian
from ..activations import Activation
from ._tables import TabulatedMaps, homogeneity_degree, table_cost

METHODS = ("auto", "direct", "table", "hermite", "whole")
#: below this many entries per layer, direct evaluation beats building a table
_TABLE_MIN_ENTRIES = 1 << 16


def has_closed_form(act: Activation) -> bool:
    return act.closed_forms.get("w") is not None and act.closed_forms.get("wd") is not None


_SNAP = 1.0 - gaussian.CTABLE_SNAP  # the tables snap the same way inside their lookup


def correlation(K: np.ndarray, q_r: np.ndarray, q_s: np.ndarray, snap: bool = True) -> np.ndarray:
    """c = K / sqrt(q_r q_s) clipped to [-1, 1]; 0 where a variance is 0 (then K = 0 too)."""
    with np.errstate(divide="ignore"):
        ir = np.where(q_r > 0, 1.0 / np.sqrt(q_r), 0.0)
        is_ = np.where(q_s > 0, 1.0 / np.sqrt(q_s), 0.0)
    c = K * ir[:, None]
    c *= is_[None, :]
    if not snap:  # the tables clip and snap inside their lookup
        return c
    # A correlation is known only to a few ulps (the Gram entries are rounded); within that,
    # snap to +-1 so that duplicated inputs give exactly duplicated kernel rows (kernels like
    # relu's derivative kernel depend on sqrt(1 - c) and would amplify 1e-16 into 1e-8).
    np.clip(c, -1.0, 1.0, out=c)
    c[c >= _SNAP] = 1.0
    c[c <= -_SNAP] = -1.0
    return c


class LayerMaps:
    """E and Ed for one nonlinearity, given all row and column variances of that layer.

    ``method``: ``"direct"`` evaluates ``gaussian.w_phi`` / ``w_dphi`` entry by entry (closed
    forms; a 2-D quadrature of ~10 ms per entry otherwise); ``"table"`` reads the tables of
    meanfield.kernels._tables (built from those same functions); ``"hermite"`` uses
    ``gaussian.expect2_hermite`` for activations without a closed form (fast, ~1e-6 for tanh at
    q <= 2, inaccurate at large q: diagnostics only); ``"auto"`` picks direct for small problems
    and tables for large ones (closed forms with unequal variances and no homogeneity stay
    direct, where a table would be slower).
    """

    def __init__(self, act: Activation, q_rows: np.ndarray, q_cols: np.ndarray,
                 method: str = "auto", n_entries: int | None = None):
        self.act = act
        self.q_rows, self.q_cols = q_rows, q_cols
        closed = has_closed_form(act)
        if n_entries is None:
            n_entries = q_rows.size * q_cols.size
        if method == "auto":
            if closed:
                # a table (no transcendental function per entry) beats the arc-cosine closed
                # forms of the relu family; erf's arcsine form is as fast as a table read
                fast = homogeneity_degree(act) is not None
                method = "table" if (fast and n_entries >= _TABLE_MIN_ENTRIES) else "direct"
            else:
                # one 2-D quadrature per entry, or ~40 per table: take the cheaper
                method = "direct" if n_entries <= table_cost(q_rows, q_cols) else "table"
        if method == "hermite" and closed:
            method = "direct"
        self.method = method
        self.closed = method == "direct" and closed
        self._tab: TabulatedMaps | None = None

    @property
    def tab(self) -> TabulatedMaps:
        if self._tab is None:
            self._tab = TabulatedMaps(self.act, self.q_rows, self.q_cols)
        return self._tab

    def __call__(self, K: np.ndarray, rows: slice, cols: slice,
                 diag: tuple[np.ndarray, np.ndarray] | None = None,
                 diag_vals: tuple[np.ndarray, np.ndarray] | None = None,
                 affine: tuple[float, float, float] = (1.0, 0.0, 1.0)
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(a E + b, a_d Ed) on the block K = cov(rows, cols), for ``affine`` = (a, b, a_d)
        (e.g. (sigma_w2, sigma_b2, sigma_w2): the next layer's Sigma and Sigma_dot).

        ``diag`` = (local row indices, local column indices) of entries that pair an input with
        itself; ``diag_vals`` their exact values, already through the affine map, computed by
        the caller exactly as its 1-D recursion does.
        """
        q_r, q_s = self.q_rows[rows], self.q_cols[cols]
        table = self.method == "table"
        c = correlation(K, q_r, q_s, snap=not table)
        if diag is not None:
            c[diag] = 1.0
        if table:
            E, Ed = self.tab(q_r, q_s, c, affine)
        else:
            qr, qs = q_r[:, None], q_s[None, :]
            if self.method == "hermite":
                act = self.act
                E = gaussian.expect2_hermite(act.fn, act.fn, qr, qs, c)
                Ed = gaussian.expect2_hermite(act.d1, act.d1, qr, qs, c)
            else:
                E = np.array(gaussian.w_phi(self.act, qr, qs, c), dtype=float)
                Ed = np.array(gaussian.w_dphi(self.act, qr, qs, c), dtype=float)
            E, Ed = np.broadcast_to(E, c.shape).copy(), np.broadcast_to(Ed, c.shape).copy()
            a, b, ad = affine
            if a != 1.0:
                E *= a
            if b != 0.0:
                E += b
            if ad != 1.0:
                Ed *= ad
        if diag is not None and diag_vals is not None:
            E[diag] = diag_vals[0]
            Ed[diag] = diag_vals[1]
        return E, Ed


def diag_moments(act: Activation, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V_phi(q), V_phi'(q)) for a vector of variances (docs/theory.md §A1.2, 1.3)."""
    return gaussian.v_phi(act, q), gaussian.v_dphi(act, q)
