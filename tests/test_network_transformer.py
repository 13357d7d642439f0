"""TP II's transformer (nw.transformer, the tied attention of meanfield/network/attention.py):
the forward recursion and the NTK against MATH.md 5.5's tables written out here with numpy (a
backward-pass formula, independent of the algebra's forward NTK), exact cases, refusals, the
layer contract of tests/test_network.py, and wide random networks (slow)."""

from __future__ import annotations

import numpy as np
import pytest

import test_network as tn
import test_network_mc as tmc
from test_spectra import one_blas_thread  # noqa: F401 - a fixture (threaded BLAS: 10x slower here)
from meanfield import network as nw
from meanfield.errors import DomainError
from meanfield.network.core import initial_state

RNG = np.random.default_rng(21)


# ------------------------------------------------------------------------------------------
# MATH.md 5.5's tables, on (M T) x (M T) matrices (sequence a, token i -> row a T + i)
# ------------------------------------------------------------------------------------------
def _relu_V(C):
    """V_relu and V_relu' (the arc-cosine kernels of degree 1 and 0) of a covariance matrix."""
    s = np.sqrt(np.diag(C))
    c = np.clip(C / np.outer(s, s), -1.0, 1.0)
    np.fill_diagonal(c, 1.0)   # arccos(1 - 1e-16) = 1.5e-8: rounding there would cost 1e-9
    th = np.arccos(c)
    return (np.outer(s, s) * (np.sin(th) + (np.pi - th) * c) / (2 * np.pi),
            (np.pi - th) / (2 * np.pi))


def _erf_V(C):
    """V_erf and V_erf' in closed form (Williams 1997)."""
    d = 1 + 2 * np.diag(C)
    return (2 / np.pi * np.arcsin(2 * C / np.sqrt(np.outer(d, d))),
            4 / np.pi / np.sqrt(np.outer(d, d) - 4 * C * C))


def _softmax_blocks(C, M, T, causal):
    A = np.zeros_like(C)
    for a in range(M):
        L = C[a * T:(a + 1) * T, a * T:(a + 1) * T].copy()
        if causal:
            L[np.triu_indices(T, 1)] = -np.inf
        E = np.exp(L - L.max(axis=1, keepdims=True))
        A[a * T:(a + 1) * T, a * T:(a + 1) * T] = E / E.sum(axis=1, keepdims=True)
    return A


def math_5_5(x, L, sw, su, sv, causal=False, standard=False, V_phi=_relu_V):
    """NNGP and NTK of MATH.md 5.5's transformer: the forward table, the backward table, and
    Theta = sv/T^2 o C^{x^L} + sum_l (su D^k o C^{x^(l-1)} + sw D^g o C^z + sw D^h o V(C^g)),
    i.e. the TP II formula with each weight's term times its variance (raw N(0, 1) parameters,
    the algebra's NTK parametrisation).  ``standard``: lim Theta_SP / n, the TP II formula as it
    stands (no variances) without U^1's term, whose fan-in is the data's (MATH.md 4.2).  Also
    the gradient second moments, per block [D^k, D^y, D^z, D^h, D^x] (token means of each
    sequence's diagonal), in the order of the layers' outputs."""
    M, T, d = x.shape
    F = x.reshape(M * T, d)
    I = np.eye(M * T)
    Cx = F @ F.T / d
    fwd = []
    for _ in range(L):
        Ck = su * Cx
        A = _softmax_blocks(Ck, M, T, causal)
        Cy = (A + I) @ Ck @ (A + I).T
        dz = 1 / np.sqrt(np.diag(Cy))
        Cz = Cy * np.outer(dz, dz)
        Cg = sw * Cz
        V, Vd = V_phi(Cg)
        S = sw * V + Cz
        dx = 1 / np.sqrt(np.diag(S))
        fwd.append((Cx, A, dz, Cz, V, Vd, dx))
        Cx = S * np.outer(dx, dx)

    def pair_sum(X):   # (X o Y)_ab = sum_ij X_aibj Y_aibj, with Y folded into X by the caller
        return X.reshape(M, T, M, T).sum(axis=(1, 3))

    def diag(D):
        return np.diag(D).reshape(M, T).mean(axis=1)

    nngp = sv * pair_sum(Cx) / T ** 2
    cu, cw, cv = (1.0, 1.0, 1.0) if standard else (su, sw, sv)
    ntk = cv * pair_sum(Cx) / T ** 2
    D = np.full((M * T, M * T), sv / T ** 2)
    grads = []
    for l, (Cx_prev, A, dz, Cz, V, Vd, dx) in reversed(list(enumerate(fwd))):
        Dh = D * np.outer(dx, dx)
        Dg = sw * Dh * Vd
        Dz = sw * Dg + Dh
        Dy = Dz * np.outer(dz, dz)
        Dk = (A + I).T @ Dy @ (A + I)
        ntk += pair_sum((0.0 if standard and l == 0 else cu) * Dk * Cx_prev
                        + cw * Dg * Cz + cw * Dh * V)
        grads = [diag(Dk), diag(Dy), diag(Dz), diag(Dh), diag(D)] + grads
        D = su * Dk
    return nngp, ntk, grads


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("act, sw, su, sv", [("relu", 2.0, 1.5, 1.0), ("relu", 1.3, 0.7, 2.5),
                                             ("erf", 1.3, 0.7, 2.5)])
def test_depth_2_matches_math_5_5(act, sw, su, sv, causal):
    x = RNG.standard_normal((3, 4, 5))
    k = nw.transformer(act, 2, sigma_w2=sw, sigma_u2=su, sigma_v2=sv, causal=causal).kernel(x)
    nngp, ntk, _ = math_5_5(x, 2, sw, su, sv, causal, V_phi={"relu": _relu_V, "erf": _erf_V}[act])
    np.testing.assert_allclose(k.nngp, nngp, rtol=1e-12, atol=0)
    np.testing.assert_allclose(k.ntk, ntk, rtol=1e-12, atol=0)


def test_standard_parametrisation_is_the_tp2_formula_without_the_first_u():
    """lim Theta_SP / n: every weight with a width's fan-in contributes D o C with no variance
    (the TP II convention), U^1 (fan-in d) drops out."""
    x = RNG.standard_normal((3, 4, 5))
    net = nw.transformer("relu", 2, sigma_w2=1.3, sigma_u2=0.7, sigma_v2=2.5, parametrization="standard")
    _, ntk, _ = math_5_5(x, 2, 1.3, 0.7, 2.5, standard=True)
    np.testing.assert_allclose(net.kernel(x).ntk, ntk, rtol=1e-12, atol=0)


def test_propagate_gradients_are_the_backward_table():
    """propagate's gradient second moments (G = 1 at the output) at every layer's output are
    MATH.md 5.5's D^k, D^y, D^z, D^h, D^x (token-averaged diagonals), block by block."""
    x = RNG.standard_normal((3, 4, 5))
    p = nw.transformer("relu", 2, sigma_w2=1.3, sigma_u2=0.7, sigma_v2=2.5).propagate(x)
    *_, grads = math_5_5(x, 2, 1.3, 0.7, 2.5)
    assert p.layers[:5] == ("dense", "attention", "layer_norm", "residual", "layer_norm")
    np.testing.assert_allclose(p.gradient[:10], np.array(grads), rtol=1e-12, atol=0)
    np.testing.assert_allclose(p.gradient[10:], [np.full(3, 2.5), np.ones(3)], rtol=1e-15)


def test_per_block_variances():
    """sigma_w2 / sigma_u2 per block: block 1 with (sw, su) = (2, 1.5), block 2 (0.5, 3)."""
    x = RNG.standard_normal((2, 3, 4))
    net = nw.transformer("relu", 2, sigma_w2=[2.0, 0.5], sigma_u2=[1.5, 3.0])
    want = nw.serial(*nw.transformer("relu", 1, sigma_w2=2.0, sigma_u2=1.5).layers[:-2],
                     *nw.transformer("relu", 1, sigma_w2=0.5, sigma_u2=3.0).layers)
    for a, b in zip((net.kernel(x).nngp, net.kernel(x).ntk), (want.kernel(x).nngp, want.kernel(x).ntk)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(DomainError, match="sigma_w2 must be a scalar or a sequence of 2"):
        nw.transformer("relu", 2, sigma_w2=[1.0, 2.0, 3.0])


# ------------------------------------------------------------------------------------------
# the tied attention layer alone
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mech", ["softmax", "identity", "relu", "abs"])
@pytest.mark.parametrize("skip", [False, True])
def test_on_data_the_layer_is_exact(mech, skip):
    """On the data the logits x.x'/C are the input kernel itself, so one finite layer's output
    kernel y.y'/C is the fold's NNGP exactly (the logit scale of apply and fold agree)."""
    x = RNG.standard_normal((3, 4, 6))
    net = nw.serial(nw.attention(mechanism=mech, values="input", skip=skip))
    k = net.kernel(x, ntk=False).nngp
    y = net.sample(8, rng=0).forward(x)
    emp = np.einsum("nsc,mtc->nmst", y, y) / x.shape[-1]
    np.testing.assert_allclose(k, emp, rtol=1e-13, atol=1e-14)


def test_one_position_doubles_the_input():
    """T = 1: the softmax weight is 1, so (A + I) x = 2 x: NNGP and NTK times 4, mean times 2."""
    x = RNG.standard_normal((3, 1, 4)) + 0.5
    base = [nw.dense(1.5, 0.1), nw.activation("relu")]
    a = nw.serial(*base, nw.attention(values="input", skip=True), nw.layer_norm()).kernel(x)
    b = nw.serial(*base, nw.layer_norm()).kernel(x)   # layer_norm is scale-free: the mean matters
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-13)
    st = initial_state(x, "ntk", True, "auto")
    st, _ = nw.serial(*base).fold(st)
    out, _ = nw.attention(values="input", skip=True).fold(st)
    np.testing.assert_allclose(out.K, 4 * st.K, rtol=1e-14)
    np.testing.assert_allclose(out.T, 4 * st.T, rtol=1e-14)
    np.testing.assert_allclose(out.mu, 2 * st.mu, rtol=1e-14)


def test_backward_map_is_the_adjoint_of_the_forward_map():
    x = RNG.standard_normal((2, 4, 3))
    st = initial_state(x, "ntk", False, "auto")
    layer = nw.attention(values="input", skip=True)
    out, back = layer.fold(st)
    G = RNG.standard_normal((2, 4, 4))
    G = G + G.transpose(0, 2, 1)
    lhs = np.einsum("nst,nst->", back(G), st.blocks(st.K))
    rhs = np.einsum("nst,nst->", G, out.blocks(out.K))
    assert lhs == pytest.approx(rhs, rel=1e-13)
    p = nw.transformer("relu", 1, sigma_w2=2.0).propagate(x)
    assert "attention" in p.layers and np.all(np.isfinite(p.gradient))


def test_spec_round_trip_and_params():
    net = nw.transformer("relu", 1, sigma_w2=2.0, sigma_u2=1.5, sigma_v2=0.5)
    spec = nw.to_spec(net)
    assert spec["layers"][1] == {"layer": "attention", "values": "input", "mechanism": "softmax",
                                 "causal": False, "skip": True}
    again = nw.from_spec(spec)
    assert again.to_spec() == net.to_spec()
    x = RNG.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(again.kernel(x).ntk, net.kernel(x).ntk)
    names = [p.name for p in net.params(nw.Shape((3,), 4))]
    assert names == ["0.weight", "3.branch.0.weight", "3.branch.2.weight", "6.weight"]
    assert net.gia_check().holds


@pytest.mark.parametrize("call, message", [
    (lambda: nw.from_spec([{"layer": "attention", "values": "input", "sigma_v2": 1}]),
     "layers[0].sigma_v2: attention with values 'input' has one head and no projections"),
    (lambda: nw.from_spec([{"layer": "attention", "values": "input", "heads": 2}]), "layers[0].heads:"),
    (lambda: nw.from_spec([{"layer": "attention", "values": "input", "scaling": "sqrt"}]),
     "layers[0].scaling: attention with values 'input' has logits x.x'/n"),
    (lambda: nw.from_spec([{"layer": "attention", "values": "keys"}]), "layers[0].values: expected one of"),
    (lambda: nw.from_spec([{"layer": "attention", "skip": True}]),
     "layers[0].skip: only attention with values 'input' has a built-in skip"),
    (lambda: nw.from_spec([{"layer": "attention", "values": "input", "skip": "yes"}]),
     "layers[0].skip: expected true or false"),
    (lambda: nw.from_spec([{"layer": "attention", "sigma_v2": None}]), "layers[0].sigma_v2: expected a number"),
    (lambda: nw.transformer("relu", 1, sigma_w2=1.0).check(RNG.standard_normal((2, 3))),
     "layers[1]: attention needs inputs with positions"),
    (lambda: nw.transformer("relu", 1, sigma_w2=1.0, causal=True).check(RNG.standard_normal((2, 3, 3, 2))),
     "layers[1].causal: a causal mask needs 1-D positions"),
    (lambda: nw.serial(nw.dense(1.0), nw.residual([nw.attention(values="input")])).check(
        RNG.standard_normal((2, 3, 2))), "layers[1].branch: a residual branch must contain a dense"),
])
def test_refusals_are_one_line(call, message):
    with pytest.raises(DomainError) as e:
        call()
    assert message in str(e.value) and "\n" not in str(e.value)


CONTRACT = {
    "tied-softmax-skip": ([nw.dense(1.0), nw.attention(values="input", skip=True), nw.dense(1.0)], (2, 4, 3)),
    "tied-relu-causal": ([nw.dense(1.0), nw.attention(mechanism="relu", values="input", causal=True)], (2, 4, 3)),
    "tied-abs-on-data": ([nw.attention(mechanism="abs", values="input", skip=True), nw.dense(1.0)], (2, 4, 3)),
    "transformer": (list(nw.transformer("relu", 2, sigma_w2=2.0, sigma_u2=1.5).layers), (2, 3, 3)),
}


@pytest.mark.parametrize("name", list(CONTRACT))
def test_vjp_is_the_derivative_of_apply(name):
    """Including the finite-width gradient through the logits x x' / C."""
    tn.check_vjp(*CONTRACT[name])


@pytest.mark.parametrize("name", list(CONTRACT))
def test_empirical_ntk_is_the_parameter_jacobian_gram(name):
    tn.check_ntk_gram(*CONTRACT[name])


# ------------------------------------------------------------------------------------------
# wide random networks (slow)
# ------------------------------------------------------------------------------------------
NET = nw.transformer("relu", 2, sigma_w2=2.0, sigma_u2=1.5, sigma_v2=1.0)


@pytest.mark.slow
@pytest.mark.usefixtures("one_blas_thread")
def test_kernels_match_a_wide_network():
    tmc.check_wide_network(NET, np.random.default_rng(11).standard_normal((3, 4, 3)), "transformer",
                           width=512)


@pytest.mark.slow
@pytest.mark.usefixtures("one_blas_thread")
def test_finite_width_error_falls_like_inverse_sqrt_width():
    """The relative RMS error of one network's empirical NTK against the theory, averaged over 8
    networks, against width 64 .. 1024 (measured -0.53; NTK4A's transformer: -0.52; a wrong
    limit would flatten it)."""
    X = np.random.default_rng(12).standard_normal((5, 4, 3))
    theory = NET.kernel(X).ntk
    scale = np.sqrt(np.mean(theory ** 2))
    widths = (64, 128, 256, 512, 1024)
    errs = []
    for i, w in enumerate(widths):
        _, emp = tmc._empirical(NET, X, w, 8, seed=1000 * (i + 1) + 21)
        errs.append(np.mean([np.sqrt(np.mean((e - theory) ** 2)) / scale for e in emp]))
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    assert -0.7 < slope < -0.3, f"slope {slope:.3f}, errors {errs}"


def test_cli_kernel_of_a_transformer_spec(tmp_path):
    """`meanfield kernel --net` takes the transformer's spec as it is; a bad tied-attention key is
    one line, exit 2, nothing written."""
    import json

    net = nw.transformer("relu", 1, sigma_w2=2.0, sigma_u2=1.5)
    spec = tmp_path / "net.json"
    spec.write_text(json.dumps(nw.to_spec(net)))
    x = RNG.standard_normal((3, 4, 2))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "K.npz"
    res = tn._run("kernel", "--net", spec, "--x", tmp_path / "x.npy", "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    with np.load(out) as z:
        assert np.array_equal(z["ntk"], net.kernel(x).ntk)
    bad = nw.to_spec(net)
    bad["layers"][1]["heads"] = 2
    spec.write_text(json.dumps(bad))
    out.unlink()
    res = tn._run("kernel", "--net", spec, "--x", tmp_path / "x.npy", "--out", out)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "layers[1].heads:" in lines[0], res.stderr
    assert not out.exists()
