"""scripts/validate_residual.py (issue 11): the tiny run, its results file, resuming, and the
batched trainer against an nn.Module trained by torch.optim.SGD."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")


def _script():
    if "validate_residual" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "scripts" / "validate_residual.py"
        spec = importlib.util.spec_from_file_location("validate_residual", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["validate_residual"] = mod  # its dataclasses look their module up there
        spec.loader.exec_module(mod)
    return sys.modules["validate_residual"]


CELL_KEYS = {"part", "act", "depth", "best_lr", "best_lr_at_edge", "val_acc", "test_mean",
             "test_sd", "test_accs", "diverged", "diverged_all_lrs", "n_runs", "train_loss",
             "runs", "lr_grid", "seconds"}
RUN_KEYS = {"lr", "seed", "diverged", "diverged_step", "val_acc", "test_acc", "train_loss",
            "loss_curve"}


@pytest.mark.slow
def test_tiny_run_schema_and_resume(tmp_path, monkeypatch):
    vr = _script()
    out = tmp_path / "res.json"
    argv = ["--tiny", "--act", "tanh", "--out", str(out), "--budgets", "tanh=2"]
    assert vr.main(argv) == 0
    res = json.loads(out.read_text())
    s = vr.Settings(**vr.TINY)
    assert res["settings"] == s.key()
    cells = res["cells"]
    # 2 depths x 2 values of the map, 1 depth x (6 inits + advised:2) of the head-to-head
    assert len(cells) == 2 * 2 + 1 * 7
    assert "h2h/tanh/L=2/init=advised:2" in cells
    n = len(s.lrs) * len(s.seeds)
    for cid, c in cells.items():
        assert CELL_KEYS <= set(c), cid
        assert c["n_runs"] == n == len(c["runs"])
        assert c["best_lr"] in c["lr_grid"]
        assert len(c["test_accs"]) == len(s.seeds)
        for r in c["runs"]:
            assert RUN_KEYS <= set(r)
            assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0
            if r["diverged"]:
                assert r["test_acc"] == vr.CHANCE and r["train_loss"] is None
        best = [r for r in c["runs"] if r["lr"] == c["best_lr"]]
        # the chosen lr has the best mean validation accuracy over the seeds
        for lr in c["lr_grid"]:
            other = [r["val_acc"] for r in c["runs"] if r["lr"] == lr]
            assert sum(other) / len(other) <= c["val_acc"] + 1e-12
        assert c["test_mean"] == pytest.approx(sum(r["test_acc"] for r in best) / len(best))
    adv = cells["h2h/tanh/L=2/init=advised:2"]["variances"]
    assert adv["budget"] == 2.0
    # a rerun trains nothing: every cell is already in the file
    monkeypatch.setattr(vr, "run_cell", lambda *a, **k: pytest.fail("a finished cell was rerun"))
    before = out.read_text()
    assert vr.main(argv) == 0
    assert out.read_text() == before


def test_other_settings_are_refused(tmp_path):
    vr = _script()
    out = tmp_path / "res.json"
    out.write_text(json.dumps({"settings": {"width": 1}, "cells": {}}))
    with pytest.raises(SystemExit, match="other settings"):
        vr.main(["--tiny", "--out", str(out)])


@pytest.mark.slow
def test_batched_training_equals_module_and_sgd():
    """Net 1 of a two-net batch, trained 5 steps, ends where the same nn.Module trained by
    torch.optim.SGD (momentum) on the same batches ends; its lr-0 partner is untouched."""
    vr = _script()
    vt = sys.modules["validate_training"]
    s = vr.Settings(width=16, steps=5, batch=8, lrs=(0.05,), seeds=(0,))
    data = vr.load_data()
    for act in ("tanh", "relu"):
        net = vr.init_net(act, 3, "xavier", None, 0, s)
        m = vt.build("resnet-full", act, 3, 16, 0)
        vt.apply_init(m, "xavier", "resnet-full", act, 3, 16, 0)
        x = data["test"][0][:5]
        B = vr.Batched([net, net], act)
        assert torch.allclose(B(x.expand(2, *x.shape))[1], m(x), atol=1e-5)
        runs = vr.train_cell([net, net], act, [0.0, 0.05], [0, 0], data, s)
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(30_000)  # train_cell's batch order for seed 0
        Xtr, ytr = data["train"]
        order: list = []
        for _ in range(s.steps):
            if len(order) < s.batch:
                order += torch.randperm(Xtr.shape[0], generator=g).tolist()
            idx, order = order[: s.batch], order[s.batch :]
            loss = torch.nn.functional.cross_entropy(m(Xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            want = float(torch.nn.functional.cross_entropy(m(Xtr), ytr))
        assert runs[1]["train_loss"] == pytest.approx(want, rel=1e-5)
        m0 = vt.build("resnet-full", act, 3, 16, 0)
        vt.apply_init(m0, "xavier", "resnet-full", act, 3, 16, 0)
        with torch.no_grad():
            want0 = float(torch.nn.functional.cross_entropy(m0(Xtr), ytr))
        assert runs[0]["train_loss"] == pytest.approx(want0, rel=1e-5)
        assert abs(want - want0) > 1e-3  # the trained net did move


def test_diverged_net_is_frozen_and_scored_at_chance():
    """A net whose loss overflows is frozen and scored at chance; its partner trains on."""
    vr = _script()
    s = vr.Settings(width=16, steps=4, batch=8, lrs=(0.01,), seeds=(0,))
    data = vr.load_data()
    good = vr.init_net("relu", 2, "variances", vr.map_variances("relu", 0.1), 0, s)
    bad = vr.init_net("relu", 2, "variances", vr.map_variances("relu", 0.1), 0, s)
    bad["out"] = (torch.full_like(bad["out"][0], float("inf")), bad["out"][1])  # a NaN loss
    runs = vr.train_cell([good, bad], "relu", [0.01, 0.01], [0, 0], data, s)
    assert runs[1]["diverged"] and runs[1]["diverged_step"] == 1
    assert runs[1]["test_acc"] == vr.CHANCE and runs[1]["train_loss"] is None
    assert not runs[0]["diverged"] and runs[0]["train_loss"] < 10


def test_fixup_and_skipinit_start_as_stated():
    vr = _script()
    s = vr.Settings(width=16)
    fx = vr.init_net("relu", 4, "fixup", None, 0, s)
    assert fx["gain"] == 1.0
    assert all(float(b[2].abs().max()) == 0.0 for b in fx["blocks"])  # V = 0
    assert float(fx["out"][0].abs().max()) == 0.0  # the readout is zero
    w2 = sum(float((b[0] ** 2).mean()) for b in fx["blocks"]) / 4 * 16  # sigma_w2 = 2 / L
    assert w2 == pytest.approx(0.5, rel=0.15)
    sk = vr.init_net("relu", 4, "skipinit", None, 0, s)
    assert sk["gain"] == 0.0
    x = torch.randn(2, 3, 64)
    B = vr.Batched([sk, sk], "relu")
    # branch scale 0: the net is stem then readout
    h = torch.baddbmm(B.inp[1], x, B.inp[0])
    assert torch.allclose(B(x), torch.baddbmm(B.out[1], h, B.out[0]), atol=1e-6)


@pytest.mark.slow
def test_tiny_mnist1d_run(tmp_path):
    """--data mnist1d: MNIST-1D generated locally, 40 inputs, its own settings key and file."""
    pytest.importorskip("mnist1d")
    vr = _script()
    data = vr.load_data("mnist1d")
    # make_dataset's defaults: 4000 train / 1000 test, 40 features; train split 80/20 again
    assert [tuple(data[k][0].shape) for k in ("train", "val", "test")] == [
        (3200, 40), (800, 40), (1000, 40)]
    both = torch.cat([data["train"][0], data["val"][0]])
    assert float(both.mean(0).abs().max()) < 1e-4  # standardised on the 4000
    assert float((both.std(0, unbiased=False) - 1).abs().max()) < 1e-4
    out = tmp_path / "res.json"
    argv = ["--tiny", "--data", "mnist1d", "--part", "h2h", "--act", "tanh", "--out", str(out),
            "--depths", "2,4", "--inits", "advised,pytorch"]
    assert vr.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["settings"]["data"] == "mnist1d"
    # advised + pytorch at depth 2 (the tiny h2h depth) and 4 (added by --depths)
    assert sorted(res["cells"]) == sorted(
        f"h2h/tanh/L={d}/init={i}" for d in (2, 4) for i in ("advised", "pytorch"))
    for c in res["cells"].values():
        assert 0.0 <= c["test_mean"] <= 1.0 and len(c["runs"]) == c["n_runs"]
    text = vr.report(res, vr.Settings(**vr.TINY, data="mnist1d"), ["tanh"], None)
    assert "| tanh | 4 |" in text
    # the digits file's settings have no data key, so the committed digits results still load
    assert "data" not in vr.Settings().key()
    with pytest.raises(SystemExit, match="other settings"):
        vr.main(["--tiny", "--out", str(out)])  # a digits run refuses the MNIST-1D file


def test_tiny_tanh_pairs_sit_on_their_explosion_level(tmp_path):
    """--part pairs: each pair holds its fixed variance, its other one puts the gradient explosion
    on the level (checked on iterate_residual, not on the solver), the nonlinearity numbers
    agree with adaptive quadrature (scipy.integrate.quad, not meanfield.gaussian's rule; numpy's
    80-point Gauss-Hermite is off by 1e-5 here: tanh's poles at +-i pi/2), and PyTorch's default
    is the reference row."""
    import numpy as np
    from scipy.integrate import quad

    from meanfield.residual import iterate_residual

    def gauss(f, q):  # E f(sqrt(q) z), z ~ N(0, 1)
        g = lambda z: f(math.sqrt(q) * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        return quad(g, -40, 40, epsabs=0, epsrel=1e-13, limit=500)[0]

    vr = _script()
    out = tmp_path / "res.json"
    assert vr.main(["--tiny", "--part", "pairs", "--act", "tanh", "--out", str(out)]) == 0
    cells = json.loads(out.read_text())["cells"]
    assert sorted(cells) == ["h2h/tanh/L=2/init=pytorch", "pairs/tanh/L=2/G=1/v=1",
                             "pairs/tanh/L=2/G=1/w=1"]
    for fix, key in (("v=1", "sigma_v2"), ("w=1", "sigma_w2")):
        c = cells[f"pairs/tanh/L=2/G=1/{fix}"]
        v = c["variances"]
        assert v[key] == 1.0
        T = iterate_residual("resnet-full", "tanh", v["sigma_w2"], 0.0, 2,
                             sigma_v2=v["sigma_v2"], p0=1.0)
        assert T.log_explosion == pytest.approx(1.0, abs=1e-6)
        qs = [float(q) for q in T.q[1:]]
        d1 = np.array([gauss(lambda u: 1 / math.cosh(u) ** 2, q) for q in qs])
        d2 = np.array([gauss(lambda u: 1 / math.cosh(u) ** 4, q) for q in qs])
        v2 = np.array([gauss(lambda u: math.tanh(u) ** 2, q) for q in qs])
        th = c["theory"]
        assert th["e_dphi2"] == pytest.approx(float(d2.mean()), rel=1e-10)
        assert th["nonlinear_share"] == pytest.approx(float(np.mean(1 - np.array(qs) * d1 ** 2 / v2)),
                                                      rel=1e-8)
        assert 0.0 < th["nonlinear_share"] < 1.0
    text = vr.pairs_report(json.loads(out.read_text()))
    assert "| 2 | pytorch | 0.3333 | 0.3333 |" in text and "| 2 | G=1, w=1 | 1 |" in text
    with pytest.raises(SystemExit):
        vr.main(["--tiny", "--part", "pairs", "--fixes", "u=1", "--out", str(out)])
