"""Does the residual advice train?  Accuracy-vs-initialisation maps and a head-to-head (issue 11).

The Yang & Schoenholz (2017) experiment on real data, with a fair protocol: full residual nets
x + V phi(W x + b) + a (width 128, a linear stem and readout, as meanfield.torch expects) trained
with minibatch SGD (momentum 0.9) at every learning rate of a log grid; for each (initialisation,
depth) the learning rate with the best mean validation accuracy over the seeds is chosen, and the
test accuracy at that learning rate is reported (mean and spread over the seeds).  A run whose
loss becomes non-finite is *diverged*: it is frozen there and scored at chance (0.1).

Data: scikit-learn's digits (scripts/validate_training.load_data: a stratified 70/30 train/test
split, standardised), the training part split again 80/20 into train/validation (stratified,
random_state=1).  MNIST-1D is not used (CPU budget).

Part "maps": test accuracy over a log grid of the branch variance x depth -- tanh: sigma_w2
(sigma_v2 = 1); relu (sigma_w2 = 2) and alpha_relu:0.75 (sigma_w2 = 1): the product sigma_v2
sigma_w2 (the free variance is sigma_v2, as in advise_residual) -- with the theory's contours
from meanfield.residual.iterate_residual on top (tanh: the gradient explosion log(chi^0/chi^L);
relu, alpha-ReLU: the log squared distance log s^L of two inputs with p^0 = 1, c^0 = 0.5, the
convention of advise_residual's diagnostics).

Part "h2h": advised (advise_residual at its default budget) vs PyTorch's default vs Xavier vs He
vs Fixup-style vs SkipInit/ReZero-style, each at its own best learning rate.

Cost: the networks of a cell (every learning rate x seed) are trained together as one model
whose weights carry a leading "net" axis (torch.baddbmm), one CPU thread.  Each net is first
built as the nn.Module of scripts/validate_training.py and initialised there (meanfield.torch.init_
or the scheme's own rule), then its weights are stacked.

Resumable: each finished cell is appended to the results file (atomically) and skipped on a
rerun with the same settings.  ``--report`` redraws the figures and prints the tables from the
results file without training.

Usage: python scripts/validate_residual.py [--part maps|h2h|all] [--act tanh,relu,...]
           [--inits ...] [--depths 10,100] [--budgets tanh=6] [--reverse] [--tiny] [--out FILE]
       python scripts/validate_residual.py --report [--budgets tanh=6,...]   (tables, figures)
Several processes may share one results file (appends are locked; --reverse lets a second one
start from the other end).  The committed run: 138 cells, 5.1 hours summed over up to 6 parallel
processes on a shared 2-core CPU (70 minutes of wall time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import meanfield.torch as mft  # noqa: E402
import validate_training as vt  # noqa: E402
from meanfield._io import atomic_savefig, atomic_write  # noqa: E402
from meanfield.residual import advise_residual, iterate_residual  # noqa: E402

torch.set_num_threads(1)  # the CPU is small and shared

ACTS = ("tanh", "relu", "alpha_relu:0.75")
INITS = ("advised", "pytorch", "xavier", "he", "fixup", "skipinit")
CHANCE = 0.1
#: a final training loss above this (chance is log 10 = 2.3) counts as diverged, like a non-finite one
BLOWN_UP = 100.0
#: the fixed branch variance of each map (the other one is the map's axis), as advise_residual
FIXED_W2 = {"relu": 2.0, "alpha_relu:0.75": 1.0}


@dataclass(frozen=True)
class Settings:
    width: int = 128
    batch: int = 32
    steps: int = 100
    momentum: float = 0.9
    #: the learning-rate grid at depth lr_depth; at depth L it is scaled by (lr_depth / L)^(1/2)
    lrs: tuple[float, ...] = (0.001, 0.00316, 0.01, 0.0316)
    lr_depth: int = 10
    seeds: tuple[int, ...] = (0, 1)
    depths: tuple[int, ...] = (10, 20, 40, 100)
    grid: dict = field(
        default_factory=lambda: {
            "tanh": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
            "relu": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
            "alpha_relu:0.75": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
        }
    )
    h2h_depths: tuple[int, ...] = (10, 20, 40)
    #: extra advised cells at these budgets (nats), per activation, besides the default budget
    budgets: dict = field(default_factory=dict)

    def lr_grid(self, depth: int) -> list[float]:
        f = math.sqrt(self.lr_depth / depth)
        return [float(f"{lr * f:.4g}") for lr in self.lrs]

    def key(self) -> dict:
        d = asdict(self)
        d.pop("budgets")  # which extra cells to run, not how a cell runs
        d["grid"] = {k: list(v) for k, v in self.grid.items()}
        return json.loads(json.dumps(d))


TINY = dict(
    width=16,
    batch=16,
    steps=6,
    lrs=(0.01, 0.1),
    seeds=(0,),
    depths=(2, 3),
    grid={"tanh": (0.1, 1.0), "relu": (0.1, 1.0), "alpha_relu:0.75": (0.1, 1.0)},
    h2h_depths=(2,),
    lr_depth=2,
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def load_data() -> dict:
    """digits: train / validation / test tensors (validate_training's split, then 80/20)."""
    from sklearn.model_selection import train_test_split

    Xtr, ytr, Xte, yte = vt.load_data()
    itr, iva = train_test_split(
        np.arange(len(ytr)), test_size=0.2, stratify=ytr.numpy(), random_state=1
    )
    itr, iva = torch.tensor(itr), torch.tensor(iva)
    return {"train": (Xtr[itr], ytr[itr]), "val": (Xtr[iva], ytr[iva]), "test": (Xte, yte)}


# ------------------------------------------------------------------------------------------
# initialisations (one nn.Module per net, then stacked)
# ------------------------------------------------------------------------------------------


def _torch_act(act: str):
    if act == "tanh":
        return torch.tanh
    if act == "relu":
        return torch.relu
    if act.startswith("alpha_relu:"):
        a = float(act.split(":")[1])
        # clamp before the power: d/dh h^a is infinite at 0 and would give 0 * inf = NaN there
        return lambda h: torch.where(h > 0, h.clamp_min(1e-30).pow(a), 0.0)
    raise ValueError(f"unknown activation {act!r}")


def _traced_act(act: str) -> str:
    # the module only carries the weights; alpha-ReLU's weights are drawn like relu's
    return "tanh" if act == "tanh" else "relu"


def advised_variances(act: str, depth: int, budget: float | None, s: Settings) -> dict:
    adv = advise_residual("resnet-full", act, depth, width=s.width, budget=budget)
    return {
        "sigma_w2": adv.sigma_w2,
        "sigma_b2": adv.sigma_b2,
        "sigma_v2": adv.sigma_v2,
        "sigma_a2": adv.sigma_a2,
        "budget": adv.budget,
    }


def map_variances(act: str, value: float) -> dict:
    if act == "tanh":
        return {"sigma_w2": value, "sigma_b2": 0.0, "sigma_v2": 1.0, "sigma_a2": 0.0}
    w2 = FIXED_W2[act]
    return {"sigma_w2": w2, "sigma_b2": 0.0, "sigma_v2": value / w2, "sigma_a2": 0.0}


def init_net(act: str, depth: int, scheme: str, var: dict | None, seed: int, s: Settings) -> dict:
    """One net's weights, as (in, out) matrices, after the scheme's initialisation.

    ``scheme``: 'variances' (meanfield.torch.init_ with ``var``; also 'advised'), 'pytorch'
    (nn.Linear's default), 'xavier', 'he' (validate_training.apply_init: every Linear, zero
    biases), 'fixup' (Zhang et al. 2019, m = 2: He in W scaled by L^-1/2 in std, V and the
    readout zero, zero biases, a trainable branch multiplier at 1), 'skipinit' (De & Smith 2020 /
    ReZero: He in W and V, zero biases, a trainable branch multiplier at 0).
    """
    model = vt.build("resnet-full", _traced_act(act), depth, s.width, seed)
    gain = None
    if scheme in ("variances", "advised"):
        v = {k: var[k] for k in ("sigma_w2", "sigma_b2", "sigma_v2", "sigma_a2")}
        mft.init_(model, **v, seed=seed)
    elif scheme in ("xavier", "he"):
        vt.apply_init(model, scheme, "resnet-full", act, depth, s.width, seed)
    elif scheme == "fixup":
        mft.init_(model, sigma_w2=2.0 / depth, sigma_b2=0.0, sigma_v2=1.0, sigma_a2=0.0, seed=seed)
        with torch.no_grad():
            for blk in model.blocks:
                blk.v.weight.zero_()
            model.out.weight.zero_()
        gain = 1.0
    elif scheme == "skipinit":
        mft.init_(model, sigma_w2=2.0, sigma_b2=0.0, sigma_v2=2.0, sigma_a2=0.0, seed=seed)
        gain = 0.0
    elif scheme != "pytorch":
        raise ValueError(f"unknown scheme {scheme!r}")
    T = lambda lin: (lin.weight.detach().T.clone(), lin.bias.detach().clone())  # noqa: E731
    return {
        "inp": T(model.inp),
        "blocks": [(*T(b.w), *T(b.v)) for b in model.blocks],
        "out": T(model.out),
        "gain": gain,
    }


# ------------------------------------------------------------------------------------------
# the batched model: N independent nets, weights with a leading net axis
# ------------------------------------------------------------------------------------------


class Batched:
    def __init__(self, nets: list[dict], act: str):
        st = lambda ts: torch.stack(ts).requires_grad_(True)  # noqa: E731
        self.phi = _torch_act(act)
        self.inp = (st([n["inp"][0] for n in nets]), st([n["inp"][1][None] for n in nets]))
        self.blocks = []
        for l in range(len(nets[0]["blocks"])):
            self.blocks.append(tuple(
                st([n["blocks"][l][k] if k % 2 == 0 else n["blocks"][l][k][None] for n in nets])
                for k in range(4)
            ))
        self.out = (st([n["out"][0] for n in nets]), st([n["out"][1][None] for n in nets]))
        g = nets[0]["gain"]
        self.gains = None if g is None else [
            torch.full((len(nets), 1, 1), float(g), requires_grad=True) for _ in self.blocks
        ]

    def params(self) -> list[torch.Tensor]:
        ps = [*self.inp, *(p for b in self.blocks for p in b), *self.out]
        return ps + (self.gains or [])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, B, d) -> logits (N, B, k)."""
        h = torch.baddbmm(self.inp[1], x, self.inp[0])
        for l, (W, b, V, a) in enumerate(self.blocks):
            y = torch.baddbmm(a, self.phi(torch.baddbmm(b, h, W)), V)
            h = h + (y if self.gains is None else self.gains[l] * y)
        return torch.baddbmm(self.out[1], h, self.out[0])


def _per_net_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    N, B, k = logits.shape
    return F.cross_entropy(logits.reshape(N * B, k), y.reshape(N * B), reduction="none").view(
        N, B
    ).mean(1)


@torch.no_grad()
def _evaluate(model: Batched, X: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    N = model.inp[0].shape[0]
    logits = model(X.expand(N, *X.shape))
    loss = _per_net_loss(logits, y.expand(N, *y.shape))
    ok = torch.isfinite(logits).all(dim=2)
    acc = ((logits.argmax(2) == y) & ok).float().mean(1)
    return acc.numpy(), loss.numpy()


def train_cell(nets: list[dict], act: str, lrs: list[float], seeds: list[int], data: dict,
               s: Settings) -> list[dict]:
    """Train the nets of one cell together; net i has learning rate lrs[i] and seed seeds[i]."""
    model = Batched(nets, act)
    params = model.params()
    N = len(nets)
    Xtr, ytr = data["train"]
    n = Xtr.shape[0]
    lr = torch.tensor(lrs, dtype=torch.float32)
    bufs = [torch.zeros_like(p) for p in params]
    alive = torch.ones(N, dtype=torch.bool)
    diverged_at = [None] * N
    # each seed has its own batch order; the nets of one seed see the same batches
    gens = {sd: torch.Generator().manual_seed(30_000 + sd) for sd in set(seeds)}
    orders = {sd: [] for sd in gens}
    checkpoints = sorted({max(1, s.steps * k // 10) for k in range(1, 11)})
    curve, run_loss, run_cnt = [], torch.zeros(N), 0
    for step in range(1, s.steps + 1):
        batch_of = {}
        for sd in gens:
            if len(orders[sd]) < s.batch:
                orders[sd] = orders[sd] + torch.randperm(n, generator=gens[sd]).tolist()
            batch_of[sd], orders[sd] = orders[sd][: s.batch], orders[sd][s.batch :]
        idx = torch.tensor([batch_of[sd] for sd in seeds])
        logits = model(Xtr[idx])
        loss = _per_net_loss(logits, ytr[idx])
        bad = ~torch.isfinite(loss) & alive
        if bad.any():
            for i in torch.nonzero(bad).flatten().tolist():
                diverged_at[i] = step
            alive &= ~bad
            with torch.no_grad():  # a frozen net at zero weights stays finite (logits 0)
                for p, buf in zip(params, bufs):
                    p[~alive] = 0.0
                    buf[~alive] = 0.0
            if not alive.any():
                break
            logits = model(Xtr[idx])
            loss = _per_net_loss(logits, ytr[idx])
        for p in params:
            p.grad = None
        loss[alive].sum().backward()
        with torch.no_grad():
            keep = alive.float()
            for p, buf in zip(params, bufs):
                shape = (N,) + (1,) * (p.dim() - 1)
                buf.mul_(s.momentum).add_(p.grad)
                p.sub_((lr * keep).view(shape) * buf)
            run_loss += torch.where(alive, loss.detach(), torch.zeros(N))
            run_cnt += 1
        if step in checkpoints:
            curve.append([step, (run_loss / run_cnt).tolist()])
            run_loss, run_cnt = torch.zeros(N), 0
    results = []
    va, _ = _evaluate(model, *data["val"])
    te, _ = _evaluate(model, *data["test"])
    _, trl = _evaluate(model, *data["train"])
    for i in range(N):
        div = diverged_at[i] is not None or not float(trl[i]) <= BLOWN_UP
        results.append({
            "lr": lrs[i],
            "seed": seeds[i],
            "diverged": bool(div),
            "diverged_step": diverged_at[i],
            "val_acc": CHANCE if div else float(va[i]),
            "test_acc": CHANCE if div else float(te[i]),
            "train_loss": None if div else float(trl[i]),
            "loss_curve": [[c[0], None if diverged_at[i] and c[0] >= diverged_at[i] else c[1][i]]
                           for c in curve],
        })
    return results


def summarise(runs: list[dict], lrs) -> dict:
    """Choose the learning rate by mean validation accuracy (diverged = chance); its test accuracy."""
    by = {lr: [r for r in runs if r["lr"] == lr] for lr in lrs}
    score = {lr: (np.mean([r["val_acc"] for r in rs]),
                  -np.mean([r["train_loss"] if r["train_loss"] is not None else 1e9 for r in rs]))
             for lr, rs in by.items()}
    best = max(lrs, key=lambda lr: score[lr])
    te = np.array([r["test_acc"] for r in by[best]])
    return {
        "best_lr": best,
        "best_lr_at_edge": best in (min(lrs), max(lrs)),
        "val_acc": float(score[best][0]),
        "test_mean": float(te.mean()),
        "test_sd": float(te.std(ddof=1)) if len(te) > 1 else 0.0,
        "test_accs": te.tolist(),
        "diverged": int(sum(r["diverged"] for r in by[best])),
        "diverged_all_lrs": int(sum(r["diverged"] for r in runs)),
        "n_runs": len(runs),
        "train_loss": [r["train_loss"] for r in by[best]],
    }


# ------------------------------------------------------------------------------------------
# cells, results file
# ------------------------------------------------------------------------------------------


def _extremes_first(depths) -> list[int]:
    # a run cut short keeps the shallowest and deepest columns
    d = list(depths)
    return d[:1] + d[-1:] + d[1:-1] if len(d) > 1 else d


def cell_list(part: str, acts, s: Settings) -> list[dict]:
    cells = []
    if part in ("maps", "all"):
        for act in acts:
            for depth in _extremes_first(s.depths):
                for v in s.grid[act]:
                    cells.append({"part": "maps", "act": act, "depth": depth, "value": v})
    if part in ("h2h", "all"):
        # depth-major, so that a run cut short has every initialisation at its depths
        for depth in _extremes_first(s.h2h_depths):
            for init in [i for i in INITS if i != "advised"] + ["advised"]:
                for act in acts:
                    cells.append({"part": "h2h", "act": act, "depth": depth, "init": init})
            for act in acts:
                for g in s.budgets.get(act, ()):
                    cells.append({"part": "h2h", "act": act, "depth": depth,
                                  "init": f"advised:{g:g}"})
    return cells


def cell_id(c: dict) -> str:
    tail = f"value={c['value']:g}" if c["part"] == "maps" else f"init={c['init']}"
    return f"{c['part']}/{c['act']}/L={c['depth']}/{tail}"


def load_results(path: str, s: Settings) -> dict:
    if os.path.exists(path):
        with open(path) as fh:
            res = json.load(fh)
        if res.get("settings") != s.key():
            raise SystemExit(
                f"{path} was written with other settings; remove it or pass another --out"
            )
        return res
    return {"settings": s.key(), "cells": {}}


def save_results(path: str, res: dict) -> None:
    atomic_write(path, lambda tmp: open(tmp, "w").write(json.dumps(res, indent=1)))


def append_cell(path: str, s: Settings, cid: str, cell: dict) -> None:
    """Add one finished cell under a lock: a maps run and an h2h run may share the file."""
    import fcntl

    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = load_results(path, s)
        res["cells"][cid] = cell
        save_results(path, res)


def run_cell(c: dict, data: dict, s: Settings) -> dict:
    t0 = time.time()
    act, depth = c["act"], c["depth"]
    if c["part"] == "maps":
        var, scheme = map_variances(act, c["value"]), "variances"
    else:
        scheme = c["init"]
        var = None
        if scheme.startswith("advised"):
            budget = float(scheme.split(":")[1]) if ":" in scheme else None
            scheme, var = "advised", advised_variances(act, depth, budget, s)
    grid = s.lr_grid(depth)
    lrs = [lr for lr in grid for _ in s.seeds]
    seeds = [sd for _ in grid for sd in s.seeds]
    nets = [init_net(act, depth, scheme, var, sd, s) for sd in seeds]
    t1 = time.time()
    runs = train_cell(nets, act, lrs, seeds, data, s)
    out = dict(c)
    if var is not None:
        out["variances"] = var
    out["lr_grid"] = grid
    out.update(summarise(runs, grid))
    out["runs"] = runs
    out["seconds_init"] = t1 - t0
    out["seconds"] = time.time() - t0
    return out


# ------------------------------------------------------------------------------------------
# theory: contour fields from meanfield.residual
# ------------------------------------------------------------------------------------------


def theory_metric(act: str, value: float, depth: int) -> dict:
    """iterate_residual at a map point: log explosion, log s^L, log p^L (p^0 = 1, c^0 = 0.5)."""
    v = map_variances(act, value)
    T = iterate_residual("resnet-full", act, v["sigma_w2"], v["sigma_b2"], depth,
                         sigma_v2=v["sigma_v2"], sigma_a2=v["sigma_a2"], p0=1.0, c0=0.5,
                         every=depth)
    return {"log_explosion": T.log_explosion, "log_s_L": float(T.log_s[-1]),
            "log_p_L": float(T.log_p[-1])}


def contour_key(act: str) -> str:
    return "log_explosion" if act == "tanh" else "log_s_L"


def budget_key(act: str) -> str:
    """The quantity advise_residual budgets: the gradient explosion (tanh, relu), log p^L
    (alpha-ReLU, 1/2 < alpha < 1)."""
    return "log_p_L" if act.startswith("alpha_relu") else "log_explosion"


def map_value(act: str, v: dict) -> float:
    """A point's coordinate on the map's axis."""
    return v["sigma_w2"] if act == "tanh" else v["sigma_v2"] * v["sigma_w2"]


def advised_curve(act: str, budget: float | None, depths) -> list[float]:
    return [map_value(act, advised_variances(act, int(d), budget, Settings())) for d in depths]


# ------------------------------------------------------------------------------------------
# report: figures and tables
# ------------------------------------------------------------------------------------------


def _cells(res, **m):
    return [c for c in res["cells"].values() if all(c.get(k) == v for k, v in m.items())]


def map_table(res: dict, act: str, s: Settings) -> dict:
    D, V = list(s.depths), list(s.grid[act])
    acc = np.full((len(V), len(D)), np.nan)
    for c in _cells(res, part="maps", act=act):
        if c["depth"] in D and c["value"] in V:
            acc[V.index(c["value"]), D.index(c["depth"])] = c["test_mean"]
    return {"D": D, "V": V, "acc": acc}


def best_levels(res: dict, act: str, s: Settings) -> list[dict]:
    """Per depth: the best cell and the theory's metric there (and across near-best cells)."""
    t = map_table(res, act, s)
    rows = []
    for j, d in enumerate(t["D"]):
        col = t["acc"][:, j]
        if np.all(np.isnan(col)):
            continue
        i = int(np.nanargmax(col))
        c = _cells(res, part="maps", act=act, depth=d, value=t["V"][i])[0]
        near = [t["V"][k] for k in range(len(col))
                if np.isfinite(col[k]) and col[k] >= col[i] - 2 * max(c["test_sd"], 0.005)]
        th = theory_metric(act, t["V"][i], d)
        lv = [theory_metric(act, v, d)[contour_key(act)] for v in near]
        bv = [theory_metric(act, v, d)[budget_key(act)] for v in near]
        rows.append({"depth": d, "best_value": t["V"][i], "acc": col[i], "sd": c["test_sd"],
                     "best_lr": c["best_lr"], "best_lr_at_edge": c["best_lr_at_edge"], **th,
                     "near_values": near, "near_level_range": (min(lv), max(lv)),
                     "near_budget_range": (min(bv), max(bv))})
    return rows


def figure_map(res: dict, act: str, s: Settings, path: str, fine: int = 25,
               budgets=()) -> None:
    from meanfield.plot import _plt

    plt = _plt()
    t = map_table(res, act, s)
    D, V, acc = t["D"], t["V"], t["acc"]
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    im = ax.imshow(acc, origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                   extent=(-0.5, len(D) - 0.5, -0.5, len(V) - 0.5))
    for i in range(len(V)):
        for j in range(len(D)):
            if np.isfinite(acc[i, j]):
                c = _cells(res, part="maps", act=act, depth=D[j], value=V[i])[0]
                txt = f"{acc[i, j]:.2f}" + ("\n(div)" if c["diverged"] == len(c["test_accs"]) else "")
                ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                        color="w" if acc[i, j] < 0.6 else "k")
    for j in range(len(D)):
        col = acc[:, j]
        if not np.all(np.isnan(col)):
            ax.plot(j, int(np.nanargmax(col)), "s", mfc="none", mec="r", ms=16, mew=1.5)
    # theory field on a finer grid, in grid coordinates (log value, log depth interpolated)
    lv = np.linspace(np.log(V[0]), np.log(V[-1]), fine)
    dd = sorted(set(np.unique(np.round(np.geomspace(D[0], D[-1], 7)).astype(int)).tolist()) | set(D))
    Z = np.array([[theory_metric(act, float(np.exp(x)), int(d))[contour_key(act)] for d in dd]
                  for x in lv])
    xs = np.interp(np.log(dd), np.log(D), np.arange(len(D)))
    ys = np.interp(lv, np.log(V), np.arange(len(V)))
    zmin, zmax = np.nanmin(Z), np.nanmax(Z)
    levels = [z for z in (0.5, 1, 2, 3, 4, 6, 10, 20, 50) if zmin < z < zmax]
    cs = ax.contour(xs, ys, Z, levels=levels, colors="w", linewidths=1.0, linestyles="--")
    ax.clabel(cs, fmt="%g", fontsize=7)
    for k, g in enumerate([None, *budgets]):
        cv = advised_curve(act, g, dd)
        ax.plot(xs, np.interp(np.log(cv), np.log(V), np.arange(len(V)), left=np.nan, right=np.nan),
                "-", color=("C1", "C3", "C6")[k % 3], lw=2.0,
                label=f"advise_residual, budget {advised_variances(act, 10, g, s)['budget']:g} nats"
                + (" (default)" if g is None else ""))
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax.set_xticks(range(len(D)), [str(d) for d in D])
    ax.set_yticks(range(len(V)), [f"{v:g}" for v in V])
    ax.set_xlabel("depth L (residual blocks)")
    if act == "tanh":
        ax.set_ylabel("sigma_w2 (sigma_v2 = 1, no biases)")
        what = "contours: gradient explosion log(chi^0/chi^L), nats"
    else:
        ax.set_ylabel(f"sigma_v2 sigma_w2 (sigma_w2 = {FIXED_W2[act]:g}, no biases)")
        what = "contours: log squared distance log s^L (p^0 = 1, c^0 = 0.5)"
    ax.set_title(f"{act} full ResNets, digits: test accuracy at the best lr\n{what}", fontsize=9)
    fig.colorbar(im, ax=ax, label="test accuracy (mean of seeds; diverged = 0.1)")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def report(res: dict, s: Settings, acts, fig_dir: str | None) -> str:
    """Markdown tables of the maps (with the theory at the best cells) and the head-to-head."""
    out = []
    for act in acts:
        t = map_table(res, act, s)
        if np.all(np.isnan(t["acc"])):
            continue
        out.append(f"\n### map {act}: test accuracy (mean over seeds, best lr)\n")
        out.append("| value | " + " | ".join(f"L={d}" for d in t["D"]) + " |")
        out.append("|---:|" + "---:|" * len(t["D"]))
        for v in t["V"]:
            cells = []
            for d in t["D"]:
                cc = _cells(res, part="maps", act=act, depth=d, value=v)
                if not cc:
                    cells.append("")
                    continue
                c = cc[0]
                dv = f" ({c['diverged']}/{len(c['test_accs'])} div)" if c["diverged"] else ""
                cells.append(f"{c['test_mean']:.3f} ± {c['test_sd']:.3f} @{c['best_lr']:g}{dv}")
            out.append(f"| {v:g} | " + " | ".join(cells) + " |")
        out.append("\n| depth | best value | acc | best lr | log explosion | log s^L | log p^L | "
                   "near-best values (within 2 sd) | their log s^L / contour | their budget metric |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
        rows = best_levels(res, act, s)
        for r in rows:
            lo, hi = r["near_level_range"]
            blo, bhi = r["near_budget_range"]
            edge = " (edge)" if r["best_lr_at_edge"] else ""
            out.append(f"| {r['depth']} | {r['best_value']:g} | {r['acc']:.3f} ± {r['sd']:.3f} | "
                       f"{r['best_lr']:g}{edge} | {r['log_explosion']:.2f} | {r['log_s_L']:.2f} | "
                       f"{r['log_p_L']:.2f} | {', '.join(f'{v:g}' for v in r['near_values'])} | "
                       f"{lo:.2f} .. {hi:.2f} | {blo:.2f} .. {bhi:.2f} |")
        if rows:
            m = [r[budget_key(act)] for r in rows]
            out.append(f"\n{budget_key(act)} at the best cells: median {np.median(m):.2f}, "
                       f"range {min(m):.2f} .. {max(m):.2f} over depths {[r['depth'] for r in rows]}")
        if fig_dir:
            figure_map(res, act, s, os.path.join(fig_dir, f"residual_heatmap_{act.split(':')[0]}.png"),
                       budgets=s.budgets.get(act, ()))
    h = _cells(res, part="h2h")
    if h:
        out.append("\n### head-to-head: test accuracy at each init's best lr\n")
        inits = list(INITS) + sorted({c["init"] for c in h} - set(INITS))
        out.append("| act | depth | " + " | ".join(inits) + " |")
        out.append("|---|---:|" + "---|" * len(inits))
        for act in acts:
            for d in s.h2h_depths:
                row = []
                for init in inits:
                    cc = _cells(res, part="h2h", act=act, depth=d, init=init)
                    if not cc:
                        row.append("")
                        continue
                    c = cc[0]
                    dv = f", {c['diverged_all_lrs']}/{c['n_runs']} div" if c["diverged_all_lrs"] else ""
                    row.append(f"{c['test_mean']:.3f} ± {c['test_sd']:.3f} (lr {c['best_lr']:g}{dv})")
                if any(row):
                    out.append(f"| {act} | {d} | " + " | ".join(row) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("maps", "h2h", "all"), default="all")
    ap.add_argument("--act", default=",".join(ACTS), help="comma-separated activations")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    ap.add_argument("--out", default=None, help="results file (default docs/residual_validation.json;"
                    " --tiny: /tmp/residual_validation_tiny.json)")
    ap.add_argument("--report", action="store_true", help="figures and tables only, no training")
    ap.add_argument("--figures", default=None, help="figure folder for --report (default figures/; 'none': no figures)")
    ap.add_argument("--max-cells", type=int, default=None, help="stop after this many new cells")
    ap.add_argument("--inits", default=",".join(INITS), help="comma-separated head-to-head "
                    "initialisations (" + ", ".join(INITS) + ")")
    ap.add_argument("--reverse", action="store_true",
                    help="run the cells in reverse order (a second process meets the first halfway)")
    ap.add_argument("--depths", default="", help="comma-separated depths to run (default: all)")
    ap.add_argument("--budgets", default="", help="extra advised budgets, e.g. "
                    "'tanh=2,relu=1' (nats; advised:G cells in the head-to-head)")
    args = ap.parse_args(argv)
    acts = [a.strip() for a in args.act.split(",") if a.strip()]
    inits = [a.strip() for a in args.inits.split(",") if a.strip()]
    for a in inits:
        if a not in INITS:
            ap.error(f"--inits: unknown initialisation {a!r} (choose from {', '.join(INITS)})")
    for a in acts:
        if a not in ACTS:
            ap.error(f"--act: unknown activation {a!r} (choose from {', '.join(ACTS)})")
    budgets: dict = {}
    for item in filter(None, (x.strip() for x in args.budgets.split(","))):
        name, _, val = item.partition("=")
        try:
            g = float(val)
        except ValueError:
            g = float("nan")
        if name not in ACTS or not (math.isfinite(g) and g > 0):
            ap.error(f"--budgets: bad item {item!r} (want ACT=NATS, NATS > 0)")
        budgets.setdefault(name, []).append(g)
    s = Settings(**TINY, budgets=budgets) if args.tiny else Settings(budgets=budgets)
    out = args.out or (
        "/tmp/residual_validation_tiny.json" if args.tiny
        else os.path.join(ROOT, "docs", "residual_validation.json")
    )
    res = load_results(out, s)
    if args.report:
        fig_dir = None if args.figures == "none" else args.figures or os.path.join(ROOT, "figures")
        print(report(res, s, acts, fig_dir))
        return 0
    data = load_data()
    try:
        depths = {int(d) for d in args.depths.split(",") if d.strip()}
    except ValueError:
        ap.error(f"--depths: want comma-separated integers, got {args.depths!r}")
    # advised:G cells (--budgets) always run; the others when --inits names them
    todo = [c for c in cell_list(args.part, acts, s) if cell_id(c) not in res["cells"]
            and (c["part"] == "maps" or ":" in c["init"] or c["init"] in inits)
            and (not depths or c["depth"] in depths)]
    if args.reverse:
        todo.reverse()
    log(f"{len(todo)} cells to run ({out})")
    for k, c in enumerate(todo):
        if args.max_cells is not None and k >= args.max_cells:
            break
        if cell_id(c) in load_results(out, s)["cells"]:
            continue  # another process ran it meanwhile
        r = run_cell(c, data, s)
        append_cell(out, s, cell_id(c), r)
        log(f"{cell_id(c):40s} test {r['test_mean']:.3f} ± {r['test_sd']:.3f} lr {r['best_lr']:g} "
            f"div {r['diverged_all_lrs']}/{r['n_runs']} "
            f"loss {r['train_loss']} {r['seconds']:.1f}s (init {r['seconds_init']:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
