"""batch_norm (meanfield/network/batchnorm.py): its NNGP and NTK maps (exact identities, the quadrature),
its refusals, the layer contract of tests/test_network.py, and Monte Carlo against wide random
networks (slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import test_network as tn
import test_network_mc as tmc
from meanfield import network as nw
from meanfield.errors import DomainError
from meanfield.network import batchnorm as bnm

RNG = np.random.default_rng(3)
X = RNG.standard_normal((6, 5))

CONTRACT = {
    "batch_norm": ([nw.dense(1.5, 0.2), nw.batch_norm()], (4, 3)),
    "batch_norm-relu": ([nw.dense(1.5, 0.2), nw.batch_norm(), nw.activation("relu"), nw.dense(1.0)], (4, 3)),
    "batch_norm-conv": ([nw.conv([3], sigma_w2=1.0, sigma_b2=0.1), nw.batch_norm()], (2, 5, 2)),
}


@pytest.mark.parametrize("name", list(CONTRACT))
def test_vjp_is_the_derivative_of_apply(name):
    tn.check_vjp(*CONTRACT[name])


@pytest.mark.parametrize("name", ["batch_norm-relu", "batch_norm-conv"])
def test_empirical_ntk_is_the_parameter_jacobian_gram(name):
    """The finite network's NTK (its vjp through the batch statistics) against finite differences."""
    tn.check_ntk_gram(*CONTRACT[name])


def test_apply_normalises_over_batch_and_positions():
    x = RNG.standard_normal((3, 4, 5)) * 2 + 1
    y, _ = nw.batch_norm().apply({}, x)
    np.testing.assert_allclose(y.mean(axis=(0, 1)), 0, atol=1e-14)
    np.testing.assert_allclose((y ** 2).mean(axis=(0, 1)), 1, rtol=1e-14)


def _law(S):
    B = S.shape[0]
    G = np.eye(B) - 1.0 / B
    lam, U = np.linalg.eigh(G @ S @ G)
    lam = np.where(lam > 1e-13 * lam.max(), lam, 0.0)
    return bnm.BatchNormLaw(U, lam, B)


def test_each_channel_is_normalised_so_the_trace_is_the_batch_size():
    for layers, x in (([nw.dense(2.0, 0.1)], X), ([nw.conv([3], sigma_w2=2.0)], RNG.standard_normal((2, 4, 3)))):
        k = nw.serial(*layers, nw.batch_norm()).kernel(x, ntk=False).nngp
        if k.ndim == 2:
            assert np.trace(k) == pytest.approx(x.shape[0], rel=1e-13)
        else:
            assert np.einsum("nnss->", k) == pytest.approx(x.shape[0] * x.shape[1], rel=1e-13)


@pytest.mark.parametrize("B", [2, 3, 8, 33])
def test_isotropic_batch_is_uniform_on_the_sphere(B):
    """S = c G: y is uniform on the sphere of radius sqrt(B) in the centred subspace, so
    E[y y'] = B / (B - 1) G, E[relu(y) relu(y)'] and E[relu(y_i)] in closed form."""
    G = np.eye(B) - 1.0 / B
    law = _law(2.5 * G)
    np.testing.assert_allclose(law.second_moment(), B / (B - 1) * G, atol=1e-14)
    # relu: diag E relu(y_i)^2 = 1/2 E y_i^2 by symmetry
    E, mean = law.phi_moments(1.0, 0.0)
    np.testing.assert_allclose(np.diag(E), 0.5 * (B - 1) / B * B / (B - 1), rtol=1e-13)
    # E|y_i| for y_i = sqrt(B) * (the coordinate of a uniform point on S^(B-2) scaled by |G e_i|)
    # = sqrt(B) sqrt((B-1)/B) E|u_1| with u uniform on the unit sphere in R^(B-1)
    n = B - 1
    e_abs = math.gamma(n / 2) / (math.sqrt(math.pi) * math.gamma((n + 1) / 2))
    np.testing.assert_allclose(mean, 0.5 * math.sqrt(B * n / B) * e_abs, rtol=1e-13)


@pytest.mark.parametrize("B", [4, 5, 9])
def test_isotropic_batch_ntk(B):
    """S^G = T^G = c G: T' = B E[(G - zz'/|z|^2) / |z|^2] = B G (k - 1) / (k (k - 2)), k = B - 1
    (|z|^2 is chi-square with k degrees of freedom, independent of the direction)."""
    G = np.eye(B) - 1.0 / B
    law = _law(1.7 * G)
    k = B - 1
    T = law.phi_ntk(1.0, -1.0, 1.7 * G)
    np.testing.assert_allclose(T, B * G * (k - 1) / (k * (k - 2)), atol=1e-14)


@pytest.mark.parametrize("slopes", [(1.0, 0.0), (1.0, -0.3), (1.0, -1.0)])
def test_maps_against_sampling_the_gaussian(slopes):
    """The quadrature against a direct average over h ~ N(0, S) of y = sqrt(B) Gh / |Gh|:
    phi(y) phi(y)', phi(y) and the NTK map D J T J' D (J = dy/dh, D = diag phi'(y)), for a
    random S and T, within 5 standard errors of 200 000 draws (independent of the algebra)."""
    b, m = slopes
    B = 6
    rng = np.random.default_rng(21)
    A = rng.standard_normal((B, B))
    S = A @ A.T / B + 0.2
    Tm = rng.standard_normal((B, B))
    Tm = Tm @ Tm.T / B
    G = np.eye(B) - 1.0 / B
    law = _law(S)
    E, mean = law.phi_moments(b, m)
    theta = law.phi_ntk(b, m, G @ Tm @ G)
    h = rng.standard_normal((200_000, B)) @ np.linalg.cholesky(S).T
    z = h @ G
    r = np.linalg.norm(z, axis=1)
    y = np.sqrt(B) * z / r[:, None]
    phi = np.where(y > 0, b * y, -m * y)
    dphi = np.where(y > 0, b, -m)
    zh = z / r[:, None]
    P = G[None] - zh[:, :, None] * zh[:, None, :]                    # (I - zz') G (z in range G)
    JTJ = B / r[:, None, None] ** 2 * np.einsum("nij,jk,nlk->nil", P, Tm, P, optimize=True)
    samples = {"phi phi'": (np.einsum("ni,nj->nij", phi, phi), E), "phi": (phi, mean),
               "ntk": (dphi[:, :, None] * dphi[:, None, :] * JTJ, theta)}
    for what, (draws, want) in samples.items():
        se = draws.std(axis=0) / np.sqrt(draws.shape[0])
        z_ = (draws.mean(axis=0) - want) / np.maximum(se, 1e-12)
        assert np.abs(z_).max() < 5, f"{what}: largest |z| = {np.abs(z_).max():.2f}"


@pytest.mark.parametrize("slopes", [(1.0, 0.0), (1.0, -0.3), (1.0, -1.0)])
def test_backward_map_is_the_adjoint_of_the_ntk_map(slopes):
    B = 6
    rng = np.random.default_rng(1)
    A = rng.standard_normal((B, B))
    law = _law(A @ A.T / B + 0.2)
    G = np.eye(B) - 1.0 / B
    T = rng.standard_normal((B, B))
    T = T + T.T
    D = rng.standard_normal((B, B))
    D = D + D.T
    lhs = np.sum(D * law.phi_ntk(*slopes, G @ T @ G))
    rhs = np.sum(law.phi_backward(*slopes, D) * T)
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_quadrature_step_converged(monkeypatch):
    net = nw.serial(nw.dense(2.0, 0.1), nw.batch_norm(), nw.activation("relu"), nw.dense(1.0, 0.1))
    a = net.kernel(X)
    monkeypatch.setattr(bnm, "_H", bnm._H / 2)
    b = net.kernel(X)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_linear_after_batch_norm_equals_batch_norm(param):
    a = nw.serial(nw.dense(2.0, 0.1), nw.batch_norm(), parametrization=param).kernel(X)
    b = nw.serial(nw.dense(2.0, 0.1), nw.batch_norm(), nw.activation("linear"), parametrization=param).kernel(X)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-12, atol=1e-14)


def test_batch_norm_removes_the_bias_from_the_ntk():
    """A bias before batch_norm is centred away: with and without it the kernels agree."""
    a = nw.serial(nw.dense(2.0, 0.3), nw.batch_norm(), nw.activation("relu"), nw.dense(1.0)).kernel(X)
    b = nw.serial(nw.dense(2.0), nw.batch_norm(), nw.activation("relu"), nw.dense(1.0)).kernel(X)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-12)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-12)


def test_relu_after_batch_norm_is_not_the_gaussian_map():
    """The exact channel mean after relu differs from treating batch_norm's output as Gaussian
    (B = 3: 0.450 against 0.399 for unit variance); the wide networks follow the exact one
    (test_nngp_matches_a_wide_network, whose layer_norm reads the mean)."""
    law = _law(np.eye(3) - 1.0 / 3)
    _, mean = law.phi_moments(1.0, 0.0)
    q = np.diag(law.second_moment())
    assert np.all(np.abs(mean - np.sqrt(q / (2 * np.pi))) > 0.05)


@pytest.mark.parametrize("call, message", [
    (lambda: nw.serial(nw.dense(1.0), nw.batch_norm()).kernel(X[:3]), "batch_norm: the NTK is infinite"),
    (lambda: nw.serial(nw.dense(1.0), nw.batch_norm()).kernel(X, X[:2], ntk=False),
     "batch_norm: with X2 the batch is ambiguous"),
    (lambda: nw.serial(nw.dense(1.0), nw.batch_norm()).kernel(X[:1], ntk=False), "a batch of one value"),
    (lambda: nw.serial(nw.dense(1.0), nw.batch_norm()).kernel(np.ones((3, 2)), ntk=False),
     "centred batch covariance is zero"),
    (lambda: nw.serial(nw.dense(1.0), nw.batch_norm(), nw.activation("tanh")).check(X),
     "layers[2]: activation 'tanh' after batch_norm is not supported"),
    (lambda: nw.serial(nw.batch_norm()).check(X), "layers[0]: batch_norm needs Gaussian inputs"),
    (lambda: nw.serial(nw.dense(1.0), nw.activation("relu"), nw.batch_norm()).check(X),
     "layers[2]: batch_norm needs Gaussian inputs"),
    (lambda: nw.serial(nw.dense(1.0), nw.batch_norm(), nw.avg_pool([1]), nw.activation("relu")).check(
        X.reshape(6, 5, 1)), "layers[3]: activation 'relu' needs Gaussian"),
    (lambda: nw.serial(nw.dense(1.0), nw.batch_norm()).propagate(X), "batch_norm: gradients"),
])
def test_refusals_are_one_line(call, message):
    with pytest.raises(DomainError) as e:
        call()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_spec():
    spec = [{"layer": "dense", "sigma_w2": 2.0}, {"layer": "batch_norm"}, {"layer": "activation", "fn": "relu"},
            {"layer": "dense", "sigma_w2": 1.0}]
    net = nw.from_spec(spec)
    assert nw.to_spec(net)["layers"] == spec
    with pytest.raises(DomainError, match=r"layers\[1\]\.eps: unknown key"):
        nw.from_spec([{"layer": "dense"}, {"layer": "batch_norm", "eps": 1e-5}])


# ------------------------------------------------------------------------------------------
# Monte Carlo (slow)
# ------------------------------------------------------------------------------------------
# batches of B >= 6 values (centred rank k >= 5) for the NTK: one channel's NTK term ~ 1 / |z|^2
# has a finite variance (E|z|^-4 = 1 / ((k - 2) (k - 4)) for an isotropic batch) only for k > 4,
# and the standard error estimated from R networks needs it
MC = {
    "dense-bn-relu-dense": ([nw.dense(2.0, 0.1), nw.batch_norm(), nw.activation("relu"), nw.dense(1.0, 0.1)],
                            (6, 5)),
    "conv-bn-leaky-ln-gap": ([nw.conv([3], sigma_w2=2.0, sigma_b2=0.1), nw.batch_norm(),
                              nw.activation("leaky_relu:0.2"), nw.layer_norm(), nw.global_avg_pool(),
                              nw.dense(1.0)], (3, 4, 2)),
    "two-bn-relu-blocks": ([nw.dense(2.0), nw.batch_norm(), nw.activation("relu"), nw.dense(2.0, 0.1),
                            nw.batch_norm(), nw.activation("relu"), nw.dense(1.0)], (6, 4)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MC))
def test_kernels_match_a_wide_network(name):
    """NNGP and NTK within 5 standard errors at width 1024 (R = 8 networks), as
    tests/test_network_mc.py (the finite NTK seeds one output at a time: batch_norm mixes the batch)."""
    layers, shape = MC[name]
    tmc.check_wide_network(nw.serial(*layers), np.random.default_rng(11).standard_normal(shape), name)


@pytest.mark.slow
def test_gradient_explosion_of_batch_norm_relu():
    """MATH.md 5.6: the gradient's second moment grows per layer by ~1.518 at B = 32 (simulated
    there; our wide network, dense -> [batch_norm -> relu -> dense] x 16 at width 1024, 6 draws:
    1.524 +- 0.004), tending to pi / (pi - 1) = 1.467 at large B."""
    g = bnm.gradient_growth(32, depth=20, iters=20)
    assert g == pytest.approx(1.522, abs=0.001)
    assert abs(g - 1.518) < 0.005 and g > np.pi / (np.pi - 1)
