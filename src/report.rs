//! `mmflow report RUN`: a self-contained report of a finished run — `report.md` with SVG
//! plots beside it: learning curves (train and validation loss per epoch, phase by phase) of
//! every training stage, predictions against labels (test split, identity line) of every
//! evaluate stage, the metric tables with n and CIs, and every flag raised. Written to a
//! temporary directory and renamed into place, so a report is complete or absent.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use mmflow_pipeline::record::RunRecord;
use mmflow_schemas::diagnostics;
use mmflow_schemas::evaluation::{read_metrics, read_predictions};
use mmflow_schemas::history::{self, HistoryRow};
use mmflow_schemas::Split;
use plotters::prelude::*;

/// Writes the report of `run` to `out` (default `<run>/report`); returns the Markdown path.
pub fn report(run: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let RunRecord {
        config, manifest, ..
    } = RunRecord::load(run)?;
    let dest = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| run.join("report"));
    let tmp = dest.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut md = String::new();
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
    let mut trained = false;
    for (id, entry) in &manifest.stages {
        let Some(record) = entry.outputs.get("history") else {
            continue;
        };
        if !trained {
            writeln!(md, "## Learning curves\n")?;
            trained = true;
        }
        let rows =
            history::read(&run.join(&record.path)).with_context(|| format!("stage `{id}`"))?;
        let file = format!("{id}_curves.svg");
        let best = curves(&rows, &tmp.join(&file), &format!("{id} ({})", entry.kind))?;
        writeln!(
            md,
            "### {id} ({})\n\n![learning curves of {id}]({file})\n\n{best}\n",
            entry.kind
        )?;
    }
    let mut flags = Vec::new();
    for (id, entry) in manifest.stages.iter().filter(|(_, e)| e.kind == "evaluate") {
        writeln!(md, "## Evaluation: {id}\n")?;
        let path = |output: &str| -> Result<PathBuf> {
            let record = entry
                .outputs
                .get(output)
                .ok_or_else(|| anyhow!("stage `{id}` recorded no `{output}`"))?;
            Ok(run.join(&record.path))
        };
        let predictions =
            read_predictions(&path("predictions")?).with_context(|| format!("stage `{id}`"))?;
        let heads: std::collections::BTreeSet<&str> =
            predictions.iter().map(|p| p.head.as_str()).collect();
        for head in heads {
            let points: Vec<(f64, f64)> = predictions
                .iter()
                .filter(|p| p.head == head && p.split == Split::Test)
                .filter_map(|p| p.label.map(|l| (l as f64, p.prediction as f64)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let file = format!("{id}_{head}_scatter.svg");
            scatter(
                &points,
                &tmp.join(&file),
                &format!("{id}: {head}, test split (n = {})", points.len()),
            )?;
            writeln!(md, "![{head} predictions against labels]({file})\n")?;
        }
        writeln!(
            md,
            "| split | head | metric | value | 95% CI | n | note |\n|---|---|---|---|---|---|---|"
        )?;
        for m in read_metrics(&path("metrics")?).with_context(|| format!("stage `{id}`"))? {
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
        for d in
            diagnostics::read(&path("diagnostics")?).with_context(|| format!("stage `{id}`"))?
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
    std::fs::write(tmp.join("report.md"), md)
        .with_context(|| format!("writing {}", tmp.display()))?;
    if dest.exists() {
        std::fs::remove_dir_all(&dest).with_context(|| format!("replacing {}", dest.display()))?;
    }
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("moving the report to {}", dest.display()))?;
    Ok(dest.join("report.md"))
}

/// Train and validation loss per epoch of every subject, phases one after the other; returns
/// a line naming the best epoch of each phase.
fn curves(rows: &[HistoryRow], path: &Path, title: &str) -> Result<String> {
    let mut phases: Vec<&str> = Vec::new();
    for r in rows {
        if !phases.contains(&r.phase.as_str()) {
            phases.push(&r.phase);
        }
    }
    // x: epochs counted across phases.
    let mut offset = std::collections::BTreeMap::new();
    let mut next = 0u32;
    for phase in &phases {
        offset.insert(*phase, next);
        next += rows
            .iter()
            .filter(|r| r.phase == *phase)
            .map(|r| r.epoch + 1)
            .max()
            .unwrap_or(1);
    }
    let loss: Vec<&HistoryRow> = rows.iter().filter(|r| r.metric == "loss").collect();
    let mut subjects: Vec<&str> = loss.iter().map(|r| r.subject.as_str()).collect();
    subjects.sort();
    subjects.dedup();
    let mut series = Vec::new();
    for subject in &subjects {
        for (which, pick) in [
            (
                "train",
                (|r: &HistoryRow| r.train) as fn(&HistoryRow) -> Option<f64>,
            ),
            ("valid", |r: &HistoryRow| r.valid),
        ] {
            let points: Vec<(f64, f64)> = loss
                .iter()
                .filter(|r| r.subject == *subject)
                .filter_map(|r| {
                    pick(r)
                        .filter(|v| v.is_finite())
                        .map(|v| ((offset[r.phase.as_str()] + r.epoch) as f64, v))
                })
                .collect();
            if !points.is_empty() {
                series.push((format!("{subject} {which}"), points));
            }
        }
    }
    line_chart(
        path,
        title,
        "epoch (phases one after the other)",
        "loss",
        &series,
    )?;
    let best: Vec<String> = phases
        .iter()
        .map(|phase| {
            let epoch = rows
                .iter()
                .find(|r| r.phase == *phase && r.is_best)
                .map(|r| r.epoch.to_string())
                .unwrap_or_else(|| "none".into());
            format!("phase `{phase}`: best epoch {epoch}")
        })
        .collect();
    Ok(best.join("; "))
}

fn bounds(points: impl Iterator<Item = (f64, f64)>) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let pad = |a: f64, b: f64| if b > a { (b - a) * 0.05 } else { 0.5 };
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    (x0 - px, x1 + px, y0 - py, y1 + py)
}

fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let plot = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
        root.fill(&WHITE)?;
        let (x0, x1, y0, y1) = bounds(series.iter().flat_map(|(_, p)| p.iter().copied()));
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
    let plot = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (520, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let (x0, x1, y0, y1) = bounds(points.iter().copied());
        let (lo, hi) = (x0.min(y0), x1.max(y1));
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
