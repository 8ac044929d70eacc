//! `mmflow sweep FILE`: every point of the file's `[sweep]` section over every seed, each an
//! ordinary cached run in `<run dir>/mmflow.sweep/<point>-seed<seed>` (one directory per point, named
//! by its full settings), then the comparison of all of them (as `mmflow compare`), written to
//! `<run dir>/mmflow.sweep/comparison.parquet`. Every point is validated before anything runs; a
//! point whose run fails does not stop the others, and is listed as unfinished below the
//! comparison of the finished ones.
//!
//! The runs execute where the executor says ([`local`]: this machine, `jobs` at once;
//! [`slurm`]: one job array). Either way a run is the same ordinary run, and the points share
//! the run-cache of the sweep folder: stages every run has in common (sources, normalisation,
//! targets) are computed once, first, in `mmflow.sweep/mmflow.shared`, when runs execute
//! concurrently.

mod local;
mod slurm;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mmflow_pipeline::record::RunRecord;
use mmflow_pipeline::sweep::{check, points, run_dir_name, ExecutorChoice};
use mmflow_pipeline::{Pipeline, Progress, RunOptions, RunSummary, StageOutcome};

use mmflow_study::compare;

use crate::json;

/// The folder of a sweep's runs inside the base run directory: stage ids never contain a dot,
/// so no stage's outputs can share it.
const SWEEP_FOLDER: &str = "mmflow.sweep";

/// The run directory (inside the sweep folder) of the stages every run shares. Point folders
/// end in `-seed<n>`, so none can be named so.
const SHARED_FOLDER: &str = "mmflow.shared";

/// What `main` needs to know to report the outcome.
pub enum Outcome {
    /// Every run finished; the comparison is printed.
    Done,
    /// The runs were handed to a scheduler; `--collect` compares them once they finish.
    Submitted,
    /// A problem with the file or a point: nothing ran.
    Invalid,
    /// A run failed (its stages' errors are printed, the run listed as unfinished).
    Failed,
}

/// What the command line asks of a sweep.
pub struct Request<'a> {
    /// The pipeline file.
    pub file: &'a Path,
    /// `--set` overrides.
    pub set: &'a [String],
    /// `--out`.
    pub out: Option<&'a PathBuf>,
    /// `--executor`, overriding `[sweep] executor`.
    pub executor: Option<ExecutorChoice>,
    /// `--jobs`, overriding `[sweep] jobs`.
    pub jobs: Option<usize>,
    /// `--wait`: wait for the scheduler's jobs, then compare.
    pub wait: bool,
    /// `--collect`: run nothing, compare what finished.
    pub collect: bool,
    /// What this process itself runs.
    pub part: Part,
    /// The sweep's identity at submission (a task refuses a sweep that changed since).
    pub expect: Option<&'a str>,
    /// Progress bars.
    pub progress: Progress,
    /// Print `--json`'s document on stdout (the account of the runs goes to stderr).
    pub json: bool,
}

/// Where a sweep's account of its runs is printed: stdout, or stderr when stdout carries
/// `--json`'s document.
#[derive(Debug, Clone, Copy)]
pub struct Say {
    json: bool,
}

impl Say {
    /// Prints one line of the account.
    fn line(self, text: std::fmt::Arguments<'_>) {
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
}

/// The part of a sweep one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The whole sweep (through its executor).
    All,
    /// One run, by its index among points × seeds (a job array's task).
    Task(usize),
    /// The stages every run shares (the job before a job array).
    Shared,
}

/// One point × seed.
struct SweepRun {
    point: String,
    seed: u64,
    /// The `--set` overrides that make it (the command line's, the point's, the seed).
    overrides: Vec<String>,
    pipeline: Pipeline,
}

impl SweepRun {
    fn label(&self) -> String {
        format!("point {}, seed {}", self.point, self.seed)
    }
}

/// The loaded sweep: its folder, its runs and what they share.
struct Sweep {
    file: PathBuf,
    root: PathBuf,
    runs: Vec<SweepRun>,
    section: mmflow_pipeline::sweep::SweepSection,
    say: Say,
}

/// Runs the sweep of `request.file`.
pub fn sweep(request: Request<'_>) -> Result<Outcome> {
    let Some(sweep) = load(&request)? else {
        return Ok(Outcome::Invalid);
    };
    if let Some(expected) = request.expect {
        if slurm::identity(&sweep) != expected {
            anyhow::bail!(
                "{}: the sweep changed since it was submitted (its runs or their settings differ); nothing was run: submit it again",
                sweep.file.display()
            );
        }
    }
    mmflow_schemas::files::check_own_folder(&sweep.root)
        .with_context(|| format!("{}: the sweep's folder", sweep.root.display()))?;
    let options = RunOptions {
        progress: request.progress.clone(),
        ..RunOptions::default()
    };
    match request.part {
        Part::Task(index) => return run_task(&sweep, index, &options),
        Part::Shared => {
            return Ok(match run_shared(&sweep, &options) {
                Some(summary) if summary.failed() => Outcome::Failed,
                _ => Outcome::Done,
            })
        }
        Part::All => {}
    }
    if !request.collect {
        let executor = request.executor.unwrap_or(sweep.section.executor);
        match executor {
            ExecutorChoice::Local => {
                let jobs = request.jobs.unwrap_or(sweep.section.jobs).max(1);
                local::execute(&sweep, jobs, &options);
            }
            ExecutorChoice::Slurm => {
                let submitted = slurm::submit(&sweep, request.set, request.out, request.wait)?;
                if !request.wait && submitted {
                    if request.json {
                        json::print(&document(&sweep, &[], None, true))?;
                    }
                    return Ok(Outcome::Submitted);
                }
            }
        }
    }
    collect(&sweep)
}

/// Loads the base pipeline and every point × seed; `None` (problems printed) if any is invalid.
fn load(request: &Request<'_>) -> Result<Option<Sweep>> {
    let (file, set) = (request.file, request.set);
    let registry = mmflow_stages::registry();
    let base = match mmflow_pipeline::load(file, set, &registry) {
        Ok(p) => p,
        Err(problems) => {
            report(
                file,
                problems.to_string().lines().map(str::to_string).collect(),
            );
            return Ok(None);
        }
    };
    let Some(section) = base.sweep.clone() else {
        report(
            file,
            vec![format!(
                "{}: no [sweep] section: nothing to sweep",
                file.display()
            )],
        );
        return Ok(None);
    };
    let mut problems = check(&section);
    if request.jobs == Some(0) {
        problems.push("--jobs must be at least 1".into());
    }
    if !problems.is_empty() {
        report(
            file,
            problems
                .into_iter()
                .map(|p| format!("{}: {p}", file.display()))
                .collect(),
        );
        return Ok(None);
    }
    let root = request
        .out
        .cloned()
        .unwrap_or_else(|| base.run_dir.clone())
        .join(SWEEP_FOLDER);
    // Load every point × seed first: a key that does not exist fails here, before any run.
    let mut runs = Vec::new();
    let mut problems = Vec::new();
    for point in points(&section) {
        for &seed in &section.seeds {
            let mut overrides = set.to_vec();
            overrides.extend(point.overrides.iter().cloned());
            overrides.push(format!("pipeline.seed={seed}"));
            match mmflow_pipeline::load(file, &overrides, &registry) {
                Ok(mut p) => {
                    p.run_dir = root.join(run_dir_name(&point, seed));
                    runs.push(SweepRun {
                        point: point.name.clone(),
                        seed,
                        overrides,
                        pipeline: p,
                    });
                }
                Err(e) => problems.extend(
                    e.to_string()
                        .lines()
                        .map(|p| format!("sweep point `{}`: {p}", point.name)),
                ),
            }
            if !problems.is_empty() {
                break; // the other seeds of this point have the same problem
            }
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        report(file, problems);
        return Ok(None);
    }
    Ok(Some(Sweep {
        file: file.to_path_buf(),
        root,
        runs,
        section,
        say: Say { json: request.json },
    }))
}

/// Runs one point × seed (a job array's task).
fn run_task(sweep: &Sweep, index: usize, options: &RunOptions) -> Result<Outcome> {
    let Some(run) = sweep.runs.get(index) else {
        eprintln!(
            "error: {}: --task {index}: the sweep has {} runs (0…{}); nothing was run",
            sweep.file.display(),
            sweep.runs.len(),
            sweep.runs.len().saturating_sub(1)
        );
        return Ok(Outcome::Invalid);
    };
    Ok(match run_one(run, options, sweep.say) {
        Some(summary) if !summary.failed() => Outcome::Done,
        _ => Outcome::Failed,
    })
}

/// Runs one point × seed and prints what happened; `None` if it could not start.
fn run_one(run: &SweepRun, options: &RunOptions, say: Say) -> Option<RunSummary> {
    let p = &run.pipeline;
    // A point that cannot run (its run directory busy, its lock refused) is one unfinished
    // point: the others still run, and it is listed below.
    let summary = match mmflow_pipeline::run(p, options) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("error: {}: {e}", run.label());
            return None;
        }
    };
    say.line(format_args!(
        "{}: {} · {}",
        run.label(),
        counts(&summary),
        p.run_dir.display()
    ));
    for (id, outcome) in &summary.stages {
        if let StageOutcome::Failed { error } = outcome {
            eprintln!("error: {}: stage `{id}` failed: {error}", run.label());
        }
    }
    Some(summary)
}

/// `2 ran, 1 restored, 0 up to date`.
fn counts(summary: &RunSummary) -> String {
    let count = |f: fn(&StageOutcome) -> bool| summary.stages.iter().filter(|(_, o)| f(o)).count();
    format!(
        "{} ran, {} restored, {} up to date",
        count(|o| matches!(o, StageOutcome::Ran { .. })),
        count(|o| matches!(o, StageOutcome::Restored { .. })),
        count(|o| matches!(o, StageOutcome::UpToDate)),
    )
}

/// The stages every run of the sweep has in common: the same id, kind, params, seed, source
/// files and inputs in every run, reading only stages that are shared too. Their outputs are
/// the same in every run, so computing them once fills the run-cache for all.
fn shared_stages(runs: &[SweepRun]) -> BTreeSet<String> {
    let Some(first) = runs.first() else {
        return BTreeSet::new();
    };
    let signature = |p: &Pipeline, id: &str| {
        p.stage(id).map(|s| {
            serde_json::json!({
                "kind": s.stage.kind(),
                "version": s.stage.version(),
                "params": s.params.canonical,
                "seed": s.seed,
                "device": s.uses_device.then(|| p.device.as_str()),
                "inputs": s.inputs.iter().map(|(slot, refs)| (slot.clone(), refs.iter().map(|r| r.to_string()).collect::<Vec<_>>())).collect::<BTreeMap<_, _>>(),
                "files": s.external_files,
            })
        })
    };
    let mut shared = BTreeSet::new();
    // Topological order: a stage's upstream stages are decided before it.
    for stage in &first.pipeline.stages {
        let mine = signature(&first.pipeline, &stage.id);
        let same_everywhere = runs[1..]
            .iter()
            .all(|r| signature(&r.pipeline, &stage.id) == mine);
        if same_everywhere && stage.upstream.iter().all(|u| shared.contains(u)) {
            shared.insert(stage.id.clone());
        }
    }
    shared
}

/// The first run restricted to the shared stages, in the sweep's `mmflow.shared` folder (so
/// its run-cache is the points' one); `None` if the runs share nothing or there is one run.
fn shared_pipeline(sweep: &Sweep) -> Option<Pipeline> {
    if sweep.runs.len() < 2 {
        return None;
    }
    let shared = shared_stages(&sweep.runs);
    if shared.is_empty() {
        return None;
    }
    let registry = mmflow_stages::registry();
    let mut p = mmflow_pipeline::load(&sweep.file, &sweep.runs[0].overrides, &registry).ok()?;
    // Shared stages read only shared stages: the restricted pipeline is whole.
    p.stages.retain(|s| shared.contains(&s.id));
    p.run_dir = sweep.root.join(SHARED_FOLDER);
    Some(p)
}

/// Computes the shared stages once (see [`shared_stages`]); `None` if there are none.
fn run_shared(sweep: &Sweep, options: &RunOptions) -> Option<RunSummary> {
    let p = shared_pipeline(sweep)?;
    match mmflow_pipeline::run(&p, options) {
        Ok(summary) => {
            sweep.say.line(format_args!(
                "stages every run shares ({}): {} · {}",
                p.stages
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                counts(&summary),
                p.run_dir.display()
            ));
            Some(summary)
        }
        Err(e) => {
            eprintln!("error: the stages every run shares: {e}");
            None
        }
    }
}

/// Compares the finished runs; names the unfinished ones (and where their logs are).
fn collect(sweep: &Sweep) -> Result<Outcome> {
    let root = &sweep.root;
    // Only finished runs are compared (the same decision as `compare` and `report`).
    let mut finished = Vec::new();
    let mut unfinished = Vec::new();
    let mut problems = Vec::new();
    let submitted = slurm::Submission::load(root)?;
    for (index, run) in sweep.runs.iter().enumerate() {
        match RunRecord::load(&run.pipeline.run_dir) {
            Ok(_) => {
                finished.push(run.pipeline.run_dir.clone());
                problems.push(None);
            }
            Err(e) => {
                let job = submitted
                    .as_ref()
                    .and_then(|s| s.describe_task(root, index))
                    .map(|j| format!(" [{j}]"))
                    .unwrap_or_default();
                unfinished.push(format!("{}: {e}{job}", run.label()));
                problems.push(Some(format!("{e}{job}")));
            }
        }
    }
    // The comparison table is written only for the whole sweep, never for a part of it.
    let parquet = unfinished
        .is_empty()
        .then(|| root.join("comparison.parquet"));
    if !finished.is_empty() {
        let table = compare::compare(&compare::Options {
            runs: finished,
            split: "test".into(),
            metrics: Vec::new(),
            sort: None,
            parquet: parquet.clone(),
        })?;
        sweep.say.line(format_args!("\n{table}"));
    }
    if sweep.say.json {
        json::print(&document(sweep, &problems, parquet.as_deref(), false))?;
    }
    if let Some(path) = parquet {
        sweep
            .say
            .line(format_args!("comparison table: {}", path.display()));
        return Ok(Outcome::Done);
    }
    // A table of an earlier, complete sweep would no longer describe these runs. Removed only
    // from the sweep folder mmflow made (a real folder, never through a link), and only if it
    // is a comparison table mmflow wrote.
    let stale = root.join("comparison.parquet");
    let own_folder = std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir());
    if own_folder && compare::check_parquet_destination(&stale).is_ok() && stale.is_file() {
        std::fs::remove_file(&stale)
            .with_context(|| format!("removing the stale {}", stale.display()))?;
        eprintln!("removed the comparison table of an earlier run of this sweep");
    }
    eprintln!(
        "error: {} of {} runs of the sweep are unfinished and not compared (no comparison table written):",
        unfinished.len(),
        sweep.runs.len()
    );
    for line in &unfinished {
        eprintln!("  {line}");
    }
    Ok(Outcome::Failed)
}

/// `--json`'s document: every run, with why it is unfinished (`problems`, by run; none
/// given: every run not compared yet, its jobs `submitted`).
fn document(
    sweep: &Sweep,
    problems: &[Option<String>],
    comparison: Option<&Path>,
    submitted: bool,
) -> json::SweepDocument {
    let runs = sweep
        .runs
        .iter()
        .enumerate()
        .map(|(index, run)| {
            let problem = match problems.get(index) {
                Some(problem) => problem.clone(),
                None => Some("submitted: not finished yet".into()),
            };
            json::SweepRunDocument {
                point: run.point.clone(),
                seed: run.seed,
                run_dir: run.pipeline.run_dir.clone(),
                finished: problem.is_none(),
                problem,
            }
        })
        .collect();
    json::SweepDocument {
        format: json::FORMAT,
        folder: sweep.root.clone(),
        runs,
        comparison: comparison.map(Path::to_path_buf),
        submitted,
    }
}

fn report(file: &Path, problems: Vec<String>) {
    for p in &problems {
        eprintln!("{p}");
    }
    eprintln!(
        "error: {} problem{} in {}; nothing was run",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        file.display()
    );
}
