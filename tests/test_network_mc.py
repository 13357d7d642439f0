"""The network algebra against wide random networks (Network.sample): for every layer type in a
small composition, the NNGP and NTK within 5 standard errors at width 1024, and the finite-width
error falling like width^(-1/2).

The standard error of each kernel entry is estimated from R independent networks (the spread of
their empirical kernels), so the tolerance comes from the estimator, not from trial and error.
"""

from __future__ import annotations

import numpy as np
import pytest

from meanfield import network as nw

pytestmark = pytest.mark.slow

CASES = {
    "dense-relu-erf": ([nw.dense(2.0, 0.1), nw.activation("relu"), nw.dense(1.5, 0.1),
                        nw.activation("erf"), nw.dense(1.0, 0.1)], (3, 6)),
    "conv2d-same-circular-stride-gap": ([
        nw.conv([3, 3], padding="same", sigma_w2=2.0, sigma_b2=0.1), nw.activation("relu"),
        nw.conv([3, 3], [2, 2], padding="circular", sigma_w2=1.5, sigma_b2=0.1),
        nw.activation("erf"), nw.global_avg_pool(), nw.dense(1.0, 0.1)], (3, 5, 4, 2)),
    "conv1d-valid-avgpool-layernorm-flatten": ([
        nw.conv([3], padding="valid", sigma_w2=2.0, sigma_b2=0.1), nw.activation("relu"),
        nw.avg_pool([2], [1], "same"), nw.layer_norm(), nw.flatten(), nw.dense(1.0, 0.1)], (3, 6, 2)),
    "reduced-resnet-relu-mean-drift-layernorm": ([
        nw.dense(1.0, 0.1), nw.repeat(nw.residual([nw.dense(1.0, 0.1), nw.activation("relu")]), 2),
        nw.layer_norm(), nw.dense(1.0)], (3, 6)),
    "nt-resnet-tanh-scaled": ([
        nw.dense(1.0, 0.1), nw.residual([nw.activation("tanh"), nw.dense(1.5, 0.1)], scale=0.8),
        nw.identity(), nw.dense(1.0)], (3, 6)),
    "conv1d-no-readout": ([nw.conv([3], padding="same", sigma_w2=2.0, sigma_b2=0.1),
                           nw.activation("relu")], (2, 4, 2)),
}


def _empirical(net, X, width, R, seed):
    nngp, ntk = [], []
    for r in range(R):
        f = net.sample(width, rng=seed + r)
        nngp.append(f.empirical_nngp(X))
        ntk.append(f.empirical_ntk(X, channels=1))
    return np.array(nngp), np.array(ntk)


def check_wide_network(net, X, name: str, width: int = 1024, R: int = 8, seed: int = 100) -> None:
    """The NNGP and NTK of ``net`` on X within 5 standard errors of R random networks of
    ``width`` (the test every layer type's composition passes; used by the layer test files)."""
    k = net.kernel(X)
    e_nngp, e_ntk = _empirical(net, X, width, R, seed)
    for theory, emp, what in ((k.nngp, e_nngp, "NNGP"), (k.ntk, e_ntk, "NTK")):
        se = emp.std(axis=0, ddof=1) / np.sqrt(R)
        z = (emp.mean(axis=0) - theory) / np.maximum(se, 1e-12 * np.abs(theory).max())
        assert np.abs(z).max() < 5, f"{name} {what}: largest |z| = {np.abs(z).max():.2f}"


@pytest.mark.parametrize("name", list(CASES))
def test_kernels_match_a_wide_network(name):
    layers, shape = CASES[name]
    check_wide_network(nw.serial(*layers), np.random.default_rng(11).standard_normal(shape), name)


@pytest.mark.parametrize("name, widths", [
    ("dense-relu-erf", (256, 512, 1024, 2048, 4096)),
    ("conv1d-valid-avgpool-layernorm-flatten", (256, 512, 1024, 2048, 4096)),
    ("reduced-resnet-relu-mean-drift-layernorm", (256, 512, 1024, 2048, 4096)),
])
def test_finite_width_error_falls_like_inverse_sqrt_width(name, widths):
    """The relative RMS error of one network's empirical NTK against the theory, averaged over
    networks, has slope -1/2 in log width (fluctuations O(n^-1/2); a wrong limit would flatten it)."""
    layers, shape = CASES[name]
    net = nw.serial(*layers)
    X = np.random.default_rng(12).standard_normal((6,) + shape[1:])   # 21 distinct entries
    theory = net.kernel(X).ntk
    scale = np.sqrt(np.mean(theory ** 2))
    errs = []
    for i, w in enumerate(widths):
        R = 8
        _, emp = _empirical(net, X, w, R, seed=1000 * (i + 1))
        errs.append(np.mean([np.sqrt(np.mean((e - theory) ** 2)) / scale for e in emp]))
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    assert -0.7 < slope < -0.3, f"{name}: slope {slope:.3f}, errors {errs}"


def test_resnet_reduced_relu_kernel():
    """Issue 16's case: kernels.kernel(arch="resnet-reduced", relu, sigma_w2 = 0.5, depth 3) against
    wide networks of that architecture (the stream's mean drift included)."""
    from meanfield import kernels

    X = np.random.default_rng(5).standard_normal((3, 16))
    k = kernels.kernel("resnet-reduced", "relu", X, depth=3, sigma_w2=0.5, sigma_b2=0.0)
    net = nw.preset("resnet-reduced", "relu", 3, sigma_w2=0.5, sigma_b2=0.0)
    R = 8
    emp, _ = _empirical(net, X, 2048, R, seed=7)
    se = emp.std(axis=0, ddof=1) / np.sqrt(R)
    z = (emp.mean(axis=0) - k.nngp) / se
    assert np.abs(z).max() < 5
