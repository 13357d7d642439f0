#!/usr/bin/env python
"""Benchmark: NNGP + NTK of depth-10 MLPs, meanfield against neural-tangents (issue 4 section 5).

    python scripts/bench_kernels.py [--sizes 1000 2000 4000] [--nt-tanh-max 1000] [--no-nt]

For N inputs of dimension 784 (Gaussian vectors rescaled to x.x/d = 1, seed 0), depth L = 10
hidden layers + linear readout, sigma_w2 = 2, sigma_b2 = 0.1, NTK parametrisation, float64,
and activations relu, erf and tanh, it times

* ``meanfield.kernels.kernel`` (cold: its table cache is cleared before every call; imports
  warmed up).  The inputs have one length, so the default path tabulates the whole network as
  a function of the input correlation; ``--per-layer`` also times the layer-by-layer path
  that inputs of unequal lengths get, and
* neural-tangents on CPU (``stax.serial`` of Dense(W_std, b_std) + Relu / Erf /
  ElementwiseNumerical(tanh, deg=25), jit-compiled, float64; the first call includes the
  compilation, the best of the following --repeat calls is reported as "steady";
  meanfield's time is the best of --repeat cold runs).  The numerical tanh layer needs
  N^2 * deg^2 memory, so it runs through ``nt.batch`` in blocks of 100 x 100 inputs.

neural-tangents runs in its own virtual environment, .bench_env/ (gitignored), which this script
creates on first use with pinned versions that work together (jax 0.4.30, neural-tangents 0.6.5,
tf2jax 0.3.6); it is never a dependency of meanfield.  Without it (or with --no-nt) only
meanfield is timed.

Accuracy: for a few entries (diagonal and off-diagonal) the script recomputes the kernels
independently -- mpmath (dps 20) closed forms for relu and erf; for tanh, nested adaptive
QUADPACK integrals at 1e-14 (checked against mpmath's 2-D mp.quad to 3e-17; mp.quad itself would
take hours for a depth-10 recursion) -- and prints the relative error of both libraries.  Timings on a shared machine vary; ratios come from one run, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _nt_env import ENV, PINS, ensure_env  # noqa: E402,F401  (the side environment, shared)
DEPTH, SW, SB, DIM = 10, 2.0, 0.1, 784
ACTS = ("relu", "erf", "tanh")
ENTRIES = [(0, 1), (2, 5), (3, 3)]

NT_WORKER = r'''
import json, sys, time, warnings
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import neural_tangents as nt
from neural_tangents import stax
warnings.simplefilter("ignore")
X = np.load(sys.argv[1]); act = sys.argv[2]; depth = int(sys.argv[3]); sw, sb = float(sys.argv[4]), float(sys.argv[5])
entries = json.loads(sys.argv[6]); reps = int(sys.argv[7])
layer = {"relu": stax.Relu(), "erf": stax.Erf(), "tanh": stax.ElementwiseNumerical(jnp.tanh, deg=25)}[act]
layers = []
for _ in range(depth):
    layers += [stax.Dense(1, W_std=np.sqrt(sw), b_std=np.sqrt(sb)), layer]
layers.append(stax.Dense(1, W_std=np.sqrt(sw), b_std=np.sqrt(sb)))
_, _, kfn = stax.serial(*layers)
if act == "tanh":
    kfn = nt.batch(kfn, batch_size=100, store_on_device=False)
else:
    kfn = jax.jit(kfn, static_argnames="get")
times = []
for _ in range(reps):
    t = time.perf_counter()
    k = kfn(X, None, get=("nngp", "ntk"))
    ntk = np.asarray(k.ntk); nngp = np.asarray(k.nngp)
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "ntk": [float(ntk[i, j]) for i, j in entries],
                  "nngp": [float(nngp[i, j]) for i, j in entries]}))
'''


def inputs(n: int, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, DIM))
    return X * (np.sqrt(DIM) / np.linalg.norm(X, axis=1, keepdims=True))


# -- mpmath reference ------------------------------------------------------------------------

def mp_reference(act: str, X: np.ndarray, entries, dps: int = 20) -> tuple[list, list]:
    """NNGP and NTK at the given entries by the recursion of MATH.md 4.1 in mpmath."""
    import warnings

    import mpmath as mp

    warnings.simplefilter("ignore")  # QUADPACK's roundoff notices at a 1e-14 target
    mp.mp.dps = dps
    d = X.shape[1]

    def moments(q1, q2, c):
        """E[phi phi], E[phi' phi'] for variances q1, q2 and correlation c."""
        if act == "relu":
            if c >= 1:
                th = mp.mpf(0)
            else:
                th = mp.acos(c)
            s = mp.sqrt(q1 * q2)
            return (s * (mp.sin(th) + (mp.pi - th) * mp.cos(th)) / (2 * mp.pi), (mp.pi - th) / (2 * mp.pi))
        if act == "erf":
            q12 = c * mp.sqrt(q1 * q2)
            den = (1 + 2 * q1) * (1 + 2 * q2)
            return (2 / mp.pi * mp.asin(2 * q12 / mp.sqrt(den)), 4 / mp.pi / mp.sqrt(den - 4 * q12 ** 2))
        # tanh: nested adaptive Gauss-Kronrod (QUADPACK) in float64, independent of
        # meanfield.gaussian; it agrees with a 2-D mp.quad at dps 20 to 3e-17 at (1.3, 1.3, 0.5),
        # where mp.quad itself takes ~6 minutes per integral.
        from _quadpack import quadpack2

        return quadpack2("tanh", float(q1), float(q2), float(c))

    nngp, ntk = [], []
    for i, j in entries:
        xi, xj = [mp.mpf(float(v)) for v in X[i]], [mp.mpf(float(v)) for v in X[j]]
        g11 = mp.fsum(a * a for a in xi) / d
        g22 = mp.fsum(a * a for a in xj) / d
        g12 = mp.fsum(a * b for a, b in zip(xi, xj)) / d
        S11, S22, S12 = SW * g11 + SB, SW * g22 + SB, SW * g12 + SB
        T12 = S12
        for _ in range(DEPTH):
            c = S12 / mp.sqrt(S11 * S22)
            if i == j:
                c = mp.mpf(1)
            w, wd = moments(S11, S22, c)
            w11, _ = moments(S11, S11, mp.mpf(1))
            w22, _ = moments(S22, S22, mp.mpf(1))
            S11, S22 = SW * w11 + SB, SW * w22 + SB
            S12 = SW * w + SB
            T12 = T12 * SW * wd + S12
        nngp.append(float(S12))
        ntk.append(float(T12))
    return nngp, ntk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    ap.add_argument("--acts", nargs="+", default=list(ACTS))
    ap.add_argument("--no-nt", action="store_true", help="time meanfield only")
    ap.add_argument("--nt-max", type=int, default=4000, help="largest N for NT's relu/erf")
    ap.add_argument("--nt-tanh-max", type=int, default=1000,
                    help="largest N for NT's numerical tanh layer (it is very slow)")
    ap.add_argument("--no-reference", action="store_true", help="skip the mpmath accuracy check")
    ap.add_argument("--repeat", type=int, default=1,
                    help="report the best of this many runs (neural-tangents: of this many calls "
                         "after the compiling one)")
    ap.add_argument("--per-layer", action="store_true",
                    help="also time meanfield's layer-by-layer path (what inputs of unequal "
                         "lengths get), besides the default whole-network table")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    from meanfield.kernels import clear_cache, kernel

    py = None if args.no_nt else ensure_env(log)
    print(f"# depth {DEPTH} MLP + readout, sigma_w2 = {SW}, sigma_b2 = {SB}, d = {DIM}, NTK "
          f"parametrisation, float64; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    print(f"{'act':5s} {'N':>5s} {'meanfield s':>12s} {'per-layer s':>12s} {'NT first s':>11s} "
          f"{'NT steady s':>12s} {'NT/ours':>8s} {'NT/per-layer':>13s}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            X = inputs(n)
            xpath = os.path.join(tmp, f"X{n}.npy")
            np.save(xpath, X)
            for act in args.acts:
                # warm up imports and lazily built helpers (not the tables: the cache is cleared)
                kernel("mlp", act, X[:200], depth=DEPTH, sigma_w2=SW, sigma_b2=SB)
                ours, per_layer = float("inf"), None
                for _ in range(args.repeat):  # best of --repeat cold runs
                    clear_cache()
                    t = time.perf_counter()
                    res = kernel("mlp", act, X, depth=DEPTH, sigma_w2=SW, sigma_b2=SB)
                    ours = min(ours, time.perf_counter() - t)
                    if args.per_layer:
                        clear_cache()
                        t = time.perf_counter()
                        kernel("mlp", act, X, depth=DEPTH, sigma_w2=SW, sigma_b2=SB,
                               method="direct" if act == "erf" else "table")
                        per_layer = min(per_layer or float("inf"), time.perf_counter() - t)
                ours_e = ([float(res.nngp[i, j]) for i, j in ENTRIES],
                          [float(res.ntk[i, j]) for i, j in ENTRIES])
                del res
                nt_times, nt_e = None, None
                limit = args.nt_tanh_max if act == "tanh" else args.nt_max
                if py is not None and n <= limit:
                    reps = 1 if act == "tanh" else 1 + args.repeat
                    proc = subprocess.run(
                        [str(py), "-c", NT_WORKER, xpath, act, str(DEPTH), str(SW), str(SB),
                         json.dumps(ENTRIES), str(reps)], capture_output=True, text=True)
                    if proc.returncode == 0:
                        out = json.loads(proc.stdout.strip().splitlines()[-1])
                        nt_times, nt_e = out["times"], (out["nngp"], out["ntk"])
                    else:
                        log(f"neural-tangents failed for {act}, N = {n}: "
                            f"{proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}")
                first = nt_times[0] if nt_times else None
                steady = (min(nt_times[1:]) if len(nt_times) > 1 else nt_times[0]) if nt_times else None
                nan = float("nan")
                ratio = (steady / ours) if steady else nan
                ratio2 = (steady / per_layer) if steady and per_layer else nan
                print(f"{act:5s} {n:5d} {ours:12.2f} {per_layer if per_layer else nan:12.2f} "
                      f"{first if first is not None else nan:11.2f} "
                      f"{steady if steady is not None else nan:12.2f} {ratio:8.2f} {ratio2:13.2f}",
                      flush=True)
                rows.append({"act": act, "N": n, "ours": ours, "nt": nt_times, "ours_entries": ours_e,
                             "nt_entries": nt_e, "X": X[:max(max(e) for e in ENTRIES) + 1]})
    if args.no_reference:
        return
    print("\n# accuracy against the independent reference at entries", ENTRIES, "(max relative error, NNGP / NTK)")
    done = set()
    for r in rows:
        if r["act"] in done:
            continue
        done.add(r["act"])
        t = time.perf_counter()
        ref_nngp, ref_ntk = mp_reference(r["act"], r["X"], ENTRIES)
        dt = time.perf_counter() - t

        def rel(vals, ref_nngp=ref_nngp, ref_ntk=ref_ntk):
            if vals is None:
                return "n/a"
            e1 = max(abs(a - b) / abs(b) for a, b in zip(vals[0], ref_nngp))
            e2 = max(abs(a - b) / abs(b) for a, b in zip(vals[1], ref_ntk))
            return f"{e1:.1e} / {e2:.1e}"

        print(f"{r['act']:5s} meanfield {rel(r['ours_entries']):>20s}   neural-tangents "
              f"{rel(r['nt_entries']):>20s}   (reference {dt:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
