"""The muP seed's claims on real data (issue 13 section 3; MATH.md 7.1 and 7.3; docs/mup.md).

Chen, Yang, Zhao, Gu (2025) say that under muP with SGD an L-layer MLP learns features that
move Theta(1) from initialisation and stay linearly independent across the training inputs,
so training reaches a global minimum; muTransfer (TP V) says the best learning rate does not
depend on the width.  This script measures, on MNIST-1D (``mnist1d.data.make_dataset``: the
data are generated locally, nothing is downloaded) or scikit-learn's digits, for MLPs with 3
hidden tanh layers at widths 64..2048 (2048 is the CPU limit: one SGD step there costs ~30x
one at 256), 3 seeds, float32, torch on one CPU thread:

(a) feature change against width (``meanfield.torch.coord_check``): muP, NTP, SP at a fixed
    learning rate, SP at its largest stable learning rate (lr * base/width); the fitted width
    exponent of every layer's change, mean and sd over seeds, next to the theory's;
(b) feature richness: after ``steps`` minibatch SGD steps, the smallest eigenvalue of the
    cosine-normalised Gram matrix of the last hidden layer's features on ``n_gram`` < width
    training inputs (at initialisation and after training), the training loss, and how far
    those features moved (RMS per coordinate);
(c) transfer: the final training loss over a learning-rate grid at every width, for muP and SP,
    and the best learning rate against width.

Every network is set up by ``meanfield.torch.mup_`` (meanfield's advice for the variances at
the base width 64, the parametrization's width scaling above it); the loss is 1/2 the mean
squared error against one-hot labels, the one ``coord_check`` uses.

Measuring and plotting are apart.  Each finished run is written into the results file at once
(atomically), and a rerun with the same settings skips the runs already there, so the
measurement can be stopped (``--max-minutes``) and resumed.  A results file made with other
settings is refused.

Usage:
  nice -n 10 python scripts/validate_mup.py [--data mnist1d|digits] [--out docs/mup_results.json]
                                            [--max-minutes M] [--quick]
  python scripts/validate_mup.py --plot [--out docs/mup_results.json] [--figures figures]
  nice -n 10 python scripts/validate_mup.py --fine      (muP at half-octave lrs; --fine --plot prints it)
(--quick: a tiny smoke configuration on synthetic data, results in /tmp.)  Needs the
``validation`` extra (mnist1d or scikit-learn) for real data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from meanfield._io import atomic_write, atomic_write_many, savefig_writer  # noqa: E402
from meanfield.errors import DomainError  # noqa: E402
from meanfield.torch import coord_check, mup_  # noqa: E402

torch.set_num_threads(1)  # the CPU is small and shared


@dataclass(frozen=True)
class Config:
    """Everything a result depends on; a results file holds runs of one Config only."""

    data: str = "mnist1d"
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    base_width: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)
    depth: int = 3                      # hidden layers
    activation: str = "tanh"
    n_train: int = 256
    n_test: int = 200
    n_gram: int = 32                    # < the smallest width
    batch: int = 32
    steps: int = 300
    lr: float = 1.0                     # the fixed learning rate of (a) and (b), tuned at width 64
    lr_grid: tuple[float, ...] = tuple(2.0 ** k for k in range(-5, 3))
    coord_n: int = 128
    coord_steps: int = 5
    coord_parametrizations: tuple[str, ...] = ("mup", "ntp", "sp", "sp-max-lr")
    rich_parametrizations: tuple[str, ...] = ("mup", "ntp", "sp-max-lr")
    transfer_parametrizations: tuple[str, ...] = ("mup", "sp")
    # Added later (ADDED): each only plans new runs of (a), so a file from before keeps its runs.
    coord_zero_readout: tuple[str, ...] = ("mup", "ntp")      # (a) with mup_(zero_readout=True)
    adam_lr: float = 0.01                                     # (a) with Adam, tuned at width 64
    coord_adam_parametrizations: tuple[str, ...] = ("mup", "ntp", "sp", "sp-max-lr")
    coord_wide: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)   # (a) up to 4096
    coord_wide_parametrizations: tuple[str, ...] = ("mup", "ntp")
    coord_adam_zero_readout: tuple[str, ...] = ("mup",)       # (a) with Adam and the zero readout
    coord_wide_zero_readout: tuple[str, ...] = ("mup",)       # (a) up to 4096 with the zero readout
    # (d) attention logits (synthetic tokens; muP by mup_, the logits 1/d_head or 1/sqrt(d_head))
    attn_widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    attn_seeds: tuple[int, ...] = (0, 1, 2, 3)
    attn_runs: tuple[tuple[str, str, float], ...] = (("sgd", "linear", 0.5), ("adam", "linear", 0.01),
                                                     ("sgd", "mha", 0.5), ("adam", "mha", 0.01))
    attn_steps: int = 3


# Config fields added after docs/mup_results.json was started, with the value that file's runs
# were made under (none of its runs depends on them: they only plan more runs).
ADDED = ("coord_zero_readout", "adam_lr", "coord_adam_parametrizations", "coord_wide",
         "coord_wide_parametrizations", "coord_adam_zero_readout", "coord_wide_zero_readout", "attn_widths", "attn_seeds", "attn_runs",
         "attn_steps")


QUICK = Config(data="synthetic", widths=(16, 32), base_width=16, seeds=(0, 1), n_train=24, n_test=8,
               n_gram=8, batch=8, steps=6, lr=1.0, lr_grid=(0.25, 1.0), coord_n=16, coord_steps=2,
               coord_parametrizations=("mup", "sp"), rich_parametrizations=("mup",),
               transfer_parametrizations=("mup", "sp"), coord_zero_readout=("mup",), adam_lr=0.01,
               coord_adam_parametrizations=("mup",), coord_wide=(16, 32, 64), coord_wide_parametrizations=(),
               coord_adam_zero_readout=(), coord_wide_zero_readout=(), attn_widths=(16, 32), attn_seeds=(0, 1),
               attn_runs=(("adam", "mha", 0.01),), attn_steps=2)

# muP's best learning rate on the main grid is its largest stable one (2, with 4 diverging):
# half-octaves around it say whether that edge moves with width by less than a factor 2.
FINE = replace(Config(), lr_grid=(2.0 ** 0.5, 2.0, 2.0 ** 1.5), coord_parametrizations=(),
               rich_parametrizations=(), transfer_parametrizations=("mup",), coord_zero_readout=(),
               coord_adam_parametrizations=(), coord_wide_parametrizations=(), coord_adam_zero_readout=(),
               coord_wide_zero_readout=(), attn_runs=())


# ------------------------------------------------------------------------------------------
# data and model
# ------------------------------------------------------------------------------------------

def load_data(name: str, n_train: int, n_test: int) -> dict[str, torch.Tensor]:
    """Inputs X (n_train x d, float32), labels y, one-hot targets Y, and a test split.

    mnist1d: ``make_dataset`` with 1000 samples (its own 80/20 split, seed 42; generated, not
    downloaded).  digits: scikit-learn's 8x8 digits, shuffled with seed 0, standardised with
    the training statistics.  synthetic: Gaussian clusters (for the smoke test; no extra).
    """
    need = n_train + n_test
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = 1000
        ds = make_dataset(args)
        xtr, ytr, xte, yte = ds["x"], ds["y"], ds["x_test"], ds["y_test"]
    elif name == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        perm = np.random.RandomState(0).permutation(len(y))
        x, y = x[perm], y[perm]
        xtr, ytr, xte, yte = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-8
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    elif name == "synthetic":
        rs = np.random.RandomState(0)
        centres = rs.randn(10, 12)
        y = rs.randint(0, 10, need)
        x = centres[y] + 0.5 * rs.randn(need, 12)
        xtr, ytr, xte, yte = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    else:
        raise DomainError(f"unknown data set {name!r} (mnist1d, digits or synthetic)")
    if len(ytr) < n_train or len(yte) < n_test:
        raise DomainError(f"{name} has {len(ytr)} training / {len(yte)} test samples; "
                          f"n_train = {n_train}, n_test = {n_test} asked")
    X = torch.tensor(np.asarray(xtr[:n_train]), dtype=torch.float32)
    y = torch.tensor(np.asarray(ytr[:n_train]), dtype=torch.long)
    Xt = torch.tensor(np.asarray(xte[:n_test]), dtype=torch.float32)
    yt = torch.tensor(np.asarray(yte[:n_test]), dtype=torch.long)
    return {"X": X, "y": y, "Y": nn.functional.one_hot(y, 10).float(), "X_test": Xt, "y_test": yt}


def make_mlp(d_in: int, width: int, depth: int, activation: str = "tanh", n_out: int = 10) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` with ``activation``, then a linear readout."""
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    layers: list[nn.Module] = []
    fan = d_in
    for _ in range(depth):
        layers += [nn.Linear(fan, width), act()]
        fan = width
    return nn.Sequential(*layers, nn.Linear(width, n_out))


def _loss(out: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - Y) ** 2).mean()  # the loss coord_check trains with


def cosine_min_eig(G: np.ndarray) -> float:
    """Smallest eigenvalue of the Gram matrix G normalised to a unit diagonal: 0 when the samples'
    features are linearly dependent, 1 when they are orthogonal."""
    G = np.asarray(G, dtype=np.float64)
    d = np.sqrt(np.diag(G))
    return float(np.linalg.eigvalsh(G / np.outer(d, d))[0])


def gram_min_eig(F: np.ndarray) -> float:
    """:func:`cosine_min_eig` of the Gram matrix of the rows of F (samples x features)."""
    F = np.asarray(F, dtype=np.float64)
    return cosine_min_eig(F @ F.T)


# ------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------

def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


TARGET_SCALE = 4.0  # the diagnostic coord check: targets x4 and lr / 4


def coord_run(cfg: Config, data: dict, parametrization: str, target_scale: float = 1.0,
              variant: str = "") -> dict:
    """(a): meanfield.torch.coord_check over all widths and seeds at the fixed learning rate.

    ``target_scale`` s != 1 trains on s * Y at lr / s: the same change driven by the targets,
    while the part driven by the random initial output f_0 (Theta(n^{-1/2}) under muP) is s
    times smaller relative to it (a diagnostic of the finite-width correction).  ``variant``:
    "zero-readout" (mup_'s zero_readout=True, f_0 = 0), "adam" (Adam at ``cfg.adam_lr``),
    "wide" (widths ``cfg.coord_wide``), or "adam-" / "wide-" with "zero-readout"."""
    if variant not in ("", "zero-readout", "adam", "adam-zero-readout", "wide", "wide-zero-readout"):
        raise DomainError(f"unknown coord variant {variant!r}")
    X, Y = data["X"][: cfg.coord_n], data["Y"][: cfg.coord_n] * target_scale
    d = X.shape[1]
    adam = variant.startswith("adam")
    widths = list(cfg.coord_wide if variant.startswith("wide") else cfg.widths)
    cc = coord_check(lambda w: make_mlp(d, w, cfg.depth, cfg.activation), widths, X, Y,
                     parametrization=parametrization, optimizer="adam" if adam else "sgd",
                     lr=(cfg.adam_lr if adam else cfg.lr) / target_scale,
                     steps=cfg.coord_steps, seeds=cfg.seeds, base_width=cfg.base_width,
                     zero_readout=variant.endswith("zero-readout"))
    rec = cc.to_dict()
    rec["target_scale"] = target_scale
    rec["variant"] = variant
    rec["change"] = [[_finite(v) for v in row] for row in rec["change"]]
    for k in ("exponent", "exponent_sd"):
        rec[k] = [_finite(v) for v in rec[k]]
    return rec


def reference_run(cfg: Config, data: dict) -> dict:
    """The infinite-width value of (b)'s Gram eigenvalue at initialisation, from meanfield's NNGP
    kernel (MATH.md 4.1) with the variances mup_ drew: the kernel of the readout's input x^L is
    Sigma^{L+1} with a bias-free readout, E[phi(h^L) phi(h^L')] up to the factor sigma_w2."""
    from meanfield.kernels import kernel

    X = data["X"][: cfg.n_gram]
    model = make_mlp(X.shape[1], cfg.base_width, cfg.depth, cfg.activation)
    mup_(model, cfg.base_width, optimizer="sgd", lr=cfg.lr, seed=0)
    v = model._meanfield_init.variances
    k = kernel("mlp", cfg.activation, X.double().numpy(), depth=cfg.depth, sigma_w2=v.sigma_w2,
               sigma_b2=[v.sigma_b2] * cfg.depth + [0.0])
    return {"sigma_w2": v.sigma_w2, "sigma_b2": v.sigma_b2, "gram_min_eig_init": cosine_min_eig(k.nngp)}


def train_run(cfg: Config, data: dict, parametrization: str, width: int, lr: float, seed: int) -> dict:
    """(b) and (c): ``cfg.steps`` minibatch SGD steps from mup_'s initialisation and learning rates.

    The minibatches depend on the seed only (the same at every width and learning rate).  A run
    whose loss stops being finite is stopped there and marked diverged.
    """
    X, Y, y = data["X"], data["Y"], data["y"]
    model = make_mlp(X.shape[1], width, cfg.depth, cfg.activation)
    rec = mup_(model, cfg.base_width, optimizer="sgd", lr=lr, parametrization=parametrization, seed=seed)
    opt = torch.optim.SGD(rec.param_groups)
    features = model[:-1]
    Xg = X[: cfg.n_gram]
    with torch.no_grad():
        F0 = features(Xg).double()
        loss0 = float(_loss(model(X), Y))
    gen = torch.Generator().manual_seed(1000 + seed)
    n = X.shape[0]
    order = torch.randperm(n, generator=gen)
    pos, diverged, curve = 0, None, [[0, loss0]]
    marks = {int(round(cfg.steps * f)) for f in (0.1, 0.25, 0.5, 0.75)}
    for step in range(1, cfg.steps + 1):
        if pos + cfg.batch > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos: pos + cfg.batch]
        pos += cfg.batch
        opt.zero_grad()
        loss = _loss(model(X[idx]), Y[idx])
        if not torch.isfinite(loss):
            diverged = step
            break
        loss.backward()
        opt.step()
        if step in marks:
            with torch.no_grad():
                curve.append([step, _finite(float(_loss(model(X), Y)))])
    with torch.no_grad():
        out = model(X)
        final = float(_loss(out, Y))
        F1 = features(Xg).double()
        test_acc = float((model(data["X_test"]).argmax(1) == data["y_test"]).float().mean())
        train_acc = float((out.argmax(1) == y).float().mean())
    if diverged is None and not math.isfinite(final):
        diverged = cfg.steps
    ok = diverged is None
    curve.append([cfg.steps, _finite(final) if ok else None])
    return {
        "parametrization": parametrization, "width": width, "lr": lr, "seed": seed,
        "diverged_at": diverged, "loss_init": loss0, "loss": _finite(final) if ok else None,
        "loss_curve": curve, "train_acc": train_acc if ok else None, "test_acc": test_acc if ok else None,
        "gram_min_eig_init": gram_min_eig(F0.numpy()),
        "gram_min_eig": gram_min_eig(F1.numpy()) if ok and torch.isfinite(F1).all() else None,
        "feature_change": _finite(float((F1 - F0).pow(2).mean().sqrt())) if ok else None,
        "feature_rms_init": float(F0.pow(2).mean().sqrt()),
    }


class HandAttention(nn.Module):
    """Self-attention written with q/k/v/o nn.Linear and the usual q.k / sqrt(d_head) logits;
    ``self.logits`` (an identity) is where a forward hook reads them."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.heads = heads
        self.logits = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, n = x.shape[0], x.shape[1], x.shape[2]
        d = n // self.heads

        def split(t):
            return t.view(B, T, self.heads, d).transpose(1, 2)

        s = self.logits(split(self.q(x)) @ split(self.k(x)).transpose(-1, -2) / math.sqrt(d))
        a = s.softmax(-1) @ split(self.v(x))
        return self.o(a.transpose(1, 2).reshape(B, T, n))


class TinyTransformer(nn.Module):
    """tanh(input layer) -> + attention (residual) -> tanh -> readout, averaged over tokens."""

    def __init__(self, d_in: int, width: int, kind: str = "linear", heads: int = 2):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.kind = kind
        self.attn = (nn.MultiheadAttention(width, heads, bias=False, batch_first=True) if kind == "mha"
                     else HandAttention(width, heads))
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        h = h + (self.attn(h, h, h, need_weights=False)[0] if self.kind == "mha" else self.attn(h))
        return self.out(torch.tanh(h)).mean(1)


def _mha_logits(mod: nn.MultiheadAttention, q_in: torch.Tensor, k_in: torch.Tensor) -> torch.Tensor:
    """The logits q.k / sqrt(d_head) nn.MultiheadAttention computes (batch first, no bias), from its
    inputs after mup_'s pre-hook and its packed in_proj weight."""
    E, H = mod.embed_dim, mod.num_heads
    d = E // H
    W = mod.in_proj_weight
    B, T = q_in.shape[:2]
    q = (q_in @ W[:E].T).view(B, T, H, d).transpose(1, 2)
    k = (k_in @ W[E: 2 * E].T).view(B, T, H, d).transpose(1, 2)
    return q @ k.transpose(-1, -2) / math.sqrt(d)


def attention_logit_change(widths, kind: str, logits: str, optimizer: str, lr: float, steps: int, seeds,
                           X: torch.Tensor, y: torch.Tensor, base_width: int) -> dict:
    """RMS change of the attention logits of a :class:`TinyTransformer` (``kind`` "linear": the
    hand-written q/k/v/o block, "mha": nn.MultiheadAttention) after ``steps`` full-batch steps of
    1/2 MSE, set up by ``mup_`` (muP) with ``attention_logits=logits``; per width (mean over
    seeds) and the slope of log change against log width (mean, sd over seeds)."""
    change = np.zeros((len(seeds), len(widths)))
    for si, seed in enumerate(seeds):
        for wi, w in enumerate(widths):
            with torch.random.fork_rng(devices=[]):
                model = TinyTransformer(X.shape[-1], w, kind)
            rec = mup_(model, base_width, optimizer=optimizer, lr=lr, seed=seed, attention_logits=logits,
                       attention=None if kind == "mha" else [("attn.q", "attn.k", "attn.v", "attn.o")])
            got: dict[str, torch.Tensor] = {}
            if kind == "mha":
                hk = model.attn.register_forward_hook(
                    lambda m, a, kw, o, got=got: got.__setitem__("s", _mha_logits(m, a[0], a[1]).detach().clone()),
                    with_kwargs=True)
            else:
                hk = model.attn.logits.register_forward_hook(
                    lambda m, i, o, got=got: got.__setitem__("s", o.detach().clone()))
            with torch.no_grad():
                model(X)
            s0 = got["s"]
            opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(rec.param_groups)
            for _ in range(steps):
                opt.zero_grad()
                _loss(model(X), y).backward()
                opt.step()
            with torch.no_grad():
                model(X)
            hk.remove()
            change[si, wi] = float((got["s"] - s0).double().pow(2).mean().sqrt())
    logw = np.log(np.asarray(widths, float))
    slopes = [float(np.polyfit(logw, np.log(row), 1)[0]) for row in change]
    return {"widths": list(widths), "change": change.mean(0).tolist(), "slope": float(np.mean(slopes)),
            "slope_sd": float(np.std(slopes, ddof=1)) if len(slopes) > 1 else None, "slopes": slopes}


def attention_run(cfg: Config, data: dict, optimizer: str, kind: str, lr: float, logits: str) -> dict:
    """(d): :func:`attention_logit_change` on synthetic tokens (4 sequences of 6 tokens in R^8,
    Gaussian targets; generator seed 0), widths ``cfg.attn_widths``, 2 heads."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(4, 6, 8, generator=g), torch.randn(4, 1, generator=g)
    rec = attention_logit_change(list(cfg.attn_widths), kind, logits, optimizer, lr, cfg.attn_steps,
                                 cfg.attn_seeds, X, y, base_width=min(cfg.attn_widths))
    rec.update(optimizer=optimizer, kind=kind, lr=lr, logits=logits, steps=cfg.attn_steps)
    return rec


def planned_runs(cfg: Config) -> list[tuple[str, tuple]]:
    """(key, arguments) in the order they are run: (a), then (b), then (c) seed by seed, so a
    stopped measurement has whole seeds."""
    plan: list[tuple[str, tuple]] = [(f"coord/{p}", ("coord", p)) for p in cfg.coord_parametrizations]
    plan += [(f"coord/{p}/targets-x4", ("coord", p, TARGET_SCALE))
             for p in cfg.coord_parametrizations if p in ("mup", "ntp")]
    plan += [(f"coord/{p}/zero-readout", ("coord", p, 1.0, "zero-readout")) for p in cfg.coord_zero_readout]
    plan += [(f"coord/{p}/adam", ("coord", p, 1.0, "adam")) for p in cfg.coord_adam_parametrizations]
    plan += [(f"coord/{p}/wide", ("coord", p, 1.0, "wide")) for p in cfg.coord_wide_parametrizations]
    plan += [(f"coord/{p}/adam-zero-readout", ("coord", p, 1.0, "adam-zero-readout"))
             for p in cfg.coord_adam_zero_readout]
    plan += [(f"coord/{p}/wide-zero-readout", ("coord", p, 1.0, "wide-zero-readout"))
             for p in cfg.coord_wide_zero_readout]
    plan += [(f"attn/{o}/{kind}/{lg}", ("attn", o, kind, lr, lg))
             for o, kind, lr in cfg.attn_runs for lg in ("1/d", "1/sqrt(d)")]
    if cfg.rich_parametrizations:
        plan.append(("reference", ("reference",)))
    for seed in cfg.seeds:
        for p in cfg.rich_parametrizations:
            plan += [(_train_key(p, w, cfg.lr, seed), ("train", p, w, cfg.lr, seed)) for w in cfg.widths]
    for seed in cfg.seeds:
        for p in cfg.transfer_parametrizations:
            for lr in cfg.lr_grid:
                plan += [(_train_key(p, w, lr, seed), ("train", p, w, lr, seed)) for w in cfg.widths]
    seen: set[str] = set()
    return [(k, a) for k, a in plan if not (k in seen or seen.add(k))]


def _train_key(p: str, w: int, lr: float, seed: int) -> str:
    return f"train/{p}/w{w}/lr{lr!r}/s{seed}"


def _config_dict(cfg: Config) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


def load_results(path: str, cfg: Config) -> dict:
    """The results file at ``path`` (empty if absent); refused if made with other settings."""
    if not os.path.exists(path):
        return {"config": _config_dict(cfg), "runs": {}}
    try:
        with open(path) as fh:
            res = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise DomainError(f"cannot read results file {path!r}: {exc}") from None
    want = _config_dict(cfg)
    have = res.get("config", {})
    for k in ADDED:  # a file from before these fields existed: its runs do not depend on them
        have.setdefault(k, want[k])
    diff = [k for k in want if have.get(k) != want[k]]
    if diff:
        raise DomainError(f"{path!r} was measured with other settings ({diff[0]}: {have.get(diff[0])!r}, "
                          f"now {want[diff[0]]!r}); use another --out")
    return res


def _save(path: str, res: dict) -> None:
    text = json.dumps(res, indent=1, allow_nan=False)
    atomic_write(path, lambda tmp: open(tmp, "w").write(text), suffix=".json")


def measure(cfg: Config, data: dict, path: str, max_seconds: float = math.inf, log=print) -> dict:
    """Run every planned run not yet in ``path``, saving after each; return the results."""
    res = load_results(path, cfg)
    start = time.process_time()
    for key, args in planned_runs(cfg):
        if key in res["runs"]:
            continue
        if time.process_time() - start > max_seconds:
            log(f"stopped after {max_seconds:.0f} s of CPU; rerun to resume")
            break
        t0 = time.process_time()
        run = {"coord": coord_run, "train": train_run, "reference": reference_run, "attn": attention_run}[args[0]]
        rec = run(cfg, data, *args[1:])
        rec["cpu_s"] = time.process_time() - t0
        res["runs"][key] = rec
        _save(path, res)
        log(f"{key}: {rec['cpu_s']:.1f} s" + (f", loss {rec['loss']}" if args[0] == "train" else ""))
    return res


# ------------------------------------------------------------------------------------------
# summary (what the plots and docs/mup.md read)
# ------------------------------------------------------------------------------------------

def _slope(widths, values) -> float | None:
    v = np.asarray([np.nan if x is None else x for x in values], dtype=float)
    ok = np.isfinite(v) & (v > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(np.asarray(widths, float)[ok]), np.log(v[ok]), 1)[0])


def _mean_sd(xs) -> tuple[float | None, float | None]:
    v = np.asarray([x for x in xs if x is not None], dtype=float)
    if v.size == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def summarise(res: dict) -> dict:
    """Per-experiment tables from the raw runs: ``feature_change`` (a), ``richness`` (b),
    ``transfer`` (c).  Seeds missing from a stopped measurement are simply fewer seeds."""
    cfg = res["config"]
    widths, runs = cfg["widths"], res["runs"]
    out: dict[str, Any] = {"config": cfg, "feature_change": {}, "richness": {}, "transfer": {}}
    for key, r in runs.items():
        if key.startswith("coord/"):
            fc = {k: r[k] for k in ("widths", "layers", "change", "exponent", "exponent_sd", "predicted",
                                    "steps", "lr")}
            fc["target_scale"] = r.get("target_scale", 1.0)
            fc["variant"] = r.get("variant", "")
            # the slope over the three largest widths (of the seed mean): how far the fit over all
            # widths is from its large-width value
            top = r["widths"][-3:]
            fc["exponent_top3"] = [_slope(top, [row[j] for row in r["change"][-3:]]) for j in range(len(r["layers"]))]
            out["feature_change"][key[len("coord/"):]] = fc
    out["reference"] = runs.get("reference")
    out["attention"] = {key[len("attn/"):]: {k: r[k] for k in ("widths", "change", "slope", "slope_sd", "lr", "steps")}
                        for key, r in runs.items() if key.startswith("attn/")}

    def train(p, w, lr, s):
        return runs.get(_train_key(p, w, lr, s))

    for p in cfg["rich_parametrizations"]:
        rows = []
        for w in widths:
            rs = [r for s in cfg["seeds"] if (r := train(p, w, cfg["lr"], s)) is not None]
            if not rs:
                continue
            row = {"width": w, "seeds": len(rs), "diverged": sum(r["diverged_at"] is not None for r in rs)}
            for k in ("loss", "gram_min_eig_init", "gram_min_eig", "feature_change", "train_acc", "test_acc",
                      "loss_init"):
                row[k], row[k + "_sd"] = _mean_sd(r[k] for r in rs)
            rows.append(row)
        if rows:
            # the feature change's width exponent per seed, then mean and sd over seeds
            per_seed = [_slope([x["width"] for x in rows],
                               [(train(p, x["width"], cfg["lr"], s) or {}).get("feature_change") for x in rows])
                        for s in cfg["seeds"]]
            m, sd = _mean_sd(per_seed)
            top = rows[-3:]
            out["richness"][p] = {"rows": rows, "change_exponent": m, "change_exponent_sd": sd,
                                  "change_exponent_top3": _slope([x["width"] for x in top],
                                                                 [x["feature_change"] for x in top])}
    for p in cfg["transfer_parametrizations"]:
        loss = np.full((len(widths), len(cfg["lr_grid"])), np.nan)
        count = np.zeros(loss.shape, dtype=int)
        best_seed = []
        for i, w in enumerate(widths):
            for j, lr in enumerate(cfg["lr_grid"]):
                rs = [train(p, w, lr, s) for s in cfg["seeds"]]
                rs = [r for r in rs if r is not None]
                count[i, j] = len(rs)
                if rs:  # a diverged seed makes the learning rate count as diverged
                    vals = [np.inf if r["loss"] is None else r["loss"] for r in rs]
                    loss[i, j] = np.mean(vals)
        for s in cfg["seeds"]:
            bs = []
            for w in widths:
                vals = [(train(p, w, lr, s) or {"loss": "missing"})["loss"] for lr in cfg["lr_grid"]]
                if "missing" in vals:
                    bs.append(None)
                    continue
                v = [np.inf if x is None else x for x in vals]
                bs.append(float(np.log2(cfg["lr_grid"][int(np.argmin(v))])) if np.isfinite(min(v)) else None)
            best_seed.append(bs)
        best = []
        for i in range(len(widths)):
            row = loss[i]
            best.append(float(np.log2(cfg["lr_grid"][int(np.nanargmin(row))]))
                        if np.isfinite(row).any() and not np.isnan(row).any() else None)
        bw = [(w, b) for w, b in zip(widths, best) if b is not None]
        drift = (float(np.polyfit(np.log2([w for w, _ in bw]), [b for _, b in bw], 1)[0])
                 if len(bw) >= 2 else None)
        out["transfer"][p] = {
            "widths": widths, "lr_grid": cfg["lr_grid"],
            "loss": [[None if not np.isfinite(x) else float(x) for x in row] for row in loss],
            "diverged": [[bool(np.isposinf(x)) for x in row] for row in loss],
            "seeds": count.tolist(),
            "best_log2_lr": best, "best_log2_lr_per_seed": best_seed,
            "best_lr_slope": drift,   # d log2(best lr) / d log2(width)
        }
    return out


def report(summary: dict) -> str:
    """The numbers docs/mup.md quotes, as plain text."""
    lines = []
    for p, r in summary["feature_change"].items():
        ex = ", ".join(f"{e:+.2f} ± {s:.2f} ({q:+.2g})" if e is not None and s is not None else f"n/a ({q:+.2g})"
                       for e, s, q in zip(r["exponent"], r["exponent_sd"], r["predicted"]))
        top = ", ".join("n/a" if e is None else f"{e:+.2f}" for e in r["exponent_top3"])
        lines.append(f"(a) {p:20s} exponents per layer [fit ± sd (theory)]: {ex}; top 3 widths: {top}")
    for p, r in summary.get("attention", {}).items():
        sd = "n/a" if r["slope_sd"] is None else f"{r['slope_sd']:.2f}"
        lines.append(f"(d) {p:24s} logits' change slope {r['slope']:+.2f} ± {sd} (lr {r['lr']:g}); per width "
                     + ", ".join(f"{c:.4f}" for c in r["change"]))
    if summary.get("reference"):
        lines.append(f"(b) infinite-width Gram eigenvalue at init (NNGP): {summary['reference']}")
    for p, r in summary["richness"].items():
        lines.append(f"(b) {p}: change exponent of x^L after training {r['change_exponent']} ± {r['change_exponent_sd']}"
                     f" (top 3 widths {r['change_exponent_top3']})")
        for row in r["rows"]:
            lines.append("    w={width:5d} loss {loss} (init {loss_init}) lam_min init {gram_min_eig_init} -> {gram_min_eig} "
                         "(sd {gram_min_eig_sd}), dx^L {feature_change}, train acc {train_acc}, test acc {test_acc}, "
                         "diverged {diverged}/{seeds}".format(**{k: (f"{v:.4g}" if isinstance(v, float) else v)
                                                                 for k, v in row.items()}))
    for p, r in summary["transfer"].items():
        lines.append(f"(c) {p}: best log2 lr per width {r['best_log2_lr']} (per seed {r['best_log2_lr_per_seed']}); "
                     f"slope {r['best_lr_slope']}")
        lines.append("    lr     " + " ".join(f"{lr:<7g}" for lr in r["lr_grid"]))
        for w, row, dv, ns in zip(r["widths"], r["loss"], r["diverged"], r["seeds"]):
            lines.append(f"    w={w:5d} " + " ".join("  --   " if n == 0 else "  div  " if d else f"{x:.5f}"
                                                     for x, d, n in zip(row, dv, ns)))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------

NAMES = {"mup": "muP", "ntp": "NTP", "sp": "SP, fixed lr", "sp-max-lr": "SP, lr x base/width"}
COLORS = {"mup": "C0", "ntp": "C1", "sp": "C3", "sp-max-lr": "C2"}


def plot(summary: dict, folder: str) -> list[str]:
    """figures/mup_feature_change.png ((a) and (b)), figures/mup_transfer.png ((c)) and
    figures/mup_variants.png (the added runs of (a), and (d)), written together."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = summary["config"]
    fig1, axs = plt.subplots(2, 2, figsize=(12, 8.6))
    ax = axs.ravel()
    for p, r in summary["feature_change"].items():
        if r.get("target_scale", 1.0) != 1.0 or r.get("variant"):
            continue  # the diagnostic and added runs are in the text, not the figure
        ch = np.array([[np.nan if v is None else v for v in row] for row in r["change"]])
        j = len(r["layers"]) - 2  # the last hidden layer's pre-activation h^L
        e, s = r["exponent"][j], r["exponent_sd"][j]
        lab = f"{NAMES.get(p, p)}: slope {e:+.2f} ± {s:.2f} (theory {r['predicted'][j]:+.2g})" if e is not None else NAMES.get(p, p)
        ax[0].loglog(r["widths"], ch[:, j], "o-", color=COLORS.get(p), label=lab)
        if p != "sp":  # SP at a fixed lr is off any scale that shows the others
            ax[1].loglog(r["widths"], ch[:, j] / ch[0, j], "o-", color=COLORS.get(p), label=NAMES.get(p, p))
    ax[0].set(xlabel="width", ylabel="RMS change of h^L per coordinate",
              title=f"(a) last hidden layer after {cfg['coord_steps']} SGD steps, lr {cfg['lr']:g}")
    ax[0].legend(fontsize=8)
    w = np.asarray(cfg["widths"], float)
    for e, ls in ((0.0, ":"), (-0.5, "--")):
        ax[1].loglog(w, (w / w[0]) ** e, "k", ls=ls, lw=0.8, label=f"theory: width^{e:g}")
    ax[1].set(xlabel="width", ylabel="change / change at the base width",
              title="(a) the same, relative to the base width (without SP at a fixed lr)")
    ax[1].legend(fontsize=8)
    for p, r in summary["richness"].items():
        w = [x["width"] for x in r["rows"]]
        ax[2].semilogx(w, [x["gram_min_eig"] for x in r["rows"]], "o-", color=COLORS.get(p),
                       label=f"{NAMES.get(p, p)}, trained")
        ax[2].semilogx(w, [x["gram_min_eig_init"] for x in r["rows"]], "x--", color=COLORS.get(p), alpha=0.6,
                       label=f"{NAMES.get(p, p)}, at init")
        ax[3].loglog(w, [x["loss"] for x in r["rows"]], "o-", color=COLORS.get(p),
                     label=f"{NAMES.get(p, p)} (dx^L slope {r['change_exponent']:+.2f})"
                     if r["change_exponent"] is not None else NAMES.get(p, p))
    if summary.get("reference"):
        ax[2].axhline(summary["reference"]["gram_min_eig_init"], color="k", lw=0.8, ls=":",
                      label="infinite width, at init (NNGP kernel)")
    ax[2].set(xlabel="width", ylabel="smallest eigenvalue", ylim=(0, None),
              title=f"(b) normalised Gram of x^L on {cfg['n_gram']} inputs")
    ax[2].legend(fontsize=8)
    ax[3].set(xlabel="width", ylabel="training loss (1/2 MSE, one-hot)",
              title=f"(b) after {cfg['steps']} SGD steps (batch {cfg['batch']}), lr {cfg['lr']:g}")
    ax[3].legend(fontsize=8)
    fig1.suptitle(f"{cfg['data']}: {cfg['depth']} hidden {cfg['activation']} layers, base width "
                  f"{cfg['base_width']}, mean over {len(cfg['seeds'])} seeds")
    fig1.tight_layout()

    tr = summary["transfer"]
    fig2, ax2 = plt.subplots(1, max(1, len(tr)), figsize=(6 * max(1, len(tr)), 4.3), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for a, (p, r) in zip(ax2[0], tr.items()):
        lg = np.log2(r["lr_grid"])
        for i, w in enumerate(r["widths"]):
            col = cmap(i / max(1, len(r["widths"]) - 1))
            y = np.array([np.nan if x is None else x for x in r["loss"][i]])
            a.plot(lg, y, "o-", color=col, label=f"width {w}")
            if r["best_log2_lr"][i] is not None:
                a.plot([r["best_log2_lr"][i]], [np.nanmin(y)], "*", color=col, markersize=14, markeredgecolor="k")
        a.set_yscale("log")
        slope = r["best_lr_slope"]
        a.set(xlabel="log2 learning rate (at the base width)", ylabel=f"training loss after {cfg['steps']} steps",
              title=f"(c) {NAMES.get(p, p)}: best lr slope {slope:+.2f} per doubling" if slope is not None
              else f"(c) {NAMES.get(p, p)}")
        a.legend(fontsize=8)
    fig2.suptitle("missing points: the loss diverged for at least one seed; stars: best learning rate")
    fig2.tight_layout()
    fig3 = _plot_variants(summary, plt)
    figs = [fig1, fig2, fig3]
    paths = [os.path.join(folder, f"mup_{x}.png") for x in ("feature_change", "transfer", "variants")]
    atomic_write_many([(pth, savefig_writer(fig, pth, dpi=110), ".png") for pth, fig in zip(paths, figs)])
    for fig in figs:
        plt.close(fig)
    return paths


VARIANT_STYLE = {"mup/wide": ("muP, SGD", "C0", "o-"), "mup/wide-zero-readout": ("muP, SGD, zero readout", "C0", "s--"),
                 "ntp/wide": ("NTP, SGD", "C1", "o-"), "mup/adam": ("muP, Adam", "C4", "o-"),
                 "mup/adam-zero-readout": ("muP, Adam, zero readout", "C4", "s--"), "ntp/adam": ("NTP, Adam", "C5", "o-"),
                 "mup/zero-readout": ("muP, SGD, zero readout", "C0", "s--")}


def _plot_variants(summary: dict, plt):
    """figures/mup_variants.png: the added runs of (a) (zero readout, Adam, to 4096) and (d)."""
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.6))
    fc = summary["feature_change"]
    shown = [k for k in VARIANT_STYLE if k in fc and not (k == "mup/zero-readout" and "mup/wide-zero-readout" in fc)]
    for k in shown:
        r = fc[k]
        j = len(r["layers"]) - 2  # the last hidden layer
        ch = np.array([np.nan if row[j] is None else row[j] for row in r["change"]])
        lab, col, ls = VARIANT_STYLE[k]
        ax[0].loglog(r["widths"], ch / ch[0], ls, color=col, label=f"{lab}: slope {r['exponent'][j]:+.2f}")
    w = np.asarray(summary["config"].get("coord_wide", summary["config"]["widths"]), float)
    for e, ls in ((0.0, ":"), (-0.5, "--"), (-1.0, "-.")):
        ax[0].loglog(w, (w / w[0]) ** e, "k", ls=ls, lw=0.8, label=f"width^{e:g}")
    ax[0].set(xlabel="width", ylabel="change of h^L / change at the base width",
              title="(a) last hidden layer: zero readout, Adam, width 4096")
    ax[0].legend(fontsize=7)
    for k, r in summary.get("attention", {}).items():
        opt, kind, lg = k.split("/", 2)
        ch = np.asarray(r["change"], float)
        ax[1].loglog(r["widths"], ch / ch[0], "o-" if lg == "1/d" else "x--",
                     color={"sgd": "C0", "adam": "C4"}[opt], alpha=1.0 if kind == "linear" else 0.5,
                     label=f"{opt}, {'q/k/v/o Linear' if kind == 'linear' else 'MultiheadAttention'}, "
                           f"logits {lg}: slope {r['slope']:+.2f}")
    ax[1].set(xlabel="width (d_head = width / 2)", ylabel="change of the logits / change at the base width",
              title="(d) attention logits after 3 steps, muP elsewhere")
    ax[1].legend(fontsize=7)
    fig.suptitle(f"{summary['config']['data']} (a) and synthetic tokens (d); mean over seeds")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("mnist1d", "digits"), default="mnist1d")
    ap.add_argument("--out", default=None, help="results file (default docs/mup_results.json)")
    ap.add_argument("--figures", default=os.path.join(ROOT, "figures"))
    ap.add_argument("--plot", action="store_true", help="plot the results file instead of measuring")
    ap.add_argument("--max-minutes", type=float, default=math.inf, help="stop (resumably) after this much CPU time")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run on synthetic data (results in /tmp)")
    ap.add_argument("--fine", action="store_true",
                    help="muP only, half-octave lrs around its best (docs/mup_results_fine.json; --plot prints, draws nothing)")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else replace(FINE if args.fine else Config(), data=args.data)
    default = ("/tmp/mup_results_quick.json" if args.quick else
               os.path.join(ROOT, "docs", "mup_results_fine.json" if args.fine else "mup_results.json"))
    out = args.out or default
    try:
        if args.plot:
            with open(out) as fh:
                res = json.load(fh)
            s = summarise(res)
            print(report(s))
            if args.fine:
                return 0
            for p in plot(s, "/tmp" if args.quick else args.figures):
                print("wrote", p)
            return 0
        data = load_data(cfg.data, cfg.n_train, cfg.n_test)
        measure(cfg, data, out, max_seconds=60 * args.max_minutes)
    except (DomainError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
