//! The `norm_stats` table: one row per feature of each modality, the statistics a
//! normalisation was fitted with.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `dataset` | utf8 | dataset the statistics describe |
//! | `modality` | utf8 | modality (features file) |
//! | `feature` | uint32 | feature index, 0..D |
//! | `count` | uint64 | finite values seen |
//! | `mean` | float64 | mean of the finite values |
//! | `std` | float64 | population standard deviation (ddof = 0, as numpy's default) |
//! | `min`, `max` | float64 | extremes of the finite values (NaN when there were none) |
//! | `nonfinite` | uint64 | NaN and ±inf values seen (not part of the other statistics) |

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::parquet_io::{open_table, read_batches, write_table, TableSpec};
use crate::segments::column;
use crate::{Result, SchemaError, TableMeta};

/// Table name in file metadata.
pub const TABLE: &str = "norm_stats";
/// Schema version.
pub const VERSION: u32 = 1;

/// Statistics of one feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureStats {
    /// Finite values seen.
    pub count: u64,
    /// Mean of the finite values.
    pub mean: f64,
    /// Population standard deviation of the finite values.
    pub std: f64,
    /// Smallest finite value.
    pub min: f64,
    /// Largest finite value.
    pub max: f64,
    /// Non-finite values seen.
    pub nonfinite: u64,
}

/// The statistics of one modality of one dataset: one entry per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct ModalityStats {
    /// Dataset name.
    pub dataset: String,
    /// Modality name.
    pub modality: String,
    /// One entry per feature, in feature order.
    pub features: Vec<FeatureStats>,
}

/// A whole norm_stats table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NormStatsTable {
    /// One entry per modality.
    pub modalities: Vec<ModalityStats>,
}

impl NormStatsTable {
    /// The Arrow schema.
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("dataset", DataType::Utf8, false),
            Field::new("modality", DataType::Utf8, false),
            Field::new("feature", DataType::UInt32, false),
            Field::new("count", DataType::UInt64, false),
            Field::new("mean", DataType::Float64, false),
            Field::new("std", DataType::Float64, false),
            Field::new("min", DataType::Float64, false),
            Field::new("max", DataType::Float64, false),
            Field::new("nonfinite", DataType::UInt64, false),
        ]))
    }

    /// The statistics of a modality, by name.
    pub fn modality(&self, name: &str) -> Option<&ModalityStats> {
        self.modalities.iter().find(|m| m.modality == name)
    }

    /// Writes the table; returns the row count.
    pub fn write(&self, path: &Path, meta: &TableMeta) -> Result<u64> {
        let rows = || {
            self.modalities
                .iter()
                .flat_map(|m| m.features.iter().enumerate().map(move |(i, f)| (m, i, f)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows().map(|(m, _, _)| &m.dataset),
            )),
            Arc::new(StringArray::from_iter_values(
                rows().map(|(m, _, _)| &m.modality),
            )),
            Arc::new(UInt32Array::from_iter_values(
                rows().map(|(_, i, _)| i as u32),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows().map(|(_, _, f)| f.count),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows().map(|(_, _, f)| f.mean),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows().map(|(_, _, f)| f.std),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows().map(|(_, _, f)| f.min),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows().map(|(_, _, f)| f.max),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows().map(|(_, _, f)| f.nonfinite),
            )),
        ];
        write_table(
            path,
            TableSpec::dictionary(TABLE, VERSION),
            Self::schema(),
            columns,
            meta,
            &[],
        )
    }

    /// Reads a table written by [`NormStatsTable::write`]. Rows of one modality must be
    /// contiguous and numbered 0..D.
    pub fn read(path: &Path) -> Result<NormStatsTable> {
        let (builder, _) = open_table(path, TABLE, VERSION)?;
        let mut table = NormStatsTable::default();
        for batch in read_batches(path, builder)? {
            let dataset = column::<StringArray>(path, &batch, "dataset")?;
            let modality = column::<StringArray>(path, &batch, "modality")?;
            let feature = column::<UInt32Array>(path, &batch, "feature")?;
            let count = column::<UInt64Array>(path, &batch, "count")?;
            let nonfinite = column::<UInt64Array>(path, &batch, "nonfinite")?;
            let f64col = |n: &str| column::<Float64Array>(path, &batch, n);
            let (mean, std, min, max) = (
                f64col("mean")?,
                f64col("std")?,
                f64col("min")?,
                f64col("max")?,
            );
            for i in 0..batch.num_rows() {
                let name = modality.value(i);
                let starts_new = table.modalities.last().is_none_or(|m| m.modality != name);
                if starts_new {
                    table.modalities.push(ModalityStats {
                        dataset: dataset.value(i).to_string(),
                        modality: name.to_string(),
                        features: Vec::new(),
                    });
                }
                let current = table.modalities.last_mut().expect("pushed above");
                if feature.value(i) as usize != current.features.len() {
                    return Err(SchemaError::column(
                        path,
                        "feature",
                        format!("modality `{name}`: features are not numbered 0..D in order"),
                    ));
                }
                current.features.push(FeatureStats {
                    count: count.value(i),
                    mean: mean.value(i),
                    std: std.value(i),
                    min: min.value(i),
                    max: max.value(i),
                    nonfinite: nonfinite.value(i),
                });
            }
        }
        Ok(table)
    }
}
