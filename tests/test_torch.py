"""meanfield.torch: tracing, init_, measure/compare against the theory, empirical NTK."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import meanfield  # noqa: E402
import meanfield.torch as mft  # noqa: E402
from meanfield.advise import advise  # noqa: E402
from meanfield.errors import DomainError  # noqa: E402
from meanfield.residual import iterate_residual  # noqa: E402
from meanfield.simulate import inputs_on_sphere  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("torch_one_thread")]


def mlp(d, n, depth, act=nn.Tanh, out=10, front=()):
    """depth hidden layers: depth + 1 Linear layers with act between them."""
    mods = list(front) + [nn.Linear(d, n), act()]
    for _ in range(depth - 1):
        mods += [nn.Linear(n, n), act()]
    return nn.Sequential(*mods, nn.Linear(n, out))


class Block(nn.Module):
    def __init__(self, n, full=True, act=torch.tanh):
        super().__init__()
        self.w = nn.Linear(n, n)
        self.v = nn.Linear(n, n) if full else None
        self.act = act

    def forward(self, x):
        h = self.act(self.w(x))
        return x + (self.v(h) if self.v is not None else h)


class ResNet(nn.Module):
    def __init__(self, d, n, depth, out=10, full=True, act=torch.tanh):
        super().__init__()
        self.inp = nn.Linear(d, n)
        self.blocks = nn.Sequential(*[Block(n, full, act) for _ in range(depth)])
        self.out = nn.Linear(n, out)

    def forward(self, x):
        return self.out(self.blocks(self.inp(x.flatten(1))))


def sphere(n, d, c, seed=0, dtype=torch.float32):
    return torch.tensor(inputs_on_sphere(n, d, correlation=c, seed=seed), dtype=dtype)


# ------------------------------------------------------------------------------------------
# import hygiene
# ------------------------------------------------------------------------------------------


def test_import_meanfield_does_not_import_torch():
    code = "import sys, meanfield; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ------------------------------------------------------------------------------------------
# tracing
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 3, 12])
def test_trace_sequential_mlp_depth(depth):
    m = mlp(8, 16, depth, front=(nn.Flatten(),))
    st = mft.trace_structure(m)
    assert st.arch == "mlp"
    assert st.depth == depth
    assert st.activation == "tanh"
    assert len(st.layers) == depth + 1


def test_trace_functional_mlp_and_dropout_note():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.ModuleList(nn.Linear(6, 6) for _ in range(4))
            self.drop = nn.Dropout(0.1)

        def forward(self, x):
            for layer in self.fc[:-1]:
                x = self.drop(F.relu(layer(x)))
            return self.fc[-1](x)

    st = mft.trace_structure(Net())
    assert (st.arch, st.depth, st.activation) == ("mlp", 3, "relu")
    assert any("dropout" in n for n in st.notes)


@pytest.mark.parametrize("full,arch", [(True, "resnet-full"), (False, "resnet-reduced")])
def test_trace_residual_blocks(full, arch):
    m = ResNet(5, 12, 7, full=full)
    st = mft.trace_structure(m)
    assert st.arch == arch
    assert st.depth == 7
    assert st.stem == ("inp",) and st.head == ("out",)
    assert st.blocks[0] == (("blocks.0.w", "blocks.0.v") if full else ("blocks.0.w",))
    assert st.activation == "tanh"


@pytest.mark.parametrize(
    "module,spec",
    [
        (nn.Tanh(), "tanh"),
        (nn.ReLU(), "relu"),
        (nn.GELU(), "gelu"),
        (nn.SiLU(), "silu"),
        (nn.ELU(0.5), "elu:0.5"),
        (nn.SELU(), "selu"),
        (nn.LeakyReLU(0.2), "leaky_relu:0.2"),
        (nn.Sigmoid(), "sigmoid"),
        (nn.Softplus(), "softplus"),
        (nn.Hardtanh(), "hard_tanh"),
    ],
)
def test_activation_modules_map_to_registry(module, spec):
    m = nn.Sequential(nn.Linear(4, 4), module, nn.Linear(4, 4), module, nn.Linear(4, 2))
    assert mft.trace_structure(m).activation == meanfield.get_activation(spec).name


def test_function_activations_map_to_registry():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.c(torch.sin(self.b(torch.sin(self.a(x)))))

    assert mft.trace_structure(Net()).activation == "sin"


@pytest.mark.parametrize("module", [nn.GELU(approximate="tanh"), nn.Mish(), nn.ReLU6()])
def test_unknown_elementwise_activation_is_wrapped(module):
    m = nn.Sequential(nn.Linear(4, 4), module, nn.Linear(4, 4), module, nn.Linear(4, 1))
    st = mft.trace_structure(m)
    assert st.activation.startswith("torch:")
    x = np.linspace(-3, 3, 13)
    with torch.no_grad():
        want = module.double()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(st.act(x), want, rtol=1e-12, atol=1e-14)
    # derivative by autograd in float64
    t = torch.tensor(x, requires_grad=True)
    (g,) = torch.autograd.grad(module.double()(t).sum(), t)
    np.testing.assert_allclose(st.act.d1(x), g.numpy(), rtol=1e-10, atol=1e-12)


def test_conv_chain_traced_and_initialised_by_fan_in():
    m = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 48, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(48 * 8 * 8, 10),
    )
    st = mft.trace_structure(m)
    assert (st.arch, st.activation, st.depth) == ("mlp", "relu", 2)
    mft.init_(m, sigma_w2=2.0, sigma_b2=0.0, seed=0)
    w = m[2].weight.detach().double()
    assert mft.fan_in(m[2]) == 32 * 9
    assert abs(float((w * w).mean()) * 32 * 9 / 2.0 - 1) < 5 * np.sqrt(2 / w.numel())
    prof = mft.measure(m, torch.randn(4, 3, 8, 8))
    assert prof.q.shape == (3,) and np.all(np.isfinite(prof.q))


def test_custom_function_traced_through():
    def swish15(x):
        return x * torch.sigmoid(1.5 * x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.c(swish15(self.b(swish15(self.a(x)))))

    st = mft.trace_structure(Net())
    x = np.linspace(-2, 2, 5)
    np.testing.assert_allclose(st.act(x), x / (1 + np.exp(-1.5 * x)), rtol=1e-12)


def _raises(model, *words):
    with pytest.raises(DomainError) as err:
        mft.trace_structure(model)
    msg = str(err.value)
    for w in words:
        assert w in msg, msg
    return msg


def test_tracing_reports_what_it_cannot_read():
    _raises(nn.Sequential(nn.Tanh(), nn.Tanh()), "no nn.Linear")
    _raises(
        nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 4)),
        "not elementwise",
        "structure=",
    )
    _raises(
        nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1)),
        "different activations",
    )
    lin = nn.Linear(4, 4)
    _raises(nn.Sequential(lin, nn.Tanh(), lin), "shared weights")

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.a(x)
            return self.b(x)

    _raises(Branchy(), "could not trace", "structure=")

    class Proj(nn.Module):
        def __init__(self):
            super().__init__()
            self.p, self.w, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.p(x) + self.v(torch.tanh(self.w(x)))

    _raises(Proj(), "projection shortcut")

    class PostAct(ResNet):
        def forward(self, x):
            x = self.inp(x)
            for b in self.blocks:
                x = torch.tanh(b(x))
            return self.out(x)

    _raises(PostAct(4, 4, 3), "between residual blocks", "post-activation")


def test_explicit_structure_for_untraceable_model():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 3)

        def forward(self, x):
            if x.sum() > -1e9:
                return self.b(torch.tanh(self.a(x)))
            return x

    m = Branchy()
    with pytest.raises(DomainError, match="structure="):
        mft.init_(m, sigma_w2=1.0)
    st = mft.Structure("mlp", "tanh", layers=("a", "b"))
    mft.init_(m, sigma_w2=1.0, sigma_b2=0.0, seed=0, structure=st)
    assert torch.all(m.a.bias == 0)
    with pytest.raises(DomainError, match="not a submodule"):
        mft.init_(
            Branchy(), sigma_w2=1.0, structure=mft.Structure("mlp", "tanh", layers=("a", "zz"))
        )
    with pytest.raises(DomainError, match="each block names 2"):
        mft.Structure("resnet-full", "tanh", blocks=(("a",),))


# ------------------------------------------------------------------------------------------
# init_
# ------------------------------------------------------------------------------------------


def test_init_sets_variances_in_place_and_returns_model():
    m = mlp(200, 400, 3)
    before = {k: id(p) for k, p in m.named_parameters()}
    out = mft.init_(m, sigma_w2=1.7, sigma_b2=0.3, seed=3)
    assert out is m
    assert {k: id(p) for k, p in m.named_parameters()} == before  # same tensors, written in place
    for _, role, _w2, _b2 in mft.realised_variances(m):
        assert role == "layer"
    for layer in (m[0], m[2], m[4]):
        w = layer.weight.detach().double()
        nw = w.numel()
        # sample variance of nw iid N(0, s2): relative SE sqrt(2 / nw); 5 standard errors
        assert abs(float((w * w).mean()) * layer.in_features / 1.7 - 1) < 5 * np.sqrt(2 / nw)
    b = torch.cat([m[i].bias.detach().double() for i in (0, 2, 4)])
    assert abs(float((b * b).mean()) / 0.3 - 1) < 5 * np.sqrt(2 / b.numel())
    assert not any(p.grad is not None for p in m.parameters())


def test_init_residual_roles():
    m = ResNet(30, 300, 4)
    mft.init_(
        m,
        sigma_w2=0.5,
        sigma_b2=0.0,
        sigma_v2=2.0,
        sigma_a2=0.25,
        sigma_in2=1.0,
        sigma_o2=1.0,
        seed=0,
    )
    real = {name: (w2, b2) for name, _, w2, b2 in mft.realised_variances(m)}
    tol = 5 * np.sqrt(2 / (300 * 300))
    assert abs(real["blocks.2.w"][0] / 0.5 - 1) < tol and real["blocks.2.w"][1] == 0.0
    assert abs(real["blocks.2.v"][0] / 2.0 - 1) < tol
    assert abs(real["blocks.2.v"][1] / 0.25 - 1) < 5 * np.sqrt(2 / 300)
    assert abs(real["inp"][0] - 1) < 5 * np.sqrt(2 / (30 * 300)) and real["out"][1] == 0.0


def test_double_application_refused_unless_forced():
    m = mlp(4, 8, 2)
    mft.init_(m, sigma_w2=1.0, seed=0)
    w = m[0].weight.detach().clone()
    with pytest.raises(DomainError, match="already initialised.*force=True"):
        mft.init_(m, sigma_w2=1.0, seed=1)
    assert torch.equal(m[0].weight, w)
    mft.init_(m, sigma_w2=1.0, seed=1, force=True)
    assert not torch.equal(m[0].weight, w)
    assert m._meanfield_init.seed == 1


def test_init_is_deterministic_and_leaves_global_rng_alone():
    a, b, c = mlp(5, 7, 3), mlp(5, 7, 3), mlp(5, 7, 3)  # nn.Linear's own init uses the global RNG
    state = torch.get_rng_state()
    mft.init_(a, sigma_w2=1.3, sigma_b2=0.1, seed=42)
    mft.init_(b, sigma_w2=1.3, sigma_b2=0.1, generator=torch.Generator().manual_seed(42))
    mft.init_(c, sigma_w2=1.3, sigma_b2=0.1, seed=43)
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
    rec = mft.init_(mlp(5, 7, 3), sigma_w2=1.0)._meanfield_init
    assert isinstance(rec.seed, int)  # an unseeded draw records the seed it used


def test_init_asks_advise_and_checks_its_inputs():
    m = mft.init_(mlp(16, 32, 4, act=nn.ReLU), seed=0)
    rec = m._meanfield_init
    assert rec.source == "advise()"
    assert (rec.variances.sigma_w2, rec.variances.sigma_b2) == (
        2.0,
        0.0,
    )  # He: the ReLU critical point
    with pytest.raises(DomainError, match="depth 4"):
        mft.init_(mlp(16, 32, 4), depth=5)
    with pytest.raises(DomainError, match="activation"):
        mft.init_(mlp(16, 32, 4), activation="relu")
    with pytest.raises(DomainError, match="resnet-full"):
        mft.init_(mlp(16, 32, 4), arch="resnet-full")


def test_mismatched_advice_refused():
    adv = advise("mlp", "relu", 5)
    with pytest.raises(DomainError, match="depth 5 but the model has depth 4"):
        mft.init_(mlp(8, 8, 4, act=nn.ReLU), adv)
    with pytest.raises(DomainError, match="activation 'relu' but the model applies 'tanh'"):
        mft.init_(mlp(8, 8, 5), adv)
    with pytest.raises(DomainError, match="arch 'mlp' but the model is 'resnet-full'"):
        mft.init_(ResNet(8, 8, 5, act=torch.relu), adv)
    with pytest.raises(DomainError, match="not both"):
        mft.init_(mlp(8, 8, 5, act=nn.ReLU), adv, sigma_w2=2.0)
    with pytest.raises(DomainError, match="sigma_w2 must be non-negative"):
        mft.init_(mlp(8, 8, 5, act=nn.ReLU), {"sigma_w2": -1.0})
    with pytest.raises(DomainError, match="reduced residual network has no V"):
        mft.init_(ResNet(8, 8, 2, full=False), sigma_w2=1.0, sigma_v2=2.0)
    mft.init_(mlp(8, 8, 5, act=nn.ReLU), adv, seed=0)  # the right model takes it


def test_init_float64_and_pickle():
    m = mlp(6, 6, 2).double()
    mft.init_(m, sigma_w2=1.0, seed=0)
    assert m[0].weight.dtype == torch.float64
    buf = io.BytesIO()
    torch.save(m, buf)
    m2 = pickle.loads(pickle.dumps(m))
    with pytest.raises(DomainError, match="already initialised"):
        mft.init_(m2, sigma_w2=1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_init_and_measure_on_gpu():
    m = mlp(32, 64, 3).cuda()
    mft.init_(m, sigma_w2=1.5, sigma_b2=0.05, seed=0)
    cpu = mft.init_(mlp(32, 64, 3), sigma_w2=1.5, sigma_b2=0.05, seed=0)
    for a, b in zip(m.parameters(), cpu.parameters()):
        assert a.is_cuda
        torch.testing.assert_close(a.cpu(), b)
    cmp = mft.compare(m, sphere(4, 32, 0.5).cuda())
    assert np.all(np.isfinite(cmp.measured.q))


# ------------------------------------------------------------------------------------------
# measure / compare
# ------------------------------------------------------------------------------------------


def test_compare_prediction_is_the_theory():
    n, depth, sw, sb = 64, 6, 1.6, 0.05
    m = mft.init_(mlp(n, n, depth, out=n), sigma_w2=sw, sigma_b2=sb, seed=0)
    x = sphere(4, n, 0.3, dtype=torch.float64)
    cmp = mft.compare(m.double(), x)
    tr = meanfield.iterate("tanh", sw, sb, depth, q0=sw + sb, c0=(0.3 * sw + sb) / (sw + sb))
    np.testing.assert_allclose(cmp.predicted.q, tr.q, rtol=1e-9)
    np.testing.assert_allclose(cmp.predicted.c, tr.c, rtol=1e-9)
    chis = meanfield.chi_1("tanh", np.asarray(tr.q[:-1]), sw)
    np.testing.assert_allclose(
        cmp.predicted.grad2, np.cumprod(chis[::-1])[::-1].tolist() + [1.0], rtol=1e-9
    )
    assert cmp.source == "init_"
    rows = cmp.rows()
    assert {r["quantity"] for r in rows} == {"q", "c", "grad2", "grad_w2"}
    d = cmp.to_dict()
    assert d["variances"]["sigma_w2"] == sw


def test_compare_without_init_reads_the_weights():
    m = mlp(32, 48, 3)  # PyTorch default: sigma_w2 = 1/3, sigma_b2 = 1/(3 fan_in)
    cmp = mft.compare(m, sphere(4, 32, 0.5))
    assert cmp.source == "weights"
    assert abs(cmp.variances[1][0] - 1 / 3) < 0.1


def test_measure_does_not_touch_grads_or_mode():
    m = mft.init_(ResNet(8, 16, 3), sigma_w2=1.0, sigma_b2=0.1, seed=0)
    m.eval()
    prof = mft.measure(m, torch.randn(6, 8), pairs=[(0, 5), (1, 2)])
    assert all(p.grad is None for p in m.parameters())
    assert not m.training
    assert prof.p.shape == (4,) and np.isnan(prof.q[0]) and prof.grad2[-1] == 1.0
    with pytest.raises(DomainError, match="pair"):
        mft.measure(m, torch.randn(3, 8), pairs=[(0, 3)])


def test_plot_profile_returns_axes():
    pytest.importorskip("matplotlib")
    m = mft.init_(ResNet(8, 16, 4), sigma_w2=0.5, seed=0)
    cmp = mft.compare(m, torch.randn(4, 8))
    ax = mft.plot_profile(cmp, quantity="p")
    assert ax.get_ylabel().startswith("$p^l$")
    import matplotlib.pyplot as plt

    plt.close(ax.figure)


def _seeds_mean_se(values):
    v = np.asarray(values)
    return v.mean(0), v.std(0, ddof=1) / np.sqrt(len(v))


@pytest.mark.slow
@pytest.mark.parametrize("act,module,n_nets", [("tanh", nn.Tanh, 16), ("relu", nn.ReLU, 12)])
def test_wide_mlp_matches_iterate_within_5_se(act, module, n_nets):
    n, depth, c_in = 1024, 8, 0.5
    adv = advise("mlp", act, depth)
    x = sphere(2, n, c_in)  # x.x/d = 1, overlap 0.5 exactly
    qs, cs = [], []
    m = mlp(n, n, depth, act=module, out=256)
    for s in range(n_nets):  # independent networks: the same module redrawn from independent seeds
        mft.init_(m, adv, seed=1000 + s, force=True)
        prof = mft.measure(m, x)
        qs.append(prof.q)
        cs.append(prof.c)
    sw, sb = adv.sigma_w2, adv.sigma_b2
    tr = meanfield.iterate(act, sw, sb, depth, q0=sw + sb, c0=(c_in * sw + sb) / (sw + sb))
    for name, vals, want in (("q", qs, tr.q), ("c", cs, tr.c)):
        mean, se = _seeds_mean_se(vals)
        z = (mean - np.asarray(want)) / se
        assert np.all(np.abs(z) < 5), f"{act} {name}: z = {np.round(z, 2)}"


@pytest.mark.slow
def test_wide_full_resnet_matches_iterate_residual_within_5_se():
    n, depth, c_in = 1024, 6, 0.5
    var = dict(sigma_w2=0.8, sigma_b2=0.05, sigma_v2=1.5, sigma_a2=0.1)
    x = sphere(2, n, c_in)
    ps, es, qs = [], [], []
    m = ResNet(n, n, depth, out=256)
    for s in range(12):
        mft.init_(m, seed=2000 + s, force=True, **var)
        prof = mft.measure(m, x)
        ps.append(prof.p)
        es.append(prof.e)
        qs.append(prof.q[1:])
    # the stem x^0 = U xi with sigma_in2 = 1: p^0 = x.x/d = 1, cosine c_in
    tr = iterate_residual(
        "resnet-full",
        "tanh",
        var["sigma_w2"],
        var["sigma_b2"],
        depth,
        sigma_v2=var["sigma_v2"],
        sigma_a2=var["sigma_a2"],
        p0=1.0,
        c0=c_in,
    )
    for name, vals, want in (("p", ps, tr.p), ("e", es, tr.e), ("q", qs, tr.q[1:])):
        mean, se = _seeds_mean_se(vals)
        z = (mean - np.asarray(want)) / se
        assert np.all(np.abs(z) < 5), f"{name}: z = {np.round(z, 2)}"


# ------------------------------------------------------------------------------------------
# empirical NTK
# ------------------------------------------------------------------------------------------


def test_empirical_ntk_is_jacobian_gram():
    m = mft.init_(mlp(3, 5, 2, out=1).double(), sigma_w2=1.2, sigma_b2=0.3, seed=0)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    res = mft.empirical_ntk(m, x)
    rows = []
    for i in range(4):
        g = torch.autograd.grad(m(x[i : i + 1]).sum(), list(m.parameters()))
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    J = torch.stack(rows)
    np.testing.assert_allclose(res.ntk, (J @ J.T).numpy(), rtol=1e-10)
    assert res.parametrization == "standard"


def test_empirical_ntk_parametrisation_conversion():
    # one linear layer f = W x + b: SP kernel x.x' + 1; NTP kernel sigma_w2 x.x'/d + sigma_b2
    # (MATH.md 4.1)
    d, sw, sb = 7, 1.5, 0.4
    lin = nn.Sequential(nn.Linear(d, 1)).double()
    mft.init_(
        lin,
        sigma_w2=sw,
        sigma_b2=sb,
        seed=0,
        structure=mft.Structure("mlp", "linear", layers=("0",)),
    )
    x = torch.randn(3, d, dtype=torch.float64)
    y = torch.randn(2, d, dtype=torch.float64)
    sp = mft.empirical_ntk(lin, x, y).ntk
    ntp = mft.empirical_ntk(lin, x, y, parametrization="ntk").ntk
    xy = (x @ y.T).numpy()
    np.testing.assert_allclose(sp, xy + 1.0, rtol=1e-12)
    np.testing.assert_allclose(ntp, sw * xy / d + sb, rtol=1e-12)


@pytest.mark.slow
def test_wide_ntk_matches_infinite_width_kernel():
    kernels = pytest.importorskip("meanfield.kernels")
    if not hasattr(kernels, "kernel"):
        pytest.skip("meanfield.kernels.kernel not available")
    n, d, depth, sw, sb = 512, 16, 2, 2.0, 0.1
    X = inputs_on_sphere(3, d, correlation=0.4, seed=1)
    want = kernels.kernel(
        "mlp", "relu", X, depth=depth, sigma_w2=sw, sigma_b2=sb, parametrization="ntk"
    ).ntk
    x = torch.tensor(X, dtype=torch.float64)
    m = mlp(d, n, depth, act=nn.ReLU, out=1).double()
    ks = []
    for s in range(8):
        mft.init_(m, sigma_w2=sw, sigma_b2=sb, seed=3000 + s, force=True)
        ks.append(mft.empirical_ntk(m, x, parametrization="ntk").ntk)
    mean, se = _seeds_mean_se(ks)
    z = (mean - want) / se
    assert np.all(np.abs(z) < 5), f"z = {np.round(z, 2)}"
