"""Tests of meanfield.dynamics: linearised gradient flow (MATH.md 4.5), NNGP posterior, NTK
conditioning.  Expected values come from direct matrix functions (scipy.linalg.expm, solves),
the defining properties (t = 0 is the prior, t -> inf interpolates) and the closed form of an
equicorrelated kernel's spectrum."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from scipy import linalg

from meanfield import dynamics as D
from meanfield.errors import ConvergenceError, DomainError
from meanfield.kernels import kernel


def sphere(n, d, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X * (math.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True))


@pytest.fixture(scope="module")
def problem():
    X = sphere(14, 6, seed=1)
    Xt = sphere(5, 6, seed=2)
    kw = dict(depth=3, sigma_w2=1.8, sigma_b2=0.1)
    tr = kernel("mlp", "erf", X, **kw)
    cross = kernel("mlp", "erf", Xt, X, **kw)
    te = kernel("mlp", "erf", Xt, **kw)
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1]
    return dict(X=X, Xt=Xt, tr=tr, cross=cross, te=te, y=y, kw=kw)


def flow(p, t, **kw):
    return D.gradient_flow(p["tr"].ntk, p["y"], t, ntk_test_train=p["cross"].ntk,
                           nngp_train=p["tr"].nngp, nngp_test_train=p["cross"].nngp,
                           nngp_test=p["te"].nngp, **kw)


def test_t0_is_the_prior(problem):
    g = flow(problem, 0.0)
    np.testing.assert_allclose(g.mean[0], 0.0, atol=1e-14)
    np.testing.assert_allclose(g.train_mean[0], 0.0, atol=1e-14)
    np.testing.assert_allclose(g.cov[0], problem["te"].nngp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g.train_cov[0], problem["tr"].nngp, rtol=1e-12, atol=1e-12)


def test_infinite_time_interpolates(problem):
    p = problem
    g = flow(p, [np.inf])
    np.testing.assert_allclose(g.train_mean[0], p["y"], atol=1e-9)
    np.testing.assert_allclose(g.train_cov[0], 0.0, atol=1e-9)
    # closed form at t = inf (MATH.md 4.5): mean = Theta_xX Theta^-1 Y
    mu = p["cross"].ntk @ np.linalg.solve(p["tr"].ntk, p["y"])
    np.testing.assert_allclose(g.mean[0], mu, rtol=1e-9, atol=1e-10)
    # the test point equal to a training point is predicted exactly
    h = D.gradient_flow(p["tr"].ntk, p["y"], np.inf, ntk_test_train=p["tr"].ntk[:3])
    np.testing.assert_allclose(h.mean[0], p["y"][:3], atol=1e-9)


def test_finite_time_against_matrix_exponential(problem):
    p = problem
    eta, t = 0.05, 3.0
    g = flow(p, [t], learning_rate=eta)
    Th, K = p["tr"].ntk, p["tr"].nngp
    E = linalg.expm(-eta * Th * t)
    A = p["cross"].ntk @ np.linalg.solve(Th, np.eye(len(Th)) - E)
    np.testing.assert_allclose(g.mean[0], A @ p["y"], rtol=1e-9, atol=1e-12)
    cov = p["te"].nngp + A @ K @ A.T - (A @ p["cross"].nngp.T + p["cross"].nngp @ A.T)
    np.testing.assert_allclose(g.cov[0], cov, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(g.train_cov[0], E @ K @ E, rtol=1e-8, atol=1e-12)
    # loss="mean" is eta -> eta / N
    m = flow(p, [t * len(Th)], learning_rate=eta, loss="mean")
    np.testing.assert_allclose(m.mean, g.mean, rtol=1e-10)


def test_loss_decays_as_sum_of_exponentials(problem):
    p = problem
    eta = 0.1
    ts = np.array([0.0, 0.5, 2.0, 10.0, np.inf])
    lc = D.training_loss(p["tr"].ntk, p["y"], ts, nngp_train=p["tr"].nngp, learning_rate=eta)
    Th, K, y = p["tr"].ntk, p["tr"].nngp, p["y"]
    for i, t in enumerate(ts[:-1]):
        E = linalg.expm(-eta * Th * t)
        r = E @ y
        assert lc.loss_of_mean[i] == pytest.approx(0.5 * r @ r, rel=1e-9)
        assert lc.loss[i] == pytest.approx(0.5 * (r @ r + np.trace(E @ K @ E)), rel=1e-9)
    assert lc.loss[-1] == pytest.approx(0.0, abs=1e-12)
    # each component decays at 2 eta lambda_i
    np.testing.assert_allclose(lc.rates, 2 * eta * np.linalg.eigvalsh(Th), rtol=1e-10)
    assert np.all(np.diff(lc.loss) <= 0)
    json.dumps(lc.to_dict(), allow_nan=False)
    # expected loss from the flow's own mean and covariance on the training set
    g = D.gradient_flow(Th, y, [2.0], nngp_train=K, learning_rate=eta)
    res = g.train_mean[0] - y
    assert lc.loss[2] == pytest.approx(0.5 * (res @ res + np.trace(g.train_cov[0])), rel=1e-9)


def test_multi_output_targets(problem):
    p = problem
    Y = np.stack([p["y"], -2 * p["y"]], axis=1)
    g = D.gradient_flow(p["tr"].ntk, Y, [1.0], ntk_test_train=p["cross"].ntk)
    g1 = D.gradient_flow(p["tr"].ntk, p["y"], [1.0], ntk_test_train=p["cross"].ntk)
    assert g.mean.shape == (1, 5, 2)
    np.testing.assert_allclose(g.mean[0, :, 1], -2 * g1.mean[0], rtol=1e-12)


def test_nngp_posterior(problem):
    p = problem
    K, Kx, Kxx, y = p["tr"].nngp, p["cross"].nngp, p["te"].nngp, p["y"]
    s2 = 0.01
    post = D.nngp_posterior(K, y, Kx, Kxx, noise=s2)
    A = np.linalg.solve(K + s2 * np.eye(len(K)), np.eye(len(K)))
    np.testing.assert_allclose(post.mean, Kx @ A @ y, rtol=1e-9)
    np.testing.assert_allclose(post.cov, Kxx - Kx @ A @ Kx.T, rtol=1e-8, atol=1e-12)
    sign, logdet = np.linalg.slogdet(K + s2 * np.eye(len(K)))
    lml = -0.5 * y @ A @ y - 0.5 * logdet - 0.5 * len(y) * math.log(2 * math.pi)
    assert post.log_marginal_likelihood == pytest.approx(lml, rel=1e-9)
    # zero noise at the training points: exact interpolation, zero variance
    z = D.nngp_posterior(K, y, K[:4], K[:4, :4])
    np.testing.assert_allclose(z.mean, y[:4], atol=1e-8)
    np.testing.assert_allclose(z.cov, 0.0, atol=1e-8)
    json.dumps(post.to_dict(), allow_nan=False)


def test_singular_ntk_raises_and_regulariser_helps(problem):
    p = problem
    X = np.vstack([p["X"], p["X"][:2]])  # duplicated training inputs
    k = kernel("mlp", "erf", X, **p["kw"])
    y = np.concatenate([p["y"], [0.0, 1.0]])  # inconsistent targets on the duplicates
    with pytest.raises(ConvergenceError, match="singular") as ei:
        D.gradient_flow(k.ntk, y, np.inf)
    assert "\n" not in str(ei.value)
    with pytest.raises(ConvergenceError, match="singular"):
        D.nngp_posterior(k.nngp, y, k.nngp[:2])
    g = D.gradient_flow(k.ntk, y, [10.0])  # finite times never need the inverse
    assert np.all(np.isfinite(g.train_mean))
    r = D.gradient_flow(k.ntk, y, np.inf, diag_reg=1e-6)
    assert np.all(np.isfinite(r.train_mean)) and r.diag_reg > 0
    assert D.nngp_posterior(k.nngp, y, k.nngp[:2], noise=1e-3).mean.shape == (2,)


@pytest.mark.parametrize("call", [
    lambda p: D.gradient_flow(p["tr"].ntk[:3], p["y"], 1.0),
    lambda p: D.gradient_flow(p["tr"].ntk, p["y"], -1.0),
    lambda p: D.gradient_flow(p["tr"].ntk, p["y"], 1.0, learning_rate=0.0),
    lambda p: D.gradient_flow(p["tr"].ntk, p["y"], 1.0, loss="l1"),
    lambda p: D.gradient_flow(p["tr"], p["y"], 1.0),
    lambda p: D.gradient_flow(np.full((2, 2), np.nan), [1.0, 2.0], 1.0),
    lambda p: D.gradient_flow(p["tr"].ntk, p["y"][:3], 1.0),
    lambda p: D.gradient_flow(p["tr"].ntk, p["y"], 1.0, ntk_test_train=np.ones((2, 3))),
    lambda p: D.nngp_posterior(p["tr"].nngp, p["y"], p["cross"].nngp, noise=-1.0),
    lambda p: D.ntk_condition_number("mlp", "relu", 0, 2.0, 0.0),
    lambda p: D.ntk_condition_number("mlp", "relu", 3, -2.0, 0.0),
    lambda p: D.ntk_condition_number("mlp", "relu", 3, 2.0, 0.0, n=1),
    lambda p: D.ntk_condition_number("mlp", "relu", 3, 2.0, 0.0, correlation=1.5),
])
def test_bad_input(problem, call):
    with pytest.raises(DomainError) as ei:
        call(problem)
    assert "\n" not in str(ei.value)


def test_predict_matches_manual(problem):
    p = problem
    g = D.predict("mlp", "erf", p["X"], p["y"], p["Xt"], [0.0, 2.0], learning_rate=0.1, **p["kw"])
    h = flow(p, [0.0, 2.0], learning_rate=0.1)
    np.testing.assert_allclose(g.mean, h.mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g.cov, h.cov, rtol=1e-12, atol=1e-15)
    json.dumps(g.to_dict(), allow_nan=False)


# ------------------------------------------------------------------------------------------
# conditioning
# ------------------------------------------------------------------------------------------

def test_condition_number_on_the_fixed_set_matches_an_explicit_set():
    """n inputs with pairwise correlation 0.5: the closed-form spectrum a + (n-1) b, a - b."""
    from meanfield.simulate import inputs_on_sphere

    n = 12
    X = inputs_on_sphere(n, 20, correlation=0.5, seed=0)
    for act, sw, sb in (("relu", 2.0, 0.05), ("tanh", 1.7, 0.05)):
        k = kernel("mlp", act, X, depth=6, sigma_w2=sw, sigma_b2=sb)
        got = D.ntk_condition_number("mlp", act, 6, sw, sb, n=n)
        assert got == pytest.approx(np.linalg.cond(k.ntk), rel=1e-8)
        assert got == pytest.approx(k.ntk_condition_number, rel=1e-8)


def test_conditioning_depth_dependence():
    # relu at (2, 0): the NTK diagonal is 2(L+1); the off-diagonal grows too, kappa stays finite
    c = D.ntk_conditioning("mlp", "relu", [1, 2, 5, 10], 2.0, 0.0, n=64)
    np.testing.assert_allclose(c.ntk_diag, 2.0 * (np.array([1, 2, 5, 10]) + 1), rtol=1e-13)
    # tanh deep in the ordered phase: the kernel degenerates, kappa explodes with depth
    o = D.ntk_conditioning("mlp", "tanh", [2, 10, 40], 0.8, 0.5, n=64)
    assert o.condition_number[0] < o.condition_number[1] < o.condition_number[2]
    assert o.condition_number[2] > 1e6 or not np.isfinite(o.condition_number[2])
    # erf on the edge of chaos stays conditioned far longer
    e = D.ntk_conditioning("mlp", "erf", [2, 10, 40], math.pi / 4, 0.0, n=64)
    assert e.condition_number[2] < o.condition_number[2]
    d = c.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["depths"] == [1, 2, 5, 10] and "0.5" in d["inputs"]


def test_condition_number_is_fast_for_closed_forms():
    D.ntk_condition_number("mlp", "relu", 100, 2.0, 0.05)
    t = time.process_time()
    D.ntk_condition_number("mlp", "relu", 100, 2.0, 0.05)
    assert time.process_time() - t < 0.5  # ~0.04 s of CPU on an idle core


def test_hermite_diagnostic_close_to_accurate():
    a = D.ntk_condition_number("mlp", "tanh", 8, 1.7, 0.05)
    h = D.ntk_condition_number("mlp", "tanh", 8, 1.7, 0.05, method="hermite")
    assert h == pytest.approx(a, rel=1e-5)
