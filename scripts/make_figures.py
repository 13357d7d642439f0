"""Regenerate the phase diagrams figures/phase_<activation>.png (issue 2 section 5).

    python scripts/make_figures.py [--grid 200]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from meanfield._io import atomic_savefig
from meanfield.fixed_points import phase_diagram
from meanfield.plot import plot_phase_diagram

ACTIVATIONS = ("tanh", "erf", "gelu", "silu", "selu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grid", type=int, default=200)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    out = Path(__file__).resolve().parent.parent / "figures"
    out.mkdir(exist_ok=True)
    for name in args.only or ACTIVATIONS:
        pd = phase_diagram(name, grid=args.grid)
        ax = plot_phase_diagram(pd)
        ax.figure.tight_layout()
        path = atomic_savefig(ax.figure, out / f"phase_{name}.png")
        print(path, pd.summary())
        import matplotlib.pyplot as plt

        plt.close(ax.figure)


if __name__ == "__main__":
    main()
