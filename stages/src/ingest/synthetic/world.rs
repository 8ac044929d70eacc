//! The generative model behind the synthetic datasets.
//!
//! Every segment has latent factors (K = 16): its sentiment (or valence), six emotion
//! intensities (or arousal), four speaker-style factors and five frame-level nuisance factors
//! that drift over time. Each modality maps the latents into its feature space through a
//! fixed random projection, adds unit noise per value, then a per-feature affine map that
//! gives features realistic scales and offsets (GloVe-like values around 0, COVAREP and
//! OpenFace columns in very different units). Each modality sees the sentiment with its own
//! per-segment noise, so text is more informative than audio, audio more than video.
//!
//! Text and acoustic spaces come from `shared_space_seed` (datasets built with the same value
//! share them, as MOSI and MOSEI share GloVe and COVAREP); visual spaces come from the
//! stage's seed, so MOSI's MediaPipe space differs from MOSEI's OpenFace2 space.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::profile::{ModalitySpec, Space};

/// Number of latent factors.
pub const LATENTS: usize = 16;
/// Index of the sentiment (valence) factor.
pub const SENTIMENT: usize = 0;
/// Index of the first of the six emotion factors (arousal for valence/arousal data).
pub const EMOTION: usize = 1;
/// Index of the first of the four speaker-style factors.
pub const STYLE: usize = 7;
/// Index of the first of the five frame-level nuisance factors.
pub const NUISANCE: usize = 11;

/// A seeded RNG for a named purpose: the same seed and name always give the same stream.
pub fn rng_for(seed: u64, name: &str) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(name.as_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

/// Draws a standard normal f64.
pub fn normal(rng: &mut impl Rng) -> f64 {
    rng.sample::<f64, _>(StandardNormal)
}

/// One modality's feature space.
pub struct FeatureSpace {
    /// The modality.
    pub spec: ModalitySpec,
    /// D × K projection, row-major.
    projection: Vec<f32>,
    /// Per-feature scale.
    scale: Vec<f32>,
    /// Per-feature offset.
    offset: Vec<f32>,
    /// Columns that occasionally hold -inf (COVAREP's log-energy-like columns).
    inf_columns: Vec<usize>,
    /// Feature noise multiplier.
    noise: f32,
}

impl FeatureSpace {
    /// Builds the space of `spec`: shared spaces from `shared_seed`, visual ones from
    /// `dataset_seed`; acoustic spaces get a per-dataset offset from `dataset_seed`.
    pub fn new(
        spec: ModalitySpec,
        shared_seed: u64,
        dataset_seed: u64,
        dataset: &str,
        noise: f32,
    ) -> Self {
        let d = spec.dim;
        let mut rng = match spec.space {
            Space::Text => rng_for(shared_seed, "space/text"),
            Space::Acoustic => rng_for(shared_seed, "space/acoustic"),
            Space::Visual => rng_for(dataset_seed, &format!("space/visual/{dataset}/{d}")),
        };
        // Sentiment direction: a unit vector, so the signal strength is the same at any D.
        let mut direction: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
        let norm = direction
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        direction.iter_mut().for_each(|x| *x /= norm);
        let mut projection = vec![0f32; d * LATENTS];
        for j in 0..d {
            projection[j * LATENTS + SENTIMENT] = (2.0 * direction[j]) as f32;
            for k in 1..LATENTS {
                projection[j * LATENTS + k] = (normal(&mut rng) / (LATENTS as f64).sqrt()) as f32;
            }
        }
        let (scale, mut offset): (Vec<f32>, Vec<f32>) = match spec.space {
            Space::Text => (vec![0.3; d], vec![0.0; d]),
            Space::Acoustic | Space::Visual => (0..d)
                .map(|_| {
                    let s = (rng.random_range((0.05f64).ln()..(50f64).ln())).exp();
                    (s as f32, (normal(&mut rng) * 2.0 * s) as f32)
                })
                .unzip(),
        };
        let inf_columns = if spec.neginf_rate > 0.0 {
            vec![rng.random_range(0..d), rng.random_range(0..d)]
        } else {
            Vec::new()
        };
        if spec.space == Space::Acoustic {
            let mut shift = rng_for(dataset_seed, &format!("shift/acoustic/{dataset}"));
            for (o, s) in offset.iter_mut().zip(&scale) {
                *o += (normal(&mut shift) * 0.5) as f32 * s;
            }
        }
        FeatureSpace {
            spec,
            projection,
            scale,
            offset,
            inf_columns,
            noise,
        }
    }

    /// Generates `length` frames for a segment whose latents are `latent` (per-frame
    /// nuisance is drawn here), appending them row-major to `out`.
    pub fn frames(
        &self,
        latent: &[f64; LATENTS],
        length: usize,
        rng: &mut impl Rng,
        out: &mut Vec<f32>,
    ) {
        let d = self.spec.dim;
        // This modality's noisy view of the segment's sentiment.
        let mut z = *latent;
        z[SENTIMENT] += normal(rng) * self.spec.segment_noise;
        let mut drift = [0f64; LATENTS - NUISANCE];
        for v in drift.iter_mut() {
            *v = normal(rng);
        }
        let mut zf = [0f32; LATENTS];
        for _ in 0..length {
            for v in drift.iter_mut() {
                *v = 0.8 * *v + 0.6 * normal(rng);
            }
            for k in 0..LATENTS {
                zf[k] = if k >= NUISANCE {
                    drift[k - NUISANCE] as f32
                } else {
                    (z[k] + 0.3 * normal(rng)) as f32
                };
            }
            if self.spec.nan_frame_rate > 0.0 && rng.random::<f64>() < self.spec.nan_frame_rate {
                out.extend(std::iter::repeat_n(f32::NAN, d));
                continue;
            }
            let start = out.len();
            out.extend((0..d).map(|j| {
                let row = &self.projection[j * LATENTS..(j + 1) * LATENTS];
                let mut x = 0f32;
                for k in 0..LATENTS {
                    x += row[k] * zf[k];
                }
                x += self.noise * rng.sample::<f32, _>(StandardNormal);
                x * self.scale[j] + self.offset[j]
            }));
            for &c in &self.inf_columns {
                if rng.random::<f64>() < self.spec.neginf_rate {
                    out[start + c] = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// Rounds to the nearest multiple of `1 / denominator` (annotator averages: MOSEI labels
/// are means of 3 ratings, MOSI's of 5).
pub fn round_to(x: f64, denominator: f64) -> f64 {
    (x * denominator).round() / denominator
}
