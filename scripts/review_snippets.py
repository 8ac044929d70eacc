"""Writes `review_snippets.pkl`: 10,605 human-rated movie-review snippets as an MMSA-layout
pickle (`id`, `raw_text`, `regression_labels` per split), for the real-text study of
`configs/text_finetune.toml` (README: "Walkthrough: fine-tuning the text encoder").

    python scripts/review_snippets.py --out data/review_snippets.pkl

The snippets and their ratings are Hutto & Gilbert's (ICWSM 2014) ground truth for VADER:
sentence-level snippets of rottentomatoes.com reviews (from Pang & Lee's 2004 set), each
rated by 15 to 29 people on −4 … +4, the label being their mean. They ship inside the source
distribution of the PyPI package `vaderSentiment` 3.3.2 (MIT licence), which this script
downloads with pip (or reads from `--sdist`), checks by SHA-256, and reads without unpacking
to disk: `additional_resources/hutto_ICWSM_2014.tar.gz` →
`hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt` (`ID <tab> mean <tab> text`). Cite
the paper when you use them.

The split is fixed: a seeded shuffle, 70 / 10 / 20 % → train 7,423, valid 1,061, test 2,121.
Labels are the raters' means × 3/4, so that they span MOSI's [−3, 3] and MMSA's metrics
(Acc-7's clipping, Acc-2's sign) read them as they read MOSI's. Running it again writes the
same bytes.
"""
import argparse
import hashlib
import io
import pathlib
import pickle
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

PACKAGE = "vadersentiment==3.3.2"
SDIST = "vaderSentiment-3.3.2.tar.gz"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
INNER_SHA256 = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
SNIPPETS = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
SEED = 20141


def sdist(given):
    """The source distribution's bytes: `given`, or downloaded by pip."""
    if given:
        return pathlib.Path(given).read_bytes()
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps",
             "--no-binary", ":all:", "--quiet", "-d", work],
            check=True,
        )
        return (pathlib.Path(work) / SDIST).read_bytes()


def checked(data, sha256, what):
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        sys.exit(f"{what}: SHA-256 {got}, expected {sha256}")
    return data


def member(archive, name):
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return tar.extractfile(name).read()


def snippets(text):
    """(id, mean rating, snippet) of every line."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            sys.exit(f"{SNIPPETS}: line {number} has {len(fields)} fields, not 3")
        rows.append((fields[0].strip(), float(fields[1]), fields[2].strip()))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="review_snippets.pkl")
    parser.add_argument("--sdist", help=f"{SDIST} already downloaded")
    args = parser.parse_args()
    outer = checked(sdist(args.sdist), SDIST_SHA256, SDIST)
    inner = checked(member(outer, INNER), INNER_SHA256, INNER)
    rows = snippets(member(inner, SNIPPETS).decode("utf-8"))
    order = np.random.default_rng(SEED).permutation(len(rows))
    n_train, n_test = int(0.7 * len(rows)), round(0.2 * len(rows))
    n_valid = len(rows) - n_train - n_test
    parts = {
        "train": order[:n_train],
        "valid": order[n_train:n_train + n_valid],
        "test": order[n_train + n_valid:],
    }
    data = {}
    for split, index in parts.items():
        picked = [rows[i] for i in sorted(index)]
        data[split] = {
            "id": np.array([f"snippet{r[0]}$_$0" for r in picked]),
            "raw_text": np.array([r[2] for r in picked], dtype=object),
            "regression_labels": np.array([0.75 * r[1] for r in picked], dtype=np.float32),
        }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        pickle.dump(data, f, protocol=4)
    sizes = ", ".join(f"{k} {len(v['id'])}" for k, v in data.items())
    print(f"{out}: {len(rows)} snippets ({sizes})")


if __name__ == "__main__":
    main()
