#!/usr/bin/env python
"""Every CLI command as a user runs it: `meanfield ...` in a fresh process, writing its files,
cold (a new interpreter each time), the median of --repeat runs (issue 10).

    python scripts/bench_cli.py [--repeat 3] [--only advise kernel ...]

Prints one row per command: the median wall time, the spread (min..max), the goal
(< 0.5 s; phase-diagram --grid 256 < 1.5 s), and where a goal is missed, the reason: one more
run under ``python -X importtime`` measures the seconds spent importing (every import, lazy
ones included, with the three largest packages), and the rest is computation, whose main cost
(from cProfile runs of the command, issue 10) is named.  The machine's load average is printed
first: timings on a shared machine vary, so read the ratios of one run, not absolute numbers.
Nothing here is a test expectation.
"""

from __future__ import annotations

import argparse
import collections
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
        ("advise mlp tanh depth 1e6", ["advise", "--arch", "mlp", "--activation", "tanh", "--depth", "1000000"], 0.5),
        ("advise mlp tanh depth 1e9", ["advise", "--arch", "mlp", "--activation", "tanh", "--depth", "1000000000"],
         0.5),
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


# Where the computation goes, from cProfile runs of each command (issue 10); keyed by label prefix.
CAUSES = {
    "advise mlp": "NTK condition number (meanfield.kernels: two 2-D quadratures per layer), Jacobian spectrum edge",
    "advise resnet": "meanfield.residual's advice (root finding over depth-dependent variances)",
    "kernel mlp tanh": "tables of W, D per layer built by 2-D quadrature (cached on disk after the first run)",
    "kernel": "kernel recursion and its tables",
    "phase-diagram": "q* on 65k points, chaotic c*, matplotlib rendering and PNG encoding",
}


def import_seconds(exe: str, argv: list[str]) -> tuple[float, str]:
    """Seconds spent importing in one run under -X importtime (top-level entries summed: a lazy
    import inside a function is top-level too), and the three largest packages."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "meanfield.cli", *argv],
                       capture_output=True, text=True)
    per = collections.Counter()
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            cum = int(parts[1])
        except ValueError:
            continue
        name = parts[2]
        if len(name) - len(name.lstrip()) == 1:  # depth 0
            per[name.strip()] += cum
    top = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in per.most_common(3))
    return sum(per.values()) / 1e6, top


def _timed(cmd: list[str], env: dict | None, cwd: Path) -> tuple[float, int]:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    return time.perf_counter() - t, r.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="substrings: time only the commands whose label contains one")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout of an earlier version (e.g. a git worktree): each command is also run "
                         "from it (PYTHONPATH), alternating with this one, and the ratio printed")
    args = ap.parse_args()
    exe = shutil.which("meanfield") or str(Path(sys.executable).parent / "meanfield")
    print(f"# meanfield at {exe}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
          + (f"; baseline {args.baseline}" if args.baseline else ""))
    base_cols = f" {'base s':>7} {'base/now':>8}" if args.baseline else ""
    print(f"{'command':38} {'median s':>9} {'min..max s':>15} {'goal s':>7}  ok  {base_cols}  reason where missed")
    base_env = None
    if args.baseline:
        base_env = dict(os.environ, PYTHONPATH=str(args.baseline.resolve()))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for label, argv, goal in commands(tmp):
            if args.only and not any(s in label for s in args.only):
                continue
            times, base, rc = [], [], 0
            for _ in range(args.repeat):
                # the same launcher for both, so that the ratio compares the package only
                if args.baseline:
                    dt, _ = _timed([sys.executable, "-m", "meanfield.cli", *argv], base_env, tmp)
                    base.append(dt)
                    dt, r = _timed([sys.executable, "-m", "meanfield.cli", *argv], None, tmp)
                else:
                    dt, r = _timed([exe, *argv], None, tmp)
                times.append(dt)
                rc = rc or r
            med = statistics.median(times)
            status = "yes" if med < goal and rc == 0 else ("FAIL rc=%d" % rc if rc else "no")
            reason = ""
            if status == "no":
                imp, top = import_seconds(exe, argv)
                cause = next((v for k, v in CAUSES.items() if label.startswith(k)), "")
                reason = f"imports {imp:.2f} s ({top}); rest: {cause or 'computation'}"
            extra = ""
            if args.baseline:
                bm = statistics.median(base)
                extra = f" {bm:7.2f} {bm / med:7.2f}x"
            print(f"{label:38} {med:9.2f} {min(times):7.2f}..{max(times):<7.2f} {goal:7.1f}  {status:4}{extra}  {reason}",
                  flush=True)


if __name__ == "__main__":
    main()
