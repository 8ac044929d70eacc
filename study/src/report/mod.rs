//! The report of a finished run: `report.md` with SVG plots beside it — learning curves
//! (train and validation loss per epoch, phase by phase) of every history table, predictions
//! against labels (test split, identity line) and the metric tables with n and CIs of every
//! evaluation, and every flag raised.
//!
//! Tables are found by the kind the lock records for them: histories
//! ([`history::TABLE`]), and per stage that wrote metrics ([`METRICS`]) its predictions
//! ([`PREDICTIONS`]) and diagnostics ([`diagnostics::TABLE`]).
//!
//! The report is built in a fresh staging folder beside its destination and renamed into
//! place, so it is complete or absent. The destination must be new, an empty folder, or a
//! folder mmflow marked as a report (see [`MARKER`]); anything else is refused before
//! anything is written.

mod curves;
mod destination;
mod plot;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mmflow_pipeline::record::RunRecord;
use mmflow_schemas::diagnostics;
use mmflow_schemas::evaluation::{
    read_metrics, read_predictions, Prediction, METRICS, PREDICTIONS,
};
use mmflow_schemas::history;
use mmflow_schemas::Split;

use crate::staging::{parent_of, Parents, Staging};
use curves::learning_curves;
pub use destination::MARKER;
use destination::{write_marker, Destination};
use plot::{plottable_points, scatter, PlotNames};

/// Default report folder inside the run directory. Stage ids are letters, digits, `_` and
/// `-` only, so a name with a dot can never be a stage's output folder.
pub const DEFAULT_FOLDER: &str = "mmflow.report";
/// The Markdown file of a report.
pub const MARKDOWN: &str = "report.md";
/// Scatter plots drawn per evaluation at most (one per head).
const MAX_SCATTERS: usize = 32;

/// Writes the report of the finished run `run` to `out` (default `<run>/mmflow.report`);
/// returns the Markdown path.
pub fn report(run: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let record = RunRecord::load(run)?;
    let dest = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| run.join(DEFAULT_FOLDER));
    let found = Destination::check(&dest, run)?;
    let parents = Parents::create(parent_of(&dest))
        .with_context(|| format!("creating the folder of {}", dest.display()))?;
    let staging = Staging::beside(&dest)
        .with_context(|| format!("creating a staging folder beside {}", dest.display()))?;
    let files = write_report(&record, staging.path())?;
    write_marker(staging.path(), &files)?;
    found.replace_with(staging, &dest)?;
    parents.keep();
    Ok(dest.join(MARKDOWN))
}

/// Writes `report.md` and its plots into `dir`; returns the names of the files written.
fn write_report(record: &RunRecord, dir: &Path) -> Result<Vec<String>> {
    let mut md = String::new();
    let mut plots = PlotNames::default();
    write_header(&mut md, record)?;
    let histories = record.outputs_of_kind(history::TABLE);
    if !histories.is_empty() {
        writeln!(md, "## Learning curves\n")?;
    }
    for (id, output) in histories {
        let rows =
            history::read(&record.output(id, output)?).with_context(|| format!("stage `{id}`"))?;
        let kind = &record.manifest.stages[id].kind;
        learning_curves(&mut md, &mut plots, dir, id, kind, &rows)?;
    }
    let mut flags = Vec::new();
    for (id, metrics) in record.outputs_of_kind(METRICS) {
        writeln!(md, "## Evaluation: {id}\n")?;
        for output in outputs_of_stage(record, id, PREDICTIONS) {
            let predictions = read_predictions(&record.output(id, output)?)
                .with_context(|| format!("stage `{id}`"))?;
            write_scatters(&mut md, &mut plots, dir, id, &predictions)?;
        }
        write_metrics_table(&mut md, record, id, metrics)?;
        for output in outputs_of_stage(record, id, diagnostics::TABLE) {
            flags.extend(flags_raised(record, id, output)?);
        }
    }
    writeln!(md, "## Flags\n")?;
    if flags.is_empty() {
        writeln!(md, "None raised.")?;
    } else {
        writeln!(md, "{}", flags.join("\n"))?;
    }
    fs::write(dir.join(MARKDOWN), md).with_context(|| format!("writing {}", dir.display()))?;
    let mut files = plots.taken;
    files.push(MARKDOWN.to_string());
    Ok(files)
}

/// The title and the run's pipeline name, seed, directory and mmflow version.
fn write_header(md: &mut String, record: &RunRecord) -> Result<()> {
    let pipeline = record.config.get("pipeline");
    let name = pipeline
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("pipeline");
    let seed = pipeline
        .and_then(|p| p.get("seed"))
        .map(|s| s.to_string())
        .unwrap_or_else(|| "42".into());
    writeln!(
        md,
        "# Run report: {name}\n\nRun directory `{}` · pipeline seed {seed} · mmflow {}\n",
        record.dir.display(),
        record.manifest.mmflow_version
    )?;
    Ok(())
}

/// The outputs of kind `table` that stage `id` wrote.
fn outputs_of_stage<'a>(record: &'a RunRecord, id: &str, table: &str) -> Vec<&'a str> {
    record
        .outputs_of_kind(table)
        .into_iter()
        .filter(|(stage, _)| *stage == id)
        .map(|(_, output)| output)
        .collect()
}

/// Predictions against labels on the test split, one plot per head (at most
/// [`MAX_SCATTERS`]), with what could not be drawn.
fn write_scatters(
    md: &mut String,
    plots: &mut PlotNames,
    dir: &Path,
    id: &str,
    predictions: &[Prediction],
) -> Result<()> {
    let heads: BTreeSet<&str> = predictions.iter().map(|p| p.head.as_str()).collect();
    if heads.len() > MAX_SCATTERS {
        writeln!(
            md,
            "{} heads: predictions against labels drawn for the first {MAX_SCATTERS}.\n",
            heads.len()
        )?;
    }
    for head in heads.into_iter().take(MAX_SCATTERS) {
        let labelled: Vec<(f64, f64)> = predictions
            .iter()
            .filter(|p| p.head == head && p.split == Split::Test)
            .filter_map(|p| p.label.map(|l| (l as f64, p.prediction as f64)))
            .collect();
        if labelled.is_empty() {
            continue;
        }
        let (points, skipped) = plottable_points(labelled);
        if points.is_empty() {
            writeln!(
                md,
                "No finite {head} predictions and labels on the test split: no plot.\n"
            )?;
            continue;
        }
        let file = plots.next(&[id, head, "scatter"]);
        scatter(
            &points,
            &dir.join(&file),
            &format!("{id}: {head}, test split (n = {})", points.len()),
        )?;
        writeln!(md, "![{head} predictions against labels]({file})\n")?;
        if skipped > 0 {
            writeln!(
                md,
                "{skipped} non-finite {head} point(s) left out of the plot.\n"
            )?;
        }
    }
    Ok(())
}

/// The metrics table of one evaluation: value, CI, n and note per split, head and metric.
fn write_metrics_table(md: &mut String, record: &RunRecord, id: &str, output: &str) -> Result<()> {
    writeln!(
        md,
        "| split | head | metric | value | 95% CI | n | note |\n|---|---|---|---|---|---|---|"
    )?;
    for m in read_metrics(&record.output(id, output)?).with_context(|| format!("stage `{id}`"))? {
        let ci = match (m.ci_low, m.ci_high) {
            (Some(lo), Some(hi)) => format!("{lo:.3} – {hi:.3}"),
            _ => "–".into(),
        };
        writeln!(
            md,
            "| {} | {} | {} | {:.4} | {ci} | {} | {} |",
            m.split,
            m.head,
            m.metric,
            m.value,
            m.n,
            m.note.as_deref().unwrap_or("")
        )?;
    }
    writeln!(md)?;
    Ok(())
}

/// The flags a diagnostics table of stage `id` raised, as Markdown list items.
fn flags_raised(record: &RunRecord, id: &str, output: &str) -> Result<Vec<String>> {
    let rows =
        diagnostics::read(&record.output(id, output)?).with_context(|| format!("stage `{id}`"))?;
    Ok(rows
        .iter()
        .filter_map(|d| {
            let note = d.note.as_deref().filter(|n| n.starts_with("FLAG"))?;
            Some(format!("- `{id}` {} {}: {}", d.method, d.subject, note))
        })
        .collect())
}
