//! The `select_targets` stage: for every source segment, a target-space vector an adapter
//! should learn to produce, chosen by matching the source against the target dataset in a
//! space both share (modalities extracted the same way in both, e.g. text, and optionally
//! the label).
//!
//! Methods: `random` (a seeded random target train segment: the baseline), `kmeans` (cluster
//! the target train set in the matching space with linfa; the target is the mean of the source's
//! nearest cluster, or its member nearest the source) and `cosine` (the top-k most similar
//! target train segments, averaged). Only target *train* segments are ever used as targets.
//! Diagnostics say whether the matching carries sentiment at all (label agreement).

pub mod kmeans;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mmflow_pipeline::collect::at_key;
use mmflow_pipeline::problem::listed;
use mmflow_pipeline::values::{AtLeastOne, NonNegative};
use mmflow_pipeline::{
    Arity, BoundInputs, InputSlot, OutputPort, ParamProblem, ResolvedInput, RunContext, Slot,
    StageError, StageKind,
};
use mmflow_schemas::diagnostics::{self, Diagnostic};
use mmflow_schemas::features::FeatureReader;
use mmflow_schemas::segments::SegmentTable;
use mmflow_schemas::targets::{TargetInfo, TargetRow, TargetTable};
use mmflow_schemas::Split;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dot_search::{self, Queries};
use crate::linalg::normalize_rows;
use crate::slots;
use crate::stats::{fisher_ci, pearson, quantile};
use crate::tables::{DIAGNOSTICS, FEATURES, SEGMENTS, TARGETS};

/// This kind's own inputs and outputs.
mod slot {
    use mmflow_pipeline::Slot;

    /// `source_segments`.
    pub const SOURCE_SEGMENTS: Slot = Slot::new("source_segments");
    /// `source`.
    pub const SOURCE: Slot = Slot::new("source");
    /// `target_segments`.
    pub const TARGET_SEGMENTS: Slot = Slot::new("target_segments");
    /// `target`.
    pub const TARGET: Slot = Slot::new("target");
}

/// How targets are chosen: `method` (default `kmeans`) and the settings that method owns.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Method {
    /// A seeded random target train segment (the baseline).
    Random(RandomSettings),
    /// K-means clusters of the target train set (linfa-clustering); the source gets its
    /// nearest cluster.
    Kmeans(KmeansSettings),
    /// The top-k most similar target train segments (cosine similarity).
    Cosine(CosineSettings),
}

impl<'de> Deserialize<'de> for Method {
    /// As the derived internally tagged form, with `method` defaulting to `kmeans`, and every
    /// problem located at its key (the settings arrive buffered, so serde cannot track it).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
        let mut settings = serde_json::Map::deserialize(d)?;
        let method = match settings.remove("method") {
            None => Method::default().as_str().to_string(),
            Some(serde_json::Value::String(name)) => name,
            Some(other) => {
                return Err(at_key(
                    "method",
                    format!("expected a method name, found {other}"),
                ))
            }
        };
        let settings = serde_json::Value::Object(settings);
        match method.as_str() {
            "random" => settings_of(settings).map(Method::Random),
            "kmeans" => settings_of(settings).map(Method::Kmeans),
            "cosine" => settings_of(settings).map(Method::Cosine),
            other => Err(at_key(
                "method",
                format!("unknown method `{other}`: `random`, `kmeans` or `cosine`"),
            )),
        }
    }
}

/// One method's settings from the keys beside `method`, a problem located at its key.
fn settings_of<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    settings: serde_json::Value,
) -> Result<T, E> {
    serde_path_to_error::deserialize(settings).map_err(|e| {
        let key = e.path().to_string();
        if key == "." {
            E::custom(e.inner())
        } else {
            at_key(&key, e.inner())
        }
    })
}

impl Default for Method {
    fn default() -> Self {
        Method::Kmeans(KmeansSettings::default())
    }
}

impl Method {
    /// Its name in configs and tables.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Random(_) => "random",
            Method::Kmeans(_) => "kmeans",
            Method::Cosine(_) => "cosine",
        }
    }

    /// K-means whose target is the cluster mean: no target segment is listed per source.
    fn is_cluster_mean(&self) -> bool {
        matches!(self, Method::Kmeans(k) if k.cluster_target == ClusterTarget::Mean)
    }
}

/// `method = "random"`: no settings of its own.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomSettings {}

/// `method = "kmeans"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KmeansSettings {
    /// Number of clusters.
    pub k: AtLeastOne,
    /// Most Lloyd iterations.
    pub max_iterations: AtLeastOne,
    /// Convergence tolerance, as scikit-learn's `tol` (relative to the data's variance).
    pub tolerance: NonNegative,
    /// The target is the cluster `mean` (default) or its `nearest_member` to the source.
    pub cluster_target: ClusterTarget,
}

impl Default for KmeansSettings {
    fn default() -> Self {
        KmeansSettings {
            k: AtLeastOne::new(16),
            max_iterations: AtLeastOne::new(100),
            tolerance: NonNegative::new(1e-4),
            cluster_target: ClusterTarget::Mean,
        }
    }
}

/// `method = "cosine"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CosineSettings {
    /// How many most similar target segments are averaged (1 = the single most similar).
    pub top_k: AtLeastOne,
    /// `uniform` (default) or `similarity`-weighted average.
    pub weighting: Weighting,
}

impl Default for CosineSettings {
    fn default() -> Self {
        CosineSettings {
            top_k: AtLeastOne::new(1),
            weighting: Weighting::Uniform,
        }
    }
}

/// What a k-means target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClusterTarget {
    /// The mean of the cluster's adapted-modality vectors.
    #[default]
    Mean,
    /// The cluster member nearest to the source segment in the matching space.
    NearestMember,
}

/// How the top-k cosine matches are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Plain mean.
    #[default]
    Uniform,
    /// Weighted by similarity (negative similarities count 0).
    Similarity,
}

/// Parameters of the `select_targets` stage. `method` is `random`, `kmeans` (default) or
/// `cosine`; the settings of the chosen method sit beside it (`k`, `max_iterations`,
/// `tolerance`, `cluster_target` for k-means; `top_k`, `weighting` for cosine) and any other
/// method's are refused, so the fingerprint hashes only what the method uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SelectTargetsParams {
    /// Modalities both datasets share, compared to find matches (pooled vectors, each scaled to
    /// unit length).
    pub match_on: Vec<String>,
    /// Weight of the label in the matching space (labels divided by 3 join the unit-length
    /// modality vectors); 0 = labels are not used for matching.
    pub label_weight: NonNegative,
    /// The label column used for matching (if weighted) and for the label-agreement diagnostic.
    pub label: String,
    /// Modalities whose target-dataset vectors become the targets (one output table each).
    pub adapt: Vec<String>,
    /// The method and its settings.
    #[serde(flatten)]
    pub method: Method,
}

impl Default for SelectTargetsParams {
    fn default() -> Self {
        SelectTargetsParams {
            match_on: vec!["text".into()],
            label_weight: NonNegative::new(0.0),
            label: "sentiment".into(),
            adapt: vec!["visual".into()],
            method: Method::default(),
        }
    }
}

/// The `select_targets` stage kind.
pub struct SelectTargets;

const DIAG: Slot = slots::DIAGNOSTICS;

fn modality_names<'a>(inputs: &'a BoundInputs, slot: &str) -> Vec<&'a str> {
    inputs
        .get(slot)
        .into_iter()
        .flatten()
        .map(|r| r.output.as_str())
        .collect()
}

impl StageKind for SelectTargets {
    type Params = SelectTargetsParams;
    const KIND: &'static str = "select_targets";
    const VERSION: u32 = 2;
    const ABOUT: &'static str =
        "adapter training targets by k-means (linfa), cosine similarity or at random";

    fn check(&self, p: &SelectTargetsParams) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.match_on.is_empty() && p.label_weight.get() == 0.0 {
            problems.push(ParamProblem::new(
                "match_on",
                "name at least one shared modality (or give the label a weight)",
            ));
        }
        if p.adapt.is_empty() {
            problems.push(ParamProblem::new(
                "adapt",
                "name at least one modality to adapt",
            ));
        }
        problems
    }

    fn uses_seed(&self, p: &SelectTargetsParams) -> bool {
        !matches!(p.method, Method::Cosine(_))
    }

    fn inputs(&self, _: &SelectTargetsParams) -> Vec<InputSlot> {
        vec![
            InputSlot {
                name: slot::SOURCE_SEGMENTS,
                kind: SEGMENTS,
                arity: Arity::One,
                about: "segments of the dataset to adapt",
            },
            InputSlot {
                name: slot::SOURCE,
                kind: FEATURES,
                arity: Arity::Many,
                about: "its (normalised) features: the matching modalities",
            },
            InputSlot {
                name: slot::TARGET_SEGMENTS,
                kind: SEGMENTS,
                arity: Arity::One,
                about: "segments of the dataset whose space is the target",
            },
            InputSlot {
                name: slot::TARGET,
                kind: FEATURES,
                arity: Arity::Many,
                about: "its (normalised) features: matching and adapted modalities",
            },
        ]
    }

    fn outputs(
        &self,
        p: &SelectTargetsParams,
        inputs: &BoundInputs,
    ) -> Result<Vec<OutputPort>, Vec<ParamProblem>> {
        let (source, target) = (
            modality_names(inputs, "source"),
            modality_names(inputs, "target"),
        );
        let (in_source, in_target): (BTreeSet<&str>, BTreeSet<&str>) = (
            source.iter().copied().collect(),
            target.iter().copied().collect(),
        );
        let mut problems = Vec::new();
        for m in &p.match_on {
            for (side, names, set) in [
                ("source", &source, &in_source),
                ("target", &target, &in_target),
            ] {
                if !set.contains(m.as_str()) {
                    problems.push(ParamProblem::new(
                        "match_on",
                        format!(
                            "matching modality `{m}` is not among the `{side}` inputs ({})",
                            listed(names, names.len())
                        ),
                    ));
                }
            }
        }
        for m in &p.adapt {
            if !in_target.contains(m.as_str()) {
                problems.push(ParamProblem::new(
                    "adapt",
                    format!(
                        "adapted modality `{m}` is not among the `target` inputs ({})",
                        listed(&target, target.len())
                    ),
                ));
            }
            if m == DIAG.name() {
                problems.push(ParamProblem::new("adapt", format!("`{DIAG}` is reserved")));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut ports: Vec<OutputPort> = p
            .adapt
            .iter()
            .map(|m| OutputPort::new(m.clone(), TARGETS))
            .collect();
        ports.push(OutputPort::new(DIAG, DIAGNOSTICS));
        Ok(ports)
    }

    fn run(&self, p: &SelectTargetsParams, ctx: &mut RunContext<'_>) -> Result<(), StageError> {
        let source = Side::load(ctx, slot::SOURCE_SEGMENTS, slot::SOURCE, p, false)?;
        let target = Side::load(ctx, slot::TARGET_SEGMENTS, slot::TARGET, p, true)?;
        check_sides(ctx, p, &source, &target)?;
        let mut diags = Vec::new();
        let method = p.method.as_str();
        let matches = match &p.method {
            Method::Random(_) => {
                let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
                (0..source.ids.len())
                    .map(|_| Match::single(rng.random_range(0..target.ids.len())))
                    .collect()
            }
            Method::Cosine(settings) => cosine(&source, &target, settings),
            Method::Kmeans(settings) => {
                kmeans_matches(ctx, p, settings, &source, &target, &mut diags)?
            }
        };
        diags.extend(match_diagnostics(method, &source, &target, &matches));
        for modality in &p.adapt {
            let (dim, vectors) = &target.adapt[modality];
            let table = build_table(
                modality, *dim, vectors, method, &source, &target, &matches, p,
            );
            diags.extend(target_diagnostics(
                method, modality, &table, &source, vectors, *dim,
            ));
            table.write(ctx.output_named(modality)?, ctx.table_meta())?;
        }
        log_label_agreement(ctx.stage_id, method, &diags);
        diagnostics::write(&diags, ctx.output(DIAG)?, ctx.table_meta())?;
        ctx.report("source_segments", source.ids.len());
        ctx.report("target_train_segments", target.ids.len());
        Ok(())
    }
}

/// One dataset, as the stage needs it.
struct Side {
    dataset: String,
    ids: Vec<String>,
    splits: Vec<Split>,
    labels: Vec<Option<f32>>,
    /// Matching-space vectors, `ids.len() × dim`.
    matching: Vec<f32>,
    dim: usize,
    /// Adapted modality → (width, `ids.len() × width` pooled vectors); target side only.
    adapt: BTreeMap<String, (usize, Vec<f32>)>,
    /// Each matching modality's table and width.
    match_dims: Vec<(String, usize)>,
}

/// A features table's dataset, width and pooled vector per segment.
type Pooled = (String, usize, HashMap<String, Vec<f32>>);

/// A segment's matching vector: each matching modality's vector scaled to unit length, then
/// all by 1/√(modalities), so each weighs the same; `None` when a modality lacks the segment.
fn matching_vector(segment: &str, tables: &[(String, Pooled)], dim: usize) -> Option<Vec<f32>> {
    let scale = 1.0 / (tables.len().max(1) as f32).sqrt();
    let mut vector = Vec::with_capacity(dim);
    for (_, (_, _, map)) in tables {
        let v = map.get(segment)?;
        let norm = v
            .iter()
            .map(|x| (*x as f64) * (*x as f64))
            .sum::<f64>()
            .sqrt() as f32;
        vector.extend(
            v.iter()
                .map(|x| if norm > 0.0 { x / norm * scale } else { 0.0 }),
        );
    }
    Some(vector)
}

fn pooled(input: &ResolvedInput) -> Result<Pooled, StageError> {
    let reader = FeatureReader::open_pooled(&input.path)?;
    let info = reader.info().clone();
    let batch = reader.read_all()?;
    let mut map = HashMap::with_capacity(batch.len());
    for i in 0..batch.len() {
        let v = batch.pooled_of(i);
        if let Some(j) = v.iter().position(|x| !x.is_finite()) {
            return Err(StageError::input(format!(
                "{} ({}): segment `{}` has a non-finite value at feature {j}: normalise with nonfinite = \"zero\" first",
                input.reference,
                input.path.display(),
                batch.segment_ids[i]
            )));
        }
        map.insert(batch.segment_ids[i].clone(), v.to_vec());
    }
    Ok((info.dataset, info.dim, map))
}

impl Side {
    fn load(
        ctx: &RunContext<'_>,
        segments_slot: Slot,
        features_slot: Slot,
        p: &SelectTargetsParams,
        target: bool,
    ) -> Result<Side, StageError> {
        let segments_input = ctx.input(segments_slot)?;
        let segments = SegmentTable::read(&segments_input.path)?;
        let label_index = segments.label_index(&p.label);
        if p.label_weight.get() > 0.0 && label_index.is_none() {
            return Err(StageError::config(format!(
                "param `label` = `{}` is not a label of {} ({})",
                p.label,
                segments_input.reference,
                segments.label_names.join(", ")
            )));
        }
        let inputs = ctx.inputs(features_slot);
        let by_name = |name: &str| inputs.iter().find(|i| i.reference.output == name);
        let mut matching_tables = Vec::new();
        for m in &p.match_on {
            let input = by_name(m)
                .ok_or_else(|| StageError::Internal(format!("{features_slot}: no `{m}`")))?;
            matching_tables.push((input.reference.to_string(), pooled(input)?));
        }
        let mut adapt_tables = Vec::new();
        if target {
            for m in &p.adapt {
                let input = by_name(m)
                    .ok_or_else(|| StageError::Internal(format!("{features_slot}: no `{m}`")))?;
                adapt_tables.push((m.clone(), pooled(input)?));
            }
        }
        let dataset = matching_tables
            .first()
            .map(|(_, (d, _, _))| d.clone())
            .or_else(|| segments.rows.first().map(|r| r.dataset.clone()))
            .unwrap_or_default();
        let dim = matching_tables
            .iter()
            .map(|(_, (_, d, _))| d)
            .sum::<usize>()
            + usize::from(p.label_weight.get() > 0.0);
        let mut side = Side {
            dataset,
            ids: Vec::new(),
            splits: Vec::new(),
            labels: Vec::new(),
            matching: Vec::new(),
            dim,
            adapt: adapt_tables
                .iter()
                .map(|(m, (_, d, _))| (m.clone(), (*d, Vec::new())))
                .collect(),
            match_dims: matching_tables
                .iter()
                .map(|(r, (_, d, _))| (r.clone(), *d))
                .collect(),
        };
        for row in &segments.rows {
            if target && row.split != Split::Train {
                continue;
            }
            let label = label_index.and_then(|i| row.labels[i]);
            if p.label_weight.get() > 0.0 && label.is_none() {
                continue;
            }
            let Some(mut vector) = matching_vector(&row.segment_id, &matching_tables, dim) else {
                continue;
            };
            if adapt_tables
                .iter()
                .any(|(_, (_, _, map))| !map.contains_key(&row.segment_id))
            {
                continue;
            }
            if p.label_weight.get() > 0.0 {
                vector.push((p.label_weight.get() as f32) * label.unwrap_or(0.0) / 3.0);
            }
            for (m, (_, _, map)) in &adapt_tables {
                side.adapt
                    .get_mut(m)
                    .expect("inserted above")
                    .1
                    .extend_from_slice(&map[&row.segment_id]);
            }
            side.ids.push(row.segment_id.clone());
            side.splits.push(row.split);
            side.labels.push(label);
            side.matching.extend(vector);
        }
        Ok(side)
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.matching[i * self.dim..(i + 1) * self.dim]
    }
}

/// A source segment's match: target indices with weights, and scores.
#[derive(Debug, Clone)]
struct Match {
    targets: Vec<(usize, f32)>,
    cluster: Option<usize>,
    similarity: Option<f32>,
    distance: Option<f32>,
}

impl Match {
    fn single(j: usize) -> Match {
        Match {
            targets: vec![(j, 1.0)],
            cluster: None,
            similarity: None,
            distance: None,
        }
    }
}

/// Both sides have segments to match, and each matching modality is as wide on both.
fn check_sides(
    ctx: &RunContext<'_>,
    p: &SelectTargetsParams,
    source: &Side,
    target: &Side,
) -> Result<(), StageError> {
    if target.ids.is_empty() {
        return Err(StageError::input(format!(
            "{}: no train segment has every matching ({}) and adapted ({}) modality",
            ctx.input(slot::TARGET_SEGMENTS)?.reference,
            p.match_on.join(", "),
            p.adapt.join(", ")
        )));
    }
    if source.ids.is_empty() {
        return Err(StageError::input(format!(
            "{}: no segment has every matching modality ({})",
            ctx.input(slot::SOURCE_SEGMENTS)?.reference,
            p.match_on.join(", ")
        )));
    }
    for ((m, (s_ref, s_dim)), (t_ref, t_dim)) in p
        .match_on
        .iter()
        .zip(&source.match_dims)
        .zip(&target.match_dims)
    {
        if s_dim != t_dim {
            return Err(StageError::input(format!(
                "matching modality `{m}` (param `match_on`) is {s_dim} wide in {s_ref} but {t_dim} wide in {t_ref}: match on a modality extracted the same way in both"
            )));
        }
    }
    Ok(())
}

/// K-means over the target's train segments, each source matched through its cluster; the
/// clustering's diagnostics added to `diags`.
fn kmeans_matches(
    ctx: &mut RunContext<'_>,
    p: &SelectTargetsParams,
    settings: &KmeansSettings,
    source: &Side,
    target: &Side,
    diags: &mut Vec<Diagnostic>,
) -> Result<Vec<Match>, StageError> {
    if settings.k.get() > target.ids.len() {
        return Err(StageError::config(format!(
            "param `k` = {} but {} has only {} usable train segments",
            settings.k,
            ctx.input(slot::TARGET_SEGMENTS)?.reference,
            target.ids.len()
        )));
    }
    if let Some(i) = (0..target.ids.len()).find(|&i| target.row(i).iter().any(|v| !v.is_finite())) {
        return Err(StageError::input(format!(
            "{}: segment `{}` has a non-finite value in its matching modalities ({}): k-means needs finite values",
            ctx.input(slot::TARGET_SEGMENTS)?.reference,
            target.ids[i],
            p.match_on.join(", ")
        )));
    }
    let bar = ctx.progress.bar("k-means", 1);
    let clustering = kmeans::fit(
        &target.matching,
        target.dim,
        settings.k.get(),
        settings.max_iterations.get() as u64,
        settings.tolerance.get(),
        ctx.seed,
    )
    .map_err(|e| StageError::compute("k-means", e))?;
    bar.inc(1);
    diags.extend(cluster_diagnostics(
        p.method.as_str(),
        &clustering,
        target.ids.len(),
        settings.k.get(),
    ));
    Ok(cluster_matches(source, target, &clustering, settings))
}

/// The clustering's inertia (both conventions) and cluster sizes.
fn cluster_diagnostics(
    method: &str,
    clustering: &kmeans::Clustering,
    points: usize,
    k: usize,
) -> Vec<Diagnostic> {
    let sizes = clustering.sizes();
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    let size =
        |metric: &str, value: usize| Diagnostic::new(method, "matching", metric, value as f64);
    vec![
        Diagnostic::new(method, "matching", "inertia", clustering.inertia)
            .with_n(points)
            .with_note("sum of squared distances to the centroids (scikit-learn's convention)"),
        Diagnostic::new(
            method,
            "matching",
            "inertia_per_point",
            clustering.inertia / points as f64,
        )
        .with_note("linfa's convention"),
        size("cluster_size_min", sorted[0]),
        size("cluster_size_median", sorted[sorted.len() / 2]),
        size("cluster_size_max", sorted[sorted.len() - 1]),
        Diagnostic::new(
            method,
            "matching",
            "empty_cluster_share",
            sizes.iter().filter(|&&s| s == 0).count() as f64 / k as f64,
        ),
    ]
}

/// The label agreement of the matches, in the log.
fn log_label_agreement(stage: &str, method: &str, diags: &[Diagnostic]) {
    for d in diags.iter().filter(|d| d.metric == "label_agreement") {
        tracing::info!(
            "{stage}: {method}: label agreement r = {:.3} (n = {}, 95% CI {:.3}…{:.3})",
            d.value,
            d.n.unwrap_or(0),
            d.ci_low.unwrap_or(f64::NAN),
            d.ci_high.unwrap_or(f64::NAN)
        );
    }
}

fn cosine(source: &Side, target: &Side, p: &CosineSettings) -> Vec<Match> {
    let (mut q, mut k) = (source.matching.clone(), target.matching.clone());
    normalize_rows(&mut q, source.dim);
    normalize_rows(&mut k, target.dim);
    let top = dot_search::top_k(&Queries::new(&q, source.dim), &k, &[], p.top_k.get());
    top.into_rows()
        .into_iter()
        .map(|best| {
            let similarity = best.iter().map(|t| t.1).sum::<f32>() / best.len() as f32;
            let weights: Vec<(usize, f32)> = match p.weighting {
                Weighting::Uniform => best.iter().map(|&(j, _)| (j, 1.0)).collect(),
                Weighting::Similarity => {
                    let w: Vec<(usize, f32)> = best.iter().map(|&(j, s)| (j, s.max(0.0))).collect();
                    if w.iter().all(|t| t.1 == 0.0) {
                        best.iter().map(|&(j, _)| (j, 1.0)).collect()
                    } else {
                        w
                    }
                }
            };
            Match {
                targets: weights,
                cluster: None,
                similarity: Some(similarity),
                distance: None,
            }
        })
        .collect()
}

fn cluster_matches(
    source: &Side,
    target: &Side,
    clustering: &kmeans::Clustering,
    p: &KmeansSettings,
) -> Vec<Match> {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); clustering.k];
    for (j, &c) in clustering.assignment.iter().enumerate() {
        members[c].push(j);
    }
    let assigned = clustering.assign(&source.matching);
    assigned
        .into_iter()
        .enumerate()
        .map(|(i, (c, d2))| {
            let centroid = &clustering.centroids[c * clustering.dim..(c + 1) * clustering.dim];
            let targets = match p.cluster_target {
                ClusterTarget::Mean => members[c].iter().map(|&j| (j, 1.0)).collect(),
                ClusterTarget::NearestMember => {
                    let best = members[c]
                        .iter()
                        .copied()
                        .min_by(|&a, &b| {
                            crate::linalg::squared_distance(source.row(i), target.row(a)).total_cmp(
                                &crate::linalg::squared_distance(source.row(i), target.row(b)),
                            )
                        })
                        .unwrap_or(0);
                    vec![(best, 1.0)]
                }
            };
            Match {
                targets,
                cluster: Some(c),
                similarity: Some(cosine_of(source.row(i), centroid)),
                distance: Some(d2.sqrt()),
            }
        })
        .collect()
}

fn cosine_of(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += (*x as f64) * (*y as f64);
        aa += (*x as f64) * (*x as f64);
        bb += (*y as f64) * (*y as f64);
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        (ab / (aa * bb).sqrt()) as f32
    }
}

/// Weighted mean of target rows.
fn weighted_mean(targets: &[(usize, f32)], rows: &[f32], dim: usize) -> Vec<f32> {
    let mut acc = vec![0f64; dim];
    let total: f64 = targets.iter().map(|t| t.1 as f64).sum();
    for &(j, w) in targets {
        for (a, &x) in acc.iter_mut().zip(&rows[j * dim..(j + 1) * dim]) {
            *a += w as f64 * x as f64;
        }
    }
    acc.into_iter()
        .map(|a| (a / total.max(f64::MIN_POSITIVE)) as f32)
        .collect()
}

fn target_label(m: &Match, target: &Side) -> Option<f32> {
    let mut sum = 0f64;
    let mut weight = 0f64;
    for &(j, w) in &m.targets {
        let l = target.labels[j]?;
        sum += w as f64 * l as f64;
        weight += w as f64;
    }
    (weight > 0.0).then(|| (sum / weight) as f32)
}

#[expect(
    clippy::too_many_arguments,
    reason = "the columns of one table, each a plain slice"
)]
fn build_table(
    modality: &str,
    dim: usize,
    vectors: &[f32],
    method: &str,
    source: &Side,
    target: &Side,
    matches: &[Match],
    p: &SelectTargetsParams,
) -> TargetTable {
    let mut rows = Vec::with_capacity(matches.len());
    let mut out = Vec::with_capacity(matches.len() * dim);
    // Cluster means are the same for every source in a cluster: compute each once.
    let mut cluster_means: HashMap<usize, Vec<f32>> = HashMap::new();
    for (i, m) in matches.iter().enumerate() {
        let vector = match m.cluster {
            Some(c) if p.method.is_cluster_mean() => cluster_means
                .entry(c)
                .or_insert_with(|| weighted_mean(&m.targets, vectors, dim))
                .clone(),
            _ => weighted_mean(&m.targets, vectors, dim),
        };
        out.extend(vector);
        let listed = !p.method.is_cluster_mean();
        rows.push(TargetRow {
            segment_id: source.ids[i].clone(),
            split: source.splits[i],
            matched: if listed {
                m.targets
                    .iter()
                    .map(|&(j, _)| target.ids[j].clone())
                    .collect()
            } else {
                Vec::new()
            },
            cluster: m.cluster.map(|c| c as i32),
            similarity: m.similarity,
            distance: m.distance,
            source_label: source.labels[i],
            target_label: target_label(m, target),
        });
    }
    TargetTable {
        info: TargetInfo {
            modality: modality.to_string(),
            dim,
            method: method.to_string(),
            source_dataset: source.dataset.clone(),
            target_dataset: target.dataset.clone(),
        },
        rows,
        vectors: out,
    }
}

/// Similarity distribution, target reuse and label agreement, on the source train split.
fn match_diagnostics(
    method: &str,
    source: &Side,
    target: &Side,
    matches: &[Match],
) -> Vec<Diagnostic> {
    let train: Vec<usize> = (0..matches.len())
        .filter(|&i| source.splits[i] == Split::Train)
        .collect();
    let mut out = Vec::new();
    let sims: Vec<f64> = train
        .iter()
        .map(|&i| {
            let m = &matches[i];
            m.similarity.map(f64::from).unwrap_or_else(|| {
                m.targets
                    .iter()
                    .map(|&(j, _)| cosine_of(source.row(i), target.row(j)) as f64)
                    .sum::<f64>()
                    / m.targets.len() as f64
            })
        })
        .collect();
    for (name, q) in [
        ("similarity_min", 0.0),
        ("similarity_q25", 0.25),
        ("similarity_median", 0.5),
        ("similarity_q75", 0.75),
        ("similarity_max", 1.0),
    ] {
        if let Some(v) = quantile(&sims, q) {
            out.push(Diagnostic::new(method, "matching", name, v).with_n(sims.len()).with_note("cosine similarity of each source train segment to its target(s) in the matching space"));
        }
    }
    // A target is a cluster (k-means means) or a set of target segments.
    let mut uses: HashMap<Vec<usize>, usize> = HashMap::new();
    for &i in &train {
        let m = &matches[i];
        let key = match m.cluster {
            Some(c) if m.targets.len() > 1 => vec![usize::MAX, c],
            _ => m.targets.iter().map(|t| t.0).collect(),
        };
        *uses.entry(key).or_default() += 1;
    }
    if !train.is_empty() {
        out.push(Diagnostic::new(method, "matching", "distinct_targets", uses.len() as f64).with_n(train.len()).with_note("distinct targets (clusters, or sets of target segments) given to source train segments"));
        out.push(
            Diagnostic::new(
                method,
                "matching",
                "max_target_reuse",
                uses.values().copied().max().unwrap_or(0) as f64,
            )
            .with_note("source train segments sharing the most used target"),
        );
    }
    let pairs: Vec<(f64, f64)> = train
        .iter()
        .filter_map(|&i| {
            Some((
                source.labels[i]? as f64,
                target_label(&matches[i], target)? as f64,
            ))
        })
        .collect();
    let (x, y): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
    if let Some(r) = pearson(&x, &y) {
        let mut d = Diagnostic::new(method, "matching", "label_agreement", r)
            .with_n(x.len())
            .with_note("Pearson r between source labels and their targets' labels (source train): does the matching carry sentiment?");
        if let Some(ci) = fisher_ci(r, x.len()) {
            d = d.with_ci(ci);
        }
        out.push(d);
    }
    out
}

/// How much the targets vary compared with the target dataset itself (collapse check).
fn target_diagnostics(
    method: &str,
    modality: &str,
    table: &TargetTable,
    source: &Side,
    real: &[f32],
    dim: usize,
) -> Vec<Diagnostic> {
    let train: Vec<usize> = (0..table.rows.len())
        .filter(|&i| source.splits[i] == Split::Train)
        .collect();
    if train.len() < 2 || dim == 0 {
        return Vec::new();
    }
    let spread = |rows: &mut dyn Iterator<Item = &[f32]>| -> f64 {
        let all: Vec<&[f32]> = rows.collect();
        let n = all.len() as f64;
        (0..dim)
            .map(|j| {
                let m = all.iter().map(|r| r[j] as f64).sum::<f64>() / n;
                (all.iter().map(|r| (r[j] as f64 - m).powi(2)).sum::<f64>() / n).sqrt()
            })
            .sum::<f64>()
            / dim as f64
    };
    let ours = spread(&mut train.iter().map(|&i| table.vector(i)));
    let theirs = spread(&mut real.chunks(dim));
    vec![Diagnostic::new(method, modality, "target_spread_ratio", ours / theirs.max(f64::MIN_POSITIVE))
        .with_n(train.len())
        .with_note("mean per-feature std of the targets / of the target train set: near 0 means collapsed targets")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SelectTargetsParams, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn each_method_owns_its_settings_and_hashes_only_them() {
        let kmeans = serde_json::to_value(parse("method = \"kmeans\"\nk = 8").unwrap()).unwrap();
        assert_eq!(kmeans["k"], 8);
        for other in ["top_k", "weighting"] {
            assert!(kmeans.get(other).is_none(), "{other} in {kmeans}");
        }
        let cosine = serde_json::to_value(parse("method = \"cosine\"").unwrap()).unwrap();
        assert!(cosine.get("k").is_none() && cosine["top_k"] == 1);
        let error = parse("method = \"kmeans\"\ntop_k = 3")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `top_k`"), "{error}");
        assert!(parse("method = \"random\"\nk = 3").is_err());
        // Without `method`: k-means, as before methods owned their settings.
        assert_eq!(parse("k = 4").unwrap().method.as_str(), "kmeans");
    }
}
