"""scripts/validate_models.py: the AutoInit-style moments against closed forms, AutoInit and
LSUV against a measured wide net, and a tiny run of both parts (issue 12 section 3)."""

import json
import math
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "scripts"))
import validate_models as vm  # noqa: E402


def test_act_moments_relu_closed_form():
    # relu(u), u ~ N(m, 1): E = m Phi(m) + phi(m), E[relu^2] = (m^2 + 1) Phi(m) + m phi(m)
    for m in (0.0, 0.5):
        Phi = 0.5 * (1 + math.erf(m / math.sqrt(2)))
        phi = math.exp(-m * m / 2) / math.sqrt(2 * math.pi)
        e1 = m * Phi + phi
        e2 = (m * m + 1) * Phi + m * phi
        got = vm._act_moments("relu", m, 1.0)
        assert got[0] == pytest.approx(e1, rel=1e-10)
        assert got[1] == pytest.approx(e2 - e1 * e1, rel=1e-10)


def test_autoinit_and_lsuv_give_unit_variance(torch_one_thread):
    # a tanh MLP of width 512: AutoInit's analytic rule should leave every pre-activation at
    # variance ~1 (the weight draws move one layer's mean square by ~sqrt(2/512)/sqrt(512)
    # and the 256 N(0, 1) inputs by ~1.1%; 0.05 is over 4 of those); LSUV by construction on
    # its own batch (within its 0.1 tolerance).  PyTorch's default shrinks it (1/3 per layer
    # times E[tanh^2] < 1), so the check can fail.
    s = vm.Settings(depth=4)
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))

    def pre_variances(model):
        out, h = [], x
        with torch.no_grad():
            for m in model:
                h = m(h)
                if isinstance(m, torch.nn.Linear):
                    out.append(float(h.pow(2).mean()))
        return np.array(out[:-1])

    default = pre_variances(vm.build("tanh", 512, 0, s))
    assert default[-1] < 0.2
    model = vm.build("tanh", 512, 0, s)
    vm.autoinit_(model, "tanh", (0.0, 1.0), seed=0)
    assert np.abs(pre_variances(model) - 1).max() < 0.05
    model = vm.build("tanh", 512, 0, s)
    vm.lsuv_(model, x, seed=0)
    assert np.abs(pre_variances(model) - 1).max() < 0.1 + 1e-6


@pytest.mark.slow  # 4.5 s on a quiet machine, 20-30 s loaded: mostly importing sklearn and torch.func
def test_tiny_run(tmp_path, torch_one_thread):
    out = tmp_path / "mv.json"
    assert vm.main(["--tiny", "--family", "gelu_ln", "--out", str(out)]) == 0
    cells = json.loads(out.read_text())["cells"]
    assert set(cells) == {"a/gelu_ln/pytorch", "a/gelu_ln/advised"} | {
        f"b/gelu_ln/{i}" for i in vm.INITS}
    assert cells["a/gelu_ln/advised"]["rows_checked"]["q"] > 0
    assert all(len(cells[f"b/gelu_ln/{i}"]["runs"]) == 2 for i in vm.INITS)
    assert vm.main(["--tiny", "--report", "--out", str(out), "--figures", str(tmp_path)]) == 0
    assert (tmp_path / "model_gelu_ln.png").exists()


def test_compare_model_gradient_below_a_flatten_of_positions(torch_one_thread):
    # a sequence model read by to_network: Linear per position, relu, flatten of T = 6 positions
    # into the readout.  The gradient below the flatten is each unit's own (a reshape), so the
    # prediction must not drop by T there (it did, by exactly T, before _width_factors counted
    # the flatten: |z| ~ 200 at width 256 in the 4-layer encoder of validate_models).
    import torch.nn as nn

    import meanfield.torch as mft

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 256, 10))
    x = torch.randn(8, 6, 5)
    cmp = mft.compare_model(model, x)
    assert list(cmp.layers) == ["dense", "relu", "dense", "relu", "flatten", "dense"]
    gz = cmp.grad_z[:-1]
    assert np.all(np.abs(gz) < 4), gz
    # the same layers with the flatten's factor dropped would be T = 6 times too small
    assert np.all(np.abs(cmp.grad_rel_error[:4]) < 0.5)
