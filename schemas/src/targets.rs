//! The `targets` table: for each source segment, the target-space vector an adapter for one
//! modality should produce (one file per adapted modality).
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `segment_id` | utf8 | the source segment |
//! | `split` | utf8 | the source segment's split |
//! | `method` | utf8 | `random`, `kmeans` or `cosine` |
//! | `matched` | `list<utf8>` | target segments the vector was taken from (top-k, the random pick, or the cluster member) |
//! | `cluster` | int32, nullable | k-means cluster |
//! | `similarity` | float32, nullable | cosine similarity to the match in the matching space |
//! | `distance` | float32, nullable | Euclidean distance to the centroid in the matching space (k-means) |
//! | `source_label` | float32, nullable | the source segment's label |
//! | `target_label` | float32, nullable | the label of the match (mean over several) |
//! | `target` | fixed_size_list<float32, D> | the target vector, in the target dataset's space |
//!
//! Metadata: `mmflow.modality`, `mmflow.dim`, `mmflow.method`, `mmflow.source_dataset`,
//! `mmflow.target_dataset`.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, ListArray, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::features::{vector_values, vectors_array};
use crate::parquet_io::{open_table, read_batches, write_table, TableSpec};
use crate::segments::column;
use crate::{Result, SchemaError, Split, TableMeta};

/// Table name in file metadata.
pub const TABLE: &str = "targets";
/// Schema version.
pub const VERSION: u32 = 1;

/// What a targets file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// The adapted modality.
    pub modality: String,
    /// Width of the target vectors.
    pub dim: usize,
    /// Selection method.
    pub method: String,
    /// Source dataset.
    pub source_dataset: String,
    /// Target dataset.
    pub target_dataset: String,
}

/// One source segment's target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRow {
    /// Source segment.
    pub segment_id: String,
    /// Its split.
    pub split: Split,
    /// Target segments used.
    pub matched: Vec<String>,
    /// K-means cluster.
    pub cluster: Option<i32>,
    /// Cosine similarity in the matching space.
    pub similarity: Option<f32>,
    /// Distance to the centroid in the matching space.
    pub distance: Option<f32>,
    /// The source segment's label.
    pub source_label: Option<f32>,
    /// The match's label.
    pub target_label: Option<f32>,
}

/// A whole targets table.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetTable {
    /// What it holds.
    pub info: TargetInfo,
    /// One row per source segment.
    pub rows: Vec<TargetRow>,
    /// The target vectors, row-major, `rows.len() × dim`.
    pub vectors: Vec<f32>,
}

impl TargetTable {
    /// The Arrow schema for target vectors of width `dim`.
    pub fn schema(dim: usize) -> SchemaRef {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        Arc::new(Schema::new(vec![
            Field::new("segment_id", DataType::Utf8, false),
            Field::new("split", DataType::Utf8, false),
            Field::new("method", DataType::Utf8, false),
            Field::new(
                "matched",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            ),
            Field::new("cluster", DataType::Int32, true),
            Field::new("similarity", DataType::Float32, true),
            Field::new("distance", DataType::Float32, true),
            Field::new("source_label", DataType::Float32, true),
            Field::new("target_label", DataType::Float32, true),
            Field::new("target", DataType::FixedSizeList(item, dim as i32), false),
        ]))
    }

    /// The target vector of row `i`.
    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.info.dim..(i + 1) * self.info.dim]
    }

    /// Writes the table; returns the row count.
    pub fn write(&self, path: &Path, meta: &TableMeta) -> Result<u64> {
        if self.vectors.len() != self.rows.len() * self.info.dim {
            return Err(SchemaError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "{} target values for {} rows of width {}",
                    self.vectors.len(),
                    self.rows.len(),
                    self.info.dim
                ),
            });
        }
        let schema = Self::schema(self.info.dim);
        let mut matched = ListBuilder::new(StringBuilder::new());
        for r in &self.rows {
            for m in &r.matched {
                matched.values().append_value(m);
            }
            matched.append(true);
        }
        let f32s = |f: fn(&TargetRow) -> Option<f32>| -> ArrayRef {
            Arc::new(Float32Array::from_iter(self.rows.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                self.rows.iter().map(|r| &r.segment_id),
            )),
            Arc::new(StringArray::from_iter_values(
                self.rows.iter().map(|r| r.split.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                self.rows.iter().map(|_| &self.info.method),
            )),
            Arc::new(matched.finish()),
            Arc::new(Int32Array::from_iter(self.rows.iter().map(|r| r.cluster))),
            f32s(|r| r.similarity),
            f32s(|r| r.distance),
            f32s(|r| r.source_label),
            f32s(|r| r.target_label),
            Arc::new(vectors_array(self.vectors.clone(), self.info.dim)),
        ];
        write_table(
            path,
            TableSpec::dictionary(TABLE, VERSION),
            schema,
            columns,
            meta,
            &[
                ("mmflow.modality", self.info.modality.clone()),
                ("mmflow.dim", self.info.dim.to_string()),
                ("mmflow.method", self.info.method.clone()),
                ("mmflow.source_dataset", self.info.source_dataset.clone()),
                ("mmflow.target_dataset", self.info.target_dataset.clone()),
            ],
        )
    }

    /// Reads a table written by [`TargetTable::write`].
    pub fn read(path: &Path) -> Result<TargetTable> {
        let (builder, meta) = open_table(path, TABLE, VERSION)?;
        let dim: usize = meta
            .get(path, "mmflow.dim")?
            .parse()
            .map_err(|_| SchemaError::format(path, "metadata key `mmflow.dim` is not a number"))?;
        let info = TargetInfo {
            modality: meta.get(path, "mmflow.modality")?.to_string(),
            dim,
            method: meta.get(path, "mmflow.method")?.to_string(),
            source_dataset: meta.get(path, "mmflow.source_dataset")?.to_string(),
            target_dataset: meta.get(path, "mmflow.target_dataset")?.to_string(),
        };
        let mut table = TargetTable {
            info,
            rows: Vec::new(),
            vectors: Vec::new(),
        };
        for batch in read_batches(path, builder)? {
            let ids = column::<StringArray>(path, &batch, "segment_id")?;
            let splits = column::<StringArray>(path, &batch, "split")?;
            let matched = column::<ListArray>(path, &batch, "matched")?;
            let cluster = column::<Int32Array>(path, &batch, "cluster")?;
            let f32col = |n: &str| column::<Float32Array>(path, &batch, n);
            let (similarity, distance, source_label, target_label) = (
                f32col("similarity")?,
                f32col("distance")?,
                f32col("source_label")?,
                f32col("target_label")?,
            );
            let vectors = column::<FixedSizeListArray>(path, &batch, "target")?;
            if vectors.value_length() as usize != dim {
                return Err(SchemaError::column(
                    path,
                    "target",
                    format!(
                        "vectors of width {} in a table declared {dim} wide",
                        vectors.value_length()
                    ),
                ));
            }
            table.vectors.extend_from_slice(vector_values(
                path,
                "target",
                vectors,
                0,
                batch.num_rows(),
            )?);
            let opt = |a: &Float32Array, i: usize| a.is_valid(i).then(|| a.value(i));
            for i in 0..batch.num_rows() {
                let split = Split::parse(splits.value(i)).ok_or_else(|| {
                    SchemaError::column(
                        path,
                        "split",
                        format!("unknown split `{}`", splits.value(i)),
                    )
                })?;
                let m = matched.value(i);
                let m = m
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| SchemaError::column(path, "matched", "items are not strings"))?;
                table.rows.push(TargetRow {
                    segment_id: ids.value(i).to_string(),
                    split,
                    matched: m.iter().flatten().map(str::to_string).collect(),
                    cluster: cluster.is_valid(i).then(|| cluster.value(i)),
                    similarity: opt(similarity, i),
                    distance: opt(distance, i),
                    source_label: opt(source_label, i),
                    target_label: opt(target_label, i),
                });
            }
        }
        Ok(table)
    }
}
