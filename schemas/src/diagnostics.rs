//! The `diagnostics` table: named quality measures of a stage's result, one per row (long
//! format, so any measure can be added without a schema change).
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `method` | utf8 | the method or variant measured (e.g. `kmeans`) |
//! | `subject` | utf8 | what is measured (a modality, `matching`, …) |
//! | `metric` | utf8 | the measure's name (e.g. `label_agreement`, `inertia`) |
//! | `value` | float64 | its value |
//! | `n` | uint64, nullable | how many samples it is computed on |
//! | `ci_low`, `ci_high` | float64, nullable | a 95% confidence interval, when one applies |
//! | `note` | utf8, nullable | how to read it, or a warning |

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::parquet_io::{open_table, read_batches, write_table, TableSpec};
use crate::segments::column;
use crate::{Result, TableMeta};

/// Table name in file metadata.
pub const TABLE: &str = "diagnostics";
/// Schema version.
pub const VERSION: u32 = 1;

/// One measure.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Method or variant.
    pub method: String,
    /// What is measured.
    pub subject: String,
    /// Measure name.
    pub metric: String,
    /// Value.
    pub value: f64,
    /// Sample count.
    pub n: Option<u64>,
    /// 95% CI lower bound.
    pub ci_low: Option<f64>,
    /// 95% CI upper bound.
    pub ci_high: Option<f64>,
    /// How to read it, or a warning.
    pub note: Option<String>,
}

impl Diagnostic {
    /// A plain value.
    pub fn new(method: &str, subject: &str, metric: &str, value: f64) -> Self {
        Diagnostic {
            method: method.to_string(),
            subject: subject.to_string(),
            metric: metric.to_string(),
            value,
            n: None,
            ci_low: None,
            ci_high: None,
            note: None,
        }
    }

    /// With a sample count.
    pub fn with_n(mut self, n: usize) -> Self {
        self.n = Some(n as u64);
        self
    }

    /// With a confidence interval.
    pub fn with_ci(mut self, (low, high): (f64, f64)) -> Self {
        self.ci_low = Some(low);
        self.ci_high = Some(high);
        self
    }

    /// With a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// The Arrow schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("method", DataType::Utf8, false),
        Field::new("subject", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("n", DataType::UInt64, true),
        Field::new("ci_low", DataType::Float64, true),
        Field::new("ci_high", DataType::Float64, true),
        Field::new("note", DataType::Utf8, true),
    ]))
}

/// Writes diagnostics; returns the row count.
pub fn write(rows: &[Diagnostic], path: &Path, meta: &TableMeta) -> Result<u64> {
    let text = |f: fn(&Diagnostic) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        text(|d| &d.method),
        text(|d| &d.subject),
        text(|d| &d.metric),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|d| d.value))),
        Arc::new(UInt64Array::from_iter(rows.iter().map(|d| d.n))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|d| d.ci_low))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|d| d.ci_high))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|d| d.note.as_deref()),
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

/// Reads a diagnostics table.
pub fn read(path: &Path) -> Result<Vec<Diagnostic>> {
    let (builder, _) = open_table(path, TABLE, VERSION)?;
    let mut rows = Vec::new();
    for batch in read_batches(path, builder)? {
        let text = |n: &str| column::<StringArray>(path, &batch, n);
        let (method, subject, metric, note) = (
            text("method")?,
            text("subject")?,
            text("metric")?,
            text("note")?,
        );
        let value = column::<Float64Array>(path, &batch, "value")?;
        let n = column::<UInt64Array>(path, &batch, "n")?;
        let (lo, hi) = (
            column::<Float64Array>(path, &batch, "ci_low")?,
            column::<Float64Array>(path, &batch, "ci_high")?,
        );
        for i in 0..batch.num_rows() {
            rows.push(Diagnostic {
                method: method.value(i).to_string(),
                subject: subject.value(i).to_string(),
                metric: metric.value(i).to_string(),
                value: value.value(i),
                n: n.is_valid(i).then(|| n.value(i)),
                ci_low: lo.is_valid(i).then(|| lo.value(i)),
                ci_high: hi.is_valid(i).then(|| hi.value(i)),
                note: note.is_valid(i).then(|| note.value(i).to_string()),
            });
        }
    }
    Ok(rows)
}
