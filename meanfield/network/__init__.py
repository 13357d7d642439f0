"""The network algebra: a network is a composition of layers, and each layer carries its own
infinite-width maps (NNGP, NTK, backward), its finite-width numpy version and its parameters
(docs/architecture.md; MATH.md sections 4 and 5).

    >>> from meanfield import network as nw
    >>> net = nw.serial(nw.dense(2.0, 0.1), nw.activation("relu"), nw.dense(2.0))
    >>> k = net.kernel(X)            # k.nngp, k.ntk
    >>> net.propagate(X).gradient    # per-layer diagnostics
    >>> net.sample(1024, rng=0).empirical_ntk(X)

or from a JSON spec: ``nw.from_spec([{"layer": "dense", "sigma_w2": 2}, ...])``.
"""

from __future__ import annotations

from .core import (PARAMETRIZATIONS, FiniteNetwork, Layer, Network, NetworkKernel, Param,
                   Propagation, Shape)
from .layers import (METHODS, ActivationLayer, AvgPool, Conv, Dense, Flatten, GlobalAvgPool,
                     Identity, LayerNorm, Repeat, Residual, activation, avg_pool, conv, dense,
                     flatten, global_avg_pool, identity, layer_norm, repeat, residual, serial)
from .attention import Attention, TiedAttention, attention
from .batchnorm import BatchNorm, batch_norm
from .rnn import Rnn, RnnSteps, pad_sequences, rnn, steps
from .presets import ARCHS, arch_name, preset, transformer
from .spec import from_spec, load_spec, to_spec

__all__ = [
    "Layer", "Network", "Shape", "Param", "NetworkKernel", "Propagation", "FiniteNetwork",
    "PARAMETRIZATIONS", "METHODS",
    "Dense", "Conv", "ActivationLayer", "AvgPool", "GlobalAvgPool", "Flatten", "LayerNorm",
    "Identity", "Residual", "Repeat",
    "dense", "conv", "activation", "avg_pool", "global_avg_pool", "flatten", "layer_norm",
    "identity", "serial", "residual", "repeat", "from_spec", "load_spec", "to_spec",
    "ARCHS", "arch_name", "preset", "transformer",
    "BatchNorm", "batch_norm", "Attention", "TiedAttention", "attention",
    "Rnn", "RnnSteps", "rnn", "steps", "pad_sequences",
]
