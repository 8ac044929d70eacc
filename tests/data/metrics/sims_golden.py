"""Writes `sims_golden.json`: MMSA's CH-SIMS regression metrics of predictions and labels, the
reference `stages/src/metrics.rs` is tested against (to 1e-9, neither side rounded).

    python tests/data/metrics/sims_golden.py

Needs numpy and scikit-learn (`pip install -r benches/requirements-bench.txt` has both; MMSA
itself and torch are not needed). Tests never run this script: they read what it wrote.

MMSA's function is copied below unchanged. It receives torch tensors and calls
`.view(-1).cpu().detach().numpy()` on them; `Tensor` stands in for torch with exactly those
calls, holding float32 arrays as MMSA's tensors do (numpy then compares the values with the
class boundaries in float32, and averages the absolute errors in float32).

Cases: every class boundary (0, ±0.1, ±0.7, ±1, ±1.01) hit exactly and by the neighbouring
float32 values, values beyond ±1 that clipping makes ties, a split with one class only (F1's
absent class), constant predictions (`Corr` is NaN, written as null), and random sets the
sizes of CH-SIMS's and CH-SIMS v2's test splits.
"""

import json
from pathlib import Path

import numpy as np
import sklearn
from sklearn.metrics import f1_score

OUT = Path(__file__).with_name("sims_golden.json")


class Tensor:
    """The torch calls MMSA's function makes, on a float32 numpy array."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float32)

    def view(self, *shape):
        return Tensor(self.values.reshape(shape))

    def cpu(self):
        return self

    def detach(self):
        return self

    def numpy(self):
        return self.values


# ---------------------------------------------------------------------------------------------
# From MMSA, `src/MMSA/utils/metricsTop.py` (class `MetricsTop`, the two methods the CH-SIMS
# regression metrics use), https://github.com/thuiar/MMSA, commit
# 177bc0462a61b355c554812dedd432a21f374130. MMSA's license:
#
# MIT License
#
# Copyright (c) 2020 iyuge2
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.
class MetricsTop():
    def __multiclass_acc(self, y_pred, y_true):
        """
        Compute the multiclass accuracy w.r.t. groundtruth

        :param preds: Float array representing the predictions, dimension (N,)
        :param truths: Float/int array representing the groundtruth classes, dimension (N,)
        :return: Classification accuracy
        """
        return np.sum(np.round(y_pred) == np.round(y_true)) / float(len(y_true))

    def __eval_sims_regression(self, y_pred, y_true):
        test_preds = y_pred.view(-1).cpu().detach().numpy()
        test_truth = y_true.view(-1).cpu().detach().numpy()
        test_preds = np.clip(test_preds, a_min=-1., a_max=1.)
        test_truth = np.clip(test_truth, a_min=-1., a_max=1.)

        # two classes{[-1.0, 0.0], (0.0, 1.0]}
        ms_2 = [-1.01, 0.0, 1.01]
        test_preds_a2 = test_preds.copy()
        test_truth_a2 = test_truth.copy()
        for i in range(2):
            test_preds_a2[np.logical_and(test_preds > ms_2[i], test_preds <= ms_2[i+1])] = i
        for i in range(2):
            test_truth_a2[np.logical_and(test_truth > ms_2[i], test_truth <= ms_2[i+1])] = i

        # three classes{[-1.0, -0.1], (-0.1, 0.1], (0.1, 1.0]}
        ms_3 = [-1.01, -0.1, 0.1, 1.01]
        test_preds_a3 = test_preds.copy()
        test_truth_a3 = test_truth.copy()
        for i in range(3):
            test_preds_a3[np.logical_and(test_preds > ms_3[i], test_preds <= ms_3[i+1])] = i
        for i in range(3):
            test_truth_a3[np.logical_and(test_truth > ms_3[i], test_truth <= ms_3[i+1])] = i
        
        # five classes{[-1.0, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1.0]}
        ms_5 = [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]
        test_preds_a5 = test_preds.copy()
        test_truth_a5 = test_truth.copy()
        for i in range(5):
            test_preds_a5[np.logical_and(test_preds > ms_5[i], test_preds <= ms_5[i+1])] = i
        for i in range(5):
            test_truth_a5[np.logical_and(test_truth > ms_5[i], test_truth <= ms_5[i+1])] = i
 
        mae = np.mean(np.absolute(test_preds - test_truth))   # Average L1 distance between preds and truths
        corr = np.corrcoef(test_preds, test_truth)[0][1]
        mult_a2 = self.__multiclass_acc(test_preds_a2, test_truth_a2)
        mult_a3 = self.__multiclass_acc(test_preds_a3, test_truth_a3)
        mult_a5 = self.__multiclass_acc(test_preds_a5, test_truth_a5)
        f_score = f1_score(test_truth_a2, test_preds_a2, average='weighted')

        eval_results = {
            "Mult_acc_2": mult_a2,
            "Mult_acc_3": mult_a3,
            "Mult_acc_5": mult_a5,
            "F1_score": f_score,
            "MAE": mae,
            "Corr": corr, # Correlation Coefficient
        }
        return eval_results
# End of MMSA's code.
# ---------------------------------------------------------------------------------------------


def sims_regression(pred, truth):
    return MetricsTop()._MetricsTop__eval_sims_regression(Tensor(pred), Tensor(truth))


def f32(values):
    return np.asarray(values, dtype=np.float32)


def neighbours(v):
    """v and the float32 values just below and above it."""
    v = np.float32(v)
    return [np.nextafter(v, np.float32(-np.inf)), v, np.nextafter(v, np.float32(np.inf))]


def cases():
    boundaries = [0.0, 0.1, -0.1, 0.7, -0.7, 1.0, -1.0, 1.01, -1.01]
    edge = f32([x for b in boundaries for x in neighbours(b)] + [0.05, -0.05, 0.4, -0.4, 0.9, -0.9])
    yield "boundaries_against_their_neighbours", edge, edge[::-1].copy()
    yield "boundaries_against_themselves", edge, edge.copy()
    # Beyond ±1 everything clips to ±1: ties with labels at ±1.
    yield "beyond_one_ties_after_clipping", f32([1.5, -3.0, 1.0, -1.0, 2.0, -1.2, 0.0, 0.1]), f32(
        [1.0, -1.0, 3.0, -2.5, 0.7, -0.7, -0.0, 0.1]
    )
    yield "one_class_of_labels", f32([-0.3, 0.2, 0.0, -1.0, 0.5]), f32([-0.2, -0.4, 0.0, -1.0, -0.6])
    yield "constant_predictions", f32([0.0] * 6), f32([-0.8, -0.2, 0.0, 0.2, 0.6, 1.0])
    rng = np.random.default_rng(20240601)
    grid = f32(np.round(np.arange(-1.0, 1.01, 0.2), 1))  # CH-SIMS's label values
    for name, n in [("random_sims_test_size", 457), ("random_simsv2_test_size", 1034)]:
        truth = rng.choice(grid, size=n)
        pred = f32(np.clip(truth * 0.6 + rng.normal(0.0, 0.45, n), -1.3, 1.3))
        # Some predictions exactly on a boundary, as a model's float32 output can be.
        at = rng.choice(n, size=n // 10, replace=False)
        pred[at] = rng.choice(f32([0.0, 0.1, -0.1, 0.7, -0.7, 1.0, -1.0]), size=len(at))
        yield name, pred, truth
    tenths = f32(np.round(np.arange(-1.2, 1.21, 0.1), 1))
    yield "tenths_grid", rng.choice(tenths, size=300), rng.choice(tenths, size=300)


def number(v):
    v = float(v)
    return None if np.isnan(v) else v


def main():
    out = {
        "about": "MMSA's __eval_sims_regression (src/MMSA/utils/metricsTop.py) on float32 "
        "predictions and labels; written by sims_golden.py; NaN is null",
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "cases": [],
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, pred, truth in cases():
            metrics = sims_regression(pred, truth)
            out["cases"].append(
                {
                    "name": name,
                    "pred": [float(v) for v in pred],
                    "truth": [float(v) for v in truth],
                    "metrics": {k: number(v) for k, v in metrics.items()},
                }
            )
    # One line per case: small, and a regenerated file diffs case by case.
    cases_ = out.pop("cases")
    lines = ",\n".join(json.dumps(case, separators=(",", ":")) for case in cases_)
    head = json.dumps(out)[:-1]
    OUT.write_text(f'{head}, "cases": [\n{lines}\n]}}\n')
    print(f"wrote {OUT}: {len(cases_)} cases")


if __name__ == "__main__":
    main()
