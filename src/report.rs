//! `mmflow report RUN`: a self-contained report of a finished run — `report.md` with SVG
//! plots beside it: learning curves (train and validation loss per epoch, phase by phase) of
//! every training stage, predictions against labels (test split, identity line) of every
//! evaluate stage, the metric tables with n and CIs, and every flag raised.
//!
//! The report is built in a fresh staging folder beside its destination and renamed into
//! place, so it is complete or absent. The destination must be new, an empty folder, or a
//! folder mmflow marked as a report (the marker [`MARKER`] lists the files mmflow wrote
//! there); anything else (a run directory, a user's folder, a file, a link, the current
//! folder or one holding it) is refused before anything is written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use mmflow_pipeline::manifest::RESOLVED_CONFIG_FILE;
use mmflow_pipeline::manifest::{StageEntry, MANIFEST_FILE};
use mmflow_pipeline::record::RunRecord;
use mmflow_schemas::diagnostics;
use mmflow_schemas::evaluation::{read_metrics, read_predictions};
use mmflow_schemas::history::{self, HistoryRow};
use mmflow_schemas::Split;
use plotters::prelude::*;

use crate::staging::{parent_of, Parents, Staging};

/// Default report folder inside the run directory. Stage ids are letters, digits, `_` and
/// `-` only, so a name with a dot can never be a stage's output folder.
pub const DEFAULT_FOLDER: &str = "mmflow.report";
/// Written in every report folder: [`MARKER_HEADER`], then the files mmflow wrote there, one
/// per line. Only a folder holding it (and nothing else) is ever replaced.
pub const MARKER: &str = ".mmflow-report";
const MARKER_HEADER: &str = "mmflow report (the next report replaces the files listed here)";
/// The Markdown file of a report.
const MARKDOWN: &str = "report.md";
/// Scatter plots drawn per evaluate stage at most (one per head).
const MAX_SCATTERS: usize = 32;
/// Values beyond this magnitude are left out of plots like non-finite ones: the padded axis
/// range of anything smaller stays finite.
const PLOTTABLE: f64 = 1e300;

/// Writes the report of `run` to `out` (default `<run>/mmflow.report`); returns the Markdown
/// path.
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

/// What is at the report's destination now.
#[derive(Debug, PartialEq)]
enum Destination {
    /// Nothing: the report folder is created.
    New,
    /// An empty folder: the report takes its place.
    Empty,
    /// A report mmflow wrote, holding only the files its marker lists.
    OldReport(Vec<String>),
}

impl Destination {
    /// Looks at `dest` without writing anything; refuses what mmflow may not replace.
    fn check(dest: &Path, run: &Path) -> Result<Destination> {
        let refuse = |why: &str| anyhow!("cannot write the report to {}: {why}", dest.display());
        if dest.file_name().is_none() {
            return Err(refuse(
                "not a folder name (`.`, `..` and `/` are never replaced); name a new folder, e.g. `--out my-report`",
            ));
        }
        let meta = match fs::symlink_metadata(dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Destination::New),
            Err(e) => return Err(e).with_context(|| dest.display().to_string()),
            Ok(meta) => meta,
        };
        if meta.file_type().is_symlink() {
            return Err(refuse(
                "it is a symbolic link, and mmflow does not write through links; name the real folder or a new one",
            ));
        }
        if !meta.is_dir() {
            return Err(refuse(
                "it is a file, not a report folder; name a new folder",
            ));
        }
        if [MANIFEST_FILE, RESOLVED_CONFIG_FILE]
            .iter()
            .any(|f| fs::symlink_metadata(dest.join(f)).is_ok())
        {
            return Err(refuse(&format!(
                "it is a run directory (it has {MANIFEST_FILE} or {RESOLVED_CONFIG_FILE}); name a new folder (the default is `<RUN>/{DEFAULT_FOLDER}`)"
            )));
        }
        let here = fs::canonicalize(dest).with_context(|| dest.display().to_string())?;
        let holds = |p: io::Result<PathBuf>| {
            p.and_then(fs::canonicalize)
                .is_ok_and(|p| p.starts_with(&here))
        };
        if holds(std::env::current_dir()) {
            return Err(refuse(
                "it is the current folder or one that holds it; name a new folder",
            ));
        }
        if holds(Ok(run.to_path_buf())) {
            return Err(refuse("it holds the run directory; name a new folder"));
        }
        let entries = folder_entries(dest)?;
        if entries.is_empty() {
            return Ok(Destination::Empty);
        }
        let Some(listed) = read_marker(dest) else {
            return Err(refuse(&format!(
                "it is a folder with files in it that mmflow did not mark as a report (no `{MARKER}` inside); name a new folder, or empty this one yourself"
            )));
        };
        for entry in &entries {
            let ours = entry == MARKER || listed.contains(entry);
            if !ours || !is_plain_file(&dest.join(entry)) {
                return Err(refuse(&format!(
                    "`{entry}` in it was not written by mmflow; move it out, or name a new folder"
                )));
            }
        }
        Ok(Destination::OldReport(listed))
    }

    /// Moves the finished report in `new` to `dest`. An old report is renamed aside first,
    /// restored if the new one cannot be moved in, and removed (its listed files only)
    /// once the new one is in place.
    fn replace_with(self, new: Staging, dest: &Path) -> Result<()> {
        let install = |new: &Staging| {
            fs::rename(new.path(), dest)
                .with_context(|| format!("moving the report into {}", dest.display()))
        };
        match self {
            Destination::New | Destination::Empty => install(&new)?,
            Destination::OldReport(listed) => {
                // An empty folder of ours; renaming the old report onto it replaces it.
                let aside = Staging::beside(dest)
                    .with_context(|| format!("creating a folder beside {}", dest.display()))?;
                fs::rename(dest, aside.path()).with_context(|| {
                    format!("moving the previous report {} aside", dest.display())
                })?;
                let old = aside.path().to_path_buf();
                aside.release();
                if let Err(e) = install(&new) {
                    return Err(match fs::rename(&old, dest) {
                        Ok(()) => e,
                        Err(_) => {
                            e.context(format!("the previous report is kept at {}", old.display()))
                        }
                    });
                }
                remove_old_report(&old, &listed);
            }
        }
        new.release();
        Ok(())
    }
}

/// Names in a folder (not following links).
fn folder_entries(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn is_plain_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// The files a report folder's marker lists; `None` if it has no marker mmflow wrote.
fn read_marker(dir: &Path) -> Option<Vec<String>> {
    let path = dir.join(MARKER);
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        return None;
    }
    let text = fs::read_to_string(&path).ok()?;
    let mut lines = text.lines();
    (lines.next() == Some(MARKER_HEADER)).then(|| {
        lines
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    })
}

fn write_marker(dir: &Path, files: &[String]) -> Result<()> {
    let mut text = format!("{MARKER_HEADER}\n");
    for f in files {
        writeln!(text, "{f}")?;
    }
    fs::write(dir.join(MARKER), text).with_context(|| format!("writing {}", dir.display()))
}

/// Removes a previous report moved aside: the files its marker lists and the marker, then the
/// folder if that left it empty. Anything else in it stays (with a warning).
fn remove_old_report(old: &Path, listed: &[String]) {
    for name in folder_entries(old).unwrap_or_default() {
        let path = old.join(&name);
        if (name == MARKER || listed.contains(&name)) && is_plain_file(&path) {
            let _ = fs::remove_file(&path);
        }
    }
    if let Err(e) = fs::remove_dir(old) {
        tracing::warn!(
            "the previous report was moved to {} and could not be removed: {e}",
            old.display()
        );
    }
}

/// Plot file names: stage ids and heads come from the lock file and tables, so only letters,
/// digits, `_` and `-` are kept (no path can escape the report folder), and a clash gets a
/// number.
#[derive(Default)]
struct PlotNames {
    taken: Vec<String>,
}

impl PlotNames {
    fn next(&mut self, parts: &[&str]) -> String {
        let mut stem: String = parts
            .join("_")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        stem.truncate(100);
        let mut name = format!("{stem}.svg");
        let mut n = 2;
        while self.taken.contains(&name) {
            name = format!("{stem}-{n}.svg");
            n += 1;
        }
        self.taken.push(name.clone());
        name
    }
}

/// Writes `report.md` and its plots into `dir`; returns the names of the files written.
fn write_report(record: &RunRecord, dir: &Path) -> Result<Vec<String>> {
    let RunRecord {
        dir: run,
        config,
        manifest,
    } = record;
    let mut md = String::new();
    let mut plots = PlotNames::default();
    let name = config
        .get("pipeline")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("pipeline");
    let seed = config
        .get("pipeline")
        .and_then(|p| p.get("seed"))
        .map(|s| s.to_string())
        .unwrap_or_else(|| "42".into());
    writeln!(
        md,
        "# Run report: {name}\n\nRun directory `{}` · pipeline seed {seed} · mmflow {}\n",
        run.display(),
        manifest.mmflow_version
    )?;
    let trained: Vec<(&String, &StageEntry)> = manifest
        .stages
        .iter()
        .filter(|(_, e)| e.outputs.contains_key("history"))
        .collect();
    if !trained.is_empty() {
        writeln!(md, "## Learning curves\n")?;
    }
    for (id, entry) in trained {
        let rows = history::read(&record.output(id, "history")?)
            .with_context(|| format!("stage `{id}`"))?;
        learning_curves(&mut md, &mut plots, dir, id, &entry.kind, &rows)?;
    }
    let mut flags = Vec::new();
    for (id, _) in manifest.stages.iter().filter(|(_, e)| e.kind == "evaluate") {
        writeln!(md, "## Evaluation: {id}\n")?;
        let predictions = read_predictions(&record.output(id, "predictions")?)
            .with_context(|| format!("stage `{id}`"))?;
        let heads: BTreeSet<&str> = predictions.iter().map(|p| p.head.as_str()).collect();
        if heads.len() > MAX_SCATTERS {
            writeln!(
                md,
                "{} heads: predictions against labels drawn for the first {MAX_SCATTERS}.\n",
                heads.len()
            )?;
        }
        for head in heads.into_iter().take(MAX_SCATTERS) {
            let test = predictions
                .iter()
                .filter(|p| p.head == head && p.split == Split::Test);
            let labelled: Vec<(f64, f64)> = test
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
            let file = plots.next(&[id.as_str(), head, "scatter"]);
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
        writeln!(
            md,
            "| split | head | metric | value | 95% CI | n | note |\n|---|---|---|---|---|---|---|"
        )?;
        for m in
            read_metrics(&record.output(id, "metrics")?).with_context(|| format!("stage `{id}`"))?
        {
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
        for d in diagnostics::read(&record.output(id, "diagnostics")?)
            .with_context(|| format!("stage `{id}`"))?
        {
            if let Some(note) = d.note.as_deref().filter(|n| n.starts_with("FLAG")) {
                flags.push(format!("- `{id}` {} {}: {}", d.method, d.subject, note));
            }
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

/// The learning-curve section of one training stage: the plot (unless no loss value is
/// finite), what was left out, and the best epoch of each phase.
fn learning_curves(
    md: &mut String,
    plots: &mut PlotNames,
    dir: &Path,
    id: &str,
    kind: &str,
    rows: &[HistoryRow],
) -> Result<()> {
    writeln!(md, "### {id} ({kind})\n")?;
    let (series, skipped) = loss_series(rows);
    if series.is_empty() {
        tracing::warn!("stage `{id}`: no finite loss value was recorded: no learning-curve plot");
        writeln!(
            md,
            "No finite loss value was recorded: no learning-curve plot.\n"
        )?;
    } else {
        let file = plots.next(&[id, "curves"]);
        line_chart(
            &dir.join(&file),
            &format!("{id} ({kind})"),
            "epoch (phases one after the other)",
            "loss",
            &series,
        )?;
        writeln!(md, "![learning curves of {id}]({file})\n")?;
    }
    if skipped > 0 && !series.is_empty() {
        tracing::warn!("stage `{id}`: {skipped} non-finite loss value(s) left out of the plot");
        writeln!(
            md,
            "{skipped} non-finite loss value(s) left out of the plot.\n"
        )?;
    }
    writeln!(md, "{}\n", best_epochs(rows))?;
    Ok(())
}

/// A named line of (x, y) points.
type Series = (String, Vec<(f64, f64)>);

/// Phases in order of first appearance.
fn phases(rows: &[HistoryRow]) -> Vec<&str> {
    let mut phases: Vec<&str> = Vec::new();
    for r in rows {
        if !phases.contains(&r.phase.as_str()) {
            phases.push(&r.phase);
        }
    }
    phases
}

/// Train and validation loss per epoch of every subject, phases one after the other (x:
/// epochs counted across phases); returns the non-empty series and how many values were not
/// plottable.
fn loss_series(rows: &[HistoryRow]) -> (Vec<Series>, usize) {
    let mut offset = BTreeMap::new();
    let mut next = 0u64;
    for phase in phases(rows) {
        offset.insert(phase, next);
        next += rows
            .iter()
            .filter(|r| r.phase == phase)
            .map(|r| u64::from(r.epoch) + 1)
            .max()
            .unwrap_or(1);
    }
    let loss: Vec<&HistoryRow> = rows.iter().filter(|r| r.metric == "loss").collect();
    let subjects: BTreeSet<&str> = loss.iter().map(|r| r.subject.as_str()).collect();
    let mut series = Vec::new();
    let mut skipped = 0;
    for subject in subjects {
        for (which, pick) in [
            (
                "train",
                (|r: &HistoryRow| r.train) as fn(&HistoryRow) -> Option<f64>,
            ),
            ("valid", |r: &HistoryRow| r.valid),
        ] {
            let points: Vec<(f64, f64)> = loss
                .iter()
                .filter(|r| r.subject == subject)
                .filter_map(|r| {
                    let x = (offset[r.phase.as_str()] + u64::from(r.epoch)) as f64;
                    pick(r).map(|y| (x, y))
                })
                .collect();
            let (points, left_out) = plottable_points(points);
            skipped += left_out;
            if !points.is_empty() {
                series.push((format!("{subject} {which}"), points));
            }
        }
    }
    (series, skipped)
}

/// A line naming the best epoch of each phase.
fn best_epochs(rows: &[HistoryRow]) -> String {
    let best: Vec<String> = phases(rows)
        .into_iter()
        .map(|phase| {
            let epoch = rows
                .iter()
                .find(|r| r.phase == phase && r.is_best)
                .map(|r| r.epoch.to_string())
                .unwrap_or_else(|| "none".into());
            format!("phase `{phase}`: best epoch {epoch}")
        })
        .collect();
    best.join("; ")
}

fn is_plottable(v: f64) -> bool {
    v.is_finite() && v.abs() <= PLOTTABLE
}

/// The points whose both coordinates can be plotted, and how many were left out.
fn plottable_points(points: Vec<(f64, f64)>) -> (Vec<(f64, f64)>, usize) {
    let total = points.len();
    let kept: Vec<(f64, f64)> = points
        .into_iter()
        .filter(|&(x, y)| is_plottable(x) && is_plottable(y))
        .collect();
    let left_out = total - kept.len();
    (kept, left_out)
}

/// An axis range around `lo..=hi` (plottable values) with a margin; never empty.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let scale = lo.abs().max(hi.abs());
    let pad = if hi - lo > scale * 1e-9 {
        (hi - lo) * 0.05
    } else {
        scale * 0.05 + 0.5
    };
    (lo - pad, hi + pad)
}

/// Axis ranges of plottable points; `None` for none.
fn bounds(points: impl Iterator<Item = (f64, f64)>) -> Option<((f64, f64), (f64, f64))> {
    let mut range: Option<(f64, f64, f64, f64)> = None;
    for (x, y) in points {
        range = Some(match range {
            None => (x, x, y, y),
            Some((x0, x1, y0, y1)) => (x0.min(x), x1.max(x), y0.min(y), y1.max(y)),
        });
    }
    range.map(|(x0, x1, y0, y1)| (padded(x0, x1), padded(y0, y1)))
}

fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<()> {
    let ((x0, x1), (y0, y1)) = bounds(series.iter().flat_map(|(_, p)| p.iter().copied()))
        .ok_or_else(|| anyhow!("plotting {}: no points", path.display()))?;
    let plot = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    plot().map_err(|e| anyhow!("plotting {}: {e}", path.display()))
}

fn scatter(points: &[(f64, f64)], path: &Path, title: &str) -> Result<()> {
    let ((x0, x1), (y0, y1)) = bounds(points.iter().copied())
        .ok_or_else(|| anyhow!("plotting {}: no points", path.display()))?;
    let (lo, hi) = (x0.min(y0), x1.max(y1));
    let plot = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (520, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(lo..hi, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("label")
            .y_desc("prediction")
            .draw()?;
        chart.draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 2, BLUE.mix(0.35).filled())),
        )?;
        chart
            .draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.stroke_width(1)))?
            .label("identity")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    plot().map_err(|e| anyhow!("plotting {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(epoch: u32, train: f64, valid: f64) -> HistoryRow {
        HistoryRow {
            phase: "train".into(),
            epoch,
            lr: 1e-3,
            subject: "model".into(),
            metric: "loss".into(),
            train: Some(train),
            valid: Some(valid),
            is_best: false,
        }
    }

    #[test]
    fn non_finite_losses_are_left_out_and_counted() {
        let rows = [
            loss(0, f64::NAN, 1.0),
            loss(1, 0.5, f64::INFINITY),
            loss(2, 0.4, 0.9),
        ];
        let (series, skipped) = loss_series(&rows);
        assert_eq!(skipped, 2);
        assert_eq!(series.len(), 2);
        assert!(series
            .iter()
            .all(|(_, p)| p.iter().all(|&(x, y)| x.is_finite() && y.is_finite())));
        let all_nan = [
            loss(0, f64::NAN, f64::NAN),
            loss(u32::MAX, f64::NAN, f64::NEG_INFINITY),
        ];
        let (series, skipped) = loss_series(&all_nan);
        assert!(series.is_empty());
        assert_eq!(skipped, 4);
    }

    #[test]
    fn an_all_non_finite_history_yields_a_note_not_a_plot() {
        let dir = tempfile::tempdir().unwrap();
        let mut md = String::new();
        let mut plots = PlotNames::default();
        let rows = [loss(0, f64::NAN, f64::NAN)];
        learning_curves(&mut md, &mut plots, dir.path(), "m", "train_model", &rows).unwrap();
        assert!(md.contains("No finite loss value"), "{md}");
        assert!(plots.taken.is_empty());
        learning_curves(&mut md, &mut plots, dir.path(), "m", "train_model", &[]).unwrap();
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn extreme_and_degenerate_ranges_plot_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [&[(f64, f64)]; 4] = [
            &[(0.0, -1e300), (1.0, 1e300)],
            &[(0.0, 1e300), (1.0, 1e300)],
            &[(3.0, 0.25)],
            &[(0.0, 1.0), (0.0, 1.0 + 1e-15)],
        ];
        for (i, points) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("{i}.svg"));
            line_chart(&path, "t", "x", "y", &[("s".into(), points.to_vec())]).unwrap();
            scatter(points, &dir.path().join(format!("{i}s.svg")), "t").unwrap();
            assert!(fs::read_to_string(&path).unwrap().starts_with("<svg"));
        }
        assert!(bounds(std::iter::empty()).is_none());
        let (points, skipped) =
            plottable_points(vec![(f64::NAN, 1.0), (1.0, f64::MAX), (1.0, 2.0)]);
        assert_eq!((points, skipped), (vec![(1.0, 2.0)], 2));
    }

    #[test]
    fn plot_names_stay_inside_the_report_folder() {
        let mut names = PlotNames::default();
        assert_eq!(
            names.next(&["eval", "sentiment", "scatter"]),
            "eval_sentiment_scatter.svg"
        );
        let odd = names.next(&["eval", "../../etc/x", "scatter"]);
        assert!(!odd.contains('/') && !odd.contains(".."), "{odd}");
        assert_eq!(
            names.next(&["eval", "sentiment", "scatter"]),
            "eval_sentiment_scatter-2.svg"
        );
    }

    fn marked(dir: &Path, files: &[&str]) {
        fs::create_dir_all(dir).unwrap();
        for f in files {
            fs::write(dir.join(f), "x").unwrap();
        }
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        write_marker(dir, &files).unwrap();
    }

    #[test]
    fn only_new_empty_or_marked_folders_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let at = |rel: &str| dir.path().join(rel);
        let run = at("run");
        fs::create_dir(&run).unwrap();
        fs::write(run.join(MANIFEST_FILE), "{}").unwrap();
        let check = |rel: &str| Destination::check(&at(rel), &run);
        assert_eq!(check("new").unwrap(), Destination::New);
        fs::create_dir(at("empty")).unwrap();
        assert_eq!(check("empty").unwrap(), Destination::Empty);
        marked(&at("old"), &["report.md", "a.svg"]);
        assert_eq!(
            check("old").unwrap(),
            Destination::OldReport(vec!["report.md".into(), "a.svg".into()])
        );
        fs::create_dir(at("mine")).unwrap();
        fs::write(at("mine/notes.txt"), "mine").unwrap();
        fs::write(at("file"), "mine").unwrap();
        std::os::unix::fs::symlink(at("empty"), at("link")).unwrap();
        marked(&at("added"), &["report.md"]);
        fs::write(at("added/notes.txt"), "mine").unwrap();
        for (rel, why) in [
            ("mine", "did not mark as a report"),
            ("file", "it is a file"),
            ("link", "symbolic link"),
            ("run", "run directory"),
            ("added", "`notes.txt` in it was not written by mmflow"),
        ] {
            let err = check(rel).unwrap_err().to_string();
            assert!(err.contains(why), "{rel}: {err}");
        }
        for odd in [".", "/", "..", ""] {
            let err = Destination::check(Path::new(odd), &run)
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a folder name"), "{odd}: {err}");
        }
        let err = Destination::check(&std::env::current_dir().unwrap(), &run)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("current folder") || err.contains("did not mark"),
            "{err}"
        );
    }

    #[test]
    fn an_old_report_is_swapped_out_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("rep");
        marked(&dest, &["report.md", "old.svg"]);
        let found = Destination::check(&dest, &dir.path().join("run")).unwrap();
        let new = Staging::beside(&dest).unwrap();
        fs::write(new.path().join(MARKDOWN), "new").unwrap();
        write_marker(new.path(), &[MARKDOWN.to_string()]).unwrap();
        found.replace_with(new, &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join(MARKDOWN)).unwrap(), "new");
        assert!(!dest.join("old.svg").exists());
        let left: Vec<String> = folder_entries(dir.path()).unwrap();
        assert_eq!(left, ["rep"]);
    }
}
