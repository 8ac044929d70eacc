//! Finished runs side by side, like `dvc exp show`: the settings that differ, each metric per
//! group of runs that differ only by seed (mean ± std over seeds, or the bootstrap CI of a
//! single run), the change from the first group, whether that change is within noise, and
//! the best group per metric.
//!
//! Runs are read as [`Evaluation`]s (see [`crate::runs`]) and compared by their effective
//! settings: every stage's params as the lock records them, defaults filled in, so keys a
//! file leaves at their defaults still tell runs apart.

mod metrics;
mod parquet;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use mmflow_schemas::comparison::ComparisonRow;
use mmflow_schemas::evaluation::MetricRow;

pub(crate) use self::metrics::default_metrics;
use self::metrics::lower_is_better;
pub use self::parquet::{check_parquet_destination, write_parquet};
use crate::runs::{self, Evaluation};

/// What to compare and how to show it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run directories.
    pub runs: Vec<PathBuf>,
    /// Split whose metrics are compared.
    pub split: String,
    /// Metrics to show (`metric` for every head, or `head/metric`); empty = the usual ones.
    pub metrics: Vec<String>,
    /// Order groups by this metric (`metric` or `head/metric`), best first.
    pub sort: Option<String>,
    /// Also write the table as Parquet here.
    pub parquet: Option<PathBuf>,
}

/// Compares the evaluations of `options.runs`; writes the `comparison` table if asked for
/// (checked before any run is read) and returns the Markdown table.
pub fn compare(options: &Options) -> Result<String> {
    let (comparison, order) = comparison(options)?;
    Ok(comparison.markdown(&order))
}

/// The comparison of `options.runs` and the order its groups are shown in; writes the
/// `comparison` table if asked for (checked before any run is read).
pub fn comparison(options: &Options) -> Result<(Comparison, Vec<usize>)> {
    if options.runs.is_empty() {
        bail!("name at least one run directory");
    }
    if let Some(path) = &options.parquet {
        check_parquet_destination(path)?;
    }
    let mut evaluations = Vec::new();
    for run in &options.runs {
        evaluations.extend(runs::evaluations(run)?);
    }
    let comparison = Comparison::build(&evaluations, &options.split, &options.metrics)?;
    let order = comparison.order(options.sort.as_deref())?;
    if let Some(path) = &options.parquet {
        write_parquet(path, &comparison.rows(), &options.runs)?;
    }
    Ok((comparison, order))
}

/// A group of evaluations that differ only by seed.
#[derive(Debug, Clone)]
struct Group {
    /// Names of the runs' directories.
    runs: Vec<String>,
    /// The stage the metrics come from.
    stage: String,
    /// The differing settings, `key=value; …`.
    params: String,
    /// Indices of the evaluations in the group.
    members: Vec<usize>,
}

/// A compared metric of a head.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    head: String,
    metric: String,
}

impl Column {
    /// `head/metric`, as `--metric` and `--sort` name it.
    fn key(&self) -> String {
        format!("{}/{}", self.head, self.metric)
    }
}

/// One cell: a metric of a group.
#[derive(Debug, Clone, Copy)]
struct Cell {
    mean: f64,
    std: Option<f64>,
    ci: Option<(f64, f64)>,
    n: usize,
}

impl Cell {
    /// The cell of a group's rows of one metric (`None` for none).
    fn of(rows: &[&MetricRow]) -> Option<Cell> {
        if rows.is_empty() {
            return None;
        }
        let n = rows.len();
        let mean = rows.iter().map(|r| r.value).sum::<f64>() / n as f64;
        let std = (n >= 2).then(|| {
            (rows.iter().map(|r| (r.value - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        });
        let ci = (n == 1)
            .then(|| rows[0].ci_low.zip(rows[0].ci_high))
            .flatten();
        Some(Cell { mean, std, ci, n })
    }

    /// The interval that says how far the value could move by chance: a single run's bootstrap
    /// CI, or mean ± 2 standard errors over seeds.
    fn interval(&self) -> Option<(f64, f64)> {
        match (self.std, self.ci) {
            (Some(s), _) => {
                let half = 2.0 * s / (self.n as f64).sqrt();
                Some((self.mean - half, self.mean + half))
            }
            (None, ci) => ci,
        }
    }

    /// The 95% confidence interval of the mean: over seeds Student's t interval
    /// (`mean ± t · s / √n`), of a single run its bootstrap CI.
    fn ci95(&self) -> Option<(f64, f64)> {
        match (self.std, self.ci) {
            (Some(s), _) => {
                let half = t_975(self.n - 1) * s / (self.n as f64).sqrt();
                Some((self.mean - half, self.mean + half))
            }
            (None, ci) => ci,
        }
    }

    /// The value as shown: `mean ± std`, `mean [lo, hi]` or `mean`.
    fn text(&self) -> String {
        match (self.std, self.ci) {
            (Some(s), _) => format!("{:.3} ± {:.3}", self.mean, s),
            (None, Some((lo, hi))) => format!("{:.3} [{:.3}, {:.3}]", self.mean, lo, hi),
            _ => format!("{:.3}", self.mean),
        }
    }
}

/// Student's t quantile 0.975 for `df` degrees of freedom (exact to three decimals up to
/// 30, then `1.96 + 2.4 / df`, within 0.002 of it).
fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => 1.96 + 2.4 / df as f64,
    }
}

/// Evaluations compared: groups of runs (group 0 is the base) × metric columns.
#[derive(Debug, Clone)]
pub struct Comparison {
    split: String,
    groups: Vec<Group>,
    columns: Vec<Column>,
    /// Per group, per column.
    cells: Vec<Vec<Option<Cell>>>,
    /// Per group, per column: each member's value, with its run's name.
    values: Vec<Vec<Vec<(String, f64)>>>,
    /// Per column, the best group.
    best: Vec<Option<usize>>,
    /// Settings only some runs have (stages the others lack).
    partial: Vec<String>,
}

/// What the signs of the table mean.
pub(crate) const LEGEND: &str = "± = std over seeds, [a, b] = 95% bootstrap CI of one run; (Δ) = change from group 0, ≈ = within noise (intervals overlap: the CI, or mean ± 2 s.e. over seeds); bold = best.";

/// A row of the table as shown: `#`, runs, stage, settings and seeds, then one cell per
/// metric.
pub(crate) struct ShownRow {
    /// The group's own columns.
    pub(crate) texts: Vec<String>,
    /// One per metric column.
    pub(crate) cells: Vec<ShownCell>,
}

/// A metric's cell as shown.
pub(crate) struct ShownCell {
    /// `mean ± std (Δ ≈)` and the like.
    pub(crate) text: String,
    /// The mean; `None` where the group lacks the metric.
    pub(crate) value: Option<f64>,
    /// The best group of several.
    pub(crate) best: bool,
}

/// A group's value of one metric, as a plot of it needs them.
pub(crate) struct GroupPoint<'a> {
    /// Mean over the members.
    pub(crate) mean: f64,
    /// The interval the noise flag compares: a single run's CI, or mean ± 2 s.e.
    pub(crate) noise: Option<(f64, f64)>,
    /// The 95% CI of the mean (Student's t over seeds; a single run's bootstrap CI).
    pub(crate) ci95: Option<(f64, f64)>,
    /// Each member's value, with its run's name.
    pub(crate) seeds: &'a [(String, f64)],
    /// Within noise of group 0.
    pub(crate) within_noise: bool,
    /// The best group.
    pub(crate) best: bool,
}

impl Comparison {
    /// Groups `evaluations` (runs differing only by seed form one group, in order of first
    /// appearance) and picks the columns: `metrics` (`metric` for every head, `head/metric`),
    /// or the usual ones when empty, of those the first evaluation has for `split`. Refuses
    /// evaluations of different tasks (heads).
    pub fn build(evaluations: &[Evaluation], split: &str, metrics: &[String]) -> Result<Self> {
        let Some(first) = evaluations.first() else {
            bail!("no evaluations to compare");
        };
        check_same_task(evaluations)?;
        let (differing, partial) = differing_settings(evaluations);
        let groups = group(evaluations, &differing);
        let columns = columns(first, split, metrics)?;
        let rows: Vec<Vec<Vec<(String, &MetricRow)>>> = groups
            .iter()
            .map(|g| {
                columns
                    .iter()
                    .map(|c| group_rows(evaluations, g, split, c))
                    .collect()
            })
            .collect();
        let cells: Vec<Vec<Option<Cell>>> = rows
            .iter()
            .map(|g| {
                g.iter()
                    .map(|c| Cell::of(&c.iter().map(|(_, r)| *r).collect::<Vec<_>>()))
                    .collect()
            })
            .collect();
        let values = rows
            .iter()
            .map(|g| {
                g.iter()
                    .map(|c| c.iter().map(|(run, r)| (run.clone(), r.value)).collect())
                    .collect()
            })
            .collect();
        let best = (0..columns.len())
            .map(|c| best_group(&cells, c, lower_is_better(&columns[c].metric)))
            .collect();
        Ok(Comparison {
            split: split.to_string(),
            groups,
            columns,
            cells,
            values,
            best,
            partial,
        })
    }

    /// The order groups are shown in: as built, or by the column `sort` names (`metric` or
    /// `head/metric`), best first.
    pub fn order(&self, sort: Option<&str>) -> Result<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.groups.len()).collect();
        let Some(sort) = sort else {
            return Ok(order);
        };
        let c = self
            .columns
            .iter()
            .position(|col| sort == col.key() || sort == col.metric)
            .with_context(|| {
                format!(
                    "--sort {sort}: not a shown column ({})",
                    self.columns
                        .iter()
                        .map(Column::key)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let lower = lower_is_better(&self.columns[c].metric);
        order.sort_by(|&a, &b| {
            let (x, y) = (self.mean(a, c), self.mean(b, c));
            if lower {
                x.total_cmp(&y)
            } else {
                y.total_cmp(&x)
            }
        });
        Ok(order)
    }

    /// The comparison as rows of the `comparison` table (long format: group × column).
    pub fn rows(&self) -> Vec<ComparisonRow> {
        let mut rows = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            for (c, column) in self.columns.iter().enumerate() {
                let Some(x) = self.cells[g][c] else { continue };
                rows.push(ComparisonRow {
                    group: g as u32,
                    runs: group.runs.join(","),
                    stage: group.stage.clone(),
                    params: group.params.clone(),
                    seeds: x.n as u32,
                    split: self.split.clone(),
                    head: column.head.clone(),
                    metric: column.metric.clone(),
                    mean: x.mean,
                    std: x.std,
                    ci_low: x.ci.map(|c| c.0),
                    ci_high: x.ci.map(|c| c.1),
                    delta: x.mean - self.mean(0, c),
                    within_noise: self.within_noise(g, c),
                    is_best: self.best[c] == Some(g),
                });
            }
        }
        rows
    }

    /// The comparison as a Markdown table, groups in `order`, with a note on differences of
    /// structure and a legend.
    pub fn markdown(&self, order: &[usize]) -> String {
        let mut md = String::new();
        let header = self.header();
        md.push_str(&format!("| {} |\n", header.join(" | ")));
        md.push_str(&format!("|{}\n", "---|".repeat(header.len())));
        for row in self.shown(order) {
            let cells = row.cells.iter().map(|cell| {
                if cell.best {
                    format!("**{}**", cell.text)
                } else {
                    cell.text.clone()
                }
            });
            let line: Vec<String> = row.texts.into_iter().chain(cells).collect();
            md.push_str(&format!("| {} |\n", line.join(" | ")));
        }
        md.push_str(&self.structure_note());
        let _ = write!(md, "\nsplit `{}`; {}\n", self.split, LEGEND);
        md
    }

    /// The table's header: the group's columns, then one per compared metric.
    pub(crate) fn header(&self) -> Vec<String> {
        ["#", "runs", "stage", "settings", "seeds"]
            .iter()
            .map(|s| s.to_string())
            .chain(
                self.columns
                    .iter()
                    .map(|c| format!("{} {}", c.head, c.metric)),
            )
            .collect()
    }

    /// The rows of the table, groups in `order`.
    pub(crate) fn shown(&self, order: &[usize]) -> Vec<ShownRow> {
        order
            .iter()
            .map(|&g| {
                let group = &self.groups[g];
                ShownRow {
                    texts: vec![
                        g.to_string(),
                        group.runs.join(", "),
                        group.stage.clone(),
                        settings_shown(group, &self.groups[0], g == 0),
                        group.members.len().to_string(),
                    ],
                    cells: (0..self.columns.len())
                        .map(|c| ShownCell {
                            text: self.cell_text(g, c),
                            value: self.cells[g][c].map(|x| x.mean),
                            best: self.best[c] == Some(g) && self.groups.len() > 1,
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// The split compared.
    pub(crate) fn split(&self) -> &str {
        &self.split
    }

    /// How many groups there are.
    pub(crate) fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The indices (into the evaluations compared) of group `g`'s members.
    pub(crate) fn members(&self, g: usize) -> &[usize] {
        &self.groups[g].members
    }

    /// A short name of group `g`: its stage where the groups' stages differ, and the settings
    /// it differs by (keys by their last part: `dropout=0.4`); `#g` when neither tells it
    /// apart.
    pub(crate) fn label(&self, g: usize) -> String {
        let group = &self.groups[g];
        let mut parts = Vec::new();
        if self.stages_differ() {
            parts.push(group.stage.clone());
        }
        let settings = settings_shown(group, &self.groups[0], g == 0);
        if !group.params.is_empty() && settings != "(as 0)" {
            parts.push(
                settings
                    .split("; ")
                    .map(|s| match s.split_once('=') {
                        Some((key, value)) => {
                            format!("{}={value}", key.rsplit('.').next().unwrap_or(key))
                        }
                        None => s.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
        if parts.is_empty() {
            format!("#{g}")
        } else {
            parts.join(" · ")
        }
    }

    /// Whether groups differ by the stage they evaluate (evaluations of one run), not only by
    /// settings.
    pub(crate) fn stages_differ(&self) -> bool {
        self.groups.iter().any(|g| g.stage != self.groups[0].stage)
    }

    /// How many metric columns there are.
    pub(crate) fn column_count(&self) -> usize {
        self.columns.len()
    }

    /// Column `c` as `head metric`.
    pub(crate) fn column_title(&self, c: usize) -> String {
        format!("{} {}", self.columns[c].head, self.columns[c].metric)
    }

    /// Whether a lower value of column `c` is better.
    pub(crate) fn lower_is_better(&self, c: usize) -> bool {
        lower_is_better(&self.columns[c].metric)
    }

    /// Group `g`'s values of column `c`, as a plot of it needs them; `None` where the group
    /// lacks the metric.
    pub(crate) fn point(&self, g: usize, c: usize) -> Option<GroupPoint<'_>> {
        let cell = self.cells[g][c]?;
        Some(GroupPoint {
            mean: cell.mean,
            noise: cell.interval(),
            ci95: cell.ci95(),
            seeds: &self.values[g][c],
            within_noise: self.within_noise(g, c),
            best: self.best[c] == Some(g),
        })
    }

    /// The mean of a cell (NaN for an empty one).
    fn mean(&self, g: usize, c: usize) -> f64 {
        self.cells[g][c].map(|x| x.mean).unwrap_or(f64::NAN)
    }

    /// Whether group `g`'s value of column `c` is within noise of the base group's: their
    /// intervals overlap (the base group always is; without intervals no other is).
    fn within_noise(&self, g: usize, c: usize) -> bool {
        match (
            self.cells[0][c].and_then(|x| x.interval()),
            self.cells[g][c].and_then(|x| x.interval()),
        ) {
            (Some((a0, a1)), Some((b0, b1))) => a0 <= b1 && b0 <= a1,
            _ => g == 0,
        }
    }

    /// A cell's text: the value, its change from the base group (≈ within noise); `–` when
    /// the group lacks the metric.
    fn cell_text(&self, g: usize, c: usize) -> String {
        let Some(x) = self.cells[g][c] else {
            return "–".into();
        };
        let mut text = x.text();
        if g != 0 {
            text.push_str(&format!(
                " ({:+.3}{})",
                x.mean - self.mean(0, c),
                if self.within_noise(g, c) { " ≈" } else { "" }
            ));
        }
        text
    }

    /// A line below the table when some settings exist in only some runs (empty otherwise).
    pub(crate) fn structure_note(&self) -> String {
        if self.partial.is_empty() {
            return String::new();
        }
        let stages: BTreeSet<&str> = self
            .partial
            .iter()
            .filter_map(|k| k.strip_prefix("stages."))
            .filter_map(|k| k.split('.').next())
            .collect();
        format!(
            "\nThe runs differ in structure: {} setting(s) exist in only some of them{}.\n",
            self.partial.len(),
            if stages.is_empty() {
                String::new()
            } else {
                format!(
                    " (stages {})",
                    stages.into_iter().collect::<Vec<_>>().join(", ")
                )
            }
        )
    }
}

/// Refuses evaluations of different tasks: every one must have the first one's heads.
fn check_same_task(evaluations: &[Evaluation]) -> Result<()> {
    let heads_of =
        |e: &Evaluation| -> BTreeSet<String> { e.metrics.iter().map(|m| m.head.clone()).collect() };
    let first = &evaluations[0];
    let heads = heads_of(first);
    if let Some(other) = evaluations.iter().find(|e| heads_of(e) != heads) {
        bail!(
            "cannot compare runs of different tasks: {}/{} has heads {}, {}/{} has {}",
            first.run.display(),
            first.stage,
            heads.iter().cloned().collect::<Vec<_>>().join(", "),
            other.run.display(),
            other.stage,
            heads_of(other).into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// The settings that describe the groups: those every run has and that differ somewhere
/// (seeds aside); and those only some runs have. A stage that exists in some runs only is a
/// difference of structure, reported once below the table rather than as a column of
/// "(unset)".
fn differing_settings(evaluations: &[Evaluation]) -> (Vec<String>, Vec<String>) {
    let keys: BTreeSet<&String> = evaluations.iter().flat_map(|e| e.settings.keys()).collect();
    let (shared, partial): (Vec<&String>, Vec<&String>) = keys
        .into_iter()
        .partition(|k| evaluations.iter().all(|e| e.settings.contains_key(*k)));
    let differing = shared
        .into_iter()
        .filter(|k| !Evaluation::is_seed(k))
        .filter(|k| {
            evaluations
                .iter()
                .map(|e| e.settings.get(*k))
                .collect::<BTreeSet<_>>()
                .len()
                > 1
        })
        .cloned()
        .collect();
    (differing, partial.into_iter().cloned().collect())
}

/// Groups the evaluations of one experiment: every setting but the seeds is equal (those of
/// stages some runs lack included), not only the settings shown.
fn group(evaluations: &[Evaluation], differing: &[String]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, e) in evaluations.iter().enumerate() {
        let run = e
            .run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| e.run.display().to_string());
        match groups
            .iter_mut()
            .find(|g| evaluations[g.members[0]].same_experiment(e))
        {
            Some(g) => {
                g.runs.push(run);
                g.members.push(i);
            }
            None => groups.push(Group {
                runs: vec![run],
                stage: e.stage.clone(),
                params: settings_text(e, differing),
                members: vec![i],
            }),
        }
    }
    groups
}

/// `key=value; …` of the differing settings of an evaluation.
fn settings_text(e: &Evaluation, differing: &[String]) -> String {
    differing
        .iter()
        .map(|k| {
            format!(
                "{k}={}",
                e.settings.get(k).map(String::as_str).unwrap_or("(unset)")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The columns shown: those asked for (or the usual ones) among the metrics `first` has for
/// `split`, head by head.
fn columns(first: &Evaluation, split: &str, metrics: &[String]) -> Result<Vec<Column>> {
    let available: BTreeSet<Column> = first
        .metrics
        .iter()
        .filter(|m| m.split.as_str() == split)
        .map(|m| Column {
            head: m.head.clone(),
            metric: m.metric.clone(),
        })
        .collect();
    if available.is_empty() {
        bail!(
            "{}/{}: no metrics for split `{split}`",
            first.run.display(),
            first.stage,
        );
    }
    let heads: BTreeSet<&str> = available.iter().map(|c| c.head.as_str()).collect();
    let mut columns = Vec::new();
    for head in heads {
        columns.extend(
            wanted_metrics(head, &available, metrics)
                .into_iter()
                .map(|metric| Column {
                    head: head.to_string(),
                    metric,
                })
                .filter(|c| available.contains(c)),
        );
    }
    if columns.is_empty() {
        bail!(
            "none of the metrics {metrics:?} exist for split `{split}` (available: {})",
            available
                .iter()
                .map(Column::key)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(columns)
}

/// The metrics asked for of `head`: `metric` names every head's, `head/metric` one head's;
/// none asked for, the usual ones.
fn wanted_metrics(head: &str, available: &BTreeSet<Column>, metrics: &[String]) -> Vec<String> {
    if metrics.is_empty() {
        let has = available
            .iter()
            .filter(|c| c.head == head)
            .map(|c| c.metric.as_str());
        return default_metrics(head, has)
            .into_iter()
            .map(str::to_string)
            .collect();
    }
    metrics
        .iter()
        .filter_map(|m| match m.split_once('/') {
            Some((h, m)) if h == head => Some(m.to_string()),
            Some(_) => None,
            None => Some(m.clone()),
        })
        .collect()
}

/// The rows of column `c` on `split`, one per member of the group that has it, with the
/// member's run name.
fn group_rows<'a>(
    evaluations: &'a [Evaluation],
    g: &Group,
    split: &str,
    c: &Column,
) -> Vec<(String, &'a MetricRow)> {
    g.members
        .iter()
        .zip(&g.runs)
        .filter_map(|(&i, run)| {
            evaluations[i]
                .metrics
                .iter()
                .find(|m| m.split.as_str() == split && m.head == c.head && m.metric == c.metric)
                .map(|row| (run.clone(), row))
        })
        .collect()
}

/// The group with the best finite value of column `c`.
fn best_group(cells: &[Vec<Option<Cell>>], c: usize, lower: bool) -> Option<usize> {
    let mean = |g: usize| cells[g][c].map(|x| x.mean).unwrap_or(f64::NAN);
    (0..cells.len())
        .filter(|&g| cells[g][c].is_some_and(|x| x.mean.is_finite()))
        .max_by(|&a, &b| {
            let (x, y) = (mean(a), mean(b));
            if lower {
                y.total_cmp(&x)
            } else {
                x.total_cmp(&y)
            }
        })
}

/// The settings column: group 0 lists every differing setting; the others only where they
/// differ from group 0 (one factor at a time reads as one setting per row).
fn settings_shown(group: &Group, base: &Group, is_base: bool) -> String {
    if group.params.is_empty() {
        return "(same)".into();
    }
    if is_base {
        return group.params.clone();
    }
    let base: BTreeSet<&str> = base.params.split("; ").collect();
    let own: Vec<&str> = group
        .params
        .split("; ")
        .filter(|s| !base.contains(s))
        .collect();
    if own.is_empty() {
        "(as 0)".into()
    } else {
        own.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmflow_schemas::Split;

    /// A metric row of the test split; `ci` for a single run's bootstrap interval.
    fn metric(head: &str, metric: &str, value: f64, ci: Option<(f64, f64)>) -> MetricRow {
        MetricRow {
            split: Split::Test,
            head: head.into(),
            metric: metric.into(),
            value,
            ci_low: ci.map(|c| c.0),
            ci_high: ci.map(|c| c.1),
            n: 10,
            seed: 1,
            note: None,
        }
    }

    /// An evaluation of run `run` with the model's `seed` and `dropout`, and its CCC and MAE.
    fn evaluation(run: &str, seed: &str, dropout: &str, ccc: f64, mae: f64) -> Evaluation {
        let settings = [
            ("stages.model.seed", seed),
            ("stages.model.params.dropout", dropout),
        ];
        Evaluation {
            run: PathBuf::from("runs").join(run),
            stage: "eval".into(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metrics: vec![
                metric("sentiment", "CCC", ccc, Some((ccc - 0.1, ccc + 0.1))),
                metric("sentiment", "MAE", mae, Some((mae - 0.1, mae + 0.1))),
            ],
        }
    }

    fn three_runs() -> Vec<Evaluation> {
        vec![
            evaluation("a1", "1", "0.2", 0.5, 0.9),
            evaluation("a2", "2", "0.2", 0.7, 0.7),
            evaluation("b1", "1", "0.4", 0.65, 0.5),
        ]
    }

    fn asked(metrics: &[&str]) -> Vec<String> {
        metrics.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn seeds_form_one_group_and_settings_that_differ_are_shown() {
        let c = Comparison::build(&three_runs(), "test", &asked(&["CCC", "MAE"])).unwrap();
        assert_eq!(c.groups.len(), 2);
        assert_eq!(c.groups[0].runs, ["a1", "a2"]);
        assert_eq!(c.groups[0].params, "stages.model.params.dropout=0.2");
        let base = c.cells[0][0].unwrap();
        assert!((base.mean - 0.6).abs() < 1e-12 && base.std.is_some() && base.ci.is_none());
        let single = c.cells[1][0].unwrap();
        assert!(single.n == 1 && single.std.is_none() && single.ci.is_some());
        let md = c.markdown(&c.order(None).unwrap());
        assert!(
            md.contains("| 0 | a1, a2 | eval | stages.model.params.dropout=0.2 | 2 |"),
            "{md}"
        );
        assert!(
            md.contains("| 1 | b1 | eval | stages.model.params.dropout=0.4 | 1 |"),
            "{md}"
        );
        assert!(!md.contains("seed="), "{md}");
    }

    #[test]
    fn the_best_group_follows_the_metric_direction_and_sorting_puts_it_first() {
        let c = Comparison::build(&three_runs(), "test", &asked(&["CCC", "MAE"])).unwrap();
        // CCC: higher is better (0.65 > 0.6); MAE: lower is better (0.5 < 0.8).
        assert_eq!(c.best, [Some(1), Some(1)]);
        assert_eq!(c.order(Some("sentiment/MAE")).unwrap(), [1, 0]);
        assert_eq!(c.order(Some("CCC")).unwrap(), [1, 0]);
        let err = c.order(Some("RMSE")).unwrap_err().to_string();
        assert!(
            err.contains("not a shown column (sentiment/CCC, sentiment/MAE)"),
            "{err}"
        );
    }

    #[test]
    fn a_change_whose_intervals_overlap_is_within_noise() {
        let c = Comparison::build(&three_runs(), "test", &asked(&["CCC"])).unwrap();
        assert!(c.within_noise(0, 0));
        assert!(
            c.within_noise(1, 0),
            "0.65 [0.55, 0.75] overlaps 0.6 ± 2 s.e."
        );
        let rows = c.rows();
        assert_eq!(rows.len(), 2);
        assert!((rows[1].delta - 0.05).abs() < 1e-12 && rows[1].within_noise && rows[1].is_best);
        let md = c.markdown(&[0, 1]);
        assert!(md.contains("(+0.050 ≈)**"), "{md}");
    }

    #[test]
    fn a_plot_gets_each_seed_the_mean_the_95_ci_and_the_noise_interval() {
        let c = Comparison::build(&three_runs(), "test", &asked(&["CCC"])).unwrap();
        assert_eq!(
            (c.label(0), c.label(1)),
            ("dropout=0.2".into(), "dropout=0.4".into())
        );
        assert!(!c.stages_differ());
        let base = c.point(0, 0).unwrap();
        assert_eq!(
            base.seeds,
            [("a1".to_string(), 0.5), ("a2".to_string(), 0.7)]
        );
        // Two seeds: s = 0.1414, t(1) = 12.706; the noise interval is mean ± 2 s.e.
        let (lo, hi) = base.ci95.unwrap();
        assert!((hi - 0.6 - 12.706 * 0.1).abs() < 1e-9 && (0.6 - lo - 12.706 * 0.1).abs() < 1e-9);
        let (a, b) = base.noise.unwrap();
        assert!((b - 0.6 - 0.2).abs() < 1e-9 && (0.6 - a - 0.2).abs() < 1e-9);
        let single = c.point(1, 0).unwrap();
        assert_eq!(single.ci95, Some((0.65 - 0.1, 0.65 + 0.1)));
        assert!(single.within_noise && single.best);
        assert!((t_975(3) - 3.182).abs() < 1e-9 && (t_975(60) - 2.0).abs() < 0.002);
        assert!(t_975(0).is_nan());
    }

    #[test]
    fn the_usual_metrics_are_shown_when_none_are_asked_for() {
        // A head evaluated as sentiment (MMSA's accuracies among its metrics): the headline
        // sentiment metrics it has, in their order.
        let mut runs = three_runs();
        for run in &mut runs {
            run.metrics
                .push(metric("sentiment", "Has0_acc_2", 0.7, None));
            run.metrics.push(metric("sentiment", "RMSE", 1.0, None));
        }
        let c = Comparison::build(&runs, "test", &[]).unwrap();
        let keys: Vec<String> = c.columns.iter().map(Column::key).collect();
        assert_eq!(
            keys,
            ["sentiment/Has0_acc_2", "sentiment/MAE", "sentiment/CCC"]
        );
        // A head evaluated with MMSA's CH-SIMS metrics (`Mult_acc_2` among them): that
        // family's, in its order.
        let mut runs = three_runs();
        for run in &mut runs {
            run.metrics.push(metric("sentiment", "F1_score", 0.7, None));
            run.metrics
                .push(metric("sentiment", "Mult_acc_2", 0.7, None));
        }
        let c = Comparison::build(&runs, "test", &[]).unwrap();
        let keys: Vec<String> = c.columns.iter().map(Column::key).collect();
        assert_eq!(
            keys,
            [
                "sentiment/Mult_acc_2",
                "sentiment/F1_score",
                "sentiment/MAE"
            ]
        );
        // Without the accuracies the head was evaluated as a continuous one: CCC and RMSE.
        let c = Comparison::build(&three_runs(), "test", &[]).unwrap();
        let keys: Vec<String> = c.columns.iter().map(Column::key).collect();
        assert_eq!(keys, ["sentiment/CCC"]);
    }

    #[test]
    fn other_tasks_missing_splits_and_unknown_metrics_are_refused() {
        let mut runs = three_runs();
        runs[2].metrics = vec![metric("valence", "CCC", 0.1, None)];
        let err = Comparison::build(&runs, "test", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot compare runs of different tasks"),
            "{err}"
        );
        let err = Comparison::build(&three_runs(), "valid", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no metrics for split `valid`"), "{err}");
        let err = Comparison::build(&three_runs(), "test", &asked(&["Nope"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("available: sentiment/CCC, sentiment/MAE"),
            "{err}"
        );
        assert!(Comparison::build(&[], "test", &[]).is_err());
    }

    #[test]
    fn settings_of_stages_only_some_runs_have_are_a_note_not_a_column() {
        let mut runs = three_runs();
        runs[2]
            .settings
            .insert("stages.extra.params.k".into(), "3".into());
        let c = Comparison::build(&runs, "test", &asked(&["CCC"])).unwrap();
        let md = c.markdown(&[0, 1]);
        assert!(
            md.contains("1 setting(s) exist in only some of them (stages extra)"),
            "{md}"
        );
        assert!(!md.contains("(unset)"), "{md}");
    }
}
