"""The activation registry: specs, derivatives, and the registry-wide contract of issue 2 section 6.

For every registry activation (with parameter examples, tests/conftest.py):
* phi', phi'' agree with finite differences of phi, phi' away from the kinks;
* the correlation map sends 1 to 1 and [-1, 1] into itself, checked both on the public map and
  on the raw ratio (sigma_w2 W + sigma_b2) / (sigma_w2 V + sigma_b2) before any clipping;
* NaN in -> NaN out (phi itself, the Gaussian moments, the maps);
* an array call equals a loop of scalar calls.
"""

from __future__ import annotations

import numpy as np
import pytest

import meanfield
from meanfield import gaussian, maps
from meanfield.activations import _REGISTRY, available, custom, get_activation, parse_spec
from meanfield.errors import DomainError

X = np.array([-3.7, -1.3, -0.41, 0.23, 0.77, 1.6, 4.2])  # no kink of the registry (0, +-1) among them


def _moments(act):
    """The Gaussian moments this activation supports (the step has no derivative)."""
    names = ["v_phi"]
    if act.d1 is not None or act.closed_forms.get("vd") is not None:
        names += ["v_dphi", "dv_phi", "e_ddphi_phi"]
    return names


def test_registry_names_resolve_and_aliases():
    for name in _REGISTRY:
        assert name in available()
    assert get_activation("swish").name == get_activation("silu").name
    assert get_activation("SiLU") is get_activation("silu")
    assert get_activation("relu") is get_activation("relu")  # cached
    assert parse_spec(" leaky_relu : 0.2 ") == ("leaky_relu", (0.2,))
    assert get_activation("leaky_relu:0.2")(np.array([-1.0]))[0] == pytest.approx(-0.2)
    assert get_activation("alpha_relu:1").name == "alpha_relu:1"


def test_derivatives_match_finite_differences(registry_spec):
    act = get_activation(registry_spec)
    if act.d1 is None:
        assert act.missing_reason, "an activation without phi' must say why"
        return
    h = 1e-5
    fd1 = (act(X + h) - act(X - h)) / (2 * h)
    assert np.allclose(act.d1(X), fd1, rtol=1e-8, atol=1e-9)
    if act.d2 is not None:
        fd2 = (act.d1(X + h) - act.d1(X - h)) / (2 * h)
        assert np.allclose(act.d2(X), fd2, rtol=1e-7, atol=1e-8)


def test_odd_flag_is_true():
    for name in _REGISTRY:
        act = get_activation({"alpha_relu": "alpha_relu:0.5"}.get(name, name))
        if act.odd:
            assert np.allclose(act(-X), -act(X), rtol=0, atol=1e-15), name


@pytest.mark.parametrize("q,sigma_w2,sigma_b2", [(0.3, 1.5, 0.05), (2.5, 2.5, 0.0), (1e-3, 0.8, 1.0)])
def test_correlation_map_sends_1_to_1_and_stays_in_range(registry_spec, q, sigma_w2, sigma_b2):
    act = get_activation(registry_spec)
    c = np.array([-1.0, -0.999, -0.5, 0.0, 0.4, 0.9, 1.0 - 1e-12, 1.0])
    out = maps.correlation_map(act, c, q, sigma_w2, sigma_b2)
    assert out[-1] == 1.0
    assert np.all((out >= -1) & (out <= 1))
    # the substance behind the (clipped) public map: W(q, q, 1) = V(q) and |W| <= V
    w = gaussian.w_phi(act, q, q, c)
    v = float(gaussian.v_phi(act, q))
    tol = 1e-10 if act.kinks else 1e-12
    assert abs(w[-1] - v) <= tol * v
    raw = (sigma_w2 * w + sigma_b2) / (sigma_w2 * v + sigma_b2)
    assert np.all(np.abs(raw) <= 1 + tol), raw
    # for monotone phi the map is non-decreasing (Price: dW/dc = q E[phi'(u) phi'(v)] >= 0)
    grid = np.linspace(-20, 20, 4001)
    if act.d1 is not None and np.all(act.d1(grid) >= 0):
        assert np.all(np.diff(raw) >= -tol)


def test_activation_functions_propagate_nan(registry_spec):
    act = get_activation(registry_spec)
    x = np.array([np.nan, 1.0])
    assert np.isnan(act(x)[0])
    for d in (act.d1, act.d2):
        if d is not None:
            assert np.isnan(d(x)[0])


def test_nan_in_nan_out(registry_spec):
    act = get_activation(registry_spec)
    q = np.array([np.nan, 0.7])
    for name in _moments(act):
        out = getattr(gaussian, name)(act, q)
        assert np.isnan(out[0]) and np.isfinite(out[1]), name
    w = gaussian.w_phi(act, np.array([np.nan, 0.7, 0.7]), 0.7, np.array([0.3, np.nan, 0.3]))
    assert np.isnan(w[:2]).all() and np.isfinite(w[2])
    assert np.isnan(maps.length_map(act, np.nan, 1.5, 0.1))
    assert np.isnan(maps.correlation_map(act, np.nan, 0.7, 1.5, 0.1))
    assert np.isnan(maps.correlation_map(act, 0.3, np.nan, 1.5, 0.1))
    if act.d1 is not None:
        assert np.isnan(maps.chi_1(act, np.nan, 1.5))
        assert np.isnan(maps.chi_c(act, 0.7, np.nan, 1.5))


def test_array_call_equals_loop_of_scalar_calls(registry_spec):
    act = get_activation(registry_spec)
    q = np.array([1e-3, 0.2, 1.0, 4.0, 50.0])  # small: the direct quadrature, not the table
    for name in _moments(act):
        fn = getattr(gaussian, name)
        arr = fn(act, q)
        loop = np.array([float(fn(act, x)) for x in q])
        # E[phi'' phi] and dV/dq are sums of terms of size V'(q): rounding is relative to that
        scale = np.abs(loop) if name in ("v_phi", "v_dphi") else np.abs(gaussian.v_dphi(act, q))
        assert np.all(np.abs(arr - loop) <= 1e-13 * scale), name
    q1, q2, c = np.array([0.3, 2.0, 1e-3, 9.0]), np.array([1.0, 0.5, 7.0, 9.0]), np.array([-0.8, 0.2, 0.6, 0.99])
    kernels = [gaussian.w_phi] + ([gaussian.w_dphi] if "v_dphi" in _moments(act) else [])
    for fn in kernels:
        arr = fn(act, q1, q2, c)
        loop = np.array([float(fn(act, a, b, d)) for a, b, d in zip(q1, q2, c)])
        assert np.allclose(arr, loop, rtol=1e-13, atol=1e-300), fn.__name__
    lm = maps.length_map(act, q, 1.7, 0.1)
    assert np.allclose(lm, [float(maps.length_map(act, x, 1.7, 0.1)) for x in q], rtol=1e-13)
    cm = maps.correlation_map(act, c, 0.9, 1.7, 0.1)
    assert np.allclose(cm, [float(maps.correlation_map(act, x, 0.9, 1.7, 0.1)) for x in c], rtol=1e-13)


def test_unknown_activation_lists_close_names():
    with pytest.raises(DomainError) as err:
        get_activation("tahn")
    msg = str(err.value)
    assert "'tahn'" in msg and "tanh" in msg and "\n" not in msg
    with pytest.raises(DomainError, match="leaky_relu"):
        get_activation("leaky_rel:0.1")


@pytest.mark.parametrize("spec,match", [
    ("alpha_relu:-0.6", "alpha"), ("alpha_relu:-0.5", "alpha"), ("alpha_relu", "exponent"),
    ("tanh:1", "parameter"), ("leaky_relu:abc", "not a number"), ("leaky_relu:nan", "finite"),
    ("elu:1,2", "parameter"), ("", "non-empty"),
])
def test_bad_specs_are_domain_errors(spec, match):
    with pytest.raises(DomainError, match=match):
        get_activation(spec)


def test_custom_callable_is_an_activation():
    act = custom(np.tanh, name="my_tanh")
    ref = get_activation("tanh")
    q = np.array([0.1, 1.0, 5.0])
    assert np.allclose(gaussian.v_phi(act, q), gaussian.v_phi(ref, q), rtol=1e-14)
    # phi' by central differences (step 1e-5): ~1e-10
    assert np.allclose(gaussian.v_dphi(act, q), gaussian.v_dphi(ref, q), rtol=1e-9)
    exact = custom(np.tanh, ref.d1, ref.d2, name="my_tanh_exact")
    assert np.allclose(gaussian.v_dphi(exact, q), gaussian.v_dphi(ref, q), rtol=1e-14)
    fp = meanfield.fixed_point(exact, 2.0, 0.05)
    assert fp.q_star == pytest.approx(meanfield.fixed_point("tanh", 2.0, 0.05).q_star, rel=1e-12)
    # a callable passed where a spec is expected
    assert get_activation(np.tanh).name.startswith("custom")


def test_custom_rejects_non_elementwise_and_non_finite():
    with pytest.raises(DomainError):
        custom(lambda x: np.sum(x))
    with pytest.raises(DomainError):
        custom(lambda x: 1.0 / x)  # infinite at 0


def test_kinked_custom_activation_uses_its_kinks():
    relu = custom(lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(float), lambda x: 0.0 * x,
                  kinks=(0.0,))
    q = np.array([1e-4, 1.0, 1e3])
    assert np.allclose(gaussian.v_phi(relu, q), q / 2, rtol=1e-12)
    assert np.allclose(gaussian.v_dphi(relu, q), 0.5, rtol=1e-12)
