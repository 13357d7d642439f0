"""Tests of meanfield.special (alpha-ReLU kernels, MATH.md §2.5, §2.7, §3.1).

Expected numbers come from mpmath, either computed here or read from tests/golden/alpha_relu.json
(scripts/make_golden_special.py, 30 digits, provenance inside). The numbers printed in
shared/REFERENCE_VALUES.md are only used as a cross-check at their printed precision.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest

from meanfield.errors import DomainError
from meanfield.special import (
    alpha_relu_dkernel,
    alpha_relu_dnormalized,
    alpha_relu_fixed_point,
    alpha_relu_kernel,
    alpha_relu_kernel_mp,
    alpha_relu_kernel_quad2d_mp,
    alpha_relu_normalized,
    bessel_k0_representation,
    c_alpha,
    three_term_recurrence,
)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "alpha_relu.json").read_text())
IDENTITY_ALPHAS = [0.25, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 2.5]
REL = 1e-12  # required float64 accuracy (measured: < 2e-15)


def rel_err(x: float, ref: mp.mpf) -> float:
    ref = mp.mpf(ref)
    if ref == 0:
        return abs(float(x))
    return float(abs((mp.mpf(x) - ref) / ref))


def mprel(x, y) -> float:
    with mp.workdps(50):
        return float(abs((mp.mpf(x) - mp.mpf(y)) / mp.mpf(y)))


# ----------------------------------------------------------------------------- golden file


def test_golden_provenance():
    prov = GOLDEN["provenance"]
    assert prov["script"] == "scripts/make_golden_special.py"
    assert prov["dps"] >= 30
    assert prov["mpmath_version"] and prov["date"]
    # the generator cross-checked its Gauss form against MATH.md §2.7(4) and mpmath.diff
    assert float(GOLDEN["check_series_form_max_rel"]) < 1e-25
    assert float(GOLDEN["check_price_identity_max_rel"]) < 1e-25


def test_kernel_vs_golden_grid():
    """float64 vs 30-digit mpmath on the full c grid (incl. +-1, 1 - 1e-12, -1 + 1e-12)."""
    worst = 0.0
    for a, c, ref in GOLDEN["kernel_grid"]:
        w = alpha_relu_kernel(a, c)
        jb = alpha_relu_normalized(a, c)
        ref_mp = mp.mpf(ref)
        e = rel_err(w, ref_mp)
        with mp.workdps(40):
            ca = mp.power(2, mp.mpf(a) - 1) * mp.gamma(mp.mpf(a) + 0.5) / mp.sqrt(mp.pi)
            e2 = rel_err(jb, ref_mp / ca)
        assert e <= REL and e2 <= REL, (a, c, w, ref, e, e2)
        worst = max(worst, e, e2)
    assert worst < 1e-13  # achieved: ~2e-15 on x86 (longdouble economisation), ~1e-14 elsewhere


def test_dkernel_vs_golden_grid():
    for a, c, ref in GOLDEN["dkernel_grid"]:
        d = alpha_relu_dkernel(a, c)
        if ref == "inf":
            assert d == math.inf, (a, c, d)
        else:
            assert rel_err(d, mp.mpf(ref)) <= REL, (a, c, d, ref)
            if a > 0.5:
                ca = float(c_alpha(a))
                assert abs(alpha_relu_dnormalized(a, c) * ca - d) <= 1e-14 * abs(d) + 1e-300


def test_c_alpha_vs_golden():
    for a, ref in GOLDEN["c_alpha"]:
        assert rel_err(c_alpha(a), mp.mpf(ref)) < 1e-14
    assert c_alpha(np.array([0.5, 1.0])).shape == (2,)
    # MATH.md §2.5: c_{alpha-1}/c_alpha = 1/(2 alpha - 1)
    a = np.array([0.6, 1.0, 1.7, 3.0])
    assert np.allclose(c_alpha(a - 1) / c_alpha(a), 1 / (2 * a - 1), rtol=1e-14)


# ----------------------------------------------------------------------------- REFERENCE_VALUES


def test_table_C_reference_values():
    """REFERENCE_VALUES.md table C: mpmath (golden) vs printed (1e-6), float64 vs mpmath (1e-12)."""
    for name, a, c, ref, printed in GOLDEN["table_C"]["rows"]:
        ref_mp = mp.mpf(ref)
        assert abs(float(ref_mp) - printed) <= 1e-6 * max(1.0, abs(printed)), (name, a, c)
        assert rel_err(alpha_relu_kernel(a, c), ref_mp) <= REL, (name, a, c)


def test_table_C_closed_forms_in_test():
    """W_alpha(0) = 2^alpha Gamma((alpha+1)/2)^2/(4 pi), W_alpha(1) = c_alpha (MATH.md §2.7(4))."""
    for a in [-0.4, 0.0, 0.5, 0.75, 1.0, 2.0, 3.0, 4.2]:
        with mp.workdps(30):
            w0 = mp.power(2, a) * mp.gamma(mp.mpf(a + 1) / 2) ** 2 / (4 * mp.pi)
            w1 = mp.power(2, a - 1) * mp.gamma(mp.mpf(a) + 0.5) / mp.sqrt(mp.pi)
        assert rel_err(alpha_relu_kernel(a, 0.0), w0) <= REL
        assert rel_err(alpha_relu_kernel(a, 1.0), w1) <= REL
    assert alpha_relu_kernel(1.0, 0.0) == pytest.approx(1 / (2 * math.pi), rel=1e-15)


def test_table_B2_reference_values():
    """c_alpha, e*_alpha, Jbar'(e*), mu of REFERENCE_VALUES.md B2."""
    for row in GOLDEN["table_B2"]:
        a = row["alpha"]
        pr = row["printed"]
        e_ref = mp.mpf(row["e_star"])
        dj_ref = mp.mpf(row["dJbar_at_e_star"])
        # the golden values are consistent and reproduce the printed table
        assert float(row["Jbar_at_e_star_minus_e_star"]) < 1e-25
        assert float(row["dJbar_numdiff_rel_diff"]) < 1e-20
        assert abs(float(mp.mpf(row["c_alpha"])) - pr["c_alpha"]) < 1e-6
        assert abs(float(e_ref) - pr["e_star"]) < 1e-6
        assert abs(float(dj_ref) - pr["dJbar"]) < 1e-6
        if pr["mu"] is not None:
            assert abs(float(mp.mpf(row["mu"])) - pr["mu"]) < 1e-6
        # float64
        e = alpha_relu_fixed_point(a)
        assert abs(e - float(e_ref)) < 1e-13, (a, e, row["e_star"])
        one_m = mp.mpf(row["one_minus_e_star"])
        assert rel_err(1.0 - e, one_m) < 1e-8  # 1 - e* limited by the float64 e* itself
        assert rel_err(alpha_relu_dnormalized(a, e), dj_ref) < 1e-11
        assert rel_err(c_alpha(a), mp.mpf(row["c_alpha"])) < 1e-14


def test_fixed_point_properties():
    assert alpha_relu_fixed_point(1.0) == 1.0
    for a in [-0.3, 0.0, 0.25, 0.5, 0.55, 0.99, 0.999, 1.001, 1.2, 4.0]:
        e = alpha_relu_fixed_point(a)
        assert 0.0 < e < 1.0
        assert abs(alpha_relu_normalized(a, e) - e) <= 4e-16
    # alpha = 0: 1 - arccos(e)/pi = e
    e0 = alpha_relu_fixed_point(0.0)
    assert abs(1 - math.acos(e0) / math.pi - e0) < 1e-15
    # near alpha = 1, 1 - e* is tiny but resolved (checked against mpmath)
    a = 0.999
    e = alpha_relu_fixed_point(a)
    with mp.workdps(40):
        ca = mp.power(2, mp.mpf(a) - 1) * mp.gamma(mp.mpf(a) + 0.5) / mp.sqrt(mp.pi)
        g = alpha_relu_kernel_mp(a, e, dps=40) / ca - mp.mpf(e)
        slope = mp.mpf(a) ** 2 / (2 * mp.mpf(a) - 1) * alpha_relu_kernel_mp(
            a - 1, e, dps=40
        ) / (ca / (2 * mp.mpf(a) - 1)) - 1
        # Newton step from e to the true root is -g/slope: tiny
        assert abs(g / slope) < 1e-15
    with pytest.raises(DomainError):
        alpha_relu_fixed_point(-0.5)


# ----------------------------------------------------------------------------- identities (mpmath)


@pytest.mark.parametrize("a", IDENTITY_ALPHAS)
def test_three_term_recurrence(a):
    """MATH.md §2.7(3): W_{a+1} = (2a+1) c W_a + a^2 (1-c^2) W_{a-1}."""
    for c in (-0.7, 0.2, 0.95):
        lhs = alpha_relu_kernel_mp(mp.fadd(a, 1, exact=True), c, dps=30)  # exactly a + 1
        rhs = three_term_recurrence(a, c, dps=30)
        assert mprel(rhs, lhs) < 1e-25
    cs = np.array([-1.0, -0.999, -0.7, 0.0, 0.2, 0.95, 1 - 1e-12, 1.0])
    rhs = three_term_recurrence(a, cs)
    lhs = alpha_relu_kernel(a + 1, cs)
    # float64: the recurrence adds two positive terms for c >= 0 (no cancellation)
    pos = cs >= 0
    assert np.allclose(rhs[pos], lhs[pos], rtol=1e-13, atol=0)
    assert np.allclose(rhs, lhs, rtol=1e-9, atol=1e-15)


def test_recurrence_alpha0_special_case():
    """W_1 = c W_0 + sqrt(1-c^2)/(2 pi) (MATH.md §2.7(3))."""
    c = np.linspace(-0.9, 1.0, 20)
    assert np.allclose(three_term_recurrence(0.0, c), alpha_relu_kernel(1.0, c), rtol=1e-13)


@pytest.mark.parametrize("a", IDENTITY_ALPHAS)
def test_hypergeometric_and_angular_forms(a):
    """MATH.md §2.7(4) (2F1 in c^2) and §2.7(5) (angular integral) vs the Gauss form."""
    for c in (-0.95, -0.4, 0.3, 0.9):
        g = alpha_relu_kernel_mp(a, c, dps=30)
        s = alpha_relu_kernel_mp(a, c, dps=30, method="series")
        ang = alpha_relu_kernel_mp(a, c, dps=20, method="angular")
        assert mprel(s, g) < 1e-25
        assert mprel(ang, g) < 1e-18
        assert rel_err(alpha_relu_kernel(a, c), g) <= REL


def test_k0_representation_golden():
    """MATH.md §2.7(2), K0 integral at 30 digits (precomputed; slow), vs Gauss form and float64."""
    rows = GOLDEN["k0_representation"]["rows"]
    assert {r[0] for r in rows} == set(IDENTITY_ALPHAS)
    for a, c, k0, _ in rows:
        g = alpha_relu_kernel_mp(a, c, dps=30)
        assert mprel(k0, g) < 1e-25
        assert rel_err(alpha_relu_kernel(a, c), mp.mpf(k0)) <= REL


def test_k0_representation_live():
    """One live K0 quadrature (at mpmath's default 15 digits, ~2 s) so the function itself runs."""
    k = bessel_k0_representation(1.5, -0.4, dps=10)
    assert rel_err(alpha_relu_kernel(1.5, -0.4), k) < 1e-13


def test_quad2d_golden_and_live():
    """Direct 2-D quadrature (independent of every special-function identity). The golden file
    holds 15-digit values (about 20 s each); here one live evaluation at 10 digits (~5 s)."""
    rows = GOLDEN["quad2d"]["rows"]
    assert {r[0] for r in rows} == set(IDENTITY_ALPHAS)
    for a, c, q, _ in rows:
        assert mprel(q, alpha_relu_kernel_mp(a, c, dps=30)) < 1e-14  # 15-digit quadrature
        assert rel_err(alpha_relu_kernel(a, c), mp.mpf(q)) < 1e-13
    q = alpha_relu_kernel_quad2d_mp(0.75, -0.3, dps=10)
    assert rel_err(alpha_relu_kernel(0.75, -0.3), q) < 1e-9  # 10-digit quadrature


@pytest.mark.parametrize("a", IDENTITY_ALPHAS)
def test_price_identity(a):
    """dW_a/dc = a^2 W_{a-1} (MATH.md §0, §2.7(3)): mpmath numerical derivative of the mp kernel
    vs the float64 alpha_relu_dkernel, and vs the mp right-hand side."""
    for c in (-0.8, 0.1, 0.7):
        with mp.workdps(30):
            num = mp.diff(lambda x, a=a: alpha_relu_kernel_mp(a, x, dps=30), mp.mpf(c))
            # a^2 W_{a-1} in mpmath, read off the recurrence's second term
            rhs = (
                three_term_recurrence(a, c, dps=30)
                - (2 * mp.mpf(a) + 1) * mp.mpf(c) * alpha_relu_kernel_mp(a, c, dps=30)
            ) / (1 - mp.mpf(c) ** 2)
        assert mprel(rhs, num) < 1e-20
        assert rel_err(alpha_relu_dkernel(a, c), num) <= REL
        assert rel_err(alpha_relu_dnormalized(a, c) * float(c_alpha(a)), num) < 1e-13


def test_dkernel_continuation_small_alpha():
    """0 < |alpha| <= 1/2: finite for |c| < 1 (dW/dc by mpmath.diff), +inf at c = 1."""
    for a in (-0.3, 0.25, 0.5):
        for c in (-0.6, 0.4, 0.99):
            with mp.workdps(30):
                num = mp.diff(lambda x, a=a: alpha_relu_kernel_mp(a, x, dps=30), mp.mpf(c))
            assert rel_err(alpha_relu_dkernel(a, c), num) <= REL
        assert alpha_relu_dkernel(a, 1.0) == math.inf
        assert alpha_relu_dnormalized(a, 1.0) == math.inf
    assert alpha_relu_dkernel(0.25, -1.0) == math.inf
    assert math.isfinite(alpha_relu_dkernel(0.5, -1.0))
    assert alpha_relu_dkernel(0.75, -1.0) == 0.0
    # alpha > 1/2 at c = 1: alpha^2 c_{alpha-1}; Jbar'(1) = alpha^2/(2 alpha - 1) (MATH.md §2.5)
    for a in (0.6, 1.0, 2.5):
        assert alpha_relu_dkernel(a, 1.0) == pytest.approx(a * a * c_alpha(a - 1), rel=1e-14)
        assert alpha_relu_dnormalized(a, 1.0) == pytest.approx(a * a / (2 * a - 1), rel=1e-14)


def test_step_derivative_raises():
    with pytest.raises(DomainError, match="delta"):
        alpha_relu_dkernel(0.0, 0.3)
    with pytest.raises(DomainError):
        alpha_relu_dnormalized(0.0, 0.3)


# ----------------------------------------------------------------------------- float64 behaviour


@pytest.mark.parametrize(
    "a", [-0.4, -0.25, 0.0, 0.25, 0.5, 0.5 + 1e-9, 0.6, 0.75, 1.0, 1.5 - 1e-7, 2.5, 3.0, 7.3]
)
def test_float_vs_mpmath_endpoints(a):
    """Live mpmath check at the delicate points, incl. near-degenerate alpha (log case)."""
    cs = [-1.0, -1 + 1e-12, -0.5, -1e-300, 0.0, 0.3, 1 - 1e-12, 1 - 2.0**-53, 1.0]
    vals = alpha_relu_kernel(a, np.array(cs))
    for c, v in zip(cs, vals):
        assert rel_err(v, alpha_relu_kernel_mp(a, c, dps=30)) <= REL, (a, c)
    assert alpha_relu_kernel(a, -1.0) == 0.0
    assert alpha_relu_normalized(a, 1.0) == 1.0


def test_integer_alpha_closed_forms():
    """alpha = 0..3 via Cho–Saul (MATH.md §3.1) agree with the general series at the switch."""
    c = np.linspace(-1, 1, 2001)
    for n in range(4):
        w = alpha_relu_kernel(float(n), c)
        w_near = alpha_relu_kernel(n + 1e-13, c)  # general (series) path
        assert np.allclose(w, w_near, rtol=1e-11, atol=0), n
    th = np.arccos(0.3)
    assert alpha_relu_kernel(1.0, 0.3) == pytest.approx(
        (np.sin(th) + (np.pi - th) * 0.3) / (2 * np.pi), rel=1e-15
    )
    assert alpha_relu_kernel(0.0, -1.0) == 0.0  # step: W_0(-1) = 0 (not 0**0)


def test_vectorised_equals_scalar_loop_and_shapes():
    rng = np.random.default_rng(1)
    c = rng.uniform(-1, 1, size=(7, 9))
    c[0, 0], c[1, 1], c[2, 2] = 1.0, -1.0, 0.0
    for a in (0.0, 0.6, 1.0, 2.5):
        v = alpha_relu_kernel(a, c)
        assert v.shape == c.shape and v.dtype == np.float64
        loop = np.array([[alpha_relu_kernel(a, float(x)) for x in row] for row in c])
        assert np.array_equal(v, loop)
        d = alpha_relu_dkernel(a, c) if a else None
        if d is not None:
            loop_d = np.array([[alpha_relu_dkernel(a, float(x)) for x in row] for row in c])
            assert np.array_equal(d, loop_d)
    s = alpha_relu_kernel(0.6, 0.3)
    assert isinstance(s, np.floating) and np.ndim(s) == 0
    # broadcasting over alpha
    al = np.array([[0.25], [1.0], [2.5]])
    cc = np.array([-0.5, 0.0, 0.9])
    v = alpha_relu_kernel(al, cc)
    assert v.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            assert v[i, j] == alpha_relu_kernel(float(al[i, 0]), cc[j])


def test_nan_in_nan_out():
    c = np.array([0.2, np.nan, -1.0, 1.0, np.nan])
    for f in (alpha_relu_kernel, alpha_relu_normalized, alpha_relu_dkernel, alpha_relu_dnormalized):
        out = f(0.75, c)
        assert np.isnan(out[1]) and np.isnan(out[4])
        assert np.all(np.isfinite(out[[0, 2, 3]]))
    assert np.isnan(alpha_relu_kernel(1.0, np.nan))
    assert np.isnan(alpha_relu_kernel(0.3, np.nan))


@pytest.mark.parametrize(
    "f", [alpha_relu_kernel, alpha_relu_normalized, alpha_relu_dkernel, alpha_relu_dnormalized]
)
def test_bad_input_raises(f):
    with pytest.raises(DomainError, match="alpha must be > -1/2"):
        f(-0.5, 0.3)
    with pytest.raises(DomainError, match="alpha must be > -1/2"):
        f(-1.0, 0.3)
    with pytest.raises(DomainError, match="alpha"):
        f(np.nan, 0.3)
    with pytest.raises(DomainError, match="1.5"):
        f(0.75, 1.5)
    with pytest.raises(DomainError, match="-1.0001"):
        f(0.75, np.array([0.2, -1.0001]))
    with pytest.raises(DomainError):
        f(np.array([0.5, -0.7]), 0.3)


def test_bad_input_mp_and_c_alpha():
    with pytest.raises(DomainError):
        c_alpha(-0.5)
    with pytest.raises(DomainError):
        alpha_relu_kernel_mp(-0.6, 0.1)
    with pytest.raises(DomainError):
        alpha_relu_kernel_mp(0.5, 1.1)
    with pytest.raises(DomainError):
        bessel_k0_representation(0.5, 1.0)


def test_monotone_convex_and_bounded():
    """Jbar is a power series with non-negative coefficients: increasing, convex on [0, 1],
    and |W(c)| <= c_alpha (Cauchy–Schwarz)."""
    c = np.linspace(-1, 1, 4001)
    for a in (-0.4, 0.25, 0.6, 1.5, 5.0):
        j = alpha_relu_normalized(a, c)
        assert np.all(np.diff(j) >= -1e-15)
        assert np.all((j >= 0) & (j <= 1 + 1e-15))
        jj = j[c >= 0]
        assert np.all(np.diff(jj, 2) >= -1e-12)


def test_near_half_integer_continuity():
    """The c -> 1 expansion is uniform in eps = alpha + 1/2 - round(alpha + 1/2)."""
    c = np.array([0.0, 0.5, 0.9, 0.999, 1 - 1e-9, 1 - 1e-14])
    for a0 in (0.5, 1.5, 2.5):
        base = alpha_relu_normalized(a0, c)
        for d in (1e-14, -1e-12, 1e-9, -1e-6):
            near = alpha_relu_normalized(a0 + d, c)
            # |dJbar/dalpha| is O(log(1/(1-c))) here
            assert np.allclose(near, base, rtol=0, atol=100 * abs(d) + 1e-15)
