#!/usr/bin/env python
"""Every CLI command as a user runs it: `meanfield ...` in a fresh process, writing its files,
cold (a new interpreter each time), the median of --repeat runs (issue 10).

    python scripts/bench_cli.py [--repeat 3] [--only advise kernel ...]

Prints one row per command: the median wall time, the spread (min..max), the goal
(< 0.5 s; phase-diagram --grid 256 < 1.5 s), and where a goal is missed, the reason: one more
run under ``python -X importtime`` measures the seconds spent importing (every import, lazy
ones included, with the three largest packages), and the rest is computation, whose main cost
(from cProfile runs of the command, issue 10) is named.  The machine's load average is printed
first and last, and each row gives the median CPU seconds (user + system) beside the wall time:
timings on a shared machine vary, so read the ratios of one run, not absolute numbers.
Nothing here is a test expectation.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
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
    "advise mlp": ("scipy.special for the Hermite series' Gauss-Hermite nodes (~0.3 s); without the series (kinked "
                   "phi, sigmoid's large q*) ~150 2-D quadratures of ~10 ms (NTK pair and C-map per layer)"),
    "advise resnet": ("meanfield.residual's recursion run ~19 times (6 comparison diagnostics, ~13 root-finding "
                      "steps); without a G table (silu, elu, softplus) each layer's G is a 2-D quadrature "
                      "(silu: 300 expect2 calls, 2150 expect1, 60% of it building quadrature panels)"),
    "kernel mlp tanh": "tables of W, D per layer built by 2-D quadrature (cached on disk after the first run)",
    "kernel": "kernel recursion and its tables",
    "phase-diagram": ("matplotlib (~0.8 s import) rendering and PNG encoding, q* on 65k points, chaotic c*; "
                      "uncached, the 1-D spline table imports scipy.interpolate (~0.7 s)"),
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


def _timed(cmd: list[str], env: dict | None, cwd: Path, timeout: float | None = None) -> tuple[float, int, float]:
    """Wall seconds, exit status and CPU seconds (user + system: on a loaded machine the wall time
    is mostly waiting for a core); a run past ``timeout`` is stopped and reported with rc -9."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
        rc = r.returncode
    except subprocess.TimeoutExpired:
        rc = -9
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, rc, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="substrings: time only the commands whose label contains one")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout of an earlier version (e.g. a git worktree): each command is also run "
                         "from it (PYTHONPATH), alternating with this one, and the ratio printed")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds: a run past it is stopped and its row says so (e.g. an uncached table build)")
    args = ap.parse_args()
    exe = shutil.which("meanfield") or str(Path(sys.executable).parent / "meanfield")
    print(f"# meanfield at {exe}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
          + (f"; baseline {args.baseline}" if args.baseline else ""))
    base_cols = f" {'base s':>7} {'base/now':>8}" if args.baseline else ""
    print(f"{'command':38} {'median s':>9} {'min..max s':>15} {'cpu s':>6} {'goal s':>7}  ok  {base_cols}  "
          "reason where missed")
    base_env = None
    if args.baseline:
        base_env = dict(os.environ, PYTHONPATH=str(args.baseline.resolve()))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for label, argv, goal in commands(tmp):
            if args.only and not any(s in label for s in args.only):
                continue
            times, cpus, base, rc = [], [], [], 0
            for _ in range(args.repeat):
                # the same launcher for both, so that the ratio compares the package only
                if args.baseline:
                    dt, _, _ = _timed([sys.executable, "-m", "meanfield.cli", *argv], base_env, tmp, args.timeout)
                    base.append(dt)
                    dt, r, cpu = _timed([sys.executable, "-m", "meanfield.cli", *argv], None, tmp, args.timeout)
                else:
                    dt, r, cpu = _timed([exe, *argv], None, tmp, args.timeout)
                times.append(dt)
                cpus.append(cpu)
                rc = rc or r
                if r == -9:
                    break  # timed out: one such run says enough
            med = statistics.median(times)
            status = "yes" if med < goal and rc == 0 else (
                "TIMEOUT" if rc == -9 else "FAIL rc=%d" % rc if rc else "no")
            reason = ""
            if status == "no":
                imp, top = import_seconds(exe, argv)
                cause = next((v for k, v in CAUSES.items() if label.startswith(k)), "")
                reason = f"imports {imp:.2f} s ({top}); rest: {cause or 'computation'}"
            extra = ""
            if args.baseline:
                bm = statistics.median(base)
                extra = f" {bm:7.2f} {bm / med:7.2f}x"
            print(f"{label:38} {med:9.2f} {min(times):7.2f}..{max(times):<7.2f} {statistics.median(cpus):6.2f} "
                  f"{goal:7.1f}  {status:4}{extra}  {reason}",
                  flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
