"""The network algebra (meanfield.network): properties, equality with the MLP / ResNet kernels,
specs and their errors, propagate, the finite-width numpy networks.

Monte Carlo comparisons against wide random networks are in tests/test_network_mc.py (slow);
comparisons against neural-tangents' values in tests/test_network_nt.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from meanfield import gaussian, kernels, maps
from meanfield import network as nw
from meanfield.activations import get_activation
from meanfield.errors import DomainError

RNG = np.random.default_rng(7)
X = RNG.standard_normal((6, 5))
X[2] *= 2.0            # inputs of different lengths: the per-layer path of kernels.kernel
X2 = RNG.standard_normal((3, 5))


def mlp_net(act, L, sw, sb, param="ntk"):
    layers = [nw.dense(sw[0], sb[0])]
    for k in range(1, L + 1):
        layers += [nw.activation(act), nw.dense(sw[k], sb[k])]
    return nw.serial(*layers, parametrization=param)


# ------------------------------------------------------------------------------------------
# the MLP and ResNet kernels are compositions of the algebra
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("act", ["relu", "erf", "tanh", "gelu", "leaky_relu:0.1"])
@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_dense_network_equals_mlp_kernel_to_the_last_bit(act, param):
    sw, sb = [2.0, 1.5, 1.4, 1.3], [0.1, 0.2, 0.0, 0.05]
    k = mlp_net(act, 3, sw, sb, param).kernel(X, method="direct")
    old = kernels.kernel("mlp", act, X, depth=3, sigma_w2=sw, sigma_b2=sb, parametrization=param,
                         method="direct")
    assert np.array_equal(k.nngp, old.nngp)
    assert np.array_equal(k.ntk, old.ntk)


def test_dense_network_with_x2_equals_mlp_kernel():
    sw, sb = [2.0, 1.5, 1.5], [0.1, 0.1, 0.1]
    k = mlp_net("relu", 2, sw, sb).kernel(X, X2, method="direct")
    old = kernels.kernel("mlp", "relu", X, X2, depth=2, sigma_w2=sw, sigma_b2=sb, method="direct")
    assert k.nngp.shape == (6, 3)
    np.testing.assert_allclose(k.nngp, old.nngp, rtol=1e-14, atol=0)
    np.testing.assert_allclose(k.ntk, old.ntk, rtol=1e-14, atol=0)


@pytest.mark.parametrize("act", ["relu", "tanh", "erf"])
@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_residual_network_equals_resnet_kernel(act, param):
    """MATH.md 4.3's full residual MLP is dense(sigma_in2) -> L x (x + V phi(W x + b) + a) ->
    dense(sigma_o2): the same numbers as kernels.kernel(arch="resnet")."""
    block = nw.residual([nw.dense(1.5, 0.1), nw.activation(act), nw.dense(0.8, 0.05)])
    net = nw.serial(nw.dense(1.2), nw.repeat(block, 4), nw.dense(1.3), parametrization=param)
    k = net.kernel(X, method="direct")
    old = kernels.kernel("resnet", act, X, depth=4, sigma_w2=1.5, sigma_b2=0.1, sigma_v2=0.8,
                         sigma_a2=0.05, sigma_in2=1.2, sigma_o2=1.3, parametrization=param,
                         method="direct")
    np.testing.assert_allclose(k.nngp, old.nngp, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(k.ntk, old.ntk, rtol=1e-13, atol=1e-15)


def test_reduced_residual_with_zero_mean_activation_equals_resnet_reduced():
    net = nw.serial(nw.dense(1.0), nw.repeat(nw.residual([nw.dense(1.5, 0.1), nw.activation("tanh")]), 3),
                    nw.dense(1.0))
    k = net.kernel(X, method="direct")
    old = kernels.kernel("resnet-reduced", "tanh", X, depth=3, sigma_w2=1.5, sigma_b2=0.1, method="direct")
    np.testing.assert_allclose(k.nngp, old.nngp, rtol=1e-13)
    np.testing.assert_allclose(k.ntk, old.ntk, rtol=1e-13)


def test_reduced_residual_relu_carries_the_mean_drift():
    """x + relu(W x + b): the stream's channel mean grows by E[relu(h)] per block, and the kernel
    has the cross term 2 mu E[relu] that MATH.md 2.3's recursion omits (checked against a wide
    network in test_network_mc.py).  Here: the 1-D recursion with the mean, written out."""
    sw, sb, L = 0.5, 0.0, 3
    x = np.array([[1.0, -1.0, 2.0, 0.5]])
    net = nw.serial(nw.dense(1.0), nw.repeat(nw.residual([nw.dense(sw, sb), nw.activation("relu")]), L))
    k = net.kernel(x, ntk=False)
    p, m = float((x @ x.T)[0, 0]) / 4, 0.0      # the stream's second moment and channel mean
    for _ in range(L):
        q = sw * p + sb
        e = np.sqrt(q / (2 * np.pi))    # E relu(h), h ~ N(0, q)
        p, m = p + q / 2 + 2 * m * e, m + e
    assert k.nngp[0, 0] == pytest.approx(p, rel=1e-13)


# ------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------
NETS_2D = {
    "conv-same-gap": [nw.conv([3, 3], padding="same", sigma_w2=2.0, sigma_b2=0.1), nw.activation("relu"),
                      nw.conv([3, 3], [2, 2], padding="circular", sigma_w2=1.5, sigma_b2=0.1),
                      nw.activation("erf"), nw.global_avg_pool(), nw.dense(1.0, 0.1)],
    "conv-valid-pool-ln-flatten": [nw.conv([2, 3], padding="valid", sigma_w2=2.0, sigma_b2=0.1),
                                   nw.activation("relu"), nw.avg_pool([2, 2], [1, 2], "same"),
                                   nw.layer_norm(), nw.flatten(), nw.dense(1.0, 0.1)],
    "conv-residual-no-readout": [nw.conv([3, 3], sigma_w2=1.0), nw.residual(
        [nw.activation("relu"), nw.conv([3, 3], sigma_w2=2.0, sigma_b2=0.05)]), nw.activation("erf")],
}
XI = RNG.standard_normal((4, 5, 4, 2))


@pytest.mark.parametrize("name", list(NETS_2D))
def test_kernels_symmetric_psd(name):
    k = nw.serial(*NETS_2D[name]).kernel(XI)
    for K in (k.nngp, k.ntk):
        N = K.shape[0]
        P = int(np.prod(K.shape[2::2])) if K.ndim > 2 else 1
        D = (K.ndim - 2) // 2
        order = [0] + [2 + 2 * i for i in range(D)] + [1] + [3 + 2 * i for i in range(D)]
        M = K.transpose(order).reshape(N * P, N * P)
        assert np.array_equal(M, M.T)
        ev = np.linalg.eigvalsh(M)
        assert ev.min() >= -1e-12 * ev.max()


def test_conv_1x1_on_1x1_images_equals_dense():
    dense = nw.serial(nw.dense(2.0, 0.1), nw.activation("relu"), nw.dense(1.5, 0.2), nw.activation("erf"),
                      nw.dense(1.0, 0.1))
    conv = nw.serial(nw.conv([1, 1], sigma_w2=2.0, sigma_b2=0.1), nw.activation("relu"),
                     nw.conv([1, 1], sigma_w2=1.5, sigma_b2=0.2), nw.activation("erf"), nw.flatten(),
                     nw.dense(1.0, 0.1))
    a = dense.kernel(X)
    b = conv.kernel(X.reshape(6, 1, 1, 5))
    np.testing.assert_allclose(b.nngp, a.nngp, rtol=1e-14)
    np.testing.assert_allclose(b.ntk, a.ntk, rtol=1e-14)


def test_circular_conv_is_translation_equivariant():
    net = nw.serial(nw.conv([3], padding="circular", sigma_w2=2.0, sigma_b2=0.1), nw.activation("relu"),
                    nw.conv([3], padding="circular", sigma_w2=2.0))
    x = RNG.standard_normal((2, 7, 3))
    k0 = net.kernel(x).nngp
    k1 = net.kernel(np.roll(x, 2, axis=1)).nngp
    np.testing.assert_allclose(np.roll(np.roll(k0, 2, axis=2), 2, axis=3), k1, rtol=1e-13)


def test_output_layout_without_readout():
    net = nw.serial(nw.conv([3, 3], [2, 1], padding="same", sigma_w2=2.0), nw.activation("relu"))
    x = RNG.standard_normal((3, 5, 4, 2))
    k = net.kernel(x)
    assert k.nngp.shape == (3, 3, 3, 3, 4, 4)       # (N, M, s1, s1', s2, s2'), s1 = ceil(5 / 2)
    assert k.output_spatial == (3, 4)
    # the diagonal at equal positions is the per-position variance
    f = net.sample(64, rng=0).forward(x)
    assert f.shape == (3, 3, 4, 64)


def test_standard_parametrization_drops_input_weights_and_biases():
    """MATH.md 4.2: in lim Theta_SP / n only hidden weights train: a one-layer network has NTK 0
    and the bias variance does not enter (it enters the NNGP)."""
    one = nw.serial(nw.dense(2.0, 0.3), parametrization="standard").kernel(X)
    assert np.all(one.ntk == 0)
    a = mlp_net("relu", 2, [2.0, 2.0, 2.0], [0.0, 0.0, 0.0], "standard").kernel(X)
    b = mlp_net("relu", 2, [2.0, 2.0, 2.0], [0.0, 0.0, 0.5], "standard").kernel(X)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-14)
    assert not np.allclose(a.nngp, b.nngp)


def test_layer_norm_after_relu_uses_the_channel_mean():
    """LN of relu(h): (phi - E phi)/sd over channels; its kernel is the centred correlation,
    computed here independently from the 2-D Gaussian expectations."""
    x = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
    net = nw.serial(nw.dense(1.0), nw.activation("relu"), nw.layer_norm())
    K = net.kernel(x, ntk=False).nngp
    act = get_activation("relu")
    q, c = 1.0 / 3.0, 0.6
    m = np.sqrt(q / (2 * np.pi))
    W = float(gaussian.w_phi(act, q, q, c))
    V = float(gaussian.v_phi(act, q))
    assert K[0, 1] == pytest.approx((W - m * m) / (V - m * m), rel=1e-13)
    assert K[0, 0] == 1.0


# ------------------------------------------------------------------------------------------
# propagate: the vanilla diagnostics for any network
# ------------------------------------------------------------------------------------------
def test_propagate_equals_iterate_for_a_vanilla_network():
    act, sw, sb, L = "tanh", 1.8, 0.05, 6
    # two inputs with x.x/d = 1 and correlation 0.3
    x = np.array([[1.0, 0.0], [0.3, np.sqrt(1 - 0.09)]]) * np.sqrt(2)
    net = mlp_net(act, L, [sw] * (L + 1), [sb] * (L + 1))
    pr = net.propagate(x)
    tr = maps.iterate(act, sw, sb, L, q0=sw * 1.0 + sb, c0=float(sw * 0.3 + sb) / (sw + sb))
    dense_rows = [i for i, n in enumerate(pr.layers) if n == "dense"]
    assert len(dense_rows) == L + 1
    np.testing.assert_allclose(pr.q[dense_rows, 0], tr.q, rtol=1e-12)
    np.testing.assert_allclose(pr.correlation[dense_rows, 0, 1], tr.c, rtol=1e-10)
    # gradient: the product of chi_1 = sigma_w2 V_phi'(q^l) from layer l to the output (MATH.md 1.5)
    chi = sw * gaussian.v_dphi(get_activation(act), np.array(tr.q[:-1]))
    expect = np.concatenate([np.cumprod(chi[::-1])[::-1], [1.0]])
    np.testing.assert_allclose(pr.gradient[dense_rows, 0], expect, rtol=1e-12)
    assert pr.gradient[-1, 0] == 1.0
    d = pr.to_dict()
    assert set(d) == {"layers", "q", "correlation", "gradient"}
    json.dumps(d)


def test_propagate_residual_gradient_is_the_sum_of_paths():
    """Through x + V phi(W x): G_in = G_out (1 + sigma_v2 sigma_w2 V_phi'(q)) (MATH.md 2.3)."""
    x = np.array([[1.0, 0.5, -0.3]])
    sw, sv = 1.3, 0.7
    net = nw.serial(nw.dense(1.0), nw.residual([nw.dense(sw), nw.activation("tanh"), nw.dense(sv)]))
    pr = net.propagate(x)
    p = float((x @ x.T)[0, 0]) / 3
    chi = 1 + sv * sw * float(gaussian.v_dphi(get_activation("tanh"), sw * p))
    assert pr.gradient[0, 0] == pytest.approx(chi, rel=1e-13)


# ------------------------------------------------------------------------------------------
# specs
# ------------------------------------------------------------------------------------------
SPEC = [
    {"layer": "conv", "filter": [3, 3], "strides": [1, 1], "padding": "same", "sigma_w2": 2, "sigma_b2": 0.1},
    {"layer": "activation", "fn": "relu"},
    {"layer": "avg_pool", "window": [2, 2], "strides": [2, 2], "padding": "valid"},
    {"layer": "repeat", "n": 2, "body": [
        {"layer": "residual", "branch": [{"layer": "conv", "filter": [3, 3], "sigma_w2": 1.5},
                                         {"layer": "activation", "fn": "erf"},
                                         {"layer": "conv", "filter": [1, 1], "sigma_w2": 1}],
         "shortcut": [{"layer": "identity"}], "scale": 0.5}]},
    {"layer": "layer_norm"}, {"layer": "global_avg_pool"}, {"layer": "flatten"},
    {"layer": "dense", "sigma_w2": 1},
]


def test_spec_round_trip():
    net = nw.from_spec({"layers": SPEC, "parametrization": "ntk"})
    again = nw.from_spec(json.loads(json.dumps(nw.to_spec(net))))
    x = RNG.standard_normal((3, 6, 6, 2))
    a, b = net.kernel(x), again.kernel(x)
    assert np.array_equal(a.nngp, b.nngp) and np.array_equal(a.ntk, b.ntk)
    assert [l.name for l in net.flat()][:4] == ["conv", "relu", "avg_pool", "residual"]


def test_python_composition_equals_spec():
    net = nw.from_spec(SPEC[:3] + SPEC[4:])
    py = nw.serial(nw.conv([3, 3], [1, 1], "same", 2, 0.1), nw.activation("relu"),
                   nw.avg_pool([2, 2], [2, 2], "valid"), nw.layer_norm(), nw.global_avg_pool(),
                   nw.flatten(), nw.dense(1))
    x = RNG.standard_normal((3, 6, 6, 2))
    assert np.array_equal(net.kernel(x).ntk, py.kernel(x).ntk)


@pytest.mark.parametrize("spec, x_shape, message", [
    ([{"layer": "conv", "filter": [3], "sigma_w2": 2}], (2, 5, 5, 3),
     "layers[0].filter: expected 2 integers for 2-D input, got [3]"),
    ([{"layer": "dense", "sigma_w2": 2, "foo": 1}], (2, 3), "layers[0].foo: unknown key"),
    ([{"layer": "dense", "sigma_w2": "2"}], (2, 3), "layers[0].sigma_w2: expected a number"),
    ([{"layer": "dense", "sigma_w2": -1}], (2, 3), "layers[0].sigma_w2: a variance must be"),
    ([{"layer": "dense"}, {"layer": "residual", "branch": [{"layer": "activation", "fn": "nope"}]}], (2, 3),
     "layers[1].branch[0]: unknown activation 'nope'"),
    ([{"layer": "dens"}], (2, 3), "layers[0].layer: expected one of"),
    ([{"layer": "activation"}], (2, 3), "layers[0].fn: missing"),
    ([{"layer": "avg_pool", "window": [8, 2]}], (2, 6, 6, 3), "layers[0].window: window 8 is larger"),
    ([{"layer": "conv", "filter": [3, 3], "padding": "valid"}], (2, 2, 6, 3), "layers[0].filter: filter 3 is larger"),
    ([{"layer": "activation", "fn": "relu"}], (2, 3), "layers[0]: activation 'relu' needs Gaussian"),
    ([{"layer": "dense"}, {"layer": "conv", "filter": [3]}], (2, 3), "layers[1]: conv needs inputs with positions"),
    ([{"layer": "global_avg_pool"}], (2, 3), "layers[0]: global_avg_pool needs inputs with positions"),
    ([{"layer": "dense"}, {"layer": "repeat", "n": 0, "body": [{"layer": "dense"}]}], (2, 3), "layers[1].n: expected a positive"),
    ([{"layer": "dense"}, {"layer": "residual", "branch": [{"layer": "activation", "fn": "relu"}]}], (2, 3),
     "layers[1].branch: a residual branch must contain a dense or conv"),
    ([{"layer": "residual", "branch": [{"layer": "dense"}]}], (2, 3), "layers[0]: branch output has width channels"),
    ({"layers": [{"layer": "dense"}], "parametrisation": "ntk"}, (2, 3), "parametrisation: unknown key"),
    ([], (2, 3), "layers: expected a non-empty list"),
    ([{"layer": "conv", "filter": [2, 2], "padding": "full"}], (2, 4, 4, 1), "layers[0].padding: expected one of"),
])
def test_spec_errors_name_the_path(spec, x_shape, message):
    with pytest.raises(DomainError) as info:
        nw.from_spec(spec).kernel(np.ones(x_shape))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad, message", [
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "X contains NaN or inf (first at index (0, 1))"),
    (np.array([[1.0, np.inf]]), "X contains NaN or inf"),
    (np.ones(3), "X must have shape (N, d)"),
    (np.ones((2, 2), dtype=complex), "X is complex"),
    (np.array([["a", "b"]]), "X is not a numeric array"),
])
def test_bad_inputs(bad, message):
    net = nw.serial(nw.dense(1.0), nw.activation("relu"), nw.dense(1.0))
    with pytest.raises(DomainError, match=None) as info:
        net.kernel(bad)
    assert message in str(info.value)


def test_activation_without_derivative_refuses_the_ntk_only():
    net = nw.serial(nw.dense(1.0), nw.activation("step"), nw.dense(1.0))
    with pytest.raises(DomainError, match="no derivative"):
        net.kernel(X)
    k = net.kernel(X, ntk=False)
    assert k.ntk is None and np.all(np.isfinite(k.nngp))


def test_overflow_is_an_error_not_inf():
    net = nw.serial(nw.dense(1e200), nw.activation("relu"), nw.dense(1e200), nw.activation("relu"), nw.dense(1e200))
    with pytest.raises(DomainError, match="overflows"):
        net.kernel(X)


# ------------------------------------------------------------------------------------------
# parameters and the finite-width networks (contract over every layer type)
# ------------------------------------------------------------------------------------------
def test_params_metadata():
    net = nw.from_spec(SPEC)
    ps = net.params(net.input_shape(np.ones((1, 6, 6, 2))))
    first = ps[0]
    assert (first.name, first.kind, first.role, first.fan_in, first.variance) == ("0.weight", "weight", "input", 18, 2.0)
    assert ps[1].kind == "bias" and ps[1].variance == 0.1
    inner = [p for p in ps if ".branch." in p.name]
    assert inner and all(p.role == "hidden" and p.fan_in is None for p in inner)


CONTRACT = {
    "dense": ([nw.dense(1.5, 0.2)], (3, 4)),
    "activation": ([nw.dense(1.5), nw.activation("tanh")], (3, 4)),
    "conv": ([nw.conv([3, 2], [2, 1], "same", 1.5, 0.1)], (2, 5, 4, 3)),
    "conv-circular": ([nw.conv([3], [1], "circular", 1.5)], (2, 5, 3)),
    "conv-valid": ([nw.conv([2], [2], "valid", 1.5, 0.1)], (2, 7, 3)),
    "avg_pool": ([nw.conv([2, 2], sigma_w2=1.0), nw.avg_pool([2, 3], [2, 1], "same")], (2, 5, 4, 2)),
    "global_avg_pool": ([nw.conv([3], sigma_w2=1.0), nw.global_avg_pool()], (2, 5, 2)),
    "flatten": ([nw.conv([3], sigma_w2=1.0), nw.flatten()], (2, 5, 2)),
    "layer_norm": ([nw.dense(1.0), nw.activation("relu"), nw.layer_norm()], (3, 4)),
    "identity": ([nw.dense(1.0), nw.identity()], (3, 4)),
    "residual": ([nw.dense(1.0), nw.residual([nw.dense(1.0, 0.1), nw.activation("relu")], scale=0.7)], (3, 4)),
}


@pytest.mark.parametrize("name", list(CONTRACT))
def test_vjp_is_the_derivative_of_apply(name):
    check_vjp(*CONTRACT[name])


def check_vjp(layers, shape) -> None:
    """The numpy backward pass (used by empirical_ntk) against central finite differences (the
    layer contract; the layer test files call it on their own cases)."""
    net = nw.serial(*layers)
    x = np.random.default_rng(1).standard_normal(shape)
    f = net.sample(8, rng=2)
    y = f.forward(x)
    g = np.random.default_rng(3).standard_normal(y.shape)
    _, cache = net.apply(f.params, x)
    gx = net.vjp(f.params, cache, g)
    v = np.random.default_rng(4).standard_normal(x.shape)
    h = 1e-6
    fd = (np.sum(g * f.forward(x + h * v)) - np.sum(g * f.forward(x - h * v))) / (2 * h)
    assert np.sum(gx * v) == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", ["dense", "conv", "conv-valid", "residual"])
def test_empirical_ntk_is_the_parameter_jacobian_gram(name):
    check_ntk_gram(*CONTRACT[name])


def check_ntk_gram(layers, shape) -> None:
    """empirical_ntk's per-layer formula against the Gram matrix of parameter gradients taken by
    finite differences of the forward function (the layer contract)."""
    net = nw.serial(*layers)
    x = np.random.default_rng(1).standard_normal(shape)
    f = net.sample(3, rng=5)
    theta = f.empirical_ntk(x, channels=1)
    leaves = []

    def collect(p):
        if isinstance(p, dict):
            for v in p.values():
                if isinstance(v, np.ndarray):
                    leaves.append(v)
                elif isinstance(v, (dict, list)):
                    collect(v)
        elif isinstance(p, list):
            for v in p:
                collect(v)

    collect(f.params)
    out_pos = f.forward(x)[..., 0].reshape(x.shape[0], -1)
    J = np.zeros(out_pos.shape + (sum(a.size for a in leaves),))
    col = 0
    for a in leaves:
        for i in range(a.size):
            old = a.flat[i]
            a.flat[i] = old + 1e-6
            up = f.forward(x)[..., 0].reshape(x.shape[0], -1)
            a.flat[i] = old - 1e-6
            dn = f.forward(x)[..., 0].reshape(x.shape[0], -1)
            a.flat[i] = old
            J[..., col] = (up - dn) / 2e-6
            col += 1
    ref = np.einsum("nsk,mtk->nmst", J, J)
    N, P = x.shape[0], out_pos.shape[1]
    D = (theta.ndim - 2) // 2
    got = theta.transpose([0, 1] + [2 + 2 * i for i in range(D)] + [3 + 2 * i for i in range(D)])
    np.testing.assert_allclose(got.reshape(N, N, P, P), ref, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["dense", "conv", "conv-valid"])
def test_realised_init_variance(name):
    """A drawn layer's weights have variance sigma_w2 / fan_in, its biases sigma_b2."""
    layers, shape = CONTRACT[name]
    layer = layers[0]
    p, _ = layer.init(np.random.default_rng(0), shape[1:], 2000)
    fan = p["W"].shape[0]
    w = p["W"] * p["a"]
    assert w.var() == pytest.approx(layer.sigma_w2 / fan, rel=5 * np.sqrt(2 / w.size))
    if layer.sigma_b2 is not None:
        b = np.sqrt(layer.sigma_b2) * p["b"]
        assert b.var() == pytest.approx(layer.sigma_b2, rel=5 * np.sqrt(2 / b.size))


# ------------------------------------------------------------------------------------------
# presets and the CLI
# ------------------------------------------------------------------------------------------
def test_resnet_reduced_kernel_carries_the_mean_for_relu():
    """kernels.kernel(arch="resnet-reduced") with relu goes through the algebra (mean drift);
    the wide-network check is tests/test_network_mc.py::test_resnet_reduced_relu_kernel."""
    k = kernels.kernel("resnet-reduced", "relu", X, depth=3, sigma_w2=0.5, sigma_b2=0.1)
    net = nw.preset("resnet-reduced", "relu", 3, sigma_w2=0.5, sigma_b2=0.1)
    np.testing.assert_array_equal(k.nngp, net.kernel(X).nngp)
    assert nw.arch_name("resnet-full") == "resnet" and nw.arch_name("RRN") == "resnet-reduced"
    with pytest.raises(DomainError, match="arch must be one of"):
        nw.arch_name("cnn")


def _run(*args):
    from typer.testing import CliRunner

    from meanfield.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_kernel_net_and_propagate(tmp_path):
    spec = tmp_path / "net.json"
    spec.write_text(json.dumps(SPEC))
    x = RNG.standard_normal((3, 6, 6, 2))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "K.npz"
    res = _run("kernel", "--net", spec, "--x", tmp_path / "x.npy", "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    with np.load(out) as z:
        k = nw.from_spec(SPEC).kernel(x)
        assert np.array_equal(z["nngp"], k.nngp) and np.array_equal(z["ntk"], k.ntk)
    assert d["shape"] == [3, 3] and d["nngp_diag"] == pytest.approx(list(np.diag(k.nngp)), rel=1e-15)
    res = _run("propagate", "--net", spec, "--x", tmp_path / "x.npy", "--json")
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    assert set(d) == {"layers", "q", "correlation", "gradient"} and d["gradient"][-1] == [1.0] * 3
    res = _run("propagate", "--net", spec, "--x", tmp_path / "x.npy")
    assert res.exit_code == 0 and "avg_pool" in res.stdout


@pytest.mark.parametrize("content, extra, needle", [
    ('[{"layer": "conv", "filter": [3], "sigma_w2": 2}]', [], "layers[0].filter: expected 2 integers"),
    ("[{", [], "not valid JSON"),
    ('[{"layer": "dense"}]', ["--activation", "relu"], "--activation is a preset flag"),
    ('[{"layer": "dense"}, {"layer": "activation", "fn": "step"}]', [], "no derivative"),
])
def test_cli_net_errors_one_line_exit_2_nothing_written(tmp_path, content, extra, needle):
    spec = tmp_path / "net.json"
    spec.write_text(content)
    np.save(tmp_path / "x.npy", RNG.standard_normal((2, 5, 5, 3)))
    out = tmp_path / "K.npz"
    res = _run("kernel", "--net", spec, "--x", tmp_path / "x.npy", "--out", out, *extra)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert not out.exists()


def test_cli_net_nan_input(tmp_path):
    spec = tmp_path / "net.json"
    spec.write_text('[{"layer": "dense"}]')
    x = np.ones((2, 3))
    x[1, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    res = _run("propagate", "--net", spec, "--x", tmp_path / "x.npy")
    assert res.exit_code == 2 and "NaN" in res.stderr


def test_kernel_layer_diagonals():
    sw, sb = [2.0, 1.5, 1.4], [0.1, 0.2, 0.0]
    k = mlp_net("tanh", 2, sw, sb).kernel(X, diagonals=True)
    old = kernels.kernel("mlp", "tanh", X, depth=2, sigma_w2=sw, sigma_b2=sb, diagonals=True)
    dense_rows = [i for i, n in enumerate(k.layers) if n == "dense"]
    np.testing.assert_allclose(np.array(k.layer_nngp)[dense_rows], old.layers.nngp, rtol=1e-14)
    np.testing.assert_allclose(np.array(k.layer_ntk)[dense_rows], old.layers.ntk, rtol=1e-13)
    np.testing.assert_array_equal(k.layer_nngp[-1], np.diag(k.nngp))


# ------------------------------------------------------------------------------------------
# the specialised residual recursions (meanfield.residual) equal the algebra's propagate
# ------------------------------------------------------------------------------------------
def _frn_pair(act, sw, sb, sv, sa, L, p0=1.0, c0=0.5):
    from meanfield.residual import iterate_residual

    x = np.array([[1.0, 0.0], [c0, np.sqrt(1 - c0 ** 2)]]) * np.sqrt(2 * p0)
    net = nw.serial(nw.dense(1.0), nw.repeat(
        nw.residual([nw.dense(sw, sb), nw.activation(act), nw.dense(sv, sa)]), L))
    pr = net.propagate(x)
    tr = iterate_residual("resnet-full", act, sw, sb, L, sigma_v2=sv, sigma_a2=sa, p0=p0, c0=c0)
    rel = lambda a, b: float(np.max(np.abs(a - b) / np.abs(b)))
    return (rel(pr.q[1:, 0], tr.p[1:]), rel(pr.correlation[1:, 0, 1], tr.e[1:]),
            rel(pr.gradient[1:, 0], tr.chi[1:]))


@pytest.mark.parametrize("act, sw, sb, sv, sa", [("relu", 0.01, 0.0, 0.5, 0.01), ("erf", 0.5, 0.05, 1.0, 0.0)])
def test_residual_recursion_equals_propagate_at_depth_1000(act, sw, sb, sv, sa):
    """MATH.md 2.3's p^l, e^l and chi^l / chi^L (meanfield.residual, the 10^6-layer path) are the
    algebra's q, correlation and gradient of the same network."""
    p, e, chi = _frn_pair(act, sw, sb, sv, sa, 1000)
    assert p < 1e-12 and e < 1e-12 and chi < 1e-12


@pytest.mark.slow
def test_residual_recursion_equals_propagate_tanh():
    """tanh: p and chi agree to 1e-12 at depth 1000; the cosine to 1e-10 (measured 1.0e-10:
    meanfield.residual reads its tanh table of W at large q, the algebra gaussian.expect2)."""
    p, e, chi = _frn_pair("tanh", 1.2, 0.1, 0.8, 0.05, 1000)
    assert p < 1e-12 and chi < 1e-12 and e < 2e-10


# ------------------------------------------------------------------------------------------
# tiles: the kernel in blocks of inputs equals the whole fold
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NETS_2D))
@pytest.mark.parametrize("block", [1, 3])
def test_tiled_kernel_equals_the_whole_fold(name, block):
    net = nw.serial(*NETS_2D[name])
    whole = net.kernel(XI, block=10 ** 9)
    tiled = net.kernel(XI, block=block)
    for a, b in ((whole.nngp, tiled.nngp), (whole.ntk, tiled.ntk)):
        assert np.max(np.abs(a - b)) <= 1e-14 * np.max(np.abs(a))
    assert tiled.peak_bytes < whole.peak_bytes
    # X2: the cross tile directly (no concatenation)
    x2 = XI[:2] * 1.5 + 0.1
    cross = net.kernel(XI, x2, block=block)
    both = net.kernel(np.concatenate([XI, x2]), block=10 ** 9)
    assert np.max(np.abs(cross.ntk - both.ntk[:4, 4:])) <= 1e-14 * np.max(np.abs(both.ntk))


def test_tiles_refuse_a_bad_block():
    with pytest.raises(DomainError, match="block must be a positive integer"):
        nw.serial(*NETS_2D["conv-same-gap"]).kernel(XI, block=0)
