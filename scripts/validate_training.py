"""Does the advice train where the defaults fail?  Deep MLPs and full residual nets on real data.

Not run in CI (it trains ~200 networks); its outputs are committed:
docs/validation.md (settings, tables, what the advice does not do), docs/validation.json (every
run), figures/validation_depth.png and figures/validation_resnet_grid.png.

Data: scikit-learn's handwritten digits (load_digits: 1797 images of 8x8, shipped offline), a
fixed stratified 70/30 split, features standardised with the training set's statistics.
scikit-learn is needed by this script only (``pip install scikit-learn``), not by meanfield.

Experiment 1 (figures/validation_depth.png): tanh and relu MLPs and full residual nets at
depths 10, 50, 200, width 128, with four initialisations -- (a) meanfield's advice applied by
meanfield.torch.init_, (b) PyTorch's default, (c) Xavier/Glorot normal, (d) He/Kaiming normal
(fan-in), zero biases for (c), (d) -- the same optimiser, epochs and seeds.  For every run the
gradient-norm ratio at initialisation (mean squared backpropagated gradient at the first layer /
at the top) is measured with meanfield.torch.compare and predicted by the theory from the
variances the weights carry.

Experiment 2 (figures/validation_resnet_grid.png): tanh full residual nets over a grid of
sigma_w2 and depth (sigma_v2 = 1, sigma_b2 = sigma_a2 = 0), the Yang & Schoenholz (2017)
experiment, with the curve meanfield.residual.advise_residual predicts (sigma_w ~ L^(-1/2)).

Usage: python scripts/validate_training.py [--quick]   (--quick: a tiny smoke run, outputs in /tmp)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import meanfield.torch as mft  # noqa: E402
from meanfield._io import atomic_savefig, atomic_write  # noqa: E402
from meanfield.advise import advise  # noqa: E402

torch.set_num_threads(1)  # the CPU is small and shared


@dataclass(frozen=True)
class Settings:
    width: int = 128
    depths: tuple[int, ...] = (10, 50, 200)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 2
    batch: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    grid_depths: tuple[int, ...] = (10, 30, 100)
    grid_sigma_w2: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    grid_seeds: tuple[int, ...] = (0,)
    n_probe: int = 16


ARCHS = (("mlp", "tanh"), ("mlp", "relu"), ("resnet-full", "tanh"), ("resnet-full", "relu"))
INITS = ("advised", "pytorch", "xavier", "he")
ACTS = {"tanh": torch.tanh, "relu": torch.relu}


# ------------------------------------------------------------------------------------------
# data and models
# ------------------------------------------------------------------------------------------


def load_data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd[sd == 0] = 1.0
    f = lambda a: torch.tensor((a - mu) / sd, dtype=torch.float32)  # noqa: E731
    return f(Xtr), torch.tensor(ytr), f(Xte), torch.tensor(yte)


class MLP(nn.Module):
    def __init__(self, act: str, depth: int, width: int, d: int = 64, k: int = 10):
        super().__init__()
        sizes = [d] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(width, k)
        self.act = ACTS[act]

    def forward(self, x):
        for layer in self.layers:
            x = self.act(layer(x))
        return self.out(x)


class Block(nn.Module):
    def __init__(self, act: str, width: int):
        super().__init__()
        self.w, self.v = nn.Linear(width, width), nn.Linear(width, width)
        self.act = ACTS[act]

    def forward(self, x):
        return x + self.v(self.act(self.w(x)))


class ResNet(nn.Module):
    def __init__(self, act: str, depth: int, width: int, d: int = 64, k: int = 10):
        super().__init__()
        self.inp = nn.Linear(d, width)
        self.blocks = nn.Sequential(*[Block(act, width) for _ in range(depth)])
        self.out = nn.Linear(width, k)

    def forward(self, x):
        return self.out(self.blocks(self.inp(x)))


def build(arch: str, act: str, depth: int, width: int, seed: int) -> nn.Module:
    torch.manual_seed(10_000 + seed)  # PyTorch's default init draws from the global generator
    return MLP(act, depth, width) if arch == "mlp" else ResNet(act, depth, width)


_ADVICE: dict = {}


def get_advice(arch: str, act: str, depth: int, width: int):
    key = (arch, act, depth)
    if key not in _ADVICE:
        _ADVICE[key] = advise(arch, activation=act, depth=depth, width=width)
    return _ADVICE[key]


def apply_init(
    model: nn.Module, scheme: str, arch: str, act: str, depth: int, width: int, seed: int
) -> None:
    if scheme == "pytorch":
        return
    if scheme == "advised":
        mft.init_(model, get_advice(arch, act, depth, width), seed=seed)
        return
    g = torch.Generator().manual_seed(20_000 + seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                if scheme == "xavier":
                    nn.init.xavier_normal_(m.weight, generator=g)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
                nn.init.zeros_(m.bias)


def train(model: nn.Module, data, s: Settings, seed: int, epochs: int | None = None) -> dict:
    Xtr, ytr, Xte, yte = data
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum)
    g = torch.Generator().manual_seed(30_000 + seed)
    n = Xtr.shape[0]
    diverged = False
    for _ in range(epochs or s.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, s.batch):
            idx = perm[i : i + s.batch]
            loss = F.cross_entropy(model(Xtr[idx]), ytr[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if diverged:
            break
    with torch.no_grad():
        logits = model(Xte)
        ok = torch.isfinite(logits).all(dim=1)
        acc = float(((logits.argmax(1) == yte) & ok).float().mean())
        train_loss = float(F.cross_entropy(model(Xtr), ytr)) if not diverged else float("nan")
    return {"test_acc": acc, "train_loss": train_loss, "diverged": diverged or not bool(ok.all())}


def gradient_ratio(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """log10 (mean squared gradient at the first layer / at the top): measured, predicted."""
    cmp = mft.compare(model, x, pairs=[(0, 1)])
    return cmp.measured.log10_gradient_ratio, cmp.predicted.log10_gradient_ratio


# ------------------------------------------------------------------------------------------
# experiments
# ------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def experiment_depth(data, s: Settings) -> list[dict]:
    probe = data[2][: s.n_probe]
    runs = []
    for arch, act in ARCHS:
        for depth in s.depths:
            for scheme in INITS:
                for seed in s.seeds:
                    t0 = time.time()
                    model = build(arch, act, depth, s.width, seed)
                    apply_init(model, scheme, arch, act, depth, s.width, seed)
                    try:
                        meas, pred = gradient_ratio(model, probe)
                    except Exception as exc:  # noqa: BLE001 - a failed measurement is recorded, not fatal
                        meas, pred = float("nan"), float("nan")
                        log(f"  gradient ratio failed: {exc}")
                    res = train(model, data, s, seed)
                    run = {
                        "arch": arch,
                        "activation": act,
                        "depth": depth,
                        "init": scheme,
                        "seed": seed,
                        "log10_grad_ratio_measured": meas,
                        "log10_grad_ratio_predicted": pred,
                        **res,
                        "seconds": time.time() - t0,
                    }
                    if scheme == "advised":
                        adv = get_advice(arch, act, depth, s.width)
                        run["sigma_w2"], run["sigma_b2"] = adv.sigma_w2, adv.sigma_b2
                        run["sigma_v2"] = getattr(adv, "sigma_v2", None)
                    runs.append(run)
                    log(
                        f"{arch:11s} {act:4s} L={depth:3d} {scheme:7s} seed {seed}: acc {res['test_acc']:.3f} "
                        f"grad ratio 10^{meas:.2f} (theory 10^{pred:.2f}) {time.time() - t0:.1f}s"
                    )
    return runs


def experiment_grid(data, s: Settings) -> tuple[list[dict], list[dict]]:
    from meanfield.residual import iterate_residual

    runs = []
    for depth in s.grid_depths:
        for sw2 in s.grid_sigma_w2:
            for seed in s.grid_seeds:
                t0 = time.time()
                model = build("resnet-full", "tanh", depth, s.width, seed)
                mft.init_(model, sigma_w2=sw2, sigma_b2=0.0, sigma_v2=1.0, sigma_a2=0.0, seed=seed)
                res = train(model, data, s, seed)
                tr = iterate_residual(
                    "resnet-full", "tanh", sw2, 0.0, depth, sigma_v2=1.0, sigma_a2=0.0, cosine=False
                )
                runs.append(
                    {
                        "depth": depth,
                        "sigma_w2": sw2,
                        "seed": seed,
                        **res,
                        "log_explosion": tr.log_explosion,
                        "seconds": time.time() - t0,
                    }
                )
                log(
                    f"grid L={depth:3d} sigma_w2={sw2:<5g} seed {seed}: acc {res['test_acc']:.3f} "
                    f"{time.time() - t0:.1f}s"
                )
    from meanfield.residual import advise_residual

    curve = []
    for depth in sorted(set(s.grid_depths) | {5, 15, 20, 50, 70, 150, 200}):
        adv = advise_residual(
            "resnet-full", "tanh", depth, sigma_b2=0.0, sigma_v2=1.0, sigma_a2=0.0
        )
        curve.append({"depth": depth, "sigma_w2": adv.sigma_w2, "budget": adv.budget})
    return runs, curve


# ------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------


def _agg(runs, **match):
    sel = [r for r in runs if all(r[k] == v for k, v in match.items())]
    return sel


def _fmt_acc(sel) -> str:
    a = np.array([r["test_acc"] for r in sel])
    div = sum(r["diverged"] for r in sel)
    txt = f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f}"
    return txt + (f" ({div}/{len(sel)} diverged)" if div else "")


def _fmt_ratio(vals) -> str:
    v = np.array(vals, dtype=float)
    if not np.all(np.isfinite(v)):
        return "overflow" if np.all(~np.isfinite(v)) else f"{np.nanmean(v):.1f} (some overflow)"
    return f"{v.mean():.1f}"


def _epochs(s: Settings) -> str:
    return f"{s.epochs} epoch{'s' if s.epochs != 1 else ''}"


def figure_depth(runs, s: Settings, path: str) -> None:
    from meanfield.plot import _plt

    plt = _plt()
    fig, axes = plt.subplots(2, len(ARCHS), figsize=(4.0 * len(ARCHS), 6.6), sharex=True)
    colors = {"advised": "C3", "pytorch": "C0", "xavier": "C2", "he": "C1"}
    for j, (arch, act) in enumerate(ARCHS):
        ax, bx = axes[0, j], axes[1, j]
        for scheme in INITS:
            acc_m, acc_s, meas, pred = [], [], [], []
            for depth in s.depths:
                sel = _agg(runs, arch=arch, activation=act, depth=depth, init=scheme)
                a = np.array([r["test_acc"] for r in sel])
                acc_m.append(a.mean())
                acc_s.append(a.std(ddof=1) if len(a) > 1 else 0.0)
                meas.append(np.mean([r["log10_grad_ratio_measured"] for r in sel]))
                pred.append(np.mean([r["log10_grad_ratio_predicted"] for r in sel]))
            ax.errorbar(
                s.depths,
                acc_m,
                yerr=acc_s,
                marker="o",
                ms=4,
                capsize=3,
                color=colors[scheme],
                label=scheme,
            )
            bx.plot(s.depths, pred, "-", color=colors[scheme], lw=1.2)
            bx.plot(s.depths, meas, "o", color=colors[scheme], ms=4)
        ax.set_title(f"{'MLP' if arch == 'mlp' else 'full ResNet'}, {act}", fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.axhline(0.1, color="0.6", lw=0.8, ls=":")
        ax.set_xscale("log")
        bx.set_xscale("log")
        bx.set_xlabel("depth")
        bx.axhline(0.0, color="0.6", lw=0.8, ls=":")
        if j == 0:
            ax.set_ylabel(f"test accuracy after {_epochs(s)}")
            bx.set_ylabel("log10 gradient ratio first/top\n(markers measured, lines theory)")
            ax.legend(frameon=False, fontsize=8, loc="lower left")
    fig.suptitle("load_digits: test accuracy and gradient ratio at initialisation", fontsize=11)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def figure_grid(runs, curve, s: Settings, path: str) -> None:
    from meanfield.plot import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 4.9))
    D, W = list(s.grid_depths), list(s.grid_sigma_w2)
    acc = np.array(
        [
            [
                np.mean([r["test_acc"] for r in runs if r["depth"] == d and r["sigma_w2"] == w])
                for d in D
            ]
            for w in W
        ]
    )
    im = ax.imshow(
        acc,
        origin="lower",
        aspect="auto",
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        extent=(-0.5, len(D) - 0.5, -0.5, len(W) - 0.5),
    )
    for i in range(len(W)):
        for j in range(len(D)):
            ax.text(
                j,
                i,
                f"{acc[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="w" if acc[i, j] < 0.6 else "k",
            )
    best = acc.argmax(axis=0)
    ax.plot(
        range(len(D)),
        best,
        "s",
        mfc="none",
        mec="r",
        ms=14,
        mew=1.5,
        label="best sigma_w2 per depth",
    )
    # the advised curve, in grid coordinates (log sigma_w2, log depth interpolated)
    lw, ld = np.log(W), np.log(D)
    cd = np.array([c["depth"] for c in curve], dtype=float)
    cw = np.array([c["sigma_w2"] for c in curve])
    keep = (cd >= D[0]) & (cd <= D[-1])
    xs = np.interp(np.log(cd[keep]), ld, np.arange(len(D)))
    ys = np.interp(np.log(cw[keep]), lw, np.arange(len(W)))
    ax.plot(xs, ys, "-", color="C1", lw=2.5, label="advise_residual: sigma_w2 ~ 1/L")
    ax.set_xticks(range(len(D)), [str(d) for d in D])
    ax.set_yticks(range(len(W)), [f"{w:g}" for w in W])
    ax.set_xlabel("depth L (residual blocks)")
    ax.set_ylabel("sigma_w2 (sigma_v2 = 1, no biases)")
    ax.set_title(f"tanh full ResNets on load_digits: test accuracy after {_epochs(s)}", fontsize=10)
    fig.colorbar(im, ax=ax, label="test accuracy")
    ax.legend(frameon=True, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def write_markdown(runs, grid, curve, s: Settings, seconds: float, path: str) -> None:
    L = []
    L.append("# Validation: does the advice train where the defaults fail?\n")
    L.append(
        "Generated by `scripts/validate_training.py` (not run in CI); every number below comes from "
        "`docs/validation.json`, written by the same run.\n"
    )
    L.append("## Settings\n")
    L.append(
        f"- Data: scikit-learn `load_digits` (1797 images of 8x8, 10 classes), stratified 70/30 split "
        f"(`random_state=0`), features standardised with the training statistics.\n"
        f"- Models: MLPs with `depth` hidden layers of width {s.width} and a linear readout; full residual "
        f"nets `x + V phi(W x + b) + a` with `depth` blocks of width {s.width}, a linear stem and readout.\n"
        f"- Initialisations: (a) `advised`: `meanfield.torch.init_(model, advise(arch, act, depth))`; (b) "
        f"`pytorch`: the layers' default (`kaiming_uniform(a=sqrt(5))`, sigma_w2 = 1/3); (c) `xavier`: "
        f"`xavier_normal_`, zero bias; (d) `he`: `kaiming_normal_(nonlinearity='relu')`, zero bias. (c) and "
        f"(d) are applied to every Linear layer, residual branches included.\n"
        f"- Training: SGD, lr {s.lr}, momentum {s.momentum}, batch {s.batch}, {s.epochs} epochs, "
        f"({math.ceil(1258 / s.batch) * s.epochs} steps), cross-entropy, float32, one CPU thread; seeds {list(s.seeds)} (model, init and data order).\n"
        f"- Gradient ratio: at initialisation, on {s.n_probe} test inputs, the mean squared backpropagated "
        f"gradient at the first layer over that at the top (MLP: dE/dh at the first layer / at the "
        f"readout; ResNet: dE/dx^0 / dE/dx^L), with E = r . f(x) for a random r "
        f"(`meanfield.torch.compare`). The theory column is the mean-field prediction for the variances "
        f"the weights actually carry (read from the weights for (b)-(d)): MATH.md 1.5 for MLPs, "
        f"`iterate_residual` (MATH.md 2.3) for ResNets.\n"
        f"- Budget: the whole script ran in {seconds / 60:.1f} minutes on a shared 2-core CPU, hence the "
        f"small width, few epochs and single learning rate.\n"
    )
    L.append("## Test accuracy and gradient ratio by depth\n")
    L.append(
        "Accuracy: mean ± sd over seeds (chance is 0.10). Gradient ratio: log10, measured / theory, "
        "mean over seeds.\n"
    )
    L.append(
        "| model | depth | "
        + " | ".join(f"{i} acc" for i in INITS)
        + " | "
        + " | ".join(f"{i} log10 ratio" for i in INITS)
        + " |"
    )
    L.append("|---|---:|" + "---|" * (2 * len(INITS)))
    for arch, act in ARCHS:
        for depth in s.depths:
            accs, ratios = [], []
            for scheme in INITS:
                sel = _agg(runs, arch=arch, activation=act, depth=depth, init=scheme)
                accs.append(_fmt_acc(sel))
                ratios.append(
                    f"{_fmt_ratio([r['log10_grad_ratio_measured'] for r in sel])} / "
                    f"{_fmt_ratio([r['log10_grad_ratio_predicted'] for r in sel])}"
                )
            name = f"{'MLP' if arch == 'mlp' else 'ResNet'} {act}"
            L.append(
                f"| {name} | {depth} | " + " | ".join(accs) + " | " + " | ".join(ratios) + " |"
            )
    L.append("")
    L.append("Advised variances used:\n")
    L.append("| model | depth | sigma_w2 | sigma_b2 | sigma_v2 |")
    L.append("|---|---:|---:|---:|---:|")
    for arch, act in ARCHS:
        for depth in s.depths:
            adv = get_advice(arch, act, depth, s.width)
            sv = getattr(adv, "sigma_v2", None)
            L.append(
                f"| {'MLP' if arch == 'mlp' else 'ResNet'} {act} | {depth} | {adv.sigma_w2:.4g} | "
                f"{adv.sigma_b2:.3g} | {'' if sv is None else f'{sv:.4g}'} |"
            )
    L.append("")
    L.append("![test accuracy and gradient ratio by depth](../figures/validation_depth.png)\n")
    L.append("## Tanh residual nets: sigma_w2 x depth (Yang & Schoenholz 2017)\n")
    L.append(
        f"Full residual tanh nets, sigma_v2 = 1, sigma_b2 = sigma_a2 = 0, sigma_w2 in "
        f"{list(s.grid_sigma_w2)}, depths {list(s.grid_depths)}, seeds {list(s.grid_seeds)}, same training. "
        f"Test accuracy (mean over seeds):\n"
    )
    L.append("| sigma_w2 | " + " | ".join(f"L={d}" for d in s.grid_depths) + " |")
    L.append("|---:|" + "---:|" * len(s.grid_depths))
    for w in s.grid_sigma_w2:
        cells = [
            np.mean([r["test_acc"] for r in grid if r["depth"] == d and r["sigma_w2"] == w])
            for d in s.grid_depths
        ]
        L.append(f"| {w:g} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    L.append("")
    L.append(
        "Predicted gradient explosion log(chi^0/chi^L) in nats (iterate_residual, MATH.md 2.3) at each "
        "depth's best sigma_w2 and at the advised one:\n"
    )
    L.append(
        "| depth | best sigma_w2 | its accuracy | its explosion (nats) | advised sigma_w2 | advised explosion |"
    )
    L.append("|---:|---:|---:|---:|---:|---:|")
    for d in s.grid_depths:
        cells = {
            w: np.mean([r["test_acc"] for r in grid if r["depth"] == d and r["sigma_w2"] == w])
            for w in s.grid_sigma_w2
        }
        wb = max(cells, key=cells.get)
        gb = np.mean([r["log_explosion"] for r in grid if r["depth"] == d and r["sigma_w2"] == wb])
        adv = [c for c in curve if c["depth"] == d][0]
        L.append(
            f"| {d} | {wb:g} | {cells[wb]:.3f} | {gb:.2f} | {adv['sigma_w2']:.3g} | {adv['budget']:g} |"
        )
    L.append("")
    L.append(
        "Advised sigma_w2 (advise_residual, gradient-explosion budget "
        f"{curve[0]['budget']:g} nats): "
        + ", ".join(
            f"L={c['depth']}: {c['sigma_w2']:.3g}" for c in curve if c["depth"] in s.grid_depths
        )
        + ".\n"
    )
    L.append("![tanh ResNet grid](../figures/validation_resnet_grid.png)\n")
    L.append("## What the runs show, and where the advice does not help\n")
    # the interpretation is written by a person after reading the tables; a rerun keeps it
    old = open(path).read() if os.path.exists(path) else ""
    a, b = old.find(_FINDINGS[0]), old.find(_FINDINGS[1])
    L.append(
        old[a : b + len(_FINDINGS[1])]
        if 0 <= a < b
        else f"{_FINDINGS[0]}\n(to be written)\n{_FINDINGS[1]}"
    )
    L.append("")
    atomic_write(path, lambda tmp: open(tmp, "w").write("\n".join(L)))


_FINDINGS = ("<!-- findings: kept across reruns -->", "<!-- /findings -->")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run; outputs go to /tmp")
    args = ap.parse_args(argv)
    s = Settings()
    out_docs, out_fig = os.path.join(ROOT, "docs"), os.path.join(ROOT, "figures")
    if args.quick:
        s = Settings(
            depths=(3, 6),
            seeds=(0, 1),
            epochs=1,
            grid_depths=(3, 6),
            grid_sigma_w2=(0.1, 1.0),
            grid_seeds=(0,),
        )
        out_docs = out_fig = "/tmp"
    t0 = time.time()
    data = load_data()
    runs = experiment_depth(data, s)
    grid, curve = experiment_grid(data, s)
    seconds = time.time() - t0
    blob = {
        "settings": {k: getattr(s, k) for k in s.__dataclass_fields__},
        "seconds": seconds,
        "depth_runs": runs,
        "grid_runs": grid,
        "advised_curve": curve,
    }
    atomic_write(
        os.path.join(out_docs, "validation.json"),
        lambda tmp: open(tmp, "w").write(json.dumps(blob, indent=1, default=float)),
    )
    figure_depth(runs, s, os.path.join(out_fig, "validation_depth.png"))
    figure_grid(grid, curve, s, os.path.join(out_fig, "validation_resnet_grid.png"))
    write_markdown(runs, grid, curve, s, seconds, os.path.join(out_docs, "validation.md"))
    log(f"done in {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
