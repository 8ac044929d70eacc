//! `mmflow compare RUN…`: the evaluate stages of finished runs side by side, like
//! `dvc exp show` — the settings that differ, each metric per group of runs that differ only
//! by seed (mean ± std over seeds, or the bootstrap CI of a single run), the change from the
//! first group, whether that change is within noise, and the best group per metric.
//!
//! Runs are read through [`RunRecord::load`] (an unfinished run is refused, naming its
//! stages) and compared by their effective settings: every stage's params as the lock records
//! them, defaults filled in, so keys a file leaves at their defaults still tell runs apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use mmflow_pipeline::record::RunRecord;
use mmflow_schemas::comparison::{self, ComparisonRow};
use mmflow_schemas::evaluation::{read_metrics, MetricRow};
use mmflow_schemas::{read_file_meta, TableMeta};

use crate::staging::{parent_of, Parents, Staging};

/// What to compare and how to show it.
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

/// One evaluate stage of one run.
struct Evaluated {
    run: PathBuf,
    stage: String,
    settings: BTreeMap<String, String>,
    metrics: Vec<MetricRow>,
}

/// Seeds: runs differing only in these are repetitions of one experiment.
fn is_seed(key: &str) -> bool {
    key.ends_with(".seed")
}

/// Whether two evaluate stages are repetitions of one experiment: the same stage, and the
/// same settings except seeds.
fn same_experiment(a: &Evaluated, b: &Evaluated) -> bool {
    fn without_seeds(e: &Evaluated) -> impl Iterator<Item = (&String, &String)> {
        e.settings.iter().filter(|(k, _)| !is_seed(k))
    }
    a.stage == b.stage && without_seeds(a).eq(without_seeds(b))
}

/// The evaluate stages of a finished run, with the settings it completed (defaults filled
/// in, as the lock file records them).
fn load_run(dir: &Path) -> Result<Vec<Evaluated>> {
    let record = RunRecord::load(dir)?;
    let settings = record.settings();
    let mut out = Vec::new();
    for (id, _) in record
        .manifest
        .stages
        .iter()
        .filter(|(_, e)| e.kind == "evaluate")
    {
        let path = record.output(id, "metrics")?;
        let metrics =
            read_metrics(&path).with_context(|| format!("{}: stage `{id}`", path.display()))?;
        out.push(Evaluated {
            run: dir.to_path_buf(),
            stage: id.clone(),
            settings: settings.clone(),
            metrics,
        });
    }
    if out.is_empty() {
        bail!("{}: no evaluate stage: nothing to compare", dir.display());
    }
    Ok(out)
}

/// The metrics shown for a head when none are asked for.
fn default_metrics(head: &str) -> &'static [&'static str] {
    match head {
        "sentiment" => &[
            "Has0_acc_2",
            "Non0_acc_2",
            "Mult_acc_7",
            "MAE",
            "Corr",
            "CCC",
        ],
        "mean" => &["CCC"],
        _ => &["CCC", "RMSE"],
    }
}

fn lower_is_better(metric: &str) -> bool {
    ["MAE", "MSE", "RMSE"].iter().any(|m| metric.starts_with(m))
}

/// A group of runs that differ only by seed.
struct Group {
    runs: Vec<String>,
    stage: String,
    params: String,
    members: Vec<usize>,
}

/// One cell: a metric of a group.
#[derive(Clone, Copy)]
struct Cell {
    mean: f64,
    std: Option<f64>,
    ci: Option<(f64, f64)>,
    n: usize,
}

impl Cell {
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

/// Builds the comparison; returns the Markdown table.
pub fn compare(options: &Options) -> Result<String> {
    if options.runs.is_empty() {
        bail!("name at least one run directory");
    }
    if let Some(path) = &options.parquet {
        check_parquet_destination(path)?;
    }
    let mut evaluated = Vec::new();
    for run in &options.runs {
        evaluated.extend(load_run(run)?);
    }
    // Same task: the same heads everywhere.
    let heads_of =
        |e: &Evaluated| -> BTreeSet<String> { e.metrics.iter().map(|m| m.head.clone()).collect() };
    let first = heads_of(&evaluated[0]);
    if let Some(other) = evaluated.iter().find(|e| heads_of(e) != first) {
        bail!(
            "cannot compare runs of different tasks: {}/{} has heads {}, {}/{} has {}",
            evaluated[0].run.display(),
            evaluated[0].stage,
            first.iter().cloned().collect::<Vec<_>>().join(", "),
            other.run.display(),
            other.stage,
            heads_of(other).into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    // Settings that differ somewhere (seeds aside) describe the groups.
    // Only settings every run has: a stage that exists in some runs only is a difference of
    // structure, reported once below the table rather than as a column of "(unset)".
    let keys: BTreeSet<&String> = evaluated.iter().flat_map(|e| e.settings.keys()).collect();
    let (shared, partial): (Vec<&String>, Vec<&String>) = keys
        .into_iter()
        .partition(|k| evaluated.iter().all(|e| e.settings.contains_key(*k)));
    let differing: Vec<&String> = shared
        .into_iter()
        .filter(|k| !is_seed(k))
        .filter(|k| {
            evaluated
                .iter()
                .map(|e| e.settings.get(*k))
                .collect::<BTreeSet<_>>()
                .len()
                > 1
        })
        .collect();
    let mut groups: Vec<Group> = Vec::new();
    for (i, e) in evaluated.iter().enumerate() {
        let params = differing
            .iter()
            .map(|k| {
                format!(
                    "{k}={}",
                    e.settings.get(*k).map(String::as_str).unwrap_or("(unset)")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let run = e
            .run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| e.run.display().to_string());
        // A group holds the runs of one experiment: every setting but the seeds is equal
        // (those of stages some runs lack included), not only the settings shown.
        match groups
            .iter_mut()
            .find(|g| same_experiment(&evaluated[g.members[0]], e))
        {
            Some(g) => {
                g.runs.push(run);
                g.members.push(i);
            }
            None => groups.push(Group {
                runs: vec![run],
                stage: e.stage.clone(),
                params,
                members: vec![i],
            }),
        }
    }
    // Columns.
    let available: BTreeSet<(String, String)> = evaluated[0]
        .metrics
        .iter()
        .filter(|m| m.split.as_str() == options.split)
        .map(|m| (m.head.clone(), m.metric.clone()))
        .collect();
    if available.is_empty() {
        bail!(
            "{}/{}: no metrics for split `{}`",
            evaluated[0].run.display(),
            evaluated[0].stage,
            options.split
        );
    }
    let mut columns: Vec<(String, String)> = Vec::new();
    for head in available
        .iter()
        .map(|(h, _)| h.clone())
        .collect::<BTreeSet<_>>()
    {
        let wanted: Vec<String> = if options.metrics.is_empty() {
            default_metrics(&head)
                .iter()
                .map(|m| m.to_string())
                .collect()
        } else {
            options
                .metrics
                .iter()
                .filter_map(|m| match m.split_once('/') {
                    Some((h, m)) if h == head => Some(m.to_string()),
                    Some(_) => None,
                    None => Some(m.clone()),
                })
                .collect()
        };
        columns.extend(
            wanted
                .into_iter()
                .filter(|m| available.contains(&(head.clone(), m.clone())))
                .map(|m| (head.clone(), m)),
        );
    }
    if columns.is_empty() {
        bail!(
            "none of the metrics {:?} exist for split `{}` (available: {})",
            options.metrics,
            options.split,
            available
                .iter()
                .map(|(h, m)| format!("{h}/{m}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let cell = |g: &Group, (head, metric): &(String, String)| -> Option<Cell> {
        let rows: Vec<&MetricRow> = g
            .members
            .iter()
            .filter_map(|&i| {
                evaluated[i].metrics.iter().find(|m| {
                    m.split.as_str() == options.split && &m.head == head && &m.metric == metric
                })
            })
            .collect();
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
    };
    let cells: Vec<Vec<Option<Cell>>> = groups
        .iter()
        .map(|g| columns.iter().map(|c| cell(g, c)).collect())
        .collect();
    let best: Vec<Option<usize>> = (0..columns.len())
        .map(|c| {
            let lower = lower_is_better(&columns[c].1);
            (0..groups.len())
                .filter(|&g| cells[g][c].is_some_and(|x| x.mean.is_finite()))
                .max_by(|&a, &b| {
                    let (x, y) = (
                        cells[a][c].map(|x| x.mean).unwrap_or(f64::NAN),
                        cells[b][c].map(|x| x.mean).unwrap_or(f64::NAN),
                    );
                    if lower {
                        y.total_cmp(&x)
                    } else {
                        x.total_cmp(&y)
                    }
                })
        })
        .collect();
    let within_noise = |g: usize, c: usize| -> bool {
        match (
            cells[0][c].and_then(|x| x.interval()),
            cells[g][c].and_then(|x| x.interval()),
        ) {
            (Some((a0, a1)), Some((b0, b1))) => a0 <= b1 && b0 <= a1,
            _ => g == 0,
        }
    };
    // Display order.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    if let Some(sort) = &options.sort {
        let c = columns
            .iter()
            .position(|(h, m)| sort == &format!("{h}/{m}") || sort == m)
            .with_context(|| {
                format!(
                    "--sort {sort}: not a shown column ({})",
                    columns
                        .iter()
                        .map(|(h, m)| format!("{h}/{m}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let lower = lower_is_better(&columns[c].1);
        order.sort_by(|&a, &b| {
            let (x, y) = (
                cells[a][c].map(|x| x.mean).unwrap_or(f64::NAN),
                cells[b][c].map(|x| x.mean).unwrap_or(f64::NAN),
            );
            if lower {
                x.total_cmp(&y)
            } else {
                y.total_cmp(&x)
            }
        });
    }
    // Parquet, long format.
    if let Some(path) = &options.parquet {
        let mut rows = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            for (c, (head, metric)) in columns.iter().enumerate() {
                let Some(x) = cells[g][c] else { continue };
                rows.push(ComparisonRow {
                    group: g as u32,
                    runs: group.runs.join(","),
                    stage: group.stage.clone(),
                    params: group.params.clone(),
                    seeds: x.n as u32,
                    split: options.split.clone(),
                    head: head.clone(),
                    metric: metric.clone(),
                    mean: x.mean,
                    std: x.std,
                    ci_low: x.ci.map(|c| c.0),
                    ci_high: x.ci.map(|c| c.1),
                    delta: x.mean - cells[0][c].map(|b| b.mean).unwrap_or(f64::NAN),
                    within_noise: within_noise(g, c),
                    is_best: best[c] == Some(g),
                });
            }
        }
        let fingerprint =
            blake3::hash(format!("{:?}", options.runs).as_bytes()).to_hex()[..32].to_string();
        let meta = TableMeta {
            stage: "compare".into(),
            fingerprint,
        };
        write_parquet(path, &rows, &meta)?;
    }
    // Markdown.
    let mut md = String::new();
    let header: Vec<String> = ["#", "runs", "stage", "settings", "seeds"]
        .iter()
        .map(|s| s.to_string())
        .chain(columns.iter().map(|(h, m)| format!("{h} {m}")))
        .collect();
    md.push_str(&format!("| {} |\n", header.join(" | ")));
    md.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for &g in &order {
        let group = &groups[g];
        let mut line = vec![
            g.to_string(),
            group.runs.join(", "),
            group.stage.clone(),
            settings_shown(group, &groups[0], g == 0),
            group.members.len().to_string(),
        ];
        for c in 0..columns.len() {
            let Some(x) = cells[g][c] else {
                line.push("–".into());
                continue;
            };
            let mut text = match (x.std, x.ci) {
                (Some(s), _) => format!("{:.3} ± {:.3}", x.mean, s),
                (None, Some((lo, hi))) => format!("{:.3} [{:.3}, {:.3}]", x.mean, lo, hi),
                _ => format!("{:.3}", x.mean),
            };
            if g != 0 {
                let base = cells[0][c].map(|b| b.mean).unwrap_or(f64::NAN);
                text.push_str(&format!(
                    " ({:+.3}{})",
                    x.mean - base,
                    if within_noise(g, c) { " ≈" } else { "" }
                ));
            }
            if best[c] == Some(g) && groups.len() > 1 {
                text = format!("**{text}**");
            }
            line.push(text);
        }
        md.push_str(&format!("| {} |\n", line.join(" | ")));
    }
    if !partial.is_empty() {
        let stages: BTreeSet<&str> = partial
            .iter()
            .filter_map(|k| k.strip_prefix("stages."))
            .filter_map(|k| k.split('.').next())
            .collect();
        md.push_str(&format!(
            "\nThe runs differ in structure: {} setting(s) exist in only some of them{}.\n",
            partial.len(),
            if stages.is_empty() {
                String::new()
            } else {
                format!(
                    " (stages {})",
                    stages.into_iter().collect::<Vec<_>>().join(", ")
                )
            }
        ));
    }
    md.push_str(&format!(
        "\nsplit `{}`; ± = std over seeds, [a, b] = 95% bootstrap CI of one run; (Δ) = change from group 0, ≈ = within noise (intervals overlap: the CI, or mean ± 2 s.e. over seeds); bold = best.\n",
        options.split
    ));
    Ok(md)
}

/// `--parquet FILE` may name a new file or a comparison table mmflow wrote, nothing else: not
/// a user's file, a folder, a link or a special file.
pub fn check_parquet_destination(path: &Path) -> Result<()> {
    let refuse = |why: &str| anyhow!("--parquet {}: {why}", path.display());
    if path.file_name().is_none() {
        return Err(refuse(
            "not a file name; name a new file, e.g. `comparison.parquet`",
        ));
    }
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("--parquet {}", path.display())),
        Ok(meta) => meta,
    };
    if meta.file_type().is_symlink() {
        return Err(refuse(
            "it is a symbolic link, and mmflow does not write through links; name a new file",
        ));
    }
    if meta.is_dir() {
        return Err(refuse(
            "it is a folder; name a new file, e.g. `FOLDER/comparison.parquet`",
        ));
    }
    let ours = meta.is_file() && read_file_meta(path).is_ok_and(|m| m.table == comparison::TABLE);
    if !ours {
        return Err(refuse(
            "it exists and is not a comparison table written by mmflow, which replaces only its own; name a new file",
        ));
    }
    Ok(())
}

/// Writes the comparison table to `path` (new, or a comparison table mmflow wrote): built
/// in a fresh staging folder beside it and renamed into place, so the file is complete or
/// absent and nothing at `path` is ever written through.
fn write_parquet(path: &Path, rows: &[ComparisonRow], meta: &TableMeta) -> Result<()> {
    check_parquet_destination(path)?;
    let parents = Parents::create(parent_of(path))
        .with_context(|| format!("creating the folder of {}", path.display()))?;
    let staging = Staging::beside(path)
        .with_context(|| format!("creating a staging folder beside {}", path.display()))?;
    let tmp = staging.path().join("comparison.parquet");
    comparison::write(rows, &tmp, meta).with_context(|| format!("writing {}", path.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    parents.keep();
    Ok(())
}
