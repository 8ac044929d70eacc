//! The `csd`, `npz` and `csv` sources: per-video feature files + a label file → the
//! segments table and one features table per modality, aligned as the CMU SDK does
//! ([`super::align`]), streamed in parallel chunks of videos.
//!
//! The three kinds are one implementation; they differ only in the format a modality's file
//! is read in when its `format` is not given, so formats can be mixed (SDK words and labels
//! with self-extracted OpenFace CSVs, say).

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::path::PathBuf;

use mmflow_pipeline::values::AtLeastOne;
use mmflow_pipeline::{
    BoundInputs, InputSlot, KeyPath, Moved, OutputPort, ParamProblem, RunContext, StageError,
    StageKind,
};
use mmflow_schemas::features::{FeatureBatch, FeatureInfo, FeatureWriter};
use mmflow_schemas::segments::{label_name_problems, Segment, SegmentTable};
use mmflow_schemas::{segment_id, Split};
use rayon::prelude::*;

use super::align::{self, Sequence, Timeline, Values};
use super::csd_file::{CsdFile, Words};
use super::readers::SourceError;
use super::source::{Format, NonFinitePolicy, Source};
use crate::datasets::KnownDataset;
use crate::folds::{Folds, FoldsError};
use crate::slots;
use crate::tables::source_outputs;

mod params;

use params::{check_source, MOVED_UNDER_CSV};
pub use params::{
    AlignMode, AlignedParams, CsvColumns, Keep, ModalitySource, TextSource, WidthPolicy, MAX_DIM,
};

/// The default format of a source kind.
pub trait DefaultFormat: Send + Sync + 'static {
    /// Stage kind name.
    const KIND: &'static str;
    /// Format of modalities without `format`.
    const FORMAT: Format;
    /// One line for `mmflow kinds`.
    const ABOUT: &'static str;
}

/// `.csd` files (the CMU SDK's computational sequences).
pub struct CsdFormat;
impl DefaultFormat for CsdFormat {
    const KIND: &'static str = "csd";
    const FORMAT: Format = Format::Csd;
    const ABOUT: &'static str =
        "CMU SDK computational sequences (.csd), aligned exactly as the SDK does";
}

/// `.npz` files of per-video arrays.
pub struct NpzFormat;
impl DefaultFormat for NpzFormat {
    const KIND: &'static str = "npz";
    const FORMAT: Format = Format::Npz;
    const ABOUT: &'static str = "per-video numpy arrays (.npz), aligned as the SDK does";
}

/// Directories of per-video CSV frames.
pub struct CsvFormat;
impl DefaultFormat for CsvFormat {
    const KIND: &'static str = "csv";
    const FORMAT: Format = Format::Csv;
    const ABOUT: &'static str =
        "per-frame CSV rows with timestamps (OpenFace 2, MediaPipe), aligned as the SDK does";
}

/// The aligning source stage, reading modalities in `F`'s format by default.
pub struct Aligned<F>(PhantomData<F>);

impl<F> Aligned<F> {
    /// The stage kind.
    pub fn new() -> Self {
        Aligned(PhantomData)
    }
}

impl<F> Default for Aligned<F> {
    fn default() -> Self {
        Self::new()
    }
}

fn format_of(source: &ModalitySource, default: Format) -> Format {
    source.format.unwrap_or(default)
}

fn label_columns(p: &AlignedParams) -> Option<Vec<String>> {
    p.label_columns.clone().or_else(|| {
        KnownDataset::from_name(&p.dataset)
            .map(|d| d.labels().into_iter().map(str::to_string).collect())
    })
}

impl<F: DefaultFormat> StageKind for Aligned<F> {
    type Params = AlignedParams;
    const KIND: &'static str = F::KIND;
    const VERSION: u32 = 2;
    const ABOUT: &'static str = F::ABOUT;
    const MOVED: &'static [Moved] = &MOVED_UNDER_CSV;

    fn check(&self, p: &AlignedParams) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.modalities.is_empty() && p.text.is_none() {
            problems.push(ParamProblem::new(
                "modalities",
                "name at least one modality file (or a `text` file for the segments table alone)",
            ));
        }
        if let Some(text) = &p.text {
            if text.path.as_os_str().is_empty() {
                problems.push(ParamProblem::new("text.path", "is required"));
            }
        }
        if p.align == AlignMode::Words
            && !p.modalities.is_empty()
            && !p.modalities.contains_key(&p.reference)
        {
            problems.push(ParamProblem::new(
                "reference",
                format!(
                    "`{}` is not one of the modalities ({})",
                    p.reference,
                    p.modalities.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        for (name, m) in &p.modalities {
            if name == "segments"
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                problems.push(ParamProblem::new(
                    &format!("modalities.{name}"),
                    "modality names are output names: letters, digits, `_`, `-`, and not `segments`",
                ));
            }
            if m.path.as_os_str().is_empty() {
                problems.push(ParamProblem::new(
                    &format!("modalities.{name}.path"),
                    "is required",
                ));
            }
        }
        if p.labels.path.as_os_str().is_empty() {
            problems.push(ParamProblem::new("labels.path", "is required"));
        }
        for (name, m) in &p.modalities {
            check_source(
                &KeyPath::keys(["modalities", name.as_str()]),
                m,
                format_of(m, F::FORMAT),
                &mut problems,
            );
        }
        check_source(
            &KeyPath::keys(["labels"]),
            &p.labels,
            format_of(&p.labels, F::FORMAT),
            &mut problems,
        );
        if let Some(names) = &p.label_columns {
            if names.is_empty() {
                problems.push(ParamProblem::new(
                    "label_columns",
                    "name at least one label column",
                ));
            }
            let at = KeyPath::keys(["label_columns"]);
            for (i, problem) in label_name_problems(names) {
                problems.push(ParamProblem::at(at.index(i), problem));
            }
        }
        if label_columns(p).is_none() {
            problems.push(ParamProblem::new(
                "label_columns",
                format!(
                    "dataset `{}` has no default label names: list them",
                    p.dataset
                ),
            ));
        }
        if p.folds.is_none() && KnownDataset::from_name(&p.dataset).is_none() {
            problems.push(ParamProblem::new(
                "folds",
                format!(
                    "dataset `{}` has no built-in folds: give a folds file",
                    p.dataset
                ),
            ));
        }
        problems
    }

    fn uses_seed(&self, _: &AlignedParams) -> bool {
        false
    }

    fn inputs(&self, _: &AlignedParams) -> Vec<InputSlot> {
        Vec::new()
    }

    fn outputs(
        &self,
        p: &AlignedParams,
        _: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        Ok(source_outputs(p.modalities.keys().cloned()))
    }

    fn external_files(&self, p: &AlignedParams) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = p.modalities.values().map(|m| m.path.clone()).collect();
        files.push(p.labels.path.clone());
        files.extend(p.text.as_ref().map(|t| t.path.clone()));
        files.extend(p.folds.clone());
        files
    }

    fn run(&self, p: &AlignedParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        run_aligned(p, F::FORMAT, ctx)
    }
}

/// The words file opened for reading, with the words its text leaves out.
struct OpenedText<'a> {
    file: CsdFile,
    skip: &'a [String],
}

impl OpenedText<'_> {
    /// A video's words, indexed by time: each frame's value is its word's place in `words`.
    fn timeline(&self, video: &str) -> Result<(Words, Timeline), StageError> {
        let words = self
            .file
            .read_words(video)
            .map_err(|e| StageError::input(format!("text: {e}")))?;
        let places = Sequence {
            intervals: words.intervals.clone(),
            values: Values::F64((0..words.words.len()).map(|i| i as f64).collect()),
            dim: 1,
        };
        Ok((words, Timeline::new(places)))
    }

    /// The text of the words the timeline puts in `interval`, as the SDK's alignment to
    /// the labels does: in time order, without the skipped words, joined by spaces.
    fn text_in(&self, words: &(Words, Timeline), interval: [f64; 2], epsilon: f64) -> String {
        let (words, timeline) = words;
        let piece = timeline.intersect(interval, epsilon);
        let Values::F64(places) = piece.values else {
            unreachable!("word places are written as f64")
        };
        places
            .iter()
            .map(|&place| words.words[place as usize].as_str())
            .filter(|w| !self.skip.iter().any(|s| s == w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A modality opened for reading, with its resolved width.
struct Opened {
    name: String,
    source: Source,
    spec: ModalitySource,
    dim: usize,
}

fn open(name: &str, spec: &ModalitySource, default: Format) -> Result<Source, StageError> {
    let format = format_of(spec, default);
    Source::open(&spec.path, format, &spec.timing())
        .map_err(|e| StageError::input(format!("{name}: {e}")))
}

/// The most common feature width of a source's videos (ties: the larger).
fn common_width(source: &Source) -> Result<usize, StageError> {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for v in source.videos() {
        *counts
            .entry(
                source
                    .width(v)
                    .map_err(|e| StageError::input(e.to_string()))?,
            )
            .or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(w, n)| (n, w))
        .map(|(w, _)| w)
        .ok_or_else(|| StageError::input(format!("{}: holds no videos", source.path().display())))
}

fn read_folds(p: &AlignedParams) -> Result<Folds, StageError> {
    let Some(path) = &p.folds else {
        return Ok(KnownDataset::from_name(&p.dataset)
            .unwrap_or(KnownDataset::Mosi)
            .folds());
    };
    Folds::read(path, &p.dataset).map_err(|e| match e {
        FoldsError::Io { path, source } => StageError::Io { path, source },
        invalid @ FoldsError::Invalid { .. } => StageError::input(invalid.to_string()),
    })
}

/// Counts collected while processing videos; summed into the stage report.
#[derive(Default, Clone)]
struct Tally {
    zero_length_labels: usize,
    segments_missing: BTreeMap<String, usize>,
    segments_dropped_incomplete: usize,
    videos_without_frames: BTreeMap<String, Vec<String>>,
    nonfinite: BTreeMap<String, usize>,
    nonfinite_zeroed: BTreeMap<String, usize>,
    width_mismatch: BTreeMap<String, Vec<String>>,
    truncated: BTreeMap<String, usize>,
    segments_without_words: usize,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.zero_length_labels += other.zero_length_labels;
        self.segments_without_words += other.segments_without_words;
        self.segments_dropped_incomplete += other.segments_dropped_incomplete;
        for (k, v) in other.segments_missing {
            *self.segments_missing.entry(k).or_default() += v;
        }
        for (k, v) in other.videos_without_frames {
            self.videos_without_frames.entry(k).or_default().extend(v);
        }
        for (k, v) in other.nonfinite {
            *self.nonfinite.entry(k).or_default() += v;
        }
        for (k, v) in other.nonfinite_zeroed {
            *self.nonfinite_zeroed.entry(k).or_default() += v;
        }
        for (k, v) in other.width_mismatch {
            self.width_mismatch.entry(k).or_default().extend(v);
        }
        for (k, v) in other.truncated {
            *self.truncated.entry(k).or_default() += v;
        }
    }
}

/// One video's output.
struct VideoOut {
    segments: Vec<Segment>,
    features: Vec<FeatureBatch>,
    tally: Tally,
}

fn run_aligned(
    p: &AlignedParams,
    default: Format,
    ctx: &mut RunContext<'_>,
) -> Result<(), StageError> {
    let label_names =
        label_columns(p).ok_or_else(|| StageError::config("label_columns are required"))?;
    // The folds first: they are small, and a bad file should not wait for every modality.
    let folds = read_folds(p)?;
    let split_of = folds.lookup();
    let modalities = open_modalities(p, default)?;
    let labels = open("labels", &p.labels, default)?;
    let text = match &p.text {
        Some(t) => Some(OpenedText {
            file: CsdFile::open(&t.path).map_err(|e| StageError::input(format!("text: {e}")))?,
            skip: &t.skip,
        }),
        None => None,
    };
    let unified = unify(&modalities, text.as_ref(), &labels)?;
    // Folds: videos in no fold are counted and left out.
    let mut videos: Vec<(Split, String)> = Vec::new();
    let mut unfolded = Vec::new();
    for v in &unified.shared {
        match split_of.get(v.as_str()) {
            Some(&s) => videos.push((s, v.clone())),
            None => unfolded.push(v.clone()),
        }
    }
    videos.sort();
    if videos.is_empty() {
        return Err(StageError::input(format!(
            "none of the {} shared videos is in a fold of `{}` (e.g. `{}`): check `dataset` or `folds`",
            unified.shared.len(),
            p.dataset,
            unfolded.first().cloned().unwrap_or_default()
        )));
    }
    let (segments, tally) = align_videos(
        p,
        &modalities,
        text.as_ref(),
        &labels,
        &label_names,
        &videos,
        ctx,
    )?;
    if segments.is_empty() {
        return Err(StageError::input(
            "no segment survived alignment: every label interval missed some modality",
        ));
    }
    let table = SegmentTable {
        label_names,
        rows: segments,
    };
    table.write(ctx.output(slots::SEGMENTS)?, ctx.table_meta())?;
    log_tally(ctx.stage_id, &tally);
    ctx.report("videos", videos.len());
    ctx.report("segments", table.split_counts());
    ctx.report("videos_missing_per_file", unified.dropped);
    ctx.report("videos_in_no_fold", unfolded);
    report_tally(ctx, tally, text.is_some());
    Ok(())
}

/// Every modality's file opened (in parallel: `.npz` and CSV sources are read when opened),
/// with its feature width.
fn open_modalities(p: &AlignedParams, default: Format) -> Result<Vec<Opened>, StageError> {
    let opened: Vec<Result<Opened, StageError>> = p
        .modalities
        .par_iter()
        .map(|(name, spec)| {
            let source = open(name, spec, default)?;
            let dim = match spec.dim {
                Some(d) => d,
                None => common_width(&source)?,
            };
            Ok(Opened {
                name: name.clone(),
                source,
                spec: spec.clone(),
                dim,
            })
        })
        .collect();
    opened.into_iter().collect()
}

/// The videos every file has, and how many of all videos each file lacks.
struct Unified {
    /// The videos every modality, the text and the labels have, sorted.
    shared: BTreeSet<String>,
    /// Per file (modality name, `text`, `labels`): the videos it lacks.
    dropped: BTreeMap<String, usize>,
}

/// Unify, as the SDK does: the videos every modality, the text and the labels have (the SDK
/// drops the rest); none is an error naming every file.
fn unify(
    modalities: &[Opened],
    text: Option<&OpenedText<'_>>,
    labels: &Source,
) -> Result<Unified, StageError> {
    let mut shared: BTreeSet<&str> = labels.videos().iter().map(String::as_str).collect();
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    let files: Vec<(&str, &[String])> = modalities
        .iter()
        .map(|m| (m.name.as_str(), m.source.videos()))
        .chain(text.map(|t| ("text", t.file.videos())))
        .collect();
    let all_videos: BTreeSet<&str> = files
        .iter()
        .flat_map(|(_, videos)| videos.iter().map(String::as_str))
        .chain(labels.videos().iter().map(String::as_str))
        .collect();
    for (name, videos) in &files {
        let have: BTreeSet<&str> = videos.iter().map(String::as_str).collect();
        shared.retain(|v| have.contains(v));
        dropped.insert(
            name.to_string(),
            all_videos.iter().filter(|v| !have.contains(*v)).count(),
        );
    }
    let labels_have: BTreeSet<&str> = labels.videos().iter().map(String::as_str).collect();
    dropped.insert(
        "labels".into(),
        all_videos
            .iter()
            .filter(|v| !labels_have.contains(*v))
            .count(),
    );
    if shared.is_empty() {
        return Err(StageError::input(format!(
            "no video is present in every modality, the text and the labels ({}); videos missing per file: {}",
            modalities
                .iter()
                .map(|m| format!("{} {}", m.name, m.source.path().display()))
                .chain(text.map(|t| format!("text {}", t.file.path().display())))
                .chain(std::iter::once(format!("labels {}", labels.path().display())))
                .collect::<Vec<_>>()
                .join(", "),
            serde_json::to_string(&dropped).unwrap_or_default()
        )));
    }
    Ok(Unified {
        shared: shared.into_iter().map(str::to_string).collect(),
        dropped,
    })
}

/// Every video aligned, in rayon-parallel chunks of `chunk_videos`, each modality's rows
/// written as they come (one row group per chunk): the segments, and what was counted.
fn align_videos(
    p: &AlignedParams,
    modalities: &[Opened],
    text: Option<&OpenedText<'_>>,
    labels: &Source,
    label_names: &[String],
    videos: &[(Split, String)],
    ctx: &mut RunContext<'_>,
) -> Result<(Vec<Segment>, Tally), StageError> {
    let mut writers = Vec::new();
    for m in modalities {
        let info = FeatureInfo {
            dataset: p.dataset.clone(),
            modality: m.name.clone(),
            dim: m.dim,
        };
        writers.push(FeatureWriter::create(
            ctx.output_named(&m.name)?,
            &info,
            ctx.table_meta(),
        )?);
    }
    let bar = ctx.progress.bar("aligning videos", videos.len() as u64);
    let mut segments = Vec::new();
    let mut tally = Tally::default();
    for chunk in videos.chunks(p.chunk_videos.get()) {
        let outs: Vec<Result<VideoOut, StageError>> = chunk
            .par_iter()
            .map(|(split, video)| {
                process_video(p, modalities, text, labels, label_names, *split, video)
            })
            .collect();
        // Each video's rows are encoded as soon as they are taken: the chunk's row group is
        // held encoded, not as its videos' features.
        for out in outs {
            let out = out?;
            segments.extend(out.segments);
            tally.merge(out.tally);
            for (w, features) in writers.iter_mut().zip(out.features) {
                w.append(features)?;
            }
        }
        for w in &mut writers {
            w.end_row_group()?;
        }
        bar.inc(chunk.len() as u64);
    }
    for w in writers {
        w.finish()?;
    }
    Ok((segments, tally))
}

/// Logs what the counts say a user should know of.
fn log_tally(stage: &str, tally: &Tally) {
    for (name, n) in &tally.nonfinite {
        if *n > 0 {
            tracing::info!("{stage}: {name}: {n} non-finite values in the aligned features");
        }
    }
    if tally.segments_dropped_incomplete > 0 {
        tracing::info!(
            "{stage}: {} labelled segments left out because a modality had no frames in them",
            tally.segments_dropped_incomplete
        );
    }
}

/// The counts into the stage's report.
fn report_tally(ctx: &mut RunContext<'_>, tally: Tally, with_text: bool) {
    ctx.report("videos_without_frames", tally.videos_without_frames);
    ctx.report("zero_length_label_intervals", tally.zero_length_labels);
    ctx.report("segments_missing_modality", tally.segments_missing);
    ctx.report(
        "segments_dropped_incomplete",
        tally.segments_dropped_incomplete,
    );
    ctx.report("nonfinite_values", tally.nonfinite);
    ctx.report("nonfinite_zeroed", tally.nonfinite_zeroed);
    ctx.report("width_mismatch_videos", tally.width_mismatch);
    ctx.report("segments_truncated", tally.truncated);
    if with_text {
        ctx.report("segments_without_words", tally.segments_without_words);
    }
}

fn process_video(
    p: &AlignedParams,
    modalities: &[Opened],
    text: Option<&OpenedText<'_>>,
    labels: &Source,
    label_names: &[String],
    split: Split,
    video: &str,
) -> Result<VideoOut, StageError> {
    let mut tally = Tally::default();
    let Some(raw) = read_frames(modalities, video, &mut tally)? else {
        return Ok(VideoOut::empty(modalities, tally));
    };
    let level = word_level(p, modalities, raw);
    for (m, seq) in modalities.iter().zip(&level) {
        if seq.is_empty() {
            tally
                .videos_without_frames
                .entry(m.name.clone())
                .or_default()
                .push(video.to_string());
        }
    }
    if level.iter().any(Timeline::is_empty) {
        // The SDK's second unify drops a video a modality has no word-level entry for.
        return Ok(VideoOut::empty(modalities, tally));
    }
    let labelled = VideoLabels::read(labels, label_names, text, video)?;
    let mut out = VideoOut::empty(modalities, Tally::default());
    for (i, &interval) in labelled.sequence.intervals.iter().enumerate() {
        if (interval[0] - interval[1]).abs() < p.epsilon.get() {
            tally.zero_length_labels += 1;
            continue;
        }
        let pieces: Vec<Sequence> = level
            .iter()
            .map(|t| t.intersect(interval, p.epsilon.get()))
            .collect();
        for (m, piece) in modalities.iter().zip(&pieces) {
            if piece.is_empty() {
                *tally.segments_missing.entry(m.name.clone()).or_default() += 1;
            }
        }
        if p.require_all_modalities && pieces.iter().any(Sequence::is_empty) {
            tally.segments_dropped_incomplete += 1;
            continue;
        }
        let id = segment_id(video, i);
        let segment_text = labelled.text(i, interval, text, p.epsilon.get(), &mut tally);
        for ((m, piece), batch) in modalities.iter().zip(pieces).zip(out.features.iter_mut()) {
            if piece.is_empty() {
                continue;
            }
            let (values, intervals) = segment_frames(p, m, piece, video, &id, &mut tally)?;
            batch.push_timed(id.clone(), &values, &intervals);
        }
        out.segments.push(Segment {
            dataset: p.dataset.clone(),
            video_id: video.to_string(),
            segment_id: id,
            split,
            speaker_id: None,
            start: Some(interval[0]),
            end: Some(interval[1]),
            labels: labelled.values[i * label_names.len()..(i + 1) * label_names.len()]
                .iter()
                .map(|&x| Some(x))
                .collect(),
            text: segment_text,
        });
    }
    out.tally = tally;
    Ok(out)
}

impl VideoOut {
    /// Nothing of a video: no segments, an empty batch per modality.
    fn empty(modalities: &[Opened], tally: Tally) -> VideoOut {
        VideoOut {
            segments: Vec::new(),
            features: modalities
                .iter()
                .map(|m| FeatureBatch::new(m.dim))
                .collect(),
            tally,
        }
    }
}

/// Each modality's frames of `video`, sorted by start, their width checked by the modality's
/// `width_mismatch` policy; `None` when a policy drops the video (every modality is still
/// read, so each mismatch is counted).
fn read_frames(
    modalities: &[Opened],
    video: &str,
    tally: &mut Tally,
) -> Result<Option<Vec<Sequence>>, StageError> {
    let mut raw = Vec::with_capacity(modalities.len());
    let mut dropped = false;
    for m in modalities {
        let mut seq = m.source.read(video).map_err(input_error)?;
        if seq.dim != m.dim {
            tally
                .width_mismatch
                .entry(m.name.clone())
                .or_default()
                .push(video.to_string());
            match m.spec.width_mismatch {
                WidthPolicy::Error => {
                    return Err(StageError::input(format!(
                        "{}: video `{video}`: features are {} wide, modality `{}` is {} wide (set width_mismatch = \"drop\" or \"pad\")",
                        m.source.path().display(),
                        seq.dim,
                        m.name,
                        m.dim
                    )))
                }
                WidthPolicy::Drop => {
                    dropped = true;
                    continue;
                }
                WidthPolicy::Pad => seq = resize_width(seq, m.dim),
            }
        }
        raw.push(seq);
    }
    Ok((!dropped).then_some(raw))
}

/// A source's error as an input-data error (it names the file and video).
fn input_error(e: SourceError) -> StageError {
    StageError::input(e.to_string())
}

/// Step 1: each modality's word-level sequence (or its raw frames, unaligned), indexed by
/// time.
fn word_level(p: &AlignedParams, modalities: &[Opened], raw: Vec<Sequence>) -> Vec<Timeline> {
    match p.align {
        _ if raw.is_empty() => Vec::new(),
        AlignMode::None => raw.into_iter().map(Timeline::new).collect(),
        AlignMode::Words => {
            let r = modalities
                .iter()
                .position(|m| m.name == p.reference)
                .expect("checked in params");
            let words = raw[r].clone();
            raw.into_iter()
                .enumerate()
                .map(|(i, seq)| {
                    let aligned = if i == r {
                        align::words_after_alignment(&words, p.collapse, p.epsilon.get())
                    } else {
                        align::align_to_words(
                            &words.intervals,
                            &Timeline::new(seq),
                            p.collapse,
                            p.epsilon.get(),
                        )
                    };
                    Timeline::new(aligned)
                })
                .collect()
        }
    }
}

/// Step 2's reference: a video's label intervals and values, and where each segment's text
/// comes from (the label file's text column, or a words file).
struct VideoLabels<'l> {
    /// The label intervals, one row of label values each.
    sequence: Sequence,
    /// The label values, row after row.
    values: Vec<f32>,
    /// The label file's text column, if it has one.
    texts: Option<&'l [String]>,
    /// The words file's words of the video, if `text` names one.
    words: Option<(Words, Timeline)>,
}

impl<'l> VideoLabels<'l> {
    /// Reads `video`'s labels; refuses a label row of another width than `label_names`, and
    /// two sources of text.
    fn read(
        labels: &'l Source,
        label_names: &[String],
        text: Option<&OpenedText<'_>>,
        video: &str,
    ) -> Result<VideoLabels<'l>, StageError> {
        let sequence = labels.read(video).map_err(input_error)?;
        if sequence.dim != label_names.len() {
            return Err(StageError::input(format!(
                "{}: video `{video}`: {} label columns, but {} label names ({})",
                labels.path().display(),
                sequence.dim,
                label_names.len(),
                label_names.join(", ")
            )));
        }
        let texts = labels.texts(video);
        let words = match text {
            Some(t) if texts.is_some() => {
                return Err(StageError::input(format!(
                    "{}: video `{video}`: the label file has a text column and `text` names a words file ({}): keep one",
                    labels.path().display(),
                    t.file.path().display()
                )))
            }
            Some(t) => Some(t.timeline(video)?),
            None => None,
        };
        Ok(VideoLabels {
            values: sequence.values.to_f32(),
            sequence,
            texts,
            words,
        })
    }

    /// The text of label row `i` (its `interval`): the words file's words within it (counted
    /// when there are none), else the label file's text column.
    fn text(
        &self,
        i: usize,
        interval: [f64; 2],
        text: Option<&OpenedText<'_>>,
        epsilon: f64,
        tally: &mut Tally,
    ) -> Option<String> {
        match (text, &self.words) {
            (Some(t), Some(w)) => {
                let joined = t.text_in(w, interval, epsilon);
                if joined.is_empty() {
                    tally.segments_without_words += 1;
                }
                Some(joined)
            }
            _ => self.texts.and_then(|t| t.get(i)).cloned(),
        }
    }
}

/// One modality's frames of segment `id` (its `piece` of the word-level sequence), by the
/// modality's `nonfinite` policy and cut to `max_length` steps: values and intervals.
fn segment_frames(
    p: &AlignedParams,
    m: &Opened,
    piece: Sequence,
    video: &str,
    id: &str,
    tally: &mut Tally,
) -> Result<(Vec<f32>, Vec<f64>), StageError> {
    let mut values = piece.values.to_f32();
    let mut intervals: Vec<f64> = piece.intervals.iter().flat_map(|iv| *iv).collect();
    let bad = values.iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        *tally.nonfinite.entry(m.name.clone()).or_default() += bad;
        match m.spec.nonfinite {
            NonFinitePolicy::Keep => {}
            NonFinitePolicy::Zero => {
                values.iter_mut().filter(|x| !x.is_finite()).for_each(|x| *x = 0.0);
                *tally.nonfinite_zeroed.entry(m.name.clone()).or_default() += bad;
            }
            NonFinitePolicy::Error => {
                return Err(StageError::input(format!(
                    "{}: video `{video}`, segment `{id}`: {bad} non-finite values (nonfinite = \"error\")",
                    m.source.path().display()
                )))
            }
        }
    }
    if let Some(max) = p.max_length.map(AtLeastOne::get) {
        let steps = values.len() / m.dim.max(1);
        if steps > max {
            *tally.truncated.entry(m.name.clone()).or_default() += 1;
            let (from, to) = match p.keep {
                Keep::First => (0, max),
                Keep::Last => (steps - max, steps),
            };
            values = values[from * m.dim..to * m.dim].to_vec();
            intervals = intervals[from * 2..to * 2].to_vec();
        }
    }
    Ok((values, intervals))
}

/// Pads with zeros (or cuts) every frame to `dim` values.
fn resize_width(seq: Sequence, dim: usize) -> Sequence {
    let old = seq.dim;
    let resize = |v: &[f32]| -> Vec<f32> {
        v.chunks(old.max(1))
            .flat_map(|row| (0..dim).map(move |j| row.get(j).copied().unwrap_or(0.0)))
            .collect()
    };
    let values = match &seq.values {
        Values::F32(v) => Values::F32(resize(v)),
        Values::F64(v) => Values::F64(
            v.chunks(old.max(1))
                .flat_map(|row| (0..dim).map(move |j| row.get(j).copied().unwrap_or(0.0)))
                .collect(),
        ),
    };
    Sequence {
        intervals: seq.intervals,
        values,
        dim,
    }
}
