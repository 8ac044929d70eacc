//! The report's page, assembled from the runs: results (the comparison of every evaluation,
//! and a metric by setting where there are several groups), learning curves, the evaluations
//! side by side, then the metrics, flags, pipeline and settings of the run — or, for several
//! runs, the flags of all and each run's details folded.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use mmflow_schemas::evaluation::{read_metrics, METRICS};
use mmflow_schemas::history::{self, HistoryRow};

use crate::compare::{Comparison, LEGEND};
use crate::runs::Evaluation;

use super::by_setting::{by_setting, MAX_GROUPS};
use super::curves::{learning_curves, overlay, overlay_subjects, stops, Overlaid, Stop};
use super::evaluations::{card, flags, metrics_table};
use super::inputs::{Run, Study};
use super::page::{Block, Card, Cell, Page, Table, Text};
use super::pipeline::{self, depths};

/// Runs whose curves, evaluations and details are shown at most (the results table holds
/// every run).
const MAX_RUNS_SHOWN: usize = 60;
/// Training stages of a run whose curves are shown at most.
const MAX_CURVES: usize = 60;
/// Evaluation cards shown at most.
const MAX_CARDS: usize = 60;
/// Dots of all scatter plots of a page together, about (each plot draws at least
/// [`MIN_DOTS`]); past that, plots draw every k-th segment.
const DOTS_PER_PAGE: usize = 40_000;
const MIN_DOTS: usize = 300;
/// The split the results compare.
const SPLIT: &str = "test";

/// An evaluation of one of the runs.
struct Evaluated {
    /// Index of its run.
    run: usize,
    /// Where its metrics were read from.
    source: String,
    evaluation: Evaluation,
}

/// Evaluations of the same heads, compared (or why they could not be).
struct Task {
    heads: Vec<String>,
    /// Indices into the evaluations.
    members: Vec<usize>,
    comparison: std::result::Result<Comparison, String>,
}

/// A training stage's history.
struct History {
    stage: String,
    kind: String,
    rows: Vec<HistoryRow>,
    stops: Vec<Stop>,
}

/// The page of `study`.
pub(crate) fn page(study: &Study) -> Result<Page> {
    let evaluated = evaluations(study)?;
    let tasks = tasks(&evaluated);
    let (groups, labels) = run_groups(study, &evaluated, &tasks);
    let shown = &study.runs[..study.runs.len().min(MAX_RUNS_SHOWN)];
    let histories = shown.iter().map(histories).collect::<Result<Vec<_>>>()?;
    let mut blocks = header(study);
    results(&mut blocks, &evaluated, &tasks);
    blocks.push(Block::Heading(2, "Learning curves".into()));
    if let ([run], [history]) = (study.runs.as_slice(), histories.as_slice()) {
        blocks.extend(curves_of_run(run, history, 3));
    } else {
        overlays(&mut blocks, shown, &histories, &groups, &labels);
    }
    blocks.push(Block::Heading(2, "Evaluations".into()));
    evaluation_cards(&mut blocks, study, &evaluated, &tasks)?;
    if let [run] = study.runs.as_slice() {
        one_run(&mut blocks, run, &evaluated)?;
    } else {
        several_runs(&mut blocks, shown, &histories, &evaluated, &groups, &labels)?;
        if shown.len() < study.runs.len() {
            blocks.push(Block::Text(Text::plain(format!(
                "The details of the first {} of {} runs are shown; the results table has them all.",
                shown.len(),
                study.runs.len()
            ))));
        }
    }
    Ok(Page {
        title: title(study),
        blocks,
    })
}

fn title(study: &Study) -> String {
    let (name, _) = pipeline::name_and_seed(&study.runs[0].record);
    match (&study.sweep, study.runs.as_slice()) {
        (Some(_), _) => format!("Sweep report: {name}"),
        (None, [run]) => format!("Run report: {}", pipeline::name_and_seed(&run.record).0),
        (None, runs) => format!("Report of {} runs", runs.len()),
    }
}

/// The line under the title: what was read, with which mmflow; and a sweep's unfinished runs.
fn header(study: &Study) -> Vec<Block> {
    let mut versions: Vec<&str> = study
        .runs
        .iter()
        .map(|r| r.record.manifest.mmflow_version.as_str())
        .collect();
    versions.sort();
    versions.dedup();
    let versions = format!("mmflow {}", versions.join(", "));
    let mut text = match (&study.sweep, study.runs.as_slice()) {
        (Some(folder), runs) => {
            let (name, _) = pipeline::name_and_seed(&runs[0].record);
            Text::plain("Sweep folder ")
                .code(folder.display().to_string())
                .and(" · pipeline ")
                .code(name)
                .and(format!(" · {} finished runs · ", runs.len()))
        }
        (None, [run]) => {
            let (name, seed) = pipeline::name_and_seed(&run.record);
            Text::plain("Run directory ")
                .code(run.record.dir.display().to_string())
                .and(" · pipeline ")
                .code(name)
                .and(format!(" · pipeline seed {seed} · "))
        }
        (None, runs) => {
            let mut text = Text::plain("Runs ");
            for (i, run) in runs.iter().enumerate() {
                if i > 0 {
                    text = text.and(", ");
                }
                text = text.code(&run.name);
            }
            text.and(" · ")
        }
    };
    text = text.and(versions);
    let mut blocks = vec![Block::Text(text)];
    if !study.unfinished.is_empty() {
        blocks.push(Block::Text(Text::plain(format!(
            "{} run(s) of the sweep are unfinished and not in this report:",
            study.unfinished.len()
        ))));
        blocks.push(Block::List(
            study.unfinished.iter().map(Text::plain).collect(),
        ));
    }
    blocks
}

/// Every evaluation of every run, each run's in pipeline order.
fn evaluations(study: &Study) -> Result<Vec<Evaluated>> {
    let mut out = Vec::new();
    for (i, run) in study.runs.iter().enumerate() {
        let record = &run.record;
        let settings = record.settings();
        let depth = depths(record);
        let mut metrics = record.outputs_of_kind(METRICS);
        metrics.sort_by_key(|(stage, _)| (depth.get(stage).copied(), *stage));
        for (stage, output) in metrics {
            let path = record.output(stage, output)?;
            let rows = read_metrics(&path)
                .with_context(|| format!("{}: stage `{stage}`", path.display()))?;
            out.push(Evaluated {
                run: i,
                source: path.display().to_string(),
                evaluation: Evaluation {
                    run: record.dir.clone(),
                    stage: stage.to_string(),
                    settings: settings.clone(),
                    metrics: rows,
                },
            });
        }
    }
    Ok(out)
}

/// The evaluations grouped by the heads they have (in order of first appearance), each group
/// compared on the test split.
fn tasks(evaluated: &[Evaluated]) -> Vec<Task> {
    let mut tasks: Vec<Task> = Vec::new();
    for (i, e) in evaluated.iter().enumerate() {
        let mut heads: Vec<String> = e
            .evaluation
            .metrics
            .iter()
            .map(|m| m.head.clone())
            .collect();
        heads.sort();
        heads.dedup();
        match tasks.iter_mut().find(|t| t.heads == heads) {
            Some(t) => t.members.push(i),
            None => tasks.push(Task {
                heads,
                members: vec![i],
                comparison: Err(String::new()),
            }),
        }
    }
    for task in &mut tasks {
        let members: Vec<Evaluation> = task
            .members
            .iter()
            .map(|&i| evaluated[i].evaluation.clone())
            .collect();
        task.comparison = Comparison::build(&members, SPLIT, &[]).map_err(|e| format!("{e:#}"));
    }
    tasks
}

/// Each run's group (a colour in plots of several runs): the group of the first comparison
/// holding one of its evaluations, else one of its own; and each group's label.
fn run_groups(study: &Study, evaluated: &[Evaluated], tasks: &[Task]) -> (Vec<usize>, Vec<String>) {
    let mut labels = Vec::new();
    let mut group: Vec<Option<usize>> = vec![None; study.runs.len()];
    if let Some(Task {
        members,
        comparison: Ok(comparison),
        ..
    }) = tasks.first()
    {
        for g in 0..comparison.group_count() {
            labels.push(format!("#{g} {}", comparison.label(g)));
            for &m in comparison.members(g) {
                let run = evaluated[members[m]].run;
                group[run].get_or_insert(g);
            }
        }
    }
    let groups = group
        .into_iter()
        .zip(&study.runs)
        .map(|(g, run)| {
            g.unwrap_or_else(|| {
                labels.push(run.name.clone());
                labels.len() - 1
            })
        })
        .collect();
    (groups, labels)
}

/// The histories of a run's training stages (the first [`MAX_CURVES`]), in pipeline order.
fn histories(run: &Run) -> Result<Vec<History>> {
    let record = &run.record;
    let depth = depths(record);
    let mut outputs = record.outputs_of_kind(history::TABLE);
    outputs.sort_by_key(|(stage, _)| (depth.get(stage).copied(), *stage));
    outputs
        .into_iter()
        .take(MAX_CURVES)
        .map(|(id, output)| {
            let entry = &record.manifest.stages[id];
            Ok(History {
                stage: id.to_string(),
                kind: entry.kind.clone(),
                rows: history::read(&record.output(id, output)?)
                    .with_context(|| format!("stage `{id}`"))?,
                stops: stops(&entry.report),
            })
        })
        .collect()
}

/// The learning curves of a run's training stages, headings at `level`.
fn curves_of_run(run: &Run, history: &[History], level: u8) -> Vec<Block> {
    let mut blocks = Vec::new();
    if history.is_empty() {
        blocks.push(Block::Text(Text::plain("No training stage.")));
    }
    let total = run.record.outputs_of_kind(history::TABLE).len();
    if total > history.len() {
        blocks.push(Block::Text(Text::plain(format!(
            "The curves of the first {} of {total} training stages are shown.",
            history.len()
        ))));
    }
    for h in history {
        blocks.extend(learning_curves(&h.stage, &h.kind, &h.rows, &h.stops, level));
    }
    blocks
}

/// The results: per task the comparison table with its legend, and each metric by setting
/// where there are several groups.
fn results(blocks: &mut Vec<Block>, evaluated: &[Evaluated], tasks: &[Task]) {
    blocks.push(Block::Heading(2, "Results".into()));
    if evaluated.is_empty() {
        blocks.push(Block::Text(Text::plain("No evaluation.")));
    }
    for task in tasks {
        if tasks.len() > 1 {
            blocks.push(Block::Heading(
                3,
                format!("Heads {}", task.heads.join(", ")),
            ));
        }
        let comparison = match &task.comparison {
            Ok(c) => c,
            Err(why) => {
                blocks.push(Block::Text(Text::plain(format!("No comparison: {why}"))));
                continue;
            }
        };
        let order: Vec<usize> = (0..comparison.group_count()).collect();
        blocks.push(Block::Table(comparison_table(comparison, &order)));
        blocks.push(Block::Text(
            Text::plain("split ")
                .code(comparison.split())
                .and(format!("; {LEGEND}")),
        ));
        let note = comparison.structure_note();
        if !note.trim().is_empty() {
            blocks.push(Block::Text(Text::plain(note.trim())));
        }
        if comparison.group_count() > 1 {
            if comparison.group_count() > MAX_GROUPS {
                blocks.push(Block::Text(Text::plain(format!(
                    "The plots show the first {MAX_GROUPS} of {} groups; the table has them all.",
                    comparison.group_count()
                ))));
            }
            for c in 0..comparison.column_count() {
                if let Some(figure) = by_setting(comparison, c, &order) {
                    blocks.push(Block::Figure(figure));
                }
            }
        }
    }
}

/// The comparison as a table: each number also exact in its cell.
fn comparison_table(comparison: &Comparison, order: &[usize]) -> Table {
    let rows = comparison
        .shown(order)
        .into_iter()
        .map(|row| {
            let mut cells: Vec<Cell> = row
                .texts
                .into_iter()
                .enumerate()
                .map(|(i, text)| match (i, text.parse::<f64>()) {
                    // `#` and seeds are numbers.
                    (0 | 4, Ok(n)) => Cell::numbers(text, vec![n]),
                    _ => Cell::text(text),
                })
                .collect();
            cells.extend(row.cells.into_iter().map(|cell| Cell {
                strong: cell.best,
                ..Cell::numbers(cell.text, cell.value.into_iter().collect())
            }));
            cells
        })
        .collect();
    Table {
        header: comparison.header(),
        rows,
        source: None,
    }
}

/// For several runs: the validation loss of each training stage and subject, one line per run.
fn overlays(
    blocks: &mut Vec<Block>,
    runs: &[Run],
    histories: &[Vec<History>],
    groups: &[usize],
    labels: &[String],
) {
    let mut stages: Vec<&str> = Vec::new();
    for h in histories.iter().flatten() {
        if !stages.contains(&h.stage.as_str()) {
            stages.push(&h.stage);
        }
    }
    if stages.is_empty() {
        blocks.push(Block::Text(Text::plain("No training stage.")));
        return;
    }
    blocks.push(Block::Text(Text::plain(
        "The validation loss of each training stage, one line per run, coloured by its group in the results; each run's own curves (train and validation, best epoch, stops, learning rate) are in its details below.",
    )));
    for stage in stages {
        let overlaid: Vec<Overlaid<'_>> = histories
            .iter()
            .enumerate()
            .flat_map(|(i, hs)| {
                hs.iter()
                    .filter(|h| h.stage == stage)
                    .map(move |h| Overlaid {
                        run: &runs[i].name,
                        group: groups[i],
                        rows: &h.rows,
                    })
            })
            .collect();
        for subject in overlay_subjects(&overlaid) {
            if let Some(figure) = overlay(stage, &subject, &overlaid, labels) {
                blocks.push(Block::Figure(figure));
            }
        }
    }
}

/// The evaluations side by side: for one run, a row per template item (`zero_shot@kmeans`
/// beside `finetuned@kmeans`); for several, a row per group of the results (a setting's
/// seeds side by side).
fn evaluation_cards(
    blocks: &mut Vec<Block>,
    study: &Study,
    evaluated: &[Evaluated],
    tasks: &[Task],
) -> Result<()> {
    if evaluated.is_empty() {
        blocks.push(Block::Text(Text::plain("No evaluation.")));
        return Ok(());
    }
    let rows = card_rows(study, evaluated, tasks);
    let count: usize = rows.iter().map(|(_, r)| r.len()).sum();
    let shown = count.min(MAX_CARDS);
    if count > shown {
        blocks.push(Block::Text(Text::plain(format!(
            "The first {shown} of {count} evaluations are shown; the results table has them all."
        ))));
    }
    let most = (DOTS_PER_PAGE / shown.max(1)).max(MIN_DOTS);
    let mut left = shown;
    blocks.push(Block::Text(Text::plain(
        "Predictions against labels on the test split (the dashed line is prediction = label; below, the residuals' histogram) and each head's headline metrics with their 95% CIs.",
    )));
    for (title, members) in rows {
        if left == 0 {
            break;
        }
        let mut cards: Vec<Card> = Vec::new();
        for i in members.into_iter().take(left) {
            let e = &evaluated[i];
            let run = &study.runs[e.run];
            let title = if study.runs.len() > 1 {
                format!("{} · {}", run.name, e.evaluation.stage)
            } else {
                e.evaluation.stage.clone()
            };
            cards.push(card(
                title,
                &run.record,
                &e.evaluation.stage,
                &e.evaluation.metrics,
                most,
            )?);
        }
        left -= cards.len();
        if let Some(title) = title {
            blocks.push(Block::Heading(3, title));
        }
        blocks.push(Block::Cards(cards));
    }
    Ok(())
}

/// Rows of evaluation cards: a title (none for a single row) and the evaluations in it.
fn card_rows(
    study: &Study,
    evaluated: &[Evaluated],
    tasks: &[Task],
) -> Vec<(Option<String>, Vec<usize>)> {
    if study.runs.len() == 1 {
        let mut rows: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, e) in evaluated.iter().enumerate() {
            let item = e
                .evaluation
                .stage
                .split_once('@')
                .map(|(_, item)| format!("@{item}"))
                .unwrap_or_default();
            match rows.iter_mut().find(|(t, _)| *t == item) {
                Some((_, members)) => members.push(i),
                None => rows.push((item, vec![i])),
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let several = rows.len() > 1;
        return rows
            .into_iter()
            .map(|(item, members)| (several.then_some(item).filter(|t| !t.is_empty()), members))
            .collect();
    }
    let mut rows = Vec::new();
    for task in tasks {
        match &task.comparison {
            Ok(comparison) => {
                for g in 0..comparison.group_count() {
                    rows.push((
                        Some(format!("#{g} {}", comparison.label(g))),
                        comparison
                            .members(g)
                            .iter()
                            .map(|&m| task.members[m])
                            .collect(),
                    ));
                }
            }
            Err(_) => rows.push((None, task.members.clone())),
        }
    }
    rows
}

/// The rest of one run's report: every metric, the flags, the pipeline and the settings.
fn one_run(blocks: &mut Vec<Block>, run: &Run, evaluated: &[Evaluated]) -> Result<()> {
    blocks.push(Block::Heading(2, "Metrics".into()));
    if evaluated.is_empty() {
        blocks.push(Block::Text(Text::plain("No evaluation.")));
    }
    for e in evaluated {
        blocks.push(Block::Heading(3, e.evaluation.stage.clone()));
        blocks.push(metrics_table(&e.evaluation.metrics, e.source.clone()));
    }
    blocks.push(Block::Heading(2, "Flags".into()));
    let raised = flags(&run.record)?;
    blocks.push(if raised.is_empty() {
        Block::Text(Text::plain("None raised."))
    } else {
        Block::List(raised)
    });
    blocks.push(Block::Heading(2, "Pipeline".into()));
    blocks.extend(pipeline::stages(&run.record));
    blocks.push(Block::Heading(2, "Settings".into()));
    blocks.push(Block::Text(
        Text::plain("The run's settings, as it completed them (")
            .code("pipeline.toml")
            .and("; keys left at their defaults are not listed)."),
    ));
    blocks.push(pipeline::settings(&run.record));
    Ok(())
}

/// The rest of a report of several runs: every run's flags, then each run's details folded.
fn several_runs(
    blocks: &mut Vec<Block>,
    runs: &[Run],
    histories: &[Vec<History>],
    evaluated: &[Evaluated],
    groups: &[usize],
    labels: &[String],
) -> Result<()> {
    blocks.push(Block::Heading(2, "Flags".into()));
    let mut raised = Vec::new();
    for run in runs {
        for flag in flags(&run.record)? {
            let mut text = Text::default().code(&run.name).and(": ");
            text.0.extend(flag.0);
            raised.push(text);
        }
    }
    blocks.push(if raised.is_empty() {
        Block::Text(Text::plain("None raised."))
    } else {
        Block::List(raised)
    });
    blocks.push(Block::Heading(2, "Runs".into()));
    blocks.push(Block::Text(Text::plain(
        "Each run's pipeline, learning curves, metrics and settings (click to unfold).",
    )));
    let mut by_run: BTreeMap<usize, Vec<&Evaluated>> = BTreeMap::new();
    for e in evaluated {
        by_run.entry(e.run).or_default().push(e);
    }
    for (i, (run, history)) in runs.iter().zip(histories).enumerate() {
        let mut inner = vec![Block::Heading(4, "Pipeline".into())];
        inner.extend(pipeline::stages(&run.record));
        inner.push(Block::Heading(4, "Learning curves".into()));
        inner.extend(curves_of_run(run, history, 5));
        inner.push(Block::Heading(4, "Metrics".into()));
        for e in by_run.get(&i).into_iter().flatten() {
            inner.push(Block::Heading(5, e.evaluation.stage.clone()));
            inner.push(metrics_table(&e.evaluation.metrics, e.source.clone()));
        }
        inner.push(Block::Heading(4, "Settings".into()));
        inner.push(pipeline::settings(&run.record));
        let label = labels.get(groups[i]).cloned().unwrap_or_default();
        blocks.push(Block::Details(format!("{} ({label})", run.name), inner));
    }
    Ok(())
}
