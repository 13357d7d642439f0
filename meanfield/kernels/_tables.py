"""Fast, accurate Gaussian maps for the kernel recursions: tables in x = sqrt(1 - |c|).

The kernel recursions (docs/theory.md §A4.1, 4.3) need, for every entry of an N x M block,

    W(q1, q2, c) = E[phi(u) phi(v)],   D(q1, q2, c) = E[phi'(u) phi'(v)]

with Var u = q1, Var v = q2, corr(u, v) = c.  One 2-D quadrature per entry
(:func:`meanfield.gaussian.expect2`, ~10-25 ms) is far too slow for 10^6-10^7 entries, and even
the arc-cosine closed forms of the relu family cost four arcsines per entry and layer; so the
entries are read from tables built from those same functions:

1. **One table per variance pair (q1, q2)** (:class:`TableSet`).  D is a Chebyshev interpolant
   in x = sqrt(1 - |c|) on two pieces, c >= 0 (c = 1 - x^2) and c < 0 (c = x^2 - 1); odd phi
   needs only the first (D even, W odd in c).  The variable resolves what happens at c -> +-1
   for large q (the kernel tends to the arcsine law of sign(u)): a function analytic in c is
   analytic in x, and kernels behaving like sqrt(1 - c) (kinked activations, relu's derivative
   kernel) become smooth.  Node values come from ``gaussian.w_dphi`` (closed forms) or
   ``gaussian.expect2`` (composite Gauss-Legendre, order 8: ~1e-14 absolute for tanh up to
   q = 50); the degree doubles (17, 33, ..., 513 nodes, nested) until the trailing Chebyshev
   coefficients fall below 1e-12 of the largest.
2. **W from D by the Price identity** (docs/theory.md §A0): dW/dq12 = D, so
   W(c) = W(q1, q2, 1) - sqrt(q1 q2) int_c^1 D(c') dc', integrated exactly on the series.  The
   anchor W(q1, q2, 1) is ``gaussian.w_phi`` at c = 1 (= V_phi(q) for q1 = q2), so the table
   meets the diagonal; W at the other end (0 at c = 0 for odd phi, ``gaussian.w_phi`` at c = -1
   otherwise) checks the whole table, and a failed check doubles the degree again.
3. **Fast evaluation** by the table facility of meanfield.gaussian (``gaussian.CTable``): the
   series are re-expanded as degree-4 Taylor polynomials about the points of a uniform x grid
   (2^10 ... 2^17 intervals, refined until they reproduce the series at 4096 random points), so
   an entry costs a square root, a rounding, five gathers and a Horner step per function: no
   search, no transcendental function, no loop.  |c| within 8 ulps of 1 counts as 1 (a rounded
   correlation is not known better; this makes duplicated inputs give exactly duplicated kernel
   rows).
4. **Unequal variances** (:class:`TabulatedMaps`).  Positively homogeneous closed forms (relu
   family, alpha_relu) use one table and the scaling (q1 q2)^(a/2).  Otherwise W and D are
   interpolated in (log q1, log q2) on a tensor Chebyshev grid of variance pairs (2, 3, 5, 9,
   17 or 33 nodes, nested), one table per unordered pair, verified against direct quadrature at
   test points.  This is the slow path: inputs of unequal lengths with tanh-like activations.
5. **Whole networks** (:func:`FunctionTable`, a ``gaussian.CTable.sample``).  When every input has the same length, every
   layer's variances are equal, and the depth-L NNGP and NTK are functions of the input
   correlation alone: meanfield.kernels.core tabulates them by running the layer-by-layer
   recursion on the Chebyshev nodes, and an entry then costs one table read for the whole
   network.

Accuracy (tests/test_kernels.py, against order-20 quadrature, the closed forms and the
layer-by-layer path): ~1e-13 relative for closed forms and smooth activations at equal
variances, ~1e-10 with unequal ones, ~1e-8 for kinked activations without closed form (elu,
selu, hard_tanh), where expect2's own node values limit it; a table that hits its size limit
warns and reports its error estimate (KernelResult.table_error).
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

import numpy as np

from .. import gaussian
from ..activations import Activation

#: Gauss-Legendre order of gaussian.expect2 for the table nodes (its default is 12): 8 gives
#: ~1e-14 absolute for tanh up to q = 50 (2e-13 at q = 50, c -> 1) at half the cost of 12.
QUAD_ORDER = 8
QUAD_ORDER_KINKED = 8
#: trailing Chebyshev coefficients must fall below this fraction of the largest one
CHEB_TOL = 1e-12
#: the (W, D) checks of a finished table, relative to the table's scale
CHECK_TOL = 1e-10
#: looser targets for kinked activations (elu, selu, hard_tanh): expect2's node values are
#: themselves only good to ~1e-9 there (1e-6 within 1e-3 of c = 1), so tighter targets would
#: only chase quadrature noise
CHEB_TOL_KINKED = 1e-9
CHECK_TOL_KINKED = 1e-8
_CHEB_LEVELS = (16, 32, 64, 128, 256, 512)
_TQ_LEVELS = (1, 2, 4, 8, 16, 32)  # Chebyshev degree in log q (n + 1 nested nodes)
_cheb_points = gaussian.cheb_points
_cheb_coef = gaussian.cheb_coef
_horner_gather = gaussian.horner_gather


class TableSet:
    """Tables of W and D for a list of variance pairs (q1_k, q2_k), sharing one grid.

    The table variable is x = sqrt(1 - |c|) in [0, 1]: piece "pos" holds c >= 0 (c = 1 - x^2),
    piece "neg" (not needed for odd phi) holds c < 0 (c = x^2 - 1).  ``coef_w[j]`` and
    ``coef_d[j]`` have shape (n_tables, n_pieces * (G + 1)): the j-th Taylor coefficient (in units
    of the grid spacing) about grid point g of table k, piece "neg" at offset G + 1.
    """

    def __init__(self, act: Activation, q1: np.ndarray, q2: np.ndarray):
        self.act = act
        self.odd = bool(act.odd)
        self.q1 = np.asarray(q1, dtype=float).reshape(-1)
        self.q2 = np.asarray(q2, dtype=float).reshape(-1)
        self.error_estimate = 0.0
        self._build()

    # -- construction --------------------------------------------------------------------
    def _node_values(self, x: np.ndarray, sign: float) -> np.ndarray:
        """D at every (q1_k, q2_k) x c(x), c = sign (1 - x^2), by gaussian.expect2: (T, len(x))."""
        d1 = self.act.d1
        c = sign * (1.0 - x * x)
        T = self.q1.size
        shape = (T, x.size)
        q1 = np.broadcast_to(self.q1[:, None], shape)
        q2 = np.broadcast_to(self.q2[:, None], shape)
        cc = np.broadcast_to(c[None, :], shape)
        if self.act.closed_forms.get("wd") is not None:
            return np.asarray(gaussian.w_dphi(self.act, q1, q2, cc), dtype=float)
        order = QUAD_ORDER_KINKED if self.act.kinks else QUAD_ORDER
        return gaussian.expect2(d1, d1, q1, q2, cc, self.act.kinks, order=order)

    def _analyse(self, vals: list, y: np.ndarray) -> tuple:
        """Series of D and of its integral on each piece from the node values ``vals`` at the
        Chebyshev points ``y``, the trailing-coefficient size and the W check (see the module
        docstring, step 2)."""
        from numpy.polynomial import chebyshev as C

        s = np.sqrt(self.q1 * self.q2)
        x = 0.5 * (y + 1.0)
        a_d = [_cheb_coef(v) for v in vals]
        # int_0^x D(c(xi)) 2 xi dxi = int dy D x  (dxi = dy / 2)
        a_i = [C.chebint(_cheb_coef(v * x[None, :]).T, lbnd=-1.0).T for v in vals]
        tail = np.zeros(self.q1.size)
        for a in a_d:
            scale = np.max(np.abs(a), axis=1) + 1e-300
            tail = np.maximum(tail, np.max(np.abs(a[:, -3:]), axis=1) / scale)
        j_pos = C.chebval(1.0, a_i[0].T)          # int_0^1 D dc
        w0 = self._w1 - s * j_pos                   # W(c = 0)
        scale_w = np.abs(self._w1) + s * np.max(np.abs(vals[0]), axis=1) + 1e-300
        if self.odd:
            err_w = np.abs(w0) / scale_w            # E[phi]^2 = 0
        else:
            k_neg = C.chebval(1.0, a_i[1].T)        # int_{-1}^0 D dc
            err_w = np.abs(w0 - s * k_neg - self._w_m1) / scale_w
        return a_d, a_i, tail, err_w, w0

    def _sample(self) -> dict:
        """D's node values per piece, the Chebyshev degree doubling until the series and the W
        check converge (what the disk cache stores: the quadratures are the cost)."""
        T = self.q1.size
        signs = (1.0,) if self.odd else (1.0, -1.0)
        level, n = 0, _CHEB_LEVELS[0]
        y = _cheb_points(n)
        vals = [self._node_values(0.5 * (y + 1.0), sg) for sg in signs]
        while True:
            _, _, tail, err_w, _ = self._analyse(vals, y)
            bad = (tail > self._cheb_tol) | (err_w > self.check_tol)
            if not bad.any() or level + 1 == len(_CHEB_LEVELS):
                return {f"piece{i}": v for i, v in enumerate(vals)}
            level += 1
            n2 = _CHEB_LEVELS[level]
            y2 = _cheb_points(n2)
            for i, sg in enumerate(signs):  # nested nodes: integrate only the new ones
                new = np.empty((T, n2 + 1))
                new[:, ::2] = vals[i]
                new[:, 1::2] = self._node_values(0.5 * (y2[1::2] + 1.0), sg)
                vals[i] = new
            y, n = y2, n2

    def _build(self) -> None:
        from numpy.polynomial import chebyshev as C

        act = self.act
        T = self.q1.size
        s = np.sqrt(self.q1 * self.q2)
        self._w1 = np.asarray(gaussian.w_phi(act, self.q1, self.q2, np.ones(T)), dtype=float)
        self._w_m1 = None if self.odd else np.asarray(gaussian.w_phi(act, self.q1, self.q2, -np.ones(T)),
                                                       dtype=float)
        kinked = bool(act.kinks) and act.closed_forms.get("wd") is None
        self._cheb_tol, self.check_tol = (CHEB_TOL_KINKED, CHECK_TOL_KINKED) if kinked else (CHEB_TOL, CHECK_TOL)
        params = {"q1": self.q1.tolist(), "q2": self.q2.tolist(), "order": QUAD_ORDER,
                  "order_kinked": QUAD_ORDER_KINKED, "cheb_tol": self._cheb_tol,
                  "check_tol": self.check_tol, "levels": list(_CHEB_LEVELS)}
        z = gaussian.cached_arrays("wd", act, params, self._sample)
        vals = [z[f"piece{i}"] for i in range(1 if self.odd else 2)]
        n = vals[0].shape[1] - 1
        a_d, a_i, tail, err_w, w0 = self._analyse(vals, _cheb_points(n))
        if ((tail > self._cheb_tol) | (err_w > self.check_tol)).any():
            warnings.warn(
                f"kernel table for {act.name} did not converge at {n + 1} nodes "
                f"(q up to {float(np.max(np.maximum(self.q1, self.q2))):.3g}); relative error "
                f"about {float(np.max(np.maximum(tail, err_w))):.1e}", RuntimeWarning, stacklevel=4)
        self.error_estimate = float(np.max(np.maximum(tail * 10, err_w)))
        self.n_nodes = n + 1
        # W on each piece as a Chebyshev series in y:
        #   pos: W = w1 - s J(x),   neg: W = (w0 - s K(1)) + s K(x)
        a_w = [-s[:, None] * a_i[0]]
        a_w[0][:, 0] += self._w1
        if not self.odd:
            aw_neg = s[:, None] * a_i[1]
            aw_neg[:, 0] += w0 - s * C.chebval(1.0, a_i[1].T)
            a_w.append(aw_neg)
        self._series_w, self._series_d = a_w, a_d
        self._taylor()

    def _taylor(self) -> None:
        """The one table facility (gaussian.CTable) on these series: outputs W_1..W_T, D_1..D_T."""
        def pad(a, n):  # W's series (integrated) has one coefficient more than D's
            return np.pad(a, ((0, 0), (0, n - a.shape[1])))

        pieces = []
        for w, d in zip(self._series_w, self._series_d):
            n = max(w.shape[1], d.shape[1])
            pieces.append(np.concatenate([pad(w, n), pad(d, n)], axis=0))
        self.table = gaussian.CTable.from_series(pieces, self.n_nodes, 0.01 * self.check_tol)
        self.G = self.table.G
        self.error_estimate = max(self.error_estimate, self.table.error_estimate)
        T = self.q1.size
        self.coef_w = self.table.coef[:, :T]
        self.coef_d = self.table.coef[:, T:]

    # -- evaluation ----------------------------------------------------------------------
    def locate(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid index (with the piece offset) and offset in grid steps of every entry."""
        return self.table.locate(c)

    def eval(self, k: int, g: np.ndarray, dlt: np.ndarray, c: np.ndarray | None = None,
             want_w: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """(W, D) of table k at located entries; ``c`` supplies the sign of W for odd phi."""
        d = _horner_gather(self.coef_d[:, k], g, dlt)
        if not want_w:
            return None, d
        w = _horner_gather(self.coef_w[:, k], g, dlt)
        if self.odd and c is not None:
            np.copysign(w, c, out=w)
        return w, d


# ------------------------------------------------------------------------------------------
# Layer maps for a block of entries with per-row / per-column variances
# ------------------------------------------------------------------------------------------

def _lagrange(nodes: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Lagrange basis on ``nodes`` evaluated at t: shape (len(nodes), len(t))."""
    n = nodes.size
    out = np.ones((n, t.size))
    for i in range(n):
        for j in range(n):
            if j != i:
                out[i] *= (t - nodes[j]) / (nodes[i] - nodes[j])
    return out


_CACHE: "OrderedDict[tuple, TableSet]" = OrderedDict()
_CACHE_SIZE = 32


def _table_set(act: Activation, q1: tuple, q2: tuple) -> TableSet:
    """Tables for these variance pairs; small sets (a layer of normalised inputs) are kept in a
    small LRU cache, so repeating a computation with the same hyperparameters is cheap."""
    key = (act, q1, q2)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    ts = TableSet(act, np.array(q1), np.array(q2))
    if len(q1) <= 3:
        _CACHE[key] = ts
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return ts


def clear_cache() -> None:
    """Forget the cached tables (benchmarks time cold computations)."""
    _CACHE.clear()


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
        q_all = np.concatenate([np.ravel(q_rows), np.ravel(q_cols)])
        pos = q_all[q_all > 0]
        self.has_zero = bool(np.any(q_all == 0))
        if pos.size == 0:
            self.nodes = None
            return
        t = np.log(pos)
        lo, hi = float(t.min()), float(t.max())
        self.t_lo, self.t_hi = lo, hi
        if hi - lo <= self.EQUAL_TOL:  # one variance: W and D are functions of c alone
            self.uniform = True
            self.q_uniform = float(np.exp(0.5 * (lo + hi)))
        if self.degree is not None:  # W(q1, q2, c) = (q1 q2)^(a/2) W(1, 1, c): one table
            self.nodes = np.array([0.0])
            self.pairs = [(0, 0)]
            self.tables = _table_set(act, (1.0,), (1.0,))
            return
        if hi - lo <= self.EQUAL_TOL:
            self.nodes = np.array([0.5 * (lo + hi)])
            self.pairs = [(0, 0)]
            self.tables = _table_set(act, (float(np.exp(self.nodes[0])),), (float(np.exp(self.nodes[0])),))
            return
        n0 = max(1, _initial_tq_degree(hi - lo) // 2)  # the estimate is conservative
        for n in [m for m in _TQ_LEVELS if m >= n0]:
            self._setup(n)
            if self._verify() or n == _TQ_LEVELS[-1]:
                break

    def _setup(self, n: int) -> None:
        mid, half = 0.5 * (self.t_lo + self.t_hi), 0.5 * (self.t_hi - self.t_lo)
        self.nodes = mid + half * _cheb_points(n)
        qn = np.exp(self.nodes)
        self.pairs = [(i, j) for i in range(n + 1) for j in range(i, n + 1)]
        self.tables = _table_set(self.act, tuple(float(qn[i]) for i, _ in self.pairs),
                                 tuple(float(qn[j]) for _, j in self.pairs))

    def _verify(self) -> bool:
        """Compare with direct quadrature at variance pairs between the nodes."""
        lo, hi = self.t_lo, self.t_hi
        t1 = np.array([lo + 0.13 * (hi - lo), lo + 0.61 * (hi - lo), lo + 0.97 * (hi - lo)])
        t2 = np.array([lo + 0.89 * (hi - lo), lo + 0.61 * (hi - lo), lo + 0.02 * (hi - lo)])
        c = np.array([0.43, 0.91, -0.27])
        q1, q2 = np.exp(t1), np.exp(t2)
        w, d = self._eval_pairs(q1, q2, c)
        act = self.act
        order = QUAD_ORDER_KINKED if act.kinks else QUAD_ORDER
        w_ref = gaussian.expect2(act.fn, act.fn, q1, q2, c, act.kinks, order=order)
        d_ref = gaussian.expect2(act.d1, act.d1, q1, q2, c, act.kinks, order=order)
        sw = np.sqrt(gaussian.v_phi(act, q1) * gaussian.v_phi(act, q2)) + 1e-300
        sd = np.sqrt(gaussian.v_dphi(act, q1) * gaussian.v_dphi(act, q2)) + 1e-300
        err = max(float(np.max(np.abs(w - w_ref) / sw)), float(np.max(np.abs(d - d_ref) / sd)))
        self.interp_error = err
        return err <= self.tables.check_tol

    def _eval_pairs(self, q1, q2, c):
        """(W, D) at matching 1-D arrays (q1, q2, c) via the tables (no zero variances)."""
        l1 = _lagrange(self.nodes, np.log(q1))
        l2 = _lagrange(self.nodes, np.log(q2))
        return self._combine(l1, l2, np.asarray(c, float), elementwise=True)

    def _combine(self, l1, l2, c, elementwise=False, want_w=True):
        tabs = self.tables
        g, dlt = tabs.locate(c)
        w_out = np.zeros(c.shape) if want_w else None
        d_out = np.zeros(c.shape)
        for k, (i, j) in enumerate(self.pairs):
            w, d = tabs.eval(k, g, dlt, c, want_w)
            if len(self.pairs) == 1:
                return w, d
            if elementwise:
                wt = l1[i] * l2[j] + (l1[j] * l2[i] if i != j else 0.0)
            else:
                wt = l1[i][:, None] * l2[j][None, :]
                if i != j:
                    wt += l1[j][:, None] * l2[i][None, :]
            d *= wt
            d_out += d
            if want_w:
                w *= wt
                w_out += w
        return w_out, d_out

    def __call__(self, q_rows: np.ndarray, q_cols: np.ndarray, c: np.ndarray,
                 affine: tuple[float, float, float] = (1.0, 0.0, 1.0)
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(a W + b, a_d D) on the block c (rows x cols) with the block's row/column variances,
        for ``affine`` = (a, b, a_d).  With one table and one variance (normalised inputs) the
        affine map is folded into the table's coefficients: no extra pass over the block."""
        act = self.act
        a, b, ad = affine
        if self.nodes is None:  # every variance is zero
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
        l1 = _lagrange(self.nodes, np.log(np.where(zr, 1.0, q_rows)))
        l2 = _lagrange(self.nodes, np.log(np.where(zc, 1.0, q_cols)))
        w, d = self._combine(l1, l2, c)
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
        m_c = gaussian.expect1(act.fn, q_cols, act.kinks)
        md_c = gaussian.expect1(act.d1, q_cols, act.kinks)
        m_r = gaussian.expect1(act.fn, q_rows, act.kinks)
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
    n = _initial_tq_degree(width)
    return 40 * (n + 1) * (n + 2) // 2


def _initial_tq_degree(width: float) -> int:
    """Chebyshev degree in log q expected to reach 1e-12 for a log-variance range ``width``,
    assuming the maps are analytic within |Im log q| < pi/2 (true for tanh, erf-like phi)."""
    r = (0.5 * np.pi) / max(0.5 * width, 1e-300)
    rho = r + math.sqrt(r * r + 1.0)
    need = math.log(1e12) / math.log(rho)
    for m in _TQ_LEVELS:
        if m >= need:
            return m
    return _TQ_LEVELS[-1]


__all__ = ["TableSet", "TabulatedMaps", "QUAD_ORDER", "clear_cache", "homogeneity_degree"]


# ------------------------------------------------------------------------------------------
# Whole-network tables: for inputs of equal length the kernels are functions of c0 alone
# ------------------------------------------------------------------------------------------

def FunctionTable(f, tol: float = 1e-13, max_level: int = 6) -> gaussian.CTable:
    """A vector-valued function of the correlation c in [-1, 1] (``f`` maps a 1-D array of
    correlations to an array (n_out, len(c))), tabulated by gaussian.CTable.sample: calling
    the table on c gives the list of outputs."""
    return gaussian.CTable.sample(f, tol, max_level)
