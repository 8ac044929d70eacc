//! The `comparison` table written by `mmflow compare`: runs (grouped over seeds) side by side,
//! one row per (group, head, metric).
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `group` | uint32 | the group's position in the comparison (0 = the base) |
//! | `runs` | utf8 | the run directories in the group, comma-separated |
//! | `stage` | utf8 | the evaluate stage the metrics come from |
//! | `params` | utf8 | the settings that differ between groups, `key=value; …` |
//! | `seeds` | uint32 | runs (seeds) in the group |
//! | `split`, `head`, `metric` | utf8 | what is compared |
//! | `mean` | float64 | mean over the group's runs |
//! | `std` | float64, nullable | sample standard deviation over seeds (≥ 2 runs) |
//! | `ci_low`, `ci_high` | float64, nullable | the bootstrap CI (single-run groups) |
//! | `delta` | float64 | `mean` − the base group's `mean` |
//! | `within_noise` | bool | the change from the base is within seed noise (or the CIs overlap) |
//! | `is_best` | bool | best group for this metric |

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::parquet_io::{write_table, TableSpec};
use crate::{Result, TableMeta};

/// Table name in file metadata.
pub const TABLE: &str = "comparison";
/// Schema version.
pub const VERSION: u32 = 1;

/// One compared metric of one group (also `mmflow compare --json`'s rows, by these names).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ComparisonRow {
    /// Position of the group (0 = base).
    pub group: u32,
    /// Run directories of the group.
    pub runs: String,
    /// Evaluate stage.
    pub stage: String,
    /// Differing settings.
    pub params: String,
    /// Runs in the group.
    pub seeds: u32,
    /// Split.
    pub split: String,
    /// Head.
    pub head: String,
    /// Metric.
    pub metric: String,
    /// Mean over runs.
    pub mean: f64,
    /// Standard deviation over runs.
    pub std: Option<f64>,
    /// Bootstrap CI lower bound (single runs).
    pub ci_low: Option<f64>,
    /// Bootstrap CI upper bound (single runs).
    pub ci_high: Option<f64>,
    /// Change from the base group.
    pub delta: f64,
    /// The change is within seed noise.
    pub within_noise: bool,
    /// Best group for this metric.
    pub is_best: bool,
}

fn schema() -> SchemaRef {
    let text = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        Field::new("group", DataType::UInt32, false),
        text("runs"),
        text("stage"),
        text("params"),
        Field::new("seeds", DataType::UInt32, false),
        text("split"),
        text("head"),
        text("metric"),
        Field::new("mean", DataType::Float64, false),
        Field::new("std", DataType::Float64, true),
        Field::new("ci_low", DataType::Float64, true),
        Field::new("ci_high", DataType::Float64, true),
        Field::new("delta", DataType::Float64, false),
        Field::new("within_noise", DataType::Boolean, false),
        Field::new("is_best", DataType::Boolean, false),
    ]))
}

/// Writes a comparison; returns the row count.
pub fn write(rows: &[ComparisonRow], path: &Path, meta: &TableMeta) -> Result<u64> {
    let text = |f: fn(&ComparisonRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let float = |f: fn(&ComparisonRow) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.group))),
        text(|r| &r.runs),
        text(|r| &r.stage),
        text(|r| &r.params),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.seeds))),
        text(|r| &r.split),
        text(|r| &r.head),
        text(|r| &r.metric),
        float(|r| Some(r.mean)),
        float(|r| r.std),
        float(|r| r.ci_low),
        float(|r| r.ci_high),
        float(|r| Some(r.delta)),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.within_noise)),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.is_best)),
        )),
    ];
    write_table(
        path,
        TableSpec::dictionary(TABLE, VERSION),
        schema(),
        columns,
        meta,
        &[],
    )
}
