"""The elementwise step shared by every kernel recursion (MATH.md 4.1, 4.3).

Given the pre-activation covariance block K (rows x columns) of one layer and the variances on
its diagonal (q_r for rows, q_s for columns), return

    E  = E[phi(u) phi(v)]     = W_phi(q_r, q_s, c)     (gaussian.w_phi)
    Ed = E[phi'(u) phi'(v)]   = dW_phi / dq_rs         (gaussian.w_dphi, Price identity)

with c = K / sqrt(q_r q_s), exactly as ``maps.covariance_map`` and ``maps.iterate`` form it:
closed forms of the registry (relu family, erf, sin, cos, linear, alpha_relu) are called
directly through ``gaussian.w_phi`` / ``gaussian.w_dphi``; every other activation reads the
tables of :mod:`meanfield.kernels._tables`, built by ``gaussian.expect2``.  Diagonal entries
(the same input twice) take the 1-D moments V_phi(q), V_phi'(q) so that the kernel's diagonal is
the length map of MATH.md 1.2 to the last bit.
"""

from __future__ import annotations

import numpy as np

from .. import gaussian
from ..activations import Activation
from ._tables import TabulatedMaps


def has_closed_form(act: Activation) -> bool:
    return act.closed_forms.get("w") is not None and act.closed_forms.get("wd") is not None


def correlation(K: np.ndarray, q_r: np.ndarray, q_s: np.ndarray) -> np.ndarray:
    """c = K / sqrt(q_r q_s) clipped to [-1, 1]; 0 where a variance is 0 (then K = 0 too)."""
    den = np.sqrt(q_r)[:, None] * np.sqrt(q_s)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.divide(K, den, out=np.zeros_like(K), where=den > 0)
    np.clip(c, -1.0, 1.0, out=c)
    return c


class LayerMaps:
    """E and Ed for one nonlinearity, given all row and column variances of that layer."""

    def __init__(self, act: Activation, q_rows: np.ndarray, q_cols: np.ndarray):
        self.act = act
        self.closed = has_closed_form(act)
        self.q_rows, self.q_cols = q_rows, q_cols
        # the 1-D moments of the diagonal entries, for symmetric blocks
        self._tab: TabulatedMaps | None = None

    @property
    def tab(self) -> TabulatedMaps:
        if self._tab is None:
            self._tab = TabulatedMaps(self.act, self.q_rows, self.q_cols)
        return self._tab

    def __call__(self, K: np.ndarray, rows: slice, cols: slice,
                 diag: tuple[np.ndarray, np.ndarray] | None = None,
                 diag_vals: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(E, Ed) on the block K = cov(rows, cols).

        ``diag`` = (local row indices, local column indices) of entries that pair an input with
        itself; ``diag_vals`` their exact (V_phi(q), V_phi'(q)).
        """
        q_r, q_s = self.q_rows[rows], self.q_cols[cols]
        c = correlation(K, q_r, q_s)
        if diag is not None:
            c[diag] = 1.0
        if self.closed:
            qr, qs = q_r[:, None], q_s[None, :]
            E = gaussian.w_phi(self.act, qr, qs, c)
            Ed = gaussian.w_dphi(self.act, qr, qs, c)
        else:
            E, Ed = self.tab(q_r, q_s, c)
        if diag is not None and diag_vals is not None:
            E[diag] = diag_vals[0]
            Ed[diag] = diag_vals[1]
        return E, Ed


def diag_moments(act: Activation, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V_phi(q), V_phi'(q)) for a vector of variances (MATH.md 1.2, 1.3)."""
    return gaussian.v_phi(act, q), gaussian.v_dphi(act, q)
