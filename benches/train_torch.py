"""PyTorch on the shapes `benches/train.rs` trains, same thread count, and the ratios to
mmflow's samples/s from its last run.

    RAYON_NUM_THREADS=2 cargo bench --bench train && python benches/train_torch.py --threads 2 [--device cpu|cuda]
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


# True lengths of the 32 texts of a batch (the same list as `VA_LENGTHS` in benches/train.rs).
VA_LENGTHS = [42, 38, 50, 42, 32, 46, 50, 50, 30, 24, 31, 41, 16, 37, 24, 30, 32, 35, 47, 50, 38, 50, 31, 46, 50, 42, 30, 28, 33, 44, 27, 37]


class ValenceArousal(nn.Module):
    """configs/valence_arousal.toml's model: an LSTM (hidden 192) over the word vectors (its
    state after each text's last word), a 32-d user embedding, dropout 0.3, a 64-unit ReLU
    layer, one linear head per dimension."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(300, 192, batch_first=True)
        self.users = nn.Embedding(138, 32)
        self.dropout = nn.Dropout(0.3)
        self.mlp = nn.Sequential(nn.Linear(192 + 32, 64), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(64, 1) for _ in range(2)])

    def forward(self, x, lengths, users):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        hidden = self.mlp(self.dropout(torch.cat([h[-1], self.users(users)], dim=1)))
        return [head(hidden).squeeze(1) for head in self.heads]


def ccc_mse(p, y, ccc, mse):
    """mmflow's head loss with CCC and MSE terms (stages/src/train/loss.rs)."""
    pm, ym = p.mean(), y.mean()
    pc, yc = p - pm, y - ym
    cov, vp, vy = (pc * yc).mean(), (pc**2).mean(), (yc**2).mean()
    concordance = 2 * cov / (vp + vy + (pm - ym) ** 2 + 1e-8)
    return mse * ((p - y) ** 2).mean() + ccc * (1 - concordance)


def valence_arousal(device):
    model = ValenceArousal().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    batch = len(VA_LENGTHS)
    steps_of_text = torch.arange(50).unsqueeze(0) < torch.tensor(VA_LENGTHS).unsqueeze(1)
    x = (torch.rand(batch, 50, 300) - 0.5) * steps_of_text.unsqueeze(2)  # zeros past each end
    x = x.to(device)
    users = (torch.arange(batch) * 7 % 138).to(device)
    valence, arousal = torch.rand(batch, device=device) - 0.5, torch.rand(batch, device=device) - 0.5

    def steps():
        for _ in range(STEPS):
            opt.zero_grad()
            p_valence, p_arousal = model(x, torch.tensor(VA_LENGTHS), users)
            loss = ccc_mse(p_valence, valence, 0.5, 0.5) + ccc_mse(p_arousal, arousal, 0.75, 0.25)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    return steps, batch


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
    print(f"{'model':<16} {'PyTorch':>12} {'mmflow':>12} {'ratio':>7}   (samples/s, {args.threads} threads, {args.device})")
    if args.device == "cpu" and ours.get("threads", args.threads) != args.threads:
        print(f"(mmflow's last run used {ours['threads']} threads, not {args.threads}: no ratios)")
        ours = {}
    for name, make in (("adapter_mlp", adapter), ("lstm_fusion", lstm_fusion), ("valence_arousal", valence_arousal)):
        theirs = samples_per_second(make, args.device)
        mine = ours.get(name)
        ratio = f"{mine / theirs:.2f}x" if mine else "-"
        print(f"{name:<16} {theirs:12.0f} {mine or float('nan'):12.0f} {ratio:>7}")
        if mine:
            record(f"train {name} (PyTorch {args.device}, {args.threads} threads)", mine, theirs, mine / theirs, unit="samples/s")


if __name__ == "__main__":
    main()
