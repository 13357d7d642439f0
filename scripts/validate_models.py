"""Five model families, read by meanfield.torch: prediction vs measurement at initialisation, and
training on real data (issue 12 section 3).

Families (digits, scripts/validate_residual.load_data's train / validation / test split):

* ``cnn``: a plain CNN, 20 conv3x3-ReLU layers (padding 1) on the 8x8 image, global average
  pooling, a linear readout; no BatchNorm.
* ``resnet_bn``: a conv3x3 stem, 2x2 average pooling (8x8 -> 4x4), 10 BasicBlocks
  x + bn2(conv2(relu(bn1(conv1(x))))) with identity shortcuts, global average pooling, a linear
  readout.  torchvision's BasicBlock puts a ReLU after the addition; to_network refuses that
  (the sum of a batch-normalised branch and the stream is not Gaussian), so the block here
  leaves it out.
* ``transformer``: the 8 rows of a digit as 8 tokens of 8 features, Linear(8, d), a 4-layer
  pre-norm nn.TransformerEncoder (4 heads, feed-forward width d, ReLU, dropout 0, a final
  LayerNorm), flattened into a linear readout.  torch deep-copies one layer into every layer
  of the stack; each layer is re-drawn with torch's own initialisers, so "PyTorch default" is
  torch's per-layer default drawn independently.
* ``gelu_ln``: an MLP of 20 hidden layers Linear -> LayerNorm -> GELU, a linear readout.
* ``tanh``: an MLP of 20 hidden tanh layers, a linear readout.

Part "a" (width 256): ``meanfield.torch.compare_model`` on a batch of test digits, per row of
the algebra: q, the mean pair correlation and the gradient's second moment with their z-scores,
for PyTorch's default initialisation and for ``advise_model`` + ``init_`` (the transformer also
with W_q = 0, uniform attention: ``pytorch_wq0``).  Tolerance: |z| <= 4 in every row but the
readout (the band tests/test_torch_graph.py calibrated).  ``--seed`` draws another network.

Part "b": each family x initialisation, at every learning rate of a log grid x 2 seeds, SGD with
momentum 0.9; the learning rate with the best mean validation accuracy is chosen and its test
accuracy reported (validate_residual.summarise: diverged runs count as chance).  The
initialisations: ``advised`` (advise_model + init_), ``pytorch`` (the modules' own
default), ``autoinit`` (written from Bingham & Miikkulainen 2023: the mean and variance of each
layer's input propagated analytically -- activations through meanfield.gaussian.expect1 --
and each weight drawn N(0, 1 / (fan_in E[x^2])) so that the next pre-activation has variance 1;
biases 0), ``lsuv`` (Mishkin & Matas 2016: orthogonal weights, zero biases, then layer by layer
in forward order the weight rescaled on a batch of 128 training inputs until the layer's output
variance is within 0.1 of 1, at most 10 times).  The nets of one cell (learning rates x seeds)
are trained together as one vmapped functional model (torch.func), one CPU thread.

Resumable: every finished cell goes to docs/model_validation.json (validate_residual's locked
append); a rerun skips what is done.  ``--report`` prints the tables and draws
figures/model_<family>.png from that file.

Usage: OMP_NUM_THREADS=1 python scripts/validate_models.py [--part a|b|all] [--family ...]
           [--inits ...] [--seed N] [--steps N] [--lrs 0.001,...] [--reverse] [--tiny] [--out FILE]
       python scripts/validate_models.py --report
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import meanfield.torch as mft  # noqa: E402
import validate_residual as vr  # noqa: E402
from meanfield.activations import get_activation  # noqa: E402
from meanfield.errors import MeanfieldError  # noqa: E402
from meanfield.gaussian import expect1  # noqa: E402

torch.set_num_threads(1)  # the CPU is small and shared

FAMILIES = ("cnn", "resnet_bn", "transformer", "gelu_ln", "tanh")
INITS = ("advised", "pytorch", "autoinit", "lsuv")
#: part (a); pytorch_wq0 (the transformer only): torch's default with W_q = 0, uniform attention
A_INITS = ("pytorch", "pytorch_wq0", "advised")
#: |z| band of part (a), per row but the readout (tests/test_torch_graph.py's)
Z_TOL = 4.0


@dataclass(frozen=True)
class Settings:
    depth: int = 20            # hidden layers of the MLPs, conv layers of the CNN
    blocks: int = 10           # BasicBlocks of the ResNet
    tr_layers: int = 4         # encoder layers
    heads: int = 4
    width_a: int = 256         # part (a): units, channels, d_model
    n_a: int = 16              # part (a): inputs in the batch (the ResNet: n_a_bn)
    n_a_bn: int = 8            # BatchNorm's batch; the algebra's BN law is over batch x positions
    width_mlp: int = 128       # part (b) widths
    width_cnn: int = 16
    width_tr: int = 64
    steps: int = 200
    batch: int = 32
    momentum: float = 0.9
    lrs: tuple[float, ...] = (0.00316, 0.01, 0.0316, 0.1)
    seeds: tuple[int, ...] = (0, 1)
    lsuv_batch: int = 128

    def key(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


TINY = dict(depth=3, blocks=2, tr_layers=2, heads=2, width_a=8, n_a=4, n_a_bn=4, width_mlp=8,
            width_cnn=4, width_tr=8, steps=4, lrs=(0.01, 0.1), seeds=(0,), lsuv_batch=16)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------


class PlainCNN(nn.Module):
    def __init__(self, depth: int, C: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, C, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(C, C, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(C, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.body(x)), 1))


class BasicBlock(nn.Module):
    """x + bn2(conv2(relu(bn1(conv1(x))))); ``bn=False`` puts Identity in BatchNorm's place (the
    same module paths), the BN-free twin that advise_model can advise."""

    def __init__(self, C: int, bn: bool = True):
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(C)) if bn else nn.Identity
        self.conv1 = nn.Conv2d(C, C, 3, padding=1, bias=False)
        self.bn1 = norm()
        self.conv2 = nn.Conv2d(C, C, 3, padding=1, bias=False)
        self.bn2 = norm()

    def forward(self, x):
        return x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


class ResNetBN(nn.Module):
    def __init__(self, blocks: int, C: int, bn: bool = True):
        super().__init__()
        self.stem = nn.Conv2d(1, C, 3, padding=1, bias=False)
        self.down = nn.AvgPool2d(2)
        self.blocks = nn.Sequential(*[BasicBlock(C, bn) for _ in range(blocks)])
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(C, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.down(self.stem(x)))), 1))


class Transformer(nn.Module):
    def __init__(self, layers: int, d: int, heads: int, tokens: int = 8, features: int = 8):
        super().__init__()
        self.embed = nn.Linear(features, d)
        el = nn.TransformerEncoderLayer(d, heads, dim_feedforward=d, dropout=0.0,
                                        batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(el, layers, norm=nn.LayerNorm(d),
                                         enable_nested_tensor=False)
        for layer in self.enc.layers:  # torch deep-copies one layer: draw each one afresh
            layer.self_attn._reset_parameters()
            layer.linear1.reset_parameters()
            layer.linear2.reset_parameters()
        self.fc = nn.Linear(tokens * d, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.enc(self.embed(x)), 1))


def mlp(act: type, depth: int, width: int, ln: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = 64
    for _ in range(depth):
        layers += [nn.Linear(d, width)] + ([nn.LayerNorm(width)] if ln else []) + [act()]
        d = width
    return nn.Sequential(*layers, nn.Linear(width, 10))


def build(family: str, width: int, seed: int, s: Settings, bn: bool = True) -> nn.Module:
    """The family's model, its PyTorch-default weights drawn from the global RNG at a fixed seed."""
    torch.manual_seed(10_000 + seed)
    if family == "cnn":
        return PlainCNN(s.depth, width)
    if family == "resnet_bn":
        return ResNetBN(s.blocks, width, bn)
    if family == "transformer":
        return Transformer(s.tr_layers, width, s.heads)
    if family == "gelu_ln":
        return mlp(nn.GELU, s.depth, width, ln=True)
    if family == "tanh":
        return mlp(nn.Tanh, s.depth, width)
    raise ValueError(f"unknown family {family!r} (choose from {', '.join(FAMILIES)})")


def view(family: str, X: torch.Tensor) -> torch.Tensor:
    """Digits (N, 64) in the family's input layout."""
    if family in ("cnn", "resnet_bn"):
        return X.reshape(-1, 1, 8, 8)
    if family == "transformer":
        return X.reshape(-1, 8, 8)  # rows as tokens
    return X


def train_width(family: str, s: Settings) -> int:
    return {"cnn": s.width_cnn, "resnet_bn": s.width_cnn, "transformer": s.width_tr}.get(
        family, s.width_mlp)


def zero_queries_(model: nn.Module) -> None:
    """W_q = 0 in every attention layer: logits 0, attention uniform (what to_network reads)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.MultiheadAttention):
                m.in_proj_weight[: m.embed_dim].zero_()


# ------------------------------------------------------------------------------------------
# the advised initialisation
# ------------------------------------------------------------------------------------------


def advise_for(family: str, model: nn.Module, x: torch.Tensor, s: Settings, width: int):
    """advise_model's advice and how it was obtained.  For the BatchNorm ResNet, advise_model
    refuses BatchNorm inside a branch; the advice is then that of the same ResNet with Identity
    in BatchNorm's place (resnet-full, W -> relu -> V), applied to the BN model (init_ sets
    BatchNorm to the identity affine map).  Returns (advice or None, note)."""
    try:
        return mft.advise_model(model, x), "advise_model"
    except MeanfieldError as err:
        refusal = str(err)
    if family == "resnet_bn":
        twin = build(family, width, 0, s, bn=False)
        adv = mft.advise_model(twin, x)
        return adv, (f"advise_model refuses the BN model ({refusal}); the advice of its BN-free "
                     "twin (Identity in BatchNorm's place, same module paths) is applied")
    return None, f"advise_model refuses: {refusal}"


# ------------------------------------------------------------------------------------------
# AutoInit-style (Bingham & Miikkulainen 2023) and LSUV (Mishkin & Matas 2016)
# ------------------------------------------------------------------------------------------


def _act_moments(name: str, mean: float, var: float) -> tuple[float, float]:
    """(mean, variance) of phi(u) for u ~ N(mean, var), by meanfield's Gaussian quadrature."""
    act = get_activation(name)
    kinks = tuple(k - mean for k in act.kinks)
    m1 = float(expect1(lambda u: act.fn(mean + u), var, kinks))
    m2 = float(expect1(lambda u: act.fn(mean + u) ** 2, var, kinks))
    return m1, max(m2 - m1 * m1, 0.0)


class _AutoInit:
    """Walks a model in forward order with (mean, variance) of the signal; every weight layer
    draws N(0, 1 / (fan_in E[x^2])), E[x^2] = var + mean^2, bias 0: its output is (0, 1)."""

    def __init__(self, gen: torch.Generator):
        self.gen = gen

    def dense(self, weight: torch.Tensor, bias, state, fan_in: int) -> tuple[float, float]:
        m2 = state[1] + state[0] ** 2
        std = math.sqrt(1.0 / (fan_in * m2))
        weight.copy_(torch.empty(weight.shape).normal_(0.0, std, generator=self.gen))
        if bias is not None:
            bias.zero_()
        return 0.0, 1.0

    def module(self, m: nn.Module, state):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return self.dense(m.weight, m.bias, state, int(m.weight[0].numel()))
        if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            return 0.0, 1.0
        if isinstance(m, (nn.Tanh, nn.ReLU, nn.GELU)):
            return _act_moments({nn.Tanh: "tanh", nn.ReLU: "relu", nn.GELU: "gelu"}[type(m)], *state)
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.Flatten, nn.Identity, nn.Dropout)):
            # pooling keeps the mean; its variance is kept too, an upper bound (AutoInit's
            # analytic rule needs the positions' correlation, which it does not track)
            return state
        raise ValueError(f"autoinit: no rule for {type(m).__name__}")


@torch.no_grad()
def autoinit_(model: nn.Module, family: str, x_moments: tuple[float, float], seed: int) -> None:
    """AutoInit-style initialisation in place; ``x_moments`` = (mean, variance) of the inputs."""
    a = _AutoInit(torch.Generator().manual_seed(20_000 + seed))
    st = x_moments
    if isinstance(model, nn.Sequential):
        for m in model:
            st = a.module(m, st)
        return
    if isinstance(model, PlainCNN):
        for m in [*model.body, model.pool, model.fc]:
            st = a.module(m, st)
        return
    if isinstance(model, ResNetBN):
        st = a.module(model.down, a.module(model.stem, st))
        for b in model.blocks:
            br = st
            for m in (b.conv1, b.bn1, nn.ReLU(), b.conv2, b.bn2):
                br = a.module(m, br)
            st = (st[0] + br[0], st[1] + br[1])   # Add: means and variances add
        a.module(model.fc, a.module(model.pool, st))
        return
    if isinstance(model, Transformer):
        st = a.module(model.embed, st)
        for layer in model.enc.layers:
            att = layer.self_attn
            E = att.embed_dim
            # W_q, W_k: AutoInit has no rule for attention logits; torch's default kept.  The
            # value and output projections are dense layers; the attention average is taken to
            # keep the variance (an upper bound: it averages correlated tokens)
            v = (0.0, 1.0)   # after norm1
            v = a.dense(att.in_proj_weight[2 * E:], att.in_proj_bias[2 * E:], v, E)
            v = a.dense(att.out_proj.weight, att.out_proj.bias, v, E)
            st = (st[0] + v[0], st[1] + v[1])
            f = (0.0, 1.0)   # after norm2
            for m in (layer.linear1, layer.activation if isinstance(layer.activation, nn.Module)
                      else nn.ReLU(), layer.linear2):
                f = a.module(m, f)
            st = (st[0] + f[0], st[1] + f[1])
        st = (0.0, 1.0)      # the final LayerNorm
        a.module(model.fc, st)
        return
    raise ValueError(f"autoinit: unknown model {type(model).__name__}")


def _lsuv_targets(model: nn.Module) -> list[nn.Module]:
    out = []
    inside = set()
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            out.append(m)
            inside.add(id(m.out_proj))
        elif isinstance(m, (nn.Linear, nn.Conv2d)) and id(m) not in inside:
            out.append(m)
    return out


@torch.no_grad()
def lsuv_(model: nn.Module, xb: torch.Tensor, seed: int, tol: float = 0.1, t_max: int = 10) -> dict:
    """LSUV in place: orthogonal weights, zero biases, then each layer in forward order scaled
    until its output variance on ``xb`` is within ``tol`` of 1 (at most ``t_max`` rescalings).
    An attention layer counts as one layer, scaled through its output projection."""
    g = torch.Generator().manual_seed(20_000 + seed)
    targets = _lsuv_targets(model)
    for m in targets:
        if isinstance(m, nn.MultiheadAttention):
            E = m.embed_dim
            for k in range(3):
                nn.init.orthogonal_(m.in_proj_weight[k * E:(k + 1) * E], generator=g)
            nn.init.orthogonal_(m.out_proj.weight, generator=g)
            m.in_proj_bias.zero_()
            m.out_proj.bias.zero_()
        else:
            nn.init.orthogonal_(m.weight, generator=g)
            if m.bias is not None:
                m.bias.zero_()
    order, seen, outs = [], set(), {}

    def hook(mod, _inp, out):
        if id(mod) not in seen:
            seen.add(id(mod))
            order.append(mod)
        outs[id(mod)] = out[0] if isinstance(out, tuple) else out

    hs = [m.register_forward_hook(hook) for m in targets]
    was = model.training
    model.train()  # BatchNorm on batch statistics, the encoder's non-fused path; dropout is 0
    try:
        model(xb)
        variances = {}
        for m in order:
            w = m.out_proj.weight if isinstance(m, nn.MultiheadAttention) else m.weight
            for _ in range(t_max):
                model(xb)
                var = float(outs[id(m)].var())
                if abs(var - 1.0) < tol or not var > 0:
                    break
                w.mul_(1.0 / math.sqrt(var))
            variances[str(len(variances))] = var
    finally:
        for h in hs:
            h.remove()
        model.train(was)
    return variances


def init_model(family: str, scheme: str, width: int, seed: int, s: Settings, data: dict,
               advice=None) -> nn.Module:
    """One net of a training cell, initialised by ``scheme``."""
    model = build(family, width, seed, s)
    Xtr = data["train"][0]
    if scheme == "advised":
        mft.init_(model, advice, seed=seed)
    elif scheme == "autoinit":
        xm = view(family, Xtr)
        autoinit_(model, family, (float(xm.mean()), float(xm.var())), seed)
    elif scheme == "lsuv":
        gen = torch.Generator().manual_seed(40_000 + seed)
        idx = torch.randperm(Xtr.shape[0], generator=gen)[: s.lsuv_batch]
        lsuv_(model, view(family, Xtr[idx]), seed)
    elif scheme != "pytorch":
        raise ValueError(f"unknown initialisation {scheme!r}")
    return model


# ------------------------------------------------------------------------------------------
# part (b): training, the nets of a cell vmapped over stacked weights
# ------------------------------------------------------------------------------------------


def train_nets(models: list[nn.Module], family: str, lrs: list[float], seeds: list[int],
               data: dict, s: Settings) -> list[dict]:
    """Train the models together (torch.func.vmap over their stacked parameters and buffers);
    net i has learning rate lrs[i], seed seeds[i]; the protocol of validate_residual.train_cell
    (per-seed batch order, SGD with momentum, a non-finite loss freezes the net at chance)."""
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    params, bufs = stack_module_state(models)
    params = {k: v.detach().clone() for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in base.modules())

    def loss_fn(p, b, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    step_fn = vmap(grad_and_value(loss_fn), in_dims=(0, 0, 0, 0))
    N = len(models)
    Xtr, ytr = data["train"]
    Xtr = view(family, Xtr)
    n = Xtr.shape[0]
    lr = torch.tensor(lrs, dtype=torch.float32)
    mom = {k: torch.zeros_like(v) for k, v in params.items()}
    alive = torch.ones(N, dtype=torch.bool)
    diverged_at: list[int | None] = [None] * N
    gens = {sd: torch.Generator().manual_seed(30_000 + sd) for sd in set(seeds)}
    orders: dict = {sd: [] for sd in gens}
    base.train()
    for step in range(1, s.steps + 1):
        batch_of = {}
        for sd in gens:
            if len(orders[sd]) < s.batch:
                orders[sd] = orders[sd] + torch.randperm(n, generator=gens[sd]).tolist()
            batch_of[sd], orders[sd] = orders[sd][: s.batch], orders[sd][s.batch:]
        idx = torch.tensor([batch_of[sd] for sd in seeds])
        grads, loss = step_fn(params, bufs, Xtr[idx], ytr[idx])
        bad = ~torch.isfinite(loss) & alive
        for k in grads:
            g = grads[k].reshape(N, -1)
            bad |= ~torch.isfinite(g).all(1) & alive
        if bad.any():
            for i in torch.nonzero(bad).flatten().tolist():
                diverged_at[i] = step
            alive &= ~bad
        with torch.no_grad():
            for k, p in params.items():
                shape = (N,) + (1,) * (p.dim() - 1)
                keep = alive.view(shape)
                g = torch.where(keep, grads[k], torch.zeros(()))
                mom[k].mul_(s.momentum).add_(g)
                p.sub_((lr * alive.float()).view(shape) * mom[k])
                p.copy_(torch.where(keep, p, torch.zeros(())))   # a frozen net sits at zero
        if not alive.any():
            break
    if has_bn:
        base.eval()   # BatchNorm on its running statistics; the encoder stays on the Python path

    @torch.no_grad()
    def evaluate(X, y):
        X = view(family, X)
        logits = vmap(lambda p, b: functional_call(base, (p, b), (X,)))(params, bufs)
        ok = torch.isfinite(logits).all(2)
        acc = ((logits.argmax(2) == y) & ok).float().mean(1)
        loss = torch.stack([F.cross_entropy(lg, y) for lg in logits])
        return acc.numpy(), loss.numpy()

    va, _ = evaluate(*data["val"])
    te, _ = evaluate(*data["test"])
    _, trl = evaluate(*data["train"])
    out = []
    for i in range(N):
        div = diverged_at[i] is not None or not float(trl[i]) <= vr.BLOWN_UP
        out.append({"lr": lrs[i], "seed": seeds[i], "diverged": bool(div),
                    "diverged_step": diverged_at[i],
                    "val_acc": vr.CHANCE if div else float(va[i]),
                    "test_acc": vr.CHANCE if div else float(te[i]),
                    "train_loss": None if div else float(trl[i])})
    return out


def run_b(family: str, scheme: str, data: dict, s: Settings) -> dict:
    t0 = time.time()
    width = train_width(family, s)
    advice, note = None, ""
    if scheme == "advised":
        x = view(family, data["train"][0][:8])
        advice, note = advise_for(family, build(family, width, 0, s), x, s, width)
        if advice is None:
            return {"family": family, "init": scheme, "width": width, "refused": note,
                    "seconds": time.time() - t0}
    lrs = [lr for lr in s.lrs for _ in s.seeds]
    seeds = [sd for _ in s.lrs for sd in s.seeds]
    models = [init_model(family, scheme, width, sd, s, data, advice) for sd in seeds]
    t1 = time.time()
    runs = train_nets(models, family, lrs, seeds, data, s)
    out = {"family": family, "init": scheme, "width": width, "note": note,
           "lr_grid": list(s.lrs), "steps": s.steps}
    if advice is not None:
        out["advice"] = [la.to_dict() for la in advice.layers[:3]]
    out.update(vr.summarise(runs, list(s.lrs)))
    out["runs"] = runs
    out["seconds_init"] = t1 - t0
    out["seconds"] = time.time() - t0
    return out


# ------------------------------------------------------------------------------------------
# part (a): prediction vs measurement at initialisation
# ------------------------------------------------------------------------------------------


def _finite_max(a) -> float | None:
    a = np.abs(np.asarray(a, float))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else None


def run_a(family: str, scheme: str, data: dict, s: Settings, seed: int = 0) -> dict:
    """One cell of part (a); ``seed`` draws the model (and the advice's weights) and the
    readout r of compare_model; the batch is the same for every seed."""
    t0 = time.time()
    n = s.n_a_bn if family == "resnet_bn" else s.n_a
    X = view(family, data["test"][0][:n])
    model = build(family, s.width_a, seed, s)
    out = {"family": family, "init": scheme, "width": s.width_a, "batch": n, "seed": seed}
    net = None
    if scheme == "advised":
        adv, note = advise_for(family, model, X, s, s.width_a)
        out["note"] = note
        if adv is None:
            out["refused"] = note
            out["seconds"] = time.time() - t0
            return out
        mft.init_(model, adv, seed=seed)
        net = adv.network if note == "advise_model" else None
    elif scheme == "pytorch_wq0":
        # the uniform-attention case (logits 0), exact at every width
        zero_queries_(model)
        out["note"] = "torch's default with W_q = 0 in every attention layer (uniform attention)"
    elif scheme != "pytorch":
        raise ValueError(f"part a has no initialisation {scheme!r}")
    cmp = mft.compare_model(model, X, net=net, seed=seed)
    body = slice(0, len(cmp.layers) - 1)   # every row but the readout
    z, cz, gz = cmp.z[body], cmp.c_z[body], cmp.grad_z[body]
    out.update({
        "rows": cmp.rows(),
        "notes": list(cmp.notes),
        "max_abs_z": {"q": _finite_max(z), "c": _finite_max(cz), "grad": _finite_max(gz)},
        "max_abs_rel_error": {"q": _finite_max(cmp.rel_error[body]),
                              "grad": _finite_max(cmp.grad_rel_error[body])},
        "max_abs_c_error": _finite_max(cmp.c_error[body]),
        "rows_outside": {k: int(np.sum(np.abs(v[np.isfinite(v)]) > Z_TOL))
                         for k, v in (("q", z), ("c", cz), ("grad", gz))},
        "rows_checked": {k: int(np.sum(np.isfinite(v))) for k, v in (("q", z), ("c", cz),
                                                                     ("grad", gz))},
        "q_last_hidden": [float(cmp.measured[-2]), float(cmp.predicted[-2])],
        "log10_gradient_ratio": list(cmp.log10_gradient_ratio),
        "seconds": time.time() - t0,
    })
    return out


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def _fmt(v, f="{:.2f}") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f.format(v)


def table_a(res: dict) -> str:
    out = ["| family | init | max abs z: q / c / grad | rows outside abs z <= 4: q / c / grad | "
           "max rel err q | max c err | q last hidden: meas / pred | log10 grad ratio: meas / pred |",
           "|---|---|---|---|---|---|---|---|"]
    seeds = sorted({int(k.split("#")[1]) for k in res["cells"] if k.startswith("a/") and "#" in k})
    for fam, init, sd in ((f, i, d) for f in FAMILIES for i in A_INITS for d in [0] + seeds):
        c = res["cells"].get(f"a/{fam}/{init}" + (f"#{sd}" if sd else ""))
        if True:
            if c is None:
                continue
            name = f"{init}, seed {sd}" if seeds else init
            if "refused" in c:
                out.append(f"| {fam} | {name} | refused | | | | | |")
                continue
            mz, ro, rc = c["max_abs_z"], c["rows_outside"], c["rows_checked"]
            ql, lg = c["q_last_hidden"], c["log10_gradient_ratio"]
            out.append(
                f"| {fam} | {name} | {_fmt(mz['q'])} / {_fmt(mz['c'])} / {_fmt(mz['grad'])} | "
                f"{ro['q']}/{rc['q']} / {ro['c']}/{rc['c']} / {ro['grad']}/{rc['grad']} | "
                f"{_fmt(c['max_abs_rel_error']['q'], '{:.3f}')} | "
                f"{_fmt(c['max_abs_c_error'], '{:.3f}')} | "
                f"{ql[0]:.3g} / {ql[1]:.3g} | {_fmt(lg[0])} / {_fmt(lg[1])} |")
    return "\n".join(out)


def merged_cells(res: dict) -> dict:
    """Part (b) cells keyed (family, init, steps): a variant with the same number of steps
    extends the learning-rate grid of the main cell, so their runs are pooled and the learning
    rate is chosen again over the union grid (validate_residual.summarise)."""
    groups: dict = {}
    for k, c in res["cells"].items():
        if not k.startswith("b/"):
            continue
        if "refused" in c:
            groups.setdefault((c["family"], c["init"], None), [c])
            continue
        groups.setdefault((c["family"], c["init"], c.get("steps", res["settings"]["steps"])),
                          []).append(c)
    out = {}
    for key, cs in groups.items():
        if key[2] is None:
            out[key] = cs[0]
            continue
        runs = [r for c in cs for r in c["runs"]]
        grid = sorted({r["lr"] for r in runs})
        m = {"family": key[0], "init": key[1], "width": cs[0]["width"], "steps": key[2],
             "lr_grid": grid}
        m.update(vr.summarise(runs, grid))
        out[key] = m
    return out


def table_b(res: dict) -> str:
    out = ["| family | width | steps | lr grid | " + " | ".join(INITS) + " |",
           "|---|---:|---:|---|" + "---|" * len(INITS)]
    cells = merged_cells(res)
    steps = sorted({k[2] for k in cells if k[2] is not None})
    for fam, st in ((f, n) for f in FAMILIES for n in steps):
        row, width, grid = [], "", ""
        for init in INITS:
            c = cells.get((fam, init, st)) or (cells.get((fam, init, None)) if st == res[
                "settings"]["steps"] else None)
            if c is None:
                row.append("")
                continue
            width = c["width"]
            if "refused" in c:
                row.append("refused")
                continue
            grid = sorted(set(grid or ()) | set(c["lr_grid"]))
            edge = ", edge" if c["best_lr_at_edge"] else ""
            dv = f", {c['diverged_all_lrs']}/{c['n_runs']} div" if c["diverged_all_lrs"] else ""
            row.append(f"{c['test_mean']:.3f} ± {c['test_sd']:.3f} (lr {c['best_lr']:g}{edge}{dv})")
        if any(r not in ("", "refused") for r in row):
            lrs = ", ".join(f"{v:g}" for v in grid)
            out.append(f"| {fam} | {width} | {st} | {lrs} | " + " | ".join(row) + " |")
    return "\n".join(out)


def figures(res: dict, fig_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from meanfield._io import atomic_savefig

    paths = []
    for fam in FAMILIES:
        cells = [res["cells"].get(f"a/{fam}/{i}") for i in A_INITS]
        cells = [(c, col) for c, col in zip(cells, ("C0", "C2", "C3")) if c is not None and "rows" in c]
        if not cells:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for c, col in cells:
            rows = c["rows"][:-1]
            ls = [r["l"] for r in rows]
            for ax, (m, p, lab) in zip(axes, (("measured", "predicted", "q"),
                                              ("c_measured", "c_predicted", "pair correlation"),
                                              ("grad_measured", "grad_predicted", "gradient / output's"))):
                meas = [r[m] for r in rows]
                pred = [r[p] for r in rows]
                ax.plot(ls, pred, "-", color=col, lw=1, label=f"{c['init']}: theory")
                ax.plot(ls, meas, "o", color=col, ms=3, mfc="none", label=f"{c['init']}: measured")
                ax.set_xlabel("row of to_network(model, x)")
                ax.set_title(lab, fontsize=9)
                if lab != "pair correlation":
                    ax.set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{fam}: width {cells[0][0]['width']}, batch {cells[0][0]['batch']} test digits",
                     fontsize=10)
        fig.tight_layout()
        path = os.path.join(fig_dir, f"model_{fam}.png")
        atomic_savefig(fig, path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("a", "b", "all"), default="all")
    ap.add_argument("--family", default=",".join(FAMILIES), help="comma-separated families")
    ap.add_argument("--inits", default=",".join(INITS), help="comma-separated part (b) inits")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    ap.add_argument("--out", default=None, help="results file (default docs/model_validation.json;"
                    " --tiny: /tmp/model_validation_tiny.json)")
    ap.add_argument("--report", action="store_true", help="tables and figures only, no runs")
    ap.add_argument("--figures", default=None, help="figure folder for --report (default figures/; 'none': no figures)")
    ap.add_argument("--max-cells", type=int, default=None, help="stop after this many new cells")
    ap.add_argument("--reverse", action="store_true", help="run the cells in reverse order")
    ap.add_argument("--seed", type=int, default=0, help="part (a): the seed of the model, the "
                    "advice's weights and the readout (cells a/FAMILY/INIT#SEED for seed > 0)")
    ap.add_argument("--steps", type=int, default=None, help="part (b): a variant with this many "
                    "steps (its cells are stored as b/FAMILY/INIT@steps=...;lrs=...)")
    ap.add_argument("--lrs", default=None, help="part (b): a variant with this comma-separated "
                    "learning-rate grid")
    args = ap.parse_args(argv)
    fams = [f.strip() for f in args.family.split(",") if f.strip()]
    inits = [i.strip() for i in args.inits.split(",") if i.strip()]
    for f in fams:
        if f not in FAMILIES:
            ap.error(f"--family: unknown family {f!r} (choose from {', '.join(FAMILIES)})")
    for i in inits:
        if i not in INITS:
            ap.error(f"--inits: unknown initialisation {i!r} (choose from {', '.join(INITS)})")
    s = Settings(**TINY) if args.tiny else Settings()
    out = args.out or ("/tmp/model_validation_tiny.json" if args.tiny
                       else os.path.join(ROOT, "docs", "model_validation.json"))
    res = vr.load_results(out, s)
    if args.report:
        print("### (a) prediction vs measurement at initialisation\n\n" + table_a(res))
        print("\n### (b) test accuracy at each initialisation's best learning rate\n\n" + table_b(res))
        if args.figures != "none":
            for p in figures(res, args.figures or os.path.join(ROOT, "figures")):
                log(f"wrote {p}")
        return 0
    s_b, variant = s, ""
    if args.steps is not None or args.lrs is not None:
        try:
            lrs = s.lrs if args.lrs is None else tuple(float(v) for v in args.lrs.split(","))
        except ValueError:
            ap.error(f"--lrs: want comma-separated numbers, got {args.lrs!r}")
        steps = s.steps if args.steps is None else args.steps
        if steps < 1 or not all(math.isfinite(v) and v > 0 for v in lrs):
            ap.error(f"--steps/--lrs: want steps >= 1 and positive learning rates, got {steps}, {lrs}")
        s_b = dataclasses.replace(s, steps=steps, lrs=lrs)
        variant = f"@steps={steps};lrs={','.join(f'{v:g}' for v in lrs)}"
    data = vr.load_data("digits")
    todo = []
    if args.part in ("a", "all"):
        if args.seed < 0:
            ap.error(f"--seed: want a seed >= 0, got {args.seed}")
        sfx = f"#{args.seed}" if args.seed else ""
        todo += [("a", f, i + sfx) for f in fams for i in A_INITS
                 if i != "pytorch_wq0" or f == "transformer"]
    if args.part in ("b", "all"):
        todo += [("b", f, i + variant) for f in fams for i in inits]
    todo = [t for t in todo if "/".join(t) not in res["cells"]]
    if args.reverse:
        todo.reverse()
    log(f"{len(todo)} cells to run ({out})")
    for k, (part, fam, init) in enumerate(todo):
        if args.max_cells is not None and k >= args.max_cells:
            break
        cid = f"{part}/{fam}/{init}"
        if cid in vr.load_results(out, s)["cells"]:
            continue   # another process ran it meanwhile
        r = (run_a(fam, init.split("#")[0], data, s, args.seed) if part == "a"
             else run_b(fam, init.split("@")[0], data, s_b))
        vr.append_cell(out, s, cid, r)
        if "refused" in r:
            log(f"{cid:28s} refused: {r['refused'][:120]}")
        elif part == "a":
            log(f"{cid:28s} max|z| q {r['max_abs_z']['q']} c {r['max_abs_z']['c']} "
                f"grad {r['max_abs_z']['grad']} ({r['seconds']:.1f}s)")
        else:
            log(f"{cid:28s} test {r['test_mean']:.3f} ± {r['test_sd']:.3f} lr {r['best_lr']:g} "
                f"div {r['diverged_all_lrs']}/{r['n_runs']} ({r['seconds']:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
