#!/usr/bin/env python
"""Every CLI command as a user runs it: `meanfield ...` in a fresh process, writing its files,
cold (a new interpreter each time), the median of --repeat runs (issue 10).

    python scripts/bench_cli.py [--repeat 3] [--only advise kernel ...]

Prints one row per command: the median wall time, the spread (min..max), and the goal
(< 0.5 s; phase-diagram --grid 256 < 1.5 s).  The machine's load average is printed first:
timings on a shared machine vary, so read the ratios of one run, not absolute numbers.
Nothing here is a test expectation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def commands(tmp: Path) -> list[tuple[str, list[str], float]]:
    X = np.random.default_rng(0).standard_normal((100, 20))
    np.save(tmp / "X.npy", X)
    np.save(tmp / "Xc.npy", np.random.default_rng(0).standard_normal((8, 8, 8, 3)))
    (tmp / "net.json").write_text(json.dumps([
        {"layer": "conv", "filter": [3, 3], "padding": "same", "sigma_w2": 2, "sigma_b2": 0.1},
        {"layer": "activation", "fn": "relu"}, {"layer": "global_avg_pool"},
        {"layer": "dense", "sigma_w2": 1}]))
    c = []
    for act in ("tanh", "relu", "gelu", "silu", "sigmoid", "hard_tanh"):
        c.append((f"advise mlp {act} depth 50", ["advise", "--arch", "mlp", "--activation", act, "--depth", "50"], 0.5))
    for act in ("tanh", "relu", "gelu", "silu", "elu", "softplus"):
        c.append((f"advise resnet-full {act} depth 50",
                  ["advise", "--arch", "resnet-full", "--activation", act, "--depth", "50"], 0.5))
    c += [
        ("advise mlp tanh depth 100000", ["advise", "--arch", "mlp", "--activation", "tanh", "--depth", "100000"], 0.5),
        ("fixed-point tanh", ["fixed-point", "--activation", "tanh", "--sigma-w2", "2", "--sigma-b2", "0.05"], 0.5),
        ("eoc tanh", ["eoc", "--activation", "tanh", "--sigma-b2", "0.05"], 0.5),
        ("iterate tanh depth 50", ["iterate", "--activation", "tanh", "--sigma-w2", "1.5", "--sigma-b2", "0.05", "--depth", "50"], 0.5),
        ("exponents resnet-full tanh", ["exponents", "--arch", "resnet-full", "--activation", "tanh"], 0.5),
        ("activations", ["activations"], 0.5),
        ("kernel mlp relu N=100", ["kernel", "--arch", "mlp", "--activation", "relu", "--depth", "10",
                                   "--sigma-w2", "2", "--sigma-b2", "0.1", "--x", str(tmp / "X.npy"),
                                   "--out", str(tmp / "K.npz")], 0.5),
        ("kernel mlp tanh N=100", ["kernel", "--arch", "mlp", "--activation", "tanh", "--depth", "10",
                                   "--sigma-w2", "1.5", "--sigma-b2", "0.1", "--x", str(tmp / "X.npy"),
                                   "--out", str(tmp / "K.npz")], 0.5),
        ("kernel --net cnn N=8 8x8x3", ["kernel", "--net", str(tmp / "net.json"), "--x", str(tmp / "Xc.npy"),
                                        "--out", str(tmp / "K2.npz")], 0.5),
        ("propagate --net cnn N=8", ["propagate", "--net", str(tmp / "net.json"), "--x", str(tmp / "Xc.npy")], 0.5),
        ("phase-diagram tanh grid 256", ["phase-diagram", "--activation", "tanh", "--grid", "256",
                                         "--out", str(tmp / "p.png"), "--data", str(tmp / "p.npz")], 1.5),
        ("phase-diagram gelu grid 256", ["phase-diagram", "--activation", "gelu", "--grid", "256",
                                         "--out", str(tmp / "p.png"), "--data", str(tmp / "p.npz")], 1.5),
    ]
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="substrings: time only the commands whose label contains one")
    args = ap.parse_args()
    exe = shutil.which("meanfield") or str(Path(sys.executable).parent / "meanfield")
    print(f"# meanfield at {exe}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'command':38} {'median s':>9} {'min..max s':>15} {'goal s':>7}  ok")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for label, argv, goal in commands(tmp):
            if args.only and not any(s in label for s in args.only):
                continue
            times, rc = [], 0
            for _ in range(args.repeat):
                t = time.perf_counter()
                r = subprocess.run([exe, *argv], capture_output=True, text=True)
                times.append(time.perf_counter() - t)
                rc = rc or r.returncode
            med = statistics.median(times)
            status = "yes" if med < goal and rc == 0 else ("FAIL rc=%d" % rc if rc else "no")
            print(f"{label:38} {med:9.2f} {min(times):7.2f}..{max(times):<7.2f} {goal:7.1f}  {status}", flush=True)


if __name__ == "__main__":
    main()
