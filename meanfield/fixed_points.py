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
class _LazyElementwise:
    """scipy.optimize.elementwise, imported on first use (start-up time of the CLI)."""

    def __getattr__(self, name):
        from scipy.optimize import elementwise as mod

        return getattr(mod, name)


elementwise = _LazyElementwise()
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
    """q* for arrays of (sigma_w2, sigma_b2) (MATH.md 1.2), broadcast together; see module docs."""
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

        res = elementwise.find_root(f, (lo[todo], hi[todo]), args=(sw[todo], sb[todo]),
                                    tolerances={"xrtol": 4 * np.finfo(float).eps, "xatol": 1e-300})
        qs[todo] = res.x
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

        res = elementwise.find_root(f2, (grid[j[idx]], grid[j[idx] + 1]), args=(sw[idx], sb[idx]),
                                    tolerances={"xrtol": 4 * np.finfo(float).eps, "xatol": 1e-300})
        qu[idx] = res.x
    return qs, qu, status


def _inf_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class FixedPoint:
    """The stable fixed point of a vanilla network and the diagnostics at it (MATH.md 1.2-1.5).

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
    """xi = -1 / log|slope| (MATH.md 1.4); inf at |slope| = 1."""
    a = abs(slope)
    if a == 0:
        return 0.0
    if abs(a - 1.0) <= _PHASE_TOL:
        return math.inf
    return -1.0 / math.log(a) if a < 1 else math.inf


def c_star(activation, q_star: float, sigma_w2: float, sigma_b2: float,
           chi1: float | None = None, bivariate: str = "accurate") -> float:
    """The stable fixed point of the C-map at q* (MATH.md 1.3): 1 in the ordered phase, the
    root of C(c) = c in [-1, 1) in the chaotic phase."""
    act = get_activation(activation)
    if chi1 is None:
        chi1 = float(sigma_w2 * gaussian.v_dphi(act, q_star))
    if chi1 <= 1 + _PHASE_TOL:
        return 1.0
    from scipy.optimize import brentq

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
        return brentq(h, 0.0, 1 - eps, xtol=1e-15, rtol=1e-15)
    lo = -1.0
    return brentq(h, lo, 0.0, xtol=1e-15, rtol=1e-15) if h(lo) > 0 else lo


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
    """q*, c*, chi_1, chi_c, xi_q, xi_c and the phase at (sigma_w2, sigma_b2) (MATH.md 1.2-1.4).

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
    """Points (sigma_w2, sigma_b2) with chi_1(q*) = 1 and q* there (MATH.md 1.3, 1.6)."""

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
    """Vectorised edge of chaos: for each sigma_b2 the sigma_w2 with chi_1(q*) = 1 (MATH.md 1.6).

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

                res = elementwise.find_root(f, (qg[j[todo]], qg[j[todo] + 1]), args=(sbf[sl][todo],),
                                            tolerances={"xrtol": 4 * np.finfo(float).eps, "xatol": 1e-300})
                qs[loc[todo]] = res.x
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
    smallest q > 0 where h is resolved (derived, MATH.md 1.6).  For phi analytic at 0 with
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

    The chaotic phase's c* uses the Gauss-Hermite bivariate rule (see
    gaussian.expect2_hermite) unless the activation has a closed-form kernel; accurate to ~1e-6
    for smooth activations, which is what a contour plot needs.
    """
    act = get_activation(activation)
    sw, sb = np.broadcast_arrays(np.asarray(sigma_w2, float), np.asarray(sigma_b2, float))
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
        step = 512
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
    closed = act.closed_forms.get("w") is not None

    def cmap(c, q_, sw_, sb_):
        w = gaussian.w_phi(act, q_, q_, c) if closed else gaussian.expect2_hermite(act.fn, act.fn, q_, q_, c)
        return (sw_ * w + sb_) / q_ - c

    h0 = cmap(np.zeros_like(q), q, sw, sb)
    h0 = np.where(np.abs(h0) <= 1e-14, 0.0, h0)  # odd phi, sigma_b2 = 0: C(0) = 0 up to rounding
    # First sign change on a coarse c grid; probing very close to 1 would ask the product rule
    # for accuracy it does not have at c -> 1.
    cg = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999])
    hg = np.stack([cmap(np.full(q.shape, cv), q, sw, sb) for cv in cg], axis=1)
    neg = hg <= 0
    first = np.where(neg.any(axis=1), neg.argmax(axis=1), cg.size - 1)
    hi = cg[first]
    lo_pos = np.where(first > 0, cg[np.maximum(first - 1, 0)], 0.0)
    lo = np.where(h0 > 0, lo_pos, -1.0 + 1e-9)
    hi = np.where(h0 > 0, hi, 0.0)
    res = elementwise.find_root(cmap, (lo, hi), args=(q, sw, sb), tolerances={"xatol": 1e-12})
    c = np.where(h0 == 0, 0.0, res.x)
    if closed:
        chic = sw * gaussian.w_dphi(act, q, q, c)
    else:
        chic = sw * gaussian.expect2_hermite(act.d1, act.d1, q, q, c)
    # Just above the edge of chaos c* -> 1, beyond the product rule's resolution.  There the
    # C-map is C(1 - e) = 1 - chi_1 e + a e^2 + ..., whose stable root has slope 2 - chi_1: the
    # first-order value, used for these points (it only feeds the xi_c contours of a picture).
    near = ~np.isfinite(c)
    if near.any():
        chi1 = sw * gaussian.v_dphi(act, q)
        c = np.where(near, np.nan, c)
        chic = np.where(near, 2.0 - chi1, chic)
    return c, chic


__all__ = ["FixedPoint", "fixed_point", "solve_q_star", "QStar", "edge_of_chaos", "edge_of_chaos_curve",
           "EdgeOfChaos", "solve_grid", "FixedPointGrid", "c_star", "phase_of", "STATUS_MESSAGES",
           "PhaseDiagram", "phase_diagram"]



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
    (optionally) xi_c (MATH.md 1.3-1.6).  One vectorised solve; ``progress(done, total)`` is called
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
    eb = np.linspace(0.0, sigma_b2_max, 4 * grid)
    if act.d1 is None and act.closed_forms.get("vd") is None:
        ew = np.full(eb.shape, np.nan)
    else:
        eoc = edge_of_chaos_curve(act, eb)
        ew = np.where(np.isin(eoc.status, (OK, MARGINAL)), eoc.sigma_w2, np.nan)
        # Keep the critical points whose q* is the one reached from unit-length inputs, like the
        # rest of the diagram (gelu / silu have critical points with a tiny basin).
        fin = np.isfinite(ew) & (eoc.status == OK)
        if fin.any():
            reach = solve_q_star(act, ew[fin], eb[fin], q0=1.0)
            same = (reach.status == OK) & (np.abs(reach.q_star - eoc.q_star[fin]) <= 1e-6 * (1 + eoc.q_star[fin]))
            sub = ew[fin]
            sub[~same] = np.nan
            ew[fin] = sub
    return PhaseDiagram(act.name, sw_axis, sb_axis, res.chi_1, res.q_star, res.c_star, res.xi_c,
                        res.status, eb, np.asarray(ew, float))
