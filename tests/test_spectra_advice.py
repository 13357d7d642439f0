"""Jacobian spectra in the advice and orthogonal weights in init_ (issue 15 section 2).

The predicted variances of the squared singular values of the input-output Jacobian are checked
against MATH.md 6.2's closed form at criticality, variance = L (mu2/mu1^2 - 1 - s1) with s1 = -1
(Gaussian) and 0 (orthogonal), with mu_k = E[phi'(sqrt(q*) z)^(2k)] computed here: in closed
form for erf, hard-tanh, relu and linear, by scipy.integrate.quad for tanh.  Edges are checked
where a closed form exists (Fuss-Catalan, Marchenko-Pastur, relu's two-atom law).  Orthogonal
init_ is checked for W W^T = sigma_w2 I per layer, and a deep tanh net initialised both ways
against the advice's predicted variances (Monte Carlo, marked slow).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize
from scipy.special import erf
from typer.testing import CliRunner

import test_advise as ta
from meanfield.advise import advise
from meanfield.cli import app
from meanfield.errors import DomainError

try:
    import torch
    from torch import nn

    import meanfield.torch as mft
except ImportError:  # the advice tests need no torch
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs the torch extra")


def _erf_moments(q):
    """erf: phi' = (2/sqrt(pi)) exp(-u^2), so mu_k = (4/pi)^k (1 + 4 k q)^(-1/2)."""
    return 4 / math.pi / math.sqrt(1 + 4 * q), (4 / math.pi) ** 2 / math.sqrt(1 + 8 * q)


def _erf_q_star(sw, sb):
    """q* of erf from its closed-form length map V(q) = (2/pi) arcsin(2q / (1 + 2q))."""
    return optimize.brentq(lambda q: sw * 2 / math.pi * math.asin(2 * q / (1 + 2 * q)) + sb - q, 1e-12, 50,
                           xtol=1e-15, rtol=1e-14)


def _hard_tanh_moments(q):
    """hard-tanh: phi'^2 is 1 on |u| < 1 and 0 outside, so mu_1 = mu_2 = P(|u| < 1) = erf(1/sqrt(2q))."""
    p = erf(1 / math.sqrt(2 * q))
    return p, p


def _tanh_moments(q):
    return ta.gauss(lambda u: ta.sech2(u) ** 2, q), ta.gauss(lambda u: ta.sech2(u) ** 4, q)


def _check_variances(a, mu1, mu2):
    L = a.depth
    assert a.sigma_w2 * mu1 == pytest.approx(1.0, abs=1e-9)  # criticality, so m1 = 1
    excess = mu2 / mu1 ** 2 - 1
    assert a.jacobian_variance_gaussian == pytest.approx(L * (excess + 1), rel=1e-7)
    assert a.jacobian_variance_orthogonal == pytest.approx(L * excess, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("depth", [10, 50, 200])
def test_erf_variances_match_the_closed_form(depth):
    a = advise("mlp", "erf", depth)
    q = _erf_q_star(a.sigma_w2, a.sigma_b2)
    assert a.q_star == pytest.approx(q, rel=1e-8)
    _check_variances(a, *_erf_moments(q))
    mu1, mu2 = _erf_moments(q)
    assert mu2 / mu1 ** 2 == pytest.approx((1 + 4 * q) / math.sqrt(1 + 8 * q), rel=1e-14)  # MATH.md's row
    assert a.orthogonal_gain == pytest.approx(a.jacobian_variance_gaussian / a.jacobian_variance_orthogonal)
    # small q*: the law of phi'^2 concentrates, near-isometry with orthogonal weights
    assert a.weights == "orthogonal" and a.jacobian_variance_orthogonal < 1.0
    assert "orthogonal weights" in a.weights_reason and "isometry" in a.weights_reason


@pytest.mark.parametrize("depth", [10, 50])
def test_tanh_variances_match_quadrature(depth):
    a = advise("mlp", "tanh", depth)
    q = ta.tanh_q_star(a.sigma_w2, a.sigma_b2)
    _check_variances(a, *_tanh_moments(q))
    assert a.weights == "orthogonal" and a.orthogonal_gain > 10
    assert a.jacobian_edge_orthogonal < a.jacobian_edge_gaussian


def test_hard_tanh_variances_match_the_closed_form():
    a = advise("mlp", "hard_tanh", 30)
    q = optimize.brentq(  # V(q) = E[clip(u, -1, 1)^2] in closed form
        lambda q: a.sigma_w2 * (q * erf(1 / math.sqrt(2 * q)) - math.sqrt(2 * q / math.pi) * math.exp(-1 / (2 * q))
                                + (1 - erf(1 / math.sqrt(2 * q)))) + a.sigma_b2 - q, 1e-6, 10, xtol=1e-15)
    assert a.q_star == pytest.approx(q, rel=1e-8)
    _check_variances(a, *_hard_tanh_moments(q))
    assert a.weights == "orthogonal"


@pytest.mark.parametrize("depth", [1, 2, 50])
def test_relu_spreads_either_way(depth):
    """relu at He (2, 0): phi'^2 is 0 or 1 with probability 1/2 at every q*, mu2/mu1^2 = 2, so the
    variance is 2L (Gaussian) and L (orthogonal): orthogonal weights halve it but give no isometry."""
    a = advise("mlp", "relu", depth)
    assert a.jacobian_variance_gaussian == pytest.approx(2 * depth, rel=1e-9)
    assert a.jacobian_variance_orthogonal == pytest.approx(depth, rel=1e-9)
    assert a.orthogonal_gain == pytest.approx(2.0, rel=1e-9)
    assert a.weights == "gaussian"
    assert "positively homogeneous" in a.weights_reason and "either ensemble" in a.weights_reason
    if depth == 1:  # J J^T = W^T D^2 W ~ 2 x Marchenko-Pastur at ratio 1/2 on the active half; 2 D^2
        assert a.jacobian_edge_gaussian == pytest.approx(2 * (1 + math.sqrt(0.5)) ** 2, rel=1e-6)
        assert a.jacobian_edge_orthogonal == pytest.approx(2.0, rel=1e-6)
    if depth == 2:  # 4 P Q P of two free projections of trace 1/2: edge 4
        assert a.jacobian_edge_orthogonal == pytest.approx(4.0, rel=1e-6)


def test_linear_is_exactly_isometric_with_orthogonal_weights():
    L = 10
    a = advise("mlp", "linear", L)
    assert a.jacobian_variance_orthogonal == 0.0 and a.orthogonal_gain is None
    assert a.jacobian_variance_gaussian == pytest.approx(L, rel=1e-12)
    assert a.jacobian_edge_gaussian == pytest.approx((L + 1) ** (L + 1) / L ** L, rel=1e-7)  # Fuss-Catalan
    assert a.jacobian_edge_orthogonal == pytest.approx(1.0, rel=1e-9)
    assert a.weights == "orthogonal" and "exact dynamical isometry" in a.weights_reason


def test_tanh_large_bias_is_not_isometric():
    """At sigma_b2 = 0.05 (q* = 0.57) tanh's phi'^2 is spread: orthogonal weights gain less than 10x."""
    a = advise("mlp", "tanh", 50, sigma_b2=0.05)
    q = ta.tanh_q_star(a.sigma_w2, a.sigma_b2)
    _check_variances(a, *_tanh_moments(q))
    assert a.orthogonal_gain < 10 and a.jacobian_variance_orthogonal > 1
    assert a.weights == "gaussian" and "spread" in a.weights_reason


def test_cli_json_has_the_fields():
    res = CliRunner().invoke(app, ["advise", "--activation", "tanh", "--depth", "20", "--json"])
    assert res.exit_code == 0, res.stdout
    d = json.loads(res.stdout)
    a = advise("mlp", "tanh", 20).to_dict()
    keys = ("jacobian_variance_gaussian", "jacobian_variance_orthogonal", "jacobian_edge_gaussian",
            "jacobian_edge_orthogonal", "orthogonal_gain", "weights", "weights_reason")
    for k in keys:
        assert d[k] == a[k], k
    text = CliRunner().invoke(app, ["advise", "--activation", "tanh", "--depth", "20"]).stdout
    assert all(k in text for k in keys)


# ------------------------------------------------------------------------------------------------
# init_(weights="orthogonal")
# ------------------------------------------------------------------------------------------------

def _mlp(d, n, depth, out=10):
    mods = [nn.Linear(d, n), nn.Tanh()]
    for _ in range(depth - 1):
        mods += [nn.Linear(n, n), nn.Tanh()]
    return nn.Sequential(*mods, nn.Linear(n, out)).double()


def _isometry_error(w, sigma2):
    """max |W W^T - c I| / c with c = sigma2 (fan_out <= fan_in), or |W^T W - c I| / c with
    c = sigma2 fan_out / fan_in (entries of mean square sigma2 / fan_in either way)."""
    m = w.reshape(w.shape[0], -1).double()
    rows, cols = m.shape
    if rows <= cols:
        gram, c = m @ m.T, sigma2
    else:
        gram, c = m.T @ m, sigma2 * rows / cols
    return float((gram - c * torch.eye(gram.shape[0], dtype=gram.dtype)).abs().max()) / c


@pytest.mark.torch
@needs_torch
def test_orthogonal_init_is_a_scaled_isometry_per_layer():
    a = advise("mlp", "tanh", 6, width=48, ntk=False)
    model = _mlp(24, 48, 6)
    mft.init_(model, a, seed=3, weights="orthogonal")
    rec = model._meanfield_init
    assert rec.weights == "orthogonal" and rec.to_dict()["weights"] == "orthogonal"
    sw = rec.variances.sigma_w2
    assert sw == a.sigma_w2 and a.weights == "orthogonal"
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for lin in linears:
        assert _isometry_error(lin.weight.detach(), sw) < 1e-13
    # the first layer (48 x 24) is tall: orthonormal columns, W^T W = sigma_w2 (48/24) I
    assert linears[0].weight.shape == (48, 24)
    # biases stay Gaussian; a second draw with the same seed is the same
    again = _mlp(24, 48, 6)
    mft.init_(again, a, seed=3, weights="orthogonal")
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), again.parameters()))
    gauss = _mlp(24, 48, 6)
    mft.init_(gauss, a, seed=3)
    assert gauss._meanfield_init.weights == "gaussian"
    assert _isometry_error(gauss[2].weight.detach(), sw) > 0.1


@pytest.mark.torch
@needs_torch
def test_orthogonal_init_float32_to_rounding():
    model = _mlp(32, 64, 3).float()
    mft.init_(model, seed=0, weights="orthogonal", sigma_w2=1.5)
    for lin in (m for m in model if isinstance(m, nn.Linear)):
        assert lin.weight.dtype == torch.float32
        assert _isometry_error(lin.weight.detach(), 1.5) < 1e-6  # float32 rounding of a float64 QR


@pytest.mark.torch
@needs_torch
def test_orthogonal_conv_is_an_isometry_of_each_groups_matrix():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1, groups=2),
                          nn.Tanh(), nn.Conv2d(8, 16, 1), nn.Tanh(), nn.Conv2d(16, 4, 3, padding=1)).double()
    mft.init_(model, seed=1, weights="orthogonal", sigma_w2=2.0)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    for conv in convs:
        w = conv.weight.detach()
        g = conv.groups
        for blk in w.reshape(g, w.shape[0] // g, -1):
            assert _isometry_error(blk, 2.0) < 1e-13
        assert float((w ** 2).mean()) * w[0].numel() == pytest.approx(2.0, rel=1e-12)
    # the 1x1 conv (16 x 8) is tall; the grouped one has two 4 x 36 blocks
    assert convs[2].weight.shape[:2] == (16, 8) and convs[1].groups == 2


@pytest.mark.torch
@needs_torch
@pytest.mark.parametrize("bad", ["uniform", "haar", 3, None])
def test_unknown_weights_refused(bad):
    with pytest.raises(DomainError, match="weights must be one of gaussian, orthogonal") as exc:
        mft.init_(_mlp(8, 8, 2), seed=0, weights=bad)
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------------------------------
# Monte Carlo: a deep tanh net through init_, both ensembles
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.torch
@needs_torch
def test_orthogonal_tanh_net_has_the_predicted_smaller_spread():
    """Width 256, depth 16, 8 networks per ensemble, inputs with |x|^2/N = V(q*) so that every
    layer sits at the advised q*: the variance tr((J J^T)^2)/N - (tr(J J^T)/N)^2 of the squared
    singular values of J = d tanh(h^L) / dx, mean over networks within 5 standard errors of the
    advice's prediction (Student-t with 7 degrees of freedom: P(|t| > 5) = 0.16%), and the
    orthogonal one below the Gaussian one."""
    n, depth, nets = 256, 16, 8
    a = advise("mlp", "tanh", depth, ntk=False)
    x = torch.randn(n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x *= math.sqrt((a.q_star - a.sigma_b2) / a.sigma_w2 / float(x.pow(2).mean()))
    measured = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for weights in ("gaussian", "orthogonal"):
            v = []
            for seed in range(nets):
                model = _mlp(n, n, depth)
                mft.init_(model, a, weights=weights, seed=100 + seed)
                jac = torch.func.jacrev(model[:-1])(x).detach()
                s = torch.linalg.svdvals(jac) ** 2
                v.append(float(s.pow(2).mean() - s.mean() ** 2))
            measured[weights] = np.array(v)
    finally:
        torch.set_num_threads(before)
    for weights, predicted in (("gaussian", a.jacobian_variance_gaussian),
                               ("orthogonal", a.jacobian_variance_orthogonal)):
        v = measured[weights]
        se = v.std(ddof=1) / math.sqrt(nets)
        assert abs(v.mean() - predicted) <= 5 * se, (weights, v.mean(), se, predicted)
    assert measured["orthogonal"].max() < measured["gaussian"].min()
