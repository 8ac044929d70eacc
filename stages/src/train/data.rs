//! Training data in memory: the segments table joined with one features table per modality,
//! and batches cut from it.
//!
//! Feature values arrive from Parquet as one contiguous `f32` buffer per column (the
//! `FixedSizeList` values), and batches are assembled with one row copy per segment (pooled
//! vectors) or per sequence (frames, padded to the longest in the batch with a mask and true
//! lengths) — never element by element.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use candle_core::{Device, Tensor};
use mmflow_pipeline::{ResolvedInput, StageError};
use mmflow_schemas::features::FeatureReader;
use mmflow_schemas::segments::SegmentTable;
use mmflow_schemas::Split;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::device::err;
use crate::text_encoder::{ModelFolder, Tokens};

/// One modality's features, rows aligned with [`Dataset::ids`].
#[derive(Debug, Clone)]
pub struct Modality {
    /// Modality (input output) name.
    pub name: String,
    /// Feature width.
    pub dim: usize,
    /// Pooled vectors, `rows × dim`.
    pub pooled: Vec<f32>,
    /// Frames of every row, row-major (empty unless loaded with frames).
    pub frames: Vec<f32>,
    /// Frame offsets per row (`rows + 1`; all 0 without frames).
    pub offsets: Vec<usize>,
}

impl Modality {
    /// Pooled vector of row `r`.
    pub fn pooled_of(&self, r: usize) -> &[f32] {
        &self.pooled[r * self.dim..(r + 1) * self.dim]
    }

    /// How many frames row `r` has.
    pub fn frames_in(&self, r: usize) -> usize {
        self.offsets[r + 1] - self.offsets[r]
    }

    /// Frames of row `r`.
    pub fn frames_of(&self, r: usize) -> &[f32] {
        &self.frames[self.offsets[r] * self.dim..self.offsets[r + 1] * self.dim]
    }
}

/// Segments that have every modality, with their labels and features.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Segment ids.
    pub ids: Vec<String>,
    /// Splits.
    pub splits: Vec<Split>,
    /// Speaker/user ids.
    pub users: Vec<Option<String>>,
    /// Label column → value per row.
    pub labels: BTreeMap<String, Vec<Option<f32>>>,
    /// The modalities, in input order.
    pub modalities: Vec<Modality>,
    /// Segments of the segments table left out because a modality lacks them.
    pub dropped: usize,
    /// The datasets the rows come from (the segments table's `dataset` column).
    pub datasets: BTreeSet<String>,
    /// Each row's text (the segments table's `text`; `None` where it has none).
    pub texts: Vec<Option<String>>,
    /// Each row's text as tokens, for a text encoder (empty otherwise: see [`Dataset::tokenize`]).
    pub tokens: Vec<Tokens>,
}

impl Dataset {
    /// Tokenises every row's text with `folder`'s tokenizer (once per run), or names the first
    /// segment of `table` without one. Returns how many texts were cut to `max_length`.
    pub fn tokenize(&mut self, folder: &ModelFolder, table: &str) -> Result<usize, StageError> {
        if let Some(r) = self.texts.iter().position(Option::is_none) {
            return Err(StageError::input(format!(
                "{table}: segment `{}` has no text; a text encoder reads every segment's `text` (does the source keep raw text?)",
                self.ids[r]
            )));
        }
        self.tokens = self
            .texts
            .par_iter()
            .map(|t| folder.tokenize(t.as_deref().unwrap_or_default()))
            .collect::<Result<_, _>>()?;
        if let Some(r) = self.tokens.iter().position(|t| t.ids.is_empty()) {
            return Err(StageError::input(format!(
                "{table}: segment `{}`'s text gives no token (its tokenizer adds no [CLS] or [SEP]): a text encoder pools at least one",
                self.ids[r]
            )));
        }
        Ok(self.tokens.iter().filter(|t| t.truncated).count())
    }

    /// Joins the segments table with the features tables (`frames`: whether to keep the
    /// sequences, or only pooled vectors).
    pub fn load(
        segments: &ResolvedInput,
        features: &[ResolvedInput],
        frames: &[bool],
    ) -> Result<Dataset, StageError> {
        let table = SegmentTable::read(&segments.path)?;
        let mut loaded = Vec::new();
        for (input, &with_frames) in features.iter().zip(frames) {
            let reader = if with_frames {
                FeatureReader::open(&input.path)?
            } else {
                FeatureReader::open_pooled(&input.path)?
            };
            let batch = reader.read_all()?;
            let index: HashMap<String, usize> = batch
                .segment_ids
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, s)| (s, i))
                .collect();
            loaded.push((input.reference.output.clone(), with_frames, batch, index));
        }
        let mut data = Dataset {
            ids: Vec::new(),
            splits: Vec::new(),
            users: Vec::new(),
            labels: table
                .label_names
                .iter()
                .map(|n| (n.clone(), Vec::new()))
                .collect(),
            modalities: loaded
                .iter()
                .map(|(name, _, batch, _)| Modality {
                    name: name.clone(),
                    dim: batch.dim,
                    pooled: Vec::new(),
                    frames: Vec::new(),
                    offsets: vec![0],
                })
                .collect(),
            dropped: 0,
            datasets: BTreeSet::new(),
            texts: Vec::new(),
            tokens: Vec::new(),
        };
        for row in &table.rows {
            let found: Option<Vec<usize>> = loaded
                .iter()
                .map(|(_, _, _, index)| index.get(&row.segment_id).copied())
                .collect();
            let Some(found) = found else {
                data.dropped += 1;
                continue;
            };
            if !data.datasets.contains(&row.dataset) {
                data.datasets.insert(row.dataset.clone());
            }
            data.ids.push(row.segment_id.clone());
            data.texts.push(row.text.clone());
            data.splits.push(row.split);
            data.users.push(row.speaker_id.clone());
            for (name, value) in table.label_names.iter().zip(&row.labels) {
                data.labels
                    .get_mut(name)
                    .expect("every label has a column")
                    .push(*value);
            }
            for ((m, (_, with_frames, batch, _)), &i) in
                data.modalities.iter_mut().zip(&loaded).zip(&found)
            {
                m.pooled.extend_from_slice(batch.pooled_of(i));
                if *with_frames {
                    m.frames.extend_from_slice(batch.frames_of(i));
                }
                let last = *m.offsets.last().expect("starts with 0");
                m.offsets
                    .push(last + if *with_frames { batch.length(i) } else { 0 });
            }
        }
        // Pooled vectors, and the frames an LSTM will read: one NaN would poison every batch.
        for m in &data.modalities {
            let bad_row = m
                .pooled
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| i / m.dim.max(1))
                .or_else(|| {
                    let frame = m.frames.iter().position(|v| !v.is_finite())? / m.dim.max(1);
                    Some(m.offsets.partition_point(|&o| o <= frame) - 1)
                });
            if let Some(row) = bad_row {
                return Err(StageError::input(format!(
                    "modality `{}`: segment `{}` has a non-finite feature: normalise with nonfinite = \"zero\" first",
                    m.name, data.ids[row]
                )));
            }
        }
        Ok(data)
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True if no segment has every modality.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Rows of a split.
    pub fn rows(&self, split: Split) -> Vec<usize> {
        (0..self.len())
            .filter(|&r| self.splits[r] == split)
            .collect()
    }

    /// A modality by name.
    pub fn modality(&self, name: &str) -> Option<&Modality> {
        self.modalities.iter().find(|m| m.name == name)
    }
}

/// `rows` in a seeded random order for `epoch` (Fisher–Yates with ChaCha8).
pub fn shuffled(rows: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out = rows.to_vec();
    out.shuffle(&mut rng);
    out
}

/// The pooled vectors of `rows` as a `B × dim` tensor.
pub fn pooled_batch(m: &Modality, rows: &[usize], device: &Device) -> Result<Tensor, StageError> {
    let mut values = Vec::with_capacity(rows.len() * m.dim);
    for &r in rows {
        values.extend_from_slice(m.pooled_of(r));
    }
    Tensor::from_vec(values, (rows.len(), m.dim), device).map_err(err("pooled batch"))
}

/// The frames of `rows`, right-padded with zeros to the longest: a `B × T × dim` tensor and
/// the true lengths (at least 1: an empty sequence gets one zero frame).
pub fn sequence_batch(
    m: &Modality,
    rows: &[usize],
    device: &Device,
) -> Result<(Tensor, Vec<usize>), StageError> {
    let lengths: Vec<usize> = rows
        .iter()
        .map(|&r| (m.offsets[r + 1] - m.offsets[r]).max(1))
        .collect();
    let t = lengths.iter().copied().max().unwrap_or(1);
    let mut values = vec![0f32; rows.len() * t * m.dim];
    for (b, &r) in rows.iter().enumerate() {
        let frames = m.frames_of(r);
        values[b * t * m.dim..b * t * m.dim + frames.len()].copy_from_slice(frames);
    }
    let tensor =
        Tensor::from_vec(values, (rows.len(), t, m.dim), device).map_err(err("sequence batch"))?;
    Ok((tensor, lengths))
}

/// Labels of `rows` for one column: values (missing ones as 0) and which are present.
pub fn label_batch(values: &[Option<f32>], rows: &[usize]) -> (Vec<f32>, Vec<bool>) {
    rows.iter()
        .map(|&r| (values[r].unwrap_or(0.0), values[r].is_some()))
        .unzip()
}

/// How a modality's rows reach the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The features table's pooled vector: B × D.
    Pooled,
    /// The frames, padded to the longest in the batch, with their lengths.
    Sequence,
    /// The frames padded with zeros (or cut) to this length: B × length × D.
    Padded(usize),
    /// The sum of the frames (the first `length`) ÷ this length: MMSA's mean over a padded
    /// array, B × D.
    PaddedMean(usize),
}

impl Feed {
    /// Whether the modality's frames must be loaded.
    pub fn needs_frames(self) -> bool {
        self != Feed::Pooled
    }
}

/// The frames of `rows` padded with zeros (or cut) to `length` steps: B × length × D.
pub fn padded_batch(
    m: &Modality,
    rows: &[usize],
    length: usize,
    device: &Device,
) -> Result<Tensor, StageError> {
    let step = length * m.dim;
    let mut values = vec![0f32; rows.len() * step];
    for (b, &r) in rows.iter().enumerate() {
        let frames = m.frames_of(r);
        let kept = frames.len().min(step);
        values[b * step..b * step + kept].copy_from_slice(&frames[..kept]);
    }
    Tensor::from_vec(values, (rows.len(), length, m.dim), device).map_err(err("padded batch"))
}

/// The mean of each row's frames over `length` steps, as over a zero-padded array (the sum
/// of the first `length` frames ÷ `length`, summed in f64): B × D.
pub fn padded_mean_batch(
    m: &Modality,
    rows: &[usize],
    length: usize,
    device: &Device,
) -> Result<Tensor, StageError> {
    let mut values = Vec::with_capacity(rows.len() * m.dim);
    for &r in rows {
        let mut sum = vec![0f64; m.dim];
        for frame in m.frames_of(r).chunks_exact(m.dim.max(1)).take(length) {
            for (s, &x) in sum.iter_mut().zip(frame) {
                *s += x as f64;
            }
        }
        values.extend(sum.iter().map(|s| (s / length.max(1) as f64) as f32));
    }
    Tensor::from_vec(values, (rows.len(), m.dim), device).map_err(err("padded mean batch"))
}

/// The most frames any row of `m` has.
pub fn longest(m: &Modality) -> usize {
    (0..m.offsets.len().saturating_sub(1))
        .map(|r| m.frames_in(r))
        .max()
        .unwrap_or(0)
}
