"""PyTorch on the shapes `benches/train.rs` trains, same thread count, and the ratios to
mmflow's samples/s from its last run.

    cargo bench --bench train && python benches/train_torch.py [--threads 2] [--device cpu|cuda]
"""
import argparse
import json
import os
import pathlib
import time

import torch

from results import record
from torch import nn

STEPS = 20
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", "target"))


def adapter(device):
    model = nn.Sequential(nn.Linear(65, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 713)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x, y = torch.rand(64, 65, device=device) - 0.5, torch.rand(64, 713, device=device) - 0.5

    def steps():
        for _ in range(STEPS):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()

    return steps, 64


class Fusion(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstms = nn.ModuleList([nn.LSTM(d, 128, batch_first=True) for d in (300, 74, 713)])
        self.head = nn.Linear(3 * 128, 1)

    def forward(self, xs):
        return self.head(torch.cat([lstm(x)[1][0][-1] for lstm, x in zip(self.lstms, xs)], dim=1))


def lstm_fusion(device):
    model = Fusion().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    xs = [torch.rand(32, 50, d, device=device) - 0.5 for d in (300, 74, 713)]
    y = torch.rand(32, 1, device=device) - 0.5

    def steps():
        for _ in range(STEPS):
            opt.zero_grad()
            loss = ((model(xs) - y) ** 2).mean()
            loss.backward()
            opt.step()

    return steps, 32


def samples_per_second(make, device):
    steps, batch = make(device)
    steps()  # warm-up
    best = 0.0
    for _ in range(3):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        steps()
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, STEPS * batch / (time.perf_counter() - start))
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = json.loads((TARGET / "bench-train.json").read_text()) if (TARGET / "bench-train.json").exists() else {}
    if ours.get("device", "cpu") != args.device:
        print(f"(mmflow's last run was on {ours.get('device', 'cpu')}, not {args.device}: no ratios)")
        ours = {}
    print(f"{'model':<14} {'PyTorch':>12} {'mmflow':>12} {'ratio':>7}   (samples/s, {args.threads} threads, {args.device})")
    for name, make in (("adapter_mlp", adapter), ("lstm_fusion", lstm_fusion)):
        theirs = samples_per_second(make, args.device)
        mine = ours.get(name)
        ratio = f"{mine / theirs:.2f}x" if mine else "-"
        print(f"{name:<14} {theirs:12.0f} {mine or float('nan'):12.0f} {ratio:>7}")
        if mine:
            record(f"train {name} (PyTorch {args.device}, {args.threads} threads)", mine, theirs, mine / theirs, unit="samples/s")


if __name__ == "__main__":
    main()
