//! The `predictions` and `metrics` tables an evaluation writes.
//!
//! **predictions** — one row per segment × head:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `segment_id` | utf8 | the segment |
//! | `split` | utf8 | its split |
//! | `head` | utf8 | the predicted label (`sentiment`, `valence`, …) |
//! | `label` | float32, nullable | the true value, when known |
//! | `prediction` | float32 | the model's output |
//! | `calibrated` | float32, nullable | after the linear calibration fitted on the validation split, when asked for |
//!
//! **metrics** — one row per split × head × metric:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `split` | utf8 | `train`, `valid`, `test` |
//! | `head` | utf8 | the head |
//! | `metric` | utf8 | `Has0_acc_2`, `Corr`, `MAE`, `CCC`, … (`*_calibrated` for calibrated predictions) |
//! | `value` | float64 | the metric on all the split's segments |
//! | `ci_low`, `ci_high` | float64, nullable | percentile-bootstrap 95% interval |
//! | `n` | uint64 | segments it is computed on |
//! | `seed` | uint64 | seed of the bootstrap resampling |
//! | `note` | utf8, nullable | a flag raised on this metric (collapsed predictions, sign inversion, small split, …) |

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float32Array, Float64Array, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::parquet_io::{open_table, read_batches, write_table, TableSpec};
use crate::segments::column;
use crate::{Result, SchemaError, Split, TableMeta};

/// Table name of predictions.
pub const PREDICTIONS: &str = "predictions";
/// Table name of metrics.
pub const METRICS: &str = "metrics";
/// Schema version of both.
pub const VERSION: u32 = 1;

/// One prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Segment.
    pub segment_id: String,
    /// Split.
    pub split: Split,
    /// Head.
    pub head: String,
    /// True value.
    pub label: Option<f32>,
    /// Model output.
    pub prediction: f32,
    /// Calibrated output.
    pub calibrated: Option<f32>,
}

/// One metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// Split.
    pub split: Split,
    /// Head.
    pub head: String,
    /// Metric name.
    pub metric: String,
    /// Value.
    pub value: f64,
    /// 95% CI lower bound.
    pub ci_low: Option<f64>,
    /// 95% CI upper bound.
    pub ci_high: Option<f64>,
    /// Sample count.
    pub n: u64,
    /// Bootstrap seed.
    pub seed: u64,
    /// A flag raised on this metric.
    pub note: Option<String>,
}

fn predictions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("segment_id", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("head", DataType::Utf8, false),
        Field::new("label", DataType::Float32, true),
        Field::new("prediction", DataType::Float32, false),
        Field::new("calibrated", DataType::Float32, true),
    ]))
}

fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("split", DataType::Utf8, false),
        Field::new("head", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("ci_low", DataType::Float64, true),
        Field::new("ci_high", DataType::Float64, true),
        Field::new("n", DataType::UInt64, false),
        Field::new("seed", DataType::UInt64, false),
        Field::new("note", DataType::Utf8, true),
    ]))
}

/// Writes predictions; returns the row count.
pub fn write_predictions(rows: &[Prediction], path: &Path, meta: &TableMeta) -> Result<u64> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.segment_id),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.split.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.head))),
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.label))),
        Arc::new(Float32Array::from_iter_values(
            rows.iter().map(|r| r.prediction),
        )),
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.calibrated))),
    ];
    write_table(
        path,
        TableSpec::dictionary(PREDICTIONS, VERSION),
        predictions_schema(),
        columns,
        meta,
        &[],
    )
}

/// Reads predictions.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let (builder, _) = open_table(path, PREDICTIONS, VERSION)?;
    let mut rows = Vec::new();
    for batch in read_batches(path, builder)? {
        let text = |n: &str| column::<StringArray>(path, &batch, n);
        let (ids, splits, heads) = (text("segment_id")?, text("split")?, text("head")?);
        let f32s = |n: &str| column::<Float32Array>(path, &batch, n);
        let (label, prediction, calibrated) =
            (f32s("label")?, f32s("prediction")?, f32s("calibrated")?);
        for i in 0..batch.num_rows() {
            rows.push(Prediction {
                segment_id: ids.value(i).to_string(),
                split: Split::parse(splits.value(i)).ok_or_else(|| {
                    SchemaError::column(
                        path,
                        "split",
                        format!("unknown split `{}`", splits.value(i)),
                    )
                })?,
                head: heads.value(i).to_string(),
                label: label.is_valid(i).then(|| label.value(i)),
                prediction: prediction.value(i),
                calibrated: calibrated.is_valid(i).then(|| calibrated.value(i)),
            });
        }
    }
    Ok(rows)
}

/// Writes metrics; returns the row count.
pub fn write_metrics(rows: &[MetricRow], path: &Path, meta: &TableMeta) -> Result<u64> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.split.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.head))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.metric),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.ci_low))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.ci_high))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.n))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.seed))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.note.as_deref()),
        )),
    ];
    write_table(
        path,
        TableSpec::dictionary(METRICS, VERSION),
        metrics_schema(),
        columns,
        meta,
        &[],
    )
}

/// Reads metrics.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>> {
    let (builder, _) = open_table(path, METRICS, VERSION)?;
    let mut rows = Vec::new();
    for batch in read_batches(path, builder)? {
        let text = |n: &str| column::<StringArray>(path, &batch, n);
        let (splits, heads, metrics, notes) = (
            text("split")?,
            text("head")?,
            text("metric")?,
            text("note")?,
        );
        let f64s = |n: &str| column::<Float64Array>(path, &batch, n);
        let (value, lo, hi) = (f64s("value")?, f64s("ci_low")?, f64s("ci_high")?);
        let (n, seed) = (
            column::<UInt64Array>(path, &batch, "n")?,
            column::<UInt64Array>(path, &batch, "seed")?,
        );
        for i in 0..batch.num_rows() {
            rows.push(MetricRow {
                split: Split::parse(splits.value(i)).ok_or_else(|| {
                    SchemaError::column(
                        path,
                        "split",
                        format!("unknown split `{}`", splits.value(i)),
                    )
                })?,
                head: heads.value(i).to_string(),
                metric: metrics.value(i).to_string(),
                value: value.value(i),
                ci_low: lo.is_valid(i).then(|| lo.value(i)),
                ci_high: hi.is_valid(i).then(|| hi.value(i)),
                n: n.value(i),
                seed: seed.value(i),
                note: notes.is_valid(i).then(|| notes.value(i).to_string()),
            });
        }
    }
    Ok(rows)
}
