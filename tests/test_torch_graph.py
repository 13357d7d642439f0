"""meanfield.torch.graph (and compare_model): any traced model read into the network algebra (to_network), and the
model's per-layer q measured beside the algebra's prediction (compare_model).

The reference for the predictions is the model itself: at width n, a layer's q is a mean over n
channels that are independent given the layer's input, so its relative error is se/q with se the
channels' standard error (about sqrt(kappa / (n N_eff)), kappa = 2 for a Gaussian unit, 5 for a
relu of one, N_eff <= N the batch's effective number of independent inputs); earlier layers' draws
add in quadrature when the map of log q has slope <= 1 (relu, tanh, normalisations, residual
streams).  That is ModelComparison.rel_se; every row must lie within 4 rel_se, and rel_se itself
must be small (so the check can fail).
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from meanfield import network as nw  # noqa: E402
from meanfield.errors import DomainError  # noqa: E402
from meanfield.torch import compare_model, to_channels_last, to_network  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("torch_one_thread")]


def _init(model: nn.Module, sw2: float, sb2: float | None, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                fan = m.weight[0].numel()
                m.weight.normal_(0.0, math.sqrt(sw2 / fan), generator=g)
                if m.bias is not None:
                    m.bias.normal_(0.0, math.sqrt(sb2), generator=g)
    return model


def _check_profile(cmp, max_rel_se: float, skip_last: bool = True) -> None:
    rows = cmp.rows()[:-1] if skip_last else cmp.rows()
    for r in rows:
        if r["layer"] == "batch_norm":      # q = 1 by construction, up to its eps
            assert abs(r["rel_error"]) < 1e-4, r
            continue
        assert r["rel_se"] < max_rel_se, r
        assert abs(r["rel_error"]) < 4 * r["rel_se"], r


class Block(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.w, self.v = nn.Linear(n, n), nn.Linear(n, n)

    def forward(self, x):
        return x + self.v(F.relu(self.w(x)))


def _tanh_mlp(width=512, depth=8, d=32):
    layers = [nn.Linear(d, width), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _cnn(c=256, depth=6, bn=False):
    layers, cin = [], 3
    for _ in range(depth):
        layers.append(nn.Conv2d(cin, c, 3, padding=1, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm2d(c))
        layers.append(nn.ReLU())
        cin = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(c, 10))


# ------------------------------------------------------------------------------------------
# predicted against measured q, five families
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_deep_tanh_mlp_q_profile():
    torch.manual_seed(0)
    model = _init(_tanh_mlp(), 1.5, 0.05, seed=1)
    cmp = compare_model(model, torch.randn(8, 32))
    assert cmp.layers[:4] == ("dense", "tanh", "dense", "tanh") and len(cmp.layers) == 17
    assert cmp.modules[1] == "1 (Tanh)"
    _check_profile(cmp, 0.1)


@pytest.mark.slow
def test_plain_cnn_q_profile():
    torch.manual_seed(0)
    model = _init(_cnn(), 2.0, 0.0, seed=2)
    x = torch.randn(4, 3, 8, 8)
    net, layout = to_network(model, x)
    assert layout.channels_first and layout.permutation == (0, 2, 3, 1)
    assert [type(l).__name__ for l in net.layers[-3:]] == ["GlobalAvgPool", "Flatten", "Dense"]
    assert net.layers[0].padding == "same" and net.layers[0].filter == (3, 3)
    cmp = compare_model(model, x)
    # zero padding loses signal at the edges: the prediction falls with depth, and so does q
    assert cmp.predicted[10] < 0.7 * cmp.predicted[0]
    _check_profile(cmp, 0.25)


@pytest.mark.slow
def test_residual_mlp_q_profile():
    torch.manual_seed(0)
    model = _init(nn.Sequential(nn.Linear(32, 512), *[Block(512) for _ in range(4)],
                                nn.Linear(512, 1)), 1.0, 0.01, seed=3)
    net, _ = to_network(model, torch.randn(2, 32))
    res = net.layers[1]
    assert isinstance(res, nw.Residual) and res.shortcut.layers == ()
    assert [l.name for l in res.branch.layers] == ["dense", "relu", "dense"]
    cmp = compare_model(model, torch.randn(8, 32))
    assert cmp.modules[1] == "1: add()"
    assert math.isnan(cmp.se[-1])           # a one-unit readout: no spread to estimate from
    # the stream grows by sigma_v2 E[relu(h)^2] per block: an independent check of the drift
    q0, q1 = cmp.predicted[0], cmp.predicted[1]
    assert q1 - q0 == pytest.approx(net.layers[1].branch.layers[2].sigma_w2
                                    * 0.5 * (net.layers[1].branch.layers[0].sigma_w2 * q0
                                             + net.layers[1].branch.layers[0].sigma_b2)
                                    + net.layers[1].branch.layers[2].sigma_b2, rel=1e-9)
    _check_profile(cmp, 0.1)


@pytest.mark.slow
def test_gelu_layernorm_mlp_q_profile():
    torch.manual_seed(0)
    w = 512
    model = _init(nn.Sequential(nn.Linear(32, w), nn.GELU(), nn.LayerNorm(w), nn.Linear(w, w),
                                nn.GELU(), nn.LayerNorm(w), nn.Linear(w, w), nn.GELU(),
                                nn.Linear(w, 10)), 1.0, 0.0, seed=4)
    cmp = compare_model(model, torch.randn(8, 32))
    assert cmp.layers[2] == "layer_norm"
    assert cmp.predicted[2] == pytest.approx(1.0, abs=1e-12)
    assert any("eps" in n for n in cmp.notes)
    _check_profile(cmp, 0.1)


@pytest.mark.slow
def test_batchnorm_cnn_q_profile():
    torch.manual_seed(0)
    model = _init(_cnn(c=256, depth=3, bn=True), 2.0, 0.0, seed=5)
    x = torch.randn(4, 3, 4, 4)
    bn = model[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    model.eval()
    cmp = compare_model(model, x)
    # the model's modes and BatchNorm's running statistics are left as they were
    assert not model.training and not bn.training
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert cmp.layers[1:3] == ("batch_norm", "relu")
    assert cmp.predicted[2] == pytest.approx(0.5, rel=1e-6)   # relu of a normalised unit
    _check_profile(cmp, 0.25)


# ------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------


def test_read_variances_equal_the_init_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512, bias=False), nn.ReLU(),
                          nn.Linear(512, 3))
    net, _ = to_network(model, torch.randn(2, 64))
    d0, d1, d2 = (net.layers[i] for i in (0, 2, 4))
    w = model[2].weight.detach().double()
    assert d1.sigma_w2 == pytest.approx(512 * float((w * w).sum()) / w.numel(), rel=1e-12)
    assert d1.sigma_b2 is None
    # torch's default: W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), so sigma_w2 = 1/3 and
    # sigma_b2 = 1/(3 fan_in); the sample mean square of k uniforms has relative sd sqrt(0.8 / k)
    for layer, k in ((d0, 64 * 512), (d1, 512 * 512), (d2, 512 * 3)):
        assert layer.sigma_w2 == pytest.approx(1 / 3, rel=5 * math.sqrt(0.8 / k))
    assert d0.sigma_b2 == pytest.approx(1 / (3 * 64), rel=5 * math.sqrt(0.8 / 512))
    conv = nn.Conv2d(3, 256, 3, padding=1)
    cn, _ = to_network(nn.Sequential(conv, nn.ReLU()), torch.randn(1, 3, 5, 5))
    cw = conv.weight.detach().double()
    assert cn.layers[0].sigma_w2 == pytest.approx(27 * float((cw * cw).mean()), rel=1e-12)
    assert cn.layers[0].sigma_w2 == pytest.approx(1 / 3, rel=5 * math.sqrt(0.8 / cw.numel()))
    # a Gaussian draw of variance s / fan_in reads back s
    _init(model, 1.7, 0.2, seed=0)
    net, _ = to_network(model, torch.randn(2, 64))
    assert net.layers[2].sigma_w2 == pytest.approx(1.7, rel=5 * math.sqrt(2 / 512 ** 2))


def test_layout_and_helper():
    x = torch.randn(2, 3, 5, 7)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Dropout(0.1), nn.Linear(8 * 1 * 2, 4))
    net, layout = to_network(model, x)
    a = to_channels_last(x)
    assert a.shape == (2, 5, 7, 3) and np.array_equal(a, x.permute(0, 2, 3, 1).double().numpy())
    assert np.array_equal(layout.to_channels_last(x), a)
    assert net.layers[0].padding == "valid" and net.layers[2].window == (2, 2)
    assert net.check(a).channels is None
    assert any("Dropout" in n and "identity" in n for n in layout.notes)
    json.dumps(layout.to_dict())
    # a sequence read by a Linear first is already channels last; flattening it is read too
    # (the order of the units does not enter the kernel)
    seq, lay = to_network(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2)),
                          torch.randn(2, 4, 6))
    assert not lay.channels_first and lay.permutation == (0, 1, 2)
    assert [l.name for l in seq.layers] == ["dense", "relu", "flatten", "dense"]
    with pytest.raises(DomainError, match="shaped like"):
        layout.to_channels_last(torch.randn(2, 3))


def test_functional_forms_and_projection_shortcut():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
            self.proj, self.fc = nn.Conv2d(3, 16, 1), nn.Linear(16, 2)

        def forward(self, x):
            h = self.c2(F.relu(self.c1(x)))
            h = self.proj(x) + h         # projection shortcut, written shortcut first
            h = torch.relu(h)
            return self.fc(h.mean(dim=(2, 3)))

    x = torch.randn(2, 3, 6, 6)
    net, layout = to_network(Net(), x)
    res = net.layers[0]
    assert isinstance(res, nw.Residual)
    assert [l.name for l in res.branch.layers] == ["conv", "relu", "conv"]
    assert [l.name for l in res.shortcut.layers] == ["conv"]
    assert [l.name for l in net.layers[1:]] == ["relu", "global_avg_pool", "dense"]
    assert layout.modules[-2] == ".mean()"
    json.dumps(compare_model(Net(), x).to_dict())


class Seq1d(nn.Module):
    """Conv1d with circular padding, PReLU, a padded AvgPool, a strided conv, a .relu() method,
    functional eval dropout, a view-flatten and Softplus."""

    def __init__(self, c=256):
        super().__init__()
        self.c1 = nn.Conv1d(4, c, 3, padding=1, padding_mode="circular")
        self.act = nn.PReLU(init=0.2)
        self.pool = nn.AvgPool1d(3, stride=1, padding=1)
        self.c2 = nn.Conv1d(c, c, 3, stride=2)
        self.fc, self.sp, self.out = nn.Linear(c * 3, c), nn.Softplus(), nn.Linear(c, 2)

    def forward(self, x):
        h = self.pool(self.act(self.c1(x)))
        h = F.dropout(self.c2(h).relu(), 0.5, training=False)
        h = h.view(h.size(0), -1)
        return self.out(self.sp(self.fc(h)))


@pytest.mark.slow
def test_more_forms_read_and_predicted():
    torch.manual_seed(0)
    model = _init(Seq1d(), 1.5, 0.05, seed=0)
    x = torch.randn(8, 4, 8)
    net, layout = to_network(model, x)
    got = [(l.name, getattr(l, "padding", None), getattr(l, "strides", None)) for l in net.layers]
    assert got == [("conv", "circular", (1,)), ("leaky_relu:0.2", None, None),
                   ("avg_pool", "same", (1,)), ("conv", "valid", (2,)), ("relu", None, None),
                   ("flatten", None, None), ("dense", None, None), ("softplus", None, None),
                   ("dense", None, None)]
    assert layout.modules[4:6] == (".relu()", ".view()")
    _check_profile(compare_model(model, x), 0.15)


# ------------------------------------------------------------------------------------------
# refusals: one line, naming the module
# ------------------------------------------------------------------------------------------


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


def _refused(model, x, *parts):
    with pytest.raises(DomainError) as e:
        to_network(model, x)
    msg = str(e.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, msg


def test_refusals_name_the_module():
    x = torch.randn(2, 3, 8, 8)
    _refused(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2)), x,
             "2 (MaxPool2d)", "max pooling")
    _refused(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2)), x,
             "2 (Conv2d)", "groups=2")
    _refused(nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2)), x, "0 (Conv2d)", "dilation")
    _refused(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1)), x, "0 (Conv2d)", "TF")
    _refused(nn.Sequential(nn.Conv2d(3, 4, 1), nn.AvgPool2d(3, ceil_mode=True)), x,
             "1 (AvgPool2d)", "ceil_mode")
    z = torch.randn(2, 5)
    _refused(nn.Sequential(nn.Linear(5, 4), Swish()), z, "1: mul()", "not guessed")
    _refused(nn.Sequential(nn.Linear(5, 4), nn.Mish()), z, "1 (Mish)", "not read")
    _refused(nn.Sequential(nn.Linear(5, 4), nn.GELU(approximate="tanh")), z, "1 (GELU)")
    ln = nn.LayerNorm(4)
    with torch.no_grad():
        ln.weight.fill_(2.0)
    _refused(nn.Sequential(nn.Linear(5, 4), ln), z, "1 (LayerNorm)", "affine weight")
    lin = nn.Linear(5, 4)
    with torch.no_grad():
        lin.bias.fill_(0.1)
    _refused(nn.Sequential(lin, nn.ReLU()), z, "0 (Linear)", "mean")
    shared = nn.Linear(4, 4)
    _refused(nn.Sequential(nn.Linear(5, 4), shared, nn.ReLU(), shared), z, "called twice")
    _refused(nn.Sequential(nn.Linear(5, 4)), torch.randn(2, 6), "example_input of shape (2, 6)",
             "mat1 and mat2")
    # the algebra's own refusal (an activation of an activation), with the module's path
    _refused(nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Tanh()), z, "2 (Tanh)", "Gaussian")

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(5, 5)

        def forward(self, x):
            if x.sum() > 0:
                return self.a(x)
            return x

    _refused(Branchy(), z, "torch.fx could not trace Branchy")

    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 4), nn.Linear(5, 4)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], dim=1)

    _refused(Cat(), z, "cat()", "not read")

    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 4), nn.Linear(5, 4)

        def forward(self, x):
            self.b(x)
            return self.a(x)

    _refused(Dead(), z, "b (Linear)", "does not reach the model's output")

    class Perm(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(5, 4)

        def forward(self, x):
            return self.a(x).permute(1, 0)

    _refused(Perm(), z, ".permute()")

    class SelfAdd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(5, 4)

        def forward(self, x):
            h = self.a(x)
            return h + torch.relu(h)     # branch and shortcut correlated: no weight in between

    _refused(SelfAdd(), z, "add().branch", "must contain a dense or conv layer")

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(5, 4)

        def forward(self, x, y):
            return self.a(x)

    _refused(TwoInputs(), z, "takes 2 inputs")

    class AddParam(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.p = nn.Linear(5, 4), nn.Parameter(torch.zeros(4))

        def forward(self, x):
            return self.a(x) + self.p

    _refused(AddParam(), z, "add(): adds p", "not computed from the input")

    class BasicBlock(nn.Module):     # torchvision's shape: relu(bn2(conv2(relu(bn1(conv1 x)))) + x)
        def __init__(self, c):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.relu = nn.ReLU()    # called twice: allowed, it has no parameters

        def forward(self, x):
            out = self.b2(self.c2(self.relu(self.b1(self.c1(x)))))
            out += x
            return self.relu(out)

    _refused(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BasicBlock(8)), torch.randn(2, 3, 4, 4),
             "1.relu (ReLU)", "Gaussian", "its input is the output of 1: add() (residual)")


def test_bad_input_prints_no_traceback(capfd):
    with pytest.raises(DomainError, match="example_input of shape"):
        to_network(nn.Sequential(nn.Linear(5, 4)), torch.randn(2, 6))
    with pytest.raises(DomainError, match="example_input: expected a floating-point"):
        to_network(nn.Sequential(nn.Linear(5, 4)), np.zeros((2, 5)))
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


def test_compare_model_leaves_dropout_model_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 4))
    model.train()
    x = torch.randn(4, 16)
    with torch.no_grad():
        ref = copy.deepcopy(model).eval()(x)
    cmp = compare_model(model, x)
    assert model.training and model[2].training
    # eval-mode dropout: the measured readout q is that of the deterministic forward pass
    assert cmp.measured[-1] == pytest.approx(float((ref.double() ** 2).mean()), rel=1e-6)


# ------------------------------------------------------------------------------------------
# correlations and gradients beside the prediction
# ------------------------------------------------------------------------------------------
#
# The reference is again the model itself: c_se is the spread of the pair correlation over 16
# channel groups, grad_rel_se the channels' spread of the gradient's mean square accumulated from
# the top down.  Calibration (not asserted here, 10-12 seeds of each net below, batch 8 with input
# correlation 0.36): the standard deviation of c_z per row was 0.55-1.1 (tanh MLP), 0.5-1.3 (CNN),
# 0.5-0.97 (GELU + LayerNorm), that of grad_z 0.75-1.04, 0.4-0.8, 0.63-1.13; the largest |z| of
# any row and seed 2.9, 2.8, 3.0 (c) and 3.0, 1.8, 2.6 (gradients).  The band is 4.


def _correlated(shape, seed, c=0.36):
    """Inputs with pairwise correlation ~c: sqrt(c) z0 + sqrt(1 - c) z_i."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((shape[0] + 1,) + tuple(shape[1:]), generator=g)
    return math.sqrt(c) * z[:1] + math.sqrt(1 - c) * z[1:]


def _gelu_ln(w=512):
    return nn.Sequential(nn.Linear(32, w), nn.GELU(), nn.LayerNorm(w), nn.Linear(w, w), nn.GELU(),
                         nn.LayerNorm(w), nn.Linear(w, w), nn.GELU(), nn.Linear(w, 10))


def _check_c_and_grad(cmp, max_c_se: float, max_g_se: float) -> None:
    for r in cmp.rows()[:-1]:
        assert r["c_se"] < max_c_se and abs(r["c_z"]) < 4, r
        assert r["grad_rel_se"] < max_g_se and abs(r["grad_z"]) < 4, r
    assert cmp.grad_measured[-1] == cmp.grad_predicted[-1] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tanh", "cnn", "gelu_ln"])
def test_correlations_and_gradients_within_their_errors(family):
    for seed in (0, 1):
        if family == "tanh":
            model, x = _init(_tanh_mlp(512, 8, 32), 1.5, 0.05, seed), _correlated((8, 32), seed)
        elif family == "cnn":
            model, x = _init(_cnn(256, 6), 2.0, 0.0, seed), _correlated((4, 3, 8, 8), seed)
        else:
            model, x = _init(_gelu_ln(), 1.0, 0.0, seed), _correlated((8, 32), seed)
        cmp = compare_model(model, x, seed=seed)
        _check_profile(cmp, 0.25)
        _check_c_and_grad(cmp, 0.06, 0.15)
        # the correlations are not trivially 0 or 1 somewhere in the net, so c is tested
        assert 0.2 < cmp.c_predicted[0] < 0.9
        d = cmp.to_dict()
        assert len(d["grad_rel_se"]) == len(cmp.layers) and d["grad_rel_se"][-1] is None


@pytest.mark.slow
def test_a_wrong_prediction_is_caught():
    """The measured profile against the prediction for other variances (every weight layer's
    sigma_w2 x 1.25): q and the gradients leave the band of 4 standard errors."""
    model, x = _init(_tanh_mlp(512, 8, 32), 1.5, 0.05, 0), _correlated((8, 32), 0)
    net, _ = to_network(model, x)
    wrong = copy.deepcopy(net)
    for layer in wrong.flat():
        if isinstance(layer, nw.Dense):
            layer.sigma_w2 *= 1.25
    good = compare_model(model, x)
    bad = compare_model(model, x, net=wrong)
    assert np.nanmax(np.abs(good.z[:-1])) < 4 and np.nanmax(np.abs(good.grad_z)) < 4
    assert np.nanmax(np.abs(bad.z)) > 4
    assert np.nanmax(np.abs(bad.grad_z)) > 4
    with pytest.raises(DomainError, match="net must be a meanfield Network with the layers"):
        compare_model(model, x, net=nw.Network([nw.dense(1.0)]))


def test_compare_model_gradients_leave_grad_buffers_and_bn_has_none():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 2))
    cmp = compare_model(model, torch.randn(4, 8))
    assert all(p.grad is None for p in model.parameters())
    assert np.all(np.isfinite(cmp.grad_predicted)) and np.all(np.isfinite(cmp.c_measured))
    bn = _init(_cnn(c=16, depth=2, bn=True), 2.0, 0.0, seed=0)
    cb = compare_model(bn, torch.randn(4, 3, 4, 4))
    assert np.all(np.isnan(cb.grad_predicted)) and any("no gradient prediction" in n for n in cb.notes)
    assert np.all(np.isfinite(cb.grad_measured)) and np.all(np.isfinite(cb.c_predicted))


def test_plot_profile_draws_a_model_comparison():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from meanfield.torch import plot_profile

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 2))
    cmp = compare_model(model, torch.randn(4, 8))
    for q, label in (("q", "$q^l$"), ("c", "mean correlation"), ("grad", "gradient")):
        ax = plot_profile(cmp, quantity=q)
        assert ax.get_ylabel().startswith(label)
        # the theory line is the prediction, row by row
        assert np.allclose(ax.lines[0].get_ydata(), {"q": cmp.predicted, "c": cmp.c_predicted,
                                                     "grad": cmp.grad_predicted}[q])
        plt.close(ax.figure)
    with pytest.raises(DomainError, match="quantity must be one of q, c, grad"):
        plot_profile(cmp, quantity="p")


@pytest.mark.slow
def test_resnet18_sized_model_read_and_predicted():
    """scripts/bench_torch_resnet18.py's model (11.2 M parameters, projection shortcuts with
    stride 2) at a tiny size: read, predicted, and within 4 rel_se of the model's q."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_torch_resnet18.py"
    spec = importlib.util.spec_from_file_location("bench_torch_resnet18", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    model = mod.ResNet18()
    assert sum(p.numel() for p in model.parameters()) == 11_168_266
    x = torch.randn(4, 3, 9, 9)
    net, _ = to_network(model, x)
    res = [l for l in net.layers if isinstance(l, nw.Residual)]
    assert len(res) == 8 and sum(bool(r.shortcut.layers) for r in res) == 3
    cmp = compare_model(model, x)
    _check_profile(cmp, 0.25)
