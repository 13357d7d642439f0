"""rnn (meanfield/network/rnn.py): the linear closed form (docs/theory.md, "Recurrent networks") to 1e-12,
T = 1 as dense + activation exactly, masking of ragged sequences, the backward map and the
per-step diagnostics, refusals and the CLI, the layer contract of tests/test_network.py, and
Monte Carlo against wide random RNNs in NTK4A's erf setting (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import test_network as tn
import test_network_mc as tmc
from meanfield import network as nw
from meanfield.errors import DomainError

RNG = np.random.default_rng(21)
#: NTK4A's erf RNN: sigma_w2 = 1, sigma_u2 = 2, sigma_b2 = 0.2, readout sigma_v2 = 1
NTK4A = dict(sigma_w2=1.0, sigma_u2=2.0, sigma_b2=0.2)


# ------------------------------------------------------------------------------------------
# the linear RNN in closed form
# ------------------------------------------------------------------------------------------
def _linear_closed_form(seqs, sw, su, sb, output, param):
    """s^T = sum_j W^j (U x^(T-j) + b) for phi = identity; in the limit only equal powers of W
    pair up, so with a(t, r) = su x^t.x'^r / d + sb (docs/theory.md, "Recurrent networks"):
    NNGP(t, r) = sum_j sw^j a(t-j, r-j), NTK(t, r) = sum_j (j + 1) sw^j a(t-j, r-j) (the W^j term
    j times, once per place of the differentiated W, plus U and b), and the standard
    parametrisation keeps the W term only, sum_j j sw^(j-1) a(t-j, r-j)."""
    def plane(x, y, t, r):
        nn = tt = 0.0
        for j in range(min(t, r) + 1):
            a = su * (x[t - j] @ y[r - j]) / x.shape[1] + sb
            nn += sw ** j * a
            tt += ((j + 1) * sw ** j if param == "ntk" else (j * sw ** (j - 1) if j else 0.0)) * a
        return nn, tt

    N = len(seqs)
    K, T = np.zeros((N, N)), np.zeros((N, N))
    for n in range(N):
        for m in range(N):
            x, y = seqs[n], seqs[m]
            pairs = ([(len(x) - 1, len(y) - 1)] if output == "last" else
                     [(t, r) for t in range(len(x)) for r in range(len(y))])
            vals = np.array([plane(x, y, t, r) for t, r in pairs]).mean(axis=0)
            K[n, m], T[n, m] = vals
    return K, T


@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("output", ["last", "mean"])
def test_linear_rnn_equals_its_closed_form(output, param):
    X = RNG.standard_normal((4, 5, 3))
    k = nw.serial(nw.rnn("linear", 0.7, 1.3, 0.2, output), parametrization=param).kernel(X)
    K, T = _linear_closed_form(list(X), 0.7, 1.3, 0.2, output, param)
    np.testing.assert_allclose(k.nngp, K, rtol=1e-12, atol=0)
    np.testing.assert_allclose(k.ntk, T, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("output", ["last", "mean"])
def test_ragged_linear_rnn_equals_its_closed_form(output):
    """Masking: sequences of lengths 2, 5, 3 zero-padded; each pair as if unpadded."""
    seqs = [RNG.standard_normal((L, 3)) for L in (2, 5, 3)]
    X = nw.pad_sequences(seqs)
    k = nw.serial(nw.rnn("linear", 0.9, 1.1, 0.3, output, masking=True)).kernel(X)
    K, T = _linear_closed_form(seqs, 0.9, 1.1, 0.3, output, "ntk")
    np.testing.assert_allclose(k.nngp, K, rtol=1e-12)
    np.testing.assert_allclose(k.ntk, T, rtol=1e-12)


# ------------------------------------------------------------------------------------------
# exact special cases
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("fn", ["erf", "relu", "tanh"])
def test_one_step_is_dense_then_activation(fn, first, param):
    """With T = 1, s^1 = phi(U x + b): the same maps, to the last bit."""
    x = RNG.standard_normal((4, 1, 3))
    pre = [] if first else [nw.dense(1.5, 0.1), nw.activation("relu")]
    a = nw.serial(*pre, nw.rnn(fn, 0.8, 2.0, 0.2), parametrization=param).kernel(x)
    b = nw.serial(*pre, nw.dense(2.0, 0.2), nw.activation(fn), nw.flatten(), parametrization=param).kernel(x)
    np.testing.assert_array_equal(a.nngp, b.nngp)
    np.testing.assert_array_equal(a.ntk, b.ntk)


def test_mean_output_of_equal_sequences_is_the_mean_of_the_last_outputs():
    """The NNGP of "mean" is the average of C^(t,r): the "last" kernels of the prefixes."""
    X = RNG.standard_normal((3, 4, 2))
    mean = nw.serial(nw.rnn("erf", **NTK4A, output="mean")).kernel(X, ntk=False).nngp
    C = np.zeros((3, 3))
    for t in range(1, 5):
        for r in range(1, 5):
            # C^(t,r) of x, x' is the last-state kernel of the prefixes x[:t], x'[:r], aligned at
            # their ends by masking (zero steps in front)
            A = np.zeros((3, 4, 2))
            A[:, 4 - t:] = X[:, :t]
            B = np.zeros((3, 4, 2))
            B[:, 4 - r:] = X[:, :r]
            k = nw.serial(nw.rnn("erf", **NTK4A, masking=True)).kernel(A, B, ntk=False).nngp
            C += k
    np.testing.assert_allclose(mean, C / 16, rtol=1e-13)


@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_all_states_then_global_average_is_the_mean_output(param):
    X = RNG.standard_normal((3, 4, 2))
    a = nw.serial(nw.rnn("erf", **NTK4A, output="all"), nw.global_avg_pool(), nw.dense(1.0),
                  parametrization=param).kernel(X)
    b = nw.serial(nw.rnn("erf", **NTK4A, output="mean"), nw.dense(1.0), parametrization=param).kernel(X)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-13)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-13)
    c = nw.serial(nw.rnn("erf", **NTK4A, output="all"), parametrization=param).kernel(X)
    d = nw.serial(nw.rnn("erf", **NTK4A, output="last"), parametrization=param).kernel(X)
    np.testing.assert_array_equal(c.nngp[:, :, -1, -1], d.nngp)
    np.testing.assert_array_equal(c.ntk[:, :, -1, -1], d.ntk)


def test_masking_skips_padding_in_the_kernel_and_the_network():
    seqs = [RNG.standard_normal((L, 3)) for L in (3, 1, 4)]
    X = nw.pad_sequences(seqs)
    net = nw.serial(nw.rnn("erf", **NTK4A, masking=True), nw.dense(1.0))
    k = net.kernel(X)
    for n, s in enumerate(seqs):
        alone = nw.serial(nw.rnn("erf", **NTK4A), nw.dense(1.0)).kernel(s[None])
        assert k.nngp[n, n] == pytest.approx(alone.nngp[0, 0], rel=1e-14)
        assert k.ntk[n, n] == pytest.approx(alone.ntk[0, 0], rel=1e-14)
    f = net.sample(32, rng=0)
    y = f.forward(X)
    for n, s in enumerate(seqs):
        layer_p = f.params["layers"][0]
        yn, _ = net.layers[0].apply(layer_p, s[None])
        np.testing.assert_allclose(y[n], net.layers[1].apply(f.params["layers"][1], yn)[0][0],
                                   rtol=1e-12, atol=1e-14)   # BLAS rounds batches differently
    # without masking, the padding is input: a different kernel
    unmasked = nw.serial(nw.rnn("erf", **NTK4A), nw.dense(1.0)).kernel(X)
    assert abs(unmasked.nngp[0, 0] - k.nngp[0, 0]) > 1e-3


def test_gradient_through_time_is_the_product_of_step_factors():
    """For "last", D^(t,t) = prod over later steps k of sigma_w2 E[phi'(h^k)^2] (chi)."""
    X = RNG.standard_normal((3, 6, 2))
    net = nw.serial(nw.rnn("erf", **NTK4A), nw.dense(1.0))
    s = nw.steps(net, X)
    want = np.concatenate([np.cumprod(s.chi[:, :0:-1], axis=1)[:, ::-1], np.ones((3, 1))], axis=1)
    np.testing.assert_allclose(s.gradient, want, rtol=1e-13)
    # q^t is the 1-D recursion sigma_w2 V(q^(t-1)) + sigma_u2 |x^t|^2 / d + sigma_b2
    from meanfield import gaussian
    from meanfield.activations import get_activation

    q = np.zeros(3)
    for t in range(6):
        q = NTK4A["sigma_w2"] * (gaussian.v_phi(get_activation("erf"), q) if t else 0.0) \
            + NTK4A["sigma_u2"] * (X[:, t] ** 2).mean(axis=1) + NTK4A["sigma_b2"]
        np.testing.assert_allclose(s.q[:, t], q, rtol=1e-14)
    assert s.correlation.shape == (6, 3, 3) and np.allclose(np.einsum("tnn->tn", s.correlation), 1.0)
    assert list(s.lengths) == [6, 6, 6] and json.dumps(s.to_dict())


def test_linear_backward_map_in_closed_form():
    """phi = identity, "last": G_in(t, r) = sigma_u2 sigma_w2^(T-t) on t = r, 0 elsewhere; "mean":
    G_in(t, r) = sigma_u2 / T^2 sum_j sigma_w2^j over j <= T - max(t, r)."""
    X = RNG.standard_normal((2, 4, 3))
    from meanfield.network.core import initial_state

    st = initial_state(X, "ntk", False, "auto")
    sw, su = 0.6, 1.7
    _, back = nw.rnn("linear", sw, su, 0.1, "last").fold(st)
    G = back(np.full((2, 1, 1), 2.0))
    want = np.diag([2.0 * su * sw ** (3 - t) for t in range(4)])
    np.testing.assert_allclose(G, np.broadcast_to(want, (2, 4, 4)), rtol=1e-14)
    _, back = nw.rnn("linear", sw, su, 0.1, "mean").fold(st)
    G = back(np.ones((2, 1, 1)))
    want = np.array([[su / 16 * sum(sw ** j for j in range(4 - max(t, r))) for r in range(4)] for t in range(4)])
    np.testing.assert_allclose(G, np.broadcast_to(want, (2, 4, 4)), rtol=1e-14)


TILED = {
    "erf": ([nw.rnn("erf", **NTK4A), nw.dense(1.0)], (5, 4, 3)),
    "dense-relu-mean": ([nw.dense(1.0, 0.1), nw.activation("relu"), nw.dense(1.0),
                         nw.rnn("relu", 0.8, 1.5, 0.1, "mean"), nw.dense(1.0)], (5, 4, 3)),
    "erf-mean-masked": ([nw.rnn("erf", **NTK4A, output="mean", masking=True), nw.dense(1.0)], (5, 4, 3)),
    "gelu-all-then-erf": ([nw.dense(1.0), nw.rnn("gelu", 1.2, 1.0, 0.1, "all"), nw.rnn("erf", 1.0, 1.0, 0.1),
                           nw.dense(1.0)], (4, 3, 2)),
}


def test_rnn_without_closed_forms_folds_untiled():
    """tanh's step maps are tables over the step variances: no tiles (rnn.Rnn.tileable)."""
    from meanfield.network.core import tileable

    assert tileable(nw.serial(nw.rnn("erf"), nw.dense(1.0)))
    assert not tileable(nw.serial(nw.rnn("tanh"), nw.dense(1.0)))
    x = RNG.standard_normal((3, 2, 2))
    a = nw.serial(nw.rnn("tanh", 1.2, 1.0, 0.1)).kernel(x, block=1)
    assert a.peak_bytes >= x.size ** 2 * 8 / x.shape[-1] ** 2   # the whole (N T)^2 state


@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("name", list(TILED))
def test_tiled_kernel_equals_the_whole_fold(name, param):
    """Tiles of 2 inputs (and an X2 tile) against the whole (N T)^2 fold, as tests/test_network.py
    checks the other layers."""
    layers, shape = TILED[name]
    x = RNG.standard_normal(shape)
    if "masked" in name:
        x[1, 2:] = 0.0
        x[3, 3:] = 0.0
    net = nw.serial(*layers, parametrization=param)
    whole, tiled = net.kernel(x, block=10 ** 9), net.kernel(x, block=2)
    for a, b in ((whole.nngp, tiled.nngp), (whole.ntk, tiled.ntk)):
        assert np.max(np.abs(a - b)) <= 1e-14 * np.max(np.abs(a))
    assert tiled.peak_bytes < whole.peak_bytes
    x2 = x[:2] * 1.5 + 0.1
    cross, both = net.kernel(x, x2, block=2), net.kernel(np.concatenate([x, x2]), block=10 ** 9)
    assert np.max(np.abs(cross.ntk - both.ntk[:len(x), len(x):])) <= 1e-14 * np.max(np.abs(both.ntk))


# ------------------------------------------------------------------------------------------
# specs, refusals, the CLI
# ------------------------------------------------------------------------------------------
SPEC = [{"layer": "rnn", "fn": "erf", "sigma_w2": 1.0, "sigma_u2": 2.0, "sigma_b2": 0.2, "output": "last",
         "masking": False}, {"layer": "dense", "sigma_w2": 1.0}]


def test_spec_round_trip_and_params():
    net = nw.from_spec(SPEC)
    assert nw.to_spec(net)["layers"] == SPEC
    assert nw.from_spec(nw.to_spec(net)).to_spec() == SPEC
    ps = net.params(nw.Shape((5,), 3))
    assert [(p.name, p.role, p.fan_in) for p in ps] == [
        ("0.recurrent", "hidden", None), ("0.input", "input", 3), ("0.bias", "input", None),
        ("1.weight", "hidden", None)]


@pytest.mark.parametrize("call, message", [
    (lambda: nw.serial(nw.rnn("erf")).check(RNG.standard_normal((2, 3))),
     "layers[0]: rnn needs inputs with one time axis, shape (N, T, d); this layer's input has none"),
    (lambda: nw.serial(nw.rnn("erf")).check(RNG.standard_normal((2, 3, 3, 2))), "has 2-D positions"),
    (lambda: nw.serial(nw.dense(1.0), nw.rnn("erf"), nw.rnn("erf")).check(RNG.standard_normal((2, 3, 2))),
     "layers[2]: rnn needs inputs with one time axis"),
    (lambda: nw.from_spec([{"layer": "rnn", "fn": "erf", "output": "first"}]),
     "layers[0].output: expected one of last, mean"),
    (lambda: nw.from_spec([{"layer": "rnn", "fn": "erf", "sigma_u2": -1}]), "layers[0].sigma_u2: a variance"),
    (lambda: nw.from_spec([{"layer": "rnn", "fn": "nope"}]), "layers[0].fn: unknown activation"),
    (lambda: nw.from_spec([{"layer": "rnn", "fn": 3}]), "layers[0].fn: expected an activation name"),
    (lambda: nw.from_spec([{"layer": "rnn", "fn": "erf", "masking": "yes"}]),
     "layers[0].masking: expected true or false"),
    (lambda: nw.from_spec([{"layer": "rnn", "sigma_w2": 1}]), "layers[0].fn: missing"),
    (lambda: nw.from_spec([{"layer": "rnn", "fn": "erf", "lengths": [2, 3]}]),
     "layers[0].lengths: unknown key for a rnn layer"),
    (lambda: nw.serial(nw.rnn("erf", masking=True)).kernel(np.zeros((2, 3, 2))),
     "rnn: an input sequence has no step with a non-zero input vector"),
    (lambda: nw.serial(nw.rnn("erf", masking=True)).sample(4, rng=0).forward(np.ones((2, 3, 2)) * [[[1]], [[0]]]),
     "rnn: input 1 has no step with a non-zero input vector"),
    (lambda: nw.serial(nw.rnn("erf")).kernel([np.ones((3, 2)), np.ones((2, 2))]), "X is not a numeric array"),
    (lambda: nw.pad_sequences([np.ones((3, 2)), np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]])]),
     "seqs[1]: step 1 is all zeros"),
    (lambda: nw.pad_sequences([np.ones((3, 2)), np.ones((2, 3))]), "different feature sizes [2, 3]"),
    (lambda: nw.steps(nw.serial(nw.dense(1.0)), np.ones((2, 3, 2))), "this network has no rnn layer"),
    (lambda: nw.from_spec([{"layer": "rnn", "fn": "erf", "output": "all", "masking": True}]),
     "layers[0].masking: not supported with output 'all'"),
    (lambda: nw.serial(nw.rnn("step")).kernel(np.ones((2, 3, 2))), "activation 'step' has no derivative"),
])
def test_refusals_are_one_line(call, message):
    with pytest.raises(DomainError) as e:
        call()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_activation_without_derivative_gives_the_nngp():
    X = RNG.standard_normal((2, 3, 2))
    k = nw.serial(nw.rnn("step", 1.0, 1.0, 0.1)).kernel(X, ntk=False)
    assert k.ntk is None and np.all(np.isfinite(k.nngp)) and np.all(np.diag(k.nngp) > 0)


def test_cli_kernel_and_propagate(tmp_path):
    spec = tmp_path / "net.json"
    spec.write_text(json.dumps(SPEC))
    x = RNG.standard_normal((3, 4, 2))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "K.npz"
    res = tn._run("kernel", "--net", spec, "--x", tmp_path / "x.npy", "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    with np.load(out) as z:
        k = nw.from_spec(SPEC).kernel(x)
        assert np.array_equal(z["nngp"], k.nngp) and np.array_equal(z["ntk"], k.ntk)
    res = tn._run("propagate", "--net", spec, "--x", tmp_path / "x.npy", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["layers"] == ["rnn", "dense"]


def test_cli_propagate_steps(tmp_path):
    spec = tmp_path / "net.json"
    spec.write_text(json.dumps(SPEC))
    x = RNG.standard_normal((3, 4, 2))
    np.save(tmp_path / "x.npy", x)
    res = tn._run("propagate", "--net", spec, "--x", tmp_path / "x.npy", "--steps", "--json")
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    want = nw.steps(nw.from_spec(SPEC), x)
    assert set(d) == {"q", "correlation", "gradient", "chi", "lengths", "output"}
    np.testing.assert_array_equal(np.array(d["gradient"]), want.gradient)
    res = tn._run("propagate", "--net", spec, "--x", tmp_path / "x.npy", "--steps")
    assert res.exit_code == 0 and "gradient(mean)" in res.stdout and len(res.stdout.splitlines()) == 5
    spec.write_text(json.dumps([{"layer": "dense"}]))
    res = tn._run("propagate", "--net", spec, "--x", tmp_path / "x.npy", "--steps")
    assert res.exit_code == 2 and "this network has no rnn layer" in res.stderr


@pytest.mark.parametrize("cmd", ["kernel", "propagate"])
def test_cli_rnn_without_a_time_axis_exits_2(tmp_path, cmd):
    spec = tmp_path / "net.json"
    spec.write_text(json.dumps(SPEC))
    np.save(tmp_path / "x.npy", RNG.standard_normal((3, 4)))
    out = tmp_path / "K.npz"
    extra = ["--out", out] if cmd == "kernel" else []
    res = tn._run(cmd, "--net", spec, "--x", tmp_path / "x.npy", *extra)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "layers[0]: rnn needs inputs with one time axis" in lines[0], res.stderr
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# the layer contract (tests/test_network.py's helpers)
# ------------------------------------------------------------------------------------------
CONTRACT = {
    "rnn-erf-last": ([nw.rnn("erf", 1.2, 1.5, 0.2)], (2, 4, 3)),
    "rnn-tanh-mean-no-bias": ([nw.rnn("tanh", 0.9, 1.5, None, "mean")], (2, 3, 3)),
    "rnn-after-dense-readout": ([nw.dense(1.0), nw.rnn("erf", 1.0, 1.0, 0.1, "mean"), nw.dense(1.0)], (2, 3, 2)),
    "rnn-all-stacked": ([nw.rnn("erf", 1.0, 1.5, 0.1, "all"), nw.rnn("tanh", 1.2, 1.0, 0.1)], (2, 3, 2)),
    "rnn-all-positions-out": ([nw.rnn("erf", 1.0, 1.5, 0.1, "all")], (2, 3, 2)),
}
_ragged = np.zeros((2, 4, 3))
_ragged[0, :2] = RNG.standard_normal((2, 3))
_ragged[1] = RNG.standard_normal((4, 3))


@pytest.mark.parametrize("name", list(CONTRACT))
def test_vjp_is_the_derivative_of_apply(name):
    tn.check_vjp(*CONTRACT[name])


@pytest.mark.parametrize("name", list(CONTRACT))
def test_empirical_ntk_is_the_parameter_jacobian_gram(name):
    tn.check_ntk_gram(*CONTRACT[name])


def test_masked_vjp_and_ntk_terms():
    """The same contract on zero-padded sequences with masking (padding gets no gradient)."""
    net = nw.serial(nw.rnn("erf", 1.2, 1.5, 0.2, "mean", masking=True))
    f = net.sample(6, rng=2)
    f.forward(_ragged)   # draws the parameters
    y, cache = net.apply(f.params, _ragged)
    g = RNG.standard_normal(y.shape)
    gx = net.vjp(f.params, cache, g)
    assert np.all(gx[0, 2:] == 0)
    v = RNG.standard_normal(_ragged.shape) * (_ragged != 0)
    h = 1e-6
    fd = (np.sum(g * f.forward(_ragged + h * v)) - np.sum(g * f.forward(_ragged - h * v))) / (2 * h)
    assert np.sum(gx * v) == pytest.approx(fd, rel=1e-6)


def test_realised_init_variance():
    layer = nw.rnn("erf", 1.0, 2.0, 0.2)
    p, out = layer.init(np.random.default_rng(0), (4, 3), 1500)
    assert out == (1500,) and p["W"].shape == (1500, 1500) and p["U"].shape == (3, 1500)
    aw, au = layer._scales(p)
    for w, var in ((aw * p["W"], 1.0 / 1500), (au * p["U"], 2.0 / 3), (np.sqrt(0.2) * p["b"], 0.2)):
        assert w.var() == pytest.approx(var, rel=5 * np.sqrt(2 / w.size))


# ------------------------------------------------------------------------------------------
# Monte Carlo (slow): NTK4A's erf RNN against wide random RNNs
# ------------------------------------------------------------------------------------------
MC = {
    "ntk4a-erf-last": ([nw.rnn("erf", **NTK4A), nw.dense(1.0)], None, 1024),
    "ntk4a-erf-mean-ragged": ([nw.rnn("erf", **NTK4A, output="mean", masking=True), nw.dense(1.0)], "ragged", 1024),
    "stacked-dense-relu-all-erf-mean": ([nw.dense(1.0, 0.1), nw.rnn("relu", 0.8, 1.5, 0.1, "all"),
                                         nw.rnn("erf", 1.0, 1.0, 0.1, "mean"), nw.dense(1.0)], None, 512),
}


def _mc_inputs(kind):
    rng = np.random.default_rng(11)
    if kind == "ragged":
        return nw.pad_sequences([rng.standard_normal((L, 3)) for L in (2, 4, 3)])
    return rng.standard_normal((3, 4, 3))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MC))
def test_kernels_match_a_wide_network(name):
    layers, kind, width = MC[name]
    tmc.check_wide_network(nw.serial(*layers), _mc_inputs(kind), name, width=width)


@pytest.mark.slow
def test_backward_map_matches_a_wide_network():
    """The backward map's input-gradient covariance at each step against BPTT of random RNNs
    with a N(0, 1) output gradient (G = I at the RNN's output), 5 standard errors; "mean" also on
    a masked sequence (its padding gets no gradient)."""
    from meanfield.network.core import initial_state

    X0 = np.random.default_rng(3).standard_normal((2, 5, 64))
    Xm = X0.copy()
    Xm[0, 3:] = 0.0
    for output, masking, X in (("last", False, X0), ("mean", False, X0), ("all", False, X0), ("mean", True, Xm)):
        net = nw.serial(nw.rnn("erf", **NTK4A, output=output, masking=masking))
        _, back = net.layers[0].fold(initial_state(X, "ntk", False, "auto"))
        P = 5 if output == "all" else 1
        want = back(np.broadcast_to(np.eye(P), (2, P, P)).copy())
        R = 64   # many cheap networks: 8 leave the t-test too weak to see a 10% error
        emp = []
        for r in range(R):
            f = net.sample(512, rng=50 + r)
            f.forward(X)   # draws the parameters
            y, cache = net.apply(f.params, X)
            g = np.random.default_rng(90 + r).standard_normal(y.shape)
            gx = net.vjp(f.params, cache, g)
            # dx = sqrt(width) df/dx (MATH.md 5.2): the sum over input channels / width
            emp.append(np.einsum("ntc,nrc->ntr", gx, gx) / 512)
        emp = np.array(emp)
        se = emp.std(axis=0, ddof=1) / np.sqrt(R)
        z = (emp.mean(axis=0) - want) / np.maximum(se, 1e-12)
        assert np.abs(z).max() < 5, f"{output}: largest |z| = {np.abs(z).max():.2f}"


@pytest.mark.slow
def test_finite_width_error_falls_like_inverse_sqrt_width():
    """NTK4A's erf RNN, last state: the relative RMS error of one network's empirical NTK against
    the theory, averaged over 8 networks, over widths 128 .. 1024 (a wrong limit flattens it)."""
    net = nw.serial(nw.rnn("erf", **NTK4A), nw.dense(1.0))
    X = np.random.default_rng(12).standard_normal((5, 4, 3))
    theory = net.kernel(X).ntk
    scale = np.sqrt(np.mean(theory ** 2))
    widths = (128, 256, 512, 1024)
    errs = []
    for i, w in enumerate(widths):
        _, emp = tmc._empirical(net, X, w, 8, seed=1000 * (i + 1) + 21)
        errs.append(np.mean([np.sqrt(np.mean((e - theory) ** 2)) / scale for e in emp]))
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    print(f"rnn NTK error slope {slope:.3f}, errors {errs}")
    assert -0.7 < slope < -0.3, f"slope {slope:.3f}, errors {errs}"
