//! The `history` table: what training did, epoch by epoch — one row per (phase, epoch,
//! subject, metric), train and validation side by side.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `phase` | utf8 | training phase (`train`, or a fine-tuning phase's name) |
//! | `epoch` | uint32 | epoch within the phase, from 1 |
//! | `lr` | float64 | learning rate used in the epoch |
//! | `subject` | utf8 | `total` (the loss optimised), a head (`sentiment`, `valence`…) or an adapted modality |
//! | `metric` | utf8 | `loss`, `mae`, `corr`, `ccc`, `rmse`, … |
//! | `train` | float64, nullable | on the training split (loss: mean over the epoch's batches) |
//! | `valid` | float64, nullable | on the validation split |
//! | `gap` | float64, nullable | `train − valid` |
//! | `is_best` | bool | the epoch whose weights were kept |

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::parquet_io::{open_table, read_batches, write_table, TableSpec};
use crate::segments::column;
use crate::{Result, TableMeta};

/// Table name in file metadata.
pub const TABLE: &str = "history";
/// Schema version.
pub const VERSION: u32 = 1;

/// One row.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// Phase name.
    pub phase: String,
    /// Epoch within the phase (from 1).
    pub epoch: u32,
    /// Learning rate.
    pub lr: f64,
    /// What is measured.
    pub subject: String,
    /// Measure name.
    pub metric: String,
    /// Training-split value.
    pub train: Option<f64>,
    /// Validation-split value.
    pub valid: Option<f64>,
    /// Whether this epoch's weights were kept.
    pub is_best: bool,
}

/// The Arrow schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("phase", DataType::Utf8, false),
        Field::new("epoch", DataType::UInt32, false),
        Field::new("lr", DataType::Float64, false),
        Field::new("subject", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("train", DataType::Float64, true),
        Field::new("valid", DataType::Float64, true),
        Field::new("gap", DataType::Float64, true),
        Field::new("is_best", DataType::Boolean, false),
    ]))
}

/// Writes a history; returns the row count.
pub fn write(rows: &[HistoryRow], path: &Path, meta: &TableMeta) -> Result<u64> {
    let text = |f: fn(&HistoryRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        text(|r| &r.phase),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.epoch))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.lr))),
        text(|r| &r.subject),
        text(|r| &r.metric),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.train))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.valid))),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| Some(r.train? - r.valid?)),
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

/// Reads a history.
pub fn read(path: &Path) -> Result<Vec<HistoryRow>> {
    let (builder, _) = open_table(path, TABLE, VERSION)?;
    let mut rows = Vec::new();
    for batch in read_batches(path, builder)? {
        let text = |n: &str| column::<StringArray>(path, &batch, n);
        let (phase, subject, metric) = (text("phase")?, text("subject")?, text("metric")?);
        let epoch = column::<UInt32Array>(path, &batch, "epoch")?;
        let lr = column::<Float64Array>(path, &batch, "lr")?;
        let (train, valid) = (
            column::<Float64Array>(path, &batch, "train")?,
            column::<Float64Array>(path, &batch, "valid")?,
        );
        let best = column::<BooleanArray>(path, &batch, "is_best")?;
        for i in 0..batch.num_rows() {
            rows.push(HistoryRow {
                phase: phase.value(i).to_string(),
                epoch: epoch.value(i),
                lr: lr.value(i),
                subject: subject.value(i).to_string(),
                metric: metric.value(i).to_string(),
                train: train.is_valid(i).then(|| train.value(i)),
                valid: valid.is_valid(i).then(|| valid.value(i)),
                is_best: best.value(i),
            });
        }
    }
    Ok(rows)
}
