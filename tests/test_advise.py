"""Advice for vanilla MLPs (meanfield.advise, issue 2 section 4).

The rule (advise.py's docstring, docs/theory.md): the edge of chaos chi_1(q*) = 1; sigma_b2 the
largest value <= sigma_b2_max (0.05) on the critical line whose Jacobian spread
depth * (mu_2 / mu_1^2 - 1), mu_k = E[phi'(sqrt(q*) z)^(2k)], stays <= jacobian_budget (1);
positively homogeneous activations get their single critical point ((2, 0) for relu).

The tanh checks recompute q*, chi_1 and the spread here with scipy.integrate.quad, independently
of meanfield's quadrature.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest
from scipy import integrate, optimize

import meanfield
from meanfield import maps
from meanfield.advise import advise
from meanfield.errors import DomainError

DEFAULT_NAMES = {"pytorch_default", "pytorch_gain", "xavier", "he", "lecun"}


def gauss(f, q):
    """E[f(sqrt(q) z)] by adaptive quadrature in u = sqrt(q) z."""
    s = math.sqrt(q)
    val, _ = integrate.quad(lambda u: f(u) * math.exp(-u * u / (2 * q)) / (s * math.sqrt(2 * math.pi)),
                            -12 * s, 12 * s, points=[0.0], limit=400, epsabs=0, epsrel=1e-13)
    return val


def sech2(u):
    return 1 / math.cosh(u) ** 2 if abs(u) < 350 else 0.0


def tanh_q_star(sw, sb):
    return optimize.brentq(lambda q: sw * gauss(lambda u: math.tanh(u) ** 2, q) + sb - q, 1e-12, 100,
                           xtol=1e-15, rtol=1e-14)


def tanh_spread(q, depth):
    mu1 = gauss(lambda u: sech2(u) ** 2, q)
    mu2 = gauss(lambda u: sech2(u) ** 4, q)
    return depth * (mu2 / mu1 ** 2 - 1)


def tanh_eoc(sb):
    """(sigma_w2, q*) on the tanh critical line at sigma_b2 (MATH.md 1.6, parametric form)."""
    def h(q):
        return q - gauss(lambda u: math.tanh(u) ** 2, q) / gauss(lambda u: sech2(u) ** 2, q) - sb
    q = optimize.brentq(h, 1e-6, 50, xtol=1e-15, rtol=1e-14)
    return 1 / gauss(lambda u: sech2(u) ** 2, q), q


@lru_cache(maxsize=None)
def advice(activation, depth, **kw):
    return advise(arch="mlp", activation=activation, depth=depth, **kw)


@lru_cache(maxsize=None)
def advice_w(activation, depth, width):
    return advise(arch="mlp", activation=activation, depth=depth, width=width)


@pytest.mark.parametrize("depth", [10, 50])
def test_tanh_advice_is_critical_and_follows_the_rule(depth):
    a = advice("tanh", depth)
    assert a.arch == "mlp" and a.activation == "tanh" and a.depth == depth
    q = tanh_q_star(a.sigma_w2, a.sigma_b2)
    assert a.q_star == pytest.approx(q, rel=1e-9)
    chi1 = a.sigma_w2 * gauss(lambda u: sech2(u) ** 2, q)
    assert chi1 == pytest.approx(1.0, abs=1e-9)
    assert a.chi_1 == pytest.approx(1.0, abs=1e-9)
    assert a.xi_c is None and a.trainable_depth is None  # infinite at criticality
    # the rule: spread within budget, and a noticeably larger bias variance would break it
    assert 0 < a.sigma_b2 <= 0.05
    spread = tanh_spread(q, depth)
    assert a.jacobian_nonlinearity_spread == pytest.approx(spread, rel=1e-6)
    assert spread <= 1.0
    if a.sigma_b2 < 0.05 / 1.2:
        _, q_more = tanh_eoc(1.2 * a.sigma_b2)
        assert tanh_spread(q_more, depth) > 1.0
    assert not a.notes


def test_deeper_networks_get_smaller_bias_variance():
    b = [advice("tanh", d).sigma_b2 for d in (5, 50, 150)]
    assert b[0] >= b[1] >= b[2] and b[0] > b[2]


def test_fixed_sigma_b2_gives_the_matching_sigma_w2():
    a = advice("tanh", 20, sigma_b2=0.05)
    assert a.sigma_b2 == 0.05
    sw, q = tanh_eoc(0.05)
    assert a.sigma_w2 == pytest.approx(sw, rel=1e-9) and a.q_star == pytest.approx(q, rel=1e-9)
    assert a.sigma_w2 == pytest.approx(1.760955, rel=1e-6)  # REFERENCE_VALUES A1
    assert a.chi_1 == pytest.approx(1.0, abs=1e-9)
    e = advice("erf", 20, sigma_b2=0.1)
    assert e.sigma_w2 == pytest.approx(meanfield.edge_of_chaos("erf", 0.1).sigma_w2, rel=1e-12)


def test_relu_advice_is_he_at_zero_bias():
    a = advice("relu", 30)
    assert (a.sigma_w2, a.sigma_b2) == (2.0, 0.0)
    assert a.chi_1 == 1.0 and a.bias_std == 0.0
    assert "positively homogeneous" in a.rule
    # with a bias there is no critical point: the best trainable point for the depth, with the
    # reason.  ReLU's C-map slope at c = 1 is sigma_w2 / 2 at any q (MATH.md 1.6), so xi_c >= 30
    # needs sigma_w2 >= 2 exp(-1/30), and q* = sigma_b2 / (1 - sigma_w2 / 2) exists below 2.
    b = advise(arch="mlp", activation="relu", depth=30, sigma_b2=0.1)
    assert "no edge of chaos" in b.rule and "best trainable point" in b.rule
    assert 2 * math.exp(-1 / 30) <= b.sigma_w2 < 2.0 and b.sigma_b2 == 0.1
    assert b.q_star == pytest.approx(0.1 / (1 - b.sigma_w2 / 2), rel=1e-12)
    assert not any("every q is a fixed point" in n for n in b.notes)


def test_comparisons_with_the_usual_defaults():
    a = advice_w("tanh", 50, 512)
    comps = {c["name"]: c for c in a.comparisons}
    assert DEFAULT_NAMES <= set(comps)
    # PyTorch's nn.Linear default: Var W = 1/(3 fan_in) -> sigma_w2 = 1/3, deep in the ordered phase
    pt = comps["pytorch_default"]
    assert pt["sigma_w2"] == pytest.approx(1 / 3) and pt["phase"] == "ordered"
    q = tanh_q_star(pt["sigma_w2"], pt["sigma_b2"])
    chi1 = pt["sigma_w2"] * gauss(lambda u: sech2(u) ** 2, q)
    assert pt["chi_1"] == pytest.approx(chi1, rel=1e-9)
    assert pt["trainable_depth"] == pytest.approx(-6 / math.log(chi1), rel=1e-9)
    assert pt["trainable_depth"] < 10 < 50  # 6 xi_c = 5.5 layers: far below the depth asked for
    assert comps["he"]["sigma_w2"] == 2.0 and comps["he"]["phase"] == "chaotic"
    assert comps["xavier"]["sigma_w2"] == comps["lecun"]["sigma_w2"] == 1.0
    assert comps["pytorch_gain"]["sigma_w2"] == pytest.approx(25 / 9)  # gain 5/3 for tanh
    # the advice keeps correlations and gradients better than the ordered default
    assert abs(a.correlation_out - 0.5) < abs(pt["correlation_out"] - 0.5)
    assert abs(a.log10_gradient_ratio) < abs(pt["log10_gradient_ratio"])


def test_weight_std_and_bias_std():
    a = advice_w("tanh", 50, 512)
    assert a.width == 512
    assert a.weight_std == pytest.approx(math.sqrt(a.sigma_w2 / 512), rel=1e-15)
    assert a.bias_std == pytest.approx(math.sqrt(a.sigma_b2), rel=1e-15)
    assert advice("tanh", 50).weight_std is None


def test_diagnostics_are_what_the_maps_predict():
    a = advice_w("tanh", 50, 512)
    q0 = a.sigma_w2 * 1.0 + a.sigma_b2  # unit-length inputs: q^1 = sigma_w2 + sigma_b2
    tr = maps.iterate("tanh", a.sigma_w2, a.sigma_b2, 50, q0=q0, c0=0.5)
    assert a.correlation_in == 0.5
    assert a.correlation_out == pytest.approx(tr.c[-1], rel=1e-12)
    chis = [float(maps.chi_1("tanh", q, a.sigma_w2)) for q in tr.q[:-1]]
    assert a.log10_gradient_ratio == pytest.approx(sum(math.log10(x) for x in chis), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("spec", ["erf", "elu"])
def test_other_activations_are_critical(spec):
    a = advice(spec, 20)
    assert a.chi_1 == pytest.approx(1.0, abs=1e-9)
    res = meanfield.solve_q_star(spec, a.sigma_w2, a.sigma_b2, q0=a.sigma_w2 + a.sigma_b2)
    assert float(maps.chi_1(spec, float(res.q_star), a.sigma_w2)) == pytest.approx(1.0, abs=1e-9)
    assert a.jacobian_nonlinearity_spread <= 1.0


@pytest.mark.parametrize("spec", ["gelu", "silu"])
def test_advice_is_critical_when_the_line_starts_late(spec):
    """The critical line of gelu / silu starts above sigma_b2_max; the advised point must still be
    critical at the fixed point that unit-length inputs reach (before 48a8b98 chi_1 was 0.965)."""
    a = advice(spec, 20)
    assert a.chi_1 == pytest.approx(1.0, abs=1e-9)


def test_no_edge_of_chaos_and_no_derivative():
    # softplus has no critical point: the best trainable point for the depth, with the reason.
    # Checked with scipy's quad on the definitions (MATH.md 1.2-1.3): q* is the length map's fixed
    # point and chi_1 = sigma_w2 E[sigmoid(sqrt(q*) z)^2] gives xi_c = -1/log chi_1 >= depth.
    a = advise(arch="mlp", activation="softplus", depth=10)
    assert "no edge of chaos" in a.rule and "best trainable point" in a.rule

    def gauss(f, q):
        return integrate.quad(lambda z: f(math.sqrt(q) * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                              -40, 40, limit=400, epsabs=1e-13)[0]

    def sigmoid(u):
        return 1 / (1 + math.exp(-u)) if u > -700 else 0.0

    def softplus(u):
        return max(u, 0.0) + math.log1p(math.exp(-abs(u)))

    q = a.q_star
    assert q == pytest.approx(a.sigma_w2 * gauss(lambda u: softplus(u) ** 2, q) + a.sigma_b2, rel=1e-8)
    chi = a.sigma_w2 * gauss(lambda u: sigmoid(u) ** 2, q)
    assert chi < 1 and -1 / math.log(chi) >= 10 * (1 - 1e-6)
    assert a.chi_1 == pytest.approx(chi, rel=1e-8)
    with pytest.raises(DomainError, match="step"):
        advise(arch="mlp", activation="step", depth=10)


@pytest.mark.parametrize("kwargs,match", [
    ({"depth": 0}, "depth"), ({"depth": -3}, "depth"), ({"arch": "cnn"}, "arch"),
    ({"width": 0}, "width"), ({"sigma_b2": -0.1}, "sigma_b2"), ({"activation": "tahn"}, "tanh"),
    ({"activation": "alpha_relu:-0.6"}, "alpha"), ({"foo": 1}, "foo"),
])
def test_bad_input(kwargs, match):
    args = {"arch": "mlp", "activation": "tanh", "depth": 10} | kwargs
    with pytest.raises(DomainError, match=match):
        advise(**args)


def test_advice_to_dict_is_json():
    import json

    d = advice_w("tanh", 50, 512).to_dict()
    text = json.dumps(d, allow_nan=False)
    assert {"sigma_w2", "sigma_b2", "chi_1", "q_star", "xi_c", "correlation_out",
            "log10_gradient_ratio", "comparisons", "weight_std"} <= set(json.loads(text))


def test_public_meanfield_advise_can_be_called_twice():
    """Before 48a8b98 the lazy import let the submodule meanfield.advise shadow the function."""
    import subprocess
    import sys

    code = ("import meanfield\n"
            "a = meanfield.advise(arch='mlp', activation='relu', depth=5)\n"
            "b = meanfield.advise(arch='mlp', activation='relu', depth=5)\n"
            "assert a.sigma_w2 == b.sigma_w2 == 2.0\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr.strip().splitlines()[-1:]


def test_advise_accepts_the_algebras_arch_names():
    """'resnet' (network.presets' name) and the other aliases mean resnet-full / -reduced."""
    from meanfield.advise import advise

    ref = advise("resnet-full", "tanh", 20)
    for alias in ("resnet", "FRN", " full "):
        assert advise(alias, "tanh", 20) == ref
    with pytest.raises(DomainError, match="aliases: .*resnet"):
        advise("transformer-xl", "tanh", 20)


@pytest.mark.slow
def test_advise_mlp_does_not_import_scipy_optimize():
    """advise's cold start (issue 10): spectra's edge uses fixed_points._find_root, not brentq
    (scipy.optimize, ~0.2-0.9 s to import), and binomials by math.comb, so relu needs no scipy
    at all; tanh still imports scipy.special for its Gauss-Hermite nodes (gaussian._hermite).
    The residual advice and exponents root-find by fixed_points._find_root_scalar, not brentq."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from meanfield.advise import advise\n"
            "from meanfield.residual import exponents\n"
            "advise('mlp', 'relu', 50)\n"
            "advise('resnet-full', 'relu', 20)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy')[:3])\n"
            "advise('mlp', 'tanh', 50)\n"
            "advise('resnet-full', 'gelu', 20)\n"
            "exponents('tanh')\n"
            "print('scipy.optimize' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr.strip().splitlines()[-1:]
    assert run.stdout.split("\n")[:2] == ["[]", "False"], run.stdout


@pytest.mark.parametrize("name", ["tanh", "hard_tanh", "relu"])
def test_ntk_pair_is_kernel_trace_on_the_condition_inputs(name):
    """maps.ntk_pair (advise's NTK condition number, issue 10) against the general recursion
    kernels.kernel_trace on dynamics' input pair (x.x/d = 1, correlation 0.5): tanh takes the
    Hermite series, hard_tanh the 2-D quadrature at one pair per layer, relu its closed forms.
    Both are accurate to ~1e-14 a layer; the condition number follows within that."""
    from meanfield.activations import get_activation
    from meanfield.advise import _ntk_condition
    from meanfield.dynamics import ntk_condition_number
    from meanfield.kernels import kernel_trace
    from meanfield.maps import ntk_pair

    sw, sb, L, rho = 1.3, 0.05, 8, 0.5
    X = np.array([[1.0, 0.0], [rho, math.sqrt(1 - rho * rho)]]) * math.sqrt(2.0)
    _, ntk = kernel_trace("mlp", name, X, depth=L, sigma_w2=sw, sigma_b2=sb)
    a, b = ntk_pair(name, sw, sb, L, sw + sb, sw * rho + sb)
    np.testing.assert_allclose(a, ntk[:, 0, 0], rtol=1e-13)
    np.testing.assert_allclose(b, ntk[:, 0, 1], rtol=1e-12)
    assert _ntk_condition(get_activation(name), L, sw, sb, []) == pytest.approx(
        ntk_condition_number("mlp", name, L, sw, sb), rel=1e-12)
