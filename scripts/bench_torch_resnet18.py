"""Issue 12 section 4: time reading and predicting a ResNet-18-sized model (no torchvision):
a 3x3 stem conv of 64 channels, four stages of two residual blocks x + conv(relu(conv(x)))
(64, 128, 256, 512 channels; stages 2-4 open with stride 2 and a 1x1 projection shortcut),
global average pooling and a 10-way readout: 11.2 M parameters, as ResNet-18's 11.2 M.
With --bn every conv in a branch is followed by BatchNorm2d.  Sizes are odd (17, 33): torch's
stride-2 padding-1 convs pad as TF's 'same' only there (to_network refuses the even case).

Usage: python scripts/bench_torch_resnet18.py [--size 17] [--batch 8] [--bn] [--json out.json]
Prints one JSON line: seconds for to_network (tracing and reading), for net.propagate (the
algebra's q, correlations and gradients for the batch), for compare_model and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import meanfield.torch as mft  # noqa: E402
from meanfield.torch.measure import predict_rows  # noqa: E402


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, bn: bool):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=not bn)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, padding=1, bias=not bn)
        self.n1 = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.n2 = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.proj = nn.Conv2d(cin, cout, 1, stride, bias=False) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        h = self.c2(F.relu(self.n1(self.c1(x))))
        h = self.n2(h)
        return (self.proj(x) if self.proj is not None else x) + h


class ResNet18(nn.Module):
    def __init__(self, bn: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        blocks, cin = [], 64
        for i, c in enumerate((64, 128, 256, 512)):
            for j in range(2):
                blocks.append(Block(cin, c, 2 if (j == 0 and i > 0) else 1, bn))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(512, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.stem(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=17)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--bn", action="store_true")
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = ResNet18(a.bn)
    x = torch.randn(a.batch, 3, a.size, a.size)
    out = {"size": a.size, "batch": a.batch, "bn": a.bn,
           "parameters": sum(p.numel() for p in model.parameters())}
    t = time.perf_counter()
    net, layout = mft.to_network(model, x)
    out["to_network_s"] = time.perf_counter() - t
    out["rows"] = len(net.flat())
    t = time.perf_counter()
    q, c, g, note = predict_rows(net, layout.to_channels_last(x))
    out["predict_s"] = time.perf_counter() - t
    out["q_out"] = float(q[-1].mean())
    if a.compare:
        t = time.perf_counter()
        cmp = mft.compare_model(model, x)
        out["compare_model_s"] = time.perf_counter() - t
        out["max_abs_z_q"] = float(abs(cmp.z[:-1]).max())
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = json.dumps(out)
    print(line)
    if a.json:
        with open(a.json, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
