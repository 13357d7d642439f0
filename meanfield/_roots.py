"""Bracketed root finding without scipy.optimize (importing it costs the CLI ~0.5-0.9 s, issue
10): a vectorised Chandrupatla solver and its scalar wrapper, in brentq's role.  A leaf module,
so that special.py, fixed_points.py, spectra.py and residual.py can all use it."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .errors import DomainError


def _find_root(f, lo, hi, args=(), xrtol: float = 4 * np.finfo(float).eps, xatol: float = 1e-300,
               max_iter: int = 100) -> np.ndarray:
    """Roots of f(x, *args) = 0 in the brackets [lo, hi] (f(lo), f(hi) of opposite signs or 0),
    elementwise, by Chandrupatla's method (inverse quadratic interpolation safeguarded by
    bisection, as scipy.optimize's find_root; here so that the CLI need not import
    scipy.optimize, ~0.5 s).  Stops where the bracket is below 2 (xrtol |x| + xatol) wide or f = 0."""
    lo, hi = (np.array(v, dtype=float).reshape(-1) for v in (lo, hi))
    args = tuple(np.broadcast_to(np.asarray(v, dtype=float).reshape(-1), lo.shape) for v in args)
    b, a = lo.copy(), hi.copy()
    fb, fa = (np.asarray(f(x, *args), dtype=float).reshape(-1) for x in (b, a))
    c, fc = a.copy(), fa.copy()
    xm = np.where(np.abs(fa) < np.abs(fb), a, b)
    xm[fa == 0] = a[fa == 0]
    xm[fb == 0] = b[fb == 0]
    act = np.flatnonzero((fa != 0) & (fb != 0))
    t = np.full(lo.shape, 0.5)
    for _ in range(max_iter):
        if act.size == 0:
            break
        ai, bi, ci, fai, fbi, fci, ti = a[act], b[act], c[act], fa[act], fb[act], fc[act], t[act]
        xt = ai + ti * (bi - ai)
        ft = np.asarray(f(xt, *(v[act] for v in args)), dtype=float).reshape(-1)
        same = np.sign(ft) == np.sign(fai)
        ci, fci = np.where(same, ai, bi), np.where(same, fai, fbi)
        bi, fbi = np.where(same, bi, ai), np.where(same, fbi, fai)
        ai, fai = xt, ft
        first = np.abs(fai) < np.abs(fbi)
        xmi, fmi = np.where(first, ai, bi), np.where(first, fai, fbi)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            tlim = (xrtol * np.abs(xmi) + xatol) / np.abs(bi - ci)
            xi = (ai - bi) / (ci - bi)
            ph = (fai - fbi) / (fci - fbi)
            iqi = (fai / (fbi - fai) * fci / (fbi - fci)
                   + (ci - ai) / (bi - ai) * fai / (fci - fai) * fbi / (fci - fbi))
        ti = np.where((ph * ph < xi) & ((1 - ph) ** 2 < 1 - xi), iqi, 0.5)
        ti = np.minimum(1 - tlim, np.maximum(tlim, np.nan_to_num(ti, nan=0.5)))
        a[act], b[act], c[act], fa[act], fb[act], fc[act], t[act], xm[act] = ai, bi, ci, fai, fbi, fci, ti, xmi
        act = act[~((tlim > 0.5) | (fmi == 0) | ~np.isfinite(tlim))]
    return xm


def _find_root_scalar(f: Callable[[float], float], a: float, b: float, xtol: float = 1e-300,
                      rtol: float = 4 * np.finfo(float).eps, fa: float | None = None,
                      fb: float | None = None) -> float:
    """The root of a scalar f in [a, b] by :func:`_find_root` (brentq's role, without importing
    scipy.optimize): f(a) and f(b) (given by the caller where known) must differ in sign or be 0,
    else DomainError (brentq's ValueError)."""
    fa = f(float(a)) if fa is None else fa
    fb = f(float(b)) if fb is None else fb
    if fa * fb > 0 or math.isnan(fa) or math.isnan(fb):
        raise DomainError(f"f({a:g}) = {fa:g} and f({b:g}) = {fb:g} do not bracket a root")
    known = {float(a): fa, float(b): fb}  # each f may be a whole recursion: not twice

    def fv(x: np.ndarray) -> np.ndarray:
        return np.array([known[v] if v in known else f(v) for v in map(float, x)])
    return float(_find_root(fv, a, b, xrtol=rtol, xatol=xtol)[0])
