"""Tests of meanfield.kernels: infinite-width NNGP / NTK (MATH.md 4.1-4.3).

Expected values are computed here, independently of the package: mpmath recursions on the
closed forms of MATH.md 3.1 (arc-cosine) and 3.2 (Williams' arcsine) for REFERENCE_VALUES.md
table D (the table itself only as a cross-check at its printed precision), the exact relu
diagonal 2(L + 1), and the recursion of MATH.md 4.1 driven by ``maps.iterate`` for the
one-code-path check.  Finite-width checks (marked slow) use meanfield.simulate.
"""

from __future__ import annotations

import json
import math
import tracemalloc

import mpmath as mp
import numpy as np
import pytest

from meanfield import gaussian, get_activation, maps
from meanfield.errors import DomainError
from meanfield.kernels import KernelResult, clear_cache, kernel, kernel_trace
from meanfield.kernels._tables import TableSet, TabulatedMaps, homogeneity_degree

mp.mp.dps = 30


def pair_inputs(length: float = 1.0, corr: float = 0.5) -> np.ndarray:
    """Two inputs with x.x/d = length and x.x'/d = length * corr (d = 2)."""
    return np.sqrt(2.0 * length) * np.array([[1.0, 0.0], [corr, math.sqrt(1.0 - corr * corr)]])


def sphere(n: int, d: int, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X * (math.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True))


# ------------------------------------------------------------------------------------------
# independent mpmath recursions (MATH.md 3.1, 3.2, 4.1, 4.3)
# ------------------------------------------------------------------------------------------

def mp_moments(act: str, q1, q2, q12):
    """E[phi phi], E[phi' phi'] in closed form (relu: arc-cosine; erf: arcsine)."""
    if act == "relu":
        c = q12 / mp.sqrt(q1 * q2)
        th = mp.acos(max(min(c, 1), -1))
        return (mp.sqrt(q1 * q2) * (mp.sin(th) + (mp.pi - th) * mp.cos(th)) / (2 * mp.pi),
                (mp.pi - th) / (2 * mp.pi))
    den = (1 + 2 * q1) * (1 + 2 * q2)
    return 2 / mp.pi * mp.asin(2 * q12 / mp.sqrt(den)), 4 / mp.pi / mp.sqrt(den - 4 * q12 ** 2)


def mp_mlp(act: str, sw, sb, L: int, g11=1, g22=1, g12=mp.mpf("0.5")):
    sw, sb = mp.mpf(sw), mp.mpf(sb)
    S11, S22, S12 = sw * g11 + sb, sw * g22 + sb, sw * g12 + sb
    T11, T12 = S11, S12
    for _ in range(L):
        e11, d11 = mp_moments(act, S11, S11, S11)
        e22, _ = mp_moments(act, S22, S22, S22)
        e12, d12 = mp_moments(act, S11, S22, S12)
        S11, S22, S12 = sw * e11 + sb, sw * e22 + sb, sw * e12 + sb
        T11, T12 = T11 * sw * d11 + S11, T12 * sw * d12 + S12
    return float(S11), float(S12), float(T11), float(T12)


def mp_resnet(act: str, sw, sb, sv, sa, L: int, g12=mp.mpf("0.5")):
    sw, sb, sv, sa = (mp.mpf(x) for x in (sw, sb, sv, sa))
    P11, P12 = mp.mpf(1), g12
    T11, T12 = P11, P12
    for _ in range(L):
        Q11, Q12 = sw * P11 + sb, sw * P12 + sb
        H11, H12 = sw * T11 + Q11, sw * T12 + Q12
        e11, d11 = mp_moments(act, Q11, Q11, Q11)
        e12, d12 = mp_moments(act, Q11, Q11, Q12)
        P11, P12 = P11 + sv * e11 + sa, P12 + sv * e12 + sa
        T11 = T11 + sv * d11 * H11 + sv * e11 + sa
        T12 = T12 + sv * d12 * H12 + sv * e12 + sa
    return float(P11), float(P12), float(T11 + P11), float(T12 + P12)


# REFERENCE_VALUES.md table D, as printed (cross-check only)
TABLE_D_MLP = [
    ("relu", 2, 0, 1, 2, 1.217996, 4, 1.884662),
    ("relu", 2, 0, 2, 2, 1.367811, 6, 2.702959),
    ("relu", 2, 0, 3, 2, 1.476256, 8, 3.475689),
    ("relu", 2, 0.1, 1, 2.2, 1.412449, 4.3, 2.155487),
    ("relu", 2, 0.1, 2, 2.3, 1.656549, 6.6, 3.212604),
    ("relu", 2, 0.1, 3, 2.4, 1.860183, 9.0, 4.288809),
    ("erf", 1.5, 0.2, 1, 1.043324, 0.626383, 2.205851, 1.083561),
    ("erf", 1.5, 0.2, 2, 0.908895, 0.599091, 2.761121, 1.332681),
    ("erf", 1.5, 0.2, 3, 0.869568, 0.619410, 3.318827, 1.617402),
]
TABLE_D_RES = [(1, 1.45, 0.802005, 3.675, 1.875320), (4, 4.089355, 2.656909, 16.679150, 8.408394)]


@pytest.mark.parametrize("row", TABLE_D_MLP, ids=lambda r: f"{r[0]}-{r[1]}-{r[2]}-L{r[3]}")
def test_table_d_mlp(row):
    act, sw, sb, L, *printed = row
    r = kernel("mlp", act, pair_inputs(), depth=L, sigma_w2=sw, sigma_b2=sb)
    got = [r.nngp[0, 0], r.nngp[0, 1], r.ntk[0, 0], r.ntk[0, 1]]
    exact = mp_mlp(act, sw, sb, L)
    np.testing.assert_allclose(got, exact, rtol=1e-13, atol=0)
    np.testing.assert_allclose(got, printed, rtol=0, atol=6e-7)  # the table's 6 decimals
    assert r.nngp[1, 1] == r.nngp[0, 0] and r.ntk[1, 0] == r.ntk[0, 1]


@pytest.mark.parametrize("row", TABLE_D_RES, ids=lambda r: f"L{r[0]}")
def test_table_d_resnet(row):
    L, *printed = row
    r = kernel("resnet", "relu", pair_inputs(), depth=L, sigma_w2=1.5, sigma_b2=0.1,
               sigma_v2=0.5, sigma_a2=0.05)
    got = [r.nngp[0, 0], r.nngp[0, 1], r.ntk[0, 0], r.ntk[0, 1]]
    np.testing.assert_allclose(got, mp_resnet("relu", 1.5, 0.1, 0.5, 0.05, L), rtol=1e-13)
    np.testing.assert_allclose(got, printed, rtol=0, atol=6e-7)


def test_relu_diagonal_ntk_is_2_L_plus_1():
    """ReLU at (2, 0), x.x/d = 1: Sigma^l = 2, Sigma_dot = 1, so Theta^{L+1} = 2 (L + 1)."""
    X = sphere(5, 7)
    for L in (1, 2, 5, 17, 40):
        r = kernel("mlp", "relu", X, depth=L, sigma_w2=2.0, sigma_b2=0.0)
        np.testing.assert_allclose(np.diag(r.ntk), 2.0 * (L + 1), rtol=1e-14)
        np.testing.assert_allclose(np.diag(r.nngp), 2.0, rtol=1e-14)
        np.testing.assert_allclose(r.ntk_diag, 2.0 * (L + 1), rtol=1e-14)


# ------------------------------------------------------------------------------------------
# one code path: a pair of inputs == maps.iterate
# ------------------------------------------------------------------------------------------

def iterate_prediction(act, sw, sb, L, length, corr):
    """NNGP and NTK of two equal-length inputs from maps.iterate's (q, c) trajectory, with the
    NTK recursion of MATH.md 4.1 on top (chi_c = sigma_w2 E[phi' phi'], chi_1 on the diagonal)."""
    q0 = sw * length + sb
    c0 = (sw * length * corr + sb) / q0
    tr = maps.iterate(act, sw, sb, L, q0=q0, c0=c0)
    t_d, t_o = q0, q0 * c0
    for l in range(L):
        q, c = tr.q[l], tr.c[l]
        t_d = t_d * float(maps.chi_1(act, q, sw)) + tr.q[l + 1]
        t_o = t_o * float(maps.chi_c(act, q, c, sw)) + tr.q[l + 1] * tr.c[l + 1]
    return tr.q[L], tr.q[L] * tr.c[L], t_d, t_o


@pytest.mark.parametrize("act,sw,sb", [("relu", 2.0, 0.1), ("erf", 1.5, 0.2), ("tanh", 1.7, 0.05),
                                       ("softplus", 1.2, 0.1), ("gelu", 1.8, 0.0),
                                       ("leaky_relu:0.2", 1.5, 0.3)])
@pytest.mark.parametrize("method", ["auto", "table"])
def test_pair_equals_iterate(act, sw, sb, method):
    L, length, corr = 4, 1.3, 0.37
    r = kernel("mlp", act, pair_inputs(length, corr), depth=L, sigma_w2=sw, sigma_b2=sb,
               method=method)
    exp = iterate_prediction(act, sw, sb, L, length, corr)
    got = [r.nngp[0, 0], r.nngp[0, 1], r.ntk[0, 0], r.ntk[0, 1]]
    np.testing.assert_allclose(got, exp, rtol=1e-10 if method == "table" else 1e-12)


# ------------------------------------------------------------------------------------------
# structure: symmetry, PSD, blocks, X2, dtype, memory, progress
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["mlp", "resnet", "resnet-reduced"])
@pytest.mark.parametrize("act", ["relu", "erf", "tanh"])
def test_symmetric_psd(arch, act):
    n = 10 if act == "tanh" else 40  # tanh with unequal lengths: 2-D quadrature per entry
    X = np.random.default_rng(3).standard_normal((n, 6)) * np.linspace(0.5, 2.0, n)[:, None]
    r = kernel(arch, act, X, depth=2, sigma_w2=1.6, sigma_b2=0.1, sigma_v2=0.7, sigma_a2=0.05)
    for K in (r.nngp, r.ntk):
        assert np.array_equal(K, K.T)
        ev = np.linalg.eigvalsh(K)
        assert ev[0] >= -1e-12 * ev[-1]
    np.testing.assert_array_equal(np.diag(r.nngp), r.nngp_diag)
    np.testing.assert_array_equal(np.diag(r.ntk), r.ntk_diag)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_blocks_workers_and_x2(act):
    X = sphere(37, 5, seed=1)
    full = kernel("mlp", act, X, depth=3, sigma_w2=1.8, sigma_b2=0.1, block_rows=37, workers=1,
                  method="table")
    for br, w in ((1, 1), (7, 1), (10, 2), (None, None)):
        r = kernel("mlp", act, X, depth=3, sigma_w2=1.8, sigma_b2=0.1, block_rows=br, workers=w,
                   method="table")
        # Tiles change the BLAS summation order, whose rounding scales with the diagonal
        # (|K_ij| <= sqrt(K_ii K_jj)), not with a near-zero entry: 1e-13 of the largest entry.
        np.testing.assert_allclose(r.ntk, full.ntk, rtol=1e-13, atol=1e-13 * np.abs(full.ntk).max())
        np.testing.assert_allclose(r.nngp, full.nngp, rtol=1e-13, atol=1e-13 * np.abs(full.nngp).max())
    cross = kernel("mlp", act, X[:12], X[20:], depth=3, sigma_w2=1.8, sigma_b2=0.1,
                   block_rows=5, method="table")
    np.testing.assert_allclose(cross.ntk, full.ntk[:12, 20:], rtol=1e-12)
    np.testing.assert_allclose(cross.nngp, full.nngp[:12, 20:], rtol=1e-12)
    np.testing.assert_allclose(cross.ntk_diag2, np.diag(full.ntk)[20:], rtol=1e-13)
    assert cross.ntk_condition_number is None and not cross.symmetric


@pytest.mark.parametrize("arch,act,par", [("mlp", "relu", "ntk"), ("mlp", "erf", "standard"),
                                          ("mlp", "tanh", "ntk"), ("resnet", "relu", "ntk"),
                                          ("resnet", "tanh", "standard"),
                                          ("resnet-reduced", "erf", "ntk")])
def test_whole_network_table_equals_layer_by_layer(arch, act, par):
    """Inputs of one length: the whole-network table in c0 against the per-layer recursion."""
    X = sphere(30, 5, seed=4)
    X2 = sphere(7, 5, seed=5)
    kw = dict(depth=4, sigma_w2=1.7, sigma_b2=0.1, sigma_v2=0.6, sigma_a2=0.05, parametrization=par)
    ref_m = "direct" if act != "tanh" else "table"
    for Y in (None, X2):
        w = kernel(arch, act, X, Y, method="whole", **kw)
        r = kernel(arch, act, X, Y, method=ref_m, **kw)
        np.testing.assert_allclose(w.ntk, r.ntk, rtol=1e-12, atol=1e-12 * np.abs(r.ntk).max())
        np.testing.assert_allclose(w.nngp, r.nngp, rtol=1e-12, atol=1e-12 * np.abs(r.nngp).max())
        assert w.table_error < 1e-12
    with pytest.raises(DomainError, match="one length"):
        kernel(arch, act, X * np.linspace(1, 2, 30)[:, None], method="whole", **kw)


def test_float32():
    X = sphere(30, 4)
    r64 = kernel("mlp", "erf", X, depth=3, sigma_w2=1.5, sigma_b2=0.2)
    r32 = kernel("mlp", "erf", X, depth=3, sigma_w2=1.5, sigma_b2=0.2, dtype="float32")
    assert r32.nngp.dtype == np.float32 and r32.ntk.dtype == np.float32 and r32.dtype == "float32"
    np.testing.assert_allclose(r32.ntk, r64.ntk, rtol=2e-7)
    assert r64.ntk.dtype == np.float64


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_peak_memory_within_three_times_output(dtype):
    X = sphere(1200, 16, seed=2)
    kernel("mlp", "relu", X[:300], depth=2, sigma_w2=2.0, sigma_b2=0.1)  # warm caches
    tracemalloc.start()
    r = kernel("mlp", "relu", X, depth=3, sigma_w2=2.0, sigma_b2=0.1, dtype=dtype, workers=1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out = r.nngp.nbytes + r.ntk.nbytes
    assert peak <= 3.0 * out, (peak / out)


def test_progress_callback():
    calls = []
    X = sphere(50, 3)
    kernel("mlp", "relu", X, depth=2, sigma_w2=2.0, sigma_b2=0.0, block_rows=8,
           progress=lambda done, total: calls.append((done, total)))
    assert len(calls) == 7 * 8 // 2  # one call per tile on or above the diagonal: 7 x 7 tiles of 8
    dones = [c[0] for c in calls]
    assert dones == sorted(dones) and calls[-1] == (50 * 51 // 2, 50 * 51 // 2)


def test_per_layer_variances_and_diagonals():
    X = sphere(6, 3)
    a = kernel("mlp", "tanh", X, depth=3, sigma_w2=1.5, sigma_b2=0.1, diagonals=True)
    b = kernel("mlp", "tanh", X, depth=3, sigma_w2=[1.5] * 4, sigma_b2=(0.1,) * 4)
    np.testing.assert_array_equal(a.ntk, b.ntk)
    assert a.layers.nngp.shape == (4, 6) and a.layers.q.shape == (3, 6)
    np.testing.assert_array_equal(a.layers.nngp[-1], np.diag(a.nngp))
    # the diagonal is the length map q^{l+1} = sigma_w2 V(q^l) + sigma_b2 (MATH.md 1.2)
    tr = maps.iterate("tanh", 1.5, 0.1, 3, q0=1.6, c0=0.3)
    np.testing.assert_allclose(a.layers.nngp[:, 0], tr.q, rtol=1e-13)
    c = kernel("mlp", "relu", X, depth=2, sigma_w2=[2.0, 1.0, 0.5], sigma_b2=[0.0, 0.1, 0.2])
    # by hand: q1 = 2, q2 = 1 * 1 + 0.1, q3 = 0.5 * 0.55 + 0.2
    np.testing.assert_allclose(np.diag(c.nngp), 0.5 * 1.1 / 2 + 0.2, rtol=1e-14)


def test_unequal_lengths_tables_match_direct():
    """Inputs of different lengths: the tensor tables in (log q1, log q2) against the direct
    2-D quadrature of every entry."""
    rng = np.random.default_rng(5)
    X = sphere(6, 4) * rng.uniform(0.97, 1.03, 6)[:, None]
    t = kernel("mlp", "tanh", X, depth=1, sigma_w2=1.7, sigma_b2=0.05, method="table")
    d = kernel("mlp", "tanh", X, depth=1, sigma_w2=1.7, sigma_b2=0.05, method="direct")
    np.testing.assert_allclose(t.ntk, d.ntk, rtol=1e-9)
    np.testing.assert_allclose(t.nngp, d.nngp, rtol=1e-9)
    assert t.table_error is not None and t.table_error < 1e-9


def test_table_accuracy_against_high_order_quadrature():
    act = get_activation("tanh")
    for q in (0.05, 1.0, 8.0):
        ts = TableSet(act, np.array([q]), np.array([q]))
        c = np.array([-0.95, -0.3, 0.0, 0.41, 0.9, 0.999, 1 - 1e-9])
        g, dl = ts.locate(c)
        w, d = ts.eval(0, g, dl, c)
        w_ref = gaussian.expect2(act.fn, act.fn, q, q, c, order=20)
        d_ref = gaussian.expect2(act.d1, act.d1, q, q, c, order=20)
        np.testing.assert_allclose(w, w_ref, rtol=0, atol=5e-13)
        np.testing.assert_allclose(d, d_ref, rtol=0, atol=5e-13)


def test_zero_input_row():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.6, -0.8]])
    for act in ("tanh", "relu"):
        for method in ("direct", "table"):
            r = kernel("mlp", act, X, depth=2, sigma_w2=1.5, sigma_b2=0.0, method=method)
            assert np.all(np.isfinite(r.ntk))
            assert r.nngp[0, 0] == 0.0  # tanh(0) = relu(0) = 0 and no bias


def test_homogeneity_degree():
    assert homogeneity_degree(get_activation("relu")) == 1.0
    assert homogeneity_degree(get_activation("leaky_relu:0.1")) == 1.0
    assert homogeneity_degree(get_activation("alpha_relu:1.5")) == 1.5
    assert homogeneity_degree(get_activation("erf")) is None
    assert homogeneity_degree(get_activation("tanh")) is None


# ------------------------------------------------------------------------------------------
# parametrisations and residual forms
# ------------------------------------------------------------------------------------------

def test_standard_parametrization_mlp_by_hand():
    """MATH.md 4.2: Theta_SP / n -> sum_{l>=2} E^l prod_{k>l} Sigma_dot^k, E^l = W_phi(Sigma^{l-1})."""
    X = pair_inputs(1.0, 0.5)
    sw, sb = 2.0, 0.1
    r = kernel("mlp", "relu", X, depth=2, sigma_w2=sw, sigma_b2=sb, parametrization="standard")
    s1 = mp.mpf(sw) * mp.mpf("0.5") + mp.mpf(sb)
    q1 = mp.mpf(sw) + mp.mpf(sb)
    e2, d2 = mp_moments("relu", q1, q1, s1)
    q2 = sw * mp_moments("relu", q1, q1, q1)[0] + sb
    s2 = sw * e2 + sb
    e3, d3 = mp_moments("relu", q2, q2, s2)
    expected = e2 * sw * d3 + e3
    assert r.ntk[0, 1] == pytest.approx(float(expected), rel=1e-13)
    ntk = kernel("mlp", "relu", X, depth=2, sigma_w2=sw, sigma_b2=sb)
    np.testing.assert_array_equal(r.nngp, ntk.nngp)  # the NNGP does not depend on it


def test_resnet_reduced_and_branch_scale():
    X = sphere(5, 3)
    kw = dict(depth=3, sigma_w2=1.3, sigma_b2=0.1)
    red = kernel("resnet-reduced", "tanh", X, **kw)
    full = kernel("resnet", "tanh", X, sigma_v2=1.0, sigma_a2=0.0, **kw)
    np.testing.assert_allclose(red.nngp, full.nngp, rtol=1e-13)
    assert np.all(np.diag(full.ntk) > np.diag(red.ntk))  # the V weights' own terms
    a = 0.4
    sc = kernel("resnet", "relu", X, sigma_v2=0.5, sigma_a2=0.1, branch_scale=a, **kw)
    ex = kernel("resnet", "relu", X, sigma_v2=0.5 * a * a, sigma_a2=0.1 * a * a, **kw)
    np.testing.assert_allclose(sc.ntk, ex.ntk, rtol=1e-14)
    # residual stream length = Yang-Schoenholz p^l (MATH.md 2.3): relu, p^l = p + sv/2 (sw p + sb) + sa
    d = kernel("resnet", "relu", X, sigma_v2=0.5, sigma_a2=0.1, diagonals=True, **kw).layers.nngp
    p = 1.0
    for l in range(3):
        p = p + 0.5 * 0.5 * (1.3 * p + 0.1) + 0.1
        np.testing.assert_allclose(d[l + 1], p, rtol=1e-14)


def test_kernel_trace_is_prefix_of_deeper_networks():
    X = sphere(4, 3)
    nn, nt = kernel_trace("mlp", "erf", X, depth=5, sigma_w2=1.5, sigma_b2=0.2)
    for L in (1, 3, 5):
        r = kernel("mlp", "erf", X, depth=L, sigma_w2=1.5, sigma_b2=0.2)
        np.testing.assert_allclose(nt[L - 1], r.ntk, rtol=1e-14)
        np.testing.assert_allclose(nn[L - 1], r.nngp, rtol=1e-14)
    nn, nt = kernel_trace("resnet", "relu", X, depth=4, sigma_w2=1.5, sigma_b2=0.1, sigma_v2=0.5)
    r = kernel("resnet", "relu", X, depth=2, sigma_w2=1.5, sigma_b2=0.1, sigma_v2=0.5)
    np.testing.assert_allclose(nt[1], r.ntk, rtol=1e-14)


# ------------------------------------------------------------------------------------------
# result record
# ------------------------------------------------------------------------------------------

def test_summary_is_json_safe():
    X = sphere(8, 3)
    r = kernel("mlp", "relu", X, depth=2, sigma_w2=2.0, sigma_b2=0.0)
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["shape"] == [8, 8] and d["symmetric"] is True
    assert d["ntk_diag"]["min"] == pytest.approx(6.0)
    assert d["ntk_condition_number"] == pytest.approx(np.linalg.cond(r.ntk), rel=1e-8)
    dup = kernel("mlp", "relu", np.vstack([X, X[:1]]), depth=2, sigma_w2=2.0, sigma_b2=0.0)
    dd = dup.to_dict()
    assert dd["ntk_condition_number"] is None and dd["ntk_singular"] is True
    json.dumps(dd, allow_nan=False)
    assert isinstance(r, KernelResult)
    with pytest.raises(AttributeError):
        r.nngp_diag = None  # frozen


# ------------------------------------------------------------------------------------------
# bad input: one-line DomainError naming the value
# ------------------------------------------------------------------------------------------

GOOD = dict(depth=2, sigma_w2=2.0, sigma_b2=0.1)


@pytest.mark.parametrize("args,kw,match", [
    ((np.array([[1.0, np.nan]]),), {}, "X must be finite"),
    ((np.array([[1.0, np.inf]]),), {}, "X must be finite"),
    ((np.zeros((0, 3)),), {}, "X is empty"),
    ((np.zeros((3, 0)),), {}, "X is empty"),
    ((np.ones(3),), {}, "2-D"),
    ((np.ones((3, 2)), np.ones((2, 3))), {}, "same input dimension"),
    ((np.ones((3, 2)),), {"depth": 0}, "depth must be >= 1"),
    ((np.ones((3, 2)),), {"depth": 2.5}, "depth must be a positive integer"),
    ((np.ones((3, 2)),), {"sigma_w2": -1.0}, "sigma_w2 must be non-negative"),
    ((np.ones((3, 2)),), {"sigma_b2": float("nan")}, "sigma_b2 must be finite"),
    ((np.ones((3, 2)),), {"sigma_w2": [1.0, 2.0]}, "one per dense layer"),
    ((np.ones((3, 2)),), {"parametrization": "mup"}, "parametrization"),
    ((np.ones((3, 2)),), {"dtype": "int8"}, "dtype"),
    ((np.ones((3, 2)),), {"block_rows": 0}, "block_rows"),
    ((np.ones((3, 2)),), {"method": "fast"}, "method"),
    ((np.array([[1.0, 0.0], [0.0, 2.0]]),), {"method": "whole"}, "one length"),
])
def test_bad_input(args, kw, match):
    with pytest.raises(DomainError, match=match) as ei:
        kernel("mlp", "relu", *args, **{**GOOD, **kw})
    assert "\n" not in str(ei.value)


def test_bad_arch_activation():
    with pytest.raises(DomainError, match="arch"):
        kernel("cnn", "relu", np.ones((2, 2)), **GOOD)
    with pytest.raises(DomainError, match="unknown activation"):
        kernel("mlp", "relux", np.ones((2, 2)), **GOOD)
    with pytest.raises(DomainError, match="no derivative"):
        kernel("mlp", "step", np.ones((2, 2)), **GOOD)
    with pytest.raises(DomainError, match="sigma_v2"):
        kernel("resnet", "relu", np.ones((2, 2)), sigma_v2=-0.1, **GOOD)
    with pytest.raises(DomainError, match="overflows"):
        kernel("mlp", "relu", np.ones((2, 2)), depth=2000, sigma_w2=4.0, sigma_b2=0.0)


# ------------------------------------------------------------------------------------------
# finite width (slow): the relative Frobenius error falls like n^(-1/2)
# ------------------------------------------------------------------------------------------

WIDTHS = (256, 512, 1024, 2048, 4096)
SEEDS = {256: 12, 512: 10, 1024: 6, 2048: 4, 4096: 2}
FINITE_CASES = [
    ("mlp", "relu", dict(depth=2, sigma_w2=2.0, sigma_b2=0.1)),
    ("mlp", "erf", dict(depth=2, sigma_w2=1.5, sigma_b2=0.2)),
    ("mlp", "tanh", dict(depth=2, sigma_w2=1.7, sigma_b2=0.05)),
    ("resnet", "relu", dict(depth=1, sigma_w2=1.5, sigma_b2=0.1, sigma_v2=0.5, sigma_a2=0.05)),
]


def finite_width_errors(arch, act, kw, X, widths=WIDTHS, seeds=SEEDS, parametrization="ntk"):
    from meanfield.simulate import empirical_ntk

    K = kernel(arch, act, X, parametrization=parametrization, **kw).ntk
    out = []
    for n in widths:
        errs = []
        for s in range(seeds[n]):
            E = empirical_ntk(arch, act, X, width=n, seed=1000 * n + s,
                              parametrization=parametrization, **kw).ntk
            if parametrization == "standard":
                E = E / n
            errs.append(np.linalg.norm(E - K) / np.linalg.norm(K))
        out.append(float(np.mean(errs)))
    return np.array(out)


@pytest.mark.slow
@pytest.mark.parametrize("arch,act,kw", FINITE_CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_finite_width_ntk_converges_like_inverse_sqrt_width(arch, act, kw):
    from meanfield.simulate import inputs_on_sphere

    X = inputs_on_sphere(8, 32, seed=7)
    err = finite_width_errors(arch, act, kw, X)
    slope = np.polyfit(np.log(WIDTHS), np.log(err), 1)[0]
    assert -0.8 <= slope <= -0.3, (slope, err)
    assert err[-1] < 0.06, err


@pytest.mark.slow
def test_finite_width_standard_parametrization():
    from meanfield.simulate import inputs_on_sphere

    X = inputs_on_sphere(6, 8, seed=3)
    err = finite_width_errors("mlp", "relu", dict(depth=2, sigma_w2=2.0, sigma_b2=0.1), X,
                              widths=(512, 2048), seeds={512: 3, 2048: 2},
                              parametrization="standard")
    assert err[1] < err[0] and err[1] < 0.08, err


@pytest.mark.slow
def test_finite_width_nngp():
    from meanfield.simulate import empirical_nngp, inputs_on_sphere

    X = inputs_on_sphere(5, 8, seed=4)
    K = kernel("mlp", "tanh", X, depth=2, sigma_w2=1.7, sigma_b2=0.05).nngp
    emp = empirical_nngp("mlp", "tanh", X, depth=2, sigma_w2=1.7, sigma_b2=0.05, width=512,
                         n_nets=64, n_outputs=16, seed=11)
    # Monte Carlo: 5 standard errors, plus the O(1/n) finite-width bias
    assert np.all(np.abs(emp.nngp - K) <= 5 * emp.nngp_se + 4.0 / 512 * np.abs(K))


def test_clear_cache_is_harmless():
    clear_cache()
    X = sphere(4, 3)
    a = kernel("mlp", "tanh", X, depth=2, sigma_w2=1.5, sigma_b2=0.1, method="table")
    clear_cache()
    b = kernel("mlp", "tanh", X, depth=2, sigma_w2=1.5, sigma_b2=0.1, method="table")
    np.testing.assert_array_equal(a.ntk, b.ntk)
    assert isinstance(TabulatedMaps, type)


# ------------------------------------------------------------------------------------------
# the `meanfield kernel` command (typer's CliRunner)
# ------------------------------------------------------------------------------------------

def _cli(*args):
    from typer.testing import CliRunner

    from meanfield.cli import app

    return CliRunner().invoke(app, ["kernel", *[str(a) for a in args]])


def _one_line(res, code, needle):
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr, res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_cli_kernel_writes_npz_and_json(tmp_path):
    X = sphere(7, 5)
    X2 = sphere(3, 5, seed=9)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "x2.npy", X2)
    out = tmp_path / "k.npz"
    res = _cli("--arch", "mlp", "--activation", "tanh", "--depth", 3, "--sigma-w2", 1.5,
               "--sigma-b2", 0.1, "--parametrization", "ntk", "--x", tmp_path / "x.npy",
               "--out", out, "--json")
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert "\x1b[" not in res.stdout and res.stdout.count("\n") == 1
    d = json.loads(res.stdout)
    assert d["shape"] == [7, 7] and d["out"] == str(out) and d["ntk_condition_number"] > 1
    with np.load(out) as z:
        ref = kernel("mlp", "tanh", X, depth=3, sigma_w2=1.5, sigma_b2=0.1)
        np.testing.assert_allclose(z["ntk"], ref.ntk, rtol=1e-14)
        np.testing.assert_allclose(z["nngp"], ref.nngp, rtol=1e-14)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    res = _cli("--arch", "resnet", "--activation", "relu", "--depth", 2, "--sigma-w2", 1.5,
               "--sigma-v2", 0.5, "--x", tmp_path / "x.npy", "--x2", tmp_path / "x2.npy",
               "--out", out, "--parametrization", "standard", "--dtype", "float32", "--diagonals")
    assert res.exit_code == 0, res.stderr
    assert "ntk" in res.stdout  # the human-readable summary
    with np.load(out) as z:
        assert z["ntk"].shape == (7, 3) and z["ntk"].dtype == np.float32
        assert z["layer_nngp"].shape == (3, 7)


def test_cli_kernel_errors(tmp_path):
    X = sphere(4, 3)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "bad.npy", np.array([[1.0, np.nan]]))
    base = ["--activation", "relu", "--depth", 2, "--sigma-w2", 2.0]
    missing = tmp_path / "nowhere" / "k.npz"
    _one_line(_cli(*base, "--x", tmp_path / "x.npy", "--out", missing), 2, "output folder does not exist")
    assert not missing.parent.exists()
    out = tmp_path / "k.npz"
    _one_line(_cli(*base, "--x", tmp_path / "bad.npy", "--out", out), 2, "X must be finite")
    _one_line(_cli(*base, "--x", tmp_path / "absent.npy", "--out", out), 2, "cannot read --x")
    np.savez(tmp_path / "two.npz", a=X, b=X)
    _one_line(_cli(*base, "--x", tmp_path / "two.npz", "--out", out), 2, "is an .npz archive")
    _one_line(_cli(*base, "--x", tmp_path / "x.npy", "--out", tmp_path / "k.txt"), 2, "--out must be an .npz file")
    (tmp_path / "text.npy").write_text("1 2 3")
    _one_line(_cli(*base, "--x", tmp_path / "text.npy", "--out", out), 2, "is not a numeric .npy array")
    np.save(tmp_path / "cplx.npy", X.astype(complex))
    _one_line(_cli(*base, "--x", tmp_path / "cplx.npy", "--out", out), 2, "complex")
    _one_line(_cli("--activation", "relu", "--depth", 0, "--sigma-w2", 2.0, "--x", tmp_path / "x.npy",
                   "--out", out), 2, "depth")
    _one_line(_cli(*base, "--sigma-b2", -1, "--x", tmp_path / "x.npy", "--out", out), 2, "sigma_b2")
    _one_line(_cli(*base, "--arch", "cnn", "--x", tmp_path / "x.npy", "--out", out), 2, "arch")
    np.save(tmp_path / "x3.npy", np.ones((2, 4)))
    _one_line(_cli(*base, "--x", tmp_path / "x.npy", "--x2", tmp_path / "x3.npy", "--out", out), 2,
              "same input dimension")
    assert not out.exists()
