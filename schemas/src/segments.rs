//! The `segments` table: one row per segment (the unit a label is attached to).
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `dataset` | utf8 | dataset name (`mosi`, `mosei`, …) |
//! | `video_id` | utf8 | source video (or, for text corpora, the user/document) |
//! | `segment_id` | utf8 | `<video>[<i>]`, the CMU SDK convention; unique in the table |
//! | `split` | utf8 | `train`, `valid` or `test` |
//! | `speaker_id` | utf8, nullable | speaker or user |
//! | `start`, `end` | float64, nullable | segment interval in seconds |
//! | one column per label | float32, nullable | e.g. `sentiment` in [-3, 3], emotions in [0, 3] |
//! | `text` | utf8, nullable, optional | the segment's transcript, when the source has one |
//!
//! The label columns are listed, in order, comma-separated, under the metadata key
//! `mmflow.labels`; label names therefore hold no comma (see [`label_name_problems`]).
//!
//! The `text` column is written only when some segment has text (MMSA's `raw_text`, a CSV
//! label file's text column), after the label columns; a table without it reads back with no text
//! for any segment, so tables written before the column existed read as they did.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float32Array, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::parquet_io::{open_table, read_batches, write_table, TableSpec};
use crate::{Result, SchemaError, Split, TableMeta};

/// Table name in file metadata.
pub const TABLE: &str = "segments";
/// Schema version.
pub const VERSION: u32 = 1;
/// Metadata key listing the label columns.
pub const KEY_LABELS: &str = "mmflow.labels";
/// The optional column holding each segment's transcript.
pub const TEXT: &str = "text";

const FIXED: [&str; 8] = [
    "dataset",
    "video_id",
    "segment_id",
    "split",
    "speaker_id",
    "start",
    "end",
    TEXT,
];

/// What is wrong with each unusable label name, by index: empty, with a comma (the names are
/// stored comma-separated in `mmflow.labels`, so it would come back as two labels), with
/// leading or trailing whitespace or a control character (it would not match the name a user
/// types), a fixed column's name, or a repeat of an earlier name.
pub fn label_name_problems(names: &[String]) -> Vec<(usize, String)> {
    let mut seen = HashSet::with_capacity(names.len());
    names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let problem = if name.is_empty() {
                "a label name cannot be empty".to_string()
            } else if name.contains(',') {
                format!(
                    "label name `{name}` holds a comma (label names are stored comma-separated)"
                )
            } else if name.trim() != name || name.chars().any(char::is_control) {
                format!("label name `{name}` has surrounding whitespace or a control character")
            } else if FIXED.contains(&name.as_str()) {
                format!("label name `{name}` clashes with a fixed column of the segments table")
            } else if !seen.insert(name.as_str()) {
                format!("label name `{name}` is repeated")
            } else {
                return None;
            };
            Some((i, problem))
        })
        .collect()
}

/// One segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Dataset name.
    pub dataset: String,
    /// Source video (or user/document).
    pub video_id: String,
    /// `<video>[<i>]`.
    pub segment_id: String,
    /// Partition.
    pub split: Split,
    /// Speaker or user, when known.
    pub speaker_id: Option<String>,
    /// Start of the segment in seconds, when known.
    pub start: Option<f64>,
    /// End of the segment in seconds, when known.
    pub end: Option<f64>,
    /// One value per label column of the table (same order as [`SegmentTable::label_names`]).
    pub labels: Vec<Option<f32>>,
    /// What is said in the segment (its transcript), when the source has it.
    pub text: Option<String>,
}

/// The whole segments table in memory (it is small: one row per segment).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentTable {
    /// Names of the label columns, in order.
    pub label_names: Vec<String>,
    /// The rows.
    pub rows: Vec<Segment>,
}

impl SegmentTable {
    /// The Arrow schema for a given set of label columns, with or without the `text` column.
    pub fn schema(label_names: &[String], with_text: bool) -> SchemaRef {
        let mut fields = vec![
            Field::new("dataset", DataType::Utf8, false),
            Field::new("video_id", DataType::Utf8, false),
            Field::new("segment_id", DataType::Utf8, false),
            Field::new("split", DataType::Utf8, false),
            Field::new("speaker_id", DataType::Utf8, true),
            Field::new("start", DataType::Float64, true),
            Field::new("end", DataType::Float64, true),
        ];
        fields.extend(
            label_names
                .iter()
                .map(|n| Field::new(n, DataType::Float32, true)),
        );
        if with_text {
            fields.push(Field::new(TEXT, DataType::Utf8, true));
        }
        Arc::new(Schema::new(fields))
    }

    /// Whether any segment has text: the table is then written with the `text` column.
    pub fn has_text(&self) -> bool {
        self.rows.iter().any(|r| r.text.is_some())
    }

    /// Index of a label column by name.
    pub fn label_index(&self, name: &str) -> Option<usize> {
        self.label_names.iter().position(|n| n == name)
    }

    /// Number of segments per split, in the order train, valid, test.
    pub fn split_counts(&self) -> [usize; 3] {
        let mut counts = [0; 3];
        for r in &self.rows {
            counts[r.split as usize] += 1;
        }
        counts
    }

    /// Checks the invariants writers rely on: unique ids, one value per label column,
    /// label names that round-trip (see [`label_name_problems`]).
    pub fn check(&self, path: &Path) -> Result<()> {
        let invalid = |message: String| SchemaError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if let Some((_, problem)) = label_name_problems(&self.label_names).into_iter().next() {
            return Err(invalid(problem));
        }
        let mut seen = HashSet::with_capacity(self.rows.len());
        for r in &self.rows {
            if !seen.insert(r.segment_id.as_str()) {
                return Err(invalid(format!("duplicate segment id `{}`", r.segment_id)));
            }
            if r.labels.len() != self.label_names.len() {
                return Err(invalid(format!(
                    "segment `{}` has {} labels for {} label columns",
                    r.segment_id,
                    r.labels.len(),
                    self.label_names.len()
                )));
            }
        }
        Ok(())
    }

    /// Writes the table to `path` (zstd Parquet with mmflow metadata); returns the row count.
    pub fn write(&self, path: &Path, meta: &TableMeta) -> Result<u64> {
        self.check(path)?;
        let with_text = self.has_text();
        let schema = Self::schema(&self.label_names, with_text);
        let text = |f: fn(&Segment) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(self.rows.iter().map(f)))
        };
        let mut columns: Vec<ArrayRef> = vec![
            text(|r| &r.dataset),
            text(|r| &r.video_id),
            text(|r| &r.segment_id),
            text(|r| r.split.as_str()),
            Arc::new(StringArray::from_iter(
                self.rows.iter().map(|r| r.speaker_id.as_deref()),
            )),
            Arc::new(Float64Array::from_iter(self.rows.iter().map(|r| r.start))),
            Arc::new(Float64Array::from_iter(self.rows.iter().map(|r| r.end))),
        ];
        for i in 0..self.label_names.len() {
            columns.push(Arc::new(Float32Array::from_iter(
                self.rows.iter().map(|r| r.labels[i]),
            )));
        }
        if with_text {
            columns.push(Arc::new(StringArray::from_iter(
                self.rows.iter().map(|r| r.text.as_deref()),
            )));
        }
        write_table(
            path,
            TableSpec::dictionary(TABLE, VERSION),
            schema,
            columns,
            meta,
            &[(KEY_LABELS, self.label_names.join(","))],
        )
    }

    /// Reads a segments table written by [`SegmentTable::write`].
    pub fn read(path: &Path) -> Result<SegmentTable> {
        let (builder, meta) = open_table(path, TABLE, VERSION)?;
        let label_names: Vec<String> = match meta.extra.get(KEY_LABELS) {
            Some(s) if !s.is_empty() => s.split(',').map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let mut rows = Vec::new();
        for batch in read_batches(path, builder)? {
            let text = |name: &str| -> Result<&StringArray> { column(path, &batch, name) };
            let float64 = |name: &str| -> Result<&Float64Array> { column(path, &batch, name) };
            let (dataset, video, segment, split, speaker) = (
                text("dataset")?,
                text("video_id")?,
                text("segment_id")?,
                text("split")?,
                text("speaker_id")?,
            );
            let (start, end) = (float64("start")?, float64("end")?);
            let transcript = match batch.column_by_name(TEXT) {
                Some(_) => Some(text(TEXT)?),
                None => None,
            };
            let labels = label_names
                .iter()
                .map(|n| column::<Float32Array>(path, &batch, n))
                .collect::<Result<Vec<_>>>()?;
            for i in 0..batch.num_rows() {
                let split_name = split.value(i);
                let split = Split::parse(split_name).ok_or_else(|| {
                    SchemaError::column(path, "split", format!("unknown split `{split_name}`"))
                })?;
                let opt_f64 = |a: &Float64Array| a.is_valid(i).then(|| a.value(i));
                rows.push(Segment {
                    dataset: dataset.value(i).to_string(),
                    video_id: video.value(i).to_string(),
                    segment_id: segment.value(i).to_string(),
                    split,
                    speaker_id: speaker.is_valid(i).then(|| speaker.value(i).to_string()),
                    start: opt_f64(start),
                    end: opt_f64(end),
                    labels: labels
                        .iter()
                        .map(|a| a.is_valid(i).then(|| a.value(i)))
                        .collect(),
                    text: transcript
                        .filter(|t| t.is_valid(i))
                        .map(|t| t.value(i).to_string()),
                });
            }
        }
        Ok(SegmentTable { label_names, rows })
    }
}

/// One segment's raw text, as the segments table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentText {
    /// `<video>[<i>]`.
    pub segment_id: String,
    /// The text; `None` where the cell is null.
    pub text: Option<String>,
}

/// The raw texts of a segments table, in table order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentTexts {
    /// Dataset name (of the first segment; empty for a table without rows).
    pub dataset: String,
    /// Every segment with its text.
    pub rows: Vec<SegmentText>,
}

/// Reads the [`TEXT`] of a segments table (with the segment ids), or an error naming
/// the file and the column when the table has no text.
pub fn read_texts(path: &Path) -> Result<SegmentTexts> {
    let (builder, _) = open_table(path, TABLE, VERSION)?;
    let mut out = SegmentTexts::default();
    for batch in read_batches(path, builder)? {
        let dataset: &StringArray = column(path, &batch, "dataset")?;
        let segment: &StringArray = column(path, &batch, "segment_id")?;
        let text: &StringArray = column(path, &batch, TEXT).map_err(|_| {
            SchemaError::column(
                path,
                TEXT,
                "missing or not utf8: this segments table has no raw text (its source kept none)",
            )
        })?;
        if out.rows.is_empty() && batch.num_rows() > 0 {
            out.dataset = dataset.value(0).to_string();
        }
        out.rows.extend((0..batch.num_rows()).map(|i| SegmentText {
            segment_id: segment.value(i).to_string(),
            text: text.is_valid(i).then(|| text.value(i).to_string()),
        }));
    }
    Ok(out)
}

/// A typed column of a batch, or an error naming the file and column.
pub(crate) fn column<'a, T: 'static>(
    path: &Path,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .ok_or_else(|| SchemaError::column(path, name, "missing"))?
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| {
            SchemaError::column(
                path,
                name,
                format!(
                    "unexpected type {}",
                    batch
                        .column_by_name(name)
                        .map(|c| c.data_type().to_string())
                        .unwrap_or_default()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn row(id: &str, text: Option<&str>) -> Segment {
        Segment {
            dataset: "sims".into(),
            video_id: "v".into(),
            segment_id: id.into(),
            split: Split::Train,
            speaker_id: None,
            start: None,
            end: None,
            labels: vec![Some(1.0)],
            text: text.map(str::to_string),
        }
    }

    #[test]
    fn text_is_a_column_only_when_some_segment_has_text_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let meta = TableMeta::default();
        for (rows, column) in [
            (vec![row("v[0]", Some("ça va")), row("v[1]", None)], true),
            (vec![row("v[0]", Some("")), row("v[1]", Some("hi"))], true),
            (vec![row("v[0]", None)], false),
        ] {
            let table = SegmentTable {
                label_names: names(&["sentiment"]),
                rows,
            };
            let path = dir.path().join("s.parquet");
            table.write(&path, &meta).unwrap();
            assert_eq!(SegmentTable::read(&path).unwrap(), table);
            let file = std::fs::File::open(&path).unwrap();
            let schema =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .schema()
                    .clone();
            let field = schema.field_with_name(TEXT).ok();
            assert_eq!(field.is_some(), column, "{table:?}");
            if let Some(field) = field {
                assert_eq!(field.data_type(), &DataType::Utf8);
                assert_eq!(schema.index_of(TEXT).unwrap(), schema.fields().len() - 1);
            }
        }
    }

    #[test]
    fn text_cannot_be_a_label_name() {
        assert_eq!(label_name_problems(&names(&["text"])).len(), 1);
    }

    #[test]
    fn label_names_that_would_not_round_trip_are_refused() {
        assert!(label_name_problems(&names(&["sentiment", "happy"])).is_empty());
        for (bad, says) in [
            (vec!["valence,arousal"], "holds a comma"),
            (vec![""], "cannot be empty"),
            (vec![" sentiment"], "whitespace"),
            (vec!["split"], "fixed column"),
            (vec!["a", "b", "a"], "`a` is repeated"),
        ] {
            let problems = label_name_problems(&names(&bad));
            assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
            assert_eq!(problems[0].0, bad.len() - 1);
            assert!(problems[0].1.contains(says), "{bad:?}: {problems:?}");
            let table = SegmentTable {
                label_names: names(&bad),
                rows: Vec::new(),
            };
            assert!(table.check(Path::new("segments.parquet")).is_err());
        }
    }
}
