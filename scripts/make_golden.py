#!/usr/bin/env python
"""Generate tests/golden/vanilla.json: 30-digit reference values for the vanilla mean-field maps.

Nothing of meanfield is imported.  Every Gaussian expectation below is computed by this script's
own quadrature, in mpmath at 30 significant digits:

* composite Gauss-Legendre on z in [-Z, Z], Z = 11 (the Gaussian mass outside is 4e-28), with
  Legendre nodes found here by Newton's method on P_n.  The panel half-width is at most half the
  distance pi / (2 sqrt(q)) from the real axis to the nearest pole of tanh(sqrt(q) z), so every
  panel's Bernstein ellipse parameter is >= 2 + sqrt(5); order 24 (1-D) and 16 per axis (2-D)
  then leave errors far below 1e-24.  The script checks this by recomputing values with orders
  32 and 24 and stores the differences under "quadrature_checks";
* the bivariate expectations E[phi(u) phi(v)], E[phi'(u) phi'(v)] (u = s z1,
  v = s (c z1 + sqrt(1 - c^2) z2)) by the tensor product of the same rule;
* tanh and sech^2 through E = exp(2x) (tanh = (E - 1)/(E + 1), sech^2 = 4E/(E + 1)^2), so
  the 2-D rule needs one exponential per node and axis (exp(a + b) = exp(a) exp(b)).  mpmath
  computes every transcendental value (nodes, weights, exponentials) at 40 digits; the sums over
  nodes are done in exact integer fixed point with 160 fractional bits.

Formulas (MATH.md section 1): length map q -> sigma_w2 V(q) + sigma_b2 with V(q) = E[phi(sqrt q z)^2];
chi_1 = sigma_w2 E[phi'^2]; C-map c -> (sigma_w2 W(q*, q*, c) + sigma_b2) / q*; chi_c = sigma_w2 E[phi'(u)
phi'(v)] at c*; xi_c = -1/log chi_c(c*); xi_q = -1/log(chi_1 + sigma_w2 E[phi'' phi]).  The
length-map slope is also taken by mpmath.diff of the length map itself, and chi_c by mpmath.diff
of the C-map, as a check of those two identities (both are stored).

erf uses its closed forms (Williams 1997, MATH.md 3.2), which the script checks against its own
quadrature at a few points.  relu's edge of chaos (2, 0) is exact: chi_1 = sigma_w2 / 2 does not
depend on q, and the length map q -> sigma_w2 q / 2 + sigma_b2 has a fixed point at sigma_w2 = 2
only when sigma_b2 = 0.

Values are stored as decimal strings with 25 significant digits.  Run (about two minutes):

    python scripts/make_golden.py
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

import mpmath as mp

DPS = 30
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "golden" / "vanilla.json"
ZMAX = 11
ORDER = 16  # 2-D rule
CHECK_ORDER = 24
ORDER_1D = 24
CHECK_ORDER_1D = 32

mp.mp.dps = DPS


# ------------------------------------------------------------------------------------------
# Quadrature
# ------------------------------------------------------------------------------------------

# Sums over nodes are done in exact integer fixed point with FP fractional bits (48 digits):
# mpmath supplies every transcendental value (nodes, weights, exponentials) at DPS + 10 digits,
# integers do the many products and quotients of the tensor-product rule exactly up to one
# rounding of 2^-FP each.  This is ~10x faster than mpf arithmetic and more precise than DPS.
FP = 160
ONE = 1 << FP


def fix(x) -> int:
    """mpf -> integer multiple of 2^-FP."""
    return int(mp.nint(mp.ldexp(x, FP)))


def unfix(n: int, bits: int = FP) -> mp.mpf:
    return mp.ldexp(mp.mpf(n), -bits)


_GL_CACHE: dict[int, tuple[list, list]] = {}


def gauss_legendre(n: int) -> tuple[list, list]:
    """Nodes and weights of the n-point Gauss-Legendre rule on [-1, 1] (Newton on P_n)."""
    if n in _GL_CACHE:
        return _GL_CACHE[n]
    with mp.workdps(DPS + 30):
        xs, ws = [], []
        for k in range(1, n + 1):
            x = mp.cos(mp.pi * (k - mp.mpf(1) / 4) / (n + mp.mpf(1) / 2))
            for _ in range(100):
                p0, p1 = mp.mpf(1), x
                for j in range(2, n + 1):
                    p0, p1 = p1, ((2 * j - 1) * x * p1 - (j - 1) * p0) / j
                dp = n * (x * p1 - p0) / (x * x - 1)
                dx = p1 / dp
                x -= dx
                if abs(dx) < mp.mpf(10) ** (-(DPS + 25)):
                    break
            p0, p1 = mp.mpf(1), x
            for j in range(2, n + 1):
                p0, p1 = p1, ((2 * j - 1) * x * p1 - (j - 1) * p0) / j
            dp = n * (x * p1 - p0) / (x * x - 1)
            xs.append(x)
            ws.append(2 / ((1 - x * x) * dp * dp))
    _GL_CACHE[n] = (xs, ws)
    return xs, ws


_RULE_CACHE: dict[tuple[int, int], tuple[list, list, list]] = {}


def normal_rule(half_width, order: int = ORDER) -> tuple[list, list, list]:
    """Composite Gauss-Legendre rule for E[f(z)], z ~ N(0, 1), on the half line z in (0, ZMAX]
    with panels of half-width <= half_width: (nodes z > 0 as mpf, weights as mpf, weights as
    fixed-point integers).  Every integrand here is even or is summed with its mirror image,
    so E[f] = sum_i w_i (f(z_i) + f(-z_i))."""
    npan = int(mp.ceil(mp.mpf(ZMAX) / (2 * half_width)))
    key = (npan, order)
    if key in _RULE_CACHE:
        return _RULE_CACHE[key]
    with mp.workdps(DPS + 10):
        h = mp.mpf(ZMAX) / (2 * npan)
        x, w = gauss_legendre(order)
        norm = 1 / mp.sqrt(2 * mp.pi)
        zs, ws = [], []
        for p in range(npan):
            mid = (2 * p + 1) * h
            for xi, wi in zip(x, w):
                z = mid + h * xi
                zs.append(z)
                ws.append(h * wi * mp.exp(-z * z / 2) * norm)
    out = (zs, ws, [fix(wt) for wt in ws])
    _RULE_CACHE[key] = out
    return out


def half_width_for(s) -> mp.mpf:
    """Half the distance from the real z axis to the nearest pole of tanh(s z), capped at 1/2."""
    return min(mp.mpf(1) / 2, mp.pi / (4 * s)) if s > 0 else mp.mpf(1) / 2


# ------------------------------------------------------------------------------------------
# tanh moments
# ------------------------------------------------------------------------------------------

def _tanh_sech2(e: int) -> tuple[int, int]:
    """tanh and sech^2 of x from e = exp(2x), all in fixed point."""
    ep = e + ONE
    return ((e - ONE) << FP) // ep, (e << (FP + 2)) // ((ep * ep) >> FP)


def tanh_moments_1d(q, order: int = ORDER_1D) -> dict:
    """V = E[tanh^2], Vd = E[sech^4], Vdd = E[phi'' phi] = E[-2 tanh^2 sech^2] at u = sqrt(q) z
    (all three integrands are even in z)."""
    q = mp.mpf(q)
    s = mp.sqrt(q)
    zs, _, wf = normal_rule(half_width_for(s), order)
    v = vd = vdd = 0
    with mp.workdps(DPS + 10):
        es = [fix(mp.exp(2 * s * z)) for z in zs]
    for e, w in zip(es, wf):
        t, s2 = _tanh_sech2(e)
        t2 = (t * t) >> FP
        v += w * t2
        vd += w * ((s2 * s2) >> FP)
        vdd -= 2 * w * ((t2 * s2) >> FP)
    return {"v": 2 * unfix(v, 2 * FP), "vd": 2 * unfix(vd, 2 * FP), "vdd": 2 * unfix(vdd, 2 * FP)}


def tanh_moments_2d(q, c, order: int = ORDER) -> tuple:
    """(E[tanh(u) tanh(v)], E[sech^2(u) sech^2(v)]) for u = s z1, v = s (c z1 + sqrt(1-c^2) z2).

    Both integrands are even under (z1, z2) -> (-z1, -z2), so the outer sum runs over z1 > 0
    and the inner one over all z2 = +-z_j."""
    q, c = mp.mpf(q), mp.mpf(c)
    s = mp.sqrt(q)
    sc = mp.sqrt((1 - c) * (1 + c))
    zs, _, wf = normal_rule(half_width_for(s), order)
    with mp.workdps(DPS + 10):
        e2 = [fix(mp.exp(2 * s * sc * z)) for z in zs] + [fix(mp.exp(-2 * s * sc * z)) for z in zs]
        e1 = [fix(mp.exp(2 * s * z)) for z in zs]
        ea = [fix(mp.exp(2 * s * c * z)) for z in zs]
    w2 = wf + wf
    w_sum = wd_sum = 0
    for e1i, eai, w1 in zip(e1, ea, wf):
        t1, s1 = _tanh_sech2(e1i)
        it = isd = 0
        for ej, wj in zip(e2, w2):
            t, sd = _tanh_sech2((eai * ej) >> FP)
            it += wj * t
            isd += wj * sd
        w_sum += w1 * ((t1 * it) >> FP)
        wd_sum += w1 * ((s1 * isd) >> FP)
    return 2 * unfix(w_sum, 3 * FP), 2 * unfix(wd_sum, 3 * FP)


def tanh_fixed_point(sw, sb) -> dict:
    sw, sb = mp.mpf(sw), mp.mpf(sb)

    def lmap(q):
        return sw * tanh_moments_1d(q)["v"] + sb

    # q* by the (globally convergent, for tanh) iteration to a few digits, then secant.
    q = mp.mpf(1)
    for _ in range(200):
        q_new = lmap(q)
        if abs(q_new - q) < mp.mpf("1e-6"):
            q = q_new
            break
        q = q_new
    q = mp.findroot(lambda x: lmap(x) - x, q, tol=mp.mpf(10) ** (-2 * DPS + 8))
    m = tanh_moments_1d(q)
    chi1 = sw * m["vd"]
    slope_formula = chi1 + sw * m["vdd"]
    slope_diff = mp.diff(lmap, q, h=mp.mpf("1e-10"))
    if chi1 <= 1:
        cstar, chic = mp.mpf(1), chi1
        chic_diff = None
    else:
        cstar, chic, chic_diff = tanh_chaotic_c_star(q, sw, sb)
    return {
        "sigma_w2": sw, "sigma_b2": sb, "q_star": q, "chi_1": chi1, "c_star": cstar,
        "chi_c": chic, "xi_c": -1 / mp.log(chic), "xi_q": -1 / mp.log(slope_formula),
        "slope_q": slope_formula, "slope_q_finite_difference": slope_diff,
        "chi_c_finite_difference": chic_diff, "phase": "ordered" if chi1 < 1 else "chaotic",
    }


def tanh_chaotic_c_star(q, sw, sb):
    """Stable root c* < 1 of C(c) = c, by Newton with C'(c) = chi_c (checked by mpmath.diff)."""

    def cmap(c, order=ORDER):
        w, wd = tanh_moments_2d(q, c, order)
        return (sw * w + sb) / q, sw * wd

    # C(c) - c > 0 below c* and < 0 between c* and 1 (chi_1 > 1): bisection with a cheap
    # order-8 rule to 1e-4, then Newton (C'(c) = chi_c, Price identity) with the full rule.
    lo, hi = mp.mpf(0), mp.mpf(1) - mp.mpf("1e-3")
    if cmap(lo, 8)[0] - lo <= 0 or cmap(hi, 8)[0] - hi >= 0:
        raise RuntimeError("C(c) - c does not change sign on [0, 1 - 1e-3]")
    while hi - lo > mp.mpf("1e-4"):
        mid = (lo + hi) / 2
        if cmap(mid, 8)[0] - mid > 0:
            lo = mid
        else:
            hi = mid
    c = (lo + hi) / 2
    for _ in range(30):
        cm, chic = cmap(c)
        step = (cm - c) / (chic - 1)
        c -= step
        if abs(step) < mp.mpf(10) ** (-DPS + 3):
            break
    cm, chic = cmap(c)
    chic_diff = mp.diff(lambda x: cmap(x)[0], c, h=mp.mpf("1e-9"))
    return c, chic, chic_diff


def tanh_eoc_at_q(q) -> dict:
    """Parametric critical line (MATH.md 1.6): sigma_w2 = 1/Vd(q*), sigma_b2 = q* - V(q*)/Vd(q*)."""
    m = tanh_moments_1d(q)
    return {"q_star": mp.mpf(q), "sigma_w2": 1 / m["vd"], "sigma_b2": mp.mpf(q) - m["v"] / m["vd"]}


def _bracket_solve(f, target, qs):
    vals = [f(qq) - target for qq in qs]
    for a, b, fa, fb in zip(qs, qs[1:], vals, vals[1:]):
        if fa <= 0 <= fb or fa >= 0 >= fb:
            return mp.findroot(lambda x: f(x) - target, (a, b), solver="anderson",
                               tol=mp.mpf(10) ** (-2 * DPS + 8))
    raise RuntimeError(f"no bracket for target {target}")


def tanh_eoc_by_sigma_b2(sb) -> dict:
    sb = mp.mpf(sb)
    qs = [mp.mpf(10) ** (mp.mpf(k) / 4) for k in range(-16, 9)]
    q = _bracket_solve(lambda x: tanh_eoc_at_q(x)["sigma_b2"], sb, qs)
    return tanh_eoc_at_q(q)


def tanh_eoc_by_sigma_w2(sw) -> dict:
    sw = mp.mpf(sw)
    qs = [mp.mpf(10) ** (mp.mpf(k) / 4) for k in range(-16, 9)]
    q = _bracket_solve(lambda x: tanh_eoc_at_q(x)["sigma_w2"], sw, qs)
    return tanh_eoc_at_q(q)


# ------------------------------------------------------------------------------------------
# erf (closed forms, MATH.md 3.2)
# ------------------------------------------------------------------------------------------

def erf_v(q):
    return 2 / mp.pi * mp.asin(2 * q / (1 + 2 * q))


def erf_vd(q):
    return 4 / mp.pi / mp.sqrt(1 + 4 * q)


def erf_w(q, c):
    return 2 / mp.pi * mp.asin(2 * c * q / (1 + 2 * q))


def erf_wd(q, c):
    return 4 / mp.pi / mp.sqrt((1 + 2 * q) ** 2 - 4 * c * c * q * q)


def erf_quadrature_check(q, c, order: int = 14) -> dict:
    """Own quadrature (mpf arithmetic) of the four erf moments at (q, c), minus the closed forms."""
    q, c = mp.mpf(q), mp.mpf(c)
    s = mp.sqrt(q)
    sc = mp.sqrt((1 - c) * (1 + c))
    zh, wh, _ = normal_rule(mp.mpf(1) / 2, order)
    zs, ws = zh + [-z for z in zh], wh + wh
    k = 2 / mp.sqrt(mp.pi)
    v = mp.fdot(ws, [mp.erf(s * z) ** 2 for z in zs])
    vd = mp.fdot(ws, [(k * mp.exp(-q * z * z)) ** 2 for z in zs])
    w2 = wd2 = mp.mpf(0)
    for z1, w1 in zip(zs, ws):
        f1 = mp.erf(s * z1)
        d1 = k * mp.exp(-q * z1 * z1)
        vs = [s * (c * z1 + sc * z2) for z2 in zs]
        w2 += w1 * f1 * mp.fdot(ws, [mp.erf(v_) for v_ in vs])
        wd2 += w1 * d1 * mp.fdot(ws, [k * mp.exp(-v_ * v_) for v_ in vs])
    return {"v": abs(v - erf_v(q)), "vd": abs(vd - erf_vd(q)), "w": abs(w2 - erf_w(q, c)),
            "wd": abs(wd2 - erf_wd(q, c))}


def erf_eoc_by_sigma_b2(sb) -> dict:
    sb = mp.mpf(sb)
    if sb == 0:
        q = mp.mpf(0)
    else:
        q = _bracket_solve(lambda x: x - erf_v(x) / erf_vd(x), sb,
                           [mp.mpf(10) ** (mp.mpf(k) / 4) for k in range(-16, 9)])
    return {"sigma_b2": sb, "sigma_w2": 1 / erf_vd(q), "q_star": q}


def erf_fixed_point(sw, sb) -> dict:
    sw, sb = mp.mpf(sw), mp.mpf(sb)
    q = mp.mpf(1)
    for _ in range(500):
        q_new = sw * erf_v(q) + sb
        if abs(q_new - q) < mp.mpf("1e-8"):
            break
        q = q_new
    if sb == 0 and sw * erf_vd(0) <= 1:
        q = mp.mpf(0)  # V(q) <= V'(0) q: the map contracts to q* = 0
    else:
        q = mp.findroot(lambda x: sw * erf_v(x) + sb - x, q_new, tol=mp.mpf(10) ** (-2 * DPS + 8))
    chi1 = sw * erf_vd(q)
    slope = sw * mp.diff(erf_v, q)  # exact derivative of the closed form (mpmath.diff at full precision)
    if chi1 <= 1:
        cstar, chic = mp.mpf(1), chi1
    else:
        def h(c):
            return (sw * erf_w(q, c) + sb) / q - c
        if sb == 0:
            cstar = mp.mpf(0)
        else:
            cstar = mp.findroot(h, (mp.mpf(0), mp.mpf(1) - mp.mpf("1e-6")), solver="anderson",
                                tol=mp.mpf(10) ** (-2 * DPS + 8))
        chic = sw * erf_wd(q, cstar)
    return {"sigma_w2": sw, "sigma_b2": sb, "q_star": q, "chi_1": chi1, "c_star": cstar, "chi_c": chic,
            "xi_c": -1 / mp.log(chic), "xi_q": -1 / mp.log(slope), "slope_q": slope,
            "phase": "ordered" if chi1 < 1 else "chaotic"}


# ------------------------------------------------------------------------------------------

TANH_FIXED_POINTS = [  # REFERENCE_VALUES.md A2
    ("1.0", "0.05"), ("1.5", "0.05"), ("1.7", "0.05"), ("2.0", "0.05"), ("2.5", "0.05"),
    ("3.0", "0.05"), ("4.0", "0.05"), ("1.5", "0.3"), ("2.0", "0.3"), ("2.5", "1.0"),
]
TANH_EOC_SIGMA_B2 = ["1e-4", "0.01", "0.02", "0.05", "0.1", "0.2", "0.3", "0.5", "1.0", "2.0"]  # A1
TANH_EOC_Q = ["1/64", "1/16", "1/4", "1/2", "1", "2", "4", "16"]  # A1, parametrised by q*
TANH_EOC_SIGMA_W2 = ["1.05", "2", "25/9"]  # A1: PSG 2017 points and PyTorch's gain 5/3
ERF_EOC_SIGMA_B2 = ["0", "0.01", "0.05", "0.1", "0.5"]  # A1
ERF_FIXED_POINTS = [("0.5", "0"), ("2.0", "0"), ("1.0", "0.05"), ("2.0", "0.05"), ("3.0", "0.1")]


def _mpf(text: str) -> mp.mpf:
    if "/" in text:
        a, b = text.split("/")
        return mp.mpf(a) / mp.mpf(b)
    return mp.mpf(text)


def _s(x):
    if x is None or isinstance(x, str):
        return x
    return mp.nstr(x, 25, min_fixed=-mp.inf, max_fixed=mp.inf) if x != 0 else "0"


def _row(d: dict, **extra) -> dict:
    out = {k: _s(v) for k, v in d.items()}
    out.update(extra)
    return out


def main() -> None:
    t0 = time.time()
    data: dict = {
        "provenance": {
            "script": "scripts/make_golden.py",
            "mpmath": mp.__version__,
            "dps": DPS,
            "date": datetime.date.today().isoformat(),
            "python": sys.version.split()[0],
            "method": (f"own composite Gauss-Legendre (order {ORDER_1D} in 1-D, {ORDER} per axis in 2-D; "
                       f"panels of half-width <= min(1/2, pi/(4 sqrt q)) on z in [-{ZMAX}, {ZMAX}]), "
                       f"sums in {FP}-bit fixed point; erf by closed forms; no meanfield code used"),
            "units": "sigma_w2, sigma_b2 are fan-in-normalised variances; q is the pre-activation length",
            "values": "decimal strings with 25 significant digits",
        },
    }
    rows = []
    for sw, sb in TANH_FIXED_POINTS:
        r = tanh_fixed_point(_mpf(sw), _mpf(sb))
        rows.append(_row(r))
        print(f"tanh fixed point {sw} {sb}: q*={mp.nstr(r['q_star'], 12)} c*={mp.nstr(r['c_star'], 12)} "
              f"xi_c={mp.nstr(r['xi_c'], 8)}  [{time.time() - t0:.0f} s]", flush=True)
    data["tanh_fixed_points"] = rows
    data["tanh_eoc_by_sigma_b2"] = [_row(tanh_eoc_by_sigma_b2(_mpf(sb))) for sb in TANH_EOC_SIGMA_B2]
    data["tanh_eoc_by_q_star"] = [_row(tanh_eoc_at_q(_mpf(q)), q_label=q) for q in TANH_EOC_Q]
    data["tanh_eoc_by_sigma_w2"] = [_row(tanh_eoc_by_sigma_w2(_mpf(sw)), sigma_w2_label=sw)
                                    for sw in TANH_EOC_SIGMA_W2]
    print(f"tanh edge of chaos done [{time.time() - t0:.0f} s]", flush=True)
    data["erf_eoc_by_sigma_b2"] = [_row(erf_eoc_by_sigma_b2(_mpf(sb))) for sb in ERF_EOC_SIGMA_B2]
    data["erf_fixed_points"] = [_row(erf_fixed_point(_mpf(sw), _mpf(sb))) for sw, sb in ERF_FIXED_POINTS]
    data["relu_eoc"] = {"sigma_w2": "2", "sigma_b2": "0", "derivation": (
        "exact: V(q) = q/2 and E[relu'^2] = 1/2, so chi_1 = sigma_w2/2 = 1 iff sigma_w2 = 2, and "
        "q = sigma_w2 q/2 + sigma_b2 then has a fixed point only for sigma_b2 = 0")}

    # Self-checks of the quadrature, stored so a reader can judge the digits.
    checks = {}
    m20, m28 = tanh_moments_1d(mp.mpf(16)), tanh_moments_1d(mp.mpf(16), CHECK_ORDER_1D)
    checks["tanh_1d_order_24_vs_32_at_q_16"] = _s(max(abs(m20[k] - m28[k]) for k in m20))
    qr = _mpf(rows[6]["q_star"])  # the sigma_w2 = 4 row: the largest chaotic q*
    cr = _mpf(rows[6]["c_star"])
    a, b = tanh_moments_2d(qr, cr), tanh_moments_2d(qr, cr, CHECK_ORDER)
    checks["tanh_2d_order_16_vs_24_at_sigma_w2_4"] = _s(max(abs(a[0] - b[0]), abs(a[1] - b[1])))
    checks["erf_closed_form_vs_quadrature_at_q_0.7_c_0.3"] = _s(max(erf_quadrature_check("0.7", "0.3").values()))
    checks["tanh_2d_at_c_1_vs_1d"] = _s(abs(tanh_moments_2d(mp.mpf("0.7"), mp.mpf(1))[0]
                                           - tanh_moments_1d(mp.mpf("0.7"))["v"]))
    data["quadrature_checks"] = checks
    data["provenance"]["runtime_s"] = round(time.time() - t0, 1)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(OUT)
    print(f"wrote {OUT.relative_to(ROOT)} in {time.time() - t0:.0f} s; checks: {checks}")


if __name__ == "__main__":
    main()
