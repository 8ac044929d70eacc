"""Writes `tiny-bert/`, a BERT-shaped model folder small enough to ship with the repository, so
that `configs/raw_text.toml` runs on a fresh clone.

    python tests/data/models/make_tiny_bert.py

Its weights are random (seeded): the vectors it gives carry the identity of the words, not
their meaning. It exists to show the wiring; for real features point `embed_text`'s `model` at
a real model folder (e.g. all-MiniLM-L6-v2, or bert-base-uncased for MMSA-style token
features). Files: `config.json` (Hugging Face's BERT keys), `tokenizer.json` (a lower-casing
WordPiece over the English words of the MMSA fixtures in `tests/data/mmsa`), and
`model.safetensors` (float32, the tensor names Hugging Face saves), written with numpy alone.
Running it again writes the same bytes.
"""
import json
import os
import struct

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-bert")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["it", "was", "really", "good", "not", "bad", "so", "boring", "fine", "great",
         "the", "movie", "is", "very", "and", "a", "i", "liked", "hated", "this", ".", ",", "!", "?"]
VOCAB = SPECIAL + WORDS
HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 32, 2, 4, 64, 64


def config():
    return {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": len(VOCAB),
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
        "pad_token_id": 0, "position_embedding_type": "absolute",
    }


def tokenizer():
    special = lambda t: {"SpecialToken": {"id": t, "type_id": 0}}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, t in enumerate(SPECIAL)],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
                           "pair": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]"),
                                    {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                           "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                                              "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": None,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": {t: i for i, t in enumerate(VOCAB)}},
    }


def weights():
    rng = np.random.default_rng(20261202)
    tensors = {}

    def add(name, shape, centre=0.0, scale=0.1):
        tensors[name] = (centre + scale * rng.standard_normal(shape)).astype("<f4")

    def layer_norm(at):
        add(f"{at}.LayerNorm.weight", (HIDDEN,), 1.0, 0.0)
        add(f"{at}.LayerNorm.bias", (HIDDEN,), 0.0, 0.0)

    add("embeddings.word_embeddings.weight", (len(VOCAB), HIDDEN), scale=1.0)
    add("embeddings.position_embeddings.weight", (POSITIONS, HIDDEN))
    add("embeddings.token_type_embeddings.weight", (2, HIDDEN))
    layer_norm("embeddings")
    for layer in range(LAYERS):
        at = f"encoder.layer.{layer}"
        for m in ["query", "key", "value"]:
            add(f"{at}.attention.self.{m}.weight", (HIDDEN, HIDDEN))
            add(f"{at}.attention.self.{m}.bias", (HIDDEN,))
        add(f"{at}.attention.output.dense.weight", (HIDDEN, HIDDEN))
        add(f"{at}.attention.output.dense.bias", (HIDDEN,))
        layer_norm(f"{at}.attention.output")
        add(f"{at}.intermediate.dense.weight", (INTERMEDIATE, HIDDEN))
        add(f"{at}.intermediate.dense.bias", (INTERMEDIATE,))
        add(f"{at}.output.dense.weight", (HIDDEN, INTERMEDIATE))
        add(f"{at}.output.dense.bias", (HIDDEN,))
        layer_norm(f"{at}.output")
    return tensors


def write_safetensors(path, tensors):
    """The safetensors format: a little-endian u64 header length, a JSON header, the data."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        data = tensors[name].tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def main():
    os.makedirs(HERE, exist_ok=True)
    with open(os.path.join(HERE, "config.json"), "w") as f:
        json.dump(config(), f, indent=2)
        f.write("\n")
    with open(os.path.join(HERE, "tokenizer.json"), "w") as f:
        json.dump(tokenizer(), f, indent=1, ensure_ascii=False)
        f.write("\n")
    write_safetensors(os.path.join(HERE, "model.safetensors"), weights())


if __name__ == "__main__":
    main()
