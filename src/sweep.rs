//! `mmflow sweep FILE`: every point of the file's `[sweep]` section over every seed, each an
//! ordinary cached run in `<run dir>/mmflow.sweep/<point>-seed<seed>` (one directory per point, named
//! by its full settings), then the comparison of all of them (as `mmflow compare`), written to
//! `<run dir>/mmflow.sweep/comparison.parquet`. Every point is validated before anything runs; a
//! point whose run fails does not stop the others, and is listed as unfinished below the
//! comparison of the finished ones.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mmflow_pipeline::record::RunRecord;
use mmflow_pipeline::sweep::{check, points, run_dir_name};
use mmflow_pipeline::{Pipeline, Progress, RunOptions, StageOutcome};

use mmflow_study::compare;

/// The folder of a sweep's runs inside the base run directory: stage ids never contain a dot,
/// so no stage's outputs can share it.
const SWEEP_FOLDER: &str = "mmflow.sweep";

/// What `main` needs to know to report the outcome.
pub enum Outcome {
    /// Every run finished; the comparison is printed.
    Done,
    /// A problem with the file or a point: nothing ran.
    Invalid,
    /// A run failed (its stages' errors are printed, the run listed as unfinished).
    Failed,
}

/// Runs the sweep of `file` (with the command line's `--set` overrides and `--out`).
pub fn sweep(
    file: &Path,
    set: &[String],
    out: Option<&PathBuf>,
    progress: Progress,
) -> Result<Outcome> {
    let registry = mmflow_stages::registry();
    let base = match mmflow_pipeline::load(file, set, &registry) {
        Ok(p) => p,
        Err(problems) => {
            report(file, problems.0.iter().map(|p| p.to_string()).collect());
            return Ok(Outcome::Invalid);
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
        return Ok(Outcome::Invalid);
    };
    let problems = check(&section);
    if !problems.is_empty() {
        report(
            file,
            problems
                .into_iter()
                .map(|p| format!("{}: {p}", file.display()))
                .collect(),
        );
        return Ok(Outcome::Invalid);
    }
    let root = out
        .cloned()
        .unwrap_or_else(|| base.run_dir.clone())
        .join(SWEEP_FOLDER);
    // Load every point × seed first: a key that does not exist fails here, before any run.
    let mut runs: Vec<(String, u64, Pipeline)> = Vec::new();
    let mut problems = Vec::new();
    for point in points(&section) {
        for &seed in &section.seeds {
            let mut overrides = set.to_vec();
            overrides.extend(point.overrides.iter().cloned());
            overrides.push(format!("pipeline.seed={seed}"));
            match mmflow_pipeline::load(file, &overrides, &registry) {
                Ok(mut p) => {
                    p.run_dir = root.join(run_dir_name(&point, seed));
                    runs.push((point.name.clone(), seed, p));
                }
                Err(e) => problems.extend(
                    e.0.iter()
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
        return Ok(Outcome::Invalid);
    }
    let options = RunOptions {
        progress,
        ..RunOptions::default()
    };
    for (name, seed, p) in &runs {
        // A point that cannot run (its run directory busy, its lock refused) is one unfinished
        // point: the others still run, and it is listed below.
        let summary = match mmflow_pipeline::run(p, &options) {
            Ok(summary) => summary,
            Err(e) => {
                eprintln!("error: point {name}, seed {seed}: {e}");
                continue;
            }
        };
        let count =
            |f: fn(&StageOutcome) -> bool| summary.stages.iter().filter(|(_, o)| f(o)).count();
        println!(
            "point {name}, seed {seed}: {} ran, {} restored, {} up to date · {}",
            count(|o| matches!(o, StageOutcome::Ran { .. })),
            count(|o| matches!(o, StageOutcome::Restored { .. })),
            count(|o| matches!(o, StageOutcome::UpToDate)),
            p.run_dir.display()
        );
        for (id, outcome) in &summary.stages {
            if let StageOutcome::Failed { error } = outcome {
                eprintln!("error: point {name}, seed {seed}: stage `{id}` failed: {error}");
            }
        }
    }
    // Only finished runs are compared (the same decision as `compare` and `report`).
    let mut finished = Vec::new();
    let mut unfinished = Vec::new();
    for (name, seed, p) in &runs {
        match RunRecord::load(&p.run_dir) {
            Ok(_) => finished.push(p.run_dir.clone()),
            Err(e) => unfinished.push(format!("point {name}, seed {seed}: {e}")),
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
        println!("\n{table}");
    }
    if let Some(path) = parquet {
        println!("comparison table: {}", path.display());
        return Ok(Outcome::Done);
    }
    // A table of an earlier, complete sweep would no longer describe these runs. Removed only
    // from the sweep folder mmflow made (a real folder, never through a link), and only if it
    // is a comparison table mmflow wrote.
    let stale = root.join("comparison.parquet");
    let own_folder = std::fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir());
    if own_folder && compare::check_parquet_destination(&stale).is_ok() && stale.is_file() {
        std::fs::remove_file(&stale)
            .with_context(|| format!("removing the stale {}", stale.display()))?;
        eprintln!("removed the comparison table of an earlier run of this sweep");
    }
    eprintln!(
        "error: {} of {} runs of the sweep are unfinished and not compared (no comparison table written):",
        unfinished.len(),
        runs.len()
    );
    for line in &unfinished {
        eprintln!("  {line}");
    }
    Ok(Outcome::Failed)
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
