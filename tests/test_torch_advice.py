"""meanfield.torch.advise_model: per-layer variances for any readable model with their reasons,
applied by init_, and checked against the model itself (compare_model's standard errors,
calibrated in tests/test_torch_graph.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import meanfield.torch as mft  # noqa: E402
from meanfield.advise import advise  # noqa: E402
from meanfield.errors import DomainError  # noqa: E402
from meanfield.network.batchnorm import gradient_growth  # noqa: E402
from meanfield.residual import advise_residual  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("torch_one_thread")]


def _tanh_mlp(width, depth, d=32):
    layers = [nn.Linear(d, width), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


class Block(nn.Module):
    """x + V relu(W x): the residual block meanfield.torch reads (docs/theory.md §A2.1)."""

    def __init__(self, n: int):
        super().__init__()
        self.w, self.v = nn.Linear(n, n), nn.Linear(n, n)

    def forward(self, x):
        return x + self.v(F.relu(self.w(x)))


def _correlated(shape, seed, c=0.36):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((shape[0] + 1,) + tuple(shape[1:]), generator=g)
    return math.sqrt(c) * z[:1] + math.sqrt(1 - c) * z[1:]


@pytest.mark.slow
def test_deep_tanh_mlp_advised_initialised_and_measured():
    depth, width = 16, 512
    model = _tanh_mlp(width, depth)
    x = _correlated((8, 32), 0)
    adv = mft.advise_model(model, x)
    ref = advise("mlp", "tanh", depth, ntk=False)        # the law the reasons cite
    assert adv.arch == "mlp" and adv.depth == depth and adv.activations == ("tanh",)
    assert len(adv.layers) == depth + 1 and adv.layers[-1].role == "readout"
    for la in adv.layers:
        assert la.sigma_w2 == pytest.approx(ref.sigma_w2, rel=1e-12)
        assert la.sigma_b2 == pytest.approx(ref.sigma_b2, rel=1e-12)
    assert "edge of chaos of tanh for depth 16" in adv.layers[0].reason
    # PyTorch's default (sigma_w2 = 1/3) is deep in the ordered phase: the signal and the
    # gradient vanish; at the advised point they do not
    assert adv.default.q[-2] < 1e-2 * adv.default.q[0]
    assert adv.default.log10_gradient_ratio < -6
    assert -4 < adv.advised.log10_gradient_ratio < 0
    mft.init_(model, adv, seed=0)
    rec = model._meanfield_init
    assert isinstance(rec, mft.ModelInitRecord) and rec.seed == 0 and rec.untouched == ()
    # measured against the prediction at the advice's exact variances: every q row within 4
    # rel_se (readout aside: 10 units), every gradient row within 4 grad_rel_se, and so is the
    # gradient ratio of the first layer
    cmp = mft.compare_model(model, x, net=adv.network)
    assert np.nanmax(np.abs(cmp.z[:-1])) < 4 and np.nanmax(cmp.rel_se[:-1]) < 0.15
    assert np.nanmax(np.abs(cmp.grad_z)) < 4 and np.nanmax(cmp.grad_rel_se) < 0.15
    meas, pred = cmp.log10_gradient_ratio
    assert pred == pytest.approx(adv.advised.log10_gradient_ratio, abs=1e-9)
    assert abs(meas - pred) < 4 * cmp.grad_rel_se[0] / math.log(10)
    # the same weights, the same draw
    w0 = model[0].weight.detach().clone()
    mft.init_(model, adv, seed=0, force=True)
    assert torch.equal(model[0].weight, w0)


def test_init_refuses_twice_and_foreign_advice():
    model = _tanh_mlp(16, 2)
    x = torch.randn(4, 32)
    adv = mft.advise_model(model, x)
    mft.init_(model, adv, seed=1)
    with pytest.raises(DomainError, match=r"^Sequential was already initialised .*force=True"):
        mft.init_(model, adv)
    other = nn.Sequential(nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 16))
    with pytest.raises(DomainError, match=r"^4: the advice names a module this model does not have"):
        mft.init_(other, adv)
    with pytest.raises(DomainError, match="sigma_w2 cannot be given with it"):
        mft.init_(_tanh_mlp(16, 2), adv, sigma_w2=1.0)
    # measure/compare still read a model marked by a ModelAdvice
    assert mft.compare(model, x).measured.q.shape == (3,)


def test_cnn_with_batchnorm_gets_its_statement():
    layers, cin = [], 3
    for _ in range(3):
        layers += [nn.Conv2d(cin, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU()]
        cin = 32
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(32, 10))
    # the algebra's batch_norm folds the whole batch x positions at once: kept small (4 x 16)
    x = torch.randn(4, 3, 4, 4)
    adv = mft.advise_model(model, x)
    lam = gradient_growth(4, "relu")
    assert lam > 1.2     # pi / (pi - 1) = 1.467 at large batch, docs/theory.md §A5.6
    assert adv.batch_norm.startswith("3 BatchNorm layer(s)")
    assert f"lambda = {lam:.4g}" in adv.batch_norm and f"{lam ** 3:.4g}" in adv.batch_norm
    assert adv.layers[0].sigma_b2 is None and "batch_norm follows" in adv.layers[0].reason
    assert adv.layers[0].sigma_w2 == pytest.approx(2.0)      # relu's critical point
    assert "no gradient prediction" in adv.advised.note
    assert np.isfinite(adv.advised.q).all()
    mft.init_(model, adv, seed=0)
    assert model._meanfield_init.reset == ("1", "4", "7")


def test_resnet_branches_scaled_for_depth():
    x = torch.randn(4, 32)
    vs = {}
    for depth in (10, 40):
        model = nn.Sequential(nn.Linear(32, 64), *[Block(64) for _ in range(depth)],
                              nn.Linear(64, 10))
        adv = mft.advise_model(model, x)
        ref = advise_residual("resnet-full", "relu", depth)
        assert adv.arch == "resnet-full" and adv.depth == depth
        roles = [la.role for la in adv.layers]
        assert roles == ["stem"] + ["branch W", "branch V"] * depth + ["head"]
        w, v = adv.layers[1], adv.layers[2]
        assert (w.module, v.module) == ("1.w", "1.v")
        assert w.sigma_w2 == pytest.approx(ref.sigma_w2) and v.sigma_w2 == pytest.approx(ref.sigma_v2)
        assert "scales the branch for the depth" in v.reason
        vs[depth] = w.sigma_w2 * v.sigma_w2
    # relu: sigma_v2 sigma_w2 = 2 (e^(G/L) - 1) = O(1/L) (docs/theory.md §A2.8)
    assert vs[40] < 0.5 * vs[10]


def test_unreadable_models_refused_in_one_line():
    x = torch.randn(4, 3, 8, 8)
    with pytest.raises(DomainError, match=r"^2 \(MaxPool2d\): max pooling is refused"):
        mft.advise_model(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2)), x)

    class Proj(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.s = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(8, 16)

        def forward(self, x):
            return self.s(x) + self.b(torch.tanh(self.a(x)))

    with pytest.raises(DomainError, match=r"^a: a residual block with a projection shortcut"):
        mft.advise_model(Proj(), torch.randn(4, 8))
    with pytest.raises(DomainError, match="single weight layer"):
        mft.advise_model(nn.Sequential(nn.Linear(8, 2)), torch.randn(4, 8))
