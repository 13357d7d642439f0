"""GELU's closed-form kernels (activations._gelu_forms) against an independent 20-digit mpmath
reference: W(q1, q2, c) = E_u[u Phi(u) E[v Phi(v) | u]] with the inner expectation in closed form
(v | u is Gaussian: E[v Phi(v)] = m Phi(m / r) + s^2 / r phi(m / r), r = sqrt(1 + s^2)), then a
1-D mpmath quadrature; W' = E[phi'(u) phi'(v)] the same way with phi' = Phi + x phi."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

from meanfield.activations import get_activation

GELU = get_activation("gelu")


def _ref(q1, q2, c, deriv=False):
    mp.mp.dps = 20
    q1, q2, c = mp.mpf(q1), mp.mpf(q2), mp.mpf(c)
    s1 = mp.sqrt(q1)
    k = c * mp.sqrt(q2 / q1)          # E[v | u] = k u
    s2 = (1 - c * c) * q2             # Var[v | u]

    def inner(m):
        r = mp.sqrt(1 + s2)
        if not deriv:                 # E[v Phi(v)], v ~ N(m, s2)
            return m * mp.ncdf(m / r) + s2 / r * mp.npdf(m / r)
        # E[Phi(v) + v phi(v)]: E Phi(v) = Phi(m / r); E[v phi(v)] = m / r^3 phi(m / r)
        return mp.ncdf(m / r) + m / r ** 3 * mp.npdf(m / r)

    def outer(z):
        u = s1 * z
        f = u * mp.ncdf(u) if not deriv else mp.ncdf(u) + u * mp.npdf(u)
        return f * inner(k * u) * mp.npdf(z)

    return float(mp.quad(outer, [-mp.inf, -1 / s1, 0, 1 / s1, mp.inf]))


@pytest.mark.parametrize("q1, q2, c", [
    (1.0, 1.0, 0.5), (0.3, 2.0, -0.7), (1e-3, 1e-2, 0.99), (10.0, 10.0, 0.9999), (1e4, 3e3, -0.3),
    (1.0, 1.0, -0.999999), (1.0685e8, 1.0685e8, 0.99), (5.0, 0.2, 0.0),
])
def test_gelu_kernels_against_mpmath(q1, q2, c):
    for key, deriv in (("w", False), ("wd", True)):
        got = float(GELU.closed_forms[key](q1, q2, c))
        ref = _ref(q1, q2, c, deriv)
        scale = np.sqrt(float(GELU.closed_forms["v" if not deriv else "vd"](q1))
                        * float(GELU.closed_forms["v" if not deriv else "vd"](q2)))
        assert abs(got - ref) <= 1e-13 * scale, (key, got, ref)


@pytest.mark.parametrize("q", [0.0, 1e-6, 1.0, 1e3, 1e9])
def test_gelu_moments_at_c_1(q):
    v = float(GELU.closed_forms["v"](q))
    vd = float(GELU.closed_forms["vd"](q))
    if q == 0:
        assert v == 0.0 and vd == 0.25
        return
    assert v == pytest.approx(_ref(q, q, 1.0 - 1e-30), rel=1e-13)
    assert vd == pytest.approx(_ref(q, q, 1.0 - 1e-30, True), rel=1e-13)


def test_gelu_kernels_do_not_overflow():
    """Written with q/(1+q) and 1/(1+q): finite up to q ~ 1e308, relu-like there (V = q/2)."""
    for q in (1e150, 1e300, 1e308):
        assert float(GELU.closed_forms["v"](q)) / q == pytest.approx(0.5, rel=1e-12)
        assert float(GELU.closed_forms["vd"](q)) == pytest.approx(0.5, rel=1e-12)
        assert np.isfinite(float(GELU.closed_forms["w"](q, 1.0, 0.3)))
        assert np.isfinite(float(GELU.closed_forms["wd"](q, q, -1.0)))
