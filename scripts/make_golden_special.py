#!/usr/bin/env python
"""Generate tests/golden/alpha_relu.json: 30-digit mpmath reference values for meanfield.special.

Everything here is computed in mpmath only (no float64 code of meanfield.special is used):

* kernel values W_alpha(c) by the Gauss form
      W = Gamma(a+1)^2/(2 sqrt(2pi) Gamma(a+3/2)) (1+c)^(a+1/2) 2F1(1/2,1/2;a+3/2;(1+c)/2)
  (mpmath.hyp2f1), cross-checked here against MATH.md §2.7(4) (2F1 in c^2, extra precision) and
  at a subset of points against the K0 integral §2.7(2) and direct 2-D quadrature;
* derivative kernels alpha^2 W_{alpha-1}(c) (Price identity), cross-checked by mpmath.diff;
* the fixed points e*_alpha of Jbar_alpha (mpmath.findroot on a bracket), Jbar'(e*) and mu;
* the quantities printed in shared/REFERENCE_VALUES.md tables B2 and C, stored next to the
  printed numbers (which are only good to about 1e-7).

Each c is a float64 and is converted to mpmath exactly, so the float64 functions can be compared
with these values point by point. Run:  python scripts/make_golden_special.py
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import mpmath as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meanfield.special import (  # noqa: E402  (mpmath references only)
    alpha_relu_kernel_mp,
    alpha_relu_kernel_quad2d_mp,
    bessel_k0_representation,
)

DPS = 30
OUT = ROOT / "tests" / "golden" / "alpha_relu.json"

ALPHAS = [-0.4, -0.25, 0.0, 0.25, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0]
CS = [
    -1.0,
    -1.0 + 2.0**-52,
    -1.0 + 1e-12,
    -0.999999,
    -0.99,
    -0.9,
    -0.6,
    -0.5,
    -0.3,
    -0.1,
    0.0,
    0.1,
    0.3,
    0.5,
    0.6,
    0.8,
    0.9,
    0.99,
    0.999999,
    1.0 - 1e-12,
    1.0 - 2.0**-53,
    1.0,
]
DERIV_ALPHAS = [0.25, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0]
IDENTITY_ALPHAS = [0.25, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 2.5]


def s(x) -> str:
    return mp.nstr(x, DPS, min_fixed=-mp.inf, max_fixed=mp.inf) if x != 0 else "0"


def c_alpha(a):
    return mp.power(2, a - 1) * mp.gamma(a + mp.mpf(0.5)) / mp.sqrt(mp.pi)


def W(a, c):
    return alpha_relu_kernel_mp(a, c, dps=DPS + 10)


def W_cont(a, c):
    """W_a(c) for a > -3/2 (a != -1), |c| < 1, by the Gauss form (analytic continuation)."""
    a = mp.mpf(a)
    c = mp.mpf(c)
    h = mp.mpf(0.5)
    return (
        mp.gamma(a + 1) ** 2
        / (2 * mp.sqrt(2 * mp.pi) * mp.gamma(a + 3 * h))
        * (1 + c) ** (a + h)
        * mp.hyp2f1(h, h, a + 3 * h, (1 + c) / 2)
    )


def jbar(a, e):
    return W(a, e) / c_alpha(mp.mpf(a))


def dW(a, c):
    """alpha^2 W_{alpha-1}(c) (Price identity); c = +-1 handled by the limits."""
    a = mp.mpf(a)
    c = mp.mpf(c)
    if c == 1:
        return a * a * c_alpha(a - 1) if a > mp.mpf(0.5) else mp.inf
    if c == -1:
        if a > mp.mpf(0.5):
            return mp.mpf(0)
        return mp.inf if a < mp.mpf(0.5) else a * a * W_cont(a - 1, c)
    return a * a * W_cont(a - 1, c)


def fixed_point(a):
    a = mp.mpf(a)
    g = lambda e: jbar(a, e) - e  # noqa: E731
    hi = 1 - mp.mpf(10) ** -12
    assert g(hi) < 0 < g(mp.mpf(0)), a
    return mp.findroot(g, (mp.mpf(0), hi), solver="anderson", tol=mp.mpf(10) ** (-2 * DPS))


def main() -> None:
    mp.mp.dps = DPS + 10
    data: dict = {
        "provenance": {
            "script": "scripts/make_golden_special.py",
            "mpmath_version": mp.__version__,
            "dps": DPS,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "method": "mpmath.hyp2f1 Gauss form of W_alpha (see script docstring); values are "
            "strings with 30 significant digits; c values are float64 (exact).",
        }
    }

    # ---------------------------------------------------------------- c_alpha
    ca_alphas = [-0.4, -0.25, 0.0, 0.25, 0.5, 0.55, 0.6, 0.65, 2 / 3, 0.7, 0.75, 0.8, 0.85,
                 0.9, 0.95, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0]
    data["c_alpha"] = [[a, s(c_alpha(mp.mpf(a)))] for a in ca_alphas]

    # ---------------------------------------------------------------- kernel grid
    grid = []
    worst_series = mp.mpf(0)
    for a in ALPHAS:
        for c in CS:
            v = W(a, c)
            if -1 < c < 1:
                alt = alpha_relu_kernel_mp(a, c, dps=DPS + 10, method="series")
                worst_series = max(worst_series, abs(alt - v) / v)
            grid.append([a, c, s(v)])
    data["kernel_grid"] = grid
    data["check_series_form_max_rel"] = mp.nstr(worst_series, 3)
    print("max rel. difference Gauss form vs MATH §2.7(4):", mp.nstr(worst_series, 3))

    # ---------------------------------------------------------------- derivative grid
    dgrid = []
    worst_diff = mp.mpf(0)
    for a in DERIV_ALPHAS:
        for c in CS:
            v = dW(a, c)
            if -0.99 <= c <= 0.99:
                num = mp.diff(lambda x: W_cont(a, x), mp.mpf(c))
                worst_diff = max(worst_diff, abs(num - v) / v)
            dgrid.append([a, c, s(v) if mp.isfinite(v) else "inf"])
    data["dkernel_grid"] = dgrid
    data["check_price_identity_max_rel"] = mp.nstr(worst_diff, 3)
    print("max rel. difference alpha^2 W_(alpha-1) vs mpmath.diff:", mp.nstr(worst_diff, 3))

    # ---------------------------------------------------------------- independent checks
    k0 = []
    q2 = []
    for a in IDENTITY_ALPHAS:
        for c in (-0.6, 0.3, 0.9):
            with mp.workdps(DPS):
                k = bessel_k0_representation(a, c, dps=DPS)
            v = W(a, c)
            k0.append([a, c, s(k), mp.nstr(abs(k - v) / v, 3)])
        c = 0.5
        with mp.workdps(15):  # the mp references never work below the ambient precision
            q = alpha_relu_kernel_quad2d_mp(a, c, dps=15)
        v = W(a, c)
        q2.append([a, c, s(q), mp.nstr(abs(q - v) / v, 3)])
        print("identities", a, k0[-1][3], q2[-1][3])
    data["k0_representation"] = {"dps": DPS, "rows": k0,
                                 "columns": ["alpha", "c", "K0 integral", "rel. diff to Gauss"]}
    data["quad2d"] = {"dps": 15, "rows": q2,
                      "columns": ["alpha", "c", "2-D quadrature", "rel. diff to Gauss"]}

    # ---------------------------------------------------------------- table C
    tc = []

    def add(name, a, c, printed):
        tc.append([name, a, c, s(W(a, c)), printed])

    printed_int = {
        0: (0.1666667, 0.2984933, 0.3975836),
        1: (0.0544989, 0.2413721, 0.4135599),
        2: (0.0432517, 0.4888639, 1.1356738),
        3: (0.0553675, 1.6118904, 5.1382213),
    }
    for n, vals in printed_int.items():
        for c, p in zip((-0.5, 0.3, 0.8), vals):
            add(f"W_{n}", float(n), c, p)
    add("W_1", 1.0, 0.5, 0.3044989)
    for a, p in zip((0.0, 0.5, 1.0, 2.0, 3.0), (0.25, 0.1689946, 0.1591549, 0.25, 0.6366198)):
        add("W_alpha(0)", a, 0.0, p)
    for a, p in zip((0.5, 0.75, 1.0, 2.0), (0.3989423, 0.4300200, 0.5, 1.5)):
        add("W_alpha(1)", a, 1.0, p)
    for c, p in zip((-0.6, 0.0, 0.5, 0.9), (0.0484379, 0.1589054, 0.2765241, 0.3934337)):
        add("W_0.75", 0.75, c, p)
    for c, p in zip((-0.6, 0.0, 0.5, 0.9), (0.0286985, 0.1849172, 0.4293711, 0.7122111)):
        add("W_1.5", 1.5, c, p)
    data["table_C"] = {"columns": ["name", "alpha", "c", "mpmath", "REFERENCE_VALUES.md"],
                       "rows": tc}

    # ---------------------------------------------------------------- table B2
    b2_printed = {
        0.55: (0.402068, 0.9779116, 0.8994095, 0.223534),
        0.60: (0.406775, 0.9840204, 0.9203914, 0.199022),
        0.65: (0.413014, 0.9889567, 0.9389648, 0.174386),
        2 / 3: (0.415430, 0.9903595, 0.9446166, 0.166150),
        0.70: (0.420764, 0.9928236, 0.9551063, 0.149646),
        0.75: (0.430020, 0.9957228, 0.9687955, 0.124818),
        0.80: (0.440798, 0.9977595, 0.9800158, 0.099921),
        0.85: (0.453129, 0.9990496, 0.9887539, 0.074974),
        0.90: (0.467062, 0.9997298, 0.9950005, 0.049995),
        0.95: (0.482660, 0.9999724, 0.9987500, 0.025000),
        1.25: (0.616634, 0.9375352, 0.9696590, None),
        1.5: (0.797885, 0.7164459, 0.8942836, None),
        2.0: (1.5, 0.3799566, 0.7087388, None),
        3.0: (7.5, 0.1313338, 0.4109694, None),
    }
    b2 = []
    for a, printed in b2_printed.items():
        am = mp.mpf(a)
        e = fixed_point(a)
        jb = jbar(a, e)
        dj = am * am / (2 * am - 1) * jbar(a - 1, e)  # MATH.md §2.5
        dj_num = mp.diff(lambda x: jbar(a, x), e)
        mu = (1 - dj) / (1 - am)
        row = {
            "alpha": a,
            "c_alpha": s(c_alpha(am)),
            "e_star": s(e),
            "one_minus_e_star": s(1 - e),
            "Jbar_at_e_star_minus_e_star": mp.nstr(jb - e, 3),
            "dJbar_at_e_star": s(dj),
            "dJbar_numdiff_rel_diff": mp.nstr(abs(dj_num - dj) / dj, 3),
            "mu": s(mu),
            "printed": {"c_alpha": printed[0], "e_star": printed[1], "dJbar": printed[2],
                        "mu": printed[3]},
        }
        b2.append(row)
        print("B2", a, mp.nstr(e, 12), mp.nstr(dj, 10))
    data["table_B2"] = b2

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
