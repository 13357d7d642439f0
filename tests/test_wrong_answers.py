"""Issue 16, "no wrong or silent answers": each wrong number a user met, checked against an
independent reference (a closed form derived here or in MATH.md, or a wide random network), never
against a number copied from meanfield's own output.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from scipy import integrate, special

import meanfield as mf
from meanfield import fixed_points, kernels, maps, mup, residual, spectra
from meanfield.errors import NoFixedPoint

# ------------------------------------------------------------------------------------------
# 1. Bounded activations at huge sigma_w2: q* ~ sigma_w2 sup phi^2, not "q diverges"
# ------------------------------------------------------------------------------------------


def _tanh_q_star_large(sw: float) -> float:
    """q* = sigma_w2 (1 - E[sech^2(sqrt(q) z)]) with E[sech^2(sqrt q z)] = 2 / sqrt(2 pi q)
    (1 + O(1/q)) for q >> 1 (the integral of sech^2 is 2), solved by fixed-point iteration."""
    q = sw
    for _ in range(50):
        q = sw * (1.0 - 2.0 / math.sqrt(2.0 * math.pi * q))
    return q


@pytest.mark.parametrize("sw", [1e12, 1e100, 1e300, 1e308])
def test_tanh_huge_sigma_w2_has_a_fixed_point(sw):
    fp = mf.fixed_point("tanh", sw, 0.0)
    assert fp.q_star == pytest.approx(_tanh_q_star_large(sw), rel=1e-12)
    # sign-function limit: C(c) = (2/pi) arcsin(c), so c* = 0 with slope 2/pi
    assert fp.c_star == pytest.approx(0.0, abs=1e-12)
    assert fp.chi_c == pytest.approx(2.0 / math.pi, rel=1e-5)
    assert fp.phase == "chaotic"
    assert fp.xi_q is not None and fp.xi_q < 0.1  # the length map is flat there: q^l = q* at once


@pytest.mark.parametrize("sw", [1e12, 1e300])
def test_erf_huge_sigma_w2_closed_form(sw):
    # MATH.md 1.6: V_erf(q) = (2/pi) arcsin(2q / (1 + 2q)); root of q = sw V(q) with mpmath
    mpmath.mp.dps = 40
    s = mpmath.mpf(sw)
    want = mpmath.findroot(lambda q: s * 2 / mpmath.pi * mpmath.asin(2 * q / (1 + 2 * q)) - q, s)
    fp = mf.fixed_point("erf", sw, 0.0)
    assert fp.q_star == pytest.approx(float(want), rel=1e-13)
    assert fp.chi_c == pytest.approx(2.0 / math.pi, rel=1e-5)


def test_sigmoid_huge_sigma_w2():
    # sigmoid^2 -> step at large q: V -> 1/2, so q* / sigma_w2 -> 1/2
    fp = mf.fixed_point("sigmoid", 1e12, 0.0)
    assert fp.q_star / 1e12 == pytest.approx(0.5, rel=1e-5)


def test_alpha_relu_fixed_point_above_1e10():
    # V(q) = c_a q^a with c_a = E[relu(z)^(2a)] = 2^a Gamma(a + 1/2) / (2 sqrt(pi)), so
    # q* = (sigma_w2 c_a)^(1 / (1 - a)) -- 3.4e10 for a = 0.75, sigma_w2 = 1000
    a, sw = 0.75, 1000.0
    ca = 2 ** a * special.gamma(a + 0.5) / (2 * math.sqrt(math.pi))
    fp = mf.fixed_point("alpha_relu:0.75", sw, 0.0)
    assert fp.q_star == pytest.approx((sw * ca) ** (1 / (1 - a)), rel=1e-10)


def test_unbounded_growth_still_diverges_and_says_float_range():
    # softplus ~ relu at large q: V(q) ~ q/2, so sigma_w2 = 3 > 2 truly diverges
    with pytest.raises(NoFixedPoint, match="float range"):
        mf.fixed_point("softplus", 3.0, 0.0)


def test_iterate_tanh_huge_sigma_w2_follows_arcsine_law():
    tr = mf.iterate("tanh", 1e300, 0.0, depth=6, q0=1.0, c0=0.5)
    assert tr.q[-1] == pytest.approx(_tanh_q_star_large(1e300), rel=1e-12)
    # after the first layer the pre-activations are ~1e150 wide: tanh acts as sign()
    c = tr.c[1]
    for want in tr.c[2:]:
        c = 2.0 / math.pi * math.asin(c)
        assert want == pytest.approx(c, rel=1e-9)


# ------------------------------------------------------------------------------------------
# 2 and 4. Advice: the rule printed is the rule applied; a point for every activation
# ------------------------------------------------------------------------------------------


def _gauss(f, q):
    """E[f(sqrt(q) z)] by scipy's quad (independent of meanfield.gaussian)."""
    return integrate.quad(lambda z: f(math.sqrt(q) * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                          -40, 40, limit=400, epsabs=1e-14)[0]


def _sigmoid(u):
    return 1 / (1 + math.exp(-u)) if u > -700 else 0.0


def _silu_d1(u):
    s = _sigmoid(u)
    return s * (1 + u * (1 - s))


def test_silu_rule_states_the_bias_it_uses():
    a = mf.advise(arch="mlp", activation="silu", depth=10, ntk=False)
    assert a.sigma_b2 > 0.05
    assert "largest <= 0.05" not in a.rule and f"{a.sigma_b2:.3g}" in a.rule
    # and it is critical: chi_1 = sigma_w2 E[silu'(sqrt(q*) z)^2] = 1, q* the length map's fixed point
    assert a.sigma_w2 * _gauss(lambda u: _silu_d1(u) ** 2, a.q_star) == pytest.approx(1.0, rel=1e-7)
    assert a.q_star == pytest.approx(a.sigma_w2 * _gauss(lambda u: (u * _sigmoid(u)) ** 2, a.q_star) + a.sigma_b2,
                                     rel=1e-8)


def test_rule_bound_holds_for_every_activation_that_states_it():
    for spec in ("tanh", "erf", "gelu", "silu", "selu", "sigmoid", "elu"):
        a = mf.advise(arch="mlp", activation=spec, depth=20, ntk=False)
        if "largest <= 0.05" in a.rule or "sigma_b2 <= 0.05 the largest" in a.rule:
            assert a.sigma_b2 <= 0.05, (spec, a.rule)
        else:
            assert f"{a.sigma_b2:.3g}" in a.rule, (spec, a.rule)


def test_sigmoid_large_sigma_w2_is_explained():
    a = mf.advise(arch="mlp", activation="sigmoid", depth=10, ntk=False)
    assert a.sigma_w2 > 50
    assert any("not zero-centred" in n and "large" in n for n in a.notes)
    d1 = lambda u: _sigmoid(u) * (1 - _sigmoid(u))  # noqa: E731
    assert a.sigma_w2 * _gauss(lambda u: d1(u) ** 2, a.q_star) == pytest.approx(1.0, rel=1e-7)


def test_readme_custom_leaky_relu_gets_he_for_its_slopes():
    act = mf.custom(lambda x: x * (x > 0) + 0.1 * x)  # slopes 1.1 and 0.1
    k = (1.1 ** 2 + 0.1 ** 2) / 2  # E[phi(z)^2] = chi_1 / sigma_w2 (MATH.md 1.6, 8.1)
    a = mf.advise(arch="mlp", activation=act, depth=10, ntk=False)
    assert (a.sigma_w2, a.sigma_b2) == (pytest.approx(1 / k, rel=1e-12), 0.0)
    assert a.chi_1 == pytest.approx(1.0, rel=1e-12)
    # off the critical point: q* = sigma_b2 / (1 - sigma_w2 k) (linear length map)
    fp = mf.fixed_point(act, 1.0, 0.1)
    assert fp.q_star == pytest.approx(0.1 / (1 - k), rel=1e-12)
    assert fp.chi_1 == pytest.approx(k, rel=1e-12)


@pytest.mark.parametrize("name,fn,kinks", [
    ("relu6", lambda x: np.clip(x, 0.0, 6.0), (0.0, 6.0)),
    ("hardswish", lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0, (-3.0, 3.0)),
    ("tanhshrink", lambda x: x - np.tanh(x), ()),
])
def test_activations_without_usual_criticality_get_advice(name, fn, kinks):
    act = mf.custom(fn, kinks=kinks, name=name)
    a = mf.advise(arch="mlp", activation=act, depth=10, ntk=False)
    assert math.isfinite(a.sigma_w2) and a.sigma_w2 > 0 and a.rule
    # the point is a fixed point of the length map, checked by quad
    assert a.q_star == pytest.approx(a.sigma_w2 * _gauss(lambda u: float(fn(np.array(u))) ** 2, a.q_star)
                                     + a.sigma_b2, rel=1e-6)
    if "best trainable point" in a.rule:
        assert a.xi_c is not None and (a.xi_c >= 10 or any("trainable depth" in n for n in a.notes))


def test_softplus_best_trainable_point_meets_the_depth():
    for depth in (10, 100):
        a = mf.advise(arch="mlp", activation="softplus", depth=depth, ntk=False)
        chi = a.sigma_w2 * _gauss(lambda u: _sigmoid(u) ** 2, a.q_star)
        assert chi < 1 and -1 / math.log(chi) >= depth * (1 - 1e-6)


# ------------------------------------------------------------------------------------------
# 3. Depth: the cost does not grow with it
# ------------------------------------------------------------------------------------------


def test_relu_critical_correlation_law_at_large_depth():
    # MATH.md 1.4: ReLU at (2, 0) has 1 - c^l ~ 9 pi^2 / (2 l^2)
    for depth in (30_000,):
        st = maps.propagate("relu", 2.0, 0.0, depth, q0=1.0, c0=0.5)
        assert st.layers_iterated <= maps.EXACT_LAYERS
        assert 1 - st.c == pytest.approx(9 * math.pi ** 2 / (2 * depth ** 2), rel=3e-3)
        assert st.log10_gradient_ratio == 0.0  # chi_1 = sigma_w2 / 2 = 1 at every layer
    deep = maps.propagate("relu", 2.0, 0.0, 10 ** 9, q0=1.0, c0=0.5)
    assert deep.layers_iterated <= maps.EXACT_LAYERS and 0 <= 1 - deep.c < 1e-7


def test_tanh_critical_correlation_law_at_large_depth():
    # at a critical point with smooth phi, e = 1 - c obeys e' = e - a e^2 + ..., a = C''(1) / 2 =
    # sigma_w2 q* E[phi''(sqrt(q*) z)^2] / 2 (Price identity twice), so e^L ~ 1 / (a L)
    e = mf.edge_of_chaos("tanh", 0.05)
    sw, q = float(e.sigma_w2), float(e.q_star)
    d2 = lambda u: -2 * math.tanh(u) / math.cosh(u) ** 2  # noqa: E731
    a = sw * q * _gauss(lambda u: d2(u) ** 2, q) / 2
    for depth in (100_000, 1_000_000):
        st = maps.propagate("tanh", sw, 0.05, depth, q0=q, c0=0.5)
        assert st.layers_iterated <= maps.EXACT_LAYERS
        assert 1 - st.c == pytest.approx(1 / (a * depth), rel=2e-3)


def test_advise_at_a_billion_layers_is_bounded_and_honest():
    a = mf.advise(arch="mlp", activation="tanh", depth=10 ** 9)
    assert a.chi_1 == pytest.approx(1.0, abs=1e-9) and a.correlation_out is not None
    assert a.ntk_condition_number is None and any("NTK condition number not computed" in n for n in a.notes)
    with pytest.raises(mf.DomainError, match="float range"):
        maps.propagate("tanh", 1.0, 0.0, 10 ** 400)


# ------------------------------------------------------------------------------------------
# Torch bridge: a zoo of models, each handled (every weight set as advised) or refused with the
# module paths it cannot handle
# ------------------------------------------------------------------------------------------


def _zoo():
    nn = pytest.importorskip("torch.nn")

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(16, 64)
            self.w = nn.ModuleList([nn.Linear(64, 64) for _ in range(3)])
            self.v = nn.ModuleList([nn.Linear(64, 64) for _ in range(3)])
            self.out = nn.Linear(64, 10)

        def forward(self, x):
            x = self.inp(x)
            for w, v in zip(self.w, self.v):
                x = x + v(nn.functional.relu(w(x)))
            return self.out(x)

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 32)
            self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2)
            self.out = nn.Linear(32, 10)

        def forward(self, x):
            return self.out(self.enc(self.emb(x)))

    return {
        "mlp": (nn.Sequential(nn.Linear(16, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10)), None),
        "cnn": (nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.Conv2d(32, 8, 3)), None),
        "resnet": (Res(), None),
        "dropout": (nn.Sequential(nn.Linear(16, 256), nn.Tanh(), nn.Dropout(0.1), nn.Linear(256, 256), nn.Tanh(),
                                  nn.Linear(256, 10)), None),
        "bias_free": (nn.Sequential(nn.Linear(16, 256, bias=False), nn.Tanh(), nn.Linear(256, 256, bias=False),
                                    nn.Tanh(), nn.Linear(256, 10, bias=False)), None),
        "transformer": (Transformer(), ["emb (Embedding)", "enc (TransformerEncoder)"]),
        "gelu_layernorm": (nn.Sequential(nn.Linear(16, 64), nn.LayerNorm(64), nn.GELU(), nn.Linear(64, 10)), ["LayerNorm"]),
    }


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet", "dropout", "bias_free", "transformer", "gelu_layernorm"])
def test_torch_zoo_handled_or_refused(name):
    torch = pytest.importorskip("torch")
    import meanfield.torch as mft

    model, refused = _zoo()[name]
    if refused is not None:
        with pytest.raises(mf.DomainError) as info:
            mft.init_(model, sigma_w2=1.0, seed=0)
        for part in refused:
            assert part in str(info.value)
        return
    mft.init_(model, seed=0)
    rec = model._meanfield_init
    assert rec.untouched == ()  # every parameter set
    mods = dict(model.named_modules())
    for mod_name, role in rec.structure.roles():
        w = mods[mod_name].weight.detach().double()
        fan = w[0].numel()
        want, want_b = rec.variances.for_role(role)
        n = w.numel()
        # sample variance of N(0, want / fan) draws: standard error sqrt(2 / n) relative
        assert float(w.var()) * fan == pytest.approx(want, rel=5 * math.sqrt(2 / n) + 1e-12)
    if name == "bias_free":
        # tanh without biases: the critical point is (1, 0) (MATH.md 1.6: the critical line ends there)
        assert rec.variances.sigma_b2 == 0.0 and rec.variances.sigma_w2 == pytest.approx(1.0, abs=1e-6)
        assert any("bias=False" in n for n in rec.advice.notes)
    del torch


def test_torch_prelu_is_a_leaky_relu():
    nn = pytest.importorskip("torch.nn")
    import meanfield.torch as mft

    m = nn.Sequential(nn.Linear(16, 64), nn.PReLU(init=0.2), nn.Linear(64, 64), nn.PReLU(init=0.2), nn.Linear(64, 10))
    st = mft.trace_structure(m)
    assert st.activation == mf.get_activation("leaky_relu:0.2").name or st.activation.startswith("leaky_relu:0.2")


# ------------------------------------------------------------------------------------------
# Section 3: inputs and files
# ------------------------------------------------------------------------------------------


def test_empty_activation_parameter_is_refused():
    with pytest.raises(mf.DomainError, match="missing"):
        mf.get_activation("leaky_relu:")
    assert mf.get_activation("leaky_relu").name == "leaky_relu:0.01"  # the documented default


def test_load_array_refuses_what_is_not_a_real_numeric_array(tmp_path):
    from meanfield._io import load_array

    np.save(tmp_path / "c.npy", np.array([[1 + 2j, 3.0]]))
    with pytest.raises(mf.DomainError, match="complex"):
        load_array(tmp_path / "c.npy", "--x")
    (tmp_path / "t.npy").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(mf.DomainError, match="not a numeric .npy array") as info:
        load_array(tmp_path / "t.npy", "--x")
    assert "pickle" not in str(info.value)
    np.save(tmp_path / "ok.npy", np.arange(6.0).reshape(2, 3))
    assert load_array(tmp_path / "ok.npy").tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_files_follow_the_umask(tmp_path):
    import os

    from meanfield._io import atomic_write

    old = os.umask(0o027)
    try:
        p = atomic_write(tmp_path / "a.txt", lambda tmp: open(tmp, "w").write("x"))
    finally:
        os.umask(old)
    assert (os.stat(p).st_mode & 0o777) == 0o640


def test_two_files_are_written_together_or_not_at_all(tmp_path):
    from typer.testing import CliRunner

    from meanfield.cli import app

    out = tmp_path / "p.png"
    res = CliRunner().invoke(app, ["phase-diagram", "-a", "tanh", "--grid", "6", "--out", str(out),
                                   "--data", "/proc/x.npz", "--quiet"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_torch_compare_in_train_mode_with_dropout_says_so():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    import meanfield.torch as mft

    m = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Dropout(0.5), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    mft.init_(m, seed=0)
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="train mode"):
        c = mft.compare(m, x)
    assert any("assumes eval mode" in n for n in c.notes)
    m.eval()
    assert not any("train mode" in n for n in mft.compare(m, x).notes)


def test_torch_conv_transpose_and_embedding_named_in_refusals():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    import meanfield.torch as mft

    m = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Unflatten(1, (16, 1)), nn.ConvTranspose1d(16, 4, 3),
                      nn.ReLU(), nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(mf.DomainError, match=r"3 \(ConvTranspose1d\)"):
        mft.init_(m, sigma_w2=2.0)

    class E(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc, self.out = nn.Embedding(10, 16), nn.Linear(16, 16), nn.Linear(16, 2)

        def forward(self, i):
            return self.out(torch.tanh(self.fc(self.emb(i))))

    with pytest.raises(mf.DomainError, match=r"emb \(Embedding\)"):
        mft.compare(E(), torch.randint(0, 10, (4,)))


# ------------------------------------------------------------------------------------------
# Requests too large for memory or for floats: refused with the number, before any allocation
# ------------------------------------------------------------------------------------------


def test_available_bytes_sees_the_address_space_limit(address_space):
    from meanfield._memory import available_bytes

    if address_space is None:
        pytest.skip("address-space hard limit already lower")
    assert 2e9 < available_bytes() <= 3e9 + 1e6


@pytest.mark.parametrize("call, size", [
    # bytes = entries x the per-entry cost stated at each guard (grid^2 x 64 arrays x 8 bytes, ...)
    (lambda: fixed_points.phase_diagram("tanh", grid=100_000), "5.12 TB"),
    (lambda: maps.iterate("tanh", 1.0, 0.0, 10 ** 9), "64 GB"),
    (lambda: residual.iterate_residual("resnet-full", "tanh", 1.0, 0.0, 10 ** 9), "256 GB"),
    (lambda: mup.abc("mup", 10 ** 9), "512 GB"),
    (lambda: spectra.jacobian_spectrum("tanh", 1.0, 0.0, 10).grid(10 ** 9), "64 GB"),
    (lambda: kernels.kernel("mlp", "relu", np.ones((100_000, 2)), depth=2, sigma_w2=2.0, sigma_b2=0.0), "160 GB"),
])
def test_huge_requests_are_refused_with_the_memory_they_need(address_space, call, size):
    with pytest.raises(mf.DomainError, match=f"needs about {size} of memory, more than half of the"):
        call()


def test_depth_past_the_float_range_is_refused_by_every_depth_user():
    for call in (lambda d: mf.advise(arch="mlp", activation="tanh", depth=d),
                 lambda d: mf.advise(arch="resnet-full", activation="tanh", depth=d),
                 lambda d: spectra.jacobian_spectrum("tanh", 1.0, 0.0, d)):
        with pytest.raises(mf.DomainError, match=r"depth = 1\.00e\+400 is past the float range"):
            call(10 ** 400)
    with pytest.raises(mf.DomainError, match="over 1e308 bytes"):
        maps.iterate("tanh", 1.0, 0.0, 10 ** 400)


def test_linear_network_spectrum_edge_at_a_billion_layers():
    # tanh at sigma_w2 = 1, sigma_b2 = 0: q* = 0, phi'(0) = 1, so J is a product of L Gaussian
    # matrices and the law is Fuss-Catalan with edge (L+1)^(L+1) / L^L (MATH.md 6.2)
    L = 10 ** 9
    mpmath.mp.dps = 30
    want = float((mpmath.mpf(L) + 1) ** (L + 1) / mpmath.mpf(L) ** L)
    assert spectra.jacobian_spectrum("tanh", 1.0, 0.0, L).edge == pytest.approx(want, rel=1e-6)


# ------------------------------------------------------------------------------------------
# Found by tests/test_cli_fuzz.py: each a traceback before
# ------------------------------------------------------------------------------------------


def _cli(argv):
    from typer.testing import CliRunner

    from meanfield.cli import app

    return CliRunner().invoke(app, [str(a) for a in argv])


def test_output_name_too_long_is_one_line(tmp_path):
    np.save(tmp_path / "X.npy", np.ones((2, 2)))
    res = _cli(["kernel", "--x", tmp_path / "X.npy", "--out", tmp_path / ("x" * 300 + ".npz"),
                "-a", "relu", "--depth", "1", "--sigma-w2", "2"])
    assert res.exit_code == 2 and (res.exception is None or isinstance(res.exception, SystemExit))
    assert res.stderr.count("\n") == 1 and "File name too long" in res.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "X.npy"]


def test_binary_network_spec_is_refused(tmp_path):
    from meanfield.network import load_spec

    (tmp_path / "net.json").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(mf.DomainError, match="not a JSON text file"):
        load_spec(tmp_path / "net.json")


def test_moments_past_the_float_range_skip_the_table():
    # elu with alpha = -1e308: E[phi^2] overflows for q of order 1; the spline table (built for
    # arrays of >= 2048 q) must not raise on the non-finite values; the CLI then refuses or reports
    from meanfield import gaussian

    act = mf.get_activation("elu:-1e308")
    q = np.geomspace(1e-3, 10.0, 4096)
    # phi^2 ~ 1e616 x^2 for x < 0: every moment overflows, by either path
    assert not np.isfinite(gaussian.v_phi(act, q[:10])).any()
    assert not np.isfinite(gaussian.v_phi(act, q)).any()


def test_solve_grid_axes_that_do_not_broadcast_say_what_to_pass():
    sw, sb = np.linspace(0.5, 3, 5), np.linspace(0, 1, 3)
    with pytest.raises(mf.DomainError, match=r"shape \(5,\).*shape \(3,\).*np\.meshgrid"):
        mf.solve_grid("tanh", sw, sb)
    # the meshgrid form is the grid: each point is the fixed point of its own (sigma_w2, sigma_b2)
    W, B = np.meshgrid(sw, sb)
    g = mf.solve_grid("tanh", W, B)
    assert g.q_star.shape == (3, 5)
    assert g.q_star[2, 1] == pytest.approx(mf.fixed_point("tanh", sw[1], sb[2]).q_star, rel=1e-9)


def test_network_kernel_and_propagate_refuse_what_cannot_fit(address_space):
    from meanfield import network as nw

    net = nw.serial(nw.dense(sigma_w2=2.0), nw.activation("relu"), nw.dense(sigma_w2=1.0))
    X = np.ones((100_000, 2))
    # 2 arrays x 1e10 entries x 8 bytes; 3 layers x 1e10 x 8
    with pytest.raises(mf.DomainError, match="needs about 160 GB of memory"):
        net.kernel(X)
    with pytest.raises(mf.DomainError, match="needs about 240 GB of memory"):
        net.propagate(X)
