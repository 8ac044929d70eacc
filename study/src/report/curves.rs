//! The learning-curve section of a training stage, from its history table: train and
//! validation loss per epoch (phases one after the other) and the best epoch of each phase.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use mmflow_schemas::history::HistoryRow;

use super::plot::{line_chart, plottable_points, PlotNames, Series};
use mmflow_stages::train::settings::Measure;

/// The learning-curve section of one training stage: the plot (unless no loss value is
/// finite), what was left out, and the best epoch of each phase.
pub(crate) fn learning_curves(
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
    let loss: Vec<&HistoryRow> = rows
        .iter()
        .filter(|r| r.metric == Measure::Loss.key())
        .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
}
