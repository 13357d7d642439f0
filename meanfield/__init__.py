"""meanfield: initialise deep networks from the infinite-width theory of random networks.

Mean-field maps and their fixed points (Poole et al. 2016, Schoenholz et al. 2017), residual
networks on the edge of chaos (Yang & Schoenholz 2017), NNGP / NTK kernels, and depth-dependent
initialisation advice.  ``import meanfield`` never imports torch or matplotlib.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

from .activations import Activation, available, custom, get_activation
from .errors import ConvergenceError, DomainError, MeanfieldError, NoFixedPoint
from .fixed_points import (
    EdgeOfChaos,
    FixedPoint,
    edge_of_chaos,
    edge_of_chaos_curve,
    fixed_point,
    solve_grid,
    solve_q_star,
)
from .maps import (
    Trajectory,
    chi_1,
    chi_c,
    correlation_map,
    covariance_map,
    iterate,
    length_map,
    length_map_slope,
)

# Imported eagerly: the submodule meanfield.advise would otherwise shadow the function of the
# same name once anything imports it.
from .advise import Advice, advise  # noqa: E402

# Heavier or optional pieces load on first use.
_LAZY: dict[str, tuple[str, str]] = {}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(import_module(mod), attr)
    raise AttributeError(f"module 'meanfield' has no attribute {name!r}")


__all__ = [
    "__version__", "Activation", "available", "custom", "get_activation",
    "MeanfieldError", "DomainError", "NoFixedPoint", "ConvergenceError",
    "FixedPoint", "fixed_point", "solve_q_star", "solve_grid", "EdgeOfChaos", "edge_of_chaos",
    "edge_of_chaos_curve", "Trajectory", "iterate", "length_map", "length_map_slope",
    "covariance_map", "correlation_map", "chi_1", "chi_c", "advise", "Advice",
]
