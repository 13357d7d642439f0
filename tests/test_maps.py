"""Vanilla mean-field maps (meanfield.maps) against their definitions (MATH.md 1.2-1.4).

Expected values come from closed forms written here (ReLU's arc-cosine map, erf's arcsine
kernel, MATH.md 3.1-3.2) or from the defining identities (slopes are finite differences of the
maps), never from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from meanfield import gaussian, maps
from meanfield.fixed_points import solve_q_star
from meanfield.activations import get_activation
from meanfield.errors import DomainError

SMOOTH = ["tanh", "erf", "gelu", "softplus", "sigmoid", "silu", "sin"]


def relu_cmap(c, q, sw, sb):
    """C-map of ReLU, unit-free: W(q, q, c) = q (sin th + (pi - th) c) / (2 pi)."""
    th = np.arccos(np.clip(c, -1, 1))
    w = q * (np.sin(th) + (np.pi - th) * c) / (2 * np.pi)
    return (sw * w + sb) / (sw * q / 2 + sb)


def erf_cmap(c, q, sw, sb):
    w = 2 / np.pi * np.arcsin(2 * c * q / (1 + 2 * q))
    v = 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q))
    return (sw * w + sb) / (sw * v + sb)


def test_length_map_definition():
    q = np.array([1e-3, 0.4, 3.0])
    assert np.allclose(maps.length_map("relu", q, 1.5, 0.2), 1.5 * q / 2 + 0.2, rtol=1e-15)
    v = 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q))
    assert np.allclose(maps.length_map("erf", q, 1.5, 0.2), 1.5 * v + 0.2, rtol=1e-14)
    assert np.allclose(maps.length_map("linear", q, 0.7, 0.0), 0.7 * q, rtol=1e-15)


def test_correlation_map_closed_forms():
    c = np.array([-1.0, -0.3, 0.0, 0.5, 0.99, 1 - 1e-12, 1.0])
    for q, sw, sb in [(0.5, 1.5, 0.0), (2.0, 2.0, 0.3)]:
        assert np.allclose(maps.correlation_map("relu", c, q, sw, sb), relu_cmap(c, q, sw, sb),
                           rtol=1e-14, atol=1e-15)
        assert np.allclose(maps.correlation_map("erf", c, q, sw, sb), erf_cmap(c, q, sw, sb),
                           rtol=1e-14, atol=1e-15)


def test_covariance_map_matches_correlation_map():
    for spec in ("tanh", "relu", "gelu"):
        q, c, sw, sb = 0.8, 0.37, 1.9, 0.1
        qab = maps.covariance_map(spec, q, q, c * q, sw, sb)
        qaa = maps.length_map(spec, q, sw, sb)
        assert qab / qaa == pytest.approx(float(maps.correlation_map(spec, c, q, sw, sb)), rel=1e-14)
        # unequal lengths: sigma_w2 W(q1, q2, c) + sigma_b2
        q1, q2 = 0.3, 2.2
        want = sw * float(gaussian.w_phi(get_activation(spec), q1, q2, c)) + sb
        assert float(maps.covariance_map(spec, q1, q2, c * math.sqrt(q1 * q2), sw, sb)) == pytest.approx(want, rel=1e-14)


def test_chi_1_and_chi_c_definitions():
    # relu: chi_1 = sigma_w2 / 2 for every q; chi_c = sigma_w2 (pi - theta) / (2 pi)
    assert np.allclose(maps.chi_1("relu", np.array([1e-3, 1.0, 1e3]), 1.7), 0.85, rtol=1e-15)
    c = 0.4
    assert float(maps.chi_c("relu", 2.0, c, 1.7)) == pytest.approx(1.7 * (np.pi - np.arccos(c)) / (2 * np.pi), rel=1e-14)
    # erf: chi_1 = sigma_w2 (4/pi) / sqrt(1 + 4q) (MATH.md 1.6)
    q = np.array([0.0, 0.3, 5.0])
    assert np.allclose(maps.chi_1("erf", q, 1.2), 1.2 * 4 / np.pi / np.sqrt(1 + 4 * q), rtol=1e-14)
    # chi_c at c = 1 is chi_1
    for spec in ("tanh", "gelu", "elu", "hard_tanh"):
        tol = 1e-10 if get_activation(spec).kinks else 1e-12
        assert float(maps.chi_c(spec, 0.7, 1.0, 1.3)) == pytest.approx(float(maps.chi_1(spec, 0.7, 1.3)), rel=tol)


@settings(max_examples=20, deadline=None)
@given(spec=st.sampled_from(SMOOTH), sw=st.floats(0.3, 4.0), sb=st.floats(0.01, 1.0))
def test_chi_1_is_the_slope_of_the_c_map_at_1(spec, sw, sb):
    """chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2] (MATH.md 1.3) is the slope at c = 1 of the C-map
    c -> (sigma_w2 W(q*, q*, c) + sigma_b2) / q*: a second-order one-sided difference."""
    res = solve_q_star(spec, sw, sb)
    assume(int(res.status) == 0)
    q = float(res.q_star)
    # For q* >> 1 gelu and silu approach relu, whose C-map has a sqrt(1 - c) term: the C-map is
    # smooth only on the scale 1 - c ~ 1/q*, so the difference step must be well inside it.
    assume(q <= 1e3)
    h = min(1e-4, 1e-3 / q)
    C = maps.correlation_map(spec, np.array([1.0, 1 - h, 1 - 2 * h]), q, sw, sb)
    slope = (3 * C[0] - 4 * C[1] + C[2]) / (2 * h)
    assert slope == pytest.approx(float(maps.chi_1(spec, q, sw)), rel=1e-5, abs=1e-8)


@settings(max_examples=25, deadline=None)
@given(spec=st.sampled_from(SMOOTH + ["elu", "selu", "hard_tanh", "relu"]), q=st.floats(0.01, 20.0),
       sw=st.floats(0.3, 4.0))
def test_length_map_slope_is_the_derivative(spec, q, sw):
    """length_map_slope = d/dq length map (MATH.md 1.2), by a central difference."""
    h = 1e-5 * q
    fd = (maps.length_map(spec, q + h, sw, 0.1) - maps.length_map(spec, q - h, sw, 0.1)) / (2 * h)
    slope = float(maps.length_map_slope(spec, q, sw))
    assert slope == pytest.approx(float(fd), rel=1e-6, abs=1e-9)
    act = get_activation(spec)
    if act.d2 is not None and not act.kinks:
        # chi_1 + sigma_w2 E[phi'' phi] (Gaussian integration by parts)
        other = float(maps.chi_1(spec, q, sw)) + sw * float(gaussian.e_ddphi_phi(act, q))
        assert slope == pytest.approx(other, rel=1e-10, abs=1e-12)


def test_iterate_is_the_composition_of_the_maps():
    for spec, sw, sb, q0, c0 in [("tanh", 2.5, 0.05, 1.0, 0.5), ("relu", 1.5, 0.1, 3.0, -0.2),
                                 ("gelu", 1.8, 0.2, 0.5, 0.9)]:
        tr = maps.iterate(spec, sw, sb, 12, q0=q0, c0=c0)
        assert len(tr.q) == len(tr.c) == 13 and tr.q[0] == q0 and tr.c[0] == c0
        q, c = q0, c0
        for layer in range(12):
            q, c = float(maps.length_map(spec, q, sw, sb)), float(maps.correlation_map(spec, c, q, sw, sb))
            assert tr.q[layer + 1] == pytest.approx(q, rel=1e-13)
            assert tr.c[layer + 1] == pytest.approx(c, rel=1e-12, abs=1e-14)
        d = tr.to_dict()
        assert set(d) >= {"q", "c", "depth", "sigma_w2", "sigma_b2", "activation"}


def test_iterate_relu_closed_form():
    sw, sb, q, c = 1.7, 0.3, 2.0, 0.1
    tr = maps.iterate("relu", sw, sb, 30, q0=q, c0=c)
    for layer in range(30):
        q, c = sw * q / 2 + sb, relu_cmap(c, q, sw, sb)
        assert tr.q[layer + 1] == pytest.approx(q, rel=1e-13)
        assert tr.c[layer + 1] == pytest.approx(c, rel=1e-13)


def test_relu_critical_power_law():
    """At (2, 0) the ReLU correlation approaches 1 like 1 - c^l ~ 9 pi^2 / (2 l^2) (MATH.md 1.4,
    REFERENCE_VALUES A4); the map's expansion C(c) = c + (2 sqrt 2 / (3 pi)) (1 - c)^(3/2) + ..."""
    e = 1e-8
    C = float(maps.correlation_map("relu", 1 - e, 1.0, 2.0, 0.0))
    assert (C - (1 - e)) / e ** 1.5 == pytest.approx(2 * math.sqrt(2) / (3 * math.pi), rel=1e-3)
    tr = maps.iterate("relu", 2.0, 0.0, 10000, q0=1.0, c0=0.0)
    assert tr.q[-1] == pytest.approx(1.0, rel=1e-12)
    # l^2 (1 - c^l) -> 9 pi^2 / 2 = 44.41 (A4 lists 44.23 at l = 1e4)
    assert 10000 ** 2 * (1 - tr.c[-1]) == pytest.approx(9 * math.pi ** 2 / 2, rel=0.01)


def test_iterate_reaches_the_fixed_points():
    import meanfield

    fp = meanfield.fixed_point("tanh", 2.5, 0.05)
    tr = maps.iterate("tanh", 2.5, 0.05, 400, q0=1.0, c0=0.5)
    assert tr.q[-1] == pytest.approx(fp.q_star, rel=1e-12)
    assert tr.c[-1] == pytest.approx(fp.c_star, rel=1e-9)


@pytest.mark.parametrize("kwargs,match", [
    ({"depth": 0}, "depth"), ({"depth": 2.5}, "depth"), ({"depth": True}, "depth"),
    ({"c0": 1.5}, "c0"), ({"c0": float("nan")}, "c0"), ({"q0": -1.0}, "q0"),
    ({"sigma_w2": -1.0}, "sigma_w2"), ({"sigma_b2": float("inf")}, "sigma_b2"),
])
def test_iterate_rejects_bad_input(kwargs, match):
    args = {"sigma_w2": 1.5, "sigma_b2": 0.1, "depth": 5, "q0": 1.0, "c0": 0.5} | kwargs
    with pytest.raises(DomainError, match=match):
        maps.iterate("tanh", **args)


def test_iterate_diverging_length_is_a_convergence_error():
    from meanfield.errors import ConvergenceError

    with pytest.raises(ConvergenceError, match="diverge"):
        maps.iterate("relu", 4.0, 0.0, 5000, q0=1.0, c0=0.5)


# ------------------------------------------------------------------------------------------
# propagate: the Hermite-series layers against the quadrature ones, and depth in closed form
# ------------------------------------------------------------------------------------------


def _reference_layers(name, sw, sb, q, c, layers):
    """q^L, c^L and log10 prod chi(q^l) by high-order adaptive quadrature (expect1 order 30,
    expect2 order 24: ~1e-16 here, where the default orders leave ~3e-14 per layer)."""
    act = get_activation(name)
    g = 0.0
    for _ in range(layers):
        g += math.log10(sw * float(gaussian.expect1(lambda u: act.d1(u) ** 2, q, (), order=30)))
        w = float(gaussian.expect2(act.fn, act.fn, q, q, c, (), order=24))
        q_next = sw * float(gaussian.expect1(lambda u: act.fn(u) ** 2, q, (), order=30)) + sb
        q, c = q_next, (sw * w + sb) / q_next
    return q, c, g


@pytest.mark.parametrize("name,sw,sb", [("tanh", 1.5, 0.05), ("tanh", 0.8, 0.1), ("sigmoid", 4.0, 0.1),
                                        ("silu", 2.0, 0.05), ("softplus", 1.0, 0.1), ("tanh", 1.0, 0.0)])
def test_propagate_series_layers_match_quadrature(name, sw, sb):
    # the series path (V = sum a_k^2, W = sum a_k^2 c^k at each layer's q) against quadrature
    # layer by layer; at (1, 0) the C-map is critical, so per-layer errors add up undamped
    st = maps.propagate(name, sw, sb, 12, q0=sw + sb, c0=0.5)
    q, c, g = _reference_layers(name, sw, sb, sw + sb, 0.5, 12)
    assert st.q == pytest.approx(q, rel=1e-12)
    assert st.c == pytest.approx(c, rel=1e-12)
    assert st.log10_gradient_ratio == pytest.approx(g, rel=1e-12, abs=1e-13)


def test_propagate_without_series_is_the_quadrature_path(monkeypatch):
    # where no node count resolves phi, layers fall back to expect1 / expect2 (default orders)
    fast = maps.propagate("tanh", 1.5, 0.05, 20, q0=1.55, c0=0.5)
    monkeypatch.setattr(maps, "_SERIES_NODES", ())
    slow = maps.propagate("tanh", 1.5, 0.05, 20, q0=1.55, c0=0.5)
    assert fast.q == pytest.approx(slow.q, rel=1e-12) and fast.c == pytest.approx(slow.c, rel=1e-12)


def _quad_gradient_ratio(name, sw, sb, q0, layers):
    """log10 prod_{l < layers} sigma_w2 V_phi'(q^l) with q^{l+1} = sigma_w2 V_phi(q^l) + sigma_b2,
    every moment by adaptive quadrature (gaussian.expect1), independent of maps."""
    act = get_activation(name)
    q, g = q0, 0.0
    for _ in range(layers):
        g += math.log10(sw * float(gaussian.v_dphi(act, q, "quad")))
        q = sw * float(gaussian.v_phi(act, q, "quad")) + sb
    return q, g


@pytest.mark.parametrize("name,sw,sb", [("tanh", 2.5, 0.05), ("tanh", 0.8, 0.1)])
def test_depth_a_billion_is_the_closed_form(name, sw, sb):
    # Derivation: once q^l = q* to double precision (after n layers), every further layer
    # multiplies the gradient norm by chi_1(q*), so log10 ratio(L) = log10 ratio(n) + (L - n)
    # log10 chi_1; and c^l -> c* geometrically at rate chi_c, so c^L = c* to rounding at
    # L = 1e9 (c* = 1 in the ordered phase).  q*, c*, chi_1 from fixed_point; log10 ratio(n)
    # by quadrature layer by layer; n = 400 is past convergence for both points (chi_q < 0.9).
    import meanfield

    from meanfield.advise import diagnose

    fp = meanfield.fixed_point(name, sw, sb)
    n, L = 400, 10 ** 9
    q_n, g_n = _quad_gradient_ratio(name, sw, sb, sw + sb, n)
    assert q_n == pytest.approx(fp.q_star, rel=1e-13)
    g_L = g_n + (L - n) * math.log10(fp.chi_1)
    c_L = 1.0 if fp.c_star is None else fp.c_star
    st = maps.propagate(name, sw, sb, L, q0=sw + sb, c0=0.5)
    assert st.layers_iterated < maps.EXACT_LAYERS and st.method in ("converged", "geometric")
    assert st.q == pytest.approx(fp.q_star, rel=1e-12)
    assert st.c == pytest.approx(c_L, rel=1e-12)
    assert st.log10_gradient_ratio == pytest.approx(g_L, rel=1e-12)
    d = diagnose(name, sw, sb, L)
    assert d.correlation_out == st.c and d.log10_gradient_ratio == st.log10_gradient_ratio
    assert d.q_star == pytest.approx(fp.q_star, rel=1e-12)
