"""The integration layer: every Gaussian expectation in meanfield is computed here.

Two rules, both vectorised over arrays of variances and correlations:

* ``expect1`` -- E[f(sqrt(q) z)], z ~ N(0, 1), by composite Gauss-Legendre quadrature on
  [-Z, Z] in z.  The panels are split at fixed points of z (the Gaussian's own scale) *and*
  at fixed points of the pre-activation u = sqrt(q) z (the activation's scale, including its
  kinks).  This keeps the rule accurate (<= 1e-12 relative for smooth activations) from
  q = 1e-4, where phi is probed only near 0, to q = 1e3, where tanh(sqrt(q) z) is a step on
  the z scale; piecewise activations (elu, selu, hard_tanh) are integrated panel by panel, so
  a kink never falls inside a panel.  Gauss-Hermite would need thousands of nodes there.
* ``expect2`` -- E[f(u) g(v)] for (u, v) centred Gaussian with variances q1, q2 and
  correlation c, as an iterated integral: v = sqrt(q2) (c z1 + sqrt(1 - c^2) z2); the inner
  integral over z2 is a 1-D Gaussian expectation of g with mean sqrt(q2) c z1 and standard
  deviation sqrt(q2 (1 - c^2)), split at the activation's scale points around that mean.
  c = +-1 are handled exactly (the inner integral collapses to g at a point).  Where the inner
  Gaussian is wide in u but its mean moves fast in z1 (q2 (1 - |c|) > 2, |c| > 1/2: large q,
  c -> +-1, what residual networks' distance recursion reads), the smoothed g is a step of width
  sqrt(1 - c^2) / |c| in z1; those points get outer panel edges at multiples of that width and
  the activation's scale down to 2^-4 (integrated apart, so other points pay nothing): tanh's
  1 - W/V at q = 4.5e7, 1 - c = 1e-6 is then within 1e-12 of mpmath (5.5e-2 without).
  expect1 also splits at |u| = 32, for exponential tails (sigmoid at q = 7e4: 5e-10 -> 1e-16).

The moments that the maps need (docs/theory.md §A0, "V/W transforms") are defined once, below,
with closed forms taken from the Activation when it carries them:

    v_phi(q)        = E[phi(sqrt q z)^2]                 (V_phi)
    v_dphi(q)       = E[phi'(sqrt q z)^2]                (V_phi')
    dv_phi(q)       = d V_phi / dq  = E[z phi phi'] / sqrt(q)
    e_ddphi_phi(q)  = E[phi''(sqrt q z) phi(sqrt q z)]  (= dV/dq - V_phi', Gaussian integration by parts)
    w_phi(q1,q2,c)  = E[phi(u) phi(v)]                   (W_phi)
    w_dphi(q1,q2,c) = E[phi'(u) phi'(v)]

NaN in any argument gives NaN in that position; no error is raised inside the vectorised code.

The one table facility is here too (docs/theory.md section 1): a spline in log q for the 1-D
moments of large arrays; ``CTable``, functions of c at fixed lengths in x = sqrt(1 - |c|)
(``CorrelationTable`` for maps.py, meanfield.kernels' whole-network tables); ``TableSet``, W and
D at a list of variance pairs on one CTable; ``LogQTable``, W and D for any pair of variances
in a range, by Chebyshev interpolation in (log q1, log q2) between TableSets (meanfield.kernels'
per-layer tables); ``QCTable``, a function of (q, c) over a wide range of q on a
stretched-angle grid (meanfield.residual's distance kernel).

Disk cache of the tables (issue 10).  A table is built once per activation and kept on disk, so
a later process reads it instead of integrating:

* Folder: ``$MEANFIELD_CACHE_DIR``, else ``$XDG_CACHE_HOME/meanfield``, else
  ``~/.cache/meanfield`` (:func:`cache_dir`); ``MEANFIELD_CACHE_DIR=off`` (or ``none``, ``0``,
  ``false``, ``no``) disables it.  The folder is safe to delete at any time.
* API: ``cached_arrays(kind, act, params, build)`` returns the dict of arrays ``build()`` makes,
  read from disk when a valid file holds them.  ``params`` (JSON) must name everything the
  values depend on besides the activation.  ``CTable.sample(..., cache=(kind, act, params))``
  does this for a sampled table.  :func:`activation_spec` is the activation's registry spec, or
  None for custom callables, which are never written.  :func:`cache_stats` counts builds,
  reads and rejected files (the tests use it).
* What is stored is what costs: the spline's piecewise polynomials (read back without
  scipy.interpolate), CTable.sample's Chebyshev series (CorrelationTable) and the node values of
  the kernels' TableSet (2-D quadratures).  CTable's Taylor grid is rebuilt from the series on
  every read: it is deterministic, so the values are bit-equal to a fresh build, and the grid
  can be a hundred times larger than the series.
* Safety: one ``.npz`` per table, named kind-spec-hash.  It holds its key (:func:`cache_key`:
  file format, package version, a digest of the sources that compute tables, kind, spec,
  params) and a SHA-256 of its arrays.  A file that does not load, holds another key or fails
  its checksum is rebuilt and replaced, never trusted.  Writes go to a temporary file in the
  same folder, then ``os.replace``.  A folder that cannot be written warns once, and the tables
  then stay in memory only.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import OrderedDict
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from .activations import Activation

ArrayLike = "np.typing.ArrayLike"

# Half-width of the integration window in z.  The Gaussian mass outside |z| > 10 is 1.5e-23,
# negligible against 1e-16 even for integrands that grow like a polynomial in z.
_ZMAX = 10.0
# Panel edges on the Gaussian's scale (z units)...
_Z_EDGES = np.array([0.0, 1.0, 2.2, 3.6, 5.4, 7.6, _ZMAX])
_Z_EDGES = np.concatenate([-_Z_EDGES[:0:-1], _Z_EDGES])
# ...and on the activation's scale (pre-activation units); mapped to z = u / sqrt(q) per point.
_U_EDGES = np.array([1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0, 16.0])
_U_EDGES = np.concatenate([-_U_EDGES[::-1], [0.0], _U_EDGES])
# expect1 also splits at |u| = 32: activations with exponential tails on the activation's scale
# (sigmoid: 1 - phi ~ e^-u) still contribute 1e-7 at |u| = 16, too much for one coarse panel.
_TAIL_EDGES = (-32.0, 32.0)
_GL_ORDER = 10
_CHUNK = 1 << 22  # number of quadrature nodes evaluated at once (memory bound)


@lru_cache(maxsize=8)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return x, w


def _panel_edges(scale: np.ndarray, shift: np.ndarray, kinks: tuple[float, ...]) -> np.ndarray:
    """Sorted panel edges in z for each point, shape (n, k).

    The activation is evaluated at u = shift + scale * z, so a feature of phi at u0 sits at
    z = (u0 - shift) / scale.  Edges outside the window are clipped to its ends, which gives
    zero-width panels that contribute nothing; this keeps the shape fixed for vectorisation.
    """
    u_edges = np.concatenate([_U_EDGES, np.asarray(kinks, dtype=float)])
    with np.errstate(divide="ignore", invalid="ignore"):
        zu = (u_edges[None, :] - shift[:, None]) / scale[:, None]
    zu = np.where(np.isfinite(zu), zu, _ZMAX)
    zu = np.clip(zu, -_ZMAX, _ZMAX)
    edges = np.concatenate([np.broadcast_to(_Z_EDGES, (scale.shape[0], _Z_EDGES.size)), zu], axis=1)
    edges.sort(axis=1)
    return edges


def _nodes(scale: np.ndarray, shift: np.ndarray, kinks: tuple[float, ...],
           order: int = _GL_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z (n, m) and weights (n, m) of the composite rule for E over z ~ N(0, 1)."""
    x, w = _gauss_legendre(order)
    edges = _panel_edges(scale, shift, kinks)
    a, b = _prune(edges[:, :-1], edges[:, 1:])
    half = 0.5 * (b - a)
    mid = 0.5 * (b + a)
    z = (mid[:, :, None] + half[:, :, None] * x).reshape(scale.shape[0], -1)
    wt = (half[:, :, None] * w).reshape(scale.shape[0], -1)
    wt = wt * np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    return z, wt


def _prune(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop panel columns that have zero width for every point (clipped edges); for small batches
    (scalar calls) this removes most of the template's unused panels."""
    keep = np.any(b - a > 0, axis=0)
    return a[:, keep], b[:, keep]


def _chunks(n: int, per_point: int):
    step = max(1, _CHUNK // max(per_point, 1))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def expect1(f: Callable[[np.ndarray], np.ndarray], q, kinks: tuple[float, ...] = (),
            order: int = _GL_ORDER) -> np.ndarray:
    """E[f(sqrt(q) z)] for z ~ N(0, 1), elementwise over the array q (q >= 0).

    ``f`` maps an array of pre-activations u to an array of the same shape; ``kinks`` lists
    the u where f or its first derivatives are not smooth, so no panel straddles them.
    """
    q = np.asarray(q, dtype=float)
    shape = q.shape
    flat = q.reshape(-1)
    out = np.full(flat.shape, np.nan)
    ok = np.isfinite(flat) & (flat >= 0)
    idx = np.flatnonzero(ok)
    if idx.size:
        splits = tuple(kinks) + _TAIL_EDGES
        per = (_Z_EDGES.size + _U_EDGES.size + len(splits)) * order
        for sl in _chunks(idx.size, per):
            qq = flat[idx[sl]]
            s = np.sqrt(qq)
            z, wt = _nodes(s, np.zeros_like(s), splits, order)
            out[idx[sl]] = np.sum(wt * f(s[:, None] * z), axis=1)
        zero = idx[flat[idx] == 0]
        if zero.size:
            # q -> 0 limit: f(sqrt(q) z) -> f(0+) for z > 0 and f(0-) for z < 0, so a kink at 0
            # contributes the average of the one-sided values (not f evaluated at the kink).
            tiny = np.array([-1e-300, 1e-300])
            out[zero] = 0.5 * float(np.sum(f(tiny))) if 0.0 in kinks else float(f(np.zeros(1))[0])
    return out.reshape(shape)


# Outer panel edges for a wide inner smoothing (see expect2): multiples of the inner width sd,
# in pre-activation units, around each feature of g (0 and the kinks), and the activation's own
# scale, 2^-4 ... 2^5.
_SMOOTH_SPLITS = np.array([0.3, 0.6, 1.25, 2.0, 3.0, 4.2, 5.6, 7.5])
_SMOOTH_SPLITS = np.concatenate([-_SMOOTH_SPLITS[::-1], _SMOOTH_SPLITS])
_WIDE_U_SPLITS = 2.0 ** np.arange(-4, 6)
_WIDE_U_SPLITS = np.concatenate([-_WIDE_U_SPLITS[::-1], _WIDE_U_SPLITS])


def _wide_smoothing(q2: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Points where the inner Gaussian is wide in u but its mean moves fast in z1:
    q2 (1 - |c|) > 2 with |c| > 1/2.  There the smoothed g is a step of width
    sqrt(1 - c^2) / |c| << 1 in z1, which the default outer panels do not resolve."""
    m = 1.0 - np.abs(c)
    return (q2 * m > 2.0) & (m < 0.5)


def expect2(f: Callable[[np.ndarray], np.ndarray], g: Callable[[np.ndarray], np.ndarray],
            q1, q2, c, kinks: tuple[float, ...] = (), order: int = 8) -> np.ndarray:
    """E[f(u) g(v)] for (u, v) centred Gaussian, Var u = q1, Var v = q2, corr(u, v) = c.

    Iterated composite quadrature (see the module docstring); broadcasts q1, q2, c.
    """
    q1, q2, c = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (q1, q2, c)))
    shape = q1.shape
    q1f, q2f, cf = q1.reshape(-1), q2.reshape(-1), c.reshape(-1)
    out = np.full(q1f.shape, np.nan)
    ok = (np.isfinite(q1f) & np.isfinite(q2f) & np.isfinite(cf) & (q1f >= 0) & (q2f >= 0)
          & (np.abs(cf) <= 1))
    wide = ok & _wide_smoothing(q2f, cf)
    # The two kinds of points get different panel templates: integrated apart, so that the
    # extra panels of the wide points cost nothing elsewhere.
    for idx, is_wide in ((np.flatnonzero(ok & ~wide), False), (np.flatnonzero(wide), True)):
        if idx.size == 0:
            continue
        n_edge = _Z_EDGES.size + 2 * _U_EDGES.size + 14 * len(kinks)
        if is_wide:
            n_edge += (1 + 2 * len(kinks)) * _SMOOTH_SPLITS.size + 3 * _WIDE_U_SPLITS.size
        per = (n_edge * order) ** 2
        for sl in _chunks(idx.size, per):
            i = idx[sl]
            out[i] = _expect2_points(f, g, np.sqrt(q1f[i]), np.sqrt(q2f[i]), cf[i], tuple(kinks),
                                     order, is_wide)
    return out.reshape(shape)


def _expect2_points(f, g, s1, s2, cc, kinks, order, wide):
    z1, w1, m, sd = _outer_rule(s1, s2, cc, kinks, order, wide)
    if wide:
        kinks = kinks + tuple(_WIDE_U_SPLITS.tolist())
    # Inner rule in z2 for every (point, z1): g(m + sd z2), m = s2 c z1, sd = s2 sqrt(1-c^2).
    sdb = np.broadcast_to(sd, m.shape)
    inner = _inner_expect(g, m.reshape(-1), sdb.reshape(-1), kinks, order).reshape(m.shape)
    return np.sum(w1 * f(s1[:, None] * z1) * inner, axis=1)


def _outer_rule(s1, s2, cc, kinks, order, wide):
    """expect2's outer rule in z1 per point: nodes z1, weights w1 (Gaussian density included),
    the inner Gaussian's means m = s2 c z1 and its standard deviation sd = s2 sqrt(1 - c^2)."""
    sc = np.sqrt(np.clip((1.0 - cc) * (1.0 + cc), 0.0, None))
    # Outer rule in z1: resolve f's features (scale s1) and the features of the smoothed g
    # as a function of z1 (scale s2 |c|).
    zero = np.zeros_like(s1)
    inner_kinks = kinks
    if wide:
        # the activation's own scale finer than _U_EDGES, on both rules
        kinks = kinks + tuple(_WIDE_U_SPLITS.tolist())
    e1 = _panel_edges(s1, zero, kinks)
    sym = tuple(kinks) + tuple(-k for k in kinks)
    e2 = _panel_edges(s2 * np.abs(cc), zero, sym)
    parts = [e1, e2[:, 1:-1]]
    base = (s2 * np.abs(cc))[:, None]
    sd = (s2 * sc)[:, None]
    spread = None
    if wide:
        # g smoothed by the wide inner Gaussian (sd = s2 sqrt(1 - c^2) in u) is a smoothed
        # step of width sd / base in z1 around each of g's features (0 and the kinks)
        feats = (0.0,) + tuple(inner_kinks) + tuple(-k for k in inner_kinks)
        spread = _SMOOTH_SPLITS
    elif inner_kinks:
        # g smoothed by the inner Gaussian has its kink spread over |s2 c z1 - kink| ~ sd:
        # put outer edges there, or c -> 1 loses ~sqrt(1 - c) terms.
        feats = tuple(inner_kinks) + tuple(-k for k in inner_kinks)
        spread = np.array([-8.0, -3.0, -1.0, 1.0, 3.0, 8.0])
    if spread is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            e3 = np.concatenate([(k + spread[None, :] * sd) / base for k in feats], axis=1)
        parts.append(np.clip(np.where(np.isfinite(e3), e3, _ZMAX), -_ZMAX, _ZMAX))
    edges = np.sort(np.concatenate(parts, axis=1), axis=1)
    x, w = _gauss_legendre(order)
    a, b = _prune(edges[:, :-1], edges[:, 1:])
    half, mid = 0.5 * (b - a), 0.5 * (b + a)
    n = s1.size
    z1 = (mid[:, :, None] + half[:, :, None] * x).reshape(n, -1)
    w1 = (half[:, :, None] * w).reshape(n, -1) * np.exp(-0.5 * z1 * z1) / np.sqrt(2 * np.pi)
    return z1, w1, (s2 * cc)[:, None] * z1, sd


def expect2_inner(fs, g_inner, q1, q2, c, kinks: tuple[float, ...] = (), order: int = 8) -> np.ndarray:
    """E[f_i(u) g_i(v)] for each pair, with expect2's outer rule and the inner expectation in
    closed form: ``g_inner(m, sd)`` returns the arrays E[g_i(m + sd z)] (z ~ N(0, 1), sd > 0).
    One outer rule serves every pair; 1-D arrays q1, q2, c; result shape (len(fs), n)."""
    q1, q2, c = (np.asarray(a, dtype=float).reshape(-1) for a in np.broadcast_arrays(q1, q2, c))
    out = np.full((len(fs), q1.size), np.nan)
    ok = np.isfinite(q1) & np.isfinite(q2) & np.isfinite(c) & (q1 >= 0) & (q2 >= 0) & (np.abs(c) < 1)
    wide = _wide_smoothing(q2, c)
    for idx, is_wide in ((np.flatnonzero(ok & ~wide), False), (np.flatnonzero(ok & wide), True)):
        n_edge = _Z_EDGES.size + 2 * _U_EDGES.size + 14 * len(kinks) + (40 if is_wide else 0)
        for sl in _chunks(idx.size, 4 * n_edge * order):
            i = idx[sl]
            s1 = np.sqrt(q1[i])
            z1, w1, m, sd = _outer_rule(s1, np.sqrt(q2[i]), c[i], tuple(kinks), order, is_wide)
            inner = g_inner(m, np.broadcast_to(sd, m.shape))
            u = s1[:, None] * z1
            for k, f in enumerate(fs):
                out[k, i] = np.sum(w1 * f(u) * inner[k], axis=1)
    return out


def _inner_expect(g, mean: np.ndarray, sd: np.ndarray, kinks, order) -> np.ndarray:
    """E[g(mean + sd z)] elementwise; sd == 0 gives g(mean) exactly."""
    res = np.empty_like(mean)
    point = sd <= 0
    if point.any():
        res[point] = g(mean[point])
    spread = ~point
    if spread.any():
        idx = np.flatnonzero(spread)
        per = (_Z_EDGES.size + _U_EDGES.size + len(kinks)) * order
        for sl in _chunks(idx.size, per):
            j = idx[sl]
            z, wt = _nodes(sd[j], mean[j], kinks, order)
            res[j] = np.sum(wt * g(mean[j, None] + sd[j, None] * z), axis=1)
    return res


# --------------------------------------------------------------------------------------------
# The moments used by the maps.  Closed forms when the Activation carries them, else quadrature.
# --------------------------------------------------------------------------------------------

def _use_closed(act: "Activation", name: str, method: str) -> bool:
    # "direct" is "auto" without the spline table: a result that does not depend on which tables
    # earlier calls happened to build (root finders that need full precision use it).
    if method not in ("auto", "closed", "quad", "direct"):
        from .errors import DomainError
        raise DomainError(f"method must be 'auto', 'direct', 'closed' or 'quad', got {method!r}")
    has = act.closed_forms.get(name) is not None
    if method == "closed" and not has:
        from .errors import DomainError
        raise DomainError(f"activation {act.name!r} has no closed form for {name}")
    return has and method != "quad"


def _need(act: "Activation", attr: str, what: str):
    fn = getattr(act, attr)
    if fn is None:
        from .errors import DomainError
        raise DomainError(f"activation {act.name!r} has no {what}; {act.missing_reason or ''}".rstrip("; "))
    return fn


def _nan_guard(out, *args):
    """NaN in -> NaN out for closed forms (they may otherwise raise or return numbers)."""
    bad = np.zeros(np.broadcast(*args).shape, dtype=bool)
    for a in args:
        bad |= ~np.isfinite(np.asarray(a, dtype=float))
    out = np.asarray(out, dtype=float)
    if bad.any():
        out = np.where(bad, np.nan, out)
    return out


# Large arrays of q (phase-diagram grids, >= 2048 points) read the 1-D moments from a quintic
# spline in log q, tabulated once per activation by the quadrature above.  Step 0.01 in log q
# keeps the spline within ~1e-13 relative of the quadrature (tests/test_gaussian.py checks it).
_TABLE_MIN_SIZE = 2048
_TABLE_LOGQ = (np.log(1e-6), np.log(1e6))
_TABLE_STEP = 0.01


class _LogQSpline:
    """A quintic interpolating spline in x = log q as its piecewise polynomials (breaks, coef):
    read with numpy alone (a search and a Horner step), so a table read from the disk cache
    needs no scipy.interpolate."""

    def __init__(self, breaks: np.ndarray, coef: np.ndarray):
        self.breaks, self.coef = breaks, coef  # breaks: (m + 1,), coef: (6, m), highest power first
        self.lo, self.hi = float(breaks[0]), float(breaks[-1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        i = np.clip(np.searchsorted(self.breaks, x, side="right") - 1, 0, self.coef.shape[1] - 1)
        dx = x - self.breaks[i]
        out = self.coef[0, i]
        for j in range(1, self.coef.shape[0]):
            out = out * dx + self.coef[j, i]
        return out


def _build_spline(act: "Activation", name: str) -> dict:
    from scipy.interpolate import PPoly, make_interp_spline

    x = np.arange(_TABLE_LOGQ[0], _TABLE_LOGQ[1] + _TABLE_STEP / 2, _TABLE_STEP)
    y = _QUAD[name](act, np.exp(x))
    if not np.all(np.isfinite(y)):  # a moment past the float range (elu:-1e308): no table
        return {"breaks": np.zeros(0), "coef": np.zeros((6, 0))}
    pp = PPoly.from_spline(make_interp_spline(x, y, k=5))
    keep = np.flatnonzero(np.diff(pp.x) > 0)  # the repeated end knots give empty pieces
    return {"breaks": np.append(pp.x[keep], pp.x[-1]), "coef": np.ascontiguousarray(pp.c[:, keep])}


@lru_cache(maxsize=64)
def _table(act: "Activation", name: str) -> _LogQSpline | None:
    params = {"moment": name, "logq": list(_TABLE_LOGQ), "step": _TABLE_STEP, "degree": 5}
    z = cached_arrays("spline", act, params, lambda: _build_spline(act, name))
    return _LogQSpline(z["breaks"], z["coef"]) if z["breaks"].size else None


def _table_built(act: "Activation", name: str) -> bool:
    try:
        return _BUILT.get((id(act), name)) is act
    except TypeError:
        return False


_BUILT: dict = {}


def _tabulated(act: "Activation", name: str, q: np.ndarray, method: str) -> np.ndarray:
    # Build the table for a big array; once built, mid-size arrays (a root finder's shrinking
    # active set) use it too.  Small and scalar calls always integrate directly.
    if method == "auto" and (q.size >= _TABLE_MIN_SIZE or (q.size >= 64 and _table_built(act, name))):
        _BUILT[(id(act), name)] = act
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log(q)
        inside = (x >= _TABLE_LOGQ[0]) & (x <= _TABLE_LOGQ[1])
        tab = _table(act, name) if inside.mean() > 0.5 else None
        if tab is not None:
            # the grid's last node, log q = 13.8145, is short of log 1e6: read only between nodes
            inside &= x <= tab.hi
            out = np.empty(q.shape)
            out[inside] = tab(x[inside])
            if (~inside).any():
                out[~inside] = _QUAD[name](act, q[~inside])
            return out
    return _QUAD[name](act, q)


def _quad_v(act, q):
    fn = act.fn
    return expect1(lambda u: fn(u) ** 2, q, act.kinks)


def _quad_vd(act, q):
    d1 = _need(act, "d1", "derivative")
    return expect1(lambda u: d1(u) ** 2, q, act.kinks)


def _quad_dv(act, q):
    fn, d1 = act.fn, _need(act, "d1", "derivative")
    if act.d2 is not None and not act.kinks:
        d2 = act.d2
        return expect1(lambda u: d1(u) ** 2 + fn(u) * d2(u), q, act.kinks)
    qs = np.where(q > 0, q, 1.0)
    # E[z f(sqrt(q) z)] / sqrt(q) = E[u f(u)] / q with f = phi phi'.
    val = expect1(lambda u: u * fn(u) * d1(u), qs, act.kinks) / qs
    return np.where(q > 0, val, np.where(q == 0, _at_zero_slope(act), np.nan))


_QUAD = {"v": _quad_v, "vd": _quad_vd, "dv": _quad_dv}


def m_phi(act: "Activation", q, method: str = "auto") -> np.ndarray:
    """M_phi(q) = E[phi(sqrt(q) z)], the channel mean an activation adds (docs/theory.md §A0): the
    closed form ``m`` where the activation has one (a power at a kink converges only
    algebraically under panel quadrature: E[max(0, z)^0.75] is 9e-7 off), else quadrature."""
    q = np.asarray(q, dtype=float)
    if act.odd:
        return np.where(np.isnan(q), np.nan, 0.0 * q)
    if _use_closed(act, "m", method):
        with np.errstate(all="ignore"):
            return _nan_guard(act.closed_forms["m"](q), q)
    return expect1(act.fn, q, act.kinks)


def v_phi(act: "Activation", q, method: str = "auto") -> np.ndarray:
    """V_phi(q) = E[phi(sqrt(q) z)^2] (docs/theory.md §A0)."""
    q = np.asarray(q, dtype=float)
    if _use_closed(act, "v", method):
        with np.errstate(all="ignore"):
            return _nan_guard(act.closed_forms["v"](q), q)
    return _tabulated(act, "v", q, method)


def v_dphi(act: "Activation", q, method: str = "auto") -> np.ndarray:
    """V_phi'(q) = E[phi'(sqrt(q) z)^2] (docs/theory.md §A0); sigma_w2 * V_phi'(q*) = chi_1."""
    q = np.asarray(q, dtype=float)
    if _use_closed(act, "vd", method):
        with np.errstate(all="ignore"):
            return _nan_guard(act.closed_forms["vd"](q), q)
    _need(act, "d1", "derivative")
    return _tabulated(act, "vd", q, method)


def dv_phi(act: "Activation", q, method: str = "auto") -> np.ndarray:
    """dV_phi/dq = E[z phi(sqrt q z) phi'(sqrt q z)] / sqrt(q): the length map's slope / sigma_w2.

    Written with phi and phi' only, so it holds for activations with kinks (docs/theory.md §A1.2/1.4:
    chi_1 + sigma_w2 E[phi'' phi] for smooth phi).  At q = 0 it is phi'(0)^2 + phi(0) phi''(0).
    """
    q = np.asarray(q, dtype=float)
    if _use_closed(act, "dv", method):
        with np.errstate(all="ignore"):
            return _nan_guard(act.closed_forms["dv"](q), q)
    _need(act, "d1", "derivative")
    return _tabulated(act, "dv", q, method)


def _at_zero_slope(act: "Activation") -> float:
    d1 = act.d1
    f0 = float(act.fn(np.array([0.0]))[0])
    # One-sided derivatives average at a kink at 0, which is what the Gaussian limit sees.
    h = 1e-7
    dp = float(d1(np.array([h]))[0])
    dm = float(d1(np.array([-h]))[0])
    val = 0.5 * (dp * dp + dm * dm)
    if act.d2 is not None and f0 != 0.0:
        val += f0 * 0.5 * float(act.d2(np.array([h]))[0] + act.d2(np.array([-h]))[0])
    return val


def e_ddphi_phi(act: "Activation", q, method: str = "auto") -> np.ndarray:
    """E[phi''(sqrt q z) phi(sqrt q z)] (docs/theory.md §A1.2), = dV/dq - V_phi' by Gaussian integration by
    parts; for kinked activations this includes the delta terms of phi''."""
    q = np.asarray(q, dtype=float)
    if _use_closed(act, "vdd", method):
        with np.errstate(all="ignore"):
            return _nan_guard(act.closed_forms["vdd"](q), q)
    if act.d2 is not None and not act.kinks:
        fn, d2 = act.fn, act.d2
        return expect1(lambda u: fn(u) * d2(u), q, act.kinks)
    return dv_phi(act, q, method) - v_dphi(act, q, method)


def w_phi(act: "Activation", q1, q2, c, method: str = "auto") -> np.ndarray:
    """W_phi(q1, q2, c) = E[phi(u) phi(v)], Var u = q1, Var v = q2, corr c (docs/theory.md §A0)."""
    if _use_closed(act, "w", method):
        with np.errstate(all="ignore"):
            return _nan_guard(act.closed_forms["w"](np.asarray(q1, float), np.asarray(q2, float),
                                                    np.asarray(c, float)), q1, q2, c)
    return expect2(act.fn, act.fn, q1, q2, c, act.kinks)


def w_dphi(act: "Activation", q1, q2, c, method: str = "auto") -> np.ndarray:
    """E[phi'(u) phi'(v)] = dW_phi/dq12 (Price identity, docs/theory.md §A0)."""
    if _use_closed(act, "wd", method):
        with np.errstate(all="ignore"):
            return _nan_guard(act.closed_forms["wd"](np.asarray(q1, float), np.asarray(q2, float),
                                                     np.asarray(c, float)), q1, q2, c)
    d1 = _need(act, "d1", "derivative")
    return expect2(d1, d1, q1, q2, c, act.kinks)


__all__ = ["expect1", "expect2", "v_phi", "v_dphi", "dv_phi", "e_ddphi_phi", "w_phi", "w_dphi", "CTable",
           "QCTable"]


def _hermite_tail(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s_{n-1}, s_n, sum_{k<n} s_k^2) at x for s_k = p_k(x) e^{-x^2/4}, p_k the orthonormal
    Hermite polynomials of N(0, 1) (bounded, like _hermite_basis's recurrence: no overflow)."""
    pm = np.exp(-0.25 * x * x)
    p = x * pm
    acc = pm * pm + p * p
    for k in range(1, n - 1):
        pm, p = p, (x * p - math.sqrt(k) * pm) / math.sqrt(k + 1)
        acc += p * p
    return p, (x * p - math.sqrt(n - 1) * pm) / math.sqrt(n), acc


@lru_cache(maxsize=8)
def _hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for E over z ~ N(0, 1).

    scipy's nodes (~0.3 s to import scipy.special; numpy's hermegauss is NaN at n = 512) polished
    by a Newton step on p_n, and the weights by Christoffel's 1 / sum_{k<n} p_k(x)^2: against
    40-digit nodes and weights (mpmath) this is 1e-14 or better where scipy's weights are off by
    up to 1e-12 (n = 128, outer nodes), and from n ~ 150 on (its asymptotic nodes) E[z^2] is off
    by 1.1e-14 (n = 256), against 2e-16 polished (issue 10, measured)."""
    from scipy.special import roots_hermitenorm

    x = roots_hermitenorm(n)[0]
    if n < 2:
        return x, np.ones(n)
    with np.errstate(under="ignore", divide="ignore", invalid="ignore"):
        # one Newton step (p_n' = sqrt(n) p_{n-1}): scipy's nodes are within ~6e-14, so the step
        # leaves ~1e-27 (quadratic); the outermost nodes of n >~ 1000, where the scaled
        # polynomials underflow, keep scipy's value (their weights underflow to 0 anyway)
        s1, sn, _ = _hermite_tail(x, n)
        x = np.where(s1 != 0, x - sn / (math.sqrt(n) * s1), x)
        x = 0.5 * (x - x[::-1])  # the rule is symmetric
        _, _, acc = _hermite_tail(x, n)
        return x, np.where(acc > 0, np.exp(-0.5 * x * x) / acc, 0.0)


def expect2_hermite(f: Callable[[np.ndarray], np.ndarray], g: Callable[[np.ndarray], np.ndarray],
                    q1, q2, c, n: int = 40) -> np.ndarray:
    """E[f(u) g(v)] by an n x n Gauss-Hermite product rule: the cheap rule for pictures.

    About 1e-8 relative for smooth activations at q <= 10, but only ~1e-4 for kinked ones and
    it degrades at large q; used only where a figure needs many points (phase diagrams' xi_c
    contours in the chaotic phase).  Everything else uses :func:`expect2`.
    """
    q1, q2, c = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (q1, q2, c)))
    x, w = _hermite(n)
    s1 = np.sqrt(q1)[..., None, None]
    s2 = np.sqrt(q2)[..., None, None]
    cc = c[..., None, None]
    sc = np.sqrt(np.clip((1 - cc) * (1 + cc), 0, None))
    z1, z2 = x[:, None], x[None, :]
    vals = f(s1 * z1) * g(s2 * (cc * z1 + sc * z2))
    return np.einsum("...ij,i,j->...", vals, w, w)


class CorrelationTable:
    """c -> (W_phi(q, q, c), E[phi'(u) phi'(v)]) at one fixed length q, for many cheap calls: a
    :class:`CTable` (x = sqrt(1 - |c|), sampled by :func:`w_phi` / :func:`w_dphi` until its
    Chebyshev tail is below 1e-13 of the largest value).  Used where a recursion needs
    thousands of calls at a converged length (maps.py's depth iterations)."""

    def __init__(self, act: "Activation", q: float, derivative: bool = True):
        self.q = float(q)
        self.act = act
        self.derivative = derivative
        fns = [w_phi] + ([w_dphi] if derivative else [])
        qq = self.q

        def f(c):
            return np.stack([np.asarray(fn(act, qq, qq, c), float) for fn in fns])

        # A kernel only resolved to ~1e-10 (kinked activations, deep in the tails) stops at the
        # last Chebyshev level: its warning is about the table, not about the user's input.
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self._tab = CTable.sample(f, tol=1e-13, max_level=4,
                                      cache=("correlation", act, {"q": self.q, "derivative": derivative}))

    def _read(self, k: int, c) -> np.ndarray:
        if isinstance(c, float):
            return self._tab.scalar(k, min(1.0, max(-1.0, c)))
        c = np.clip(np.asarray(c, float), -1.0, 1.0)
        flat = np.atleast_1d(c).reshape(-1)
        g, dl = self._tab.locate(flat)
        return self._tab.gather(k, g, dl).reshape(c.shape)

    def w(self, c) -> np.ndarray:
        """W_phi(q, q, c)."""
        return self._read(0, c)

    def wd(self, c) -> np.ndarray:
        """E[phi'(u) phi'(v)] at lengths q, correlation c."""
        if not self.derivative:
            raise ValueError("table built without the derivative kernel")
        return self._read(1, c)


# --------------------------------------------------------------------------------------------
# The table facility.  In q: the spline in log q above (_table, read by v_phi / v_dphi / dv_phi
# for large arrays).  In c: CTable, functions of the correlation tabulated in x = sqrt(1 - |c|)
# (meanfield.kernels' per-layer and whole-network tables are built on it).
# --------------------------------------------------------------------------------------------

#: 1 - |c| below this counts as 0 (c = +-1): a rounded correlation is not known better, and
#: sqrt(1 - |c|) would turn 1e-16 into 1e-8
CTABLE_SNAP = 8 * np.finfo(float).eps
CTABLE_TAYLOR_DEGREE = 4
_CTABLE_GRID_LEVELS = tuple(2 ** k for k in range(10, 18))


def cheb_points(n: int) -> np.ndarray:
    """Chebyshev extrema y_k = cos(pi k / n), k = 0..n (from +1 down to -1)."""
    return np.cos(np.pi * np.arange(n + 1) / n)


def cheb_coef(values: np.ndarray) -> np.ndarray:
    """Chebyshev coefficients of the interpolant through values at cheb_points(n) (last axis)."""
    from scipy.fft import dct

    n = values.shape[-1] - 1
    a = dct(values, type=1, axis=-1) / n
    a[..., 0] *= 0.5
    a[..., -1] *= 0.5
    return a


def _taylor_table(coefs: np.ndarray, yg: np.ndarray, hy: float, p: int) -> np.ndarray:
    """Scaled Taylor coefficients f^(j)(y_g) hy^j / j!, j = 0..p, of the Chebyshev series
    ``coefs`` (rows = outputs) at the grid points yg: shape (p + 1, outputs, len(yg))."""
    from numpy.polynomial import chebyshev as C

    cur, fact, cols = coefs.T, 1.0, []
    for j in range(p + 1):
        if j:
            cur = C.chebder(cur)
            fact *= j
        cols.append(C.chebval(yg, cur) * (hy ** j / fact))
    return np.stack(cols)


def _horner(coefs: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = coefs[-1].copy()
    for j in range(coefs.shape[0] - 2, -1, -1):
        out *= x
        out += coefs[j]
    return out


def horner_gather(coefs: np.ndarray, g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_j coefs[j][g] x^j with one gather per coefficient (coefs: (p + 1, n)); the indices
    of CTable.locate are in range by construction, so mode="clip" skips numpy's bounds errors."""
    out = np.take(coefs[-1], g, mode="clip")
    tmp = np.empty_like(out)
    for j in range(coefs.shape[0] - 2, -1, -1):
        out *= x
        np.take(coefs[j], g, out=tmp, mode="clip")
        out += tmp
    return out


class CTable:
    """Functions of the correlation c in [-1, 1], tabulated in x = sqrt(1 - |c|): THE table in c.

    The variable resolves what happens at c -> +-1 (a function analytic in c is analytic in x,
    and kernels behaving like sqrt(1 - c), kinked activations' and relu's derivative kernel,
    become smooth).  Piece 0 holds c >= 0 (c = 1 - x^2), piece 1 (absent for ``pieces=1``,
    odd or even functions read at |c|) holds c < 0 (c = x^2 - 1).

    Construction: Chebyshev series in y = 2 x - 1 per piece (:meth:`from_series`, or
    :meth:`sample`, which samples a function on nested Chebyshev nodes until its trailing
    coefficients fall below ``tol``), re-expanded as degree-4 Taylor polynomials about the
    points of a uniform x grid (2^10 ... 2^17 intervals, refined until they reproduce the
    series at 4096 random points).  Lookup: :meth:`locate` (a square root, a rounding, no
    search) and :meth:`gather` (five gathers and a Horner step per output).

    ``coef`` has shape (p + 1, n_out, pieces * (G + 1)): the j-th Taylor coefficient (in units
    of the grid step) of output k about grid point g, piece 1 at offset G + 1.
    """

    def __init__(self, coef: np.ndarray, G: int, pieces: int, n_nodes: int, error_estimate: float):
        self.coef, self.G, self.pieces = coef, G, pieces
        self.n_nodes, self.error_estimate = n_nodes, error_estimate

    @classmethod
    def from_series(cls, series: list, n_nodes: int, tol: float, scale: list | None = None,
                    seed: int = 12345) -> "CTable":
        """The table of Chebyshev series ``series[piece]`` (shape (n_out, n + 1), in y), whose
        Taylor grid reproduces them to ``tol`` relative to ``scale[piece]`` (per output; by
        default the largest |value| at the test points)."""
        from numpy.polynomial import chebyshev as C

        rng = np.random.default_rng(seed)
        ytest = rng.uniform(-1.0, 1.0, 4096)
        refs = [C.chebval(ytest, a.T) for a in series]
        if scale is None:
            scale = [np.max(np.abs(r), axis=1) + 1e-300 for r in refs]
        p = CTABLE_TAYLOR_DEGREE
        for G in _CTABLE_GRID_LEVELS:
            if G < 2 * n_nodes and G != _CTABLE_GRID_LEVELS[-1]:
                continue
            yg = np.linspace(-1.0, 1.0, G + 1)
            hy = 2.0 / G  # grid step in y
            tabs = [_taylor_table(a, yg, hy, p) for a in series]  # each (p + 1, n_out, G + 1)
            u = (ytest + 1.0) / hy
            g = np.rint(u).astype(np.intp)
            dlt = u - g
            err = max(float(np.max(np.abs(_horner(tab[:, :, g], dlt) - ref) / sc[:, None]))
                      for tab, ref, sc in zip(tabs, refs, scale))
            if err <= tol or G == _CTABLE_GRID_LEVELS[-1]:
                break
        coef = np.ascontiguousarray(np.concatenate(tabs, axis=2))
        return cls(coef, G, len(series), n_nodes, err)

    @classmethod
    def sample(cls, f: Callable[[np.ndarray], np.ndarray], tol: float = 1e-13, max_level: int = 6,
               pieces: int = 2, cache: "tuple[str, Activation, dict] | None" = None) -> "CTable":
        """Tabulate ``f`` (a 1-D array of correlations -> an array (n_out, len(c))): the
        Chebyshev degree doubles (17 ... 16 2^max_level + 1 nodes per piece, nested) until the
        trailing coefficients of every output fall below ``tol`` times its largest value.

        ``cache`` = (kind, activation, params) keys the Chebyshev series in the disk cache
        (:func:`cached_arrays`; params must name everything ``f`` depends on besides the
        activation); the Taylor grid is rebuilt from them (deterministic, bit-equal)."""
        import warnings

        def build() -> dict:
            coefs, scale, tail, n = cls._sample_series(f, tol, max_level, pieces)
            return {"coefs": np.stack(coefs), "scale": scale, "tail": np.float64(tail),
                    "n": np.int64(n)}

        if cache is None:
            z = build()
        else:
            kind, act, params = cache
            z = cached_arrays(kind, act, {**params, "tol": tol, "max_level": max_level,
                                          "pieces": pieces}, build)
        tail, n = float(z["tail"]), int(z["n"])
        if tail > tol:
            warnings.warn(f"kernel table did not converge at {n + 1} nodes (tail {tail:.1e})",
                          RuntimeWarning, stacklevel=3)
        tab = cls.from_series(list(z["coefs"]), n + 1, tol, [z["scale"]] * pieces, seed=54321)
        tab.error_estimate = max(tab.error_estimate, tail * 10)
        return tab

    @staticmethod
    def _sample_series(f, tol: float, max_level: int, pieces: int):
        levels = tuple(16 * 2 ** k for k in range(max_level + 1))
        signs = (1.0, -1.0)[:pieces]
        n = levels[0]
        y = cheb_points(n)
        vals = [np.asarray(f(sg * (1.0 - (0.5 * (y + 1.0)) ** 2)), dtype=float) for sg in signs]
        level = 0
        while True:
            coefs = [cheb_coef(v) for v in vals]  # (n_out, n + 1) per piece
            scale = np.max([np.max(np.abs(v), axis=1) for v in vals], axis=0) + 1e-300
            tail = max(float(np.max(np.max(np.abs(a[:, -3:]), axis=1) / scale)) for a in coefs)
            if tail <= tol or level + 1 == len(levels):
                return coefs, scale, tail, n
            level += 1
            n2 = levels[level]
            y2 = cheb_points(n2)
            for i, sg in enumerate(signs):  # nested nodes: evaluate only the new ones
                new = np.empty((vals[i].shape[0], n2 + 1))
                new[:, ::2] = vals[i]
                new[:, 1::2] = f(sg * (1.0 - (0.5 * (y2[1::2] + 1.0)) ** 2))
                vals[i] = new
            y, n = y2, n2

    def locate(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid index (with the piece offset) and offset in grid steps of every entry."""
        u = np.abs(c)
        np.subtract(1.0, u, out=u)
        u[u < CTABLE_SNAP] = 0.0
        np.sqrt(u, out=u)
        u *= self.G
        g = (u + 0.5).astype(np.int32)  # int32 indices: numpy's take is ~4x faster with them
        u -= g
        if self.pieces == 2:
            g += (c < 0).view(np.int8) * np.int32(self.G + 1)
        return g, u

    def gather(self, k: int, g: np.ndarray, dlt: np.ndarray) -> np.ndarray:
        """Output k at located entries."""
        return horner_gather(self.coef[:, k], g, dlt)

    def scalar(self, k: int, c: float) -> float:
        """Output k at one correlation, in Python floats (what :meth:`locate` and
        :meth:`gather` do, without numpy's per-call cost: depth recursions call this per layer)."""
        u = 1.0 - abs(c)
        u = math.sqrt(u) * self.G if u >= CTABLE_SNAP else 0.0
        g = int(u + 0.5)
        u -= g
        if self.pieces == 2 and c < 0:
            g += self.G + 1
        col = self.coef[:, k, g].tolist()
        out = col[-1]
        for a in col[-2::-1]:
            out = out * u + a
        return out

    def __call__(self, c: np.ndarray) -> list[np.ndarray]:
        g, dl = self.locate(c)
        return [self.gather(k, g, dl) for k in range(self.coef.shape[1])]


def theta_of(xc):
    """arccos(1 - xc) without cancellation for small xc = 1 - c."""
    return 2.0 * np.arcsin(np.sqrt(np.clip(0.5 * np.asarray(xc, dtype=float), 0.0, 1.0)))


@lru_cache(maxsize=4)
def _lagrange_denominators(n: int) -> np.ndarray:
    k = np.arange(n)
    d = k[:, None] - k[None, :]
    np.fill_diagonal(d, 1)
    return 1.0 / np.prod(d.astype(float), axis=1)


def _lagrange_weights(frac: np.ndarray, n: int) -> np.ndarray:
    """Weights of n-point Lagrange interpolation on nodes 0..n-1 at positions frac (shape (m,)):
    w_k = prod_{j != k} (x - j) / (k - j), from prefix and suffix products (no division)."""
    d = frac[:, None] - np.arange(n, dtype=float)[None, :]
    left = np.ones_like(d)
    right = np.ones_like(d)
    left[:, 1:] = np.cumprod(d[:, :-1], axis=1)
    right[:, :-1] = np.cumprod(d[:, :0:-1], axis=1)[:, ::-1]
    return left * right * _lagrange_denominators(n)


class QCTable:
    """A function f(q, c) of one length q (both inputs) and the correlation c that vanishes at
    c = 1, over a range of q too wide for one CTable (residual networks: q from 4.5e-5 to 3.5e9):
    F = f / theta, theta = arccos c, on a uniform grid in x = log q (step hx) and the stretched
    angle t in [0, 1], theta = sinh(A t) / S with S = sqrt(1 + q), A = asinh(pi S).  The stretch
    puts grid points both in the boundary layer theta ~ q^(-1/2), where a bounded activation's
    kernel turns from quadratic to linear in theta, and in the bulk.  Lookup: order-8 Lagrange
    interpolation in both variables.  Construction (:meth:`build`) evaluates f on the grid,
    row by row (one q per row, so a process pool can share the work); tables are saved as .npz
    (meanfield/data/residual_kernel_tanh.npz, by scripts/make_residual_tables.py).
    """

    ORDER = 8
    GRID = {"x0": -10.0, "hx": 0.125, "nx": 256, "nt": 64}

    def __init__(self, F: np.ndarray, x0: float, hx: float, nx: int, nt: int):
        self.F = np.asarray(F, dtype=float)
        self.x0, self.hx, self.nx, self.nt = float(x0), float(hx), int(nx), int(nt)
        self.x1 = self.x0 + self.hx * self.nx

    @staticmethod
    def theta(t, q):
        """theta(t) = sinh(A t) / S, S = sqrt(1 + q), A = asinh(pi S): the angle stretch."""
        s = np.sqrt(1.0 + np.asarray(q, dtype=float))
        a = np.arcsinh(np.pi * s)
        return np.sinh(a * np.asarray(t, dtype=float)) / s

    @classmethod
    def row(cls, f: Callable[[float, np.ndarray], np.ndarray], x: float, nt: int) -> np.ndarray:
        """F at x = log q on the t grid: f(q, xc) with xc = 1 - c, divided by theta."""
        q = float(np.exp(x))
        theta = cls.theta(np.linspace(0.0, 1.0, nt + 1), q)
        xc = 2.0 * np.sin(0.5 * theta) ** 2  # 1 - cos(theta) without cancellation
        xc[-1] = 2.0
        vals = np.asarray(f(q, xc), dtype=float)
        out = np.zeros_like(vals)
        out[1:] = vals[1:] / theta[1:]
        return out

    @classmethod
    def build(cls, f: Callable[[float, np.ndarray], np.ndarray], grid: dict | None = None,
              map_rows=map) -> "QCTable":
        """Tabulate f(q, xc) (vectorised over xc = 1 - c) on ``grid`` (default GRID); ``map_rows``
        maps a function over the rows' x = log q (e.g. a process pool's map)."""
        from functools import partial

        g = dict(cls.GRID if grid is None else grid)
        xs = g["x0"] + g["hx"] * np.arange(g["nx"] + 1)
        rows = list(map_rows(partial(cls.row, f, nt=g["nt"]), [float(x) for x in xs]))
        return cls(np.array(rows), g["x0"], g["hx"], g["nx"], g["nt"])

    @classmethod
    def load(cls, path) -> "QCTable":
        with np.load(path) as z:
            return cls(z["F"], float(z["x0"]), float(z["hx"]), int(z["nx"]), int(z["nt"]))

    def save(self, path, **meta) -> None:
        np.savez_compressed(path, F=self.F, x0=self.x0, hx=self.hx, nx=self.nx, nt=self.nt, **meta)

    def inside(self, logq: np.ndarray) -> np.ndarray:
        return (logq >= self.x0) & (logq <= self.x1)

    def __call__(self, logq: np.ndarray, xc: np.ndarray) -> np.ndarray:
        """f(q, c) at x = log q, 1 - c = xc (1-D arrays of equal length, logq inside)."""
        n = self.ORDER
        q = np.exp(logq)
        s = np.sqrt(1.0 + q)
        th = theta_of(xc)
        t = np.arcsinh(th * s) / np.arcsinh(np.pi * s)
        fx = (logq - self.x0) / self.hx
        ft = t * self.nt
        ix = np.clip(np.floor(fx).astype(int) - n // 2 + 1, 0, self.nx + 1 - n)
        it = np.clip(np.floor(ft).astype(int) - n // 2 + 1, 0, self.nt + 1 - n)
        wx = _lagrange_weights(fx - ix, n)
        wt = _lagrange_weights(ft - it, n)
        rows = ix[:, None] + np.arange(n)[None, :]
        cols = it[:, None] + np.arange(n)[None, :]
        block = self.F[rows[:, :, None], cols[:, None, :]]  # (m, n, n)
        val = np.einsum("mi,mij,mj->m", wx, block, wt)
        return th * val


# --------------------------------------------------------------------------------------------
# W and D at many variance pairs: TableSet (one CTable per pair, W from D by the Price identity)
# and LogQTable (Chebyshev interpolation in (log q1, log q2) between TableSets at node pairs).
# --------------------------------------------------------------------------------------------

#: Gauss-Legendre order of expect2 for the table nodes (its default): 8 gives ~1e-14 absolute
#: for tanh up to q = 50 (2e-13 at q = 50, c -> 1)
TABLE_QUAD_ORDER = 8
TABLE_QUAD_ORDER_KINKED = 8
#: trailing Chebyshev coefficients must fall below this fraction of the largest one
TABLE_CHEB_TOL = 1e-12
#: the (W, D) checks of a finished table, relative to the table's scale
TABLE_CHECK_TOL = 1e-10
#: looser targets for kinked activations (elu, selu, hard_tanh): expect2's node values are
#: themselves only good to ~1e-9 there (1e-6 within 1e-3 of c = 1), so tighter targets would
#: only chase quadrature noise
TABLE_CHEB_TOL_KINKED = 1e-9
TABLE_CHECK_TOL_KINKED = 1e-8
_CHEB_LEVELS = (16, 32, 64, 128, 256, 512)


class TableSet:
    """Tables of W = E[phi(u) phi(v)] and D = E[phi'(u) phi'(v)] as functions of c for a list of
    variance pairs (q1_k, q2_k), sharing one CTable (docs/theory.md §A0, §A4.1).

    D is a Chebyshev interpolant in x = sqrt(1 - |c|) on two pieces, c >= 0 (c = 1 - x^2) and
    c < 0 (c = x^2 - 1); odd phi needs only the first (D even, W odd in c).  Node values come
    from :func:`w_dphi` (closed forms) or :func:`expect2`; the degree doubles (17 ... 513 nodes,
    nested) until the trailing coefficients fall below TABLE_CHEB_TOL of the largest.  W comes
    from D by the Price identity dW/dq12 = D: W(c) = W(q1, q2, 1) - sqrt(q1 q2) int_c^1 D dc',
    integrated exactly on the series, anchored at :func:`w_phi` at c = 1 (the diagonal); W at
    the other end (0 at c = 0 for odd phi, w_phi at c = -1 otherwise) checks the whole table,
    and a failed check doubles the degree again.  The node values are kept in the disk cache
    (:func:`cached_arrays`, kind "wd").

    ``coef_w[j]`` and ``coef_d[j]`` have shape (n_tables, n_pieces * (G + 1)): the j-th Taylor
    coefficient (in units of the grid spacing) about grid point g of table k, piece c < 0 at
    offset G + 1.
    """

    def __init__(self, act: "Activation", q1: np.ndarray, q2: np.ndarray):
        self.act = act
        self.odd = bool(act.odd)
        self.q1 = np.asarray(q1, dtype=float).reshape(-1)
        self.q2 = np.asarray(q2, dtype=float).reshape(-1)
        self.error_estimate = 0.0
        self._build()

    # -- construction --------------------------------------------------------------------
    def _node_values(self, x: np.ndarray, sign: float) -> np.ndarray:
        """D at every (q1_k, q2_k) x c(x), c = sign (1 - x^2): (T, len(x))."""
        d1 = self.act.d1
        c = sign * (1.0 - x * x)
        T = self.q1.size
        shape = (T, x.size)
        q1 = np.broadcast_to(self.q1[:, None], shape)
        q2 = np.broadcast_to(self.q2[:, None], shape)
        cc = np.broadcast_to(c[None, :], shape)
        if self.act.closed_forms.get("wd") is not None:
            return np.asarray(w_dphi(self.act, q1, q2, cc), dtype=float)
        order = TABLE_QUAD_ORDER_KINKED if self.act.kinks else TABLE_QUAD_ORDER
        return expect2(d1, d1, q1, q2, cc, self.act.kinks, order=order)

    def _analyse(self, vals: list, y: np.ndarray) -> tuple:
        """Series of D and of its integral on each piece from the node values ``vals`` at the
        Chebyshev points ``y``, the trailing-coefficient size and the W check (see the module
        docstring, step 2)."""
        from numpy.polynomial import chebyshev as C

        s = np.sqrt(self.q1 * self.q2)
        x = 0.5 * (y + 1.0)
        a_d = [cheb_coef(v) for v in vals]
        # int_0^x D(c(xi)) 2 xi dxi = int dy D x  (dxi = dy / 2)
        a_i = [C.chebint(cheb_coef(v * x[None, :]).T, lbnd=-1.0).T for v in vals]
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
        y = cheb_points(n)
        vals = [self._node_values(0.5 * (y + 1.0), sg) for sg in signs]
        while True:
            _, _, tail, err_w, _ = self._analyse(vals, y)
            bad = (tail > self._cheb_tol) | (err_w > self.check_tol)
            if not bad.any() or level + 1 == len(_CHEB_LEVELS):
                return {f"piece{i}": v for i, v in enumerate(vals)}
            level += 1
            n2 = _CHEB_LEVELS[level]
            y2 = cheb_points(n2)
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
        self._w1 = np.asarray(w_phi(act, self.q1, self.q2, np.ones(T)), dtype=float)
        self._w_m1 = None if self.odd else np.asarray(w_phi(act, self.q1, self.q2, -np.ones(T)),
                                                       dtype=float)
        kinked = bool(act.kinks) and act.closed_forms.get("wd") is None
        self._cheb_tol, self.check_tol = (TABLE_CHEB_TOL_KINKED, TABLE_CHECK_TOL_KINKED) if kinked \
            else (TABLE_CHEB_TOL, TABLE_CHECK_TOL)
        params = {"q1": self.q1.tolist(), "q2": self.q2.tolist(), "order": TABLE_QUAD_ORDER,
                  "order_kinked": TABLE_QUAD_ORDER_KINKED, "cheb_tol": self._cheb_tol,
                  "check_tol": self.check_tol, "levels": list(_CHEB_LEVELS)}
        z = cached_arrays("wd", act, params, self._sample)
        vals = [z[f"piece{i}"] for i in range(1 if self.odd else 2)]
        n = vals[0].shape[1] - 1
        a_d, a_i, tail, err_w, w0 = self._analyse(vals, cheb_points(n))
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
        """The one table facility (CTable) on these series: outputs W_1..W_T, D_1..D_T."""
        def pad(a, n):  # W's series (integrated) has one coefficient more than D's
            return np.pad(a, ((0, 0), (0, n - a.shape[1])))

        pieces = []
        for w, d in zip(self._series_w, self._series_d):
            n = max(w.shape[1], d.shape[1])
            pieces.append(np.concatenate([pad(w, n), pad(d, n)], axis=0))
        self.table = CTable.from_series(pieces, self.n_nodes, 0.01 * self.check_tol)
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
        d = horner_gather(self.coef_d[:, k], g, dlt)
        if not want_w:
            return None, d
        w = horner_gather(self.coef_w[:, k], g, dlt)
        if self.odd and c is not None:
            np.copysign(w, c, out=w)
        return w, d


def _lagrange(nodes: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Lagrange basis on ``nodes`` evaluated at t: shape (len(nodes), len(t))."""
    n = nodes.size
    out = np.ones((n, t.size))
    for i in range(n):
        for j in range(n):
            if j != i:
                out[i] *= (t - nodes[j]) / (nodes[i] - nodes[j])
    return out


_TABLE_SETS: "OrderedDict[tuple, TableSet]" = OrderedDict()
_TABLE_SETS_SIZE = 32


def table_set(act: "Activation", q1: tuple, q2: tuple) -> TableSet:
    """The TableSet of these variance pairs; small sets (a layer of normalised inputs) are kept in
    a small LRU cache in memory, so repeating a computation with the same hyperparameters is
    cheap (and every set is in the disk cache)."""
    key = (act, q1, q2)
    hit = _TABLE_SETS.get(key)
    if hit is not None:
        _TABLE_SETS.move_to_end(key)
        return hit
    ts = TableSet(act, np.array(q1), np.array(q2))
    if len(q1) <= 3:
        _TABLE_SETS[key] = ts
        while len(_TABLE_SETS) > _TABLE_SETS_SIZE:
            _TABLE_SETS.popitem(last=False)
    return ts


def clear_table_sets() -> None:
    """Forget the TableSets kept in memory (benchmarks time cold computations; the disk cache
    is :func:`cache_dir`'s folder)."""
    _TABLE_SETS.clear()


_TQ_LEVELS = (1, 2, 4, 8, 16, 32)  # Chebyshev degree in log q (n + 1 nested nodes)


def logq_degree(width: float) -> int:
    """Chebyshev degree in log q expected to reach 1e-12 for a log-variance range ``width``,
    assuming the maps are analytic within |Im log q| < pi/2 (true for tanh, erf-like phi)."""
    r = (0.5 * np.pi) / max(0.5 * width, 1e-300)
    rho = r + math.sqrt(r * r + 1.0)
    need = math.log(1e12) / math.log(rho)
    for m in _TQ_LEVELS:
        if m >= need:
            return m
    return _TQ_LEVELS[-1]


class LogQTable:
    """W and D of one activation for every pair of variances in [exp(t_lo), exp(t_hi)]:
    Chebyshev interpolation in (log q1, log q2) between the TableSets of the node pairs.

    The nodes are Chebyshev points in log q (degree 1, 2, 4, ... 32, nested), one TableSet
    table per unordered node pair (W and D are symmetric in q1, q2).  The degree starts at half
    of :func:`logq_degree`'s estimate and doubles until the interpolant agrees with
    :func:`expect2` at three variance pairs between the nodes to the TableSet's check tolerance
    (``interp_error`` is that agreement).  :meth:`single` is the one-table case (one variance;
    or a homogeneous activation at q = 1, scaled by its caller).
    """

    def __init__(self, act: "Activation", t_lo: float, t_hi: float):
        self.act = act
        self.t_lo, self.t_hi = float(t_lo), float(t_hi)
        self.interp_error = 0.0
        n0 = max(1, logq_degree(self.t_hi - self.t_lo) // 2)  # the estimate is conservative
        for n in [m for m in _TQ_LEVELS if m >= n0]:
            self._setup(n)
            if self._verify() or n == _TQ_LEVELS[-1]:
                break

    @classmethod
    def single(cls, act: "Activation", q: float) -> "LogQTable":
        """The table of one variance pair (q, q): one node, no interpolation."""
        self = cls.__new__(cls)
        self.act, self.interp_error = act, 0.0
        self.t_lo = self.t_hi = math.log(q)
        self.nodes = np.array([self.t_lo])
        self.pairs = [(0, 0)]
        self.tables = table_set(act, (float(q),), (float(q),))
        return self

    def _setup(self, n: int) -> None:
        mid, half = 0.5 * (self.t_lo + self.t_hi), 0.5 * (self.t_hi - self.t_lo)
        self.nodes = mid + half * cheb_points(n)
        qn = np.exp(self.nodes)
        self.pairs = [(i, j) for i in range(n + 1) for j in range(i, n + 1)]
        self.tables = table_set(self.act, tuple(float(qn[i]) for i, _ in self.pairs),
                                tuple(float(qn[j]) for _, j in self.pairs))

    def _verify(self) -> bool:
        """Compare with direct quadrature at variance pairs between the nodes."""
        lo, hi = self.t_lo, self.t_hi
        t1 = np.array([lo + 0.13 * (hi - lo), lo + 0.61 * (hi - lo), lo + 0.97 * (hi - lo)])
        t2 = np.array([lo + 0.89 * (hi - lo), lo + 0.61 * (hi - lo), lo + 0.02 * (hi - lo)])
        c = np.array([0.43, 0.91, -0.27])
        q1, q2 = np.exp(t1), np.exp(t2)
        w, d = self.eval_pairs(q1, q2, c)
        act = self.act
        order = TABLE_QUAD_ORDER_KINKED if act.kinks else TABLE_QUAD_ORDER
        w_ref = expect2(act.fn, act.fn, q1, q2, c, act.kinks, order=order)
        d_ref = expect2(act.d1, act.d1, q1, q2, c, act.kinks, order=order)
        sw = np.sqrt(v_phi(act, q1) * v_phi(act, q2)) + 1e-300
        sd = np.sqrt(v_dphi(act, q1) * v_dphi(act, q2)) + 1e-300
        err = max(float(np.max(np.abs(w - w_ref) / sw)), float(np.max(np.abs(d - d_ref) / sd)))
        self.interp_error = err
        return err <= self.tables.check_tol

    def weights(self, q: np.ndarray) -> np.ndarray:
        """The Lagrange basis in log q at the variances q (> 0): (len(nodes), len(q))."""
        return _lagrange(self.nodes, np.log(q))

    def eval_pairs(self, q1: np.ndarray, q2: np.ndarray, c: np.ndarray):
        """(W, D) at matching 1-D arrays (q1, q2, c) (no zero variances)."""
        return self.combine(self.weights(q1), self.weights(q2), np.asarray(c, float), elementwise=True)

    def combine(self, l1: np.ndarray, l2: np.ndarray, c: np.ndarray, elementwise: bool = False,
                want_w: bool = True):
        """(W, D) on the block c (rows x columns, or matching arrays with ``elementwise``) from
        the rows' and columns' Lagrange weights l1, l2 (:meth:`weights`)."""
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


# --------------------------------------------------------------------------------------------
# The disk cache of the table facility: what a table costs to build (its quadrature node values,
# a spline's coefficients) is written once per activation and read by every later process.
# --------------------------------------------------------------------------------------------

#: environment variable naming the cache folder; "off" (or "none", "0", "false", "no") disables it
CACHE_ENV = "MEANFIELD_CACHE_DIR"
_CACHE_OFF = ("off", "none", "0", "false", "no")
#: bumped when the file layout changes (the key also holds the package version and a digest of
#: the source files that compute the stored values, so an edited quadrature is never read back)
_CACHE_FORMAT = 1
_CACHE_SOURCES = ("gaussian.py", "activations.py", "special.py", "kernels/_tables.py")
_CACHE_COUNTS = {"built": 0, "read": 0, "rejected": 0, "written": 0, "unwritable": 0}
_CACHE_UNWRITABLE: set = set()


def cache_dir() -> "Path | None":
    """The table cache folder: ``$MEANFIELD_CACHE_DIR``, else ``$XDG_CACHE_HOME/meanfield``, else
    ``~/.cache/meanfield``; None when ``MEANFIELD_CACHE_DIR=off`` (the cache is then memory only)."""
    from pathlib import Path

    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return None if env.lower() in _CACHE_OFF else Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # the XDG spec: a relative XDG_CACHE_HOME is invalid and ignored
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "meanfield"


def activation_spec(act: "Activation") -> str | None:
    """The spec string that rebuilds ``act`` when it is a registry activation (the object
    ``activations.get_activation`` made), else None: custom callables, registered customs and
    modified copies have no stable spec, and their tables are never written to disk."""
    from . import activations as A

    if not any(v is act for v in A._CACHE.values()):
        return None
    name = act.name
    return name if isinstance(name, str) and name.partition(":")[0] in A._REGISTRY else None


def cache_stats() -> dict:
    """Counts of this process's table-cache events: tables ``built`` (computed), ``read`` from
    disk, files ``rejected`` (corrupt, truncated or another key: rebuilt), ``written``, and
    writes that failed (``unwritable``)."""
    return dict(_CACHE_COUNTS)


@lru_cache(maxsize=1)
def _code_digest() -> str:
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for rel in _CACHE_SOURCES:
        try:
            h.update((root / rel).read_bytes())
        except OSError:  # an install without sources: the package version alone keys the files
            h.update(rel.encode())
    return h.hexdigest()[:16]


def cache_key(kind: str, spec: str, params: dict) -> str:
    """The key text of a table: format, package version, source digest, kind, activation spec
    and the table's parameters (JSON, floats written exactly by repr)."""
    import json

    from . import __version__

    return json.dumps({"format": _CACHE_FORMAT, "version": __version__, "code": _code_digest(),
                       "kind": kind, "activation": spec, "params": params}, sort_keys=True)


def _arrays_digest(arrays: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def cache_path(kind: str, spec: str, key: str) -> "Path | None":
    """Where the table of this key lives (None with the cache off)."""
    import hashlib
    import re

    d = cache_dir()
    if d is None:
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{kind}-{spec}")[:80]
    return d / f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def _cache_read(path, key: str) -> dict | None:
    """The arrays stored under ``key``, or None when the file is absent, unreadable, truncated,
    holds another key or fails its checksum (then it is rebuilt and replaced, never trusted)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {n: z[n] for n in z.files}
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - any broken file (BadZipFile, EOFError, ValueError, ...)
        _CACHE_COUNTS["rejected"] += 1
        return None
    stored_key, stored_sha = arrays.pop("__key__", None), arrays.pop("__sha__", None)
    if (stored_key is None or stored_sha is None or str(stored_key) != key
            or str(stored_sha) != _arrays_digest(arrays)):
        _CACHE_COUNTS["rejected"] += 1
        return None
    return arrays


def _cache_write(path, key: str, arrays: dict) -> None:
    """Atomically: a temporary file in the same folder, then os.replace, so a reader sees the
    old file, no file, or the whole new one."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, __key__=np.array(key), __sha__=np.array(_arrays_digest(arrays)), **arrays)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cached_arrays(kind: str, act: "Activation", params: dict,
                  build: Callable[[], dict]) -> dict:
    """The table's arrays ``build()`` returns (a dict name -> array), read from the disk cache
    when a valid file holds them, else built and written there.

    The key (:func:`cache_key`) is the package version, a digest of the sources that compute
    tables, ``kind``, the activation's spec and ``params`` (JSON-serialisable, and everything
    else the values depend on).  Activations without a stable spec, a disabled cache and a folder
    that cannot be written build in memory (a folder that cannot be written warns once)."""
    spec = activation_spec(act)
    key = None if spec is None else cache_key(kind, spec, params)
    path = None if key is None else cache_path(kind, spec, key)
    if path is not None:
        hit = _cache_read(path, key)
        if hit is not None:
            _CACHE_COUNTS["read"] += 1
            return hit
    _CACHE_COUNTS["built"] += 1
    arrays = {n: np.asarray(a) for n, a in build().items()}
    if path is not None and path.parent not in _CACHE_UNWRITABLE:
        try:
            _cache_write(path, key, arrays)
            _CACHE_COUNTS["written"] += 1
        except OSError as exc:
            import warnings

            _CACHE_COUNTS["unwritable"] += 1
            _CACHE_UNWRITABLE.add(path.parent)
            if len(_CACHE_UNWRITABLE) == 1:
                warnings.warn(f"meanfield: the table cache {path.parent} cannot be written "
                              f"({exc.strerror or exc}); tables stay in memory (set {CACHE_ENV}=off "
                              f"to silence this)", RuntimeWarning, stacklevel=2)
    return arrays


# --------------------------------------------------------------------------------------------
# Hermite coefficients: phi(sqrt(q) z) = sum_k a_k He_k(z) / sqrt(k!), so that at equal lengths
# W_phi(q, q, c) = sum_k a_k^2 c^k (Mehler; docs/theory.md "the chaotic c* by Hermite series").
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _hermite_basis(n_coef: int, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes x (n_nodes,) and B[n, k] = w_n He_k(x_n) / sqrt(k!), k < n_coef.

    The normalised recurrence h_{k+1} = (x h_k - sqrt(k) h_{k-1}) / sqrt(k + 1) is run on w h_k,
    which stays below e^{-x^2/4} (Hermite functions are bounded), so nothing overflows at the
    outer nodes where He_k(x) alone would."""
    x, w = _hermite(n_nodes)
    b = np.empty((n_nodes, n_coef))
    b[:, 0] = w
    if n_coef > 1:
        b[:, 1] = x * w
    for k in range(1, n_coef - 1):
        b[:, k + 1] = (x * b[:, k] - np.sqrt(k) * b[:, k - 1]) / np.sqrt(k + 1)
    return x, b


def hermite_coefficients(f: Callable[[np.ndarray], np.ndarray], q, n_coef: int,
                         n_nodes: int | None = None) -> np.ndarray:
    """a_k(q) = E[f(sqrt(q) z) He_k(z)] / sqrt(k!) for k < n_coef, shape q.shape + (n_coef,)
    (docs/theory.md §A1.3 and section 0: W_phi(q, q, c) = sum_k a_k^2 c^k).

    One Gauss-Hermite rule of n_nodes (default 5/4 n_coef) for all q: a matrix product.  Exact
    to rounding where f(sqrt(q) z)'s own coefficients beyond n_nodes are negligible, which holds
    for smooth f at moderate q; kinked f converge only algebraically (use expect1 there)."""
    q = np.asarray(q, dtype=float)
    n_nodes = int(n_nodes or max(n_coef + n_coef // 4, 8))
    x, b = _hermite_basis(int(n_coef), n_nodes)
    s = np.sqrt(q.reshape(-1))
    out = np.empty((s.size, b.shape[1]))
    for sl in _chunks(s.size, n_nodes):
        out[sl] = f(s[sl, None] * x[None, :]) @ b
    return out.reshape(q.shape + (b.shape[1],))


@lru_cache(maxsize=16)
def hermite_half_rule(n_nodes: int, n_coef: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The symmetric n_nodes rule folded in half: positive nodes x, their weights, and the
    basis columns B[x > 0, 0:n_coef:2] (even k) and B[x > 0, 1:n_coef:2] (odd k).

    He_k(-x) = (-1)^k He_k(x), so even k read f(u) + f(-u) at the positive nodes and odd k
    f(u) - f(-u) (:func:`hermite_half_sums`): half the products of the full rule."""
    x, b = _hermite_basis(int(n_nodes), int(n_nodes))
    pos = x > 0
    return (x[pos], b[pos, 0], np.ascontiguousarray(b[pos, 0:n_coef:2]),
            np.ascontiguousarray(b[pos, 1:n_coef:2]))


def hermite_half_sums(f: Callable[[np.ndarray], np.ndarray], q, xp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f(u) + f(-u) and f(u) - f(-u) at u = sqrt(q) x for the half rule's nodes x, shape
    q.shape + (len(xp),)."""
    u = np.sqrt(np.asarray(q, dtype=float))[..., None] * xp
    fp, fm = f(u), f(-u)
    return fp + fm, fp - fm


def hermite_half_coefficients(even: np.ndarray, odd: np.ndarray, even_basis: np.ndarray,
                              odd_basis: np.ndarray) -> np.ndarray:
    """a_k (as :func:`hermite_coefficients`) from :func:`hermite_half_sums` and
    :func:`hermite_half_rule`'s basis columns; shape even.shape[:-1] + (n_coef,)."""
    a = np.empty(even.shape[:-1] + (even_basis.shape[1] + odd_basis.shape[1],))
    a[..., 0::2] = even @ even_basis
    a[..., 1::2] = odd @ odd_basis
    return a


__all__ += ["hermite_coefficients", "hermite_half_rule", "hermite_half_sums", "hermite_half_coefficients",
            "expect2_inner", "cached_arrays", "cache_dir", "cache_key", "cache_path",
            "cache_stats", "activation_spec", "CACHE_ENV", "TableSet", "LogQTable", "table_set",
            "clear_table_sets", "logq_degree"]
