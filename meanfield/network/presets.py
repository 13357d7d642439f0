"""The named architectures as compositions of the algebra (one vocabulary: ``ARCHS``).

``mlp``: dense -> depth x (activation -> dense) (docs/theory.md §A4.1); ``resnet``: the full residual
MLP of docs/theory.md §A4.3, dense(sigma_in2) -> depth x (x + alpha (V phi(W x + b) + a)) ->
dense(sigma_o2); ``resnet-reduced``: the block x + alpha phi(W x + b).  meanfield.kernels keeps
fast specialisations of the first two (tests/test_network.py shows them equal to these).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._arch import ALIASES, ARCHS, arch_name  # noqa: F401  (the one vocabulary)
from ..activations import get_activation
from ..errors import DomainError
from ..maps import check_depth
from .core import Network
from .attention import attention
from .layers import activation, dense, global_avg_pool, layer_norm, residual


def _per(name: str, v: Any, n: int) -> list[float]:
    arr = np.atleast_1d(np.asarray(v, dtype=float))
    if arr.size == 1:
        return [float(arr[0])] * n
    if arr.ndim != 1 or arr.size != n:
        raise DomainError(f"{name} must be a scalar or a sequence of {n} values, got shape {arr.shape}")
    return [float(x) for x in arr]


def preset(arch: str, activation_spec: Any, depth: int, *, sigma_w2: Any, sigma_b2: Any = 0.0,
           sigma_v2: Any = 1.0, sigma_a2: Any = 0.0, sigma_in2: float = 1.0, sigma_o2: float = 1.0,
           branch_scale: float = 1.0, parametrization: str = "ntk") -> Network:
    """The Network of a named architecture with the variances of meanfield.kernels.kernel."""
    arch = arch_name(arch)
    L = check_depth(depth)
    act = get_activation(activation_spec)
    if arch == "mlp":
        sw, sb = _per("sigma_w2", sigma_w2, L + 1), _per("sigma_b2", sigma_b2, L + 1)
        layers = [dense(sw[0], sb[0])]
        for k in range(1, L + 1):
            layers += [activation(act), dense(sw[k], sb[k])]
        return Network(layers, parametrization)
    sw, sb = _per("sigma_w2", sigma_w2, L), _per("sigma_b2", sigma_b2, L)
    blocks = []
    for k in range(L):
        if arch == "resnet":
            sv, sa = _per("sigma_v2", sigma_v2, L), _per("sigma_a2", sigma_a2, L)
            branch = [dense(sw[k], sb[k]), activation(act), dense(sv[k], sa[k])]
        else:
            branch = [dense(sw[k], sb[k]), activation(act)]
        blocks.append(residual(branch, scale=branch_scale))
    return Network([dense(sigma_in2)] + blocks + [dense(sigma_o2)], parametrization)


def transformer(activation_spec: Any, depth: int, *, sigma_w2: Any, sigma_u2: Any = 1.0,
                sigma_v2: float = 1.0, causal: bool = False, parametrization: str = "ntk") -> Network:
    """TP II's single-head transformer (docs/theory.md §A5.5) on (N, T, d) inputs: per block
    k = U x (sigma_u2), y = Attn(k, k, k) + k (tied attention, logits k.k'/n, softmax),
    z = LN(y), x = LN(W2 phi(W1 z) + z) (W1, W2: sigma_w2); then the mean over positions and a
    readout of variance sigma_v2.  sigma_w2, sigma_u2: a scalar or one value per block; no
    biases, LayerNorm without affine parameters and eps = 0; ``causal``: TP I's masked version."""
    L = check_depth(depth)
    act = get_activation(activation_spec)
    sw, su = _per("sigma_w2", sigma_w2, L), _per("sigma_u2", sigma_u2, L)
    layers = []
    for k in range(L):
        layers += [dense(su[k]), attention(values="input", skip=True, causal=causal), layer_norm(),
                   residual([dense(sw[k]), activation(act), dense(sw[k])]), layer_norm()]
    return Network(layers + [global_avg_pool(), dense(sigma_v2)], parametrization)


__all__ = ["ARCHS", "ALIASES", "arch_name", "preset", "transformer"]
