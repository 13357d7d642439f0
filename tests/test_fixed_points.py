"""Fixed points, depth scales, phases and the edge of chaos (meanfield.fixed_points).

* Golden values: tests/golden/vanilla.json, written by scripts/make_golden.py from 30-digit mpmath
  with its own quadrature (no meanfield code).  Compared at 1e-9 relative.
* The numbers printed in ../shared/REFERENCE_VALUES.md (A1, A2), at their printed precision.
* Properties (hypothesis): a fixed point is a fixed point; xi_q is the length map's slope.
* Existence: what has no fixed point or no edge of chaos says why; several fixed points.
* The vectorised solvers report per-point status and agree with scalar calls.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import meanfield
from meanfield import gaussian, maps
from meanfield.errors import DomainError, NoFixedPoint
from meanfield.fixed_points import (
    STATUS_MESSAGES,
    edge_of_chaos,
    edge_of_chaos_curve,
    fixed_point,
    solve_grid,
    solve_q_star,
)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "vanilla.json").read_text())
REL = 1e-9


def num(text) -> float:
    return float(Fraction(text)) if "/" in str(text) else float(text)


def close(got, want, rel=REL, abs_=1e-13):
    return abs(got - want) <= max(rel * abs(want), abs_)


# ------------------------------------------------------------------------------------------
# Golden values (30-digit mpmath, scripts/make_golden.py)
# ------------------------------------------------------------------------------------------

def test_golden_file_has_provenance():
    prov = GOLDEN["provenance"]
    assert prov["script"] == "scripts/make_golden.py" and prov["dps"] >= 30
    assert prov["mpmath"] and prov["date"]
    checks = GOLDEN["quadrature_checks"]
    assert all(float(v) < 1e-18 for v in checks.values()), checks


@pytest.mark.parametrize("row", GOLDEN["tanh_fixed_points"], ids=lambda r: f"{r['sigma_w2']}-{r['sigma_b2']}")
def test_tanh_fixed_points_golden(row):
    fp = fixed_point("tanh", num(row["sigma_w2"]), num(row["sigma_b2"]))
    for key in ("q_star", "chi_1", "c_star", "chi_c", "xi_c", "xi_q"):
        assert close(getattr(fp, key), num(row[key])), (key, getattr(fp, key), row[key])
    assert fp.phase == row["phase"]
    assert fp.q_unstable is None
    # the length-map slope behind xi_q, and the identities the golden script checked by mpmath.diff
    assert close(math.exp(-1 / fp.xi_q), num(row["slope_q"]))
    assert abs(num(row["slope_q"]) - num(row["slope_q_finite_difference"])) < 1e-12
    if row["chi_c_finite_difference"] is not None:
        assert abs(num(row["chi_c"]) - num(row["chi_c_finite_difference"])) < 1e-12


@pytest.mark.parametrize("row", GOLDEN["erf_fixed_points"], ids=lambda r: f"{r['sigma_w2']}-{r['sigma_b2']}")
def test_erf_fixed_points_golden(row):
    fp = fixed_point("erf", num(row["sigma_w2"]), num(row["sigma_b2"]))
    for key in ("q_star", "chi_1", "c_star", "chi_c", "xi_c", "xi_q"):
        assert close(getattr(fp, key), num(row[key])), (key, getattr(fp, key), row[key])
    assert fp.phase == row["phase"]


def test_tanh_edge_of_chaos_golden():
    for row in GOLDEN["tanh_eoc_by_sigma_b2"]:
        e = edge_of_chaos("tanh", num(row["sigma_b2"]))
        assert close(e.sigma_w2, num(row["sigma_w2"])) and close(e.q_star, num(row["q_star"])), row
    # the same points from one vectorised call
    sb = np.array([num(r["sigma_b2"]) for r in GOLDEN["tanh_eoc_by_sigma_b2"]])
    curve = edge_of_chaos_curve("tanh", sb)
    want = np.array([num(r["sigma_w2"]) for r in GOLDEN["tanh_eoc_by_sigma_b2"]])
    assert np.all(np.abs(curve.sigma_w2 - want) <= REL * want) and np.all(curve.status == 0)
    # points given by q* or by sigma_w2 (Pennington-Schoenholz-Ganguli 2017, PyTorch's gain 5/3)
    for row in GOLDEN["tanh_eoc_by_q_star"] + GOLDEN["tanh_eoc_by_sigma_w2"]:
        e = edge_of_chaos("tanh", num(row["sigma_b2"]))
        assert close(e.sigma_w2, num(row["sigma_w2"])) and close(e.q_star, num(row["q_star"])), row
        fp = fixed_point("tanh", num(row["sigma_w2"]), num(row["sigma_b2"]))
        assert fp.phase == "critical" or abs(fp.chi_1 - 1) < 1e-9
        assert close(fp.q_star, num(row["q_star"]))


def test_erf_edge_of_chaos_golden():
    for row in GOLDEN["erf_eoc_by_sigma_b2"]:
        e = edge_of_chaos("erf", num(row["sigma_b2"]))
        assert close(e.sigma_w2, num(row["sigma_w2"])) and close(e.q_star, num(row["q_star"])), row
    assert edge_of_chaos("erf", 0.0).sigma_w2 == pytest.approx(math.pi / 4, rel=1e-15)


def test_relu_edge_of_chaos_is_exactly_2_0():
    assert GOLDEN["relu_eoc"]["sigma_w2"] == "2" and GOLDEN["relu_eoc"]["sigma_b2"] == "0"
    e = edge_of_chaos("relu", 0.0)
    assert e.sigma_w2 == 2.0 and e.sigma_b2 == 0.0
    assert "marginal" in e.status
    fp = fixed_point("relu", 2.0, 0.0)
    assert fp.chi_1 == 1.0 and fp.phase == "critical" and fp.xi_c == math.inf
    assert fp.to_dict()["xi_c"] is None
    leaky = edge_of_chaos("leaky_relu:0.1", 0.0)
    assert leaky.sigma_w2 == pytest.approx(2 / 1.01, rel=1e-15)


# ------------------------------------------------------------------------------------------
# The printed numbers of ../shared/REFERENCE_VALUES.md, at their printed precision
# (the golden file carries them to 25 digits; these tables were typed from the document)
# ------------------------------------------------------------------------------------------

# A2: sigma_w2, sigma_b2, q*, chi_1, c*, xi_c, xi_q
A2 = [
    (1.0, 0.05, 0.19359, 0.75903, 1, 3.627, 1.748), (1.5, 0.05, 0.41804, 0.93864, 1, 15.791, 1.683),
    (1.7, 0.05, 0.53308, 0.98674, 1, 74.918, 1.558), (2.0, 0.05, 0.72176, 1.04767, 0.74408, 25.213, 1.388),
    (2.5, 0.05, 1.06396, 1.13352, 0.44680, 11.796, 1.180), (3.0, 0.05, 1.42801, 1.20893, 0.29932, 9.051, 1.041),
    (4.0, 0.05, 2.19549, 1.34240, 0.16506, 6.980, 0.873), (1.5, 0.3, 0.84618, 0.74183, 1, 3.349, 0.872),
    (2.0, 0.3, 1.13465, 0.88425, 1, 8.129, 0.883), (2.5, 1.0, 2.37504, 0.81048, 1, 4.759, 0.586),
]
# A1, tanh critical line indexed by sigma_b2: (sigma_b2, sigma_w2, q*)
A1_SB = [(1e-4, 1.086026, 0.045709), (0.01, 1.424205, 0.273301), (0.02, 1.544193, 0.371240),
         (0.05, 1.760955, 0.570048), (0.1, 1.986073, 0.805799), (0.2, 2.285152, 1.164496),
         (0.3, 2.505127, 1.461169), (0.5, 2.843167, 1.971031), (1.0, 3.443211, 3.036396),
         (2.0, 4.266395, 4.830586)]
# A1, parametrised by q*: (q*, sigma_w2, sigma_b2).  The printed q* = 16 column (7.584688, 9.891403)
# is what 301-node Gauss-Hermite gives; the integral is 7.595068, 9.882938 (the golden script,
# scipy.integrate.quad and meanfield agree), so that column is left out here.
A1_Q = [(1 / 64, 1.030558, 4.6513e-6), (1 / 16, 1.115381, 2.3688e-4), (0.25, 1.393962, 8.1252e-3),
        (0.5, 1.687975, 3.8041e-2), (1.0, 2.153303, 0.150965), (2.0, 2.861162, 0.512265),
        (4.0, 3.907006, 1.518030)]
A1_ERF = [(0.0, 0.785398, 0.0), (0.01, 1.114280, 0.253210), (0.05, 1.375839, 0.517177),
          (0.1, 1.552118, 0.726359), (0.5, 2.233660, 1.772061)]


def printed(got, value, decimals_of=None):
    """|got - printed| within 1e-4 relative or half a unit of the last printed digit."""
    text = repr(value) if decimals_of is None else decimals_of
    half_ulp = 0.5 * 10.0 ** -len(text.split(".")[1]) if "." in text and "e" not in text else 0.0
    return abs(got - value) <= max(1e-4 * abs(value), half_ulp)


@pytest.mark.parametrize("row", A2, ids=lambda r: f"{r[0]}-{r[1]}")
def test_reference_values_A2(row):
    sw, sb, q, chi1, cs, xic, xiq = row
    fp = fixed_point("tanh", sw, sb)
    assert printed(fp.q_star, q) and printed(fp.chi_1, chi1) and printed(fp.c_star, cs)
    assert printed(fp.xi_c, xic) and printed(fp.xi_q, xiq)


def test_reference_values_A1():
    for sb, sw, q in A1_SB:
        e = edge_of_chaos("tanh", sb)
        assert printed(e.sigma_w2, sw) and printed(e.q_star, q), sb
    for q, sw, sb in A1_Q:
        act = meanfield.get_activation("tanh")
        vd, v = float(gaussian.v_dphi(act, q)), float(gaussian.v_phi(act, q))
        assert printed(1 / vd, sw) and printed(q - v / vd, sb), q
    for sb, sw, q in A1_ERF:
        e = edge_of_chaos("erf", sb)
        assert printed(e.sigma_w2, sw) and printed(e.q_star, q), sb
    # PSG 2017 pairs and PyTorch's tanh gain 5/3: sigma_w2 -> (sigma_b2, q*) on the critical line.
    # The printed sigma_b2 are rounded, so these are checked on the golden (mpmath) values, which
    # meanfield matches at 1e-9 (test_tanh_edge_of_chaos_golden).
    rows = {num(r["sigma_w2_label"]): r for r in GOLDEN["tanh_eoc_by_sigma_w2"]}
    for sw, sb, q in [(1.05, 2.0105e-5, 0.025921), (2.0, 0.10378, 0.82135), (25 / 9, 0.45682, 1.86732)]:
        row = rows[sw]
        assert printed(num(row["sigma_b2"]), sb) and printed(num(row["q_star"]), q), sw
    # A2 identity checks at (2, 0.05): q-map slope 0.4865217440, C-map slope at c* 0.961114792
    fp = fixed_point("tanh", 2.0, 0.05)
    assert abs(math.exp(-1 / fp.xi_q) - 0.4865217440) < 1e-9 and abs(fp.chi_c - 0.961114792) < 1e-9


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------

FP_ACTIVATIONS = ["tanh", "erf", "sigmoid", "softplus", "elu", "selu", "hard_tanh", "sin", "relu", "gelu"]


@settings(max_examples=25, deadline=None)
@given(spec=st.sampled_from(FP_ACTIVATIONS), sw=st.floats(0.2, 4.0), sb=st.floats(0.0, 1.5))
def test_a_fixed_point_is_a_fixed_point(spec, sw, sb):
    try:
        fp = fixed_point(spec, sw, sb)
    except NoFixedPoint:
        assume(False)
    assume(fp.q_star > 0)
    q = fp.q_star
    assert float(maps.length_map(spec, q, sw, sb)) == pytest.approx(q, rel=1e-11)
    c = float(maps.correlation_map(spec, fp.c_star, q, sw, sb))
    assert c == pytest.approx(fp.c_star, abs=1e-9)
    # stability: |slope| < 1 at q*, chi_c <= 1 at c* (up to the critical tolerance)
    assert abs(float(maps.length_map_slope(spec, q, sw))) < 1 + 1e-9
    assert fp.chi_c <= 1 + 1e-9
    assert fp.chi_1 == pytest.approx(float(maps.chi_1(spec, q, sw)), rel=1e-14)


@settings(max_examples=25, deadline=None)
@given(spec=st.sampled_from(["tanh", "erf", "sigmoid", "softplus", "gelu", "sin", "elu"]),
       sw=st.floats(0.2, 4.0), sb=st.floats(0.01, 1.5))
def test_xi_q_is_the_length_map_slope(spec, sw, sb):
    """xi_q = -1/log|L'(q*)| (MATH.md 1.4) against a central difference of the length map L."""
    res = solve_q_star(spec, sw, sb)
    assume(int(res.status) == 0)
    q = float(res.q_star)
    fp = fixed_point(spec, sw, sb)
    h = 1e-5 * q
    slope = float((maps.length_map(spec, q + h, sw, sb) - maps.length_map(spec, q - h, sw, sb)) / (2 * h))
    assume(0 < abs(slope) < 1 - 1e-6)
    assert -1 / math.log(abs(slope)) == pytest.approx(fp.xi_q, rel=1e-6)


@settings(max_examples=15, deadline=None)
@given(sb=st.floats(0.0, 2.0))
def test_edge_of_chaos_is_critical(sb):
    e = edge_of_chaos("tanh", sb)
    assert float(maps.chi_1("tanh", e.q_star, e.sigma_w2)) == pytest.approx(1.0, rel=1e-12)
    assert float(maps.length_map("tanh", e.q_star, e.sigma_w2, sb)) == pytest.approx(e.q_star, rel=1e-12, abs=1e-300)


# the edge-of-chaos curve is continuous as sigma_b2 -> 0+: (1, 0) for tanh, pi/4 for erf, ...
EOC_AT_0 = {
    "tanh": 1.0, "erf": math.pi / 4, "elu": 1.0, "sin": 1.0,
    # selu: chi_1(q -> 0) = sigma_w2 (lambda^2 + (lambda alpha)^2) / 2
    "selu": 2 / (1.0507009873554805 ** 2 * (1 + 1.6732632423543772 ** 2)),
}


@pytest.mark.parametrize("spec", ["tanh", "erf", "sin", "elu", "selu"])
def test_edge_of_chaos_continuous_at_sigma_b2_0(spec):
    at0 = edge_of_chaos(spec, 0.0)
    # sigma_b2 grows like q*^2 .. q*^3 along the line, sigma_w2 - sigma_w2(0) like q*^(1/2) .. q*:
    # at sigma_b2 = 1e-12 the line is within ~1e-3 of its end (elu is the slowest)
    near = edge_of_chaos(spec, 1e-12)
    assert at0.sigma_w2 == pytest.approx(EOC_AT_0[spec], rel=1e-9)
    assert near.sigma_w2 == pytest.approx(at0.sigma_w2, rel=1e-2)


@pytest.mark.parametrize("spec", ["gelu", "silu"])
def test_edge_of_chaos_point_is_reachable(spec):
    """gelu and silu have phi'(0) = 1/2 and sigma_w2 V(q) = q + O(q^2) > q at sigma_w2 = 4: q* = 0
    is critical but repels every q0 > 0, so it is no edge of chaos (before 48a8b98 it was reported
    as one).  Where the line does exist (it starts near sigma_b2 = 0.17 for gelu, 0.53 for silu),
    its q* attracts nearby lengths."""
    with pytest.raises(NoFixedPoint, match="no edge of chaos"):
        edge_of_chaos(spec, 0.0)
    e = edge_of_chaos(spec, 1.0)
    for q0 in (0.9 * e.q_star, 1.1 * e.q_star):
        fp = fixed_point(spec, e.sigma_w2, 1.0, q0=q0)
        assert fp.q_star == pytest.approx(e.q_star, rel=1e-9)
        assert fp.chi_1 == pytest.approx(1.0, abs=1e-9)


def test_fixed_point_just_above_the_edge_of_chaos():
    """tanh at PSG 2017's rounded (1.05, 2.0105e-5): chi_1 - 1 ~ 1e-8, c* so close to 1 that
    C(c) - c is below the quadrature noise (before 48a8b98: scipy's raw ValueError)."""
    fp = fixed_point("tanh", 1.05, 2.0105e-5)
    assert fp.chi_1 > 1 and 0.9 < fp.c_star <= 1.0 and fp.chi_c <= 1 + 1e-9


def test_edge_of_chaos_point_is_reachable_tanh():
    e = edge_of_chaos("tanh", 0.3)
    for q0 in (1e-3, 1.0, 30.0):
        assert fixed_point("tanh", e.sigma_w2, 0.3, q0=q0).q_star == pytest.approx(e.q_star, rel=1e-12)


# ------------------------------------------------------------------------------------------
# Existence and errors
# ------------------------------------------------------------------------------------------

def test_relu_above_2_diverges():
    with pytest.raises(NoFixedPoint, match="diverge") as err:
        fixed_point("relu", 2.5, 0.1)
    assert "2.5" in str(err.value) and "\n" not in str(err.value)


def test_relu_at_2_with_bias_grows_linearly():
    with pytest.raises(NoFixedPoint, match="linear"):
        fixed_point("relu", 2.0, 0.1)


def test_zero_fixed_point_is_reported():
    fp = fixed_point("tanh", 0.7, 0.0)
    assert fp.q_star == 0.0 and "q* = 0" in fp.status
    assert fp.chi_1 == pytest.approx(0.7, rel=1e-12)  # E[tanh'(0)^2] = 1
    assert fp.phase == "ordered" and fp.c_star == 1.0
    assert any("q* = 0" in n for n in fp.notes)
    # tanh at (1, 0): still q* = 0, critical
    assert fixed_point("tanh", 1.0, 0.0).phase == "critical"


def _is_fixed(spec, q, sw, sb):
    return float(maps.length_map(spec, q, sw, sb)) == pytest.approx(q, rel=1e-10)


@pytest.mark.parametrize("spec,sw,sb", [("alpha_relu:1.5", 1.0, 0.01), ("alpha_relu:1.5", 0.8, 0.001),
                                        ("silu", 2.5, 0.1), ("swish", 2.2, 0.05)])
def test_several_fixed_points_stable_and_unstable(spec, sw, sb):
    fp = fixed_point(spec, sw, sb)
    assert fp.q_unstable is not None and fp.q_star < fp.q_unstable
    assert _is_fixed(spec, fp.q_star, sw, sb) and _is_fixed(spec, fp.q_unstable, sw, sb)
    assert abs(float(maps.length_map_slope(spec, fp.q_star, sw))) < 1
    assert float(maps.length_map_slope(spec, fp.q_unstable, sw)) > 1
    assert any("unstable" in n for n in fp.notes)
    # the basin: from below q_unstable the same q*, from above it q diverges
    again = fixed_point(spec, sw, sb, q0=0.9 * fp.q_unstable)
    assert again.q_star == pytest.approx(fp.q_star, rel=1e-12)
    with pytest.raises(NoFixedPoint, match="diverge"):
        fixed_point(spec, sw, sb, q0=1.1 * fp.q_unstable)


@pytest.mark.parametrize("spec,sb,match", [("relu", 0.1, "no edge of chaos"),
                                           ("leaky_relu:0.2", 0.5, "no edge of chaos"),
                                           ("softplus", 0.0, "no edge of chaos"),
                                           ("softplus", 0.5, "no edge of chaos"),
                                           ("step", 0.0, "no edge of chaos")])
def test_no_edge_of_chaos_says_why(spec, sb, match):
    with pytest.raises(NoFixedPoint, match=match) as err:
        edge_of_chaos(spec, sb)
    assert "\n" not in str(err.value)


def test_bad_variances_are_domain_errors():
    for args in [(-1.0, 0.1), (1.0, -0.1), (float("nan"), 0.1), (1.0, float("inf"))]:
        with pytest.raises(DomainError):
            fixed_point("tanh", *args)
    with pytest.raises(DomainError):
        edge_of_chaos("tanh", -0.5)
    with pytest.raises(DomainError):
        solve_q_star("tanh", np.array([1.0, -2.0]), 0.1)


# ------------------------------------------------------------------------------------------
# Vectorised solvers
# ------------------------------------------------------------------------------------------

def test_solve_q_star_per_point_status_and_scalar_agreement():
    sw = np.array([[1.0, 2.0, 2.0], [2.5, 1.5, 0.5]])
    sb = np.array([[0.1, 0.0, 0.1], [0.1, 0.0, 0.0]])
    res = solve_q_star("relu", sw, sb)
    assert res.status.shape == sw.shape
    names = [[res.message((i, j)) for j in range(3)] for i in range(2)]
    assert "ok" in names[0][0] and "marginal" in names[0][1] and "linearly" in names[0][2]
    assert "diverges" in names[1][0] and "q* = 0" in names[1][1]
    assert res.q_star[0, 0] == pytest.approx(0.2, rel=1e-15)
    assert np.isnan(res.q_star[1, 0])

    sw = np.linspace(0.3, 4.0, 9)[:, None] * np.ones((1, 4))
    sb = np.array([0.0, 0.05, 0.3, 1.0])[None, :] * np.ones((9, 1))
    grid = solve_q_star("tanh", sw, sb)
    for idx in np.ndindex(sw.shape):
        one = solve_q_star("tanh", float(sw[idx]), float(sb[idx]))
        assert int(one.status) == int(grid.status[idx])
        assert float(one.q_star) == pytest.approx(float(grid.q_star[idx]), rel=1e-12, abs=1e-300)


def test_solve_q_star_multi_fixed_points_vectorised():
    res = solve_q_star("alpha_relu:1.5", np.array([1.0, 0.8, 5.0]), 0.01)
    assert list(res.status) == [0, 0, 2]
    assert np.all(np.isfinite(res.q_unstable[:2])) and np.isnan(res.q_unstable[2])
    for i in range(2):
        fp = fixed_point("alpha_relu:1.5", [1.0, 0.8][i], 0.01)
        assert fp.q_unstable == pytest.approx(float(res.q_unstable[i]), rel=1e-12)


def test_edge_of_chaos_curve_per_point_status():
    sb = np.array([0.0, 0.05, 1.0])
    curve = edge_of_chaos_curve("relu", sb)
    assert list(curve.status) == [4, 6, 6]  # marginal, no edge of chaos, no edge of chaos
    assert curve.sigma_w2[0] == 2.0 and np.isnan(curve.sigma_w2[1:]).all()
    assert STATUS_MESSAGES[6].startswith("no edge of chaos")
    soft = edge_of_chaos_curve("softplus", sb)
    assert np.all(soft.status == 6) and np.isnan(soft.sigma_w2).all()
    d = curve.to_dict()
    assert d["sigma_w2"][1] is None


def test_solve_grid_matches_fixed_point():
    sw = np.array([1.0, 2.0, 3.0, 2.5])
    sb = np.array([0.05, 0.05, 0.05, 1.0])
    grid = solve_grid("tanh", sw, sb, with_c_star=True)
    for i in range(4):
        fp = fixed_point("tanh", sw[i], sb[i])
        assert grid.q_star[i] == pytest.approx(fp.q_star, rel=1e-12)
        assert grid.chi_1[i] == pytest.approx(fp.chi_1, rel=1e-12)
        # the grid's chaotic c* uses a cheaper product rule (documented ~1e-6): a picture's accuracy
        assert grid.c_star[i] == pytest.approx(fp.c_star, abs=1e-5)


def test_fixed_point_to_dict_is_json_safe():
    d = fixed_point("tanh", 1.0, 0.0).to_dict()
    json.dumps(d, allow_nan=False)
    assert {"q_star", "c_star", "chi_1", "chi_c", "xi_q", "xi_c", "phase"} <= set(d)


def test_edge_of_chaos_tiny_bias_follows_the_series():
    """Below sigma_b2 ~ 1e-9 the critical line h(q) = q - V/V' is lost to cancellation; tanh's
    series (V = q - 2q^2 + ..., V' = 1 - 2q + 7q^2 - ..., so h = 4/3 q^3 (1 - 6q + ...)) gives
    q* = (3 sigma_b2 / 4)^(1/3) (1 + 2 q* + O(q*^2)) and sigma_w2 = 1/V'(q*) = 1/(1 - 2q* + 7q*^2) + O(q*^3).
    A 'status ok' with sigma_w2 = nan at sigma_b2 = 7.4e-26 was the bug."""
    for sb in np.logspace(-300, -12, 97).tolist() + [7.443637610218141e-26, 1.6495160304470011e-149]:
        e = edge_of_chaos("tanh", sb)
        q0 = (0.75 * sb) ** (1 / 3)
        assert e.status == "ok"
        assert e.q_star == pytest.approx(q0 * (1 + 2 * q0), rel=2e-6)
        q = e.q_star
        assert e.sigma_w2 == pytest.approx(1 / (1 - 2 * q + 7 * q * q), rel=0, abs=1e-15 + 100 * q ** 3)
        assert float(maps.chi_1("tanh", e.q_star, e.sigma_w2)) == pytest.approx(1.0, rel=1e-12)


def test_edge_of_chaos_does_not_depend_on_built_tables():
    """The critical line reads the moments without the spline table, so a table built by an
    earlier large call (a phase diagram) cannot move the root."""
    from meanfield import gaussian
    from meanfield.activations import get_activation

    before = [edge_of_chaos("tanh", sb) for sb in (1e-25, 1e-3, 0.3)]
    act = get_activation("tanh")
    q = np.logspace(-5, 5, 4096)
    gaussian.v_phi(act, q), gaussian.v_dphi(act, q), gaussian.dv_phi(act, q)
    after = [edge_of_chaos("tanh", sb) for sb in (1e-25, 1e-3, 0.3)]
    assert before == after


def test_find_root_scalar_is_brentq_without_scipy_optimize():
    """The scalar wrapper of _find_root (issue 10: residual's solves without scipy.optimize):
    cbrt(2) to within an ulp, an endpoint root, and a DomainError where f does not change sign."""
    from meanfield._roots import _find_root_scalar

    calls = []

    def f(x):
        calls.append(x)
        return x ** 3 - 2.0
    r = _find_root_scalar(f, 0.0, 2.0, xtol=1e-300, rtol=1e-16)
    assert abs(r - 2.0 ** (1 / 3)) <= 2.3e-16 * r
    assert calls.count(0.0) == calls.count(2.0) == 1  # the brackets' values are not recomputed
    assert _find_root_scalar(lambda x: x - 1.0, 1.0, 3.0) == 1.0
    with pytest.raises(DomainError, match="do not bracket"):
        _find_root_scalar(f, 2.0, 3.0)
