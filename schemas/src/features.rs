//! The `features` table: one file per modality, one row per segment.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `segment_id` | utf8 | joins the segments table |
//! | `length` | int32 | number of frames (time steps) of the sequence |
//! | `frames` | list<fixed_size_list<float32, D>> | the sequence, one D-vector per step |
//! | `pooled` | fixed_size_list<float32, D> | mean over the steps (f64 accumulation) |
//! | `intervals` | list<fixed_size_list<float64, 2>>, nullable | `[start, end]` of each step in seconds, when known |
//!
//! Metadata: `mmflow.dataset`, `mmflow.modality`, `mmflow.dim` (= D).
//!
//! Files are written one row group per batch, so a writer's memory is bounded by the batch
//! it is given, and a reader can stream batches back in the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int32Array, ListArray,
    RecordBatch, StringArray,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

use rayon::prelude::*;

use crate::guard::CheckedFile;
use crate::parquet_io::{open_table_parts, FileMeta, TableSpec, TableWriter};
use crate::segments::column;
use crate::{Result, SchemaError, TableMeta};

/// Table name in file metadata.
pub const TABLE: &str = "features";
/// Schema version.
pub const VERSION: u32 = 1;
const KEY_DATASET: &str = "mmflow.dataset";
const KEY_MODALITY: &str = "mmflow.modality";
const KEY_DIM: &str = "mmflow.dim";

/// The widest feature vector a table can hold: Arrow `FixedSizeList` sizes are i32.
pub const MAX_DIM: usize = i32::MAX as usize;

/// What a features file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureInfo {
    /// Dataset name.
    pub dataset: String,
    /// Modality name (`text`, `audio`, `visual`, or the source's own key).
    pub modality: String,
    /// Feature width D.
    pub dim: usize,
}

/// A batch of segments' feature sequences, stored flat: the frames of segment `i` are rows
/// `offsets[i]..offsets[i + 1]` of the row-major `frames` matrix (each row `dim` wide).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureBatch {
    /// Feature width D.
    pub dim: usize,
    /// Segment ids, one per segment.
    pub segment_ids: Vec<String>,
    /// Frame offsets, `len() + 1` entries, starting at 0.
    pub offsets: Vec<usize>,
    /// All frames, row-major, `offsets[len()] * dim` values.
    pub frames: Vec<f32>,
    /// One pooled vector per segment, row-major, `len() * dim` values.
    pub pooled: Vec<f32>,
    /// `[start, end]` of every frame (2 values per frame), when every segment has them.
    pub intervals: Option<Vec<f64>>,
}

impl FeatureBatch {
    /// An empty batch of width `dim`.
    pub fn new(dim: usize) -> Self {
        FeatureBatch {
            dim,
            segment_ids: Vec::new(),
            offsets: vec![0],
            frames: Vec::new(),
            pooled: Vec::new(),
            intervals: None,
        }
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.segment_ids.len()
    }

    /// True when the batch holds no segment.
    pub fn is_empty(&self) -> bool {
        self.segment_ids.is_empty()
    }

    /// Total number of frames over all segments.
    pub fn total_frames(&self) -> usize {
        self.offsets[self.len()]
    }

    /// Number of frames of segment `i`.
    pub fn length(&self, i: usize) -> usize {
        self.offsets[i + 1] - self.offsets[i]
    }

    /// The frames of segment `i`, row-major.
    pub fn frames_of(&self, i: usize) -> &[f32] {
        &self.frames[self.offsets[i] * self.dim..self.offsets[i + 1] * self.dim]
    }

    /// The pooled vector of segment `i`.
    pub fn pooled_of(&self, i: usize) -> &[f32] {
        &self.pooled[i * self.dim..(i + 1) * self.dim]
    }

    /// The `[start, end]` intervals of segment `i`'s frames, when known.
    pub fn intervals_of(&self, i: usize) -> Option<&[f64]> {
        self.intervals
            .as_ref()
            .map(|v| &v[self.offsets[i] * 2..self.offsets[i + 1] * 2])
    }

    /// Appends a segment; its pooled vector is the mean of its frames (NaN when it has none).
    pub fn push(&mut self, segment_id: String, frames: &[f32]) {
        self.intervals = None;
        let start = self.pooled.len();
        self.pooled.resize(start + self.dim, 0.0);
        mean_rows(frames, self.dim, &mut self.pooled[start..]);
        self.push_frames(segment_id, frames);
    }

    /// Appends a segment with the `[start, end]` interval of each frame (2 values per frame).
    pub fn push_timed(&mut self, segment_id: String, frames: &[f32], intervals: &[f64]) {
        let timed = match self.intervals.take() {
            Some(mut v) => {
                v.extend_from_slice(intervals);
                Some(v)
            }
            None if self.is_empty() => Some(intervals.to_vec()),
            None => None,
        };
        self.push(segment_id, frames);
        self.intervals = timed;
    }

    /// Appends a segment with a pooled vector computed elsewhere.
    pub fn push_with_pooled(&mut self, segment_id: String, frames: &[f32], pooled: &[f32]) {
        debug_assert_eq!(pooled.len(), self.dim);
        self.pooled.extend_from_slice(pooled);
        self.push_frames(segment_id, frames);
    }

    fn push_frames(&mut self, segment_id: String, frames: &[f32]) {
        debug_assert_eq!(frames.len() % self.dim.max(1), 0);
        let steps = frames.len().checked_div(self.dim).unwrap_or(0);
        self.offsets.push(self.total_frames() + steps);
        self.segment_ids.push(segment_id);
        self.frames.extend_from_slice(frames);
    }

    /// Appends every segment of `other` (which must have the same width).
    pub fn append(&mut self, other: FeatureBatch) {
        debug_assert_eq!(self.dim, other.dim);
        self.intervals = match (self.is_empty(), self.intervals.take(), other.intervals) {
            (true, _, theirs) => theirs,
            (false, Some(mut ours), Some(theirs)) => {
                ours.extend(theirs);
                Some(ours)
            }
            _ => None,
        };
        let base = self.total_frames();
        self.offsets
            .extend(other.offsets[1..].iter().map(|o| o + base));
        self.segment_ids.extend(other.segment_ids);
        self.frames.extend(other.frames);
        self.pooled.extend(other.pooled);
    }

    /// `batches` one after the other, each column in one allocation of its final size.
    pub fn concat(dim: usize, batches: impl IntoIterator<Item = FeatureBatch>) -> Self {
        let mut batches: Vec<FeatureBatch> = batches.into_iter().collect();
        if batches.len() == 1 {
            return batches.remove(0);
        }
        let mut all = FeatureBatch::new(dim);
        all.frames
            .reserve_exact(batches.iter().map(|b| b.frames.len()).sum());
        all.pooled
            .reserve_exact(batches.iter().map(|b| b.pooled.len()).sum());
        for batch in batches {
            all.append(batch);
        }
        all
    }

    /// Recomputes every pooled vector as the mean of its segment's frames.
    pub fn repool(&mut self) {
        for i in 0..self.len() {
            let (a, b) = (self.offsets[i] * self.dim, self.offsets[i + 1] * self.dim);
            mean_rows(
                &self.frames[a..b],
                self.dim,
                &mut self.pooled[i * self.dim..(i + 1) * self.dim],
            );
        }
    }
}

/// Column-wise mean of a row-major matrix with f64 accumulation; NaN for zero rows.
fn mean_rows(rows: &[f32], dim: usize, out: &mut [f32]) {
    if dim == 0 {
        return;
    }
    let n = rows.len() / dim;
    if n == 0 {
        out.fill(f32::NAN);
        return;
    }
    let mut acc = vec![0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += x as f64;
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = (a / n as f64) as f32;
    }
}

fn item_field() -> FieldRef {
    Arc::new(Field::new("item", DataType::Float32, false))
}

fn vector_type(dim: usize) -> DataType {
    DataType::FixedSizeList(item_field(), dim as i32)
}

/// The Arrow schema of a features table of width `dim`.
pub fn schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("segment_id", DataType::Utf8, false),
        Field::new("length", DataType::Int32, false),
        Field::new(
            "frames",
            DataType::List(Arc::new(Field::new("item", vector_type(dim), false))),
            false,
        ),
        Field::new("pooled", vector_type(dim), false),
        Field::new("intervals", intervals_type(), true),
    ]))
}

fn interval_item() -> FieldRef {
    Arc::new(Field::new(
        "item",
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float64, false)), 2),
        false,
    ))
}

fn intervals_type() -> DataType {
    DataType::List(interval_item())
}

/// Wraps a flat row-major f32 buffer as a `FixedSizeList<f32, dim>` array (no per-element copy).
pub fn vectors_array(values: Vec<f32>, dim: usize) -> FixedSizeListArray {
    let values = Float32Array::new(ScalarBuffer::from(values), None);
    FixedSizeListArray::new(item_field(), dim as i32, Arc::new(values), None)
}

/// The f32 values of a `FixedSizeList<f32>` array's rows `start..end` (zero-copy slice).
pub fn vector_values<'a>(
    path: &Path,
    column: &str,
    array: &'a FixedSizeListArray,
    start: usize,
    end: usize,
) -> Result<&'a [f32]> {
    let values = array
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| SchemaError::column(path, column, "items are not float32"))?;
    if values.null_count() > 0 {
        return Err(SchemaError::column(path, column, "contains null values"));
    }
    let (a, b) = if start == end {
        (0, 0)
    } else {
        (array.value_offset_at(start), array.value_offset_at(end))
    };
    values
        .values()
        .get(a..b)
        .ok_or_else(|| SchemaError::column(path, column, "offsets out of range"))
}

/// Streams a features table to Parquet, one row group per batch.
pub struct FeatureWriter {
    inner: TableWriter,
    dim: usize,
    path: PathBuf,
}

impl FeatureWriter {
    /// Creates the file and writes nothing yet. The width must be one an Arrow
    /// `FixedSizeList` can have: 1 to [`MAX_DIM`].
    pub fn create(path: &Path, info: &FeatureInfo, meta: &TableMeta) -> Result<Self> {
        if info.dim == 0 || info.dim > MAX_DIM {
            return Err(SchemaError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "modality `{}` is {} features wide: a features table holds 1 to {MAX_DIM}",
                    info.modality, info.dim
                ),
            });
        }
        let inner = TableWriter::create(
            path,
            TableSpec::dense_floats(TABLE, VERSION),
            schema(info.dim),
            meta,
            &[
                (KEY_DATASET, info.dataset.clone()),
                (KEY_MODALITY, info.modality.clone()),
                (KEY_DIM, info.dim.to_string()),
            ],
        )?;
        Ok(FeatureWriter {
            inner,
            dim: info.dim,
            path: path.to_path_buf(),
        })
    }

    /// Writes one batch as one row group.
    pub fn write(&mut self, batch: FeatureBatch) -> Result<()> {
        self.append(batch)?;
        self.end_row_group()
    }

    /// Closes the row group [`FeatureWriter::append`] has been adding to.
    pub fn end_row_group(&mut self) -> Result<()> {
        self.inner.end_row_group()
    }

    /// Adds one batch to the row group being written, without copying its values: a
    /// stage that produces a row group's rows piece by piece holds the encoded pages, not
    /// the pieces. The row group ends at [`FeatureWriter::end_row_group`].
    pub fn append(&mut self, batch: FeatureBatch) -> Result<()> {
        if batch.dim != self.dim {
            return Err(SchemaError::Invalid {
                path: self.path.clone(),
                message: format!(
                    "batch of width {} for a table of width {}",
                    batch.dim, self.dim
                ),
            });
        }
        let n = batch.len();
        let too_long = || SchemaError::Invalid {
            path: self.path.clone(),
            message: format!(
                "a batch of {} frames: more than the {} one row group holds",
                batch.total_frames(),
                i32::MAX
            ),
        };
        let lengths: Vec<i32> = (0..n)
            .map(|i| i32::try_from(batch.length(i)).map_err(|_| too_long()))
            .collect::<Result<_>>()?;
        let offsets: Vec<i32> = batch
            .offsets
            .iter()
            .map(|&o| i32::try_from(o).map_err(|_| too_long()))
            .collect::<Result<_>>()?;
        let frames = ListArray::new(
            Arc::new(Field::new("item", vector_type(self.dim), false)),
            OffsetBuffer::new(ScalarBuffer::from(offsets.clone())),
            Arc::new(vectors_array(batch.frames, self.dim)),
            None,
        );
        let intervals = match batch.intervals {
            Some(v) => {
                let values = Float64Array::new(ScalarBuffer::from(v), None);
                let pairs = FixedSizeListArray::new(
                    Arc::new(Field::new("item", DataType::Float64, false)),
                    2,
                    Arc::new(values),
                    None,
                );
                ListArray::new(
                    interval_item(),
                    OffsetBuffer::new(ScalarBuffer::from(offsets.clone())),
                    Arc::new(pairs),
                    None,
                )
            }
            None => ListArray::new_null(interval_item(), n),
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(&batch.segment_ids)),
            Arc::new(Int32Array::from(lengths)),
            Arc::new(frames),
            Arc::new(vectors_array(batch.pooled, self.dim)),
            Arc::new(intervals),
        ];
        self.inner.append_columns(columns)
    }

    /// Finishes the file; returns the number of rows written.
    pub fn finish(self) -> Result<u64> {
        self.inner.finish()
    }
}

/// Reads a features table back, batch by batch (one per row group), or whole with
/// [`FeatureReader::read_all`], which decodes its row groups in parallel.
pub struct FeatureReader {
    info: FeatureInfo,
    meta: FileMeta,
    source: Source,
    /// What [`Iterator::next`] takes batches from.
    reader: ParquetRecordBatchReader,
    /// Whether [`Iterator::next`] has taken a batch.
    started: bool,
}

/// An open features file, from which readers of some or all of its row groups are built.
struct Source {
    path: PathBuf,
    file: CheckedFile,
    arrow: ArrowReaderMetadata,
    dim: usize,
    with_frames: bool,
}

impl FeatureReader {
    /// Opens a features table; the batches will carry frames and pooled vectors.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_inner(path, true)
    }

    /// Opens a features table reading only ids and pooled vectors (frames are skipped on
    /// disk, so this is much cheaper). Batches come back with every length set to 0.
    pub fn open_pooled(path: &Path) -> Result<Self> {
        Self::open_inner(path, false)
    }

    fn open_inner(path: &Path, with_frames: bool) -> Result<Self> {
        let (file, arrow, meta) = open_table_parts(path, TABLE, VERSION)?;
        let dim: usize = meta
            .get(path, KEY_DIM)?
            .parse()
            .map_err(|_| SchemaError::format(path, "metadata key `mmflow.dim` is not a number"))?;
        let info = FeatureInfo {
            dataset: meta.get(path, KEY_DATASET)?.to_string(),
            modality: meta.get(path, KEY_MODALITY)?.to_string(),
            dim,
        };
        let source = Source {
            path: path.to_path_buf(),
            file,
            arrow,
            dim,
            with_frames,
        };
        let reader = source.reader(None)?;
        Ok(FeatureReader {
            info,
            meta,
            source,
            reader,
            started: false,
        })
    }

    /// What the file holds.
    pub fn info(&self) -> &FeatureInfo {
        &self.info
    }

    /// The file's mmflow metadata.
    pub fn meta(&self) -> &FileMeta {
        &self.meta
    }

    /// Reads every remaining batch into one: the whole table, its row groups decoded in
    /// parallel, when no batch was taken yet.
    pub fn read_all(self) -> Result<FeatureBatch> {
        let dim = self.info.dim;
        if self.started {
            let mut all = FeatureBatch::new(dim);
            for batch in self {
                all.append(batch?);
            }
            return Ok(all);
        }
        let source = self.source;
        let groups: Vec<Vec<FeatureBatch>> = (0..source.arrow.metadata().num_row_groups())
            .into_par_iter()
            .map(|group| source.read_row_group(group))
            .collect::<Result<_>>()?;
        Ok(FeatureBatch::concat(dim, groups.into_iter().flatten()))
    }
}

impl Source {
    /// A reader of row groups `groups` (all of them if `None`), in batches of 256 rows.
    fn reader(&self, groups: Option<Vec<usize>>) -> Result<ParquetRecordBatchReader> {
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.file.clone(),
            self.arrow.clone(),
        );
        if !self.with_frames {
            let mask = ProjectionMask::columns(builder.parquet_schema(), ["segment_id", "pooled"]);
            builder = builder.with_projection(mask);
        }
        if let Some(groups) = groups {
            builder = builder.with_row_groups(groups);
        }
        builder
            .with_batch_size(256)
            .build()
            .map_err(|e| SchemaError::parquet(&self.path, e))
    }

    /// Row group `group`'s batches, decoded.
    fn read_row_group(&self, group: usize) -> Result<Vec<FeatureBatch>> {
        self.reader(Some(vec![group]))?
            .map(|record| {
                record
                    .map_err(|e| SchemaError::arrow(&self.path, e))
                    .and_then(|r| self.decode(r))
            })
            .collect()
    }

    fn decode(&self, record: RecordBatch) -> Result<FeatureBatch> {
        let path = &self.path;
        let dim = self.dim;
        let ids = column::<StringArray>(path, &record, "segment_id")?;
        let pooled = column::<FixedSizeListArray>(path, &record, "pooled")?;
        check_width(path, "pooled", pooled, dim)?;
        let n = record.num_rows();
        let mut batch = FeatureBatch::new(dim);
        batch.segment_ids = ids
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect();
        batch.pooled = vector_values(path, "pooled", pooled, 0, n)?.to_vec();
        if !self.with_frames {
            batch.offsets = vec![0; n + 1];
            return Ok(batch);
        }
        let lengths = column::<Int32Array>(path, &record, "length")?;
        let frames = column::<ListArray>(path, &record, "frames")?;
        if frames.null_count() > 0 {
            return Err(SchemaError::column(
                path,
                "frames",
                "contains null sequences",
            ));
        }
        let inner = frames
            .values()
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .ok_or_else(|| SchemaError::column(path, "frames", "items are not fixed-size lists"))?;
        check_width(path, "frames", inner, dim)?;
        let offsets = frames.value_offsets();
        let (first, last) = (offsets[0] as usize, offsets[n] as usize);
        batch.frames = vector_values(path, "frames", inner, first, last)?.to_vec();
        batch.offsets = offsets.iter().map(|&o| o as usize - first).collect();
        batch.intervals = decode_intervals(path, &record, &batch)?;
        for i in 0..n {
            if lengths.value(i) as usize != batch.length(i) {
                return Err(SchemaError::column(
                    path,
                    "length",
                    format!(
                        "segment `{}`: length {} but {} frames",
                        batch.segment_ids[i],
                        lengths.value(i),
                        batch.length(i)
                    ),
                ));
            }
        }
        Ok(batch)
    }
}

/// The `intervals` column: None when every row is null (or the column is absent).
fn decode_intervals(
    path: &Path,
    record: &RecordBatch,
    batch: &FeatureBatch,
) -> Result<Option<Vec<f64>>> {
    let Some(column) = record.column_by_name("intervals") else {
        return Ok(None);
    };
    let list = column
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| SchemaError::column(path, "intervals", "not a list column"))?;
    if list.null_count() == list.len() {
        return Ok(None);
    }
    if list.null_count() > 0 {
        return Err(SchemaError::column(
            path,
            "intervals",
            "some rows have intervals and some do not",
        ));
    }
    let pairs = list
        .values()
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .ok_or_else(|| {
            SchemaError::column(path, "intervals", "items are not [start, end] pairs")
        })?;
    let values = pairs
        .values()
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| SchemaError::column(path, "intervals", "items are not float64"))?;
    let offsets = list.value_offsets();
    for i in 0..batch.len() {
        if (offsets[i + 1] - offsets[i]) as usize != batch.length(i) {
            return Err(SchemaError::column(
                path,
                "intervals",
                format!(
                    "segment `{}`: {} intervals for {} frames",
                    batch.segment_ids[i],
                    offsets[i + 1] - offsets[i],
                    batch.length(i)
                ),
            ));
        }
    }
    let (a, b) = (
        pairs.value_offset_at(offsets[0] as usize),
        pairs.value_offset_at(offsets[batch.len()] as usize),
    );
    values
        .values()
        .get(a..b)
        .map(|s| Some(s.to_vec()))
        .ok_or_else(|| SchemaError::column(path, "intervals", "offsets out of range"))
}

fn check_width(path: &Path, column: &str, array: &FixedSizeListArray, dim: usize) -> Result<()> {
    if array.value_length() as usize != dim {
        return Err(SchemaError::column(
            path,
            column,
            format!(
                "vectors of width {} in a table declared {dim} wide",
                array.value_length()
            ),
        ));
    }
    Ok(())
}

impl Iterator for FeatureReader {
    type Item = Result<FeatureBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.started = true;
        let record = self.reader.next()?;
        Some(
            record
                .map_err(|e| SchemaError::arrow(&self.source.path, e))
                .and_then(|r| self.source.decode(r)),
        )
    }
}
