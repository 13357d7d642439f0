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


class _Encoder(nn.Module):
    """Pre-norm transformer encoder blocks x + attn(LN x), x + MLP(LN x) between a stem and a head."""

    def __init__(self, layers: int, E: int = 32, norm_first: bool = True):
        super().__init__()
        self.inp = nn.Linear(6, E)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(E, 2, 2 * E, dropout=0.0, batch_first=True,
                                                               norm_first=norm_first) for _ in range(layers))
        self.out = nn.Linear(E, 3)

    def forward(self, x):
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h)
        return self.out(h.mean(1))


def test_any_residual_branch_scaled_to_the_budget():
    """Transformer blocks: inner layers at relu's edge of chaos, W_Q = 0, every branch end at one
    variance s at which the predicted growth over the blocks meets the budget; init_ applies it."""
    torch.manual_seed(0)
    x = torch.randn(4, 5, 6)
    model = _Encoder(2).eval()
    budgets = {}
    for G in (0.5, 1.0):
        adv = mft.advise_model(model, x, budget=G)
        assert adv.arch == "resnet-any" and adv.depth == 4
        roles = {la.module: la for la in adv.layers}
        assert roles["layers.0.linear1"].role == "branch inner" and roles["layers.0.linear1"].sigma_w2 == 2.0
        ends = [la for la in adv.layers if la.role in ("branch end", "attention out")]
        assert len(ends) == 4 and len({la.sigma_w2 for la in ends}) == 1
        assert roles["layers.1.self_attn"].role == "attention query" and roles["layers.1.self_attn"].sigma_w2 == 0
        budgets[G] = ends[0].sigma_w2
        # the budget is met by the larger of the two growths, recomputed from the advised network
        p = adv.network.propagate(x.numpy())
        rows = [layer.name for layer in adv.network.layers]
        first, last = rows.index("residual"), len(rows) - 1 - rows[::-1].index("residual")
        q = p.q.mean(axis=1)
        fwd = math.log(q[last] / q[first - 1])
        # the gradient's second moment per unit (widths' fan_out/fan_in included, as compare_model)
        grad = abs(math.log(adv.advised.gradient[first] / adv.advised.gradient[last]))
        assert max(fwd, grad) == pytest.approx(G, rel=1e-4)
    assert budgets[0.5] < budgets[1.0] < 1.0
    mft.init_(model, adv, seed=3)
    Wq = model.layers[0].self_attn.in_proj_weight[:32]
    assert float(Wq.abs().max()) == 0.0
    W = model.layers[1].linear2.weight.detach().double()
    # fan_in mean(W^2) over 64 x 32 entries: chi^2 with 2048 degrees of freedom, se sqrt(2/2048)
    assert float(W.pow(2).mean() * 64) == pytest.approx(budgets[1.0], rel=5 * math.sqrt(2 / 2048))


def test_branch_ending_in_batch_norm_refused():
    class BasicBlock(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(n, n, 3, padding=1, bias=False), nn.Conv2d(n, n, 3, padding=1, bias=False)
            self.b1, self.b2 = nn.BatchNorm2d(n), nn.BatchNorm2d(n)

        def forward(self, x):
            return x + self.b2(self.c2(F.relu(self.b1(self.c1(x)))))

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BasicBlock(8), BasicBlock(8), nn.Flatten(), nn.Linear(8 * 25, 2))
    with pytest.raises(DomainError, match=r"^1\.c2: the branch's last weight layer is followed by batch_norm"):
        mft.advise_model(model, torch.randn(4, 3, 5, 5))
