//! The `embed_text` stage: each segment's raw text (the segments table's `text` column) →
//! a features table, with a BERT-family encoder read from a local model folder
//! ([`crate::text_encoder`]; nothing is downloaded).
//!
//! Segments are taken a window at a time (64 batches), tokenized in parallel, sorted by token
//! count (ties in table order) so that a batch pads little on a GPU (on the CPU a batch's texts
//! are packed without padding, [`crate::bert`]), and cut into batches of `batch_size`; on the
//! CPU the batches of a window run in parallel (rayon), on a GPU one after another. Each window
//! is written as one row group, its segments in table order, so memory is bounded by a window
//! and the output does not depend on thread scheduling.
//!
//! Policies, each counted in the stage's report: a text longer than `max_length` tokens is cut
//! to its first `max_length` (as sentence-transformers does); an empty (or blank) text is
//! embedded as `[CLS] [SEP]` (as sentence-transformers does). A null text is an error naming
//! the segment.

use std::path::{Path, PathBuf};

use candle_core::Device;
use mmflow_pipeline::{
    Arity, BoundInputs, InputSlot, OutputPort, ParamProblem, RunContext, Slot, StageError,
    StageKind,
};
use mmflow_schemas::features::{FeatureBatch, FeatureInfo, FeatureWriter};
use mmflow_schemas::segments::{read_texts, SegmentText};
use mmflow_schemas::TableMeta;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::slots;
use crate::tables::{FEATURES, SEGMENTS};
use crate::text_encoder::{Pooling, TextEncoder, Tokens};
use crate::train::device;

/// The name of the output (and the modality written into it).
const OUTPUT: Slot = Slot::new("text");
/// Batches per window: a window is tokenized, sorted and written together.
const BATCHES_PER_WINDOW: usize = 64;
/// Segment ids named in a report or an error, at most.
const NAMED: usize = 5;
/// Largest `batch_size`.
const MAX_BATCH_SIZE: usize = 4096;

/// Parameters of the `embed_text` stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedTextParams {
    /// The model folder: `config.json`, `tokenizer.json` and `model.safetensors` (a BERT-family model), optionally transformers' `tokenizer_config.json` and `special_tokens_map.json` and sentence-transformers' `sentence_bert_config.json`, `modules.json` (with its Pooling module's `config.json`) and `config_sentence_transformers.json`. Read locally, never downloaded; its files' contents are part of the fingerprint.
    pub model: PathBuf,
    /// What each segment's text becomes; sentence vectors (`mean`, `cls`) are L2-normalised when the folder's `modules.json` lists a `Normalize` module.
    pub pooling: Pooling,
    /// Tokens per segment at most, `[CLS]` and `[SEP]` included; longer texts are cut, counted and reported. Default: `max_seq_length` of the folder's `sentence_bert_config.json`, else the smaller of `tokenizer_config.json`'s `model_max_length` and the model's positions (as sentence-transformers chooses).
    pub max_length: Option<usize>,
    /// Segments per forward pass (1 to 4096).
    pub batch_size: usize,
}

impl Default for EmbedTextParams {
    fn default() -> Self {
        EmbedTextParams {
            model: PathBuf::new(),
            pooling: Pooling::Mean,
            max_length: None,
            batch_size: 32,
        }
    }
}

/// What an embedding run did, for the stage report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EmbedReport {
    /// Segments embedded.
    pub segments: usize,
    /// Width of the vectors.
    pub dim: usize,
    /// Tokens per segment at most.
    pub max_length: usize,
    /// Tokens embedded in all, special tokens included.
    pub tokens: usize,
    /// Segments whose text was cut to `max_length` tokens.
    pub truncated: usize,
    /// The first truncated segments' ids.
    pub truncated_examples: Vec<String>,
    /// Segments with an empty or blank text (embedded as `[CLS] [SEP]`).
    pub empty: usize,
    /// Whether sentence vectors were L2-normalised.
    pub normalized: bool,
}

/// The `embed_text` stage kind.
pub struct EmbedText;

impl StageKind for EmbedText {
    type Params = EmbedTextParams;
    const KIND: &'static str = "embed_text";
    const VERSION: u32 = 2;
    const ABOUT: &'static str =
        "segments' raw text → features with a local BERT-family model (sentence vectors or tokens)";

    fn check(&self, p: &EmbedTextParams) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.model.as_os_str().is_empty() {
            problems.push(ParamProblem::new("model", "is required (the model folder)"));
        }
        if p.max_length.is_some_and(|n| n < 2) {
            problems.push(ParamProblem::new(
                "max_length",
                "must be at least 2 ([CLS] and [SEP])",
            ));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&p.batch_size) {
            problems.push(ParamProblem::new(
                "batch_size",
                format!("must be 1 to {MAX_BATCH_SIZE}"),
            ));
        }
        problems
    }

    fn inputs(&self, _: &EmbedTextParams) -> Vec<InputSlot> {
        vec![InputSlot {
            name: slots::SEGMENTS,
            kind: SEGMENTS,
            arity: Arity::One,
            about: "a segments table with a `text` column",
        }]
    }

    fn outputs(
        &self,
        _: &EmbedTextParams,
        _: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        Ok(vec![OutputPort::new(OUTPUT, FEATURES)])
    }

    fn external_files(&self, p: &EmbedTextParams) -> Vec<PathBuf> {
        vec![p.model.clone()]
    }

    fn uses_device(&self, _: &EmbedTextParams) -> bool {
        true
    }

    fn uses_seed(&self, _: &EmbedTextParams) -> bool {
        false
    }

    fn run(&self, p: &EmbedTextParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let segments = ctx.input(slots::SEGMENTS)?.path.clone();
        let device = device::open(ctx.device)?;
        let total = mmflow_schemas::row_count(&segments)?;
        let bar = ctx.progress.bar("embedding texts", total);
        let report = embed_segments(
            &segments,
            ctx.output(OUTPUT)?,
            p,
            &device,
            ctx.table_meta(),
            &|n| bar.inc(n as u64),
        )?;
        if report.truncated > 0 {
            tracing::warn!(
                "{}: {} of {} segments had more than {} tokens and were cut (e.g. {})",
                ctx.stage_id,
                report.truncated,
                report.segments,
                report.max_length,
                report.truncated_examples.join(", ")
            );
        }
        for (key, value) in serde_json::to_value(&report)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
        {
            ctx.report(key, value);
        }
        Ok(())
    }
}

/// Embeds every segment's text of the segments table `segments` into the features table `out`
/// (modality `text`), calling `done` with the number of segments of each written window.
pub fn embed_segments(
    segments: &Path,
    out: &Path,
    p: &EmbedTextParams,
    device: &Device,
    meta: &TableMeta,
    done: &(dyn Fn(usize) + Sync),
) -> Result<EmbedReport, StageError> {
    let encoder = TextEncoder::open(&p.model, p.max_length, device)?;
    let texts = read_texts(segments)?;
    refuse_null_texts(segments, &texts.rows)?;
    let info = FeatureInfo {
        dataset: texts.dataset.clone(),
        modality: OUTPUT.to_string(),
        dim: encoder.dim,
    };
    let mut writer = FeatureWriter::create(out, &info, meta)?;
    let mut report = EmbedReport {
        dim: encoder.dim,
        max_length: encoder.max_length,
        normalized: encoder.normalize && p.pooling != Pooling::Tokens,
        ..EmbedReport::default()
    };
    let parallel = matches!(device, Device::Cpu);
    for window in texts.rows.chunks(p.batch_size.max(1) * BATCHES_PER_WINDOW) {
        let batch = embed_window(&encoder, window, p, parallel, &mut report)?;
        writer.write(batch)?;
        done(window.len());
    }
    writer.finish()?;
    Ok(report)
}

/// Errors on the first null texts, naming them.
fn refuse_null_texts(path: &Path, rows: &[SegmentText]) -> Result<(), StageError> {
    let null: Vec<&str> = rows
        .iter()
        .filter(|r| r.text.is_none())
        .map(|r| r.segment_id.as_str())
        .collect();
    if null.is_empty() {
        return Ok(());
    }
    Err(StageError::input(format!(
        "{}: column `text`: {} segment(s) have no text (null), e.g. `{}`",
        path.display(),
        null.len(),
        null[..null.len().min(NAMED)].join("`, `")
    )))
}

/// One window: tokenized, sorted by length, batched, embedded; returned in table order.
fn embed_window(
    encoder: &TextEncoder,
    window: &[SegmentText],
    p: &EmbedTextParams,
    parallel: bool,
    report: &mut EmbedReport,
) -> Result<FeatureBatch, StageError> {
    let tokens = window
        .par_iter()
        .map(|s| {
            encoder
                .tokenize(s.text.as_deref().unwrap_or(""))
                .map_err(|e| match e {
                    StageError::Input(m) => {
                        StageError::input(format!("segment `{}`: {m}", s.segment_id))
                    }
                    other => other,
                })
        })
        .collect::<Result<Vec<Tokens>, StageError>>()?;
    count_policies(window, &tokens, report);

    let order = length_order(&tokens);
    let batches: Vec<&[usize]> = order.chunks(p.batch_size.max(1)).collect();
    let run = |batch: &&[usize]| {
        let members: Vec<&Tokens> = batch.iter().map(|&i| &tokens[i]).collect();
        encoder.embed(&members, p.pooling)
    };
    let outputs: Vec<Vec<Vec<f32>>> = if parallel {
        batches.par_iter().map(run).collect::<Result<_, _>>()?
    } else {
        batches.iter().map(run).collect::<Result<_, _>>()?
    };
    let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); window.len()];
    for (batch, out) in batches.iter().zip(outputs) {
        for (&i, v) in batch.iter().zip(out) {
            vectors[i] = v;
        }
    }

    let mut features = FeatureBatch::new(encoder.dim);
    for (segment, v) in window.iter().zip(vectors) {
        let id = segment.segment_id.clone();
        match p.pooling {
            Pooling::Tokens => features.push(id, &v),
            Pooling::Mean | Pooling::Cls => features.push_with_pooled(id, &v, &v),
        }
    }
    Ok(features)
}

/// Indices of `tokens` by token count, ties in table order.
fn length_order(tokens: &[Tokens]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&i| (tokens[i].ids.len(), i));
    order
}

/// Counts tokens, truncated and empty texts into the report.
fn count_policies(window: &[SegmentText], tokens: &[Tokens], report: &mut EmbedReport) {
    for (segment, t) in window.iter().zip(tokens) {
        report.segments += 1;
        report.tokens += t.ids.len();
        if t.truncated {
            report.truncated += 1;
            if report.truncated_examples.len() < NAMED {
                report.truncated_examples.push(segment.segment_id.clone());
            }
        }
        if segment.text.as_deref().is_none_or(|s| s.trim().is_empty()) {
            report.empty += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: usize) -> Tokens {
        Tokens {
            ids: vec![1; n],
            type_ids: vec![0; n],
            truncated: false,
        }
    }

    #[test]
    fn batches_are_sorted_by_length_with_ties_in_table_order() {
        let t = [tokens(5), tokens(2), tokens(5), tokens(3), tokens(2)];
        assert_eq!(length_order(&t), vec![1, 4, 3, 0, 2]);
    }

    #[test]
    fn params_are_checked() {
        let p = EmbedTextParams {
            max_length: Some(1),
            batch_size: 0,
            ..EmbedTextParams::default()
        };
        let problems: Vec<String> = EmbedText.check(&p).into_iter().map(|p| p.message).collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("model folder"));
        assert!(problems[1].contains("at least 2"));
        assert!(problems[2].contains("1 to 4096"));
    }

    #[test]
    fn null_texts_are_named() {
        let rows = vec![
            SegmentText {
                segment_id: "a[0]".into(),
                text: Some("hi".into()),
            },
            SegmentText {
                segment_id: "a[1]".into(),
                text: None,
            },
        ];
        let e = refuse_null_texts(Path::new("s.parquet"), &rows)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.parquet") && e.contains("`a[1]`") && e.contains("1 segment"),
            "{e}"
        );
    }
}
