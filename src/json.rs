//! `--json`: what `run`, `plan`, `sweep`, `compare` and `inspect` print for programs (the Python
//! package reads nothing else). Each command prints one JSON document on stdout, and only it;
//! messages, warnings and progress stay on stderr, exit codes are unchanged.
//!
//! Every document carries `"format": FORMAT`. Within one format, fields are only ever added;
//! a field renamed, removed or given another meaning raises the format.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use mmflow_pipeline::plan::PlanStatus;
use mmflow_pipeline::{Pipeline, StageOutcome};
use mmflow_schemas::comparison::ComparisonRow;
use serde::Serialize;

/// Version of the documents' layout.
pub const FORMAT: u32 = 1;

/// Prints `document` as one line of JSON on stdout (a reader that went away is an error, not
/// a panic).
pub fn print<T: Serialize>(document: &T) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, document)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(())
}

/// `mmflow run --json`: what each stage did.
#[derive(Debug, Serialize)]
pub struct RunDocument {
    /// [`FORMAT`].
    pub format: u32,
    /// The pipeline's name.
    pub pipeline: String,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Whether a stage failed (the exit code is then 1).
    pub failed: bool,
    /// Every stage, in the order they ran.
    pub stages: Vec<StageRun>,
}

/// What one stage did in a run.
#[derive(Debug, Serialize)]
pub struct StageRun {
    /// Stage id.
    pub id: String,
    /// Stage kind.
    pub kind: String,
    /// What happened.
    pub outcome: Outcome,
    /// Why it ran (or was restored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Wall time in seconds (ran or restored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// The error of a failed stage, naming what is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A stage's outcome in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Ran and succeeded.
    Ran,
    /// Its outputs were restored from the run-cache.
    Restored,
    /// Skipped: up to date.
    UpToDate,
    /// Failed.
    Failed,
    /// Not run: a stage it depends on failed.
    NotRun,
}

impl RunDocument {
    /// The document of a finished run of `p`.
    pub fn new(p: &Pipeline, stages: &[(String, StageOutcome)]) -> Self {
        let stages: Vec<StageRun> = stages
            .iter()
            .map(|(id, outcome)| StageRun::new(p, id, outcome))
            .collect();
        RunDocument {
            format: FORMAT,
            pipeline: p.name.clone(),
            run_dir: p.run_dir.clone(),
            failed: stages.iter().any(|s| s.outcome == Outcome::Failed),
            stages,
        }
    }
}

impl StageRun {
    fn new(p: &Pipeline, id: &str, outcome: &StageOutcome) -> Self {
        let (outcome, reason, seconds, error) = match outcome {
            StageOutcome::Ran { reason, seconds } => {
                (Outcome::Ran, Some(reason.clone()), Some(*seconds), None)
            }
            StageOutcome::Restored { reason, seconds } => (
                Outcome::Restored,
                Some(reason.clone()),
                Some(*seconds),
                None,
            ),
            StageOutcome::UpToDate => (Outcome::UpToDate, None, None, None),
            StageOutcome::Failed { error } => (Outcome::Failed, None, None, Some(error.clone())),
            StageOutcome::NotRun => (Outcome::NotRun, None, None, None),
        };
        StageRun {
            id: id.to_string(),
            kind: kind_of(p, id),
            outcome,
            reason,
            seconds,
            error,
        }
    }
}

fn kind_of(p: &Pipeline, id: &str) -> String {
    p.stage(id)
        .map(|s| s.stage.kind().to_string())
        .unwrap_or_default()
}

/// `mmflow plan --json` (and `run --dry-run --json`): what a run would do.
#[derive(Debug, Serialize)]
pub struct PlanDocument {
    /// [`FORMAT`].
    pub format: u32,
    /// The pipeline's name.
    pub pipeline: String,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The pipeline's seed.
    pub seed: u64,
    /// The pipeline's device.
    pub device: String,
    /// Every stage, in the order they would run.
    pub stages: Vec<StagePlan>,
}

/// What a run would do with one stage.
#[derive(Debug, Serialize)]
pub struct StagePlan {
    /// Stage id.
    pub id: String,
    /// Stage kind.
    pub kind: String,
    /// What would happen.
    pub status: Planned,
    /// Why (will run, restore, cannot run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The upstream stages whose new outputs would make it run (`after_upstream`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
    /// The references it reads (`stage.output`).
    pub inputs: Vec<String>,
    /// Its outputs' names.
    pub outputs: Vec<String>,
}

/// What a run would do with a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Planned {
    /// Skipped.
    UpToDate,
    /// Run.
    WillRun,
    /// Restored from the run-cache.
    Restore,
    /// Run if its upstream stages change their outputs.
    AfterUpstream,
    /// Fail before it starts (its device cannot be used).
    CannotRun,
}

impl PlanDocument {
    /// The document of `statuses`, the plan of `p`.
    pub fn new(p: &Pipeline, statuses: &[(String, PlanStatus)]) -> Self {
        let stages = p
            .stages
            .iter()
            .zip(statuses)
            .map(|(stage, (_, status))| {
                let (status, reason, upstream) = match status {
                    PlanStatus::UpToDate => (Planned::UpToDate, None, Vec::new()),
                    PlanStatus::WillRun(why) => (Planned::WillRun, Some(why.clone()), Vec::new()),
                    PlanStatus::Restore(why) => (Planned::Restore, Some(why.clone()), Vec::new()),
                    PlanStatus::CannotRun(why) => {
                        (Planned::CannotRun, Some(why.clone()), Vec::new())
                    }
                    PlanStatus::AfterUpstream(up) => (Planned::AfterUpstream, None, up.clone()),
                };
                StagePlan {
                    id: stage.id.clone(),
                    kind: stage.stage.kind().to_string(),
                    status,
                    reason,
                    upstream,
                    inputs: stage
                        .inputs
                        .values()
                        .flatten()
                        .map(|r| r.to_string())
                        .collect(),
                    outputs: stage.outputs.iter().map(|o| o.name.clone()).collect(),
                }
            })
            .collect();
        PlanDocument {
            format: FORMAT,
            pipeline: p.name.clone(),
            run_dir: p.run_dir.clone(),
            seed: p.seed,
            device: p.device.as_str().to_string(),
            stages,
        }
    }
}

/// `mmflow compare --json`: the rows of the `comparison` table (long format: group × metric,
/// groups in their order, 0 the base), the same values `--parquet` writes.
#[derive(Debug, Serialize)]
pub struct CompareDocument {
    /// [`FORMAT`].
    pub format: u32,
    /// The compared split.
    pub split: String,
    /// The run directories compared, as given.
    pub runs: Vec<PathBuf>,
    /// The rows.
    pub rows: Vec<ComparisonRow>,
}

/// `mmflow sweep --json`: the sweep's runs and its comparison.
#[derive(Debug, Serialize)]
pub struct SweepDocument {
    /// [`FORMAT`].
    pub format: u32,
    /// The sweep's folder (`<run dir>/mmflow.sweep`).
    pub folder: PathBuf,
    /// Every point × seed.
    pub runs: Vec<SweepRunDocument>,
    /// The comparison table, written when every run finished.
    pub comparison: Option<PathBuf>,
    /// Whether the runs were handed to a scheduler and have not been compared yet.
    pub submitted: bool,
}

/// One point × seed of a sweep.
#[derive(Debug, Serialize)]
pub struct SweepRunDocument {
    /// The point (its settings, as its folder is named).
    pub point: String,
    /// The seed.
    pub seed: u64,
    /// Its run directory.
    pub run_dir: PathBuf,
    /// Whether it is a finished run.
    pub finished: bool,
    /// Why it is not (unfinished runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// `mmflow inspect --json`: a finished run, its stages and outputs.
#[derive(Debug, Serialize)]
pub struct InspectDocument {
    /// [`FORMAT`].
    pub format: u32,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The pipeline's name.
    pub pipeline: String,
    /// The resolved pipeline the run completed (its `pipeline.toml`).
    pub settings: serde_json::Value,
    /// The completed stages, by id.
    pub stages: Vec<StageRecord>,
}

/// One completed stage of a run.
#[derive(Debug, Serialize)]
pub struct StageRecord {
    /// Stage id.
    pub id: String,
    /// Stage kind.
    pub kind: String,
    /// Stage kind version.
    pub version: u32,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Its seed.
    pub seed: u64,
    /// Its device (stages whose results depend on one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Wall time of the run that wrote its outputs, in seconds.
    pub seconds: f64,
    /// When it finished (seconds since the Unix epoch).
    pub finished_unix: u64,
    /// Facts it reported (counts, sizes, warnings).
    pub report: BTreeMap<String, serde_json::Value>,
    /// Its outputs.
    pub outputs: Vec<OutputDocument>,
}

/// One output of a completed stage.
#[derive(Debug, Serialize)]
pub struct OutputDocument {
    /// Output name.
    pub name: String,
    /// `stage.output`.
    pub reference: String,
    /// The file (the run directory joined with the lock's path).
    pub path: PathBuf,
    /// The kind of table it holds (`metrics`, `history`, …).
    pub table: Option<String>,
    /// Rows, for tables.
    pub rows: Option<u64>,
    /// Size in bytes, as recorded.
    pub size: u64,
    /// Content hash (blake3), as recorded.
    pub hash: String,
    /// `true`: checked, the file is what the stage wrote (size and content hash); `false`:
    /// it is not (see `problem`); `null`: not checked (without `--verify`).
    pub verified: Option<bool>,
    /// Why it is not verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}
