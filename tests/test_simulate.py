"""Tests of meanfield.simulate: finite random networks against exactly solvable mean-field cases.

Every expected value is computed here from the closed forms of MATH.md (§1.2 ReLU length map,
§3.1 arc-cosine kernel, §2.3 residual recurrences, §4.1/§4.3 kernel recursions), with explicit
numpy activations, so these tests do not depend on the core modules.  Monte Carlo tolerances
are 5 standard errors across independent networks.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, special

import meanfield.simulate as sim
from meanfield.errors import DomainError
from meanfield.simulate import (
    empirical_nngp,
    empirical_ntk,
    inputs_on_sphere,
    simulate_mlp,
    simulate_resnet,
)

RELU = (lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(float))
TANH = (np.tanh, lambda x: 1.0 / np.cosh(x) ** 2)
ERF = (special.erf, lambda x: 2.0 / math.sqrt(math.pi) * np.exp(-x * x))
Z = 5.0  # standard errors


# ------------------------------------------------------------------------------------------
# Closed forms (MATH.md §3.1, §4.1, §4.3) for ReLU
# ------------------------------------------------------------------------------------------

def _theta(q1, q2, q12):
    return np.arccos(np.clip(q12 / np.sqrt(q1 * q2), -1.0, 1.0))


def relu_kernel(q1, q2, q12):
    """E[relu(u) relu(v)] = sqrt(q1 q2)/(2 pi) (sin th + (pi - th) cos th)."""
    th = _theta(q1, q2, q12)
    return np.sqrt(q1 * q2) / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th))


def step_kernel(q1, q2, q12):
    """E[relu'(u) relu'(v)] = (pi - th)/(2 pi)."""
    return (np.pi - _theta(q1, q2, q12)) / (2 * np.pi)


def _pair(K):
    d = np.diag(K)
    return d[:, None], d[None, :], K


def mlp_limit(S0, sw2, sb2, L):
    """(NNGP, NTK, SP kernel / width) of §4.1-4.2 for a ReLU MLP with L hidden layers."""
    S = sw2 * S0 + sb2
    T = S.copy()
    sp = np.zeros_like(S)
    for _ in range(L):
        q1, q2, q12 = _pair(S)
        Sd = sw2 * step_kernel(q1, q2, q12)
        S = sw2 * relu_kernel(q1, q2, q12) + sb2
        T = T * Sd + S
        sp = sp * Sd + (S - sb2) / sw2
    return S, T, sp


def resnet_limit(S0, sw2, sb2, sv2, sa2, L, sin2=1.0, so2=1.0):
    """(NNGP, NTK) of §4.3 for a ReLU full residual MLP."""
    P = sin2 * S0
    Tx = P.copy()
    for _ in range(L):
        Q = sw2 * P + sb2
        Th = sw2 * Tx + sw2 * P + sb2
        Vp, Vd = relu_kernel(*_pair(Q)), step_kernel(*_pair(Q))
        Tx = Tx + sv2 * Vd * Th + sv2 * Vp + sa2
        P = P + sv2 * Vp + sa2
    return so2 * P, so2 * Tx + so2 * P


def within(measured, expected, se, z=Z):
    measured, expected, se = map(np.asarray, (measured, expected, se))
    dev = np.abs(measured - expected)
    ok = dev <= z * se + 1e-12 * np.abs(expected)
    assert np.all(ok), f"max |z| = {np.nanmax(dev / np.where(se > 0, se, np.nan)):.2f}\n" \
                       f"measured {measured}\nexpected {expected}\nse {se}"


# ------------------------------------------------------------------------------------------
# Vanilla networks (§1)
# ------------------------------------------------------------------------------------------

SW2, SB2, DEPTH, Q0, C0 = 1.8, 0.1, 24, 1.0, 0.2


@pytest.fixture(scope="module")
def relu_mlp():
    return simulate_mlp(RELU, SW2, SB2, DEPTH, width=2048, q0=Q0, c0=C0, n_nets=48, seed=7)


def relu_maps(q0, c0, sw2, sb2, depth):
    q, c = [q0], [c0]
    for _ in range(depth):
        qn = sw2 * q[-1] / 2 + sb2
        c.append((sw2 * relu_kernel(q[-1], q[-1], q[-1] * c[-1]) + sb2) / qn)
        q.append(qn)
    return np.array(q), np.array(c)


def test_relu_length_map_is_exact_in_expectation(relu_mlp):
    q, _ = relu_maps(Q0, C0, SW2, SB2, DEPTH)
    assert relu_mlp.q.shape == (DEPTH + 1,)
    within(relu_mlp.q, q, relu_mlp.q_se)


def test_relu_correlation_follows_arc_cosine_map(relu_mlp):
    _, c = relu_maps(Q0, C0, SW2, SB2, DEPTH)
    within(relu_mlp.c, c, relu_mlp.c_se)
    assert relu_mlp.c[-1] > 0.95  # the ordered phase really was explored


def test_relu_gradient_second_moment(relu_mlp):
    expected = (SW2 / 2) ** (DEPTH - np.arange(DEPTH + 1))
    assert relu_mlp.q_tilde[-1] == 1.0 and relu_mlp.q_tilde_se[-1] == 0.0
    within(relu_mlp.q_tilde, expected, relu_mlp.q_tilde_se)


def test_dense_and_conditional_samplers_agree_at_small_width():
    """Same law: compare the two samplers where finite-width effects are large."""
    kw = dict(width=24, q0=0.8, c0=0.4, n_nets=2000)
    a = simulate_mlp(TANH, 1.5, 0.05, 6, method="dense", seed=1, **kw)
    b = simulate_mlp(TANH, 1.5, 0.05, 6, method="conditional", seed=2, **kw)
    for key in ("q", "c", "q_tilde"):
        within(getattr(a, key)[:-1], getattr(b, key)[:-1],
               np.hypot(getattr(a, key + "_se"), getattr(b, key + "_se"))[:-1])
    kw = dict(sigma_v2=0.7, sigma_a2=0.1, width=24, p0=0.8, c0=0.4, n_nets=2000)
    a = simulate_resnet(TANH, 1.5, 0.05, 5, method="dense", seed=3, **kw)
    b = simulate_resnet(TANH, 1.5, 0.05, 5, method="conditional", seed=4, **kw)
    for key in ("p", "q", "gamma", "lam", "e", "s", "chi", "grad_w", "grad_b", "grad_v"):
        sl = slice(1, -1)
        within(getattr(a, key)[sl], getattr(b, key)[sl],
               np.hypot(getattr(a, key + "_se"), getattr(b, key + "_se"))[sl])


@pytest.mark.parametrize("method", ["dense", "conditional"])
def test_relu_length_map_exact_at_tiny_width(method):
    """E q^{l+1} = sigma_w2/2 E q^l + sigma_b2 holds at any width; both samplers keep it."""
    r = simulate_mlp(RELU, 2.5, 0.3, 5, width=8, q0=0.7, c0=-0.3, n_nets=20000, seed=11,
                     method=method)
    q, _ = relu_maps(0.7, -0.3, 2.5, 0.3, 5)
    within(r.q, q, r.q_se)


# ------------------------------------------------------------------------------------------
# Residual networks (§2)
# ------------------------------------------------------------------------------------------

def test_relu_full_resnet_recurrences():
    sw2, sb2, sv2, sa2, L = 1.0, 0.1, 0.5, 0.05, 20
    r = simulate_resnet(RELU, sw2, sb2, L, sigma_v2=sv2, sigma_a2=sa2, width=2048, p0=1.0,
                        c0=0.3, n_nets=40, seed=3)
    p, q = [1.0], [np.nan]
    for _ in range(L):
        q.append(sw2 * p[-1] + sb2)
        p.append(p[-1] + sv2 * q[-1] / 2 + sa2)
    p, q = np.array(p), np.array(q)
    chi = (1 + sv2 * sw2 / 2) ** (L - np.arange(L + 1))
    within(r.p, p, r.p_se)
    within(r.q[1:], q[1:], r.q_se[1:])
    within(r.chi[:-1], chi[:-1], r.chi_se[:-1])
    assert r.chi[-1] == 1.0 and np.isnan(r.q[0]) and np.isnan(r.grad_w[0])
    # §2.3 parameter gradients, with V_phi = q/2 and V_phi' = 1/2
    l = slice(1, None)
    within(r.grad_a[l], chi[l], r.grad_a_se[l])
    within(r.grad_b[l], sv2 * chi[l] / 2, r.grad_b_se[l])
    within(r.grad_v[l], chi[l] * q[l] / 2, r.grad_v_se[l])
    within(r.grad_w[l], sv2 * chi[l] * p[:-1] / 2, r.grad_w_se[l])


def _gauss(f, q):
    """int Dz f(sqrt(q) z) in pre-activation units (adaptive; Gauss-Hermite fails at large q)."""
    dens = lambda u: math.exp(-u * u / (2 * q)) / math.sqrt(2 * math.pi * q)  # noqa: E731
    return integrate.quad(lambda u: dens(u) * f(u), -np.inf, np.inf, points=None)[0]


def test_tanh_reduced_resnet_recurrences():
    sw2, sb2, L = 1.5, 0.05, 10
    r = simulate_resnet(TANH, sw2, sb2, L, arch="reduced", width=2048, p0=1.0, c0=0.3,
                        n_nets=100, seed=5)
    assert r.grad_v is None and r.grad_a is None
    p, factors = [1.0], []
    for _ in range(L):
        q = sw2 * p[-1] + sb2
        sech4 = lambda u: (2 * math.exp(-abs(u)) / (1 + math.exp(-2 * abs(u)))) ** 4  # noqa: E731
        factors.append(1 + sw2 * _gauss(sech4, q))
        p.append(p[-1] + _gauss(lambda u: np.tanh(u) ** 2, q))
    chi = np.append(np.cumprod(factors[::-1])[::-1], 1.0)
    within(r.p, p, r.p_se)
    within(r.chi[:-1], chi[:-1], r.chi_se[:-1])


def test_relu_reduced_resnet_has_a_mean_drift():
    """Doubt about MATH.md §2.3: 'RRN = FRN with sigma_v2=1, sigma_a2=0' needs E phi = 0.

    With x^l = phi(h^l) + x^{l-1} the coordinates of x pick up a common mean m^l = m^{l-1} +
    M(q^l), M(q) = E relu(sqrt(q) z) = sqrt(q/2pi), and the cross term 2 x^{l-1}.phi(h^l)/N
    tends to 2 m^{l-1} M(q^l), not 0.  The FRN's V removes it.
    """
    sw2, sb2, L = 1.0, 0.1, 12
    r = simulate_resnet(RELU, sw2, sb2, L, arch="reduced", width=1024, p0=1.0, c0=0.3,
                        n_nets=100, seed=9)
    p, m, naive = [1.0], 0.0, [1.0]
    for _ in range(L):
        q = sw2 * p[-1] + sb2
        M = math.sqrt(q / (2 * math.pi))
        p.append(p[-1] + q / 2 + 2 * m * M)
        m += M
        naive.append(naive[-1] + (sw2 * naive[-1] + sb2) / 2)
    within(r.p, p, r.p_se)
    assert r.p[-1] > 10 * naive[-1]


# ------------------------------------------------------------------------------------------
# Kernels (§4)
# ------------------------------------------------------------------------------------------

X2 = inputs_on_sphere(2, 16, correlation=0.5, seed=0)  # x.x/d = 1, x.x'/d = 0.5 (table D)


def _ntk_stack(arch, width, n, seed0=100, **kw):
    return np.array([empirical_ntk(arch, RELU, X2, width=width, seed=seed0 + s, **kw).ntk
                     for s in range(n)])


def _rel(K, T):
    return np.linalg.norm(K - T) / np.linalg.norm(T)


def test_ntk_mlp_relu_against_limit():
    kw = dict(depth=2, sigma_w2=2.0, sigma_b2=0.1)
    S, T, _ = mlp_limit(X2 @ X2.T / 16, 2.0, 0.1, 2)
    # table D (REFERENCE_VALUES.md), relu, (2, 0.1), L = 2: printed as a sanity check only
    print("limit NNGP", S[0], "NTK", T[0], "(table D: 2.3 1.656549 / 6.6 3.212604)")
    ks = _ntk_stack("mlp", 2048, 12, **kw)
    errs = [_rel(k, T) for k in ks]
    print("width 2048: single-net relative errors", np.round(errs, 4),
          "error of the mean", round(_rel(ks.mean(0), T), 4))
    within(ks.mean(0), T, ks.std(0, ddof=1) / math.sqrt(len(ks)))


def test_ntk_standard_parametrisation_scales_with_width():
    kw = dict(depth=2, sigma_w2=2.0, sigma_b2=0.1, parametrization="standard")
    width = 1024
    _, _, sp = mlp_limit(X2 @ X2.T / 16, 2.0, 0.1, 2)
    ks = _ntk_stack("mlp", width, 12, **kw) / width
    print("SP NTK / width", ks.mean(0)[0], "limit", sp[0])
    within(ks.mean(0), sp, ks.std(0, ddof=1) / math.sqrt(len(ks)))


def test_ntk_resnet_relu_against_limit():
    kw = dict(depth=1, sigma_w2=1.5, sigma_b2=0.1, sigma_v2=0.5, sigma_a2=0.05)
    _, T = resnet_limit(X2 @ X2.T / 16, 1.5, 0.1, 0.5, 0.05, 1)
    print("limit resnet NTK", T[0], "(table D: 3.675 1.875320)")
    ks = _ntk_stack("resnet", 512, 12, **kw)
    within(ks.mean(0), T, ks.std(0, ddof=1) / math.sqrt(len(ks)))


@pytest.mark.slow
def test_ntk_relative_error_decreases_with_width():
    """A single network's NTK fluctuates by O(width^-1/2) around the limit (§4.1)."""
    kw = dict(depth=2, sigma_w2=2.0, sigma_b2=0.0)
    _, T, _ = mlp_limit(X2 @ X2.T / 16, 2.0, 0.0, 2)
    assert np.isclose(T[0, 0], 6.0)  # closed form 2(L+1) at (2, 0)
    errors = {}
    for width in (256, 1024, 4096):
        errors[width] = float(np.mean([_rel(k, T) for k in _ntk_stack("mlp", width, 12, **kw)]))
    print("mean single-net relative error by width", errors)
    assert errors[4096] < errors[1024] < errors[256]
    assert errors[256] / errors[4096] > 2  # 4 expected


@pytest.mark.slow
def test_ntk_resnet_deep_against_limit():
    kw = dict(depth=4, sigma_w2=1.5, sigma_b2=0.1, sigma_v2=0.5, sigma_a2=0.05)
    _, T = resnet_limit(X2 @ X2.T / 16, 1.5, 0.1, 0.5, 0.05, 4)
    print("limit resnet NTK L=4", T[0], "(table D: 16.67915 8.408394)")
    ks = _ntk_stack("resnet", 2048, 8, **kw)
    print("width 2048: relative error of the mean", _rel(ks.mean(0), T))
    within(ks.mean(0), T, ks.std(0, ddof=1) / math.sqrt(len(ks)))


def test_nngp_against_limit():
    C = np.array([[1.0, 0.5, -0.2], [0.5, 1.0, 0.3], [-0.2, 0.3, 1.0]])
    X = inputs_on_sphere(3, 16, correlation=C, seed=1)
    S, _, _ = mlp_limit(C, 2.0, 0.1, 2)
    r = empirical_nngp("mlp", RELU, X, depth=2, sigma_w2=2.0, sigma_b2=0.1, width=256,
                       n_nets=100, seed=2)
    within(r.nngp, S, r.nngp_se)
    P, _ = resnet_limit(C, 1.5, 0.1, 0.5, 0.05, 3)
    r = empirical_nngp("resnet", RELU, X, depth=3, sigma_w2=1.5, sigma_b2=0.1, sigma_v2=0.5,
                       sigma_a2=0.05, width=512, n_nets=200, seed=3, method="conditional")
    within(r.nngp, P, r.nngp_se)


@pytest.mark.parametrize("arch", ["mlp", "resnet"])
@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
def test_ntk_is_symmetric_psd_and_blockwise_consistent(arch, parametrization):
    X = inputs_on_sphere(6, 5, seed=4)
    kw = dict(depth=3, sigma_w2=1.7, sigma_b2=0.2, sigma_v2=0.6, sigma_a2=0.1, width=64,
              parametrization=parametrization, seed=5)
    K = empirical_ntk(arch, TANH, X, **kw).ntk
    assert K.shape == (6, 6)
    assert np.allclose(K, K.T, rtol=1e-12, atol=0)
    assert np.linalg.eigvalsh(K).min() >= -1e-10 * np.abs(K).max()
    # same seed, same network: the cross kernel is the off-diagonal block
    K12 = empirical_ntk(arch, TANH, X[:2], X[2:], **kw).ntk
    assert np.allclose(K12, K[:2, 2:], rtol=1e-10)


def _finite_difference_ntk(net, X, gains, eps=1e-6):
    """sum over parameter groups of gain * J J^T, J by central differences."""
    theta = 0.0
    for arrays, gain in gains:
        for a in arrays:
            J = []
            flat = a.reshape(-1)
            for i in range(flat.size):
                old = flat[i]
                flat[i] = old + eps
                fp = net.output(X)[0, :, 0]
                flat[i] = old - eps
                fm = net.output(X)[0, :, 0]
                flat[i] = old
                J.append((fp - fm) / (2 * eps))
            J = np.array(J)
            theta = theta + gain * J.T @ J
    return theta


@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
@pytest.mark.parametrize("arch", ["mlp", "resnet"])
def test_ntk_backward_pass_matches_finite_differences(arch, parametrization):
    """The hand-derived backward pass against numerical per-parameter gradients."""
    d, n, L = 3, 5, 2
    var = {"w": 1.3, "b": 0.2, "v": 0.7, "a": 0.1, "in": 1.1, "out": 0.9}
    net = sim._Net(arch, ERF[0], ERF[1], np.random.default_rng(0), 1, d, n, L, 1, var,
                   parametrization == "standard", "dense", True)
    X = inputs_on_sphere(3, d, seed=1)[None]
    std = parametrization == "standard"

    def g(v, fan_in=1):
        return 1.0 if std else v / fan_in

    if arch == "mlp":
        fans = [d] + [n] * L
        gains = [([layer._kept], g(var["w"], f)) for layer, f in zip(net.layers, fans)]
        gains += [(net.biases, g(var["b"]))]
    else:
        gains = [([net.U._kept], g(var["in"], d)), ([net.O._kept], g(var["out"], n)),
                 ([w._kept for w in net.Ws], g(var["w"], n)), (net.bs, g(var["b"])),
                 ([v._kept for v in net.Vs], g(var["v"], n)), (net.as_, g(var["a"]))]
    expected = _finite_difference_ntk(net, X, gains)
    K = net.ntk(X, (slice(None), slice(None)))[0]
    assert np.allclose(K, expected, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------
# Inputs, records, determinism, errors
# ------------------------------------------------------------------------------------------

def test_inputs_on_sphere():
    X = inputs_on_sphere(5, 7, seed=0)
    assert X.shape == (5, 7)
    assert np.allclose(np.sum(X * X, axis=1) / 7, 1.0, atol=1e-14)
    X = inputs_on_sphere(4, 6, correlation=0.3, seed=0)
    G = X @ X.T / 6
    assert np.allclose(G, 0.7 * np.eye(4) + 0.3, atol=1e-12)
    X = inputs_on_sphere(4, 2, correlation=1.0, seed=0)  # rank 1 fits in 2 dimensions
    assert np.allclose(X @ X.T / 2, 1.0, atol=1e-12)
    X = inputs_on_sphere(3, 3, correlation=-0.5, seed=0)  # the most negative for n = 3
    assert np.allclose(X @ X.T / 3, 1.5 * np.eye(3) - 0.5, atol=1e-10)
    with pytest.raises(DomainError):
        inputs_on_sphere(3, 10, correlation=-0.6)
    with pytest.raises(DomainError):
        inputs_on_sphere(5, 3, correlation=0.2)  # needs 5 dimensions
    with pytest.raises(DomainError):
        inputs_on_sphere(2, 3, correlation=[[1.0, 0.2], [0.3, 1.0]])


def test_records_are_json_ready():
    r = simulate_resnet(TANH, 1.0, 0.1, 3, width=16, p0=1.0, c0=0.5, n_nets=4, seed=0)
    d = r.to_dict()
    assert d["q"][0] is None and len(d["chi"]) == 4
    json.dumps(d, allow_nan=False)
    m = simulate_mlp(TANH, 1.0, 0.1, 3, width=16, q0=1.0, c0=0.5, n_nets=4, seed=0)
    assert m.to_dict()["activation"] == "tanh"
    json.dumps(m.to_dict(), allow_nan=False)
    k = empirical_nngp("mlp", TANH, X2, depth=1, sigma_w2=1.0, sigma_b2=0.0, width=8, n_nets=3,
                       seed=0)
    assert k.to_dict()["ntk"] is None and np.shape(k.to_dict()["nngp"]) == (2, 2)
    json.dumps(k.to_dict(), allow_nan=False)


def test_deterministic_with_seed():
    kw = dict(width=32, q0=1.0, c0=0.3, n_nets=5)
    a = simulate_mlp(TANH, 1.2, 0.1, 4, seed=3, **kw)
    b = simulate_mlp(TANH, 1.2, 0.1, 4, seed=3, **kw)
    c = simulate_mlp(TANH, 1.2, 0.1, 4, seed=4, **kw)
    assert np.array_equal(a.q, b.q) and np.array_equal(a.q_tilde, b.q_tilde)
    assert not np.array_equal(a.q, c.q)
    d = simulate_mlp(TANH, 1.2, 0.1, 4, seed=np.random.default_rng(3), **kw)
    assert np.array_equal(a.c, d.c)
    for method in ("dense", "conditional"):
        kw = dict(depth=2, sigma_w2=1.5, sigma_b2=0.1, width=32, seed=8, method=method)
        assert np.array_equal(empirical_ntk("resnet", TANH, X2, **kw).ntk,
                              empirical_ntk("resnet", TANH, X2, **kw).ntk)
        assert np.array_equal(empirical_nngp("mlp", TANH, X2, n_nets=3, **kw).nngp,
                              empirical_nngp("mlp", TANH, X2, n_nets=3, **kw).nngp)
    assert np.array_equal(inputs_on_sphere(3, 4, seed=1), inputs_on_sphere(3, 4, seed=1))
    state = np.random.get_state()[1].copy()
    simulate_resnet(TANH, 1.0, 0.1, 2, width=8, p0=1.0, c0=0.5, n_nets=2, seed=0)
    assert np.array_equal(np.random.get_state()[1], state)  # global state untouched


@pytest.mark.parametrize("call", [
    lambda: simulate_mlp(TANH, 1.0, 0.1, 3, width=0, q0=1.0, c0=0.5),
    lambda: simulate_mlp(TANH, -1.0, 0.1, 3, width=8, q0=1.0, c0=0.5),
    lambda: simulate_mlp(TANH, 1.0, float("nan"), 3, width=8, q0=1.0, c0=0.5),
    lambda: simulate_mlp(TANH, 1.0, 0.1, 3, width=8, q0=1.0, c0=1.5),
    lambda: simulate_mlp(TANH, 1.0, 0.1, 3, width=8, q0=0.0, c0=0.5),
    lambda: simulate_mlp(TANH, 1.0, 0.1, -1, width=8, q0=1.0, c0=0.5),
    lambda: simulate_mlp(TANH, 1.0, 0.1, 3, width=8, q0=1.0, c0=0.5, n_nets=1),
    lambda: simulate_mlp(TANH, 1.0, 0.1, 3, width=8, q0=1.0, c0=0.5, method="exact"),
    lambda: simulate_mlp((np.tanh,), 1.0, 0.1, 3, width=8, q0=1.0, c0=0.5),
    lambda: simulate_resnet(TANH, 1.0, 0.1, 3, arch="reduced", sigma_v2=2.0, width=8, p0=1.0,
                            c0=0.5),
    lambda: simulate_resnet(TANH, 1.0, 0.1, 3, sigma_a2=-0.1, width=8, p0=1.0, c0=0.5),
    lambda: simulate_resnet(TANH, 1.0, 0.1, 3, arch="dense", width=8, p0=1.0, c0=0.5),
    lambda: empirical_ntk("mlp", TANH, [[1.0, np.nan]], depth=1, sigma_w2=1, sigma_b2=0,
                          width=4),
    lambda: empirical_ntk("mlp", TANH, [[1.0, np.inf]], depth=1, sigma_w2=1, sigma_b2=0,
                          width=4),
    lambda: empirical_ntk("mlp", TANH, X2, X2[:, :3], depth=1, sigma_w2=1, sigma_b2=0,
                          width=4),
    lambda: empirical_ntk("cnn", TANH, X2, depth=1, sigma_w2=1, sigma_b2=0, width=4),
    lambda: empirical_ntk("mlp", TANH, X2, depth=1, sigma_w2=1, sigma_b2=0, width=4,
                          parametrization="mup"),
    lambda: empirical_ntk("mlp", TANH, X2, depth=1, sigma_w2=1, sigma_b2=0, width=0),
    lambda: empirical_nngp("resnet", TANH, X2, depth=1, sigma_w2=1, sigma_b2=0, width=4,
                           sigma_o2=-1.0),
    lambda: empirical_nngp("mlp", TANH, X2, depth=1, sigma_w2=1, sigma_b2=0, width=4,
                           n_outputs=0),
    lambda: inputs_on_sphere(0, 3),
])
def test_bad_input_raises_domain_error(call):
    with pytest.raises(DomainError):
        call()


def test_activation_from_the_core():
    """String specs and Activation objects go through meanfield.activations (if present)."""
    pytest.importorskip("meanfield.activations")
    kw = dict(width=16, q0=1.0, c0=0.5, n_nets=3, seed=1)
    a = simulate_mlp("tanh", 1.0, 0.1, 3, **kw)
    b = simulate_mlp(TANH, 1.0, 0.1, 3, **kw)
    assert np.allclose(a.q, b.q) and np.allclose(a.q_tilde, b.q_tilde, rtol=1e-6)
    with pytest.raises(DomainError):
        simulate_mlp("no_such_activation", 1.0, 0.1, 3, **kw)
