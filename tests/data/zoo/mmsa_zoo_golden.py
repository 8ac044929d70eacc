"""Writes `<model>.safetensors` for `lf_dnn`, `tfn`, `lmf`, `ef_lstm`, `mult` and `mfn`: MMSA's own modules built with fixed
seeds, their weights, a batch of inputs, the output, every parameter's gradient of the L1
loss, and the parameters (and batch-norm statistics) after 3 optimiser steps, taken as MMSA's
trainers take them. `stages/src/train/zoo/tests.rs` loads the same weights into mmflow's
models and checks every number.

    python tests/data/zoo/mmsa_zoo_golden.py

Needs torch, safetensors and MMSA 2.2.1 (`pip install --no-deps mmsa==2.2.1`; the model files
are read from its installed folder without importing the package, whose `__init__` pulls in
transformers). Tests never run this script: they read what it wrote. Also writes
`mmsa_defaults.json`, the `datasetParams` (and `early_stop`, `attn_mask`, `update_epochs`) of the six models from MMSA's
`config/config_regression.json`, which mmflow's defaults and recipe are checked against
(`weight_decay`, `text_out`, `post_fusion_dim`, `rank`, `factor_lr`, `num_layers`, `dropout`
null where the config has none).

Dropout is 0 (as the golden tests need); batch normalisation runs in training mode (batch
statistics; running statistics updated), and the eval-mode output after the 3 steps (running
statistics) is kept too. The text batch has zero-padded tails of different lengths: MMSA's
`TextSubNet` runs its LSTM over every padded step, and so must mmflow's. EF-LSTM takes aligned
sequences (`need_data_aligned`): its audio and video are B × T × D too, zero-padded past the
same lengths as the text, and its LSTM has two layers (the second reads the first's outputs).
MulT takes unaligned sequences (text, audio and video of 5, 7 and 6 steps, each zero-padded
past lengths of its own); its text is already of the projected width (no convolution), audio
and video are convolved; the future is masked (`attn_mask`); its trainer clips every gradient
value (`clip_grad_value_`, here to 0.05 so that it bites) before each of the 3 steps, and the
`grad.` tensors are the gradients before clipping. Its Adam has ε = 0.01 (as large as the
learning rate): Adam divides each element's step by that element's gradient, so float32
rounding of a gradient that is nearly 0 (attention's key bias, which softmax ignores, or a sum
that cancels) would otherwise move a weight by up to the learning rate in either program. MFN takes aligned
sequences, as EF-LSTM does (the same inputs, straight into the module: MMSA's loader and
`AlignSubNet` hand it audio and video as their means repeated at every step, which mmflow's
feed reproduces before the module), and runs its three LSTM cells over every padded step; its memory's layers are small and of different widths, so that a transposed or swapped
weight shows.

Tensors in each file:
- `model.<name>`: the initial state dict (MMSA's names, `model.` in front; TFN's constant
  `output_range` / `output_shift`, batch norm's `num_batches_tracked` and MulT's transformers'
  constant `version` left out);
- `input.text` (B × T × D), `input.audio`, `input.video` (B × D; EF-LSTM, MFN: B × T × D),
  `input.label` (B);
- `output.train` (B), `output.eval_after` (B);
- `grad.<name>` (the first step's gradients), `after.<name>` (after 3 steps).
"""

import importlib.util
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).parent
ROOT = Path(importlib.util.find_spec("MMSA").submodule_search_locations[0])


def load(name, path, package):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = package
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def mmsa_models():
    """MMSA's `LF_DNN` and `TFN` classes, from its files, with `subNets` holding only
    `FeatureNets` (the rest needs transformers)."""
    packages = ["MMSA", "MMSA.models", "MMSA.models.subNets", "MMSA.models.singleTask",
                "MMSA.models.subNets.transformers_encoder"]
    for package in packages:
        sys.modules[package] = types.ModuleType(package)
        sys.modules[package].__path__ = []
    encoder = ROOT / "models/subNets/transformers_encoder"
    for name in ["multihead_attention", "position_embedding", "transformer"]:
        load(f"MMSA.models.subNets.transformers_encoder.{name}", encoder / f"{name}.py",
             "MMSA.models.subNets.transformers_encoder")
    # MulT imports the BERT encoder it uses only with `use_bert`.
    sys.modules["MMSA.models.subNets"].BertTextEncoder = None
    nets = load("MMSA.models.subNets.FeatureNets", ROOT / "models/subNets/FeatureNets.py",
                "MMSA.models.subNets")
    sys.modules["MMSA.models.subNets"].SubNet = nets.SubNet
    sys.modules["MMSA.models.subNets"].TextSubNet = nets.TextSubNet
    single = ROOT / "models/singleTask"
    return {
        "lf_dnn": load("MMSA.models.singleTask.LF_DNN", single / "LF_DNN.py",
                       "MMSA.models.singleTask").LF_DNN,
        "tfn": load("MMSA.models.singleTask.TFN", single / "TFN.py",
                    "MMSA.models.singleTask").TFN,
        "lmf": load("MMSA.models.singleTask.LMF", single / "LMF.py",
                    "MMSA.models.singleTask").LMF,
        "ef_lstm": load("MMSA.models.singleTask.EF_LSTM", single / "EF_LSTM.py",
                        "MMSA.models.singleTask").EF_LSTM,
        "mult": load("MMSA.models.singleTask.MULT", single / "MULT.py",
                     "MMSA.models.singleTask").MULT,
        "mfn": load("MMSA.models.singleTask.MFN", single / "MFN.py",
                    "MMSA.models.singleTask").MFN,
    }


class Args(dict):
    __getattr__ = dict.__getitem__


# Small on purpose: the files stay a few kB.
B, T = 6, 5
DIMS = {"text": 6, "audio": 5, "video": 4}
ARGS = Args(
    feature_dims=(DIMS["text"], DIMS["audio"], DIMS["video"]),
    hidden_dims=(7, 3, 4),
    text_out=5,
    post_fusion_dim=6,
    dropouts=(0.0, 0.0, 0.0, 0.0),
    rank=3,
    train_mode="regression",
    num_classes=1,
)
# EF-LSTM's own (`hidden_dims` is one width there): two layers, so that the second reads the
# first's outputs; `seq_lens` is the aligned batch's length.
EF_ARGS = Args({**ARGS, "hidden_dims": 7, "num_layers": 2, "dropout": 0.0, "seq_lens": T})
# The optimiser MMSA's trainer builds (`MMSA/trains/singleTask/<MODEL>.py`), with the
# golden tests' learning rate: LF_DNN's Adam has weight decay; TFN's has none and skips its
# two constant parameters (`list(model.parameters())[2:]`); LMF's trains its three factors at
# `factor_lr` and its sub-networks at `learning_rate` (`[:3]` and `[5:]`: its fusion weights
# and bias are never trained), both with weight decay.
OPTIM = {"lf_dnn": {"lr": 0.01, "weight_decay": 0.01}, "tfn": {"lr": 0.01, "weight_decay": 0.0},
         "lmf": {"lr": 0.01, "factor_lr": 0.02, "weight_decay": 0.005},
         "ef_lstm": {"lr": 0.01, "weight_decay": 0.005}, "mult": {"lr": 0.01, "eps": 1e-2},
         "mfn": {"lr": 0.01, "weight_decay": 0.005}}
# MulT's: channels 6 (the text's width: no convolution) and 2 heads, 2 cross-modal levels (its
# self-attention transformers take 3), no dropout, the future masked.
MULT_ARGS = Args(
    feature_dims=(DIMS["text"], DIMS["audio"], DIMS["video"]),
    dst_feature_dim_nheads=(6, 2), nlevels=2,
    conv1d_kernel_size_l=3, conv1d_kernel_size_a=2, conv1d_kernel_size_v=3,
    attn_dropout=0.0, attn_dropout_a=0.0, attn_dropout_v=0.0, relu_dropout=0.0,
    embed_dropout=0.0, res_dropout=0.0, output_dropout=0.0, text_dropout=0.0,
    attn_mask=True, use_bert=False, use_finetune=False, transformers=None, pretrained=None,
    train_mode="regression", num_classes=1,
)
# MFN's: a memory of 5, its attention and gate layers of 4 and 3 (MMSA's `windowsize` is 2:
# the cell states before and after each step).
MFN_ARGS = Args(
    feature_dims=(DIMS["text"], DIMS["audio"], DIMS["video"]), hidden_dims=(7, 3, 4),
    memsize=5, windowsize=2, NN1Config={"drop": 0.0, "shapes": 4},
    NN2Config={"drop": 0.0, "shapes": 3}, gamma1Config={"drop": 0.0, "shapes": 4},
    gamma2Config={"drop": 0.0, "shapes": 3}, outConfig={"drop": 0.0, "shapes": 5},
    train_mode="regression", num_classes=1,
)
MULT_STEPS = {"text": 5, "audio": 7, "video": 6}
CLIP_VALUE = 0.05
SKIP = {"output_range", "output_shift"}


LENGTHS = [5, 3, 1, 4, 2, 5]


def inputs(aligned=False):
    """Text B × T × D zero-padded past `LENGTHS`; audio and video B × D (aligned: B × T × D,
    padded past the same lengths)."""
    g = torch.Generator().manual_seed(7)
    text = torch.randn(B, T, DIMS["text"], generator=g)
    for i, n in enumerate(LENGTHS):
        text[i, n:] = 0.0
    shape = (B, T) if aligned else (B,)
    audio = torch.randn(*shape, DIMS["audio"], generator=g)
    video = torch.randn(*shape, DIMS["video"], generator=g) * 2.0 + 0.5
    if aligned:
        for i, n in enumerate(LENGTHS):
            audio[i, n:] = 0.0
            video[i, n:] = 0.0
    label = torch.rand(B, generator=g) * 6.0 - 3.0
    return text, audio, video, label


def unaligned_inputs():
    """Text, audio and video B × T × D of their own lengths, each zero-padded past lengths of
    its own."""
    g = torch.Generator().manual_seed(9)
    out = []
    for modality in ["text", "audio", "video"]:
        steps = MULT_STEPS[modality]
        x = torch.randn(B, steps, DIMS[modality], generator=g)
        for i in range(B):
            n = int(torch.randint(1, steps + 1, (1,), generator=g))
            x[i, n:] = 0.0
        out.append(x)
    label = torch.rand(B, generator=g) * 6.0 - 3.0
    return (*out, label)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k not in SKIP and not k.endswith(("num_batches_tracked", ".version"))}


def golden(name, cls):
    torch.manual_seed(11)
    aligned = name in ("ef_lstm", "mfn")
    sequences = aligned or name == "mult"
    args = {"ef_lstm": EF_ARGS, "mult": MULT_ARGS, "mfn": MFN_ARGS}.get(name, ARGS)
    model = cls(args)
    model.train()
    text, audio, video, label = unaligned_inputs() if name == "mult" else inputs(aligned)
    # MMSA's loader gives the sub-network models their audio and video as B × 1 × D.
    shaped = (lambda x: x) if sequences else (lambda x: x.unsqueeze(1))
    tensors = {f"model.{k}": v for k, v in state(model).items()}
    tensors.update({"input.text": text, "input.audio": audio, "input.video": video,
                    "input.label": label})
    params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if name == "lmf":
        ps = list(model.parameters())
        optimizer = torch.optim.Adam([{"params": ps[:3], "lr": OPTIM[name]["factor_lr"]},
                                      {"params": ps[5:], "lr": OPTIM[name]["lr"]}],
                                     weight_decay=OPTIM[name]["weight_decay"])
    else:
        optimizer = torch.optim.Adam([p for _, p in params], **OPTIM[name])
    loss_fn = torch.nn.L1Loss()
    for step in range(3):
        optimizer.zero_grad()
        out = model(text, shaped(audio), shaped(video))["M"].view(-1)
        loss = loss_fn(out, label)
        loss.backward()
        if step == 0:
            tensors["output.train"] = out.detach().clone()
            # MulT's `proj_l` exists but is unused when the text has the projected width.
            tensors.update({f"grad.{k}": p.grad.detach().clone() for k, p in params
                            if p.grad is not None})
        if name == "mult":
            torch.nn.utils.clip_grad_value_([p for _, p in params], CLIP_VALUE)
        optimizer.step()
    tensors.update({f"after.{k}": v for k, v in state(model).items()})
    model.eval()
    with torch.no_grad():
        tensors["output.eval_after"] = model(text, shaped(audio), shaped(video))["M"].view(-1)
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, str(HERE / f"{name}.safetensors"),
              metadata={"settings": json.dumps({**args, **OPTIM[name], "batch": B, "steps": 3,
                                                **({"clip_value": CLIP_VALUE} if name == "mult" else {})})})


def defaults():
    config = json.loads((ROOT / "config/config_regression.json").read_text())
    keep = ["hidden_dims", "text_out", "post_fusion_dim", "dropouts", "batch_size",
            "learning_rate", "weight_decay", "rank", "factor_lr", "num_layers", "dropout",
            # MulT's
            "dst_feature_dim_nheads", "nlevels", "conv1d_kernel_size_l", "conv1d_kernel_size_a",
            "conv1d_kernel_size_v", "attn_dropout", "attn_dropout_a", "attn_dropout_v",
            "relu_dropout", "embed_dropout", "res_dropout", "output_dropout", "text_dropout",
            "grad_clip", "patience",
            # MFN's
            "memsize", "windowsize", "NN1Config", "NN2Config", "gamma1Config", "gamma2Config",
            "outConfig"]
    common = ["early_stop", "attn_mask", "update_epochs"]
    out = {m: {d: {**{k: v.get(k) for k in keep},
                   **{k: config[m]["commonParams"].get(k) for k in common}}
               for d, v in config[m]["datasetParams"].items()}
           for m in ["lf_dnn", "tfn", "lmf", "ef_lstm", "mult", "mfn"]}
    (HERE / "mmsa_defaults.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    for model_name, model_cls in mmsa_models().items():
        golden(model_name, model_cls)
    defaults()
    print("torch", torch.__version__)
