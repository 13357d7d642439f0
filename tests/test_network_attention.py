"""attention (meanfield/network/attention.py): against neural-tangents 0.6.5 (golden values from
scripts/nt_attention_reference.py, tests/golden/network_nt_attention.{npz,json}, provenance
inside) at 1e-10, exact special cases, refusals, the layer contract of tests/test_network.py, and
Monte Carlo against wide random networks (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import test_network as tn
import test_network_mc as tmc
from meanfield import network as nw
from meanfield.errors import DomainError

GOLD = Path(__file__).parent / "golden"
META = json.loads((GOLD / "network_nt_attention.json").read_text())
RNG = np.random.default_rng(9)


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLD / "network_nt_attention.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", sorted(META["cases"]))
def test_matches_neural_tangents(name, golden):
    case = META["cases"][name]
    k = nw.from_spec(case["spec"]).kernel(golden[f"{name}/X"])
    for what, ours in (("nngp", k.nngp), ("ntk", k.ntk)):
        ref = golden[f"{name}/{what}"]
        assert ours.shape == ref.shape
        diff = np.max(np.abs(ours - ref)) / np.max(np.abs(ref))
        assert diff < 1e-10, f"{name} {what}: {diff:.2e}"


# ------------------------------------------------------------------------------------------
# exact special cases
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("first", [True, False])
def test_one_position_is_two_dense_layers(param, first):
    """With T = 1 the softmax weight is 1: attention is dense(sigma_v2) then dense(sigma_o2), in
    both parametrisations (the standard one's per-weight terms, fan-in data or width)."""
    x = RNG.standard_normal((4, 1, 3))
    pre = [] if first else [nw.dense(1.5, 0.1), nw.activation("relu")]
    a = nw.serial(*pre, nw.attention(3, "softmax", "linear", 1.3, 0.8, 1.7, 0.6), parametrization=param).kernel(x)
    b = nw.serial(*pre, nw.dense(1.7), nw.dense(0.6), parametrization=param).kernel(x)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-13)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-13)


def test_linear_weights_are_the_softmax_of_the_input_kernel():
    x = RNG.standard_normal((2, 5, 3))
    layer = nw.attention(2, "softmax", "linear", 2.0, 0.5)
    net = nw.serial(nw.dense(1.0), layer, nw.identity())
    k = net.kernel(x, ntk=False).nngp                              # (N, N, T, T)
    Kin = nw.serial(nw.dense(1.0)).kernel(x, ntk=False).nngp
    A = [np.exp(Kin[n, n]) / np.exp(Kin[n, n]).sum(axis=1, keepdims=True) for n in range(2)]
    want = np.array([[A[n] @ Kin[n, m] @ A[m].T for m in range(2)] for n in range(2)])
    np.testing.assert_allclose(k, want, rtol=1e-13)


@pytest.mark.parametrize("mech, scaling", [("softmax", "linear"), ("identity", "linear"), ("identity", "sqrt")])
def test_causal_output_ignores_later_positions(mech, scaling):
    x = RNG.standard_normal((3, 5, 2))
    y = x.copy()
    y[:, 3:] = RNG.standard_normal((3, 2, 2))
    net = nw.serial(nw.dense(1.0), nw.attention(2, mech, scaling, causal=True), nw.identity())
    a, b = net.kernel(x), net.kernel(y)
    for u, v in ((a.nngp, b.nngp), (a.ntk, b.ntk)):
        np.testing.assert_allclose(u[:, :, :3, :3], v[:, :, :3, :3], rtol=1e-13)
        assert np.abs(u[:, :, 3:, 3:] - v[:, :, 3:, 3:]).max() > 1e-3
    f = net.sample(16, rng=0)
    np.testing.assert_allclose(f.forward(x)[:, :3], f.forward(y)[:, :3], rtol=1e-13)


def test_backward_map_is_the_adjoint_of_the_forward_map():
    """<back(G), K_nn> = <G, K'_nn> per input, K' = c2 A_n K_nn A_n' (gradient independence)."""
    from meanfield.network.core import initial_state

    x = RNG.standard_normal((2, 4, 3))
    st = initial_state(x, "ntk", False, "auto")
    layer = nw.attention(2, "softmax", "linear", 1.0, 1.0, 1.3, 0.9)
    out, back = layer.fold(st)
    G = RNG.standard_normal((2, 4, 4))
    G = G + G.transpose(0, 2, 1)
    lhs = np.einsum("nst,nst->", back(G), st.blocks(st.K))
    rhs = np.einsum("nst,nst->", G, out.blocks(out.K))
    assert lhs == pytest.approx(rhs, rel=1e-13)
    p = nw.serial(nw.dense(1.0), layer).propagate(x)
    assert p.layers == ("dense", "attention") and np.all(np.isfinite(p.gradient))


@pytest.mark.parametrize("call, message", [
    (lambda: nw.serial(nw.dense(1.0), nw.attention()).check(RNG.standard_normal((2, 3))),
     "layers[1]: attention needs inputs with positions"),
    (lambda: nw.attention(mechanism="relu", scaling="sqrt"), "scaling: 'sqrt' with mechanism 'relu'"),
    (lambda: nw.attention(mechanism="gelu"), "mechanism: expected one of"),
    (lambda: nw.attention(heads=0), "heads: expected a positive integer"),
    (lambda: nw.serial(nw.dense(1.0), nw.attention(causal=True)).check(RNG.standard_normal((2, 3, 3, 2))),
     "layers[1].causal: a causal mask needs 1-D positions"),
    (lambda: nw.from_spec([{"layer": "attention", "heads": 2, "scaling": "sqrt", "mechanism": "abs"}]),
     "layers[0].scaling: 'sqrt' with mechanism 'abs' is not supported"),
    (lambda: nw.from_spec([{"layer": "attention", "causal": 1}]), "layers[0].causal: expected true or false"),
])
def test_refusals_are_one_line(call, message):
    with pytest.raises(DomainError) as e:
        call()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_spec_round_trip():
    spec = [{"layer": "dense", "sigma_w2": 1.5}, {"layer": "attention", "heads": 4, "mechanism": "softmax",
            "scaling": "linear", "sigma_q2": 1.0, "sigma_k2": 1.0, "sigma_v2": 1.0, "sigma_o2": 1.0,
            "causal": False}]
    net = nw.from_spec(spec)
    assert nw.to_spec(net)["layers"] == spec
    assert nw.from_spec(nw.to_spec(net)).to_spec() == spec
    ps = net.params(nw.Shape((5,), 3))
    assert [p.name for p in ps] == ["0.weight", "1.key", "1.value", "1.out"]


# ------------------------------------------------------------------------------------------
# the layer contract (tests/test_network.py's helpers)
# ------------------------------------------------------------------------------------------
CONTRACT = {
    "attention-softmax": ([nw.dense(1.0), nw.attention(2, "softmax", "linear", 1.3, 0.8, 1.5, 0.7)], (2, 4, 3)),
    "attention-softmax-causal": ([nw.dense(1.0), nw.attention(2, "softmax", "linear", causal=True)], (2, 4, 3)),
    "attention-identity-linear": ([nw.dense(1.0), nw.attention(2, "identity", "linear")], (2, 4, 3)),
    "attention-relu-linear": ([nw.dense(1.0), nw.attention(2, "relu", "linear")], (2, 4, 3)),
    "attention-identity-sqrt": ([nw.dense(1.0), nw.attention(2, "identity", "sqrt", 1.2, 0.9, 1.1, 1.3)],
                                (2, 4, 3)),
    "attention-sqrt-causal-on-data": ([nw.attention(2, "identity", "sqrt", causal=True)], (2, 4, 3)),
    "attention-softmax-sqrt": ([nw.dense(1.0), nw.attention(2, "softmax", "sqrt", 1.2, 0.9, 1.1, 1.3)],
                               (2, 4, 3)),
    "attention-softmax-sqrt-causal-on-data": ([nw.attention(2, "softmax", "sqrt", causal=True)], (2, 4, 3)),
}


@pytest.mark.parametrize("name", list(CONTRACT))
def test_vjp_is_the_derivative_of_apply(name):
    tn.check_vjp(*CONTRACT[name])


@pytest.mark.parametrize("name", list(CONTRACT))
def test_empirical_ntk_is_the_parameter_jacobian_gram(name):
    tn.check_ntk_gram(*CONTRACT[name])


def test_realised_init_variance():
    """A drawn layer's raw weights are N(0, 1); the output has variance sigma_o2 sigma_v2 A K A'
    (here T = 1, A = 1: sigma_o2 sigma_v2 |x|^2 / d)."""
    layer = nw.attention(4, "softmax", "linear", 1.0, 1.0, 1.5, 0.8)
    p, out = layer.init(np.random.default_rng(0), (1, 3), 2048)
    assert out == (1, 2048) and p["K"].shape == (4, 3, 512) and p["O"].shape == (2048, 2048)
    for key in ("K", "V", "O"):
        assert p[key].var() == pytest.approx(1.0, rel=5 * np.sqrt(2 / p[key].size))
    x = np.array([[[1.0, -2.0, 0.5]]])
    y, _ = layer.apply(p, x)
    want = 1.5 * 0.8 * (x ** 2).sum() / 3
    assert (y ** 2).mean() == pytest.approx(want, rel=0.15)


# ------------------------------------------------------------------------------------------
# Monte Carlo (slow): 5 standard errors at width 1024, and the width^(-1/2) slope
# ------------------------------------------------------------------------------------------
MC = {
    "dense-softmax-relu-gap": ([nw.dense(1.5, 0.1), nw.attention(4, "softmax", "linear", 1.3, 0.8, 1.5, 0.7),
                                nw.activation("relu"), nw.global_avg_pool(), nw.dense(1.0)], (3, 4, 3)),
    "dense-softmax-causal-no-readout": ([nw.dense(1.5, 0.1), nw.attention(4, "softmax", "linear", causal=True)],
                                        (2, 3, 3)),
    "identity-sqrt-on-data-64-heads": ([nw.attention(64, "identity", "sqrt", 1.2, 0.9, 1.1, 1.3),
                                        nw.global_avg_pool(), nw.dense(1.0)], (3, 4, 3)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MC))
def test_kernels_match_a_wide_network(name):
    layers, shape = MC[name]
    tmc.check_wide_network(nw.serial(*layers), np.random.default_rng(11).standard_normal(shape), name)


@pytest.mark.slow
def test_finite_width_error_falls_like_inverse_sqrt_width():
    """One head (so n_k = width): the relative RMS error of one network's empirical NTK against
    the theory, averaged over 8 networks, against width 128 .. 1024 (measured slope -0.58; a
    wrong limit would flatten it)."""
    net = nw.serial(nw.dense(1.5, 0.1), nw.attention(1, "softmax", "linear", 1.3, 0.8, 1.5, 0.7),
                    nw.activation("relu"), nw.global_avg_pool(), nw.dense(1.0))
    X = np.random.default_rng(12).standard_normal((5, 4, 3))
    theory = net.kernel(X).ntk
    scale = np.sqrt(np.mean(theory ** 2))
    widths = (128, 256, 512, 1024)
    errs = []
    for i, w in enumerate(widths):
        _, emp = tmc._empirical(net, X, w, 8, seed=1000 * (i + 1) + 12)
        errs.append(np.mean([np.sqrt(np.mean((e - theory) ** 2)) / scale for e in emp]))
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    assert -0.7 < slope < -0.3, f"slope {slope:.3f}, errors {errs}"
