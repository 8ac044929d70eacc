"""Same recipe, same results? MMSA's own trainer against mmflow's `recipe = "mmsa"`, per
architecture, on one MMSA-format pickle with a known signal, over several seeds each.

    python benches/mmsa_zoo.py [--mmflow target/release/mmflow] [--seeds 5] [--scale 1.0]
                               [--models lf_dnn,tfn,lmf,ef_lstm,mult,mfn] [--variants aligned,unaligned]

Writes `<work>/<variant>.pkl` in MMSA's layout (MOSI's splits, scaled by `--scale`; text
50 × 768 zero-padded after each segment's words; audio 5-d and vision 20-d, 50 frames when
aligned, 500 / 375 with `audio_lengths` / `vision_lengths` when not; COVAREP's -inf in the
audio padding; labels a fixed function of the features plus noise, in [-3, 3]; a split size
that would leave MMSA a last batch of one segment is made one larger, since MMSA's batch norm
refuses such a batch in training). Then, per
architecture and seed:

- MMSA: `get_config_regression(model, "mosi")` with the pickle as `featurePath`, MMSA's
  `MMDataLoader`, `AMIO`, `ATIO().getTrain(args).do_train` on the CPU (as `MMSA_run` does,
  without its GPU selection), the best weights reloaded, `do_test` on the test split;
- mmflow: `mmflow run` of a pipeline `mmsa_pickle` → `train_model` (`architecture = <model>`,
  `recipe = "mmsa"`) → `evaluate`, with `--set pipeline.seed=<seed>`.

Both sides run with the same number of threads (`--threads`, default 2: torch's intra-op
threads, mmflow's `RAYON_NUM_THREADS`). Prints one table: test Corr, MAE and Has0 Acc-2 as
mean ± std over seeds on each side, Welch's t-test p of each difference, and seconds per epoch
(each side's training wall time ÷ its epochs, validation included) with mmflow's speed ratio.

Needs torch, MMSA 2.2.1 (`pip install --no-deps mmsa==2.2.1`) and what its modules import
(transformers, easydict, pandas, nvidia-ml-py3, scikit-learn), pyarrow and scipy.
"""

import argparse
import json
import logging
import os
import pickle
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy import stats

SPLITS = {"train": 1284, "valid": 229, "test": 686}
WIDTHS = {"text": 768, "audio": 5, "vision": 20}
LENGTHS = {"aligned": {"text": 50, "audio": 50, "vision": 50},
           "unaligned": {"text": 50, "audio": 500, "vision": 375}}


def write_pickle(path, variant, scale, seed=0):
    """One MMSA-layout pickle with a known signal."""
    rng = np.random.default_rng(seed)
    lengths = LENGTHS[variant]
    # The signal: a fixed direction in each modality's mean frame.
    direction = {m: rng.standard_normal(w).astype(np.float32) / np.sqrt(w) for m, w in WIDTHS.items()}
    data = {}
    for split, size in SPLITS.items():
        n = max(8, int(size * scale))
        # MMSA's loader keeps a last batch of one, which its batch norm refuses in training.
        if n % 32 == 1:
            n += 1
        out = {"id": np.array([f"v{split}{i // 4}$_${i % 4}" for i in range(n)], dtype=object),
               "raw_text": np.array(["a clip"] * n, dtype=object)}
        score = np.zeros(n, dtype=np.float32)
        for m, width in WIDTHS.items():
            full = lengths[m]
            arr = np.zeros((n, full, width), dtype=np.float32)
            kept = rng.integers(full // 5, full + 1, size=n)
            kept[0] = full  # the longest fills the padded length, as in MMSA's files
            for i, k in enumerate(kept):
                frames = rng.standard_normal((k, width)).astype(np.float32) + 0.5 * rng.standard_normal(width).astype(np.float32)
                arr[i, :k] = frames
                score[i] += float(frames.mean(axis=0) @ direction[m])
            if m == "audio":
                arr[:, :, 0][np.arange(full)[None, :] >= kept[:, None]] = -np.inf
            out[m] = arr
            if m != "text":
                out[f"{m}_lengths"] = kept.astype(np.int64) if variant == "unaligned" else np.full(n, full)
        labels = np.clip(3.0 * np.tanh(score) + 0.3 * rng.standard_normal(n), -3.0, 3.0)
        out["regression_labels"] = labels.astype(np.float32)
        out["classification_labels"] = (np.sign(labels) + 1).astype(np.float32)
        out["annotations"] = np.array(["Neutral"] * n, dtype=object)
        out["text_bert"] = np.zeros((n, 3, lengths["text"]), dtype=np.float32)
        data[split] = out
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)


# Models MMSA runs on aligned data only (`need_data_aligned` in its config).
NEEDS_ALIGNED = {"ef_lstm", "mfn"}


def accept_verbose():
    """MMSA's MulT trainer builds `ReduceLROnPlateau(..., verbose=True)`, a keyword newer
    torch no longer takes (it only printed the rate changes): drop it, change nothing else."""
    import torch.optim.lr_scheduler as schedulers

    class ReduceLROnPlateau(schedulers.ReduceLROnPlateau):
        def __init__(self, *args, verbose=None, **kwargs):
            super().__init__(*args, **kwargs)

    schedulers.ReduceLROnPlateau = ReduceLROnPlateau


class EpochCap(Exception):
    """Raised to stop MMSA's trainer, which has no cap of its own, after `--epochs`."""


def run_mmsa(model, pickle_path, seed, work, max_epochs=None):
    """MMSA's own trainer: (test results, seconds per epoch)."""
    import torch
    accept_verbose()
    from MMSA.config import get_config_regression
    from MMSA.data_loader import MMDataLoader
    from MMSA.models import AMIO
    from MMSA.trains import ATIO
    from MMSA.utils import setup_seed

    args = get_config_regression(model, "mosi")
    args.featurePath = str(pickle_path)
    args.custom_feature, args.feature_T, args.feature_A, args.feature_V = None, None, None, None
    args.device = torch.device("cpu")
    args.train_mode = "regression"
    args.cur_seed = seed
    args.model_save_path = Path(work) / f"mmsa-{model}-{seed}.pth"
    setup_seed(seed)
    loader = MMDataLoader(args, num_workers=0)
    net = AMIO(args).to(args.device)
    trainer = ATIO().getTrain(args)
    epochs = []
    test = trainer.do_test

    def counting(model_, loader_, mode="VAL", **kw):
        result = test(model_, loader_, mode=mode, **kw)
        if mode == "VAL":
            epochs.append(1)
            if max_epochs is not None and len(epochs) >= max_epochs:
                raise EpochCap()
        return result

    trainer.do_test = counting
    start = time.perf_counter()
    try:
        trainer.do_train(net, loader)
    except EpochCap:
        pass  # the last epoch's weights are not saved: the best of the earlier ones is tested
    seconds = time.perf_counter() - start
    net.load_state_dict(torch.load(args.model_save_path))
    results = test(net, loader["test"], mode="TEST")
    return {"Corr": results["Corr"], "MAE": results["MAE"], "Acc2": results["Has0_acc_2"]}, seconds / len(epochs)


PIPELINE = """
[pipeline]
name = "zoo"

[stages.data]
kind = "mmsa_pickle"
[stages.data.params]
path = "{path}"
dataset = "mosi"
modalities = {{ text = "text", audio = "audio", visual = "vision" }}
labels = {{ sentiment = "regression_labels" }}
nonfinite = {{ audio = "zero" }}
use_lengths = {use_lengths}

[stages.model]
kind = "train_model"
inputs = {{ segments = "data.segments", features = ["data.text", "data.audio", "data.visual"] }}
params = {{ architecture = "{model}", recipe = "mmsa", optim = {{ epochs = {epochs} }} }}

[stages.eval]
kind = "evaluate"
inputs = {{ model = "model.model", segments = "data.segments", features = ["data.text", "data.audio", "data.visual"] }}
params = {{ bootstrap = 0 }}
"""


def run_mmflow(binary, model, pickle_path, variant, seed, work, threads, max_epochs=None):
    """mmflow's recipe: (test results, seconds per epoch)."""
    config = Path(work) / f"mmflow-{model}-{variant}.toml"
    config.write_text(PIPELINE.format(path=pickle_path, model=model, epochs=max_epochs or 500,
                                      use_lengths=str(variant == "unaligned").lower()))
    out = Path(work) / f"mmflow-{model}-{variant}-{seed}"
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    done = subprocess.run([binary, "run", str(config), "--set", f"pipeline.seed={seed}", "--out", str(out), "-q"],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mmflow failed ({done.returncode}):\n{done.stderr}")
    lock = json.loads((out / "mmflow.lock").read_text())
    seconds = lock["stages"]["model"]["duration_s"]
    history = pq.read_table(out / "model" / "history.parquet").to_pydict()
    epochs = max(history["epoch"])
    metrics = pq.read_table(out / "eval" / "metrics.parquet").to_pylist()
    value = {(m["split"], m["metric"]): m["value"] for m in metrics if m["head"] == "sentiment"}
    return {"Corr": value[("test", "Corr")], "MAE": value[("test", "MAE")],
            "Acc2": value[("test", "Has0_acc_2")]}, seconds / epochs


def welch_p(a, b):
    """Welch's t-test p of two samples; with no spread on either side, 1 when the means are
    equal (to float rounding: the same fraction of a split computed on two sides) and 0 when
    not (scipy's test is undefined there)."""
    if np.std(a) == 0 and np.std(b) == 0:
        return 1.0 if np.isclose(np.mean(a), np.mean(b), rtol=1e-6, atol=1e-9) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def summary(values):
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mmflow", default="target/release/mmflow")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--models", default="lf_dnn,tfn,lmf,ef_lstm,mult,mfn")
    parser.add_argument("--variants", default="aligned,unaligned")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--epochs", type=int,
                        help="at most this many epochs a side, for a look at the speed of a slow "
                             "model (MulT on the CPU): MMSA's trainer, which has no cap, is stopped "
                             "after that many validations; the metrics are then of models stopped early")
    a = parser.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    logging.getLogger("MMSA").setLevel(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for variant in a.variants.split(","):
            path = Path(work) / f"{variant}.pkl"
            write_pickle(path, variant, a.scale)
            for model in a.models.split(","):
                if model in NEEDS_ALIGNED and variant != "aligned":
                    continue  # MMSA's `need_data_aligned`: both sides refuse unaligned data
                sides = {"mmsa": [], "mmflow": []}
                for seed in range(1, a.seeds + 1):
                    sides["mmsa"].append(run_mmsa(model, path, seed, work, a.epochs))
                    sides["mmflow"].append(run_mmflow(a.mmflow, model, path, variant, seed, work,
                                                      a.threads, a.epochs))
                row = {"model": model, "variant": variant, "seeds": a.seeds}
                for metric in ["Corr", "MAE", "Acc2"]:
                    ours = [r[metric] for r, _ in sides["mmflow"]]
                    theirs = [r[metric] for r, _ in sides["mmsa"]]
                    row[metric] = (summary(theirs), summary(ours), welch_p(ours, theirs))
                row["s_per_epoch"] = (float(np.median([s for _, s in sides["mmsa"]])),
                                      float(np.median([s for _, s in sides["mmflow"]])))
                rows.append(row)
                print_row(row, header=len(rows) == 1)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def print_row(row, header):
    if header:
        print("| model | data | metric | MMSA (mean ± std) | mmflow (mean ± std) | Welch p | beyond noise |")
        print("|---|---|---|---|---|---|---|")
    for metric in ["Corr", "MAE", "Acc2"]:
        theirs, ours, p = row[metric]
        print(f"| {row['model']} | {row['variant']} | {metric} | {theirs} | {ours} | {p:.2f} | {'yes' if p < 0.05 else 'no'} |")
    mmsa, mmflow = row["s_per_epoch"]
    print(f"| {row['model']} | {row['variant']} | s/epoch | {mmsa:.2f} | {mmflow:.2f} | | ratio {mmsa / mmflow:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
