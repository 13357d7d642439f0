"""The kernel recursions' use of the Gaussian tables of meanfield.gaussian.

The kernel recursions (docs/theory.md §A4.1, 4.3) need, for every entry of an N x M block,

    W(q1, q2, c) = E[phi(u) phi(v)],   D(q1, q2, c) = E[phi'(u) phi'(v)]

with Var u = q1, Var v = q2, corr(u, v) = c.  One 2-D quadrature per entry
(:func:`meanfield.gaussian.expect2`, ~10-25 ms) is far too slow for 10^6-10^7 entries, and even
the arc-cosine closed forms of the relu family cost four arcsines per entry and layer; so the
entries are read from the tables of the one table facility in meanfield.gaussian:

1. ``gaussian.TableSet``: W and D in x = sqrt(1 - |c|) for a list of variance pairs (W from D by
   the Price identity), read with a square root, a rounding, five gathers and a Horner step per
   function (``gaussian.CTable``).  |c| within 8 ulps of 1 counts as 1 (a rounded correlation
   is not known better; this makes duplicated inputs give exactly duplicated kernel rows).
2. ``gaussian.LogQTable``: unequal variances, W and D interpolated in (log q1, log q2) between
   the TableSets of a Chebyshev grid of variance pairs, verified against direct quadrature.
   This is the slow path: inputs of unequal lengths with tanh-like activations.

What is kernel-specific stays here (:class:`TabulatedMaps`): positively homogeneous closed forms
(relu family, alpha_relu) use one table at q = 1 and the scaling (q1 q2)^(a/2)
(:func:`homogeneity_degree`); one variance (normalised inputs) folds the next layer's affine map
into the table's coefficients; zero variances read 1-D expectations; :func:`table_cost`
estimates the quadratures, so that ``LayerMaps`` can choose between a table and direct
evaluation.  Whole networks (:func:`FunctionTable`, a ``gaussian.CTable.sample``): when every
input has the same length, the depth-L NNGP and NTK are functions of the input correlation
alone, tabulated by running the layer recursion on the Chebyshev nodes.

Accuracy (tests/test_kernels.py, against order-20 quadrature, the closed forms and the
layer-by-layer path): ~1e-13 relative for closed forms and smooth activations at equal
variances, ~1e-10 with unequal ones, ~1e-8 for kinked activations without closed form (elu,
selu, hard_tanh), where expect2's own node values limit it; a table that hits its size limit
warns and reports its error estimate (KernelResult.table_error).
"""

from __future__ import annotations

import math

import numpy as np

from .. import gaussian
from ..activations import Activation
from ..gaussian import TableSet

#: the table facility's quadrature order for node values (gaussian.TABLE_QUAD_ORDER)
QUAD_ORDER = gaussian.TABLE_QUAD_ORDER
_horner_gather = gaussian.horner_gather


def clear_cache() -> None:
    """Forget the tables kept in memory (benchmarks time cold computations)."""
    gaussian.clear_table_sets()


class TabulatedMaps:
    """W and D for a layer whose row variances are ``q_rows`` and column variances ``q_cols``.

    Entries with a zero variance (an input that is exactly zero and no bias) are read from 1-D
    expectations: W(0, q, c) = phi(0) E[phi(sqrt(q) z)].
    """

    EQUAL_TOL = 1e-12

    def __init__(self, act: Activation, q_rows: np.ndarray, q_cols: np.ndarray):
        self.act = act
        self.degree = homogeneity_degree(act)
        self._fold_cache: dict = {}
        self.uniform = False
        self.grid: gaussian.LogQTable | None = None
        q_all = np.concatenate([np.ravel(q_rows), np.ravel(q_cols)])
        pos = q_all[q_all > 0]
        self.has_zero = bool(np.any(q_all == 0))
        if pos.size == 0:
            return
        t = np.log(pos)
        lo, hi = float(t.min()), float(t.max())
        if hi - lo <= self.EQUAL_TOL:  # one variance: W and D are functions of c alone
            self.uniform = True
            self.q_uniform = float(np.exp(0.5 * (lo + hi)))
        if self.degree is not None:  # W(q1, q2, c) = (q1 q2)^(a/2) W(1, 1, c): one table
            self.grid = gaussian.LogQTable.single(act, 1.0)
        elif self.uniform:
            self.grid = gaussian.LogQTable.single(act, self.q_uniform)
        else:
            self.grid = gaussian.LogQTable(act, lo, hi)

    @property
    def nodes(self) -> np.ndarray | None:
        """The grid's nodes in log q (None when every variance is zero)."""
        return None if self.grid is None else self.grid.nodes

    @property
    def tables(self) -> TableSet:
        return self.grid.tables

    @property
    def interp_error(self) -> float:
        return 0.0 if self.grid is None else self.grid.interp_error

    def __call__(self, q_rows: np.ndarray, q_cols: np.ndarray, c: np.ndarray,
                 affine: tuple[float, float, float] = (1.0, 0.0, 1.0)
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(a W + b, a_d D) on the block c (rows x cols) with the block's row/column variances,
        for ``affine`` = (a, b, a_d).  With one table and one variance (normalised inputs) the
        affine map is folded into the table's coefficients: no extra pass over the block."""
        act = self.act
        a, b, ad = affine
        if self.grid is None:  # every variance is zero
            f0, d0 = float(act.fn(np.zeros(1))[0]), float(act.d1(np.zeros(1))[0])
            return np.full(c.shape, a * f0 * f0 + b), np.full(c.shape, ad * d0 * d0)
        zr, zc = q_rows == 0, q_cols == 0
        if self.uniform and not (zr.any() or zc.any()):
            cw, cd, b_after = self._folded(a, b, ad)
            tabs = self.tables
            g, dl = tabs.locate(c)
            w = _horner_gather(cw, g, dl)
            if tabs.odd:
                np.copysign(w, c, out=w)
                if b_after:
                    w += b_after
            return w, _horner_gather(cd, g, dl)
        grid = self.grid
        w, d = grid.combine(grid.weights(np.where(zr, 1.0, q_rows)), grid.weights(np.where(zc, 1.0, q_cols)), c)
        if self.degree is not None:
            e = self.degree
            with np.errstate(divide="ignore"):
                for arr, ex in ((w, 0.5 * e), (d, 0.5 * (e - 1))):
                    if ex != 0:
                        arr *= (q_rows ** ex)[:, None]
                        arr *= (q_cols ** ex)[None, :]
        elif zr.any() or zc.any():
            w, d = self._zero_rows(q_rows, q_cols, zr, zc, w, d, True)
        if a != 1.0:
            w *= a
        if b != 0.0:
            w += b
        if ad != 1.0:
            d *= ad
        return w, d

    def _folded(self, a: float, b: float, ad: float):
        """Coefficients of a W + b and a_d D for the uniform variance (cached per affine map)."""
        key = (a, b, ad)
        hit = self._fold_cache.get(key)
        if hit is not None:
            return hit
        tabs = self.tables
        sw = sd = 1.0
        if self.degree is not None:  # the one table is at q = 1: W(q, q, c) = q^a W(1, 1, c)
            sw, sd = self.q_uniform ** self.degree, self.q_uniform ** (self.degree - 1.0)
        cw = tabs.coef_w[:, 0] * (a * sw)
        cd = np.ascontiguousarray(tabs.coef_d[:, 0] * (ad * sd))
        b_after = 0.0
        if tabs.odd:
            b_after = b  # W(c) = sign(c) W(|c|): the shift comes after the sign
        else:
            cw[0] += b
        res = (np.ascontiguousarray(cw), cd, b_after)
        self._fold_cache[key] = res
        return res

    def _zero_rows(self, q_rows, q_cols, zr, zc, w, d, want_w):
        act = self.act
        f0, d0 = float(act.fn(np.zeros(1))[0]), float(act.d1(np.zeros(1))[0])
        m_c = gaussian.m_phi(act, q_cols)
        md_c = gaussian.expect1(act.d1, q_cols, act.kinks)
        m_r = gaussian.m_phi(act, q_rows)
        md_r = gaussian.expect1(act.d1, q_rows, act.kinks)
        d = np.array(d, copy=True)
        if want_w:
            w = np.array(w, copy=True)
            w[zr, :] = f0 * m_c[None, :]
            w[:, zc] = f0 * m_r[:, None]
        d[zr, :] = d0 * md_c[None, :]
        d[:, zc] = d0 * md_r[:, None]
        return w, d


_DEGREE: dict = {}


def homogeneity_degree(act: Activation) -> float | None:
    """a when the closed forms satisfy W(q1, q2, c) = (q1 q2)^(a/2) W(1, 1, c) and
    D(q1, q2, c) = (q1 q2)^((a-1)/2) D(1, 1, c) (relu family: a = 1, alpha_relu: a = alpha);
    None otherwise (checked numerically on the closed forms, to 1e-13)."""
    if act.closed_forms.get("w") is None or act.closed_forms.get("wd") is None:
        return None
    key = (act.name, id(act.fn))
    if key in _DEGREE:
        return _DEGREE[key]
    deg = None
    with np.errstate(all="ignore"):
        v1, v2 = float(gaussian.v_phi(act, 1.0)), float(gaussian.v_phi(act, 2.0))
        if v1 > 0 and v2 > 0:
            a = math.log2(v2 / v1)
            q1 = np.array([0.3, 5.0, 1.0, 2.5])
            q2 = np.array([2.0, 0.7, 1.0, 9.0])
            c = np.array([0.37, -0.81, 0.93, 0.05])
            w = gaussian.w_phi(act, q1, q2, c)
            w0 = gaussian.w_phi(act, np.ones(4), np.ones(4), c)
            dd = gaussian.w_dphi(act, q1, q2, c)
            d0 = gaussian.w_dphi(act, np.ones(4), np.ones(4), c)
            ok_w = np.allclose(w, (q1 * q2) ** (a / 2) * w0, rtol=1e-13, atol=1e-15)
            ok_d = np.allclose(dd, (q1 * q2) ** ((a - 1) / 2) * d0, rtol=1e-13, atol=1e-15)
            if ok_w and ok_d and abs(a - round(a * 1e6) / 1e6) < 1e-9:
                deg = round(a * 1e6) / 1e6
    _DEGREE[key] = deg
    return deg


def table_cost(q_rows: np.ndarray, q_cols: np.ndarray) -> int:
    """Estimated 2-D quadratures needed by :class:`TabulatedMaps` for these variances."""
    q = np.concatenate([np.ravel(q_rows), np.ravel(q_cols)])
    q = q[q > 0]
    if q.size == 0:
        return 0
    t = np.log(q)
    width = float(t.max() - t.min())
    if width <= TabulatedMaps.EQUAL_TOL:
        return 40
    n = gaussian.logq_degree(width)
    return 40 * (n + 1) * (n + 2) // 2


__all__ = ["TableSet", "TabulatedMaps", "QUAD_ORDER", "clear_cache", "homogeneity_degree"]


# ------------------------------------------------------------------------------------------
# Whole-network tables: for inputs of equal length the kernels are functions of c0 alone
# ------------------------------------------------------------------------------------------

def FunctionTable(f, tol: float = 1e-13, max_level: int = 6, cache=None) -> gaussian.CTable:
    """A vector-valued function of the correlation c in [-1, 1] (``f`` maps a 1-D array of
    correlations to an array (n_out, len(c))), tabulated by gaussian.CTable.sample: calling
    the table on c gives the list of outputs.  ``cache`` = (kind, activation, params) keeps its
    series in the disk cache (params: everything f depends on besides the activation)."""
    return gaussian.CTable.sample(f, tol, max_level, cache=cache)
