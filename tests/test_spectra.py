"""meanfield.spectra (MATH.md section 6) and the `meanfield spectrum` command.

Closed forms against numerical integration of their densities; Fuss-Catalan against products of
random matrices; the Jacobian spectrum's free-probability moments against its own density and
against finite-width numpy Jacobians (marked slow).  Monte Carlo tolerances are 5 standard errors
of the mean over independent networks.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from scipy.integrate import quad
from typer.testing import CliRunner

from meanfield import spectra as sp
from meanfield.cli import app
from meanfield.errors import DomainError
from meanfield.fixed_points import edge_of_chaos

TANH_SW2 = float(edge_of_chaos("tanh", 0.05).sigma_w2)  # tanh on the edge of chaos, sigma_b2 = 0.05
SMALL_Q = (1.05, 2.01e-5)  # MATH.md 6.2's isometry example, q* ~ 0.026 (tanh, nearly critical)


def _cheb(spec, n=600):
    """Chebyshev-clustered grid on (0, edge) and its quadrature weights (resolves 1/sqrt edges)."""
    theta = (np.arange(n) + 0.5) / n * np.pi
    lam = spec.edge * (1.0 - np.cos(theta)) / 2.0
    return lam, spec.edge * np.sin(theta) / 2.0 * (np.pi / n)


# ------------------------------------------------------------------------------------------------
# 6.1 closed forms
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma2", [1.0, 2.5])
def test_semicircle_moments_match_density(sigma2):
    r = 2 * math.sqrt(sigma2)
    # x = r sin t removes the square-root edges
    num = [quad(lambda t, k=k: (r * math.sin(t)) ** k * sp.semicircle_density(r * math.sin(t), sigma2)
                * r * math.cos(t), -math.pi / 2, math.pi / 2, epsabs=1e-11)[0] for k in range(0, 9)]
    assert num[0] == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(num[1:], sp.semicircle_moments(8, sigma2), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(sp.semicircle_moments(6), [0, 1, 0, 2, 0, 5])  # Catalan numbers


@pytest.mark.parametrize("ratio", [0.3, 1.0, 2.5])
def test_marchenko_pastur_moments_match_density(ratio):
    s2 = 1.7
    lo, hi = s2 * (1 - math.sqrt(ratio)) ** 2, s2 * (1 + math.sqrt(ratio)) ** 2
    atom = sp.marchenko_pastur_atom(ratio)
    assert atom == pytest.approx(max(0.0, 1 - 1 / ratio))
    # x = lo + (hi - lo) sin^2(t): removes the inverse-square-root edges (and 1/sqrt(x) at ratio 1)
    def integral(k):
        f = lambda t: ((lo + (hi - lo) * math.sin(t) ** 2) ** k
                       * sp.marchenko_pastur_density(lo + (hi - lo) * math.sin(t) ** 2, ratio, s2)
                       * (hi - lo) * math.sin(2 * t))
        return quad(f, 0, math.pi / 2, epsabs=1e-12, limit=200)[0]
    assert integral(0) + atom == pytest.approx(1.0, abs=1e-8)
    num = [integral(k) for k in range(1, 6)]
    np.testing.assert_allclose(num, sp.marchenko_pastur_moments(5, ratio, s2), rtol=1e-8)
    m = sp.marchenko_pastur_moments(2, ratio, s2)
    assert m[0] == pytest.approx(s2) and m[1] == pytest.approx(s2 ** 2 * (1 + ratio))


def test_fuss_catalan_closed_forms():
    np.testing.assert_allclose(sp.fuss_catalan_moments(4, 1), [1, 2, 5, 14])
    np.testing.assert_allclose(sp.fuss_catalan_moments(3, 2), [1, 3, 12])
    for L in (1, 2, 5, 30):
        # free product of L Marchenko-Pastur laws (S = 1/(1+w)^L) == Fuss-Catalan
        np.testing.assert_allclose(sp.free_product_moments([sp.marchenko_pastur_moments(5)], repeat=L),
                                   sp.fuss_catalan_moments(5, L), rtol=1e-12)
        spec = sp.jacobian_spectrum("linear", 1.0, 0.0, L, "gaussian")
        np.testing.assert_allclose(spec.moments, sp.fuss_catalan_moments(3, L), rtol=1e-12)
        assert spec.edge == pytest.approx(sp.fuss_catalan_edge(L), rel=1e-9)
    assert sp.fuss_catalan_edge(1) == pytest.approx(4.0)
    assert sp.fuss_catalan_edge(100) == pytest.approx(math.e * 101, rel=0.01)


@pytest.mark.slow
def test_fuss_catalan_against_products_of_random_matrices(one_blas_thread):
    """tr((J J^T)^k)/N for J a product of L independent N x N Gaussians, 6 products, N = 1000."""
    M = sp.sample_moments("linear", 1.0, 0.0, 3, width=1000, n_nets=6, depths=(1, 2, 3), seed=11)
    for L, Md in zip((1, 2, 3), M):
        se = Md.std(0, ddof=1) / math.sqrt(Md.shape[0])
        assert np.all(np.abs(Md.mean(0) - sp.fuss_catalan_moments(3, L)) <= 5 * se), (L, Md.mean(0), se)


def test_s_transform_series():
    # Marchenko-Pastur ratio 1: S(w) = 1/(1+w); a point mass at a: S = 1/a
    np.testing.assert_allclose(sp.moments_to_s(sp.marchenko_pastur_moments(6)), (-1.0) ** np.arange(6), atol=1e-12)
    np.testing.assert_allclose(sp.moments_to_s([2.0, 4.0, 8.0]), [0.5, 0, 0], atol=1e-15)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 3.0, 50)
    m = np.array([np.mean(x ** k) for k in range(1, 7)])
    np.testing.assert_allclose(sp.s_to_moments(sp.moments_to_s(m)), m, rtol=1e-12)
    s = sp.moments_to_s(m[:3])
    assert s[0] == pytest.approx(1 / m[0]) and s[1] == pytest.approx((m[0] ** 2 - m[1]) / m[0] ** 3)


# ------------------------------------------------------------------------------------------------
# 6.2 the Jacobian spectrum: moments and variance
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("act,sw,sb", [("tanh", TANH_SW2, 0.05), ("relu", 2.0, 0.0), ("erf", 1.3, 0.2),
                                       ("tanh", 1.2, 0.3), ("gelu", 1.5, 0.1)])
@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
@pytest.mark.parametrize("L", [1, 3, 40])
def test_moments_and_variance_formula(act, sw, sb, weights, L):
    spec = sp.jacobian_spectrum(act, sw, sb, L, weights)
    mu1, mu2, _ = spec.mu
    assert spec.chi_1 == pytest.approx(sw * mu1, rel=1e-12)
    assert spec.moments[0] == pytest.approx(spec.chi_1 ** L, rel=1e-10)
    # MATH.md 6.2: (m2 - m1^2) / m1^2 = L (mu2/mu1^2 - 1 - s1), s1 = -1 Gaussian, 0 orthogonal
    s1 = -1.0 if weights == "gaussian" else 0.0
    rel = L * (mu2 / mu1 ** 2 - 1 - s1)
    assert spec.s1 == s1
    assert spec.variance / spec.moments[0] ** 2 == pytest.approx(rel, rel=1e-9, abs=1e-12)
    assert spec.relative_variance == pytest.approx(rel, rel=1e-12, abs=1e-15)
    if spec.phase == "critical":
        assert spec.variance == pytest.approx(rel, rel=1e-9, abs=1e-12)
    assert spec.moment(2) == pytest.approx(spec.moments[1], rel=1e-10)
    assert spec.edge > 0 and spec.moments[2] <= spec.edge * spec.moments[1] * (1 + 1e-9)


def test_math_table_rows():
    """The rows of MATH.md 6.2's table that are closed forms."""
    for L in (1, 4, 16):
        g, o = (sp.jacobian_spectrum("relu", 2.0, 0.0, L, w) for w in ("gaussian", "orthogonal"))
        assert g.variance == pytest.approx(2 * L) and o.variance == pytest.approx(L)
        assert g.atoms == ((0.0, 0.5),) and o.atoms[0] == (0.0, 0.5)
        lin = sp.jacobian_spectrum("linear", 1.0, 0.0, L, "orthogonal")
        assert lin.variance == pytest.approx(0.0, abs=1e-12) and lin.atoms[-1][0] == pytest.approx(1.0)
    # erf: mu2/mu1^2 = (1 + 4q)/sqrt(1 + 8q)
    spec = sp.jacobian_spectrum("erf", 1.3, 0.2, 5, "gaussian")
    q = spec.q_star
    assert spec.mu[0] == pytest.approx(4 / math.pi / math.sqrt(1 + 4 * q), rel=1e-12)
    assert spec.mu[1] / spec.mu[0] ** 2 == pytest.approx((1 + 4 * q) / math.sqrt(1 + 8 * q), rel=1e-9)
    # hard_tanh: phi'^2 is 0 or 1, so mu2 = mu1 and mu2/mu1^2 = 1/mu1
    ht = sp.jacobian_spectrum("hard_tanh", 1.5, 0.1, 3, "orthogonal")
    assert ht.mu[0] == pytest.approx(math.erf(1 / math.sqrt(2 * ht.q_star)), rel=1e-12)
    assert ht.relative_variance == pytest.approx(3 * (1 / ht.mu[0] - 1), rel=1e-9)


def test_isometry_at_small_q_with_orthogonal_weights():
    g, o = (sp.jacobian_spectrum("tanh", *SMALL_Q, 64, w) for w in ("gaussian", "orthogonal"))
    assert g.q_star == pytest.approx(0.026, rel=0.1)
    assert o.relative_variance < 0.1 * g.relative_variance
    assert g.relative_variance == pytest.approx(64, rel=0.1)  # ~ L for Gaussian weights


# ------------------------------------------------------------------------------------------------
# the density
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("act,sw,sb,weights,L", [
    ("tanh", TANH_SW2, 0.05, "gaussian", 1), ("relu", 2.0, 0.0, "gaussian", 1),
    ("relu", 2.0, 0.0, "gaussian", 2), ("tanh", *SMALL_Q, "orthogonal", 2),
    ("tanh", *SMALL_Q, "orthogonal", 16), ("tanh", *SMALL_Q, "orthogonal", 256),
    ("relu", 2.0, 0.0, "orthogonal", 2), ("erf", 0.9, 0.02, "orthogonal", 4), ("linear", 1.0, 0.0, "gaussian", 1),
])
def test_density_integrates_to_one_and_has_the_moments(act, sw, sb, weights, L):
    spec = sp.jacobian_spectrum(act, sw, sb, L, weights)
    lam, dl = _cheb(spec)
    rho = spec.density(lam)
    assert np.all(rho >= 0)
    atoms = spec.atoms
    total = np.sum(rho * dl) + sum(p for _, p in atoms)
    # measured on 600 Chebyshev points: total within 1.7e-4 (tanh, Gaussian, L = 1, whose
    # density has an integrable singularity at 0), moments within 1.6e-5
    assert total == pytest.approx(1.0, abs=5e-4)
    for k in (1, 2, 3):
        mk = np.sum(rho * lam ** k * dl) + sum(p * a ** k for a, p in atoms)
        assert mk == pytest.approx(spec.moments[k - 1], rel=1e-4), k


@pytest.mark.parametrize("weights,L", [("gaussian", 2), ("gaussian", 8), ("orthogonal", 8)])
def test_density_moments_with_a_singular_origin(weights, L):
    """Gaussian products have rho ~ lambda^(-L/(L+1)) at 0; moments k >= 1 are still resolved."""
    spec = sp.jacobian_spectrum("tanh", TANH_SW2, 0.05, L, weights)
    lam, dl = _cheb(spec)
    rho = spec.density(lam)
    for k in (1, 2, 3):  # measured: 5e-7 (m_1, Gaussian L = 8), <= 5e-8 otherwise
        assert np.sum(rho * lam ** k * dl) == pytest.approx(spec.moments[k - 1], rel=1e-5)


def test_density_closed_forms():
    """Three spectra known in closed form (free probability of projections and Wishart matrices)."""
    # linear, Gaussian, L = 1: Marchenko-Pastur at ratio 1
    lin = sp.jacobian_spectrum("linear", 1.0, 0.0, 1, "gaussian")
    lam = np.linspace(0.01, 3.99, 41)
    np.testing.assert_allclose(lin.density(lam), sp.marchenko_pastur_density(lam, 1.0), rtol=1e-6)
    # relu, Gaussian, L = 1: the N/2 active rows give 2 W_A W_A^T, Marchenko-Pastur at ratio 1/2
    relu = sp.jacobian_spectrum("relu", 2.0, 0.0, 1, "gaussian")
    lam = np.linspace(0.2, 5.8, 41)
    np.testing.assert_allclose(relu.density(lam), 0.25 * sp.marchenko_pastur_density(lam / 2, 0.5), rtol=1e-6,
                               atol=1e-12)
    # relu, orthogonal, L = 2: 4 P Q P for free projections of trace 1/2 (atom 1/2 at 0, arcsine law)
    ro = sp.jacobian_spectrum("relu", 2.0, 0.0, 2, "orthogonal")
    lam = np.linspace(0.05, 3.95, 40)
    x = lam / 4
    np.testing.assert_allclose(ro.density(lam), 1 / (2 * np.pi) / np.sqrt(x * (1 - x)) / 4, rtol=1e-6)
    assert ro.edge == pytest.approx(4.0, rel=1e-9)


def test_density_vanishes_beyond_the_edge():
    spec = sp.jacobian_spectrum("tanh", TANH_SW2, 0.05, 4, "gaussian")
    e = spec.edge
    rho = spec.density(np.array([0.98 * e, 0.999 * e, 1.001 * e, 1.05 * e, 3 * e, np.nan, -1.0]))
    assert rho[0] > rho[1] > 0
    assert np.all(rho[2:5] < 1e-6 * rho[0])
    assert np.isnan(rho[5]) and rho[6] == 0
    # square-root edge: rho^2 is linear in (e - lambda) close to it
    r2 = spec.density(e * (1 - np.array([1e-4, 2e-4]))) ** 2
    assert r2[1] / r2[0] == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("weights,L", [("gaussian", 1), ("orthogonal", 6)])
def test_density_off_criticality_is_rescaled(weights, L):
    spec = sp.jacobian_spectrum("tanh", 0.9, 0.01, L, weights)
    assert spec.phase == "ordered" and spec.moments[0] == pytest.approx(spec.chi_1 ** L) and spec.chi_1 < 0.9
    lam, dl = _cheb(spec)
    rho = spec.density(lam)
    assert np.sum(rho * dl) == pytest.approx(1.0, abs=5e-4)
    for k in (1, 2, 3):
        assert np.sum(rho * lam ** k * dl) == pytest.approx(spec.moments[k - 1], rel=5e-4)


def test_orthogonal_depth_one_is_the_law_of_phi_prime_squared():
    spec = sp.jacobian_spectrum("tanh", TANH_SW2, 0.05, 1, "orthogonal")
    # a hard edge at sigma_w2 * max phi'(h)^2, read from the quadrature node nearest h = 0
    assert spec.edge == pytest.approx(TANH_SW2, rel=1e-5) and spec.edge <= TANH_SW2
    lam = np.linspace(1e-3, spec.edge, 400)
    rho = spec.density(lam)
    dl = lam[1] - lam[0]
    assert np.sum(rho) * dl == pytest.approx(1.0, abs=5e-3)
    relu = sp.jacobian_spectrum("relu", 2.0, 0.0, 1, "orthogonal")
    assert relu.atoms == ((0.0, 0.5), (2.0, pytest.approx(0.5)))
    assert np.all(relu.density(np.linspace(0.1, 3, 20)) == 0)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------

def test_bad_input():
    with pytest.raises(DomainError, match="depth must be >= 1"):
        sp.jacobian_spectrum("tanh", 1.5, 0.1, 0)
    with pytest.raises(DomainError, match="weights must be one of gaussian, orthogonal"):
        sp.jacobian_spectrum("tanh", 1.5, 0.1, 3, "uniform")
    with pytest.raises(DomainError, match="q diverges"):
        sp.jacobian_spectrum("relu", 3.0, 0.0, 3)
    with pytest.raises(DomainError, match="no finite limit"):
        sp.jacobian_spectrum("tanh", 3.0, 0.0, 5000)
    with pytest.raises(DomainError, match="no finite limit"):
        sp.jacobian_spectrum("tanh", 0.3, 0.0, 5000)
    with pytest.raises(DomainError):
        sp.jacobian_spectrum("step", 1.0, 0.1, 3)
    with pytest.raises(DomainError, match="sigma_w2"):
        sp.jacobian_spectrum("tanh", -1.0, 0.1, 3)


# ------------------------------------------------------------------------------------------------
# finite-width Jacobians (Monte Carlo)
# ------------------------------------------------------------------------------------------------

MC = [("tanh", TANH_SW2, 0.05, "gaussian", 8, (1, 2, 8)),
      ("relu", 2.0, 0.0, "gaussian", 8, (1, 2, 8)),
      ("tanh", TANH_SW2, 0.05, "orthogonal", 4, (1, 2, 4)),
      ("relu", 2.0, 0.0, "orthogonal", 4, (1, 2, 4)),
      ("tanh", *SMALL_Q, "orthogonal", 4, (4,))]


@pytest.fixture
def one_blas_thread():
    """One BLAS thread, but only on a busy machine.

    When other processes hold the cores, threaded QR/matmul is 4-10x slower than serial; on a quiet
    2-core machine (CI) serial made the four Jacobian tests 8 s -> 14 s each, so the limit applies
    only while the load average is at least the core count.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    if os.getloadavg()[0] < (os.cpu_count() or 1):
        yield
        return
    with threadpool_limits(1):
        yield


@pytest.mark.slow
@pytest.mark.parametrize("act,sw,sb,weights,depth,depths", MC)
def test_moments_against_finite_width_jacobians(act, sw, sb, weights, depth, depths, one_blas_thread):
    """Width 1000, 8 networks: tr((J J^T)^k)/N, k = 1..3, within 5 standard errors of the mean.

    The standard error is estimated from the 8 networks, so the deviation over it is Student-t with
    7 degrees of freedom: P(|t| > 5) = 0.16% per comparison (with 4 networks it would be 1.5%, and a
    4-network version of this test failed on a 3.5-sigma fluctuation that 24 networks did not repeat).
    """
    M = sp.sample_moments(act, sw, sb, depth, weights=weights, width=1000, n_nets=8, depths=depths, seed=2024)
    for L, Md in zip(depths, M):
        th = np.array(sp.jacobian_spectrum(act, sw, sb, L, weights).moments)
        se = Md.std(0, ddof=1) / math.sqrt(Md.shape[0])
        assert np.all(np.abs(Md.mean(0) - th) <= 5 * se), (L, th, Md.mean(0), se)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_json():
    res = _run("spectrum", "--activation", "tanh", "--sigma-w2", TANH_SW2, "--sigma-b2", 0.05, "--depth", 8,
               "--weights", "orthogonal", "--json")
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert "\x1b[" not in res.stdout and res.stdout.count("\n") == 1
    d = json.loads(res.stdout)
    spec = sp.jacobian_spectrum("tanh", TANH_SW2, 0.05, 8, "orthogonal")
    assert d["moments"] == pytest.approx(list(spec.moments)) and len(d["moments"]) == 3
    assert d["variance"] == pytest.approx(spec.variance) and d["edge"] == pytest.approx(spec.edge)
    assert d["weights"] == "orthogonal" and d["depth"] == 8


def test_cli_points_and_plot(tmp_path):
    out = tmp_path / "spec.png"
    res = _run("spectrum", "-a", "relu", "--sigma-w2", 2, "--depth", 3, "--points", 7, "--out", out, "--json")
    assert res.exit_code == 0, (res.stdout, res.stderr)
    d = json.loads(res.stdout)
    assert len(d["density"]["lambda"]) == 7 and len(d["density"]["rho"]) == 7
    assert d["atoms"] == [[0.0, 0.5]] and d["out"] == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["spec.png"]  # no temporary file left
    human = _run("spectrum", "-a", "relu", "--sigma-w2", 2, "--depth", 3)
    assert human.exit_code == 0 and "variance" in human.stdout and "edge" in human.stdout


@pytest.mark.parametrize("args,needle", [
    (("--depth", 0), "depth must be >= 1"),
    (("--depth", 3, "--weights", "uniform"), "weights must be one of"),
    (("--depth", 3, "--sigma-w2", 3), "q diverges"),
    (("--depth", 3000, "--sigma-w2", 2.5, "-a", "tanh"), "no finite limit"),
])
def test_cli_bad_input(args, needle, tmp_path):
    base = {"-a": "relu", "--sigma-w2": 2}
    extra = list(args)
    for k, v in base.items():
        if k not in extra:
            extra += [k, v]
    out = tmp_path / "x.png"
    res = _run("spectrum", *extra, "--out", out)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr
    assert not out.exists()


def test_binomial_moments_are_within_an_ulp():
    """Fuss-Catalan moments from exact integers (Fraction, independent of sp._binom) agree to
    the last bit; scipy.special.comb(exact=False), used before issue 10, was off by 5e-11 at L = 1000.
    Past the float range a binomial is inf, as scipy's was."""
    from fractions import Fraction

    for L in (1, 7, 1000):
        want = [float(Fraction(math.comb((L + 1) * k, k), L * k + 1)) for k in range(1, 31)]
        np.testing.assert_allclose(sp.fuss_catalan_moments(30, L), want, rtol=2.5e-16, atol=0)
    cat = [float(Fraction(math.comb(2 * h, h), h + 1)) for h in range(1, 26)]
    np.testing.assert_allclose(sp.semicircle_moments(50, 1.0)[1::2], cat, rtol=2.5e-16, atol=0)
    assert sp._binom(2000, 1000) == math.inf and sp._binom(5, 7) == 0.0
