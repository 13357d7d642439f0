#!/usr/bin/env python
"""figures/finite_width_any_arch.png: the finite-width NTK error against width for a CNN, an
attention net, an RNN and a BatchNorm net, each with its fitted slope beside -1/2 (issue 9 s. 5).

    python scripts/make_finite_width_figure.py [--widths 64 128 256 512 1024] [--nets 6]

For each network: the relative RMS error of one random network's empirical NTK
(``Network.sample(width).empirical_ntk``) against the algebra's NTK (``Network.kernel``), averaged
over --nets networks per width, fitted in log-log.  Fluctuations of a finite network's kernel are
O(width^-1/2), so a right limit gives slope -1/2 and a wrong one flattens at the bias.  The
numbers go to figures/finite_width_any_arch.json beside the picture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # small matrices: threads only contend

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from meanfield import network as nw  # noqa: E402


def nets() -> dict:
    rng = np.random.default_rng(12)
    return {
        "CNN (conv-relu-conv-erf, GAP)": (
            nw.serial(nw.conv([3], padding="same", sigma_w2=2.0, sigma_b2=0.1), nw.activation("relu"),
                      nw.conv([3], padding="same", sigma_w2=1.5, sigma_b2=0.1), nw.activation("erf"),
                      nw.global_avg_pool(), nw.dense(1.0, 0.1)),
            rng.standard_normal((5, 6, 2))),
        "attention (dense-LN-softmax attn-relu-GAP)": (
            nw.serial(nw.dense(1.0), nw.layer_norm(), nw.attention(heads=1), nw.activation("relu"),
                      nw.global_avg_pool(), nw.dense(1.0)),
            rng.standard_normal((4, 5, 3))),
        "RNN (erf, NTK4A's setting, last state)": (
            nw.serial(nw.rnn("erf", sigma_w2=1.0, sigma_u2=2.0, sigma_b2=0.2), nw.dense(1.0)),
            rng.standard_normal((5, 4, 3))),
        "BatchNorm (dense-BN-relu x2)": (
            nw.serial(nw.dense(2.0), nw.batch_norm(), nw.activation("relu"), nw.dense(2.0),
                      nw.batch_norm(), nw.activation("relu"), nw.dense(1.0)),
            rng.standard_normal((6, 4))),
    }


def measure(widths: list[int], R: int) -> dict:
    out = {}
    for name, (net, X) in nets().items():
        t0 = time.perf_counter()
        theory = net.kernel(X).ntk
        scale = float(np.sqrt(np.mean(theory ** 2)))
        errs, spread = [], []
        for i, w in enumerate(widths):
            e = []
            for r in range(R):
                emp = net.sample(w, rng=1000 * (i + 1) + r).empirical_ntk(X, channels=1)
                e.append(float(np.sqrt(np.mean((emp - theory) ** 2)) / scale))
            errs.append(float(np.mean(e)))
            spread.append(float(np.std(e, ddof=1) / np.sqrt(R)))
        slope = float(np.polyfit(np.log(widths), np.log(errs), 1)[0])
        out[name] = {"widths": widths, "error": errs, "se": spread, "slope": slope,
                     "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name:45s} slope {slope:+.3f}  errors {', '.join(f'{x:.3g}' for x in errs)}", flush=True)
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for (name, r), mk in zip(res.items(), "osD^"):
        w, e = np.array(r["widths"]), np.array(r["error"])
        line, = ax.loglog(w, e, mk + "-", label=f"{name}: slope {r['slope']:+.2f}")
        ax.errorbar(w, e, yerr=r["se"], fmt="none", color=line.get_color())
        ax.loglog(w, e[0] * (w / w[0]) ** -0.5, ":", color=line.get_color(), lw=1)
    ax.set_xlabel("width n")
    ax.set_ylabel("relative RMS error of one network's NTK")
    ax.set_title("finite-width NTK error (dotted: n^-1/2)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=130)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    ap.add_argument("--nets", type=int, default=6)
    args = ap.parse_args()
    res = measure(args.widths, args.nets)
    fig = ROOT / "figures" / "finite_width_any_arch.png"
    (ROOT / "figures" / "finite_width_any_arch.json").write_text(json.dumps(res, indent=1) + "\n")
    plot(res, fig)
    print(f"wrote {fig}")


if __name__ == "__main__":
    main()
