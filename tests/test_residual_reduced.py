"""The reduced residual net x^l = x^{l-1} + phi(W x^{l-1} + b) with E[phi] != 0 (issue 11 §4).

The recursion (docs/residual.md, "The reduced network with a non-zero-mean activation"):
m^l = m^{l-1} + M(q^l), p^l = p^{l-1} + 2 m^{l-1} M(q^l) + V_phi(q^l), the squared distance and
chi unchanged.  Where the expected numbers come from:

* wide random networks (meanfield.simulate, real backpropagation through the sampled weights):
  p, the pair cosine and m within 5 standard errors at every layer; chi from two widths, N and
  4N, extrapolated to N = infinity (its finite-width excess is ~1/N but large: +63% at N = 1024,
  L = 16 for relu, +14% at 4096, measured while writing this file);
* mpmath quadrature at 30 digits for one step of the mean recursion;
* the old recursion for zero-mean phi (bit for bit);
* the laws derived in docs/residual.md, compared with fits from the recursion as in
  tests/test_residual.py (|difference| <= 3 uncertainty + 1e-4).
"""

from __future__ import annotations

import json
import math
import re

import mpmath as mp
import numpy as np
import pytest
from typer.testing import CliRunner

from meanfield.cli import app
from meanfield.errors import DomainError
from meanfield.residual import (
    _kernel,
    _Model,
    _params,
    _Runner,
    _relu_reduced,
    advise_residual,
    exponents,
    iterate_residual,
)

# ------------------------------------------------------------------------------------------
# (a) against wide random networks
# ------------------------------------------------------------------------------------------

#: (activation, sigma_w2, sigma_b2, m0): a mean in the input for two of them
MC_CASES = [("relu", 1.0, 0.1, 0.0), ("gelu", 0.8, 0.05, 0.4), ("alpha_relu:0.75", 1.0, 0.0, -0.3)]


@pytest.mark.slow
@pytest.mark.parametrize("act, sw, sb, m0", MC_CASES)
def test_against_wide_random_networks(act, sw, sb, m0):
    from meanfield.simulate import simulate_resnet

    L, n = 16, 64
    kw = dict(arch="reduced", p0=1.0, c0=0.5, m0=m0, n_nets=n)
    S = simulate_resnet(act, sw, sb, L, width=1024, seed=3, **kw)
    T = iterate_residual("resnet-reduced", act, sw, sb, L, p0=1.0, c0=0.5, m0=m0)
    for l in range(1, L + 1):
        assert abs(S.p[l] - T.p[l]) <= 5 * S.p_se[l], ("p", l, S.p[l], T.p[l], S.p_se[l])
        assert abs(S.m[l] - T.m[l]) <= 5 * S.m_se[l], ("m", l, S.m[l], T.m[l], S.m_se[l])
        assert abs(S.e[l] - T.e[l]) <= 5 * S.e_se[l], ("e", l, S.e[l], T.e[l], S.e_se[l])
    # the test can fail: the recursion without the mean (full net with unit branch) is far off
    naive = iterate_residual("resnet-full", act, sw, sb, L, p0=1.0, c0=0.5)
    assert abs(S.p[L] - naive.p[L]) > 20 * S.p_se[L]
    # s and chi: Richardson extrapolation in 1/N from N = 1024 and 4N.  Their finite-width
    # excess grows with depth (relu, l = 16: s +55% and chi +63% at N = 1024, +17% and +14% at
    # 4096, i.e. ~1/N), far beyond the standard errors; p, m and e (s << p) do not show it
    S4 = simulate_resnet(act, sw, sb, L, width=4096, seed=4, **kw)
    for key in ("s", "chi"):
        a, a_se = getattr(S, key), getattr(S, key + "_se")
        b, b_se = getattr(S4, key), getattr(S4, key + "_se")
        th = getattr(T, key)
        # chi^L = 1 in every network; chi^0 / chi^L is the explosion itself
        for l in range(L) if key == "chi" else range(1, L + 1):
            ext = (4 * b[l] - a[l]) / 3
            se = math.hypot(4 * b_se[l], a_se[l]) / 3
            assert abs(ext - th[l]) <= 5 * se, (key, l, ext, th[l], se)


@pytest.mark.parametrize("act", ["relu", "gelu", "softplus"])
def test_against_the_network_algebra(act):
    """meanfield.network's residual fold carries the channel means itself (another code path:
    its cross term mu_s mu_b' + mu_b mu_s'); its reduced preset on two inputs with x.x/d = 1,
    x.x'/d = 0.5 (after the input layer: p^0 = 1, c^0 = 0.5, m^0 = 0).  Not alpha_relu:0.75:
    the algebra's mean is gaussian.expect1 of max(0, u)^0.75, 9e-7 off at q = 1.7 (mpmath), while
    residual uses the closed form (test_one_step_against_mpmath)."""
    from meanfield import network as nw
    from meanfield.simulate import inputs_on_sphere

    L, sw, sb = 12, 0.9, 0.1
    X = inputs_on_sphere(2, 16, correlation=0.5, seed=0)
    P = nw.preset("resnet-reduced", act, L, sigma_w2=sw, sigma_b2=sb, sigma_in2=1.0).propagate(X)
    T = iterate_residual("resnet-reduced", act, sw, sb, L, p0=1.0, c0=0.5)
    blocks = [i for i, name in enumerate(P.layers) if name == "residual"]
    q = np.asarray(P.q)[[0] + blocks, 0]
    e = np.asarray(P.correlation)[[0] + blocks, 0, 1]
    assert np.max(np.abs(q / T.p - 1)) < 1e-10
    assert np.max(np.abs(e - T.e)) < 1e-10


def test_simulated_inputs_have_the_mean():
    from meanfield.simulate import simulate_resnet

    S = simulate_resnet("relu", 1.0, 0.0, 0, arch="reduced", width=4096, p0=2.0, c0=0.6, m0=-0.8,
                        n_nets=32, seed=1)
    assert abs(S.m[0] + 0.8) <= 5 * S.m_se[0] and abs(S.p[0] - 2.0) <= 5 * S.p_se[0]
    assert abs(S.e[0] - 0.6) <= 5 * S.e_se[0]
    for kw, word in ((dict(m0=float("nan")), "m0"), (dict(m0=1.5), "m0^2 <= p0"),
                     (dict(m0=0.9, c0=0.0), "below")):
        args = dict(arch="reduced", width=8, p0=1.0, c0=0.5, n_nets=2)
        args.update(kw)
        with pytest.raises(DomainError, match=re.escape(word)):
            simulate_resnet("relu", 1.0, 0.0, 2, **args)


# ------------------------------------------------------------------------------------------
# (b) zero-mean phi: the old recursion, bit for bit
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["tanh", "erf"])
def test_zero_mean_activation_is_unchanged(act):
    old = iterate_residual("resnet-full", act, 1.3, 0.1, 300, sigma_v2=1.0, sigma_a2=0.0)
    for m0 in (0.0, 0.6):
        new = iterate_residual("resnet-reduced", act, 1.3, 0.1, 300, m0=m0)
        for f in ("p", "e", "one_minus_e", "s", "chi", "grad_w", "grad_b"):
            assert np.array_equal(getattr(new, f), getattr(old, f), equal_nan=True), f
        assert np.all(new.m == m0)  # an odd phi adds no mean


@pytest.mark.parametrize("act", ["tanh", "erf"])
def test_mean_loop_on_a_zero_mean_activation_equals_the_old_loop(act):
    """The mean-carrying loop itself, forced on an odd phi (M(q) ~ 1e-17 from quadrature)."""
    K, prm = _kernel(act), _params("resnet-reduced", 1.3, 0.1, None, None)
    outs = []
    for force in (False, True):
        m = _Model(K, prm)
        m.mean = force
        r = _Runner(m, 50, np.arange(51), cosine=True, grads=True)
        r.run(0.0, 0.5, sequential=True)
        outs.append(r.out)
    a, b = outs
    assert np.max(np.abs(a.u - b.u)) <= 1e-15 * np.max(np.abs(a.u))
    assert np.max(np.abs(a.x - b.x) / a.x) <= 1e-15
    assert np.max(np.abs(a.C - b.C)) <= 1e-15 * np.max(np.abs(a.C))


# ------------------------------------------------------------------------------------------
# (c) one step against mpmath
# ------------------------------------------------------------------------------------------

_MP = {
    "relu": lambda u: u if u > 0 else mp.mpf(0),
    "alpha_relu:0.75": lambda u: mp.power(u, mp.mpf(3) / 4) if u > 0 else mp.mpf(0),
    "gelu": lambda u: u * mp.ncdf(u),
    "softplus": lambda u: mp.log1p(mp.exp(u)),
    "sigmoid": lambda u: 1 / (1 + mp.exp(-u)),
}


@pytest.mark.slow
@pytest.mark.parametrize("act", sorted(_MP))
def test_one_step_against_mpmath(act):
    sw, sb, p0, m0 = 0.9, 0.2, 1.5, 0.7
    q = sw * p0 + sb
    f = _MP[act]
    with mp.workdps(30):
        s = mp.sqrt(q)
        M = mp.quad(lambda z: f(s * z) * mp.npdf(z), [-mp.inf, 0, mp.inf])
        V = mp.quad(lambda z: f(s * z) ** 2 * mp.npdf(z), [-mp.inf, 0, mp.inf])
        m1, p1 = m0 + M, p0 + 2 * m0 * M + V
    T = iterate_residual("resnet-reduced", act, sw, sb, 1, p0=p0, m0=m0, c0=0.5)
    assert abs(T.m[1] / float(m1) - 1) < 1e-12, (T.m[1], m1)
    assert abs(T.p[1] / float(p1) - 1) < 1e-12, (T.p[1], p1)
    # two layers: the mean's cross term uses m^1, not m^0
    T2 = iterate_residual("resnet-reduced", act, sw, sb, 2, p0=p0, m0=m0, c0=0.5)
    q2 = sw * float(p1) + sb
    with mp.workdps(30):
        s = mp.sqrt(q2)
        M2 = mp.quad(lambda z: f(s * z) * mp.npdf(z), [-mp.inf, 0, mp.inf])
        V2 = mp.quad(lambda z: f(s * z) ** 2 * mp.npdf(z), [-mp.inf, 0, mp.inf])
        p2 = p1 + 2 * m1 * M2 + V2
    assert abs(T2.p[2] / float(p2) - 1) < 1e-12, (T2.p[2], p2)


# ------------------------------------------------------------------------------------------
# Laws (docs/residual.md, derived) against the recursion
# ------------------------------------------------------------------------------------------

def _agrees(d):
    return abs(d["difference"]) <= 3 * d["uncertainty"] + 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("sw, sb", [(1.0, 0.0), (0.05, 0.3)])
def test_relu_reduced_rates(sw, sb):
    r, rate, xrate = _relu_reduced(sw)
    T = iterate_residual("resnet-reduced", "relu", sw, sb, 1500)
    # r* is the limit of m / sqrt(p) (checked at a layer where both are in float range)
    assert abs(T.m[600] / math.sqrt(T.p[600]) - r) < 1e-9
    assert abs((T.log_p[-1] - T.log_p[1000]) / 500 - rate) < 1e-9
    E = exponents("relu", "resnet-reduced", sigma_w2=sw, sigma_b2=sb)
    for k, c in (("p", rate), ("chi", math.log1p(sw / 2)), ("s", math.log1p(sw / 2)), ("e", -xrate)):
        d = getattr(E, k)
        assert d["law"] == "exponential" and _agrees(d), (k, d)
        assert abs(d["fitted_constant"] / c - 1) < 1e-6, (k, d["fitted_constant"], c)
    assert E.e["fixed_point"] == 1.0


@pytest.mark.slow
def test_alpha_relu_reduced_laws():
    E = exponents("alpha_relu:0.75", "resnet-reduced", sigma_w2=1.0)
    assert E.p["exponent"] == 8.0 and _agrees(E.p), E.p
    assert E.e["exponent"] == -8.0 and _agrees(E.e), E.e
    assert abs(E.p["constant_difference"]) < 0.03  # corrections O(log l / l) at l = 4096
    for k in ("s", "chi"):
        d = getattr(E, k)
        assert d["law"] == "bounded" and _agrees(d), (k, d)


def test_alpha_relu_above_one_reduced_is_double_exponential():
    """Once the branch dwarfs the stream the mean no longer matters: base alpha, and the cosine
    goes to the vanilla fixed point at the rate Jbar'(e*) (the loop follows p^l / p^(l-1) in
    logs, so log p reaches the float range, as in the full net, instead of overflowing at 33)."""
    E = exponents("alpha_relu:1.5", "resnet-reduced", sigma_w2=0.2)
    for k in ("p", "s", "chi"):
        d = getattr(E, k)
        assert d["law"] == "double-exponential" and abs(d["fitted_exponent"] - 1.5) < 1e-6, (k, d)
    assert abs(E.e["fitted_constant"] / E.e["constant"] - 1) < 1e-4, E.e
    assert any("after layer 1717" in n for n in E.notes), E.notes


def test_alpha_relu_half_has_infinite_gradients_but_a_length_law():
    E = exponents("alpha_relu:0.4", "resnet-reduced", sigma_w2=1.0, fit_depth=1024)
    assert E.chi["law"] == "infinite"
    assert abs(E.p["exponent"] - 2 / 0.6) < 1e-12 and _agrees(E.p), E.p


# ------------------------------------------------------------------------------------------
# Advice
# ------------------------------------------------------------------------------------------

def test_relu_reduced_advice_caps_the_forward_length():
    a = advise_residual("resnet-reduced", "relu", 50)
    assert a.solved_for == "sigma_w2" and "reduced" in a.rule
    d = a.diagnostics
    assert abs(d["log_p_L"] - 6.0) < 1e-8 and d["log_explosion"] < 6.0
    # the asymptotic value (L -> infinity at fixed G: p^L -> cosh^2(L sqrt(sigma_w2 / 2 pi)))
    # is O(1/L) off: 3.6% at L = 50, 0.5% at L = 400 (measured)
    assert abs(a.asymptotic_value / a.sigma_w2 - 1) < 0.05
    assert math.cosh(50 * math.sqrt(a.asymptotic_value / (2 * math.pi))) ** 2 == pytest.approx(math.e ** 6)
    # the full net's relu rule (sigma_w2 = 2 (e^(G/L) - 1)) would let p grow by e^20 here
    he = {c["name"]: c for c in a.comparisons}
    assert he["he"]["log_p_L"] > he["he"]["log_explosion"] > 6.0


def test_softplus_reduced_budget_out_of_reach_is_one_line():
    from meanfield.errors import ConvergenceError

    # m^L >= L log 2 even at sigma_w2 -> 0, so log p^L >= log(1 + (20 log 2)^2) = 5.26 > 3
    with pytest.raises(ConvergenceError) as e:
        advise_residual("resnet-reduced", "softplus", 20, budget=3.0)
    bound = math.log1p((20 * math.log(2)) ** 2)
    assert f"still {bound:.3g}" in str(e.value) and "\n" not in str(e.value), str(e.value)


# ------------------------------------------------------------------------------------------
# (d) bad m0, and the CLI
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m0, word", [(float("nan"), "nan"), (float("inf"), "inf"), ("x", "'x'"),
                                      (1.5, "m0^2 <= p0"), (True, "True")])
def test_bad_m0(m0, word):
    with pytest.raises(DomainError) as e:
        iterate_residual("resnet-reduced", "relu", 1.0, 0.0, 5, m0=m0)
    assert "m0" in str(e.value) and word in str(e.value)


def test_m0_and_c0_must_be_compatible():
    with pytest.raises(DomainError, match="c0 = -0.9 is below"):
        iterate_residual("resnet-reduced", "relu", 1.0, 0.0, 5, m0=0.5, c0=-0.9)


def _fields(obj) -> set:
    return set(obj.to_dict())


@pytest.mark.parametrize("args, py", [
    (["iterate", "--arch", "resnet-reduced", "--activation", "relu", "--sigma-w2", "1",
      "--depth", "20", "--m0", "0.3"],
     lambda: iterate_residual("resnet-reduced", "relu", 1.0, 0.0, 20, m0=0.3)),
    (["advise", "--arch", "resnet-reduced", "--activation", "relu", "--depth", "50"],
     lambda: advise_residual("resnet-reduced", "relu", 50)),
    (["exponents", "--arch", "resnet-reduced", "--activation", "relu", "--sigma-w2", "0.5"],
     lambda: exponents("relu", "resnet-reduced", sigma_w2=0.5)),
])
def test_cli_json_is_the_python_result(args, py):
    res = CliRunner().invoke(app, args + ["--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    ref = py().to_dict()
    assert set(d) == set(ref)
    if args[0] == "iterate":
        assert d["m"] == pytest.approx(ref["m"], rel=1e-15) and d["m0"] == 0.3
    if args[0] == "advise":
        assert d["sigma_w2"] == ref["sigma_w2"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "2"])
def test_cli_bad_m0_exits_2_with_one_line(value):
    res = CliRunner().invoke(app, ["iterate", "--arch", "resnet-reduced", "--activation", "relu",
                                   "--sigma-w2", "1", "--depth", "3", "--m0", value])
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "m0" in lines[0] and "Traceback" not in res.output, res.stderr


def test_cli_m0_not_a_number_exits_2():
    """Text is refused by click before meanfield sees it: its usage message (three lines: usage,
    hint, the error naming --m0), the format of every option's parse error."""
    res = CliRunner().invoke(app, ["iterate", "--arch", "resnet-reduced", "--activation", "relu",
                                   "--sigma-w2", "1", "--depth", "3", "--m0", "abc"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "'--m0'" in res.stderr.splitlines()[-1]
