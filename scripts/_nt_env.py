"""The side virtual environment with neural-tangents, shared by the scripts that compare with it.

neural-tangents (and jax) are never dependencies of meanfield: they live in .bench_env/
(gitignored), created on first use with pinned versions that work together, and run in
subprocesses of the scripts (bench_kernels.py, bench_network.py, nt_network_reference.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = ROOT / ".bench_env"
PINS = ["jax[cpu]==0.4.30", "jaxlib==0.4.30", "neural-tangents==0.6.5", "tf2jax==0.3.6"]


def ensure_env(log) -> Path | None:
    """The neural-tangents environment's python, creating it if needed; None if impossible."""
    py = ENV / "bin" / "python"
    check = [str(py), "-c", "import neural_tangents, jax"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    log(f"creating {ENV} with {' '.join(PINS)} (one time) ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True, capture_output=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS], check=True, capture_output=True,
                       timeout=1800)
        if subprocess.run(check, capture_output=True).returncode == 0:
            return py
    except (subprocess.SubprocessError, OSError) as exc:
        log(f"neural-tangents unavailable: {exc}")
    log("neural-tangents could not be installed; timing meanfield only")
    return None
