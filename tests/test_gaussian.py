"""meanfield.gaussian against independent references (issue 2 sections 2 and 6).

* Closed form == quadrature for every registry activation (``method="closed"`` / ``"quad"``).
* Accuracy against 30-digit mpmath: for the activations with closed forms, the exact formulas of
  MATH.md section 3 (and the Gaussian moments of max(0, u)^p) evaluated here in mpmath; for the
  others, this file's own quadrature in mpmath: composite 24-point Gauss-Legendre on z in
  [-11, 11] with panel edges at the kinks and, where phi is not flat (|u| <= 60), panels of
  u-width 1.2 (less than the distance pi/2 from the real axis to tanh's poles, the nearest
  singularity of any registry activation).  Bivariate references take the inner Gaussian
  average in closed form where phi allows it (elu, selu, hard_tanh, gelu: averages of x,
  e^x and Phi over a Gaussian) and use a Taylor expansion of the inner average near c = +-1 or
  a tensor-product rule (slow tests) for tanh, sigmoid, softplus, silu.
* The spline table used for large arrays of q (``gaussian._table``) against direct quadrature.

Tolerances (issue 2 section 2): 1e-12 relative for smooth activations, 1e-10 for piecewise ones
(any activation with kinks).  "Relative" is relative to the natural size of the quantity: for
V, V' the value; for W and W' the Cauchy-Schwarz bound sqrt(V(q1) V(q2)) (they may vanish, e.g.
at c = 0 for odd phi); for E[phi'' phi] and dV/dq the larger of the two terms E[phi'^2],
|E[phi'' phi]| whose sum dV/dq is (it may vanish, e.g. for relu).
"""

from __future__ import annotations

import math
from functools import lru_cache

import mpmath as mp
import numpy as np
import pytest

from meanfield import gaussian
from meanfield.activations import get_activation
from meanfield.errors import DomainError

DPS = 30
QS = [1e-4, 1e-2, 0.3, 1.0, 3.0, 30.0, 1e3]
CS = [-1.0, -0.6, 0.3, 0.9, 1.0 - 1e-12, 1.0]
PAIRS = [(0.3, 2.0), (1e-4, 1e3)]
ONE_D = {"v": gaussian.v_phi, "vd": gaussian.v_dphi, "dv": gaussian.dv_phi, "vdd": gaussian.e_ddphi_phi}
TWO_D = {"w": gaussian.w_phi, "wd": gaussian.w_dphi}


def tolerance(act) -> float:
    return 1e-10 if act.kinks else 1e-12


# ------------------------------------------------------------------------------------------
# Closed form == quadrature
# ------------------------------------------------------------------------------------------

def _scale_1d(act, name, q, method="closed"):
    if name in ("v", "vd"):
        return np.abs(ONE_D[name](act, q, method=method))
    return np.maximum(np.abs(gaussian.v_dphi(act, q, method=method)),
                      np.abs(gaussian.e_ddphi_phi(act, q, method=method)))


def _grid_2d():
    q1 = np.array([p[0] for p in PAIRS] + [p[1] for p in PAIRS])
    q2 = np.array([p[1] for p in PAIRS] + [p[0] for p in PAIRS])
    Q1, C = np.meshgrid(q1, CS)
    Q2, _ = np.meshgrid(q2, CS)
    return Q1, Q2, C


# Where the library's quadrature is known not to reach the closed forms (each is an xfail test
# further down, so the gap stays visible): oscillatory sin / cos at large q, and the algebraic
# endpoint singularities of max(0, u)^alpha for non-integer alpha.
QUAD_SKIP_1D = {"sin": lambda q: q > 10, "cos": lambda q: q > 10}
QUAD_BROKEN = {"alpha_relu:0.25", "alpha_relu:0.75", "alpha_relu:1.5"}


def test_closed_form_equals_quadrature_1d(registry_spec):
    act = get_activation(registry_spec)
    if registry_spec in QUAD_BROKEN:
        pytest.skip("quadrature of max(0,u)^alpha, non-integer alpha: see the xfail tests below")
    q = np.array([x for x in QS if not QUAD_SKIP_1D.get(registry_spec, lambda _: False)(x)])
    names = [n for n in ONE_D if n in act.closed]
    if not names:
        pytest.skip(f"{registry_spec} has no closed-form 1-D moments")
    for name in names:
        closed = ONE_D[name](act, q, method="closed")
        quad = ONE_D[name](act, q, method="quad")
        err = np.abs(closed - quad) / _scale_1d(act, name, q)
        assert np.all(err <= tolerance(act)), (name, q[np.argmax(err)], err.max())


def _two_d_scale(act, name, q1, q2):
    one = gaussian.v_phi if name == "w" else gaussian.v_dphi
    return np.sqrt(one(act, q1) * one(act, q2))


def test_closed_form_equals_quadrature_2d(registry_spec, request):
    act = get_activation(registry_spec)
    if registry_spec == "erf":
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=(
            "method='quad' for erf at q1 = 1e-4, q2 = 1e3, c = +-1: E[erf'(u) erf'(v)] off by 1.03e-12 "
            "of sqrt(V'(q1) V'(q2)) (5.8e-12 of the value), just above the 1e-12 target; auto mode "
            "uses the closed form, and tanh at the same point is within 1e-12 of mpmath")))
    if registry_spec in QUAD_BROKEN:
        pytest.skip("quadrature of max(0,u)^alpha, non-integer alpha: see the xfail tests below")
    names = [n for n in TWO_D if n in act.closed]
    if not names:
        pytest.skip(f"{registry_spec} has no closed-form kernel")
    Q1, Q2, C = _grid_2d()
    if registry_spec in ("sin", "cos"):
        keep = (Q1 <= 10) & (Q2 <= 10)
        Q1, Q2, C = Q1[keep], Q2[keep], C[keep]
    for name in names:
        closed = TWO_D[name](act, Q1, Q2, C, method="closed")
        quad = TWO_D[name](act, Q1, Q2, C, method="quad")
        q1, q2, cc = Q1, Q2, C
        err = np.abs(closed - quad) / _two_d_scale(act, name, q1, q2)
        i = np.argmax(err)
        assert err.max() <= tolerance(act), (name, q1.flat[i], q2.flat[i], cc.flat[i], err.max())


def test_quadrature_kinked_kernel_near_c_1():
    """The inner Gaussian has width ~1e-6 at c = 1 - 1e-12 and smooths the jump of relu' into a
    sqrt(1 - c) ~ 1e-6 term that the outer rule must resolve (it did not before 48a8b98)."""
    act = get_activation("relu")
    c = 1.0 - 1e-12
    closed = float(gaussian.w_dphi(act, 3.0, 1.0, c, method="closed"))
    quad = float(gaussian.w_dphi(act, 3.0, 1.0, c, method="quad"))
    # exact: (pi - theta) / (2 pi), theta = arccos c ~ sqrt(2e-12)
    exact = (math.pi - 2 * math.asin(math.sqrt((1 - c) / 2))) / (2 * math.pi)
    assert abs(closed - exact) <= 1e-15
    assert abs(quad - closed) <= 1e-10 * 0.5


@pytest.mark.xfail(strict=True, reason=(
    "method='quad' for oscillatory phi at large q: E[sin(sqrt(q) z)^2] is off by 2e-7 at q = 100 "
    "and 7% at q = 1e3 (panels follow u only up to |u| = 16). Auto mode uses the closed forms"))
def test_quadrature_sin_large_q():
    act = get_activation("sin")
    q = np.array([100.0, 1e3])
    assert np.allclose(gaussian.v_phi(act, q, method="quad"), gaussian.v_phi(act, q, method="closed"),
                       rtol=1e-12, atol=0)


@pytest.mark.xfail(strict=True, reason=(
    "method='quad' for max(0,u)^alpha with non-integer alpha: the u^(2 alpha) or u^(2 alpha - 2) "
    "endpoint singularity at the kink limits Gauss-Legendre to ~1e-7 (alpha = 0.75, q = 1e-4). "
    "Auto mode uses the closed forms"))
def test_quadrature_alpha_relu_noninteger():
    act = get_activation("alpha_relu:0.75")
    q = np.array(QS)
    for name in ("v", "vd"):
        closed = ONE_D[name](act, q, method="closed")
        quad = ONE_D[name](act, q, method="quad")
        assert np.all(np.abs(closed - quad) <= 1e-10 * np.abs(closed)), name


def test_method_argument_is_validated():
    act = get_activation("tanh")
    with pytest.raises(DomainError, match="method"):
        gaussian.v_phi(act, 1.0, method="exact")
    with pytest.raises(DomainError, match="closed form"):
        gaussian.v_phi(act, 1.0, method="closed")


def test_missing_derivative_is_a_domain_error():
    for spec in ("step", "alpha_relu:0.25"):
        act = get_activation(spec)
        for fn in (gaussian.v_dphi, gaussian.dv_phi):
            with pytest.raises(DomainError):
                fn(act, 1.0)
        with pytest.raises(DomainError):
            gaussian.w_dphi(act, 1.0, 1.0, 0.5)


# ------------------------------------------------------------------------------------------
# 30-digit references
# ------------------------------------------------------------------------------------------

def _tanh_all(u):
    t = mp.tanh(u)
    s = 1 - t * t  # sech^2 (absolute error 1e-30 where it is tiny: enough for the integrals)
    return t, s, -2 * t * s, -2 * s * (s - 2 * t * t)


def _sigmoid_all(u):
    g = 1 / (1 + mp.exp(-u))
    d = g * (1 - g)
    return g, d, d * (1 - 2 * g), d * ((1 - 2 * g) ** 2 - 2 * d)


def _softplus_all(u):
    g, d, dd, _ = _sigmoid_all(u)
    f = u + mp.log1p(mp.exp(-u)) if u > 0 else mp.log1p(mp.exp(u))
    return f, g, d, dd


def _silu_all(u):
    g, d, dd, _ = _sigmoid_all(u)
    return (u * g, g + u * d, 2 * d + u * dd,
            d * ((1 - 2 * g) * (2 + u * (1 - 2 * g)) + (1 - 2 * g) - 2 * u * d))


def _gelu_all(u):
    cdf, pdf = mp.ncdf(u), mp.npdf(u)
    return u * cdf, cdf + u * pdf, pdf * (2 - u * u), u * pdf * (u * u - 4)


def _elu_all(a, lam=1):
    a, lam = mp.mpf(a), mp.mpf(lam)

    def fn(u):
        if u > 0:
            return lam * u, lam, mp.mpf(0), mp.mpf(0)
        e = mp.exp(u)
        return lam * a * (e - 1), lam * a * e, lam * a * e, lam * a * e

    return fn


def _hard_tanh_all(u):
    inside = abs(u) < 1
    return max(mp.mpf(-1), min(mp.mpf(1), u)), mp.mpf(int(inside)), mp.mpf(0), mp.mpf(0)


_SELU_A = mp.mpf("1.6732632423543772848170429916717")
_SELU_L = mp.mpf("1.0507009873554804934193349852946")

# u -> (phi, phi', phi'', phi''') in mpmath, from the textbook definitions (the derivatives
# as ordinary derivatives away from the kinks)
MP_PHI = {
    "tanh": _tanh_all, "sigmoid": _sigmoid_all, "softplus": _softplus_all, "silu": _silu_all,
    "gelu": _gelu_all, "elu": _elu_all(1), "elu:0.5": _elu_all("0.5"),
    "selu": _elu_all(_SELU_A, _SELU_L), "hard_tanh": _hard_tanh_all,
}


@lru_cache(maxsize=8)
def _gl(degree, prec):
    from mpmath.calculus.quadrature import GaussLegendre

    return tuple(GaussLegendre(mp.mp).calc_nodes(degree, prec))  # 3 * 2^(degree-1) nodes on [-1, 1]


def _u_features(scale, width=40, step="1.6"):
    """z of a u-grid (spacing `step`, |u| <= width) for u = scale * z: where phi is not flat.
    Half the spacing, 0.8, is half the distance pi/2 from the real axis to tanh's poles."""
    if scale == 0:
        return []
    step = mp.mpf(step)
    n = int(2 * width / step)
    return [(-width + k * step) / scale for k in range(n + 1)]


def _graded(center, width, smallest):
    """Edges at center +- smallest * 2^j up to width: resolves a feature of size `smallest`."""
    out, d = [], smallest
    while d < width:
        out += [center - d, center + d]
        d *= 2
    return out


def _integrate(fn, features, zmax=11, degree=4):
    """E[fn(z)], z ~ N(0, 1): Gauss-Legendre (24 points: degree 4; 12: degree 3) on panels with
    edges at the integers of [-zmax, zmax] and at `features`; fn returns a tuple, so does this."""
    edges = sorted({mp.mpf(j) for j in range(-zmax, zmax + 1)} | {p for p in features if abs(p) < zmax})
    total = None
    for a, b in zip(edges, edges[1:]):
        h, m = (b - a) / 2, (b + a) / 2
        for x, w in _gl(degree, mp.mp.prec):
            z = m + h * x
            wt = w * h * mp.exp(-z * z / 2)
            vals = fn(z)
            total = [wt * v for v in vals] if total is None else [t + wt * v for t, v in zip(total, vals)]
    return tuple(t / mp.sqrt(2 * mp.pi) for t in total)


def _kinks(act):
    return [mp.mpf(k) for k in act.kinks]


def mp_moments_1d(spec, q):
    """30-digit V, V', E[phi'' phi] (with the delta terms of phi'' at kinks) and dV/dq."""
    act = get_activation(spec)
    phi = MP_PHI[spec]
    with mp.workdps(DPS):
        q = mp.mpf(q)
        s = mp.sqrt(q)
        kinks = _kinks(act)

        def integrand(z):
            f, f1, f2, _ = phi(s * z)
            return f * f, f1 * f1, f2 * f

        v, vd, vdd = _integrate(integrand, [k / s for k in kinks] + _u_features(s))
        eps = mp.mpf(10) ** -20
        for k in kinks:  # phi'' has (jump of phi') * delta(u - k); E[delta(u - k) phi(u)] = phi(k) p(k)
            jump = phi(k + eps)[1] - phi(k - eps)[1]
            vdd += jump * phi(k)[0] * mp.exp(-k * k / (2 * q)) / mp.sqrt(2 * mp.pi * q)
        return {"v": v, "vd": vd, "vdd": vdd, "dv": vd + vdd}


def _smoothed(spec, m, sd):
    """(E phi(m + sd Z), E phi'(m + sd Z)) in closed form (sd > 0)."""
    Phi, pdf = mp.ncdf, mp.npdf
    if spec in ("elu", "elu:0.5", "selu"):
        a, lam = {"elu": (1, 1), "elu:0.5": (mp.mpf("0.5"), 1), "selu": (_SELU_A, _SELU_L)}[spec]
        pos = m * Phi(m / sd) + sd * pdf(m / sd)  # E[X; X > 0]
        expneg = mp.exp(m + sd * sd / 2) * Phi(-(m + sd * sd) / sd)  # E[e^X; X < 0]
        return lam * (pos + a * (expneg - Phi(-m / sd))), lam * (Phi(m / sd) + a * expneg)
    if spec == "hard_tanh":
        al, be = (-1 - m) / sd, (1 - m) / sd
        inside = Phi(be) - Phi(al)
        return (-Phi(al) + (1 - Phi(be)) + m * inside + sd * (pdf(al) - pdf(be))), inside
    if spec == "gelu":
        r = mp.sqrt(1 + sd * sd)
        return m * Phi(m / r) + sd * sd * pdf(m / r) / r, Phi(m / r) + m * pdf(m / r) / r ** 3
    raise KeyError(spec)


CLOSED_INNER = ("elu", "elu:0.5", "selu", "hard_tanh", "gelu")


def mp_kernels_2d(spec, q1, q2, c):
    """30-digit (E[phi(u) phi(v)], E[phi'(u) phi'(v)]): u = s1 z1, v = s2 (c z1 + sqrt(1-c^2) z2).

    The inner average over z2 is exact at c = +-1; in closed form for elu, selu, hard_tanh,
    gelu; a Taylor expansion to sd^2 (sd^2 = q2 (1 - c^2) < 1e-10, so the next term is below
    1e-20) near c = +-1; otherwise (slow tests only) a 12-point Gauss-Legendre tensor-product
    rule on unit panels of [-9, 9] (error below 1e-16 for the q used here)."""
    act = get_activation(spec)
    phi = MP_PHI[spec]
    with mp.workdps(DPS):
        q1, q2, c = mp.mpf(q1), mp.mpf(q2), mp.mpf(c)
        s1, s2 = mp.sqrt(q1), mp.sqrt(q2)
        sd = s2 * mp.sqrt((1 - c) * (1 + c))
        kinks = _kinks(act)
        feats = [k / s1 for k in kinks] + _u_features(s1) + _u_features(s2 * abs(c))
        if c != 0:
            for k in kinks:  # the (smoothed) kink of the inner average sits at z1 = k / (s2 c)
                feats += [k / (s2 * c)] + (_graded(k / (s2 * c), 11, sd / (s2 * abs(c))) if sd > 0 else [])
        tensor = False
        if sd == 0:
            def inner(m):
                return phi(m)[:2]
        elif spec in CLOSED_INNER:
            def inner(m):
                return _smoothed(spec, m, sd)
        elif sd * sd < mp.mpf("1e-10"):
            def inner(m):  # E g(m + sd Z) = g(m) + sd^2 g''(m) / 2 + O(sd^4)
                f, f1, f2, f3 = phi(m)
                return f + sd * sd * f2 / 2, f1 + sd * sd * f3 / 2
        else:
            tensor = True
            rule = [(p + (x + 1) / 2, w / 2 * mp.exp(-(p + (x + 1) / 2) ** 2 / 2) / mp.sqrt(2 * mp.pi))
                    for p in range(-9, 9) for x, w in _gl(3, mp.mp.prec)]

            def inner(m):
                tot0 = tot1 = mp.mpf(0)
                for z, wt in rule:
                    f, f1 = phi(m + sd * z)[:2]
                    tot0 += wt * f
                    tot1 += wt * f1
                return tot0, tot1

        def integrand(z1):
            g0, g1 = inner(s2 * c * z1)
            f, f1 = phi(s1 * z1)[:2]
            return f * g0, f1 * g1

        if tensor:  # outer rule matched to the inner one
            return _integrate(integrand, [], zmax=9, degree=3)
        return _integrate(integrand, feats)


def _closed_mp_1d(spec, q):
    """Exact 1-D moments in mpmath for the closed-form activations (MATH.md 1.6, 2.5, 3.1-3.3)."""
    q = mp.mpf(q)
    name, _, par = spec.partition(":")
    if name in ("relu", "leaky_relu", "abs", "linear"):
        a = {"relu": 0, "abs": -1, "linear": 1}.get(name, mp.mpf(par) if par else mp.mpf("0.01"))
        k = (1 + a * a) / 2
        return {"v": k * q, "vd": k, "vdd": mp.mpf(0), "dv": k}
    if name in ("alpha_relu", "step"):
        al = mp.mpf(par) if name == "alpha_relu" else mp.mpf(0)

        def mom(p):  # E[u^p; u > 0], u ~ N(0, q)
            return (2 * q) ** (p / 2) * mp.gamma((p + 1) / 2) / (2 * mp.sqrt(mp.pi))

        out = {"v": mom(2 * al)}
        if al > mp.mpf(1) / 2:
            out["vd"] = al * al * mom(2 * al - 2)
            out["vdd"] = al * (al - 1) * mom(2 * al - 2)  # E[phi'' phi] = a (a - 1) E[u^(2a-2); u > 0]
            out["dv"] = out["vd"] + out["vdd"]
        return out
    if name == "erf":
        return {"v": 2 / mp.pi * mp.asin(2 * q / (1 + 2 * q)), "vd": 4 / mp.pi / mp.sqrt(1 + 4 * q),
                "dv": 4 / (mp.pi * (1 + 2 * q) * mp.sqrt(1 + 4 * q)),
                "vdd": 4 / (mp.pi * (1 + 2 * q) * mp.sqrt(1 + 4 * q)) - 4 / mp.pi / mp.sqrt(1 + 4 * q)}
    if name in ("sin", "cos"):
        e = mp.exp(-2 * q)
        sgn = 1 if name == "sin" else -1
        # E sin^2 = (1 - e^{-2q})/2, E cos^2 = (1 + e^{-2q})/2; phi'' = -phi
        v = (1 - sgn * e) / 2
        vd = (1 + sgn * e) / 2
        return {"v": v, "vd": vd, "vdd": -v, "dv": vd - v}
    raise KeyError(spec)


def _closed_mp_2d(spec, q1, q2, c):
    q1, q2, c = mp.mpf(q1), mp.mpf(q2), mp.mpf(c)
    name, _, par = spec.partition(":")
    th = 2 * mp.asin(mp.sqrt((1 - c) / 2))
    k0 = lambda t: (mp.pi - t) / (2 * mp.pi)  # noqa: E731
    k1 = lambda t: (mp.sin(t) + (mp.pi - t) * mp.cos(t)) / (2 * mp.pi)  # noqa: E731
    thm = mp.pi - th  # arccos(-c)
    r = mp.sqrt(q1 * q2)
    if name in ("relu", "leaky_relu", "abs"):
        a = {"relu": 0, "abs": -1}.get(name, mp.mpf(par) if par else mp.mpf("0.01"))
        return (r * ((1 + a * a) * k1(th) - 2 * a * k1(thm)), (1 + a * a) * k0(th) + 2 * a * k0(thm))
    if name == "linear":
        return c * r, mp.mpf(1)
    if name == "erf":
        q12 = c * r
        return (2 / mp.pi * mp.asin(2 * q12 / mp.sqrt((1 + 2 * q1) * (1 + 2 * q2))),
                4 / mp.pi / mp.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * q12 * q12))
    if name in ("sin", "cos"):
        q12 = c * r
        em, ep = mp.exp(-(q1 + q2 - 2 * q12) / 2), mp.exp(-(q1 + q2 + 2 * q12) / 2)  # E cos(u -+ v)
        sc, cc = (em - ep) / 2, (em + ep) / 2  # E sin u sin v, E cos u cos v
        return (sc, cc) if name == "sin" else (cc, sc)
    if name in ("alpha_relu", "step"):
        al = mp.mpf(par) if name == "alpha_relu" else mp.mpf(0)

        def W(a):  # MATH.md 2.7(4), unit variances
            if c == 1:
                return 2 ** (a - 1) * mp.gamma(a + mp.mpf(1) / 2) / mp.sqrt(mp.pi)
            if c == -1:
                return mp.mpf(0)
            return (2 ** (a - 1) * mp.gamma((a + 1) / 2) ** 2 * mp.hyp2f1(-a / 2, -a / 2, mp.mpf(1) / 2, c * c)
                    + c * 2 ** a * mp.gamma(a / 2 + 1) ** 2
                    * mp.hyp2f1((1 - a) / 2, (1 - a) / 2, mp.mpf(3) / 2, c * c)) / (2 * mp.pi)

        w = r ** al * W(al)
        wd = al * al * (q1 * q2) ** ((al - 1) / 2) * W(al - 1) if al > mp.mpf(1) / 2 else None
        return w, wd
    raise KeyError(spec)


def _rel(got, ref, scale):
    return abs(mp.mpf(float(got)) - ref) / abs(scale)


def _check_1d(spec, q, ref):
    act = get_activation(spec)
    tol = tolerance(act)
    scale_d = max(abs(ref["vd"]), abs(ref["vdd"])) if "vd" in ref else None
    for name, want in ref.items():
        got = ONE_D[name](act, q)
        scale = abs(want) if name in ("v", "vd") else scale_d
        assert _rel(got, want, scale) <= tol, (spec, name, q, float(got), mp.nstr(want, 20))


QUAD_SPECS = sorted(MP_PHI)


@pytest.mark.parametrize("spec", QUAD_SPECS)
def test_1d_moments_against_mpmath_quadrature(spec):
    for q in (1e-4, 1.0, 1e3):
        _check_1d(spec, q, mp_moments_1d(spec, q))


@pytest.mark.slow
@pytest.mark.parametrize("spec", QUAD_SPECS)
def test_1d_moments_against_mpmath_quadrature_more_q(spec):
    for q in (1e-2, 0.3, 3.0, 30.0):
        _check_1d(spec, q, mp_moments_1d(spec, q))


def test_1d_moments_against_mpmath_closed_forms(registry_spec):
    if registry_spec in MP_PHI:
        pytest.skip("no closed form: checked against quadrature")
    with mp.workdps(DPS):
        for q in QS:
            _check_1d(registry_spec, q, _closed_mp_1d(registry_spec, q))


def test_2d_kernels_against_mpmath_closed_forms(registry_spec):
    if registry_spec in MP_PHI:
        pytest.skip("no closed form: checked against quadrature")
    act = get_activation(registry_spec)
    with mp.workdps(DPS):
        for q1, q2 in PAIRS + [(b, a) for a, b in PAIRS]:
            one = _closed_mp_1d(registry_spec, q1), _closed_mp_1d(registry_spec, q2)
            for c in CS:
                w, wd = _closed_mp_2d(registry_spec, q1, q2, c)
                got = gaussian.w_phi(act, q1, q2, c)
                assert _rel(got, w, mp.sqrt(one[0]["v"] * one[1]["v"])) <= tolerance(act), (q1, q2, c)
                if wd is not None:
                    got = gaussian.w_dphi(act, q1, q2, c)
                    assert _rel(got, wd, mp.sqrt(one[0]["vd"] * one[1]["vd"])) <= tolerance(act), (q1, q2, c)


def _check_2d(spec, q1, q2, c):
    act = get_activation(spec)
    w, wd = mp_kernels_2d(spec, q1, q2, c)
    for name, ref, got in (("w", w, gaussian.w_phi(act, q1, q2, c)),
                           ("wd", wd, gaussian.w_dphi(act, q1, q2, c))):
        scale = _two_d_scale(act, name, q1, q2)  # a normalisation only: float64 is plenty
        assert _rel(got, ref, scale) <= tolerance(act), (name, spec, q1, q2, c, float(got), mp.nstr(ref, 20))


@pytest.mark.parametrize("spec", CLOSED_INNER)
def test_2d_kernels_against_mpmath(spec):
    _check_2d(spec, 0.3, 2.0, 0.3)


@pytest.mark.parametrize("spec", ["elu:0.5", "selu"])
def test_2d_kinked_kernels_near_c_1_against_mpmath(spec):
    """phi' jumps at 0: E[phi'(u) phi'(v)] has a sqrt(1 - c) term (~1e-6 at c = 1 - 1e-12)."""
    _check_2d(spec, 0.3, 2.0, 1.0 - 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["tanh", "sigmoid", "softplus", "silu", "gelu", "elu", "selu", "hard_tanh"])
def test_2d_kernels_at_c_pm_1_against_mpmath(spec):
    for c in (1.0, -1.0):
        _check_2d(spec, 0.3, 2.0, c)
        _check_2d(spec, 1e-4, 1e3, c)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["tanh", "sigmoid", "softplus", "silu", "gelu", "elu", "hard_tanh"])
def test_2d_kernels_near_c_1_against_mpmath(spec):
    for c in (1.0 - 1e-12, -1.0 + 1e-12):
        _check_2d(spec, 0.3, 2.0, c)


@pytest.mark.slow
@pytest.mark.parametrize("spec", CLOSED_INNER)
@pytest.mark.parametrize("c", [-0.6, 0.9])
def test_2d_kernels_against_mpmath_more_c(spec, c):
    _check_2d(spec, 0.3, 2.0, c)


@pytest.mark.slow
@pytest.mark.parametrize("spec", CLOSED_INNER)
def test_2d_kernels_extreme_lengths_against_mpmath(spec):
    _check_2d(spec, 1e-4, 1e3, 0.3)
    _check_2d(spec, 1e3, 1e-4, -0.3)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["tanh", "sigmoid", "softplus", "silu"])
def test_2d_smooth_kernels_against_mpmath(spec):
    _check_2d(spec, 0.3, 2.0, -0.6)


# ------------------------------------------------------------------------------------------
# Large q, |c| -> 1: the distance kernel 1 - W/V (residual networks, MATH.md 2.3)
# ------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _tanh_distance_kernel_mp(q: float, c: float) -> float:
    """1 - W/V for tanh at lengths q, correlation c (c the exact float given), in mpmath, by a
    route independent of gaussian.expect2: with a = (u + v)/2 ~ N(0, q(1 + c)/2) and
    b = (u - v)/2 ~ N(0, q(1 - c)/2) independent, V - W = E[(tanh(a + b) - tanh(a - b))^2] / 2
    (no cancellation), by nested mp.quad (Gauss-Legendre, breakpoints at tanh's scale and at
    b's); V = 1 - E[sech(u)^2].  Both integrands are even, and negligible for |a|, |u| > 40
    (sech^2 < 1e-34).  Agrees with a tanh-sinh version at 25 digits to 1e-16."""
    with mp.workdps(20):
        q, c = mp.mpf(q), mp.mpf(c)
        sa, sb, su = mp.sqrt(q * (1 + c) / 2), mp.sqrt(q * (1 - c) / 2), mp.sqrt(q)

        def pdf(x, s):
            return mp.exp(-x * x / (2 * s * s)) / (s * mp.sqrt(2 * mp.pi))

        feats = [0, 0.5, 1, 2, 4, 8, 16, 24, 40]
        bpts = sorted(set([k * sb for k in (0, 1, 3, 6, 12)] + [x for x in feats if x < 12 * sb]))

        def inner(a):
            return 2 * mp.quad(lambda b: (mp.tanh(a + b) - mp.tanh(a - b)) ** 2 * pdf(b, sb),
                               bpts, method="gauss-legendre")

        d = mp.quad(lambda a: inner(a) * pdf(a, sa), feats, method="gauss-legendre")
        v = 1 - 2 * mp.quad(lambda u: mp.sech(u) ** 2 * pdf(u, su), feats, method="gauss-legendre")
        return float(d / v)


@pytest.mark.parametrize("q, one_minus_c", [
    (1e4, 1e-9), (4.5e7, 1e-6),
    pytest.param(1e4, 1e-6, marks=pytest.mark.slow), pytest.param(4.5e7, 1e-9, marks=pytest.mark.slow)])
def test_tanh_distance_kernel_large_q_near_c_1(q, one_minus_c):
    """G = 1 - w_phi(q, q, c) / v_phi(q) for tanh where the inner Gaussian of expect2 is wide in u
    (q (1 - c) >> 1) but its mean moves fast in z1 (c -> 1): what a residual network's distance
    recursion reads.  Measured: |G / G_ref - 1| with G formed from gaussian's W and V by
    subtraction (G is 5e-8 ... 8e-4 here, so this asks W/V to ~1e-14 ... 1e-10).  Before expect2
    split its outer panels at the inner smoothing scale, (4.5e7, 1e-6) was off by 5.5e-2; now
    ~1e-12, the others 2e-10, 2e-7 (q = 1e4, 1 - c = 1e-9: W and V agree to 1e-14) and 3e-10."""
    act = get_activation("tanh")
    c = 1.0 - one_minus_c
    g = 1.0 - float(gaussian.w_phi(act, q, q, c)) / float(gaussian.v_phi(act, q))
    ref = _tanh_distance_kernel_mp(q, c)
    assert abs(g / ref - 1.0) < 1e-6, (g, ref)


# ------------------------------------------------------------------------------------------
# Structure
# ------------------------------------------------------------------------------------------

def test_spline_table_agrees_with_quadrature():
    """Large arrays of q read V, V', dV/dq from gaussian._table (a spline in log q); the spline and
    the big-array calls must agree with the direct quadrature."""
    n = max(getattr(gaussian, "_TABLE_MIN_SIZE", 256), 256) + 1
    q = np.logspace(-4, 3, n)
    for spec in ("tanh", "gelu", "selu", "softplus"):
        act = get_activation(spec)
        scale = np.maximum(np.abs(gaussian._QUAD["v"](act, q)), np.abs(gaussian._QUAD["vd"](act, q)))
        for name, fn in (("v", gaussian.v_phi), ("vd", gaussian.v_dphi), ("dv", gaussian.dv_phi)):
            direct = gaussian._QUAD[name](act, q)
            spline = gaussian._table(act, name)(np.log(q))
            auto = fn(act, q)
            ref = direct if name == "dv" else np.abs(direct)
            sc = scale if name == "dv" else np.abs(ref)
            for got in (spline, auto):
                err = np.abs(got - direct) / sc
                assert err.max() <= tolerance(act), (spec, name, q[np.argmax(err)], err.max())


def test_ctable_resolves_sqrt_one_minus_c():
    """gaussian.CTable (the table in x = sqrt(1 - |c|)) on relu's kernels, whose derivative
    kernel has a sqrt(1 - c) term at c = 1 and a kink's worth of structure at c = -1."""
    act = get_activation("relu")

    def f(c):
        return np.stack([gaussian.w_phi(act, 1.0, 1.0, c), gaussian.w_dphi(act, 1.0, 1.0, c)])

    tab = gaussian.CTable.sample(f)
    rng = np.random.default_rng(7)
    # |c| within 8 ulps of 1 counts as 1 (CTABLE_SNAP); near c = -1 the reference itself, relu's
    # closed form with theta = 2 arcsin(sqrt((1 - c) / 2)), loses ~1e-16 / sqrt(1 + c)
    c = np.concatenate([rng.uniform(-1, 1, 200), 1 - np.logspace(-14, -1, 20), -1 + np.logspace(-6, -1, 20),
                        [-1.0, 0.0, 1.0]])
    got, ref = tab(c), f(c)
    for k in range(2):
        assert np.max(np.abs(got[k] - ref[k])) < 1e-12 * np.max(np.abs(ref[k]))
    assert tab.error_estimate < 1e-11


def test_expect1_and_expect2_basic_identities():
    q = np.array([1e-4, 0.5, 7.0, 1e3])
    # E[u^2] = q, E[u^4] = 3 q^2, E[cos u] = exp(-q/2)
    assert np.allclose(gaussian.expect1(lambda u: u * u, q), q, rtol=1e-12, atol=0)
    assert np.allclose(gaussian.expect1(lambda u: u ** 4, q), 3 * q * q, rtol=1e-12, atol=0)
    assert np.allclose(gaussian.expect1(np.cos, q[:3]), np.exp(-q[:3] / 2), rtol=1e-12, atol=1e-16)
    # E[u v] = c sqrt(q1 q2), E[u^2 v^2] = q1 q2 (1 + 2 c^2)
    q1, q2, c = np.array([0.3, 2.0, 1e-4]), np.array([2.0, 0.3, 10.0]), np.array([-0.7, 1.0, 0.2])
    assert np.allclose(gaussian.expect2(lambda u: u, lambda v: v, q1, q2, c), c * np.sqrt(q1 * q2),
                       rtol=1e-12, atol=0)
    assert np.allclose(gaussian.expect2(np.square, np.square, q1, q2, c), q1 * q2 * (1 + 2 * c * c),
                       rtol=1e-12, atol=0)


def test_price_identity_dW_dc():
    """d/dc W(q1, q2, c) = sqrt(q1 q2) E[phi'(u) phi'(v)] (MATH.md section 0)."""
    for spec in ("tanh", "gelu", "softplus"):
        act = get_activation(spec)
        q1, q2, c, h = 0.7, 1.9, 0.35, 1e-3
        w = [float(gaussian.w_phi(act, q1, q2, c + k * h)) for k in (-2, -1, 1, 2)]
        slope = (w[0] - 8 * w[1] + 8 * w[2] - w[3]) / (12 * h)  # O(h^4) ~ 1e-12
        assert slope == pytest.approx(math.sqrt(q1 * q2) * float(gaussian.w_dphi(act, q1, q2, c)), rel=1e-9)


def test_nan_in_nan_out_and_shapes():
    for spec in ("tanh", "relu", "erf", "selu"):
        act = get_activation(spec)
        q = np.array([[0.5, np.nan], [np.inf, 2.0]])
        for fn in ONE_D.values():
            out = fn(act, q)
            assert out.shape == q.shape
            assert np.isnan(out[0, 1]) and np.isfinite(out[0, 0]) and np.isfinite(out[1, 1])
        c = np.array([0.3, np.nan, 0.5])
        for fn in TWO_D.values():
            out = fn(act, 1.0, np.array([[1.0], [2.0]]), c)
            assert out.shape == (2, 3)
            assert np.isnan(out[:, 1]).all() and np.isfinite(out[:, [0, 2]]).all()


@pytest.mark.parametrize("spec", ["selu", "elu:0.5"])
def test_moments_are_continuous_at_q_0_kinked_at_0(spec):
    """At q = 0 a kink at 0 contributes the average of the one-sided values (the q -> 0 limit),
    e.g. V'(0) = (phi'(0-)^2 + phi'(0+)^2) / 2 = 2.097 for selu, not phi'(0-)^2 = 3.09."""
    act = get_activation(spec)
    for fn in (gaussian.v_dphi, gaussian.e_ddphi_phi):
        at0, near0 = float(fn(act, 0.0)), float(fn(act, 1e-14))
        assert at0 == pytest.approx(near0, rel=1e-6, abs=1e-6), fn.__name__


@pytest.mark.parametrize("spec", ["tanh", "erf", "gelu", "softplus", "elu", "hard_tanh", "relu", "sin"])
def test_moments_are_continuous_at_q_0(spec):
    act = get_activation(spec)
    for fn in ONE_D.values():
        at0, near0 = float(fn(act, 0.0)), float(fn(act, 1e-14))
        assert at0 == pytest.approx(near0, rel=1e-6, abs=1e-6), fn.__name__


@pytest.mark.parametrize("name,q", [("tanh", 0.7), ("relu", 2.0), ("selu", 1.0), ("gelu", 30.0)])
def test_correlation_table_reads_the_kernel(name, q):
    """CorrelationTable (a CTable in x = sqrt(1 - |c|)) against w_phi / w_dphi at 801
    correlations, arrays and scalars alike: 1e-12 of the diagonal's scale, kinked too."""
    act = get_activation(name)
    tab = gaussian.CorrelationTable(act, q)
    c = np.linspace(-1.0, 1.0, 801)
    w, wd = gaussian.w_phi(act, q, q, c), gaussian.w_dphi(act, q, q, c)
    assert np.max(np.abs(tab.w(c) - w)) <= 1e-12 * float(gaussian.v_phi(act, q))
    assert np.max(np.abs(tab.wd(c) - wd)) <= 1e-12 * float(gaussian.v_dphi(act, q))
    assert [tab.w(float(x)) for x in c[::40]] == tab.w(c[::40]).tolist()


@pytest.mark.parametrize("n", [40, 256, 512])
def test_hermite_rule_moments_are_exact_after_polishing(n):
    """gaussian._hermite polishes scipy's nodes (Newton on p_n) and takes Christoffel weights
    (issue 10): E[z^2k] = (2k - 1)!! to rounding, where scipy's asymptotic nodes (n >~ 150)
    leave E[z^2] off by 1.1e-14 (n = 256) and E[z^4] by 3e-14."""
    from meanfield.gaussian import _hermite

    x, w = _hermite(n)
    for k, exact in ((0, 1.0), (1, 1.0), (2, 3.0), (3, 15.0), (4, 105.0)):
        assert abs(float(w @ x ** (2 * k)) - exact) <= 8e-16 * exact * (k + 1)
    assert np.array_equal(x, -x[::-1]) and np.all(w >= 0)


def test_hermite_half_rule_equals_the_full_rule():
    """The folded rule shared by maps' series and fixed_points' chaotic c* (issue 10: one helper)
    gives hermite_coefficients' a_k on the full rule, for a scalar q and a vector of them."""
    from meanfield.gaussian import (hermite_coefficients, hermite_half_coefficients, hermite_half_rule,
                                    hermite_half_sums)

    act = get_activation("tanh")
    q = np.array([0.05, 0.7, 2.0])
    full = hermite_coefficients(act.fn, q, 48, n_nodes=64)
    xp, wp, even_b, odd_b = hermite_half_rule(64, 48)
    half = hermite_half_coefficients(*hermite_half_sums(act.fn, q, xp), even_b, odd_b)
    np.testing.assert_allclose(half, full, rtol=0, atol=4e-16)
    np.testing.assert_allclose(hermite_half_coefficients(*hermite_half_sums(act.fn, 0.7, xp), even_b, odd_b),
                               full[1], rtol=0, atol=4e-16)
    assert abs(2 * wp.sum() - 1) < 1e-15  # the positive half of the weights (n even: no node at 0)


def test_m_phi_closed_forms_against_mpmath():
    """M_phi(q) = E[phi(sqrt(q) z)]: the closed forms against 20-digit mpmath quadrature at
    q = 2.5, including the power kinks (alpha-ReLU) where panel quadrature converges only
    algebraically (expect1 is 1e-5..2e-4 off there, which this test would catch if m_phi fell back
    to it); these forms are homogeneous in q, so one q and the power law pin them down.  The
    smooth ones (gelu, cos) against expect1, 1e-15 accurate for them at moderate q."""
    from meanfield.activations import get_activation

    qq = 2.5
    with mp.workdps(20):
        s = mp.sqrt(qq)
        cases = {
            "relu": (lambda u: max(u, 0), [-mp.inf, 0, mp.inf], 0.5),
            "leaky_relu:0.1": (lambda u: u if u > 0 else 0.1 * u, [-mp.inf, 0, mp.inf], 0.5),
            "abs": (abs, [-mp.inf, 0, mp.inf], 0.5),
            "alpha_relu:0.3": (lambda u: u ** mp.mpf(0.3) if u > 0 else 0, [0, 1, mp.inf], 0.15),
            "alpha_relu:0.75": (lambda u: u ** mp.mpf(0.75) if u > 0 else 0, [0, 1, mp.inf], 0.375),
            "alpha_relu:1.5": (lambda u: u ** mp.mpf(1.5) if u > 0 else 0, [0, 1, mp.inf], 0.75),
            "step": (lambda u: 1 if u > 0 else 0, [0, mp.inf], 0.0),
        }
        q = np.array([1e-3, qq, 40.0])
        for spec, (f, pts, power) in cases.items():
            act = get_activation(spec)
            assert "m" in act.closed_forms, spec
            ref = float(mp.quad(lambda z, f=f: f(s * z) * mp.npdf(z), pts))
            np.testing.assert_allclose(gaussian.m_phi(act, q), ref * (q / qq) ** power, rtol=2e-15,
                                       err_msg=spec)
    q = np.array([1e-3, 0.3, 1.0, 2.5])
    for spec in ("gelu", "cos"):
        act = get_activation(spec)
        assert "m" in act.closed_forms, spec
        np.testing.assert_allclose(gaussian.m_phi(act, q), gaussian.expect1(act.fn, q, act.kinks),
                                   rtol=1e-14, err_msg=spec)
    for spec in ("elu:1", "softplus", "tanh"):     # no closed form: quadrature; odd: exactly 0
        act = get_activation(spec)
        expected = 0.0 * q if act.odd else gaussian.expect1(act.fn, q, act.kinks)
        np.testing.assert_array_equal(gaussian.m_phi(act, q), expected)
    assert np.isnan(gaussian.m_phi(get_activation("relu"), np.array([np.nan])))[0]
