"""PyTorch integration: apply meanfield's advice to an ``nn.Module`` in place, and measure the
model against the theory.

Import it explicitly (``import meanfield.torch as mft``); ``import meanfield`` never imports
torch.  Four steps, each usable alone:

* :func:`trace_structure` reads the model with ``torch.fx``: its ``nn.Linear`` / ``nn.ConvNd``
  layers, its activation (registry spec, or a custom activation wrapping the traced elementwise
  code), its depth, and the residual additions ``x + f(x)`` that mark residual branches.  What
  tracing cannot read is refused with the reason; pass ``structure=Structure(...)`` instead.
* :func:`init_` draws every weight N(0, sigma^2 / fan_in) and every bias N(0, sigma_b^2) from the
  advice (or asks :func:`meanfield.advise` itself), in place under ``torch.no_grad()``, and marks
  the model so that a second application is refused unless ``force=True`` (as mup refuses to
  re-initialise a readout).
* :func:`measure` records, with forward hooks and one backward pass, the mean squared
  pre-activation q^l, the correlation c^l of input pairs, the residual stream's p^l and cosine
  e^l, and the gradient second moments, layer by layer; :func:`compare` lays the measurement
  beside the theory's prediction for the same initialisation, and :func:`plot_profile` draws it
  (measuring apart from plotting).
* :func:`to_network` reads any model that ``torch.fx`` traces into the network algebra, with the
  variances in its weights, and :func:`compare_model` measures the model beside that prediction.
* :func:`empirical_ntk` is the NTK of the torch model (``torch.func``), in the standard
  parametrisation that ``nn.Linear`` trains or rescaled to the NTK parametrisation of
  meanfield's kernels (docs/theory.md §A0 and 4.2).

Architectures (docs/theory.md §A1.1 and 2.1): ``"mlp"``, a chain of layers with one elementwise activation
between consecutive layers (depth = number of hidden layers = layers - 1, the last layer is the
readout); ``"resnet-full"``, blocks x + V phi(W x + b) + a; ``"resnet-reduced"``, blocks
x + phi(W x + b); depth = number of blocks; layers before the first block (the stem, x^0 = U xi)
and after the last (the head) are drawn with variance ``sigma_in2`` / ``sigma_o2`` over fan-in
(default 1, as in docs/theory.md §A4.3) and zero bias.

The package is split by role: ``trace`` (reading a model for init_: Structure, trace_structure),
``graph`` (reading any model into the algebra: to_network), ``apply`` (init_, Variances,
InitRecord), ``measure`` (measure, compare, compare_model, plot_profile), ``ntk``
(empirical_ntk), ``advice`` (advise_model, any readable model).
"""

from __future__ import annotations

from typing import Any

from .advice import LayerAdvice, ModelAdvice, ModelDiagnostics, ModelInitRecord, advise_model
from .apply import InitRecord, Variances, fan_in, init_
from .graph import Layout, to_channels_last, to_network
from .measure import (Comparison, ModelComparison, Profile, compare, compare_model, measure,
                      plot_profile, realised_variances)
from .ntk import TorchNTK, empirical_ntk
from .trace import ARCHES, LAYER_TYPES, Structure, trace_structure, wrap_activation

# torch_mup imports this package, so its functions are re-exported on first use (PEP 562).
_MUP = ("mup_", "check_parametrization", "coord_check")


def __getattr__(name: str) -> Any:
    if name in _MUP:
        from .. import torch_mup

        return getattr(torch_mup, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    *_MUP,
    "to_network",
    "compare_model",
    "to_channels_last",
    "Layout",
    "ModelComparison",
    "init_",
    "advise_model",
    "ModelAdvice",
    "LayerAdvice",
    "ModelDiagnostics",
    "ModelInitRecord",
    "trace_structure",
    "Structure",
    "Variances",
    "InitRecord",
    "measure",
    "compare",
    "Profile",
    "Comparison",
    "plot_profile",
    "empirical_ntk",
    "TorchNTK",
    "wrap_activation",
    "realised_variances",
    "fan_in",
    "ARCHES",
    "LAYER_TYPES",
]
