"""Attention with 1/sqrt(n) logits and softmax (meanfield/network/attention.py, "Gaussian
logits"; docs/theory.md, "Attention with Gaussian logits"): the maps are expectations over the
logits' Gaussian, computed from fixed-seed antithetic samples with their own standard error.
Checked (1) exactly where they are exact: zero logit variance is the uniform map, one position
is two dense layers, the identity mechanism's deterministic parts are its closed forms, and the
backward map is the adjoint of the NTK's input term sample by sample; (2) against numbers
derived independently here: the first-order expansion in g2, a T = 2 quadrature, the identity
mechanism's closed forms; (3) against wide random networks (the logits' covariance, the NNGP and
NTK, the gradients, the error's width^(-1/2) slope; the heavier ones are slow)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import test_network_mc as tmc
from meanfield import network as nw
from meanfield.network.core import initial_state

at = importlib.import_module("meanfield.network.attention")
RNG = np.random.default_rng(21)


def _hidden_state(X, ntk=False):
    """The state after dense(1.0) on X (a hidden layer's kernel, positions kept)."""
    st, _ = nw.serial(nw.dense(1.0)).fold(initial_state(X, "ntk", ntk, "auto"))
    return st


def _z(a, b, se):
    """The largest |a - b| / se entry by entry (se floored at 1e-12 of the largest |b|)."""
    se = np.maximum(se, 1e-12 * np.abs(b).max())
    return float(np.max(np.abs(a - b) / se))


# ------------------------------------------------------------------------------------------
# exact cases
# ------------------------------------------------------------------------------------------
def test_zero_logit_variance_is_the_uniform_map():
    """sigma_q2 = 0: the logits are 0, the attention uniform; the sqrt-softmax maps equal the
    linear ones with sigma_q2 = 0 (uniform A) to rounding: NNGP, NTK and the gradients."""
    X = RNG.standard_normal((3, 4, 5))
    a = nw.serial(nw.dense(1.0), nw.attention(2, "softmax", "sqrt", 0.0, 1.4, 1.3, 0.9), nw.identity())
    b = nw.serial(nw.dense(1.0), nw.attention(2, "softmax", "linear", 0.0, 1.4, 1.3, 0.9), nw.identity())
    ka, kb = a.kernel(X), b.kernel(X)
    for u, v in ((ka.nngp, kb.nngp), (ka.ntk, kb.ntk)):
        assert np.abs(u - v).max() <= 1e-14 * np.abs(v).max()
    ga, gb = a.propagate(X).gradient, b.propagate(X).gradient
    assert np.abs(ga - gb).max() <= 1e-14 * np.abs(gb).max()
    assert a.layers[1].mc_error["nngp"] < 1e-15


@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_one_position_is_two_dense_layers(param):
    """T = 1: the softmax weight is 1 and its Jacobian 0, so every logit term vanishes."""
    x = RNG.standard_normal((4, 1, 3))
    pre = [nw.dense(1.5, 0.1), nw.activation("relu")]
    a = nw.serial(*pre, nw.attention(3, "softmax", "sqrt", 1.3, 0.8, 1.7, 0.6), parametrization=param).kernel(x)
    b = nw.serial(*pre, nw.dense(1.7), nw.dense(0.6), parametrization=param).kernel(x)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-13)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-13)


@pytest.mark.parametrize("mech, causal", [("softmax", False), ("softmax", True), ("identity", False),
                                          ("identity", True)])
def test_backward_is_the_adjoint_of_the_ntk_input_term(mech, causal):
    """Per input, <back(G), T_nn> = <G, dT_nn>, dT = T_out(T) - T_out(0) the NTK's input term
    (both are E[J . J] over the same logit samples, so it holds sample by sample; the identity
    mechanism's maps are closed forms)."""
    X = RNG.standard_normal((2, 4, 3))
    st = _hidden_state(X, ntk=True)
    N, P = 2, 4
    T = RNG.standard_normal((N * P, N * P))
    T = (T @ T.T / (N * P)).reshape(st.K.shape)
    layer = nw.attention(2, mech, "sqrt", 1.4, 1.1, 1.3, 0.9, causal=causal)
    out_t, back = layer.fold(st.evolve(T=T))
    out_0, _ = layer.fold(st.evolve(T=np.zeros_like(T)))
    dT = out_t.blocks(out_t.T - out_0.T)
    G = RNG.standard_normal((N, P, P))
    G = G @ np.swapaxes(G, 1, 2)
    lhs = np.einsum("nst,nst->", back(G), st.blocks(T))
    assert lhs == pytest.approx(np.einsum("nst,nst->", G, dT), rel=1e-12)


def test_contractions_against_explicit_jacobians(monkeypatch):
    """The batched Phi(X, Y) and backward contractions against loops over explicit softmax
    Jacobians J_s = diag(a_s) - a_s a_s' on 5 random logit samples (1e-13), and the softmax's
    shared-intermediate forward path against them (1e-12)."""
    N, P, b = 2, 3, 5
    X = RNG.standard_normal((N * P, N * P))
    X4 = (X @ X.T).reshape(N, P, N, P)
    Y = RNG.standard_normal((N * P, N * P))
    Y4 = (Y @ Y.T).reshape(N, P, N, P)
    L = RNG.standard_normal((b, N, P, P))
    A, D, Pm = at._jacobian(L, "softmax", None)
    J = np.array([[[np.diag(a) - np.outer(a, a) for a in A[i, n]] for n in range(N)] for i in range(b)])
    for Xa, Ya in ((X4, Y4), (X4, X4)):
        ref = np.zeros((N, P, N, P))
        for i, n, m, s, v in np.ndindex(b, N, N, P, P):
            ref[n, s, m, v] += np.sum(Xa[n, :, m, :] * (J[i, n, s] @ Ya[n, :, m, :] @ J[i, m, v].T))
        np.testing.assert_allclose(at._phi(D, Pm, Xa, Ya), ref, rtol=1e-13, atol=1e-13 * np.abs(ref).max())
    # the forward maps' shared-intermediate path for the softmax
    fast = at._softmax_parts(A, X4, Y4)
    for key, want in (("AKA", np.einsum("inst,ntmu,imvu->nsmv", A, X4, A)),
                      ("ATA", np.einsum("inst,ntmu,imvu->nsmv", A, Y4, A)),
                      ("PKK", at._phi(D, Pm, X4, X4)), ("PKT", at._phi(D, Pm, X4, Y4))):
        np.testing.assert_allclose(fast[key], want, rtol=1e-12, atol=1e-13 * np.abs(want).max())
    G = RNG.standard_normal((N, P, P))
    G = G + np.swapaxes(G, 1, 2)
    Kn = np.array([X4[n, :, n, :] for n in range(N)])
    ref = np.zeros((N, P, P))
    for i, n in np.ndindex(b, N):
        Jn = J[i, n]
        phi = np.array([[np.sum(Kn[n] * (Jn[s] @ Kn[n] @ Jn[v].T)) for v in range(P)] for s in range(P)])
        psi = sum(G[n][s, v] * Kn[n][s, v] * (Jn[s] @ Kn[n] @ Jn[v].T) for s in range(P) for v in range(P))
        ref[n] += (1.3 * A[i, n].T @ G[n] @ A[i, n] + 1.3 * 0.7 * (G[n] * phi + psi)) / b
    monkeypatch.setattr(at, "_logit_batches", lambda *a: iter([L]))
    got = at.gaussian_logit_backward(X4, G, 0.7, 1.3)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13 * np.abs(ref).max())


def test_overflowing_input_kernel_is_one_line():
    from meanfield.errors import DomainError

    net = nw.serial(*[nw.dense(1e30) for _ in range(12)], nw.attention(2, "softmax", "sqrt"))
    with pytest.raises(DomainError) as e:
        net.kernel(RNG.standard_normal((2, 3, 4)))
    assert "attention: its input kernel overflows" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("mech", ["softmax", "identity"])
def test_standard_parametrisation_divides_each_weight_term_by_its_variance(mech):
    """With all four variances s, after a hidden layer, the standard parametrisation's weight
    terms are the NTK parametrisation's over s (§A4.2), the input's NTK term the same in both:
    T_ntk(T) - T_std(T) = (1 - 1/s) T_ntk(0), T_ntk(0) being the weight terms alone."""
    X = RNG.standard_normal((2, 4, 3))
    st = _hidden_state(X, ntk=True)
    v = 1.7
    layer = nw.attention(2, mech, "sqrt", v, v, v, v)
    t_ntk = layer.fold(st)[0].T
    t_std = layer.fold(st.evolve(param="standard"))[0].T
    w = layer.fold(st.evolve(T=np.zeros_like(st.T)))[0].T
    np.testing.assert_allclose(t_ntk - t_std, (1 - 1 / v) * w, rtol=1e-12, atol=1e-13 * np.abs(w).max())


# ------------------------------------------------------------------------------------------
# against independently derived numbers
# ------------------------------------------------------------------------------------------
def test_small_logit_variance_is_the_first_order_expansion():
    """softmax(l) = (1 + c + (c^2 - mean c^2)/2)/P + O(l^3), c the centred logits: to first order in
    g2, E[A^n_st A^m_s't'] = (1 + E c c' + E(c^2 - mean c^2)/2 + E(c'^2 - mean c'^2)/2) / P^2, with
    E c^n_st c^m_s't' = g2 K[ns, ms'] (C K^nm C)[t, t'] (C the centring matrix).  Antithetic pairs
    cancel the odd orders, so the samples' error is O(g2) and the remainder O(g2^2)."""
    X = RNG.standard_normal((3, 4, 5))
    st = _hidden_state(X)
    N, P = 3, 4
    K4 = st.K.reshape(N, P, N, P)
    g2 = 1e-4
    C = np.eye(P) - 1.0 / P
    Kc = np.einsum("tu,numv,vw->ntmw", C, K4, C)
    Kd = np.einsum("nsns->ns", K4)                       # K[ns, ns]
    Kcd = np.einsum("ntnt->nt", Kc)                      # (C K^nn C)[t, t]
    dd = Kcd - Kcd.mean(axis=1, keepdims=True)
    # d/dg2 of E[A^n_st A^m_s't'] P^2
    dE = (np.einsum("nsmv,ntmu->nstmvu", K4, Kc)
          + 0.5 * (Kd[:, :, None, None, None, None] * dd[:, None, :, None, None, None])
          + 0.5 * (Kd[None, None, None, :, :, None] * dd[None, None, None, :, None, :]))
    want1 = np.einsum("nstmvu,ntmu->nsmv", dE, K4) / P ** 2
    m = at.gaussian_logit_moments(K4, None, g2)
    aka, se = m["AKA"]
    uniform = np.einsum("ntmu->nm", K4)[:, None, :, None] * np.ones((N, P, N, P)) / P ** 2
    assert _z((aka - uniform) / g2, want1, se / g2 + 10 * g2 * np.abs(K4).max() ** 3) < 5
    # the first-order term is resolved: its size over the samples' error
    assert np.abs(want1).max() > 20 * (se / g2).max()     # 37x measured


def test_two_positions_against_quadrature():
    """T = 2, one input: A_s = (sigmoid(D_s), 1 - sigmoid(D_s)), D_s = L_s1 - L_s2 jointly
    Gaussian with Cov(D_s, D_s') = g2 K_ss' (K_11 - 2 K_12 + K_22).  The diagonal entries are a
    1-D integral (Gauss-Hermite, 120 nodes, agreeing with 160 to 1e-12), the off-diagonal one
    a 2-D Gauss-Hermite sum (120^2 nodes); the expectation is within 4 standard errors, and that error is < 0.3 %."""
    def expit(a):
        return 1.0 / (1.0 + np.exp(-a))

    K = np.array([[1.3, 0.4], [0.4, 0.8]])
    g2 = 0.9
    aka, se = at.gaussian_logit_moments(K.reshape(1, 2, 1, 2), None, g2)["AKA"]
    aka, se = aka.reshape(2, 2), se.reshape(2, 2)
    kap = K[0, 0] - 2 * K[0, 1] + K[1, 1]

    def f(a, b):
        return np.array([expit(a), expit(-a)]) @ K @ np.array([expit(b), expit(-b)])

    ref = np.zeros((2, 2))
    z, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / np.sqrt(2 * np.pi)
    z2, w2 = np.polynomial.hermite_e.hermegauss(160)
    w2 = w2 / np.sqrt(2 * np.pi)
    for s in range(2):
        sd = np.sqrt(g2 * K[s, s] * kap)
        ref[s, s] = sum(wi * f(sd * zi, sd * zi) for zi, wi in zip(z, w))
        # converged: 160 nodes agree with 120
        assert sum(wi * f(sd * zi, sd * zi) for zi, wi in zip(z2, w2)) == pytest.approx(ref[s, s], rel=1e-12)
    Lc = np.linalg.cholesky(g2 * kap * K)
    Z = np.stack(np.meshgrid(z, z, indexing="ij")).reshape(2, -1)
    a, b = Lc @ Z
    sa, sb = np.stack([expit(a), expit(-a)]), np.stack([expit(b), expit(-b)])
    ref[0, 1] = ref[1, 0] = float(np.outer(w, w).ravel() @ np.einsum("ti,tu,ui->i", sa, K, sb))
    assert _z(aka, ref, se) < 4
    assert (se / ref).max() < 3e-3


def test_identity_mechanism_through_the_expectations():
    """The sampling machinery with the identity mechanism against its closed forms: the Jacobian
    parts are deterministic there (E Phi(K, K) = S, E Phi(K, T) = R exactly), E[L K L'] = g2 K o S
    within 5 standard errors, and the backward map within 5 of c2 g2 (G o S + 2 K o M'(G o K)M)
    (measured 2.6, 2.8, 2.9)."""
    X = RNG.standard_normal((2, 3, 4))
    st = _hidden_state(X)
    N, P = 2, 3
    K4 = st.K.reshape(N, P, N, P)
    T = RNG.standard_normal((N * P, N * P))
    T4 = (T @ T.T / (N * P)).reshape(N, P, N, P)
    g2, c2 = 0.7, 1.3
    m = at.gaussian_logit_moments(K4, T4, g2, "identity")
    S = np.einsum("ntmu->nm", K4 * K4)[:, None, :, None]
    R = np.einsum("ntmu->nm", K4 * T4)[:, None, :, None]
    np.testing.assert_allclose(m["PKK"][0], np.broadcast_to(S, K4.shape), rtol=1e-13)
    np.testing.assert_allclose(m["PKT"][0], np.broadcast_to(R, K4.shape), rtol=1e-13)
    assert _z(m["AKA"][0], g2 * K4 * S, m["AKA"][1]) < 5
    assert _z(m["ATA"][0], g2 * K4 * R, m["ATA"][1]) < 5
    G = RNG.standard_normal((N, P, P))
    G = G @ np.swapaxes(G, 1, 2)
    got, se = at.gaussian_logit_backward(K4, G, g2, c2, "identity")
    exact_layer = nw.attention(1, "identity", "sqrt", g2, 1.0, c2, 1.0)
    _, back = exact_layer.fold(st)
    assert _z(got, back(G), se) < 5


# ------------------------------------------------------------------------------------------
# against wide random networks
# ------------------------------------------------------------------------------------------
def test_logit_covariance_of_a_wide_layer():
    """The [D] claim itself: a drawn layer's logits q k' sqrt(g2) / (C sqrt(n)) over 8192 heads
    of n = 64 have second moments g2 K[ns, ms'] K[nt, mt'] (K = x x'/C), within 5 standard
    errors over the heads (measured 3.3); a logit variance off by 20 % is outside (15)."""
    X = RNG.standard_normal((2, 3, 4))
    N, P, C = 2, 3, 4
    layer = nw.attention(8192, "softmax", "sqrt", 1.3, 0.7)
    g = np.random.default_rng(5)   # raw N(0, 1) projections, as the layer's init draws them
    q = np.einsum("npc,hck->hnpk", X, g.standard_normal((8192, C, 64)))
    k = np.einsum("npc,hck->hnpk", X, g.standard_normal((8192, C, 64)))
    L = layer._alpha(C, 64) * np.einsum("hnsk,hntk->hnst", q, k).reshape(8192, -1)
    emp = np.einsum("ha,hb->hab", L, L)
    K4 = np.einsum("nsc,mtc->nsmt", X, X) / C
    want = 1.3 * 0.7 * np.einsum("nsmv,ntmu->nstmvu", K4, K4).reshape(N * P * P, N * P * P)
    se = emp.std(axis=0, ddof=1) / np.sqrt(8192)
    assert _z(emp.mean(axis=0), want, se) < 5
    assert _z(emp.mean(axis=0), 1.2 * want, se) > 5


@pytest.mark.slow
def test_kernels_match_a_wide_network():
    """NNGP and NTK within 5 standard errors of 8 networks of width 1024 (32 heads of 32), on the
    data (so the input kernel is exact), per position pair; the uniform map (the zero-query
    reading) is far outside (measured: max |z| 2.8 and 2.5 against 14 and 30), and so is the NTK
    with the W_Q, W_K terms (here 2 c2 g2 K o E Phi(K, K), the NTK less 2 NNGP) halved (|z| 8.2).
    The input's NTK terms are the adjoint of the backward map (exact test above), which the
    gradient test below checks; after a dense layer and causal (measured once, 14 s: too slow
    for the suite) max |z| 3.1 and 2.2, the uniform map 11 and 16, the NTK without the
    logit-gradient terms (c2 E[A T A'] + 2 NNGP) 10."""
    X = np.random.default_rng(11).standard_normal((3, 4, 3))
    net = nw.serial(nw.attention(32, "softmax", "sqrt", 1.2, 0.9, 1.1, 1.3))
    uniform = nw.serial(nw.attention(32, "softmax", "linear", 0.0, 0.9, 1.1, 1.3))
    k, ku = net.kernel(X), uniform.kernel(X)
    e_nngp, e_ntk = tmc._empirical(net, X, 1024, 8, 100)
    for theory, other, emp in ((k.nngp, ku.nngp, e_nngp), (k.ntk, ku.ntk, e_ntk)):
        se = emp.std(axis=0, ddof=1) / np.sqrt(len(emp))
        assert _z(emp.mean(axis=0), theory, se) < 5
        assert _z(emp.mean(axis=0), other, se) > 10
    se = e_ntk.std(axis=0, ddof=1) / np.sqrt(len(e_ntk))
    assert _z(e_ntk.mean(axis=0), k.ntk - (k.ntk - 2 * k.nngp) / 2, se) > 5


@pytest.mark.slow
def test_gradients_match_a_wide_network():
    """The backward map (values, queries, keys) against the vjp of 8 networks of width 1024 (32
    heads) at the attention's input, an iid output gradient (measured max |z| 0.75); the values'
    term alone is outside (11.9)."""
    X = np.random.default_rng(3).standard_normal((3, 4, 3))
    att = nw.attention(32, "softmax", "sqrt", 1.5, 1.2, 1.1, 1.3)
    net = nw.serial(nw.dense(1.0), att)
    pred = net.propagate(X).gradient[0]
    meas = []
    for r in range(8):
        f = net.sample(1024, rng=50 + r)
        f.forward(X)
        y, cache = net.apply(f.params, X)
        gy = np.random.default_rng(900 + r).standard_normal(y.shape)
        meas.append((att.vjp(f.params["layers"][1], cache[1], gy) ** 2).mean(axis=(1, 2)))
    meas = np.array(meas)
    se = meas.std(axis=0, ddof=1) / np.sqrt(len(meas))
    assert _z(meas.mean(axis=0), pred, se) < 5
    st = _hidden_state(X)
    K4 = st.K.reshape(3, 4, 3, 4)
    G = np.broadcast_to(np.eye(4), (3, 4, 4))
    values = np.zeros((3, 4, 4))
    for L in at._logit_batches(K4, 1.5 * 1.2, at.SQRT_SAMPLES, at._SQRT_SEED):
        A = at._mechanism(L, "softmax", None)
        values += (np.swapaxes(A, -1, -2) @ G @ A).sum(axis=0) / at.SQRT_SAMPLES
    values = 1.1 * 1.3 * np.einsum("npp->n", values) / 4
    assert _z(meas.mean(axis=0), values, se) > 5


@pytest.mark.slow
def test_error_falls_like_inverse_sqrt_heads():
    """One network's relative RMS NNGP error, 6 networks per width, at n = 32 per head and
    4, 16, 64 heads (width 128 .. 2048): slope -0.51 measured in log width.  The logits of one
    head stay random at any n, so the error falls with the heads, not with n: at fixed heads it
    would level off."""
    X = np.random.default_rng(12).standard_normal((3, 4, 3))
    errs, widths = [], []
    for H in (4, 16, 64):
        net = nw.serial(nw.attention(H, "softmax", "sqrt", 1.2, 0.9, 1.1, 1.3))
        theory = net.kernel(X, ntk=False).nngp
        scale = np.sqrt(np.mean(theory ** 2))
        e = [np.sqrt(np.mean((net.sample(32 * H, rng=1000 * H + r).empirical_nngp(X) - theory) ** 2)) / scale
             for r in range(6)]
        errs.append(np.mean(e))
        widths.append(32 * H)
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    assert -0.7 < slope < -0.3, f"slope {slope:.3f}, errors {errs}"
