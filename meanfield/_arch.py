"""The one vocabulary of named architectures (light: the CLI, advise and the residual
recursions read it without importing the network algebra).

Canonical names are the algebra's (``network.presets``): ``mlp``, ``resnet`` (the full residual
block of docs/theory.md §A2.1 / 4.3) and ``resnet-reduced``.  The advice and the residual recursions label
their results with the older, more explicit ``resnet-full`` (``arch_label``); both spellings and
the aliases below are accepted everywhere.
"""

from __future__ import annotations

from typing import Any

from .errors import DomainError

ARCHS = ("mlp", "resnet", "resnet-reduced")
ALIASES = {"resnet-full": "resnet", "frn": "resnet", "full": "resnet",
           "rrn": "resnet-reduced", "reduced": "resnet-reduced"}
#: the ``arch`` field of advice and residual results
LABELS = {"mlp": "mlp", "resnet": "resnet-full", "resnet-reduced": "resnet-reduced"}


def arch_name(value: Any) -> str:
    """The canonical spelling of an architecture name (aliases: resnet-full, frn, full ->
    resnet; rrn, reduced -> resnet-reduced)."""
    if isinstance(value, str):
        v = value.strip().lower()
        v = ALIASES.get(v, v)
        if v in ARCHS:
            return v
    raise DomainError(f"arch must be one of {', '.join(ARCHS)} (aliases: "
                      f"{', '.join(sorted(ALIASES))}); got {value!r}")


def arch_label(value: Any) -> str:
    """The label advice and residual results carry for an architecture name (any spelling)."""
    return LABELS[arch_name(value)]
