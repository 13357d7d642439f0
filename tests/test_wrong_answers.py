"""Issue 16, "no wrong or silent answers": each wrong number a user met, checked against an
independent reference (a closed form derived here or in MATH.md, or a wide random network), never
against a number copied from meanfield's own output.
"""

from __future__ import annotations

import math

import mpmath
import pytest
from scipy import special

import meanfield as mf
from meanfield.errors import NoFixedPoint

# ------------------------------------------------------------------------------------------
# 1. Bounded activations at huge sigma_w2: q* ~ sigma_w2 sup phi^2, not "q diverges"
# ------------------------------------------------------------------------------------------


def _tanh_q_star_large(sw: float) -> float:
    """q* = sigma_w2 (1 - E[sech^2(sqrt(q) z)]) with E[sech^2(sqrt q z)] = 2 / sqrt(2 pi q)
    (1 + O(1/q)) for q >> 1 (the integral of sech^2 is 2), solved by fixed-point iteration."""
    q = sw
    for _ in range(50):
        q = sw * (1.0 - 2.0 / math.sqrt(2.0 * math.pi * q))
    return q


@pytest.mark.parametrize("sw", [1e12, 1e100, 1e300, 1e308])
def test_tanh_huge_sigma_w2_has_a_fixed_point(sw):
    fp = mf.fixed_point("tanh", sw, 0.0)
    assert fp.q_star == pytest.approx(_tanh_q_star_large(sw), rel=1e-12)
    # sign-function limit: C(c) = (2/pi) arcsin(c), so c* = 0 with slope 2/pi
    assert fp.c_star == pytest.approx(0.0, abs=1e-12)
    assert fp.chi_c == pytest.approx(2.0 / math.pi, rel=1e-5)
    assert fp.phase == "chaotic"
    assert fp.xi_q is not None and fp.xi_q < 0.1  # the length map is flat there: q^l = q* at once


@pytest.mark.parametrize("sw", [1e12, 1e300])
def test_erf_huge_sigma_w2_closed_form(sw):
    # MATH.md 1.6: V_erf(q) = (2/pi) arcsin(2q / (1 + 2q)); root of q = sw V(q) with mpmath
    mpmath.mp.dps = 40
    s = mpmath.mpf(sw)
    want = mpmath.findroot(lambda q: s * 2 / mpmath.pi * mpmath.asin(2 * q / (1 + 2 * q)) - q, s)
    fp = mf.fixed_point("erf", sw, 0.0)
    assert fp.q_star == pytest.approx(float(want), rel=1e-13)
    assert fp.chi_c == pytest.approx(2.0 / math.pi, rel=1e-5)


def test_sigmoid_huge_sigma_w2():
    # sigmoid^2 -> step at large q: V -> 1/2, so q* / sigma_w2 -> 1/2
    fp = mf.fixed_point("sigmoid", 1e12, 0.0)
    assert fp.q_star / 1e12 == pytest.approx(0.5, rel=1e-5)


def test_alpha_relu_fixed_point_above_1e10():
    # V(q) = c_a q^a with c_a = E[relu(z)^(2a)] = 2^a Gamma(a + 1/2) / (2 sqrt(pi)), so
    # q* = (sigma_w2 c_a)^(1 / (1 - a)) -- 3.4e10 for a = 0.75, sigma_w2 = 1000
    a, sw = 0.75, 1000.0
    ca = 2 ** a * special.gamma(a + 0.5) / (2 * math.sqrt(math.pi))
    fp = mf.fixed_point("alpha_relu:0.75", sw, 0.0)
    assert fp.q_star == pytest.approx((sw * ca) ** (1 / (1 - a)), rel=1e-10)


def test_unbounded_growth_still_diverges_and_says_float_range():
    # softplus ~ relu at large q: V(q) ~ q/2, so sigma_w2 = 3 > 2 truly diverges
    with pytest.raises(NoFixedPoint, match="float range"):
        mf.fixed_point("softplus", 3.0, 0.0)


def test_iterate_tanh_huge_sigma_w2_follows_arcsine_law():
    tr = mf.iterate("tanh", 1e300, 0.0, depth=6, q0=1.0, c0=0.5)
    assert tr.q[-1] == pytest.approx(_tanh_q_star_large(1e300), rel=1e-12)
    # after the first layer the pre-activations are ~1e150 wide: tanh acts as sign()
    c = tr.c[1]
    for want in tr.c[2:]:
        c = 2.0 / math.pi * math.asin(c)
        assert want == pytest.approx(c, rel=1e-9)
