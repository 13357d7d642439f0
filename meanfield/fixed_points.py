"""Fixed points of the vanilla mean-field maps, depth scales, phases and the edge of chaos.

Solvers over arrays of (sigma_w2, sigma_b2) report a per-point ``status`` (an int code, with
``STATUS_MESSAGES``); the scalar wrappers :func:`fixed_point` and :func:`edge_of_chaos` raise
:class:`~meanfield.errors.NoFixedPoint` with the reason when there is nothing to report.

Which q* is reported.  The length map may have several fixed points (alpha-ReLU with
alpha > 1, swish, ...).  We report the one that the iteration q^{l+1} = sigma_w2 V(q^l) + sigma_b2
reaches from the first layer's length q0 (default 1), together with ``q_unstable``, the
nearest unstable fixed point above it (the upper end of its basin of attraction), when there is
one.  This is exact for increasing length maps, which covers every activation of the registry
except ``cos``, whose decreasing map has a single fixed point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import gaussian
from .activations import Activation, get_activation
from ._memory import check_memory, format_count
from ._roots import _find_root, _find_root_scalar
from .errors import DomainError, NoFixedPoint
from .maps import check_variance

# per-point status codes of the grid solvers
OK, ZERO, DIVERGES, LINEAR_GROWTH, MARGINAL, UNSTABLE, NO_EOC = 0, 1, 2, 3, 4, 5, 6
STATUS_MESSAGES = {
    OK: "ok",
    ZERO: "q* = 0: the length map contracts every input to zero",
    DIVERGES: "q diverges: the length map has no fixed point above q0",
    LINEAR_GROWTH: "q grows linearly: the length map is a shift at slope 1",
    MARGINAL: "marginal: every q is a fixed point of the length map; q* reported as q0",
    UNSTABLE: "the fixed point reached is unstable (|slope| >= 1): the length map oscillates",
    NO_EOC: "no edge of chaos: chi_1(q*) = 1 has no solution",
}

_QGRID = np.concatenate([[0.0], np.logspace(-10, 10, 201)])
# Where the length map is still above the diagonal at q = 1e10 the search goes on, one point per
# decade, to the top of the float range: bounded activations (tanh, erf, sigmoid, ...) have
# q* ~ sigma_w2 sup phi^2, which any sigma_w2 up to 1e308 puts anywhere in that range.
_QGRID_WIDE = np.concatenate([_QGRID, np.logspace(11, 308, 298)])
_Q_TOP = float(_QGRID_WIDE[-1])
_PHASE_TOL = 1e-9


def _homogeneous_k(act: Activation) -> float | None:
    """k when V_phi(q) = k q exactly (relu, leaky_relu, abs, linear), else None."""
    v = act.closed_forms.get("v")
    if v is None:
        return None
    a, b, z = (float(v(np.array(x))) for x in (1.0, 2.0, 0.0))
    return a if z == 0.0 and b == 2.0 * a else None


@dataclass(frozen=True)
class QStar:
    """Vectorised solution of q* = sigma_w2 V_phi(q*) + sigma_b2, with per-point status."""

    q_star: np.ndarray
    q_unstable: np.ndarray  # nearest unstable fixed point above q* (nan: none)
    slope: np.ndarray  # d q^{l+1} / d q^l at q*
    status: np.ndarray

    def message(self, index=()) -> str:
        return STATUS_MESSAGES[int(self.status[index])]


def solve_q_star(activation, sigma_w2, sigma_b2, q0: float = 1.0) -> QStar:
    """q* for arrays of (sigma_w2, sigma_b2) (docs/theory.md §A1.2), broadcast together; see module docs."""
    act = get_activation(activation)
    sw, sb = np.broadcast_arrays(check_variance("sigma_w2", sigma_w2), check_variance("sigma_b2", sigma_b2))
    q0 = float(check_variance("q0", q0))
    shape = sw.shape
    sw, sb = sw.reshape(-1).astype(float), sb.reshape(-1).astype(float)
    n = sw.size
    qs = np.full(n, np.nan)
    qu = np.full(n, np.nan)
    status = np.zeros(n, dtype=int)

    k = _homogeneous_k(act)
    if k is not None:
        slope_k = sw * k
        below, at = slope_k < 1.0, slope_k == 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            qs = np.where(below, sb / (1.0 - slope_k), np.nan)
        status = np.where(below, np.where(sb == 0, ZERO, OK), DIVERGES)
        status = np.where(at & (sb == 0), MARGINAL, np.where(at, LINEAR_GROWTH, status))
        qs = np.where(status == MARGINAL, q0, qs)
        slope = slope_k
    else:
        vg = gaussian.v_phi(act, _QGRID)
        step = 4096
        for s in range(0, n, step):
            sl = slice(s, min(n, s + step))
            qs[sl], qu[sl], status[sl] = _bracket_and_solve(act, sw[sl], sb[sl], q0, vg, _QGRID)
        far = np.flatnonzero(status == DIVERGES)
        if far.size:
            with np.errstate(over="ignore", invalid="ignore"):
                vw = gaussian.v_phi(act, _QGRID_WIDE)
            for s in range(0, far.size, step):
                idx = far[s:s + step]
                qs[idx], qu[idx], status[idx] = _bracket_and_solve(act, sw[idx], sb[idx], q0, vw, _QGRID_WIDE)
        with np.errstate(invalid="ignore"):
            slope = np.where(np.isfinite(qs), sw * gaussian.dv_phi(act, np.where(np.isfinite(qs), qs, 1.0)), np.nan)
        # At q* >> 1 chi_1 + sigma_w2 E[phi'' phi] cancels to rounding noise (bounded phi: the
        # slope ~ sigma_w2 q^(-3/2)); where it claims |slope| >= 1 a central difference of V decides.
        bad = np.flatnonzero(np.isfinite(qs) & (qs > 1e15) & ~(np.abs(slope) < 1))
        if bad.size:
            qb = qs[bad]
            with np.errstate(all="ignore"):
                fd = sw[bad] * (gaussian.v_phi(act, qb * 1.001) - gaussian.v_phi(act, qb * 0.999)) / (0.002 * qb)
            slope = np.asarray(slope, float).copy()
            slope[bad] = np.where(np.abs(fd) < 1, fd, slope[bad])
        unstable = np.isfinite(slope) & (slope <= -1.0)
        status = np.where(unstable, UNSTABLE, status)
    return QStar(qs.reshape(shape), qu.reshape(shape), np.asarray(slope, float).reshape(shape),
                 status.reshape(shape))


def _bracket_and_solve(act, sw, sb, q0, vg, grid):
    with np.errstate(over="ignore", invalid="ignore"):
        # sigma_w2 V(q) overflowing to inf counts as "above the diagonal" (q* beyond float range)
        g = sw[:, None] * vg[None, :] + sb[:, None] - grid[None, :]
        g = np.where(np.isnan(g), np.inf, g)
    with np.errstate(over="ignore"):
        g0 = sw * gaussian.v_phi(act, np.full(sw.shape, q0)) + sb - q0
    k0 = np.searchsorted(grid, q0)  # grid[k0-1] < q0 <= grid[k0]
    n, m = g.shape
    cols = np.arange(m)[None, :]
    up = g0 > 0
    # going up: first grid point above q0 where G <= 0
    cand_up = (cols >= k0) & (g <= 0) & (grid[None, :] > q0)
    has_up = cand_up.any(axis=1)
    i_up = np.where(has_up, cand_up.argmax(axis=1), m - 1)
    # going down: last grid point below q0 where G >= 0
    cand_dn = (grid[None, :] < q0) & (g >= 0)
    has_dn = cand_dn.any(axis=1)
    i_dn = np.where(has_dn, m - 1 - cand_dn[:, ::-1].argmax(axis=1), 0)

    lo = np.where(up, np.maximum(q0, grid[np.maximum(i_up - 1, 0)]), grid[i_dn])
    hi = np.where(up, grid[i_up], np.minimum(q0, grid[np.minimum(i_dn + 1, m - 1)]))
    status = np.full(n, OK)
    status[up & ~has_up] = DIVERGES
    exact0 = ~up & has_dn & (i_dn == 0) & (g[:, 0] == 0)
    exact_hi = ~up & has_dn & (g[np.arange(n), i_dn] == 0)
    qs = np.full(n, np.nan)
    qs[g0 == 0] = q0
    qs[exact_hi] = grid[i_dn[exact_hi]]
    status[exact0] = ZERO
    qs[exact0] = 0.0
    # the decreasing branch with no sign change below q0 cannot happen when G(0) = sigma_b2 +
    # sigma_w2 phi(0)^2 >= 0; it is handled for completeness.
    status[~up & ~has_dn & (g0 != 0)] = ZERO
    qs[~up & ~has_dn & (g0 != 0)] = 0.0
    todo = np.flatnonzero(np.isnan(qs) & (status == OK))
    if todo.size:
        def f(q, sw_, sb_):
            return sw_ * gaussian.v_phi(act, q) + sb_ - q

        qs[todo] = _find_root(f, lo[todo], hi[todo], args=(sw[todo], sb[todo]))
    # unstable fixed point bounding the basin from above: first crossing from G < 0 to G > 0
    # above q*, on the grid.
    qu = np.full(n, np.nan)
    above = grid[None, :] > np.where(np.isfinite(qs), qs, np.inf)[:, None]
    cross = above[:, 1:] & (g[:, :-1] < 0) & (g[:, 1:] > 0)
    has = cross.any(axis=1) & (status == OK)
    if has.any():
        j = cross.argmax(axis=1)
        idx = np.flatnonzero(has)

        def f2(q, sw_, sb_):
            return sw_ * gaussian.v_phi(act, q) + sb_ - q

        qu[idx] = _find_root(f2, grid[j[idx]], grid[j[idx] + 1], args=(sw[idx], sb[idx]))
    return qs, qu, status


def _inf_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class FixedPoint:
    """The stable fixed point of a vanilla network and the diagnostics at it (docs/theory.md §A1.2-1.5).

    xi_q / xi_c are ``inf`` where the depth scale diverges (to_dict writes them as null).
    ``c_star`` is the stable correlation fixed point; ``chi_c`` the C-map slope there.
    """

    activation: str
    sigma_w2: float
    sigma_b2: float
    q_star: float
    q_unstable: float | None
    c_star: float
    chi_1: float
    chi_c: float
    xi_q: float
    xi_c: float
    phase: str
    status: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for key in ("xi_q", "xi_c", "q_unstable"):
            d[key] = _inf_to_none(d[key])
        d["notes"] = list(self.notes)
        return d


def phase_of(chi1) -> np.ndarray:
    """'ordered' (chi_1 < 1), 'chaotic' (chi_1 > 1) or 'critical' (|chi_1 - 1| <= 1e-9)."""
    chi1 = np.asarray(chi1, dtype=float)
    return np.where(np.abs(chi1 - 1) <= _PHASE_TOL, "critical", np.where(chi1 < 1, "ordered", "chaotic"))


def _depth_scale(slope: float) -> float:
    """xi = -1 / log|slope| (docs/theory.md §A1.4); inf at |slope| = 1."""
    a = abs(slope)
    if a == 0:
        return 0.0
    if abs(a - 1.0) <= _PHASE_TOL:
        return math.inf
    return -1.0 / math.log(a) if a < 1 else math.inf


def c_star(activation, q_star: float, sigma_w2: float, sigma_b2: float,
           chi1: float | None = None, bivariate: str = "accurate") -> float:
    """The stable fixed point of the C-map at q* (docs/theory.md §A1.3): 1 in the ordered phase, the
    root of C(c) = c in [-1, 1) in the chaotic phase."""
    act = get_activation(activation)
    if chi1 is None:
        chi1 = float(sigma_w2 * gaussian.v_dphi(act, q_star))
    if chi1 <= 1 + _PHASE_TOL:
        return 1.0
    def h(c: float) -> float:
        return float(_cmap(act, c, q_star, sigma_w2, sigma_b2, bivariate)) - c

    h0 = h(0.0)
    if h0 == 0.0:
        return 0.0
    # just below c = 1 the map lies under the diagonal with slope chi_1 > 1
    eps = 1e-3
    while h(1 - eps) >= 0 and eps > 1e-12:
        eps /= 10
    if h0 > 0 and h(1 - eps) >= 0:
        return _near_critical_c_star(act, q_star, sigma_w2, chi1)
    if h0 > 0:
        return _find_root_scalar(h, 0.0, 1 - eps, xtol=1e-15, rtol=1e-15)
    lo = -1.0
    return _find_root_scalar(h, lo, 0.0, xtol=1e-15, rtol=1e-15) if h(lo) > 0 else lo


def _near_critical_c_star(act: Activation, q: float, sw: float, chi1: float) -> float:
    """c* just above the edge of chaos, where C(c) - c is below the quadrature's resolution.

    Second-order expansion at c = 1 [D]: C(1 - e) = 1 - chi_1 e + (C''(1)/2) e^2 with
    C''(1) = sigma_w2 q* E[phi''(sqrt(q*) z)^2] (Price identity twice), so 1 - c* =
    2 (chi_1 - 1) / C''(1); the neglected term is O((chi_1 - 1)^2).
    """
    from .errors import ConvergenceError

    # The expansion needs phi' continuous (then phi'' has no delta part): elu:1 and selu-like
    # kinks of phi'' alone are fine; relu's jump of phi' is not.
    jumps = act.d1 is None or any(
        abs(float(act.d1(np.array(k - 1e-9))) - float(act.d1(np.array(k + 1e-9)))) > 1e-6 for k in act.kinks)
    if act.d2 is None or jumps:
        raise ConvergenceError(
            f"c* for {act.name} at chi_1 - 1 = {chi1 - 1:.2e} is closer to 1 than the quadrature resolves, "
            f"and phi' jumps at a kink, so the second-order expansion does not apply")
    d2 = act.d2
    curv = sw * q * float(gaussian.expect1(lambda u: d2(u) ** 2, q, act.kinks))
    if not curv > 0:
        raise ConvergenceError(f"c* for {act.name} near the edge of chaos: C''(1) = {curv:g} is not positive")
    return 1.0 - 2.0 * (chi1 - 1.0) / curv


def _cmap(act, c, q, sw, sb, bivariate):
    if bivariate == "hermite" and act.closed_forms.get("w") is None:
        w = gaussian.expect2_hermite(act.fn, act.fn, q, q, c)
    else:
        w = gaussian.w_phi(act, q, q, c)
    return (sw * w + sb) / q


def fixed_point(activation, sigma_w2: float, sigma_b2: float, q0: float = 1.0) -> FixedPoint:
    """q*, c*, chi_1, chi_c, xi_q, xi_c and the phase at (sigma_w2, sigma_b2) (docs/theory.md §A1.2-1.4).

    Raises NoFixedPoint, with the reason, where the length map has no stable fixed point
    reachable from q0.
    """
    act = get_activation(activation)
    sw = float(check_variance("sigma_w2", sigma_w2))
    sb = float(check_variance("sigma_b2", sigma_b2))
    res = solve_q_star(act, sw, sb, q0)
    st = int(res.status)
    notes: list[str] = []
    if st in (DIVERGES, LINEAR_GROWTH, UNSTABLE):
        raise NoFixedPoint(_no_q_reason(act, sw, sb, st, q0))
    q = float(res.q_star)
    if st == ZERO:
        notes.append("q* = 0: signals shrink to zero with depth; chi_1 is evaluated at q = 0")
    if st == MARGINAL:
        notes.append(f"every q is a fixed point (positively homogeneous activation at sigma_w2 * "
                     f"V(q)/q = 1, sigma_b2 = 0); q* is reported as q0 = {q0:g}")
    chi1 = float(sw * gaussian.v_dphi(act, q))
    cs = c_star(act, q, sw, sb, chi1)
    if not (q > 0 or sb > 0):
        chic = chi1
    else:
        chic = chi1 if cs == 1.0 else float(sw * gaussian.w_dphi(act, q, q, cs))
    slope_q = float(res.slope)
    if st == OK and q > 1e15 and abs(slope_q) < 1e-12:
        notes.append(f"the length map's slope at q* = {q:.3g} is below float resolution (< 1e-12): "
                     f"xi_q is reported as 0")
        slope_q = 0.0
    xi_q = _depth_scale(slope_q) if st != MARGINAL else math.inf
    xi_c = _depth_scale(chic)
    qu = float(res.q_unstable)
    if math.isfinite(qu):
        notes.append(f"unstable fixed point at q = {qu:.6g}: inputs with q0 above it diverge")
    return FixedPoint(act.name, sw, sb, q, qu if math.isfinite(qu) else None, cs, chi1, chic,
                      xi_q, xi_c, str(phase_of(chi1)), STATUS_MESSAGES[st], notes)


def _no_q_reason(act: Activation, sw: float, sb: float, st: int, q0: float) -> str:
    k = _homogeneous_k(act)
    if k is not None:
        crit = 1.0 / k
        if st == LINEAR_GROWTH:
            return (f"q grows linearly (q^l = q^0 + l sigma_b2): sigma_w2 = {crit:g} is the critical "
                    f"value for {act.name} and sigma_b2 = {sb:g} > 0, so the length map has no fixed point")
        return (f"q diverges: sigma_w2 = {sw:g} > {crit:g} for {act.name} (q^l grows by sigma_w2 * {k:g} "
                f"= {sw * k:g} per layer), so the length map has no fixed point")
    if st == UNSTABLE:
        return (f"the length map's fixed point for {act.name} at sigma_w2 = {sw:g}, sigma_b2 = {sb:g} "
                f"is unstable (slope <= -1): q^l oscillates")
    return (f"q diverges for {act.name} at sigma_w2 = {sw:g}, sigma_b2 = {sb:g}: sigma_w2 V(q) + sigma_b2 > q "
            f"for every q >= q0 = {q0:g} up to {_Q_TOP:g} (the float range), so q^l grows without bound or "
            f"its fixed point lies beyond float range")


@dataclass(frozen=True)
class EdgeOfChaos:
    """Points (sigma_w2, sigma_b2) with chi_1(q*) = 1 and q* there (docs/theory.md §A1.3, 1.6)."""

    activation: str
    sigma_b2: np.ndarray | float
    sigma_w2: np.ndarray | float
    q_star: np.ndarray | float
    status: np.ndarray | str

    def to_dict(self) -> dict:
        def conv(x):
            if isinstance(x, np.ndarray):
                return [None if (isinstance(v, float) and not math.isfinite(v)) else v for v in x.tolist()]
            return _inf_to_none(x) if isinstance(x, float) else x
        return {k: conv(v) for k, v in self.__dict__.items()}


def edge_of_chaos_curve(activation, sigma_b2) -> EdgeOfChaos:
    """Vectorised edge of chaos: for each sigma_b2 the sigma_w2 with chi_1(q*) = 1 (docs/theory.md §A1.6).

    Uses the parametric form of the critical line, sigma_w2(q) = 1 / V_phi'(q) and
    sigma_b2(q) = q - V_phi(q) / V_phi'(q), solved for q by a bracketing root finder.  The root
    reported is the smallest q whose length map is stable there (slope < 1).
    """
    act = get_activation(activation)
    sb = np.asarray(check_variance("sigma_b2", sigma_b2), dtype=float)
    shape = sb.shape
    sbf = sb.reshape(-1)
    n = sbf.size
    sw = np.full(n, np.nan)
    qs = np.full(n, np.nan)
    status = np.full(n, NO_EOC)
    k = _homogeneous_k(act)
    if k is not None:
        ok = sbf == 0
        sw[ok] = 1.0 / k
        qs[ok] = np.nan  # marginal: any q
        status[ok] = MARGINAL
    elif act.d1 is not None or act.closed_forms.get("vd") is not None:
        qg = _QGRID
        vg, vdg = gaussian.v_phi(act, qg, "direct"), gaussian.v_dphi(act, qg, "direct")
        with np.errstate(divide="ignore", invalid="ignore"):
            h = qg - vg / vdg  # sigma_b2 along the critical line
            slope = gaussian.dv_phi(act, qg, "direct") / vdg  # length-map slope on the line
        # h = q - V/V' cancels: near q = 0 it is O(q^3) for tanh while its rounding and quadrature
        # error is ~1e-15 q, so below q ~ 1e-5 its sign is noise.  Crossings are sought only where
        # h is resolved; below that the line is extrapolated as a power law (see below).
        resolved = np.abs(h) >= _H_RESOLVED * qg
        resolved[0] = True
        good = np.isfinite(h) & (vdg > 0) & resolved
        # A critical point at q* = 0 has length-map slope 1 there (sigma_w2 = 1/phi'(0)^2); it is
        # a fixed point the iteration approaches only if sigma_w2 V(q) < q just above 0 (tanh,
        # erf), not if the second-order term pushes q up (gelu, silu).
        attracting = np.ones(qg.shape, dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            probe = 1e-4
            attracting[0] = bool(gaussian.v_phi(act, probe) / vdg[0] <= probe) if vdg[0] > 0 else False
        for i in range(0, n, 4096):
            sl = slice(i, min(n, i + 4096))
            d = h[None, :] - sbf[sl, None]
            exact = good[None, :] & (d == 0) & (slope[None, :] <= 1 + 1e-12) & attracting[None, :]
            cross = (good[None, :-1] & good[None, 1:] & (np.sign(d[:, :-1]) * np.sign(d[:, 1:]) < 0)
                     & ((slope[None, :-1] < 1) | (slope[None, 1:] < 1)))
            j = np.where(cross.any(axis=1), cross.argmax(axis=1), -1)
            je = np.where(exact.any(axis=1), exact.argmax(axis=1), -1)
            loc = np.arange(sl.start, sl.stop)
            use_exact = (je >= 0) & ((j < 0) | (je <= j))
            qs[loc[use_exact]] = qg[je[use_exact]]
            status[loc[use_exact]] = OK
            todo = (j >= 0) & ~use_exact
            if todo.any():
                def f(q, target):
                    return q - gaussian.v_phi(act, q) / gaussian.v_dphi(act, q) - target

                qs[loc[todo]] = _find_root(f, qg[j[todo]], qg[j[todo] + 1], args=(sbf[sl][todo],))
                status[loc[todo]] = OK
        _extrapolate_small_q(act, qg, h, good, attracting[0], sbf, qs, status)
        ok = status == OK
        sw[ok] = 1.0 / gaussian.v_dphi(act, qs[ok], "direct")
    if shape == ():
        return EdgeOfChaos(act.name, float(sbf[0]), float(sw[0]), float(qs[0]), STATUS_MESSAGES[int(status[0])])
    return EdgeOfChaos(act.name, sbf.reshape(shape), sw.reshape(shape), qs.reshape(shape), status.reshape(shape))


_H_RESOLVED = 1e-6


def _extrapolate_small_q(act, qg, h, good, attracting0, sbf, qs, status) -> None:
    """Critical points below the resolved part of the line, 0 < sigma_b2 < h(q_r) with q_r the
    smallest q > 0 where h is resolved (derived, docs/theory.md §A1.6).  For phi analytic at 0 with
    phi(0) = 0, h(q) = (q V'(q) - V(q)) / V'(q) is a power series whose q term cancels: h =
    q^m (a + b q + c q^2 + ...), m = 3 for odd phi (tanh: a = 4/3), m = 2 otherwise.  m is read
    as the integer log-slope of the first two resolved points, a, b, c fitted to three, and
    h(q*) = sigma_b2 solved by Newton: q* to ~1e-6 relative (the fit's truncation against the
    quadrature's noise in h), sigma_w2 = 1/V'(q*) to rounding."""
    idx = np.flatnonzero(good[1:]) + 1
    if not attracting0 or idx.size < 3 or not np.array_equal(idx[:3], idx[0] + np.arange(3)):
        return
    q3, h3 = qg[idx[:3]], h[idx[:3]]
    if not (h3 > 0).all():
        return
    slope = math.log(h3[1] / h3[0]) / math.log(q3[1] / q3[0])
    m = round(slope)
    if m < 2 or abs(slope - m) > 0.2:
        return
    coef = np.linalg.solve(np.vander(q3, 3, increasing=True), h3 / q3 ** m)
    small = (sbf > 0) & (sbf < h3[0]) & ((status != OK) | (qs < q3[0]))
    if not small.any():
        return
    target = sbf[small]
    x = q3[0] * (target / h3[0]) ** (1.0 / m)
    for _ in range(8):
        poly = coef[0] + x * (coef[1] + x * coef[2])
        dpoly = coef[1] + 2 * x * coef[2]
        fx = x ** m * poly - target
        dfx = m * x ** (m - 1) * poly + x ** m * dpoly
        x = x - fx / dfx
    qs[small] = x
    status[small] = OK


def edge_of_chaos(activation, sigma_b2: float = 0.0) -> EdgeOfChaos:
    """The critical sigma_w2 (chi_1(q*) = 1) for one sigma_b2, and q* there; raises NoFixedPoint
    with the reason where there is none."""
    act = get_activation(activation)
    sb = float(check_variance("sigma_b2", sigma_b2))
    if act.d1 is None and act.closed_forms.get("vd") is None:
        raise NoFixedPoint(f"no edge of chaos for {act.name}: {act.missing_reason or 'it has no derivative'}")
    res = edge_of_chaos_curve(act, sb)
    k = _homogeneous_k(act)
    if k is not None and sb > 0:
        raise NoFixedPoint(
            f"no edge of chaos for {act.name} at sigma_b2 = {sb:g}: chi_1 = sigma_w2 * {k:g} does not depend "
            f"on q, so chi_1 = 1 needs sigma_w2 = {1 / k:g}, where the length map has no fixed point "
            f"unless sigma_b2 = 0 (q grows linearly)")
    if res.status == STATUS_MESSAGES[NO_EOC]:
        raise NoFixedPoint(
            f"no edge of chaos for {act.name} at sigma_b2 = {sb:g}: along the critical line "
            f"sigma_b2(q) = q - V(q)/V'(q) never equals {sb:g} at a stable length fixed point")
    if res.status == STATUS_MESSAGES[MARGINAL]:
        return EdgeOfChaos(act.name, sb, res.sigma_w2, math.nan, STATUS_MESSAGES[MARGINAL])
    return res


@dataclass(frozen=True)
class FixedPointGrid:
    """Grid solve of q*, chi_1 and (optionally) c*, xi_c over arrays of sigma_w2, sigma_b2."""

    sigma_w2: np.ndarray
    sigma_b2: np.ndarray
    q_star: np.ndarray
    chi_1: np.ndarray
    status: np.ndarray
    c_star: np.ndarray | None = None
    chi_c: np.ndarray | None = None
    xi_c: np.ndarray | None = None


def solve_grid(activation, sigma_w2, sigma_b2, *, with_c_star: bool = False, q0: float = 1.0,
               progress=None) -> FixedPointGrid:
    """q*, chi_1 (and c*, chi_c, xi_c if asked) on a broadcast grid; per-point status.

    The chaotic phase's c* comes from :func:`_chaotic_c_star` (closed forms, the Hermite series
    of W at q*, or expect2's outer rule with a closed-form inner expectation): within ~1e-13 of
    the accurate path (:func:`c_star`) away from the edge of chaos, where both lose digits as
    1 / (1 - chi_c) (docs/theory.md, "the chaotic c*").
    """
    act = get_activation(activation)
    sw, sb = np.asarray(sigma_w2, float), np.asarray(sigma_b2, float)
    try:
        sw, sb = np.broadcast_arrays(sw, sb)
    except ValueError:
        raise DomainError(f"sigma_w2 (shape {sw.shape}) and sigma_b2 (shape {sb.shape}) do not broadcast "
                          "together; for a grid of two axes pass np.meshgrid(sigma_w2, sigma_b2)") from None
    res = solve_q_star(act, sw, sb, q0)
    ok = np.isin(res.status, (OK, ZERO, MARGINAL))
    q = np.where(ok, res.q_star, np.nan)
    chi1 = np.where(ok, sw * gaussian.v_dphi(act, np.where(ok, q, 1.0)), np.nan)
    if not with_c_star:
        return FixedPointGrid(sw, sb, q, chi1, res.status)
    cs = np.where(ok & (chi1 <= 1 + _PHASE_TOL), 1.0, np.nan)
    chic = np.where(cs == 1.0, chi1, np.nan)
    chaotic = np.flatnonzero((ok & (chi1 > 1 + _PHASE_TOL)).reshape(-1))
    if chaotic.size:
        cs_f, chic_f = cs.reshape(-1), chic.reshape(-1)
        qf, swf, sbf = q.reshape(-1), sw.reshape(-1), sb.reshape(-1)
        step = 8192
        for s in range(0, chaotic.size, step):
            idx = chaotic[s:s + step]
            cs_f[idx], chic_f[idx] = _chaotic_c_star(act, qf[idx], swf[idx], sbf[idx])
            if progress is not None:
                progress(min(s + step, chaotic.size), chaotic.size)
        cs, chic = cs_f.reshape(sw.shape), chic_f.reshape(sw.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.where(np.abs(np.abs(chic) - 1) <= _PHASE_TOL, np.inf, -1.0 / np.log(np.abs(chic)))
    return FixedPointGrid(sw, sb, q, chi1, res.status, cs, chic, xi)


def _chaotic_c_star(act: Activation, q, sw, sb):
    """The stable c* < 1 and chi_c there at chaotic points (chi_1 > 1; docs/theory.md §A1.3), 1-D arrays.

    h(c) = C(c) - c is convex on [0, 1] (W_phi(q, q, c) = sum_k a_k^2 c^k has non-negative
    coefficients), h(0) = (sigma_w2 E[phi]^2 + sigma_b2) / q >= 0 and h(1) = 0 with h'(1) =
    chi_1 - 1 > 0, so c* is the one root in [0, 1), found by :func:`_newton_sqrt` for all points
    at once (docs/theory.md 2.1).  W and E[phi' phi'] come from the
    closed forms where the activation has them, else from the Hermite series (smooth phi),
    else from expect2's outer rule with the inner expectation in closed form (elu, selu), else
    from expect2 itself; the series falls back to expect2 where it does not converge."""
    q, sw, sb = (np.asarray(a, float).reshape(-1) for a in (q, sw, sb))
    n = q.size
    if act.closed_forms.get("w") is not None and act.closed_forms.get("wd") is not None:
        def closed(i, c):
            w = gaussian.w_phi(act, q[i], q[i], c)
            return (sw[i] * w + sb[i]) / q[i] - c, sw[i] * gaussian.w_dphi(act, q[i], q[i], c)

        return _newton_sqrt(closed, n, np.zeros(n), iters=100)
    if not act.kinks and act.d1 is not None:
        return _series_c_star(act, q, sw, sb)
    elu = _elu_params(act)
    if elu is not None:
        smooth = _elu_smoothed(*elu)
        fs = (act.fn, act.d1)

        def inner(i, c):
            w, wd = gaussian.expect2_inner(fs, smooth, q[i], q[i], c, act.kinks)
            return (sw[i] * w + sb[i]) / q[i] - c, sw[i] * wd

        c0 = _closure_start(act, q, sw, sb)
        return _newton_sqrt(inner, n, np.nan_to_num(c0))
    return _newton_sqrt(_expect2_map(act, q, sw, sb), n, np.zeros(n))


def _newton_sqrt(hd, n, c0, iters: int = 40):
    """Newton for kinked phi, on g = h / (1 - c) as a function of t = sqrt(1 - c).

    A kink in phi' gives h(1 - e) = -(chi_1 - 1) e + A e^(3/2) + ... [D], so g is nearly linear
    in t and c* is found in a few steps even at 1 - c* ~ 1e-10, where Newton in c crawls (g has
    a square-root singularity at c = 1).  g > 0 means c < c*, that is t > t*; the bracket in t
    starts at (0, 1] and a step that leaves it bisects.  Returns (c*, chi_c)."""
    t = np.sqrt(np.clip(1.0 - np.asarray(c0, float), 0.0, 1.0))
    t = np.where(t > 0, t, 0.5)
    chic = np.full(n, np.nan)
    lo, hi = np.zeros(n), np.ones(n)
    done_c = np.full(n, np.nan)
    last = np.full(n, np.inf)  # the previous step, in c
    prev_t, prev_chic = np.full(n, np.nan), np.full(n, np.nan)
    idx = np.arange(n)
    for _ in range(iters):
        if idx.size == 0:
            break
        ti = t[idx]
        ci = 1.0 - ti * ti
        h, dh = hd(idx, ci)
        chic[idx] = dh
        g = h / (ti * ti)
        hi[idx] = np.where(g > 0, ti, hi[idx])
        lo[idx] = np.where(g < 0, ti, lo[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            new = ti + g * ti / (2.0 * (dh - 1.0 + g))
        out = ~((new > lo[idx]) & (new < hi[idx]))
        new = np.where(out, 0.5 * (lo[idx] + hi[idx]), new)
        t[idx] = new
        # odd phi with sigma_b2 = 0: h(0) = 0 up to rounding, and c* = 0 (docs/theory.md §A1.3)
        zero = (ti == 1.0) & (h <= 1e-14)
        new = np.where(zero, 1.0, new)
        d = np.abs(2.0 * ti * (new - ti))
        # Quadratic convergence seen (e_{n+1} ~ C e_n^2 with C ~ d_n / d_{n-1}^2): the error
        # left after this step is ~ d_n^3 / d_{n-1}^2, so no confirming pass is needed.
        # chi_c, read at t_n, is carried to t_{n+1} along the secant in t through the last two
        # iterates (in t, not c: next to a kink chi_c(c) has a sqrt(1 - c) term, linear in t).
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            settled = (np.isfinite(last[idx]) & (d <= 1e-9) & (d ** 3 <= 1e-16 * last[idx] ** 2)
                       & (np.abs(new - ti) <= 1e-6 * ti))
            slope = (dh - prev_chic[idx]) / (ti - prev_t[idx])
            settled &= np.isfinite(slope)
        chic[idx] = np.where(settled & ~out, dh + slope * (new - ti), dh)
        last[idx] = np.where(out, np.inf, d)
        prev_t[idx], prev_chic[idx] = ti, dh
        fin = (((d <= 1e-14) | settled) & ~out) | (g == 0) | zero | (hi[idx] - lo[idx] <= 1e-15)
        done_c[idx[fin]] = 1.0 - new[fin] * new[fin]
        # h > 0 with h' > 0 does not happen for the convex map (h > 0 only left of c*, where it
        # decreases): W's rounding is larger than h there, c* is closer to 1 than W resolves
        # (c_star raises for these); left nan
        lost = (h > 0) & (dh > 1.0) & ~fin
        fin |= lost
        idx = idx[~fin]
    return done_c, chic


def _closure_start(act, q, sw, sb, n_coef: int = 256):
    """A start for c* where the Hermite series converges slowly (kinks: a_k^2 ~ k^(-5/2)): the
    first K = n_coef terms plus alpha c^K + beta c^2K, with alpha, beta chosen so that the model
    keeps W(1) = V = (q - sigma_b2) / sigma_w2 and W'(1) = q V_phi'(q): then C(1) = 1 and
    C'(1) = chi_1 hold, and the model has its root in [0, 1) like the true map."""
    n = q.size
    x, basis = gaussian._hermite_basis(n_coef, n_coef)
    a2 = np.empty((n, n_coef))
    for sl in gaussian._chunks(n, n_coef):
        a2[sl] = (act.fn(np.sqrt(q[sl])[:, None] * x[None, :]) @ basis) ** 2
    k = np.arange(n_coef)
    m0 = (q - sb) / sw - a2.sum(axis=1)
    m1 = q * gaussian.v_dphi(act, q) - (a2 * k).sum(axis=1)
    beta = (m1 - n_coef * m0) / n_coef
    alpha = m0 - beta
    scale, sbq = sw / q, sb / q

    def model(i, c):
        pw = np.cumprod(np.broadcast_to(c[:, None], (c.size, n_coef)), axis=1)
        ck1, ck = pw[:, -2], pw[:, -1]
        w = a2[i, 0] + np.einsum("ij,ij->i", a2[i, 1:], pw[:, :-1]) + alpha[i] * ck + beta[i] * ck * ck
        dw = (a2[i, 1] + np.einsum("ij,ij->i", a2[i, 2:] * k[None, 2:], pw[:, :-2])
              + n_coef * ck1 * (alpha[i] + 2.0 * beta[i] * ck))
        return scale[i] * w + sbq[i] - c, scale[i] * dw

    c0, _ = _newton_sqrt(model, n, np.zeros(n))
    return c0


def _expect2_map(act, q, sw, sb):
    def accurate(i, c):
        w = gaussian.w_phi(act, q[i], q[i], c)
        return (sw[i] * w + sb[i]) / q[i] - c, sw[i] * gaussian.w_dphi(act, q[i], q[i], c)

    return accurate


# Gauss-Hermite node counts tried for the series, and the resolution rule: the smallest count
# whose top quarter of coefficients holds <= 1e-12 of V_phi (calibrated against expect2: c* then
# agrees to rounding, tests/test_phase_speed.py); coefficient counts K tried within a node count.
_SERIES_NODES = (64, 128, 256, 512, 1024, 2048)
_SERIES_RESOLVED = 1e-12
_SERIES_TOL = 1e-14


def _series_nodes(act, q):
    """Per point, the Gauss-Hermite node count that resolves phi(sqrt(q) z) (0: none does).
    Decided at 41 q values spanning the points' range; a point takes the count of the next one
    above it (the count grows with q: phi(sqrt(q) z) sharpens in z)."""
    lq = np.log(q)
    probe = np.exp(np.linspace(lq.min(), lq.max(), 41)) if q.size else q
    need = np.zeros(probe.size, dtype=int)
    v = gaussian.v_phi(act, probe, "direct")
    for nn in _SERIES_NODES:
        left = np.flatnonzero(need == 0)
        if left.size == 0:
            break
        a2 = gaussian.hermite_coefficients(act.fn, probe[left], nn, nn) ** 2
        ok = a2[:, 3 * nn // 4:].sum(axis=1) <= _SERIES_RESOLVED * v[left]
        need[left[ok]] = nn
    need = np.where(need == 0, 1 << 30, need)
    out = need[np.clip(np.searchsorted(probe, q), 0, probe.size - 1)]
    return np.where(out == 1 << 30, 0, out)


def _series_newton(a2, q, sw, sb, start):
    """c* and chi_c of the truncated series C_K(c) = (sigma_w2 sum_{k<K} a_k^2 c^k + sigma_b2) / q
    (a2: (n, K) squared coefficients), by :func:`_newton_sqrt` from ``start``."""
    n, n_coef = a2.shape
    scale, sbq = sw / q, sb / q
    k = np.arange(n_coef)
    a2k = a2[:, 2:] * k[None, 2:]

    def direct(i, c):
        pw = np.cumprod(np.broadcast_to(c[:, None], (c.size, n_coef - 1)), axis=1)
        w = a2[i, 0] + np.einsum("ij,ij->i", a2[i, 1:], pw)
        dw = a2[i, 1] + np.einsum("ij,ij->i", a2k[i], pw[:, :-1])
        return scale[i] * w + sbq[i] - c, scale[i] * dw

    return _newton_sqrt(direct, n, start)


def _series_tail(a2):
    """Estimates of sum_{k>=K} a_k^2 and sum_{k>=K} k a_k^2 from the last two quarters of the
    K coefficients: their energies E1, E2 continued as a geometric series of quarter blocks,
    E2 r / (1 - r) with r = E2 / E1, times 10 (coefficients that decay slower than geometric,
    exp(-a sqrt(k)) for functions analytic in a strip, have r growing towards 1); r >= 1/2
    counts as not converging (the whole of E1 + E2, times 10)."""
    n_coef = a2.shape[1]
    k = np.arange(n_coef)
    q1, q2, q3 = n_coef // 2, 3 * n_coef // 4, n_coef
    out = []
    for wgt in (1.0, k):
        w = a2 * wgt
        e1, e2 = w[:, q1:q2].sum(axis=1), w[:, q2:q3].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(e1 > 0, e2 / e1, 0.0)
        out.append(10.0 * np.where(r < 0.5, e2 * r / (1.0 - r), e1 + e2))
    return out


def _series_c_star(act, q, sw, sb):
    """c*, chi_c from the Hermite series (smooth phi).

    Nodes per point by :func:`_series_nodes`; then K = 64, 256, ... up to the node count.
    Truncation bound (derived): the dropped sum_{k>=K} a_k^2 c^k is at most c^K times the tail
    energy, estimated by the last half's energy sum_{K/2<=k<K} a_k^2 (which exceeds the tail
    for coefficients decaying like k^(-1) or faster); it moves c* by sigma_w2 / q times that
    over |1 - chi_c|.  A point is kept when that is below 1e-14; points that no node count
    resolves, or that no K certifies, go to expect2."""
    n = q.size
    c = np.full(n, np.nan)
    chic = np.full(n, np.nan)
    nodes = _series_nodes(act, q)
    rest = [np.flatnonzero(nodes == 0)]
    carry = np.zeros(0, dtype=int)
    for nn in _SERIES_NODES:
        # a point that no K certifies at one node count moves on to the next
        todo = np.concatenate([carry, np.flatnonzero(nodes == nn)])
        if todo.size == 0:
            continue
        # the symmetric rule folded in half (gaussian.hermite_half_rule)
        even, odd = gaussian.hermite_half_sums(act.fn, q[todo], gaussian.hermite_half_rule(int(nn), 2)[0])
        start = np.zeros(todo.size)
        rows = np.arange(todo.size)
        for n_coef in sorted({min(64, nn), min(256, nn), nn}):
            if todo.size == 0:
                break
            full = rows.size == even.shape[0]
            a2 = gaussian.hermite_half_coefficients(even if full else even[rows], odd if full else odd[rows],
                                                    *gaussian.hermite_half_rule(int(nn), n_coef)[2:])
            a2 **= 2
            ct, cht = _series_newton(a2, q[todo], sw[todo], sb[todo], start)
            e0, e1 = _series_tail(a2)
            scale = sw[todo] / q[todo]
            with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
                pw = np.where(ct > 0, ct, 0.0) ** n_coef
                dc = scale * e0 * pw / np.abs(1.0 - cht)
                dchi = scale * e1 * pw / np.maximum(ct, 1e-300)
            ok = np.isfinite(ct) & (dc <= _SERIES_TOL) & (dchi <= _SERIES_TOL * np.abs(cht))
            c[todo[ok]], chic[todo[ok]] = ct[ok], cht[ok]
            start = np.clip(np.nan_to_num(ct[~ok]), 0.0, 1.0 - 1e-12)
            todo, rows = todo[~ok], rows[~ok]
        carry = todo
    rest.append(carry)
    rest = np.concatenate(rest)
    if rest.size:
        qa, swa, sba = q[rest], sw[rest], sb[rest]
        c[rest], chic[rest] = _newton_sqrt(_expect2_map(act, qa, swa, sba), rest.size, np.zeros(rest.size))
    return c, chic


def _elu_params(act: Activation):
    """(alpha, lambda) when act is the registry's elu / selu, phi = lambda x (x > 0),
    lambda alpha (e^x - 1) (x <= 0); else None."""
    from .activations import parse_spec

    try:
        name, _ = parse_spec(act.name)
    except Exception:  # noqa: BLE001 - a custom name is simply not an elu
        return None
    if name not in ("elu", "selu") or act.d1 is None:
        return None
    lam = float(act.d1(np.array(1.0)))
    alpha = float(act.fn(np.array(-1.0))) / (lam * math.expm1(-1.0))
    x = np.array([-3.0, -0.5, 0.7, 2.0])
    want = lam * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))
    return (alpha, lam) if np.allclose(act.fn(x), want, rtol=1e-14, atol=0) else None


def _elu_smoothed(alpha: float, lam: float):
    """(m, s) -> (E[phi(m + s z)], E[phi'(m + s z)]) for elu(alpha) times lambda, z ~ N(0, 1),
    s > 0 (derived, docs/theory.md): with t = m / s,
    E[phi] = lambda (m Phi(t) + s pdf(t)) + lambda alpha (E - Phi(-t)),
    E[phi'] = lambda Phi(t) + lambda alpha E,  E = e^{m + s^2/2} Phi(-t - s),
    E written as e^{-t^2/2} erfcx((t + s)/sqrt 2) / 2 where t + s > 0 (no overflow at large s)."""
    from scipy import special as sps

    def smoothed(m, s):
        s = np.ascontiguousarray(s)
        t = m / s
        x = t + s
        with np.errstate(under="ignore"):
            g = np.exp(-0.5 * t * t)
        big = x > 0
        e = np.empty_like(t)
        e[big] = 0.5 * g[big] * sps.erfcx(x[big] / np.sqrt(2.0))
        sm = ~big
        e[sm] = np.exp(m[sm] + 0.5 * s[sm] * s[sm]) * sps.ndtr(-x[sm])
        pt = sps.ndtr(t)
        # 1 - Phi(t) for Phi(-t): absolute error 1e-16 against terms of order one
        return (lam * (m * pt + s * g / np.sqrt(2.0 * np.pi)) + lam * alpha * (e - (1.0 - pt)),
                lam * pt + lam * alpha * e)

    return smoothed


__all__ = ["FixedPoint", "fixed_point", "solve_q_star", "QStar", "edge_of_chaos", "edge_of_chaos_curve",
           "EdgeOfChaos", "solve_grid", "FixedPointGrid", "c_star", "phase_of", "STATUS_MESSAGES",
           "PhaseDiagram", "phase_diagram", "critical_line"]



@dataclass(frozen=True)
class PhaseDiagram:
    """chi_1, q*, c*, xi_c over a (sigma_w2, sigma_b2) grid and the edge-of-chaos curve."""

    activation: str
    sigma_w2: np.ndarray  # 1-D axis
    sigma_b2: np.ndarray  # 1-D axis
    chi_1: np.ndarray  # (len(sigma_b2), len(sigma_w2))
    q_star: np.ndarray
    c_star: np.ndarray | None
    xi_c: np.ndarray | None
    status: np.ndarray
    eoc_sigma_b2: np.ndarray
    eoc_sigma_w2: np.ndarray

    def arrays(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray)}
        return d

    def summary(self) -> dict:
        ok = np.isfinite(self.chi_1)
        n = self.chi_1.size
        return {
            "activation": self.activation,
            "grid": [int(self.sigma_b2.size), int(self.sigma_w2.size)],
            "sigma_w2_range": [float(self.sigma_w2[0]), float(self.sigma_w2[-1])],
            "sigma_b2_range": [float(self.sigma_b2[0]), float(self.sigma_b2[-1])],
            "fraction_ordered": float(np.sum(ok & (self.chi_1 < 1)) / n),
            "fraction_chaotic": float(np.sum(ok & (self.chi_1 > 1)) / n),
            "fraction_no_fixed_point": float(np.sum(~ok) / n),
            "eoc_points": int(np.sum(np.isfinite(self.eoc_sigma_w2))),
        }


def phase_diagram(activation, *, sigma_w2_max: float = 5.0, sigma_b2_max: float = 2.0, grid: int = 200,
                  sigma_w2_min: float | None = None, with_xi_c: bool = True, progress=None) -> PhaseDiagram:
    """chi_1(q*) over a grid x grid lattice of (sigma_w2, sigma_b2), the edge-of-chaos curve, and
    (optionally) xi_c (docs/theory.md §A1.3-1.6).  One vectorised solve; ``progress(done, total)`` is called
    while the chaotic phase's c* is solved."""
    act = get_activation(activation)
    if isinstance(grid, bool) or int(grid) != grid or grid < 2:
        raise DomainError(f"grid must be an integer >= 2, got {grid!r}")
    grid = int(grid)
    # ~64 float64 arrays of grid x grid points live at once in solve_grid (measured: 30-50)
    check_memory(grid * grid * 64 * 8, f"a phase diagram of {format_count(grid)} x {format_count(grid)} points",
                 "use a smaller grid (200 draws the committed figures)")
    check_variance("sigma_w2_max", sigma_w2_max, positive=True)
    check_variance("sigma_b2_max", sigma_b2_max, positive=True)
    lo = sigma_w2_max / (2 * grid) if sigma_w2_min is None else float(check_variance("sigma_w2_min", sigma_w2_min))
    sw_axis = np.linspace(lo, sigma_w2_max, grid)
    sb_axis = np.linspace(0.0, sigma_b2_max, grid)
    sw, sb = np.meshgrid(sw_axis, sb_axis)
    res = solve_grid(act, sw, sb, with_c_star=with_xi_c, progress=progress)
    if act.d1 is None and act.closed_forms.get("vd") is None:
        eb = ew = np.zeros(0)
    elif _homogeneous_k(act) is not None:
        eoc = edge_of_chaos_curve(act, np.zeros(1))  # one critical point, (1/k, 0)
        eb, ew = np.zeros(1), np.asarray(eoc.sigma_w2, float)
    else:
        eb, ew = critical_line(act, q0=1.0)
    return PhaseDiagram(act.name, sw_axis, sb_axis, res.chi_1, res.q_star, res.c_star, res.xi_c,
                        res.status, np.asarray(eb, float), np.asarray(ew, float))


# q* along the drawn critical line: 30 points per decade over [1e-8, 1e8]
_LINE_Q = np.logspace(-8, 8, 481)


def critical_line(activation, q0: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The edge of chaos drawn parametrically in q* (docs/theory.md §A1.6): sigma_w2(q) = 1 / V_phi'(q),
    sigma_b2(q) = q - V_phi(q) / V_phi'(q), with no root finding.  Kept: points where sigma_b2
    is resolved (|sigma_b2| >= 1e-6 q, as in :func:`edge_of_chaos_curve`) and >= 0, the length
    map is stable (slope V_phi'(q)^(-1) dV_phi/dq < 1) and q* is the fixed point that inputs of
    length q0 reach (no other crossing of the length map between q* and q0, on this q grid).
    Returns (sigma_b2, sigma_w2) in order of q*, nan between separate pieces."""
    act = get_activation(activation)
    qg = _LINE_Q
    v, vd, dv = (f(act, qg, "direct") for f in (gaussian.v_phi, gaussian.v_dphi, gaussian.dv_phi))
    with np.errstate(divide="ignore", invalid="ignore"):
        sw = 1.0 / vd
        sb = qg - v / vd
        slope = dv / vd
    keep = np.isfinite(sw) & np.isfinite(sb) & (vd > 0) & (sb >= 0) & (np.abs(sb) >= _H_RESOLVED * qg) & (slope < 1)
    # reached from q0: G(q') = sigma_w2 V(q') + sigma_b2 - q' keeps one sign strictly between
    # q* and q0 (the grid's own points next to q* excluded: there G ~ (slope - 1)(q' - q*))
    with np.errstate(over="ignore", invalid="ignore"):
        g = sw[:, None] * v[None, :] + sb[:, None] - qg[None, :]
    lo = np.minimum(qg, q0)[:, None]
    hi = np.maximum(qg, q0)[:, None]
    near = np.abs(np.log(qg[None, :] / qg[:, None])) <= 1.5 * np.log(qg[1] / qg[0])
    between = (qg[None, :] > lo) & (qg[None, :] < hi) & ~near
    want = np.where(qg < q0, -1.0, 1.0)[:, None]  # q* below q0: the map pulls q0 down to it, and so on
    wrong = between & ~(np.sign(g) == want)
    keep &= ~wrong.any(axis=1)
    sw = np.where(keep, sw, np.nan)
    sb = np.where(keep, sb, np.nan)
    return sb, sw
