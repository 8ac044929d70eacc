//! Evaluations as the report shows them: per evaluation a card (per head the predictions
//! against labels on the test split with the residuals' histogram, and the head's headline
//! metrics with their CIs), the whole metrics table, and the flags diagnostics raised.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use mmflow_pipeline::record::RunRecord;
use mmflow_schemas::diagnostics;
use mmflow_schemas::evaluation::{read_predictions, MetricRow, PREDICTIONS};
use mmflow_schemas::Split;

use crate::compare::default_metrics;

use super::page::{Block, Card, Cell, Figure, Table, Text};
use super::scatter::{scatter, Labelled};

/// Scatter plots drawn per evaluation at most (one per head).
const MAX_SCATTERS: usize = 32;
/// The split whose predictions are drawn and whose headline metrics a card shows.
const SHOWN_SPLIT: Split = Split::Test;

/// The outputs of kind `table` that stage `id` wrote.
pub(crate) fn outputs_of_stage<'a>(record: &'a RunRecord, id: &str, table: &str) -> Vec<&'a str> {
    record
        .outputs_of_kind(table)
        .into_iter()
        .filter(|(stage, _)| *stage == id)
        .map(|(_, output)| output)
        .collect()
}

/// The card of stage `id`'s evaluation: a scatter plot per head (at most `most` dots each) and
/// the head's headline metrics on the test split.
pub(crate) fn card(
    title: String,
    record: &RunRecord,
    id: &str,
    metrics: &[MetricRow],
    most: usize,
) -> Result<Card> {
    let mut predictions = Vec::new();
    for output in outputs_of_stage(record, id, PREDICTIONS) {
        predictions.extend(
            read_predictions(&record.output(id, output)?)
                .with_context(|| format!("stage `{id}`"))?,
        );
    }
    let heads: BTreeSet<&str> = predictions
        .iter()
        .map(|p| p.head.as_str())
        .chain(metrics.iter().map(|m| m.head.as_str()))
        .collect();
    let mut blocks = Vec::new();
    if heads.len() > MAX_SCATTERS {
        blocks.push(Block::Text(Text::plain(format!(
            "{} heads: predictions against labels drawn for the first {MAX_SCATTERS}.",
            heads.len()
        ))));
    }
    for head in heads.iter().take(MAX_SCATTERS) {
        let labelled: Vec<Labelled> = predictions
            .iter()
            .filter(|p| p.head == *head && p.split == SHOWN_SPLIT)
            .filter_map(|p| {
                p.label.map(|label| Labelled {
                    segment: p.segment_id.clone(),
                    label: f64::from(label),
                    prediction: f64::from(p.prediction),
                })
            })
            .collect();
        blocks.extend(head_scatter(id, head, &labelled, most));
    }
    blocks.extend(headline_metrics(&heads, metrics));
    Ok(Card { title, blocks })
}

/// Predictions against labels of one head, with what was left out or thinned.
fn head_scatter(id: &str, head: &str, labelled: &[Labelled], most: usize) -> Vec<Block> {
    if labelled.is_empty() {
        return Vec::new();
    }
    let title = format!("{id}: {head}, {} split", SHOWN_SPLIT.as_str());
    let Some(plot) = scatter(&title, labelled, most) else {
        return vec![Block::Text(Text::plain(format!(
            "No finite {head} predictions and labels on the test split: no plot."
        )))];
    };
    let mut blocks = vec![Block::Figure(Figure {
        name: vec![id.to_string(), head.to_string(), "scatter".into()],
        alt: format!("{head} predictions against labels"),
        svg: plot.svg,
    })];
    let mut notes = vec![format!("n = {} test segments", plot.plottable)];
    if plot.drawn < plot.plottable {
        notes.push(format!(
            "{} drawn as dots (1 in {}, in table order), all in the histogram",
            plot.drawn,
            plot.plottable.div_ceil(plot.drawn.max(1))
        ));
    }
    if plot.left_out > 0 {
        notes.push(format!(
            "{} non-finite {head} point(s) left out of the plot",
            plot.left_out
        ));
    }
    blocks.push(Block::Text(Text::plain(format!("{}.", notes.join("; ")))));
    blocks
}

/// Each head's headline metrics on the test split: value, 95% CI, n (and the head, where
/// there are several).
fn headline_metrics(heads: &BTreeSet<&str>, metrics: &[MetricRow]) -> Option<Block> {
    let several = heads.len() > 1;
    let rows: Vec<Vec<Cell>> = heads
        .iter()
        .flat_map(|head| {
            let of_head: Vec<&MetricRow> = metrics
                .iter()
                .filter(|m| m.head == *head && m.split == SHOWN_SPLIT)
                .collect();
            default_metrics(head, of_head.iter().map(|m| m.metric.as_str()))
                .into_iter()
                .filter_map(move |name| of_head.iter().copied().find(|m| m.metric == name))
        })
        .map(|m| {
            let mut row = vec![
                Cell::text(&m.metric),
                value_cell(m.value),
                ci_cell(m),
                Cell::numbers(m.n.to_string(), vec![m.n as f64]),
            ];
            if several {
                row.insert(0, Cell::text(&m.head));
            }
            row
        })
        .collect();
    let mut header: Vec<String> = ["metric (test)", "value", "95% CI", "n"]
        .map(String::from)
        .to_vec();
    if several {
        header.insert(0, "head".into());
    }
    (!rows.is_empty()).then_some(Block::Table(Table {
        header,
        rows,
        source: None,
    }))
}

fn value_cell(value: f64) -> Cell {
    Cell::numbers(format!("{value:.4}"), vec![value])
}

fn ci_cell(m: &MetricRow) -> Cell {
    match (m.ci_low, m.ci_high) {
        (Some(lo), Some(hi)) => Cell::numbers(format!("{lo:.3} – {hi:.3}"), vec![lo, hi]),
        _ => Cell::text("–"),
    }
}

/// The whole metrics table of an evaluation: split, head, metric, value, CI, n and note.
pub(crate) fn metrics_table(metrics: &[MetricRow], source: String) -> Block {
    Block::Table(Table {
        header: ["split", "head", "metric", "value", "95% CI", "n", "note"]
            .map(String::from)
            .to_vec(),
        rows: metrics
            .iter()
            .map(|m| {
                vec![
                    Cell::text(m.split.as_str()),
                    Cell::text(&m.head),
                    Cell::text(&m.metric),
                    value_cell(m.value),
                    ci_cell(m),
                    Cell::numbers(m.n.to_string(), vec![m.n as f64]),
                    Cell::text(m.note.as_deref().unwrap_or("")),
                ]
            })
            .collect(),
        source: Some(source),
    })
}

/// The flags every diagnostics table of the run raised (notes starting with `FLAG`).
pub(crate) fn flags(record: &RunRecord) -> Result<Vec<Text>> {
    let mut flags = Vec::new();
    for (id, output) in record.outputs_of_kind(diagnostics::TABLE) {
        let rows = diagnostics::read(&record.output(id, output)?)
            .with_context(|| format!("stage `{id}`"))?;
        for d in rows {
            if let Some(note) = d.note.as_deref().filter(|n| n.starts_with("FLAG")) {
                flags.push(
                    Text::default()
                        .code(id)
                        .and(format!(" {} {}: {note}", d.method, d.subject)),
                );
            }
        }
    }
    Ok(flags)
}
