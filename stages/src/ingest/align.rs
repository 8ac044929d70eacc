//! The CMU Multimodal SDK's alignment, reproduced exactly (same intersections, same epsilon
//! semantics, same floating-point arithmetic), one video at a time.
//!
//! The standard recipe is two alignments:
//!
//! 1. every modality to the **word** intervals: for each word with a non-zero interval, the
//!    frames of each modality that intersect it are clipped to it and *collapsed* (mean by
//!    default) into one row whose interval spans the clipped pieces;
//! 2. the word-level rows to the **label** intervals, without collapsing: each label interval
//!    `i` of video `v` becomes segment `v[i]`, a word-level sequence per modality.
//!
//! Intersection (`mmdataset.__intersect_and_copy`): a frame `[s0, s1]` intersects a reference
//! `[r0, r1]` when `r1 − s0 > −ε` and `s1 − r0 > −ε`; it is clipped to
//! `[max(s0, r0), min(s1, r1)]` and kept if that piece is longer than ε. Reference intervals
//! shorter than ε are skipped. Frames are sorted by start time (stably) first. Collapse
//! functions compute like numpy does on the stored dtype (`np.average(x, axis=0)` on float32
//! is a sequential float32 sum divided in float32), so results match the SDK bit for bit.
//!
//! Follows the CMU Multimodal SDK (CMU-MultiComp-Lab/CMU-MultimodalSDK, commit
//! `3e27d3781fe38b660432c7edfa7912bd0d256ee1`, the latest change of the file; released on PyPI as
//! `cmu-multimodal-sdk` 0.0.6): `mmsdk/mmdatasdk/dataset/dataset.py`, `mmdataset.align`,
//! `mmdataset.__intersect_and_copy` and `mmdataset.__collapse`. Golden tests: the SDK's own
//! alignment output on its own files (`tests/data/sdk/`, cut by `tests/data/make_fixtures.py`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The SDK's epsilon for interval comparisons (`epsilon = 10e-4` in the CMU-MultimodalSDK
/// release on PyPI).
pub const SDK_EPSILON: f64 = 10e-4;

/// Feature values as stored: the SDK computes in the file's dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// float32 features.
    F32(Vec<f32>),
    /// float64 features.
    F64(Vec<f64>),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
        }
    }

    /// True if there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (float64 rounded).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Values::F32(v) => v.clone(),
            Values::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    fn empty_like(&self) -> Values {
        match self {
            Values::F32(_) => Values::F32(Vec::new()),
            Values::F64(_) => Values::F64(Vec::new()),
        }
    }

    fn push_row(&mut self, from: &Values, row: usize, dim: usize) {
        match (self, from) {
            (Values::F32(a), Values::F32(b)) => a.extend_from_slice(&b[row * dim..(row + 1) * dim]),
            (Values::F64(a), Values::F64(b)) => a.extend_from_slice(&b[row * dim..(row + 1) * dim]),
            _ => unreachable!("rows are only moved between sequences of one dtype"),
        }
    }
}

/// One modality of one video: `T` intervals and `T × dim` feature values (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// `[start, end]` of each frame, in seconds.
    pub intervals: Vec<[f64; 2]>,
    /// The features.
    pub values: Values,
    /// Feature width.
    pub dim: usize,
}

impl Sequence {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.intervals.len()
    }

    /// True if there are no frames.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    fn empty_like(&self) -> Sequence {
        Sequence {
            intervals: Vec::new(),
            values: self.values.empty_like(),
            dim: self.dim,
        }
    }

    /// The same frames sorted by start time (stable), as the SDK's pre-alignment does.
    pub fn sorted_by_start(self) -> Sequence {
        if self.intervals.windows(2).all(|w| w[0][0] <= w[1][0]) {
            return self;
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by(|&a, &b| self.intervals[a][0].total_cmp(&self.intervals[b][0]));
        let mut out = self.empty_like();
        for i in order {
            out.intervals.push(self.intervals[i]);
            out.values.push_row(&self.values, i, self.dim);
        }
        out
    }
}

/// How the frames inside one word are collapsed into one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Collapse {
    /// `np.average(features, axis=0)`: the standard recipe.
    #[default]
    Mean,
    /// `np.min(features, axis=0)`.
    Min,
    /// `np.max(features, axis=0)`.
    Max,
    /// `np.std(features, axis=0)` (population).
    Std,
    /// The first frame.
    First,
    /// The last frame.
    Last,
}

/// A sequence sorted by start time, indexed so that the frames that can intersect an
/// interval are found by binary search instead of a scan of every frame.
pub struct Timeline {
    /// The frames, sorted by start.
    pub seq: Sequence,
    /// Running maximum of the frames' end times.
    max_end: Vec<f64>,
}

impl Timeline {
    /// Sorts `seq` by start (stably) and indexes it.
    pub fn new(seq: Sequence) -> Timeline {
        let seq = seq.sorted_by_start();
        let mut max_end = Vec::with_capacity(seq.len());
        let mut running = f64::NEG_INFINITY;
        for iv in &seq.intervals {
            running = if iv[1] > running { iv[1] } else { running };
            max_end.push(running);
        }
        Timeline { seq, max_end }
    }

    /// True if the timeline has no frame.
    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    /// The frames intersecting `reference`, clipped to it (see [`intersect`]).
    pub fn intersect(&self, reference: [f64; 2], epsilon: f64) -> Sequence {
        let [r0, r1] = reference;
        // Frames past `upper` start too late, frames before `lower` all end too early: the
        // same comparisons as the scan, on monotone sequences, so nothing is skipped wrongly.
        let upper = self
            .seq
            .intervals
            .partition_point(|iv| (-iv[0] - -r1) > -epsilon);
        // Negated on purpose: a NaN end compares as the SDK's expression does.
        #[expect(
            clippy::neg_cmp_op_on_partial_ord,
            reason = "a NaN end must compare as the SDK's negated expression does"
        )]
        let lower = self
            .max_end
            .partition_point(|&end| !((end - r0) > -epsilon));
        intersect_range(reference, &self.seq, epsilon, lower..upper.max(lower))
    }
}

/// The frames of `sub` (sorted by start) that intersect `reference`, clipped to it.
pub fn intersect(reference: [f64; 2], sub: &Sequence, epsilon: f64) -> Sequence {
    intersect_range(reference, sub, epsilon, 0..sub.len())
}

fn intersect_range(
    reference: [f64; 2],
    sub: &Sequence,
    epsilon: f64,
    range: std::ops::Range<usize>,
) -> Sequence {
    let [r0, r1] = reference;
    let mut out = sub.empty_like();
    for (i, &[s0, s1]) in sub
        .intervals
        .iter()
        .enumerate()
        .skip(range.start)
        .take(range.len())
    {
        // numpy: all((sub_copy - ref_copy) > -eps) with sub_copy = [-s0, s1], ref_copy = [-r1, r0]
        if (-s0 - -r1) > -epsilon && (s1 - r0) > -epsilon {
            let piece = [s0.max(r0), s1.min(r1)];
            if (piece[0] - piece[1]).abs() > epsilon {
                out.intervals.push(piece);
                out.values.push_row(&sub.values, i, sub.dim);
            }
        }
    }
    out
}

trait Float:
    Copy
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    fn from_usize(n: usize) -> Self;
    fn sqrt(self) -> Self;
    fn is_nan(self) -> bool;
}

impl Float for f32 {
    fn from_usize(n: usize) -> Self {
        n as f32
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Float for f64 {
    fn from_usize(n: usize) -> Self {
        n as f64
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// Collapses `rows` (n × dim, n ≥ 1) into one row, computing as numpy does in `T`.
fn collapse_rows<T: Float>(rows: &[T], dim: usize, how: Collapse) -> Vec<T> {
    let n = rows.len() / dim;
    let row = |i: usize| &rows[i * dim..(i + 1) * dim];
    match how {
        Collapse::First => row(0).to_vec(),
        Collapse::Last => row(n - 1).to_vec(),
        Collapse::Mean | Collapse::Std => {
            let mut acc = row(0).to_vec();
            for i in 1..n {
                for (a, &x) in acc.iter_mut().zip(row(i)) {
                    *a = *a + x;
                }
            }
            let count = T::from_usize(n);
            let mean: Vec<T> = acc.iter().map(|&a| a / count).collect();
            if how == Collapse::Mean {
                return mean;
            }
            let sq = |i: usize, j: usize| {
                let d = row(i)[j] - mean[j];
                d * d
            };
            (0..dim)
                .map(|j| {
                    let mut s = sq(0, j);
                    for i in 1..n {
                        s = s + sq(i, j);
                    }
                    (s / count).sqrt()
                })
                .collect()
        }
        Collapse::Min | Collapse::Max => {
            let mut acc = row(0).to_vec();
            for i in 1..n {
                for (a, &x) in acc.iter_mut().zip(row(i)) {
                    // numpy's minimum/maximum propagate NaN.
                    if a.is_nan() || x.is_nan() {
                        if x.is_nan() {
                            *a = x;
                        }
                    } else if (how == Collapse::Min && x < *a) || (how == Collapse::Max && x > *a) {
                        *a = x;
                    }
                }
            }
            acc
        }
    }
}

/// Collapses a non-empty sequence into one row spanning `[min, max]` of its intervals.
pub fn collapse(seq: &Sequence, how: Collapse) -> ([f64; 2], Values) {
    let lo = seq
        .intervals
        .iter()
        .flat_map(|i| i.iter().copied())
        .fold(f64::INFINITY, f64::min);
    let hi = seq
        .intervals
        .iter()
        .flat_map(|i| i.iter().copied())
        .fold(f64::NEG_INFINITY, f64::max);
    let values = match &seq.values {
        Values::F32(v) => Values::F32(collapse_rows(v, seq.dim, how)),
        Values::F64(v) => Values::F64(collapse_rows(v, seq.dim, how)),
    };
    ([lo, hi], values)
}

/// Step 1: aligns `sub` to each interval of `words`; the result has one row per word that
/// `sub` intersects (in word order).
pub fn align_to_words(words: &[[f64; 2]], sub: &Timeline, how: Collapse, epsilon: f64) -> Sequence {
    let mut out = sub.seq.empty_like();
    for &word in words {
        if (word[0] - word[1]).abs() < epsilon {
            continue;
        }
        let pieces = sub.intersect(word, epsilon);
        if pieces.is_empty() {
            continue;
        }
        let (interval, row) = collapse(&pieces, how);
        out.intervals.push(interval);
        match (&mut out.values, row) {
            (Values::F32(a), Values::F32(b)) => a.extend(b),
            (Values::F64(a), Values::F64(b)) => a.extend(b),
            _ => unreachable!("collapse keeps the dtype"),
        }
    }
    out
}

/// The reference itself after step 1: its non-zero-length rows, each collapsed with itself
/// (the SDK applies the collapse functions to the reference too: `std` makes it zero).
pub fn words_after_alignment(words: &Sequence, how: Collapse, epsilon: f64) -> Sequence {
    let mut out = words.empty_like();
    for (i, &w) in words.intervals.iter().enumerate() {
        if (w[0] - w[1]).abs() < epsilon {
            continue;
        }
        let mut one = words.empty_like();
        one.intervals.push(w);
        one.values.push_row(&words.values, i, words.dim);
        let (interval, row) = collapse(&one, how);
        out.intervals.push(interval);
        match (&mut out.values, row) {
            (Values::F32(a), Values::F32(b)) => a.extend(b),
            (Values::F64(a), Values::F64(b)) => a.extend(b),
            _ => unreachable!("collapse keeps the dtype"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(intervals: &[[f64; 2]], values: &[f32], dim: usize) -> Sequence {
        Sequence {
            intervals: intervals.to_vec(),
            values: Values::F32(values.to_vec()),
            dim,
        }
    }

    #[test]
    fn intersection_clips_and_drops_slivers() {
        let frames = seq(
            &[[0.0, 0.1], [0.1, 0.2], [0.2, 0.3], [0.3, 0.4]],
            &[1.0, 2.0, 3.0, 4.0],
            1,
        );
        // [0.15, 0.3005]: frames 1 and 2; frame 3 overlaps by 0.0005 < ε and is dropped.
        let got = intersect([0.15, 0.3005], &frames, SDK_EPSILON);
        assert_eq!(got.intervals, vec![[0.15, 0.2], [0.2, 0.3]]);
        assert_eq!(got.values, Values::F32(vec![2.0, 3.0]));
        // The indexed search finds the same frames.
        let timeline = Timeline::new(frames.clone());
        for r in [
            [0.15, 0.3005],
            [0.0, 0.4],
            [0.35, 0.5],
            [-1.0, 0.0],
            [0.1, 0.1],
        ] {
            assert_eq!(
                timeline.intersect(r, SDK_EPSILON),
                intersect(r, &frames, SDK_EPSILON),
                "{r:?}"
            );
        }
    }

    /// numpy: `np.average(np.array([[1e8, 1], [1, 1], [-1e8, 1]], np.float32), axis=0)`
    /// is `[0.33333334, 1.]` (the float32 sum loses the middle 1).
    #[test]
    fn mean_computes_in_float32_like_numpy() {
        let (_, v) = collapse(
            &seq(&[[0.0, 1.0]; 3], &[1e8, 1.0, 1.0, 1.0, -1e8, 1.0], 2),
            Collapse::Mean,
        );
        assert_eq!(v, Values::F32(vec![0.0, 1.0]));
        // In float64 the 1 survives.
        let s = Sequence {
            intervals: vec![[0.0, 1.0]; 3],
            values: Values::F64(vec![1e8, 1.0, 1.0, 1.0, -1e8, 1.0]),
            dim: 2,
        };
        assert_eq!(
            collapse(&s, Collapse::Mean).1,
            Values::F64(vec![1.0 / 3.0, 1.0])
        );
    }

    #[test]
    fn collapse_functions() {
        let s = seq(
            &[[0.0, 1.0], [1.0, 2.0], [2.0, 3.5]],
            &[1.0, f32::NAN, 4.0, 2.0, -2.0, 3.0],
            2,
        );
        let (interval, mean) = collapse(&s, Collapse::Mean);
        assert_eq!(interval, [0.0, 3.5]);
        match mean {
            Values::F32(v) => {
                assert_eq!(v[0], 1.0);
                assert!(v[1].is_nan());
            }
            _ => panic!(),
        }
        let pick = |how| match collapse(&s, how).1 {
            Values::F32(v) => v,
            _ => panic!(),
        };
        assert_eq!(pick(Collapse::Min)[0], -2.0);
        assert!(pick(Collapse::Min)[1].is_nan());
        assert_eq!(pick(Collapse::Max)[0], 4.0);
        assert_eq!(pick(Collapse::First)[0], 1.0);
        assert_eq!(pick(Collapse::Last), vec![-2.0, 3.0]);
        // np.std([1, 4, -2]) = 2.4494898
        assert!((pick(Collapse::Std)[0] - 2.449_489_8).abs() < 1e-6);
    }
}
