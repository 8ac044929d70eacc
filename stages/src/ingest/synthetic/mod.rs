//! The `synthetic` source: MOSEI-, MOSI- or valence/arousal-shaped data, deterministic from
//! the stage seed, with a known latent signal (see [`world`]).
//!
//! MOSI and MOSEI use the standard folds' real video ids and their real segment counts per
//! split; segment ids follow the SDK's `<video>[<i>]`. `scale` keeps the first fraction of
//! each split's videos, so a smaller dataset is a prefix of the larger one (every video's
//! content depends only on the seed and its id).

pub mod profile;
pub mod world;

use mmflow_pipeline::values::{AtLeastOne, NonNegative};
use mmflow_pipeline::{
    BoundInputs, InputSlot, OutputPort, ParamProblem, RunContext, StageError, StageKind,
};
use mmflow_schemas::features::{FeatureBatch, FeatureInfo, FeatureWriter};
use mmflow_schemas::segments::{Segment, SegmentTable};
use mmflow_schemas::{segment_id, Split};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::datasets::EMOTIONS;
use crate::folds;
use crate::slots;
use crate::tables::source_outputs;
use profile::{Profile, Shape};
use world::{normal, rng_for, round_to, FeatureSpace, EMOTION, LATENTS, SENTIMENT, STYLE};

/// Parameters of the `synthetic` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticParams {
    /// Dataset to imitate: `mosei`, `mosi` or `valence_arousal`.
    pub profile: Profile,
    /// Fraction of each split's videos (users) to generate, in (0, 1]. 1 = full size.
    pub scale: f64,
    /// Seed of the feature spaces shared across datasets (text embeddings, COVAREP).
    /// Datasets generated with the same value share them, as real MOSI and MOSEI do.
    pub shared_space_seed: u64,
    /// Longest sequence, in words (MMSA and MulT use 50).
    pub max_length: AtLeastOne,
    /// Multiplier of the per-value feature noise (1 = the calibrated default).
    pub noise: NonNegative,
    /// Videos generated (and written as one row group) at a time: bounds memory.
    pub chunk_videos: AtLeastOne,
}

impl Default for SyntheticParams {
    fn default() -> Self {
        SyntheticParams {
            profile: Profile::Mosei,
            scale: 1.0,
            shared_space_seed: 1,
            max_length: AtLeastOne::new(50),
            noise: NonNegative::new(1.0),
            chunk_videos: AtLeastOne::new(64),
        }
    }
}

/// The `synthetic` stage kind.
pub struct Synthetic;

impl StageKind for Synthetic {
    type Params = SyntheticParams;
    const KIND: &'static str = "synthetic";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "MOSI/MOSEI/valence-arousal shaped data with a known latent sentiment signal";

    fn check(&self, p: &SyntheticParams) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !(p.scale > 0.0 && p.scale <= 1.0) {
            problems.push(ParamProblem::new(
                "scale",
                format!("must be in (0, 1], got {}", p.scale),
            ));
        }
        problems
    }

    fn inputs(&self, _: &SyntheticParams) -> Vec<InputSlot> {
        Vec::new()
    }

    fn outputs(
        &self,
        p: &SyntheticParams,
        _: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        Ok(source_outputs(
            p.profile.shape().modalities.iter().map(|m| m.name),
        ))
    }

    fn run(&self, p: &SyntheticParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let shape = p.profile.shape();
        let videos = plan_videos(p, &shape, ctx.seed);
        let spaces: Vec<FeatureSpace> = shape
            .modalities
            .iter()
            .map(|m| {
                FeatureSpace::new(
                    *m,
                    p.shared_space_seed,
                    ctx.seed,
                    shape.dataset,
                    p.noise.get() as f32,
                )
            })
            .collect();
        let mut writers = Vec::new();
        for m in shape.modalities {
            let info = FeatureInfo {
                dataset: shape.dataset.to_string(),
                modality: m.name.to_string(),
                dim: m.dim,
            };
            writers.push(FeatureWriter::create(
                ctx.output_named(m.name)?,
                &info,
                ctx.table_meta(),
            )?);
        }
        let bar = ctx.progress.bar("generating videos", videos.len() as u64);
        let mut segments = Vec::new();
        for chunk in videos.chunks(p.chunk_videos.get()) {
            let generated: Vec<(Vec<Segment>, Vec<FeatureBatch>)> = chunk
                .par_iter()
                .map(|v| generate_video(p, &shape, &spaces, v, ctx.seed))
                .collect();
            let mut batches: Vec<FeatureBatch> = shape
                .modalities
                .iter()
                .map(|m| FeatureBatch::new(m.dim))
                .collect();
            for (segs, feats) in generated {
                segments.extend(segs);
                for (all, one) in batches.iter_mut().zip(feats) {
                    all.append(one);
                }
            }
            for (w, b) in writers.iter_mut().zip(batches) {
                w.write(b)?;
            }
            bar.inc(chunk.len() as u64);
        }
        for w in writers {
            w.finish()?;
        }
        let table = SegmentTable {
            label_names: shape.labels.iter().map(|s| s.to_string()).collect(),
            rows: segments,
        };
        table.write(ctx.output(slots::SEGMENTS)?, ctx.table_meta())?;
        let [train, valid, test] = table.split_counts();
        ctx.report("dataset", shape.dataset);
        ctx.report("videos", videos.len());
        ctx.report("segments", [train, valid, test]);
        Ok(())
    }
}

/// A video (or user) to generate.
#[derive(Debug, Clone)]
struct VideoPlan {
    id: String,
    split: Split,
    speaker: String,
    segments: usize,
}

/// Which videos to generate, in fold order, with their speaker and segment count.
fn plan_videos(p: &SyntheticParams, shape: &Shape, seed: u64) -> Vec<VideoPlan> {
    let mut rng = rng_for(seed, &format!("plan/{}", shape.dataset));
    if p.profile == Profile::ValenceArousal {
        let users = ((shape.speakers as f64 * p.scale).ceil() as usize).max(1);
        return (0..shape.speakers)
            .map(|u| {
                let texts = (38f64.ln() + 0.35 * normal(&mut rng))
                    .exp()
                    .round()
                    .clamp(12.0, 90.0) as usize;
                let id = format!("u{u:03}");
                VideoPlan {
                    speaker: id.clone(),
                    id,
                    split: Split::Train, // per text, see generate_video
                    segments: texts,
                }
            })
            .take(users)
            .collect();
    }
    let folds = match p.profile {
        Profile::Mosi => folds::mosi(),
        _ => folds::mosei(),
    };
    let total_videos: usize = Split::ALL.iter().map(|&s| folds.split(s).len()).sum();
    // Speakers: the first `speakers` videos have their own, the rest reuse one at random.
    let speaker_of: Vec<usize> = (0..total_videos)
        .map(|i| {
            if i < shape.speakers {
                i
            } else {
                rng.random_range(0..shape.speakers)
            }
        })
        .collect();
    let mut plans = Vec::new();
    let mut index = 0;
    for (s, &split) in Split::ALL.iter().enumerate() {
        let ids = folds.split(split);
        let counts = allocate(shape.segments[s], ids.len(), &mut rng);
        let keep = ((ids.len() as f64 * p.scale).ceil() as usize).clamp(1, ids.len());
        for (k, id) in ids.iter().enumerate() {
            if k < keep {
                plans.push(VideoPlan {
                    id: id.clone(),
                    split,
                    speaker: format!("spk{:04}", speaker_of[index]),
                    segments: counts[k],
                });
            }
            index += 1;
        }
    }
    plans
}

/// Splits `total` segments over `videos` videos: at least one each, the rest in proportion
/// to log-normal weights (largest remainders), so the total is exact.
fn allocate(total: usize, videos: usize, rng: &mut impl Rng) -> Vec<usize> {
    let spare = total.saturating_sub(videos);
    let weights: Vec<f64> = (0..videos).map(|_| (0.6 * normal(rng)).exp()).collect();
    let sum: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| w / sum * spare as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| 1 + x.floor() as usize).collect();
    let mut left = (videos + spare).saturating_sub(counts.iter().sum());
    let mut order: Vec<usize> = (0..videos).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a].fract(), exact[b].fract());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    counts
}

/// A user's text's valence (−2…2) and arousal (0…2) from its sentiment and the user's arousal
/// baseline; the arousal is also the text's emotion latent.
fn valence_arousal(
    sentiment: f64,
    user_arousal: f64,
    latent: &mut [f64; LATENTS],
    rng: &mut ChaCha8Rng,
) -> Vec<Option<f32>> {
    let arousal = user_arousal + 0.3 * sentiment.abs() + 0.6 * normal(rng);
    latent[EMOTION] = arousal;
    let valence = (1.2 * sentiment + 0.3 * normal(rng))
        .round()
        .clamp(-2.0, 2.0);
    let arousal = (arousal + 1.0 + 0.3 * normal(rng)).round().clamp(0.0, 2.0);
    vec![Some(valence as f32), Some(arousal as f32)]
}

/// A segment's sentiment label (−3…3, in MOSEI's thirds or MOSI's fifths) and, where the
/// shape has them, its six emotions (0…3, loading on the sentiment), each also a latent.
fn sentiment_labels(
    profile: Profile,
    shape: &Shape,
    sentiment: f64,
    latent: &mut [f64; LATENTS],
    rng: &mut ChaCha8Rng,
) -> Vec<Option<f32>> {
    let denominator = if profile == Profile::Mosei { 3.0 } else { 5.0 };
    let label = round_to(1.4 * sentiment + 0.45 * normal(rng), denominator).clamp(-3.0, 3.0);
    let mut labels = vec![Some(label as f32)];
    if shape.labels.len() > 1 {
        const LOADING: [f64; 6] = [0.8, -0.6, -0.5, 0.1, -0.4, -0.2];
        for (k, a) in LOADING.iter().enumerate().take(EMOTIONS.len()) {
            let e = a * sentiment + 0.7 * normal(rng);
            latent[EMOTION + k] = e;
            labels.push(Some(round_to((e - 0.3).max(0.0), 3.0).min(3.0) as f32));
        }
    }
    labels
}

/// Text `i` of a user's `n`, in time order: the first 70% train, then 15% valid, 15% test.
fn user_split(i: usize, n: usize) -> Split {
    let position = (i as f64 + 0.5) / n as f64;
    if position < 0.7 {
        Split::Train
    } else if position < 0.85 {
        Split::Valid
    } else {
        Split::Test
    }
}

/// Generates every segment of one video: its rows of the segments table and its features.
fn generate_video(
    p: &SyntheticParams,
    shape: &Shape,
    spaces: &[FeatureSpace],
    video: &VideoPlan,
    seed: u64,
) -> (Vec<Segment>, Vec<FeatureBatch>) {
    let mut rng = rng_for(seed, &format!("video/{}/{}", shape.dataset, video.id));
    let mut style_rng = rng_for(
        seed,
        &format!("speaker/{}/{}", shape.dataset, video.speaker),
    );
    let style: Vec<f64> = (0..4).map(|_| normal(&mut style_rng)).collect();
    let va = p.profile == Profile::ValenceArousal;
    // Video-level sentiment (opinion videos lean one way) or a user's baselines.
    let (video_mean, user_arousal) = match p.profile {
        Profile::Mosei => (0.35 + 0.8 * normal(&mut rng), 0.0),
        Profile::Mosi => (0.8 * normal(&mut rng), 0.0),
        Profile::ValenceArousal => (0.6 * normal(&mut style_rng), 0.5 * normal(&mut style_rng)),
    };
    let mut segments = Vec::with_capacity(video.segments);
    let mut batches: Vec<FeatureBatch> = spaces
        .iter()
        .map(|s| FeatureBatch::new(s.spec.dim))
        .collect();
    let mut clock = rng.random_range(0.0..2.0);
    let mut frames = Vec::new();
    for i in 0..video.segments {
        let mut latent = [0f64; LATENTS];
        let sentiment = video_mean + if va { 0.8 } else { 0.7 } * normal(&mut rng);
        latent[SENTIMENT] = sentiment;
        for (k, s) in style.iter().enumerate() {
            latent[STYLE + k] = *s;
        }
        let labels = if va {
            valence_arousal(sentiment, user_arousal, &mut latent, &mut rng)
        } else {
            sentiment_labels(p.profile, shape, sentiment, &mut latent, &mut rng)
        };
        let length = ((shape.median_length.ln() + shape.length_spread * normal(&mut rng))
            .exp()
            .round() as usize)
            .clamp(2, p.max_length.get().max(2))
            .min(p.max_length.get());
        let duration = length as f64 * rng.random_range(0.3..0.5);
        let (start, end) = (clock, clock + duration);
        clock = end + rng.random_range(0.2..1.5);
        let id = segment_id(&video.id, i);
        // Word-aligned: every modality's step t spans the t-th word of the segment.
        let step = duration / length as f64;
        let intervals: Vec<f64> = (0..length)
            .flat_map(|t| [start + t as f64 * step, start + (t + 1) as f64 * step])
            .collect();
        for (space, batch) in spaces.iter().zip(batches.iter_mut()) {
            frames.clear();
            space.frames(&latent, length, &mut rng, &mut frames);
            if va {
                batch.push(id.clone(), &frames);
            } else {
                batch.push_timed(id.clone(), &frames, &intervals);
            }
        }
        let split = if va {
            user_split(i, video.segments)
        } else {
            video.split
        };
        segments.push(Segment {
            dataset: shape.dataset.to_string(),
            video_id: video.id.clone(),
            segment_id: id,
            split,
            speaker_id: Some(video.speaker.clone()),
            start: (!va).then_some(start),
            end: (!va).then_some(end),
            labels,
            text: None,
        });
    }
    (segments, batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_exact_and_positive() {
        let mut rng = rng_for(3, "t");
        let counts = allocate(16326, 2250, &mut rng);
        assert_eq!(counts.iter().sum::<usize>(), 16326);
        assert!(counts.iter().all(|&c| c >= 1));
    }

    #[test]
    fn full_size_plans_match_the_real_datasets() {
        for (profile, videos, segments) in [
            (Profile::Mosei, 3228, [16326, 1871, 4659]),
            (Profile::Mosi, 93, [1284, 229, 686]),
        ] {
            let p = SyntheticParams {
                profile,
                ..Default::default()
            };
            let plans = plan_videos(&p, &profile.shape(), 7);
            assert_eq!(plans.len(), videos);
            for (s, split) in Split::ALL.iter().enumerate() {
                let n: usize = plans
                    .iter()
                    .filter(|v| v.split == *split)
                    .map(|v| v.segments)
                    .sum();
                assert_eq!(n, segments[s], "{profile:?} {split}");
            }
        }
        let va = SyntheticParams {
            profile: Profile::ValenceArousal,
            ..Default::default()
        };
        assert_eq!(plan_videos(&va, &va.profile.shape(), 7).len(), 137);
    }
}
