"""The phase diagram's chaotic c* (fixed_points._chaotic_c_star, issue 10) against the accurate
path (fixed_points.c_star: brentq on expect2's W, no shared code with the Hermite series or the
closed-form inner expectation) on sampled chaotic points, and gaussian.hermite_coefficients
against closed forms.  Accuracy only: no timing asserts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meanfield import gaussian
from meanfield.activations import get_activation
from meanfield.fixed_points import _chaotic_c_star, c_star, solve_grid


def _critical_distance_points(name, qs, excess):
    """(q, sigma_w2, sigma_b2) with q* = q and chi_1 = 1 + excess, from MATH.md 1.2/1.3:
    sigma_w2 = chi_1 / V'(q), sigma_b2 = q - sigma_w2 V(q) (kept where sigma_b2 >= 0)."""
    act = get_activation(name)
    q = np.asarray(qs, float)
    sw = (1.0 + np.asarray(excess, float)) / gaussian.v_dphi(act, q, "direct")
    sb = q - sw * gaussian.v_phi(act, q, "direct")
    keep = sb >= 0
    return act, q[keep], sw[keep], sb[keep]


def _grid_points(name, n=4):
    """n chaotic points of the default phase-diagram window, spread over chi_1."""
    act = get_activation(name)
    sw, sb = np.meshgrid(np.linspace(0.1, 5.0, 48), np.linspace(0.0, 2.0, 48))
    g = solve_grid(act, sw, sb)
    ch = np.flatnonzero((np.isfinite(g.chi_1) & (g.chi_1 > 1 + 1e-6)).ravel())
    ch = ch[np.argsort(g.chi_1.ravel()[ch])]
    pick = ch[np.linspace(0, ch.size - 1, n).astype(int)]
    return act, g.q_star.ravel()[pick], sw.ravel()[pick], sb.ravel()[pick]


@pytest.mark.parametrize("name, rel", [
    # smooth, no closed form: the Hermite series (1e-12 relative, issue 10)
    ("tanh", 1e-12), ("silu", 1e-12),
    # kinked (selu: phi' jumps at 0): expect2's outer rule with the closed-form inner (1e-10)
    ("selu", 1e-10), ("elu", 1e-10),
    # closed forms
    ("gelu", 1e-12), ("erf", 1e-12),
    # kinks not at 0, no closed forms: expect2 itself
    ("hard_tanh", 1e-12),
])
def test_chaotic_c_star_matches_the_accurate_path(name, rel):
    act, q, sw, sb = _grid_points(name)
    cs, chic = _chaotic_c_star(act, q, sw, sb)
    for i in range(q.size):
        want = c_star(act, float(q[i]), float(sw[i]), float(sb[i]))
        want_chic = float(sw[i] * gaussian.w_dphi(act, q[i], q[i], want))
        # Near chi_1 = 1 the root is ill-conditioned: a relative error e of W (both paths' W agree
        # to ~1e-13) moves c* by e (sigma_w2 V / q) / (1 - chi_c); that is added to the target.
        cond = 2e-13 * (sw[i] * gaussian.v_phi(act, q[i], "direct") / q[i]) / abs(1.0 - want_chic)
        assert cs[i] == pytest.approx(want, rel=rel, abs=cond + 1e-14), (name, q[i], sw[i], sb[i])
        assert chic[i] == pytest.approx(want_chic, rel=10 * rel, abs=10 * cond), (name, q[i])


@pytest.mark.parametrize("name, qs, excess", [
    ("tanh", [0.86, 2.28, 4.2, 4.9], [0.11, 0.295, 0.11, 0.09]),
    ("selu", [3.4, 17.7, 62.0, 800.0], [0.108, 0.0837, 0.066, 0.03]),
])
def test_chaotic_c_star_at_chosen_lengths(name, qs, excess):
    act, q, sw, sb = _critical_distance_points(name, qs, excess)
    assert q.size == len(qs)
    cs, _ = _chaotic_c_star(act, q, sw, sb)
    rel = 1e-12 if name == "tanh" else 1e-10
    for i in range(q.size):
        assert cs[i] == pytest.approx(c_star(act, float(q[i]), float(sw[i]), float(sb[i])), rel=rel)


def test_chaotic_c_star_near_the_edge_of_chaos_is_as_accurate_as_conditioning():
    """At chi_1 - 1 = 7.5e-4 the root's condition number 1 / (1 - chi_c) is ~1e3: both paths
    lose that many digits, and agree to it."""
    act, q, sw, sb = _critical_distance_points("tanh", [2.266], [7.53e-4])
    cs, chic = _chaotic_c_star(act, q, sw, sb)
    want = c_star(act, float(q[0]), float(sw[0]), float(sb[0]))
    cond = 1.0 / abs(1.0 - chic[0])
    assert cs[0] == pytest.approx(want, rel=1e-13 * cond)


def test_odd_activation_without_bias_has_c_star_0():
    """MATH.md 1.3: odd phi with sigma_b2 = 0 in the chaotic phase has c* = 0 exactly."""
    act = get_activation("tanh")
    q = np.array([0.5, 2.0])
    sw = q / gaussian.v_phi(act, q, "direct")
    cs, _ = _chaotic_c_star(act, q, sw, np.zeros(2))
    assert np.all(np.abs(cs) <= 1e-15)


def test_hermite_coefficients_of_a_polynomial_and_of_erf():
    """phi(u) = u^3 at q: sqrt(q) z^3 ... u^3 = q^(3/2) (He_3 + 3 He_1), so a_1 = 3 q^(3/2),
    a_3 = sqrt(6) q^(3/2); and Parseval for erf, sum a_k^2 = V_erf(q) = (2/pi) arcsin(2q/(1+2q))
    (MATH.md 1.6)."""
    q = np.array([0.25, 2.0])
    a = gaussian.hermite_coefficients(lambda u: u ** 3, q, 6)
    want = np.zeros((2, 6))
    want[:, 1] = 3 * q ** 1.5
    want[:, 3] = math.sqrt(6) * q ** 1.5
    assert np.allclose(a, want, rtol=0, atol=1e-13)
    act = get_activation("erf")
    a = gaussian.hermite_coefficients(act.fn, q, 256)
    v = 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q))
    assert np.allclose((a ** 2).sum(axis=1), v, rtol=1e-13, atol=0)
    # W(q, q, c) = sum a_k^2 c^k against the arcsine closed form at c = 0.6
    w = (a ** 2 * 0.6 ** np.arange(256)).sum(axis=1)
    assert np.allclose(w, gaussian.w_phi(act, q, q, 0.6), rtol=1e-13, atol=0)


@pytest.mark.parametrize("name, rel", [("tanh", 1e-11), ("erf", 1e-11), ("gelu", 1e-11), ("selu", 1e-8)])
def test_critical_line_matches_edge_of_chaos(name, rel):
    """The phase diagram's parametric line (no root finding) against edge_of_chaos (a root find
    of h(q) = q - V/V' = sigma_b2) at the line's own sigma_b2 values."""
    from meanfield.fixed_points import critical_line, edge_of_chaos

    sb, sw = critical_line(name)
    ok = np.flatnonzero(np.isfinite(sw) & (sb <= 2.0) & (sb >= 1e-6))
    assert ok.size >= 20
    for i in ok[:: max(1, ok.size // 8)]:
        assert sw[i] == pytest.approx(edge_of_chaos(name, float(sb[i])).sigma_w2, rel=rel)
