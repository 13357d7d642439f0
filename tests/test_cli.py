"""The `meanfield` command line (issue 2 sections 5 and 8) through typer's CliRunner.

Contract: every command's --json prints one JSON object on stdout (the Python result's fields,
no ANSI codes); messages go to stderr; exit 0 ok, 1 numerical failure in one line, 2 bad usage in
one line naming the bad value; no traceback; no file written when the input is bad; files are
written atomically (no temporary file left behind).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from meanfield.cli import app

ANSI = "\x1b["


def run(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def ok_json(*args, env=None) -> dict:
    res = run(*args, "--json", env=env)
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    assert res.exception is None
    assert ANSI not in res.stdout
    assert res.stdout.count("\n") == 1 and res.stdout.endswith("\n")  # one JSON object, one line
    return json.loads(res.stdout)


def one_line_error(res, code, *needles):
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr, res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------
# --json of every command
# ------------------------------------------------------------------------------------------

def test_activations_json():
    d = ok_json("activations")
    names = {row["name"] for row in d["activations"]}
    assert {"tanh", "erf", "relu", "leaky_relu", "alpha_relu", "abs", "linear", "sin", "cos", "sigmoid",
            "softplus", "gelu", "silu", "elu", "selu", "hard_tanh"} <= names
    rows = {row["name"]: row for row in d["activations"]}
    assert "w" in rows["erf"]["closed_form"] and rows["tanh"]["closed_form"] == []
    assert d["aliases"]["swish"] == "silu"


def test_fixed_point_json():
    d = ok_json("fixed-point", "--activation", "tanh", "--sigma-w2", 2, "--sigma-b2", 0.05)
    assert {"q_star", "c_star", "chi_1", "chi_c", "xi_q", "xi_c", "phase"} <= set(d)
    assert d["phase"] == "chaotic"
    assert d["q_star"] == pytest.approx(0.72176187265207, rel=1e-9)  # golden (REFERENCE_VALUES A2)
    crit = ok_json("fixed-point", "--activation", "relu", "--sigma-w2", 2)
    assert crit["xi_c"] is None and crit["phase"] == "critical"  # infinity is null, never NaN


def test_eoc_json():
    d = ok_json("eoc", "--activation", "tanh", "--sigma-b2", 0.05)
    assert {"sigma_w2", "q_star"} <= set(d)
    assert d["sigma_w2"] == pytest.approx(1.760955, rel=1e-6)
    assert ok_json("eoc", "--activation", "erf")["sigma_w2"] == pytest.approx(math.pi / 4, rel=1e-14)


def test_iterate_json():
    d = ok_json("iterate", "--activation", "tanh", "--sigma-w2", 1.5, "--sigma-b2", 0.05, "--depth", 7,
                "--q0", 2.0, "--c0", 0.3)
    assert len(d["q"]) == len(d["c"]) == 8
    assert d["q"][0] == 2.0 and d["c"][0] == 0.3
    assert all(np.isfinite(d["q"])) and all(-1 <= c <= 1 for c in d["c"])


def test_advise_json():
    d = ok_json("advise", "--arch", "mlp", "--activation", "tanh", "--depth", 20, "--width", 256)
    assert {"sigma_w2", "sigma_b2", "chi_1", "q_star", "xi_c", "correlation_out", "log10_gradient_ratio",
            "comparisons", "weight_std"} <= set(d)
    assert d["chi_1"] == pytest.approx(1.0, abs=1e-9)
    assert d["weight_std"] == pytest.approx(math.sqrt(d["sigma_w2"] / 256))
    assert {c["name"] for c in d["comparisons"]} >= {"pytorch_default", "xavier", "he", "lecun"}
    fixed = ok_json("advise", "--activation", "tanh", "--depth", 20, "--sigma-b2", 0.05)
    assert fixed["sigma_w2"] == pytest.approx(1.760955, rel=1e-6)
    relu = ok_json("advise", "--activation", "relu", "--depth", 20)
    assert (relu["sigma_w2"], relu["sigma_b2"]) == (2.0, 0.0)


def test_phase_diagram_json_and_files(tmp_path):
    out, data = tmp_path / "phase.png", tmp_path / "phase.npz"
    d = ok_json("phase-diagram", "--activation", "tanh", "--out", out, "--data", data, "--grid", 10,
                "--sigma-w2-max", 4, "--sigma-b2-max", 1)
    assert d["grid"] == [10, 10] and d["out"] == str(out) and d["data"] == str(data)
    assert 0 < d["fraction_ordered"] < 1 and 0 < d["fraction_chaotic"] < 1
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays = np.load(data)
    assert arrays["chi_1"].shape == (10, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phase.npz", "phase.png"]  # no temp files left


def test_json_has_no_ansi_even_when_colour_is_forced():
    env = {"FORCE_COLOR": "1", "TERM": "xterm-256color", "CLICOLOR_FORCE": "1"}
    ok_json("fixed-point", "--activation", "erf", "--sigma-w2", 1.5, env=env)
    ok_json("advise", "--activation", "relu", "--depth", 5, env=env)


def test_human_output():
    res = run("fixed-point", "--activation", "tanh", "--sigma-w2", 1.5, "--sigma-b2", 0.05)
    assert res.exit_code == 0 and "q_star" in res.stdout and "ordered" in res.stdout
    res = run("advise", "--activation", "relu", "--depth", 10)
    assert res.exit_code == 0 and "compared with" in res.stdout


# ------------------------------------------------------------------------------------------
# Bad input (issue 2 section 8): exit 2, one line naming the bad value, nothing written
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,needles", [
    (("fixed-point", "--activation", "tahn", "--sigma-w2", 1), ("tahn", "tanh")),
    (("eoc", "--activation", "gleu"), ("gleu", "gelu")),
    (("fixed-point", "--activation", "tanh", "--sigma-w2", -1), ("sigma_w2", "-1")),
    (("fixed-point", "--activation", "tanh", "--sigma-w2", 1, "--sigma-b2", -0.5), ("sigma_b2", "-0.5")),
    (("fixed-point", "--activation", "tanh", "--sigma-w2", "nan"), ("sigma_w2", "nan")),
    (("eoc", "--activation", "tanh", "--sigma-b2", "inf"), ("sigma_b2", "inf")),
    (("iterate", "--activation", "tanh", "--sigma-w2", 1.5, "--depth", 0), ("depth", "0")),
    (("advise", "--activation", "tanh", "--depth", 0), ("depth", "0")),
    (("advise", "--activation", "tanh", "--depth", -4), ("depth",)),
    (("fixed-point", "--activation", "alpha_relu:-0.6", "--sigma-w2", 1), ("alpha", "-0.6")),
    (("iterate", "--activation", "tanh", "--sigma-w2", 1.5, "--depth", 3, "--c0", 1.5), ("c0", "1.5")),
    (("iterate", "--activation", "tanh", "--sigma-w2", 1.5, "--depth", 3, "--c0", -1.01), ("c0", "-1.01")),
    (("fixed-point", "--activation", "relu", "--sigma-w2", 2.5), ("diverge", "2.5")),
    (("fixed-point", "--activation", "relu", "--sigma-w2", 2, "--sigma-b2", 0.1), ("linear",)),
    (("eoc", "--activation", "relu", "--sigma-b2", 0.1), ("no edge of chaos",)),
    (("eoc", "--activation", "softplus"), ("no edge of chaos",)),
    (("advise", "--arch", "cnn", "--activation", "tanh", "--depth", 3), ("cnn",)),
])
def test_bad_input_exits_2_with_one_line(args, needles):
    one_line_error(run(*args), 2, *needles)


def test_output_in_a_missing_folder_writes_nothing(tmp_path):
    missing = tmp_path / "nope" / "phase.png"
    one_line_error(run("phase-diagram", "--activation", "tanh", "--out", missing, "--grid", 4), 2, "nope")
    # a good --out with a --data in a missing folder: refused before any work, nothing written
    out = tmp_path / "phase.png"
    one_line_error(run("phase-diagram", "--activation", "tanh", "--out", out, "--data",
                       tmp_path / "nope" / "d.npz", "--grid", 4), 2, "nope")
    assert list(tmp_path.iterdir()) == []


def test_numerical_failure_exits_1():
    res = run("iterate", "--activation", "relu", "--sigma-w2", 4, "--depth", 5000)
    assert res.exit_code == 1 and "Traceback" not in res.stderr and res.stdout == ""
    assert "diverge" in res.stderr.strip().splitlines()[-1]


def test_numerical_failure_is_one_line():
    """As a user sees it: a real process (pytest would capture Python warnings otherwise)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "meanfield.cli", "iterate", "--activation", "relu",
                           "--sigma-w2", "4", "--depth", "5000"], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(lines) == 1 and "diverge" in lines[0], proc.stderr


def test_unsupported_output_format_is_bad_usage(tmp_path):
    one_line_error(run("phase-diagram", "--activation", "tanh", "--out", tmp_path / "p.xyz", "--grid", 4), 2, "xyz")
    assert list(tmp_path.iterdir()) == []


def test_near_critical_fixed_point_has_no_traceback():
    res = run("fixed-point", "--activation", "tanh", "--sigma-w2", 1.05, "--sigma-b2", 2.0105e-5, "--json")
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert res.exit_code in (0, 1)
