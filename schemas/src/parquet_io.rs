//! Shared Parquet plumbing: zstd-compressed writers that stamp mmflow's key/value metadata,
//! and readers that check a file is the table they expect before decoding it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::guard::CheckedFile;
use crate::{Result, SchemaError, MMFLOW_VERSION};

/// Key of the table name in a file's key/value metadata.
pub const KEY_TABLE: &str = "mmflow.table";
/// Key of the schema version.
pub const KEY_SCHEMA_VERSION: &str = "mmflow.schema_version";
/// Key of the mmflow version that wrote the file.
pub const KEY_MMFLOW_VERSION: &str = "mmflow.version";
/// Key of the id of the stage that wrote the file.
pub const KEY_STAGE: &str = "mmflow.stage";
/// Key of the fingerprint of the stage run that wrote the file.
pub const KEY_FINGERPRINT: &str = "mmflow.fingerprint";

/// Provenance the engine hands to every writer: which stage run produced the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableMeta {
    /// Id of the stage in its pipeline.
    pub stage: String,
    /// Fingerprint of the stage run (hash of kind, version, params, seed, inputs).
    pub fingerprint: StageFingerprint,
}

/// The fingerprint of the stage run that writes a table.
///
/// Usually known when the stage starts. A stage that never ran in its run directory and
/// reads source files mmflow has not hashed yet runs while they are hashed: its fingerprint
/// is known only when that ends. A writer needs it only for the footer, so it asks when it
/// finishes its file ([`StageFingerprint::wait`]), and waits if the hashing has not ended.
#[derive(Debug, Clone)]
pub struct StageFingerprint(Arc<OnceLock<std::result::Result<String, String>>>);

impl StageFingerprint {
    /// A fingerprint known now.
    pub fn known(hash: impl Into<String>) -> Self {
        StageFingerprint(Arc::new(OnceLock::from(Ok(hash.into()))))
    }

    /// A fingerprint to be given by [`StageFingerprint::settle`], which whoever creates it
    /// must call, whatever happens (a writer that finishes waits for it).
    pub fn pending() -> Self {
        StageFingerprint(Arc::new(OnceLock::new()))
    }

    /// Gives a pending fingerprint its hash, or why there is none (a source file could not
    /// be hashed). The first call counts; later ones do nothing.
    pub fn settle(&self, hash: std::result::Result<String, String>) {
        let _ = self.0.set(hash);
    }

    /// The hash, once it is known.
    pub fn wait(&self) -> std::result::Result<&str, &str> {
        match self.0.wait() {
            Ok(hash) => Ok(hash),
            Err(why) => Err(why),
        }
    }
}

impl Default for StageFingerprint {
    fn default() -> Self {
        StageFingerprint::known("")
    }
}

impl PartialEq for StageFingerprint {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for StageFingerprint {}

impl std::fmt::Display for StageFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(Ok(hash)) => f.write_str(hash),
            Some(Err(_)) => f.write_str("(none: its source files could not be hashed)"),
            None => f.write_str("(pending: its source files are being hashed)"),
        }
    }
}

/// The mmflow metadata found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Table name (`segments`, `features`, …).
    pub table: String,
    /// Schema version of that table.
    pub schema_version: u32,
    /// mmflow version that wrote the file.
    pub mmflow_version: String,
    /// Provenance: stage id and fingerprint.
    pub written_by: TableMeta,
    /// Table-specific metadata (`mmflow.modality`, `mmflow.dim`, …).
    pub extra: BTreeMap<String, String>,
}

impl FileMeta {
    /// A table-specific metadata value, or an error naming the key.
    pub fn get(&self, path: &Path, key: &str) -> Result<&str> {
        self.extra
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| SchemaError::Format {
                path: path.to_path_buf(),
                message: format!("metadata key `{key}` is missing"),
            })
    }
}

/// How a table's columns are encoded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Encoding {
    /// Mostly strings and repeated values: dictionary encoding pays.
    Dictionary,
    /// Mostly dense floats: dictionaries only cost time, and per-page statistics are useless.
    DenseFloats,
}

/// What marks a table's files: its name and schema version (in the file metadata) and how
/// its columns are encoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableSpec {
    /// Table name (`mmflow.table`).
    pub(crate) name: &'static str,
    /// Schema version (`mmflow.schema_version`).
    pub(crate) version: u32,
    /// Column encoding.
    pub(crate) encoding: Encoding,
}

impl TableSpec {
    /// A table of mostly strings and repeated values.
    pub(crate) const fn dictionary(name: &'static str, version: u32) -> Self {
        TableSpec {
            name,
            version,
            encoding: Encoding::Dictionary,
        }
    }

    /// A table of mostly dense floats.
    pub(crate) const fn dense_floats(name: &'static str, version: u32) -> Self {
        TableSpec {
            name,
            version,
            encoding: Encoding::DenseFloats,
        }
    }
}

/// Writes a whole table held in memory: `columns` (in `schema`'s order) as one row group, with
/// mmflow's metadata and the table's `extra` keys; returns the row count. Every table written
/// at once goes through here; streamed tables use [`TableWriter`].
pub(crate) fn write_table(
    path: &Path,
    spec: TableSpec,
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
    meta: &TableMeta,
    extra: &[(&str, String)],
) -> Result<u64> {
    // The batch is checked before the file is created: a bad batch leaves nothing behind.
    let batch = record_batch(path, schema.clone(), columns)?;
    let mut writer = TableWriter::create(path, spec, schema, meta, extra)?;
    writer.write(&batch)?;
    writer.finish()
}

/// The columns as a batch of `schema`, or an error naming the file.
fn record_batch(path: &Path, schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(schema, columns).map_err(|e| SchemaError::arrow(path, e))
}

/// A Parquet writer for one table, flushing one row group per written batch so memory stays
/// bounded by the batch size.
pub(crate) struct TableWriter {
    path: PathBuf,
    schema: SchemaRef,
    inner: ArrowWriter<BufWriter<File>>,
    /// Written into the footer when the file is finished (it may not be known before).
    fingerprint: StageFingerprint,
    rows: u64,
}

impl TableWriter {
    /// Creates the file of table `spec` with columns `schema`, mmflow's metadata and the
    /// table's `extra` keys; writes nothing yet.
    pub(crate) fn create(
        path: &Path,
        spec: TableSpec,
        schema: SchemaRef,
        meta: &TableMeta,
        extra: &[(&str, String)],
    ) -> Result<Self> {
        let file = File::create(path).map_err(|source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut kv = vec![
            KeyValue::new(KEY_TABLE.to_string(), spec.name.to_string()),
            KeyValue::new(KEY_SCHEMA_VERSION.to_string(), spec.version.to_string()),
            KeyValue::new(KEY_MMFLOW_VERSION.to_string(), MMFLOW_VERSION.to_string()),
            KeyValue::new(KEY_STAGE.to_string(), meta.stage.clone()),
        ];
        kv.extend(
            extra
                .iter()
                .map(|(k, v)| KeyValue::new(k.to_string(), v.clone())),
        );
        let level = ZstdLevel::try_new(3).map_err(|e| SchemaError::parquet(path, e))?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_key_value_metadata(Some(kv))
            // Row groups are cut by explicit flushes (one per written batch).
            .set_max_row_group_row_count(None);
        if let Encoding::DenseFloats = spec.encoding {
            props = props
                .set_dictionary_enabled(false)
                .set_statistics_enabled(EnabledStatistics::Chunk);
        }
        let inner = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            schema.clone(),
            Some(props.build()),
        )
        .map_err(|e| SchemaError::parquet(path, e))?;
        Ok(TableWriter {
            path: path.to_path_buf(),
            schema,
            inner,
            fingerprint: meta.fingerprint.clone(),
            rows: 0,
        })
    }

    /// Adds `columns` (in the schema's order) to the row group being written: they are
    /// encoded now, and their arrays can go.
    pub(crate) fn append_columns(&mut self, columns: Vec<ArrayRef>) -> Result<()> {
        let batch = record_batch(&self.path, self.schema.clone(), columns)?;
        self.append(&batch)
    }

    /// Writes one batch as its own row group (nothing for an empty one).
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.append(batch)?;
        self.end_row_group()
    }

    /// Adds one batch to the row group being written (nothing for an empty one).
    fn append(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.inner
            .write(batch)
            .map_err(|e| SchemaError::parquet(&self.path, e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes the row group being written (nothing when it is empty).
    pub(crate) fn end_row_group(&mut self) -> Result<()> {
        self.inner
            .flush()
            .map_err(|e| SchemaError::parquet(&self.path, e))
    }

    /// Writes the footer, the stage's fingerprint last (waiting for it if it is pending),
    /// and syncs the file to disk; returns the number of rows written.
    pub(crate) fn finish(mut self) -> Result<u64> {
        let path = self.path;
        let fingerprint = self.fingerprint.wait().map_err(|why| SchemaError::Format {
            path: path.clone(),
            message: format!("the stage has no fingerprint to record: {why}"),
        })?;
        self.inner.append_key_value_metadata(KeyValue::new(
            KEY_FINGERPRINT.to_string(),
            fingerprint.to_string(),
        ));
        let buffered = self
            .inner
            .into_inner()
            .map_err(|e| SchemaError::parquet(&path, e))?;
        let file = buffered.into_inner().map_err(|e| SchemaError::Io {
            path: path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| SchemaError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(self.rows)
    }
}

/// Reads mmflow's metadata from a Parquet file's footer.
pub fn read_file_meta(path: &Path) -> Result<FileMeta> {
    let (_, metadata) = read_metadata(path)?;
    FileMeta::of(path, &metadata)
}

/// Number of rows in a Parquet file, from its footer.
pub fn row_count(path: &Path) -> Result<u64> {
    Ok(crate::guard::open(path)?.rows)
}

/// Opens any Parquet file (mmflow's or not) for reading with Arrow. Its footer is read and
/// checked first, and the reader is built from those very bytes over the same open file,
/// whose page headers are checked as the reader asks for them (see [`crate::guard`]).
pub fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<CheckedFile>> {
    let (file, arrow) = open_parquet_parts(path)?;
    Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(
        file, arrow,
    ))
}

/// What [`open_parquet`] builds its reader from: the checked file and its decoded footer,
/// from which readers of some of its row groups can be built (one per thread).
pub(crate) fn open_parquet_parts(path: &Path) -> Result<(CheckedFile, ArrowReaderMetadata)> {
    let (file, metadata) = read_metadata(path)?;
    let arrow = ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new())
        .map_err(|e| SchemaError::parquet(path, e))?;
    Ok((file, arrow))
}

/// The open file and its footer, checked, then decoded by the parquet crate.
fn read_metadata(path: &Path) -> Result<(CheckedFile, ParquetMetaData)> {
    let opened = crate::guard::open(path)?;
    let metadata = ParquetMetaDataReader::decode_metadata(&opened.metadata).map_err(|source| {
        SchemaError::Parquet {
            path: path.to_path_buf(),
            context: "not a readable Parquet file: ",
            source,
        }
    })?;
    Ok((opened.file, metadata))
}

impl FileMeta {
    /// mmflow's metadata in a Parquet file's decoded footer (`path` names the file in errors).
    pub fn of(path: &Path, metadata: &ParquetMetaData) -> Result<FileMeta> {
        meta_from_kv(path, metadata.file_metadata().key_value_metadata())
    }
}

fn meta_from_kv(path: &Path, kv: Option<&Vec<KeyValue>>) -> Result<FileMeta> {
    let mut map: BTreeMap<String, String> = kv
        .into_iter()
        .flatten()
        .filter_map(|kv| kv.value.clone().map(|v| (kv.key.clone(), v)))
        .collect();
    let mut take = |key: &str| map.remove(key);
    let table = take(KEY_TABLE).ok_or_else(|| SchemaError::WrongTable {
        path: path.to_path_buf(),
        expected: "an mmflow".into(),
        found: "a Parquet file without mmflow metadata".into(),
    })?;
    let schema_version = take(KEY_SCHEMA_VERSION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mmflow_version = take(KEY_MMFLOW_VERSION).unwrap_or_default();
    let stage = take(KEY_STAGE).unwrap_or_default();
    let fingerprint = take(KEY_FINGERPRINT).unwrap_or_default();
    map.remove("ARROW:schema");
    Ok(FileMeta {
        table,
        schema_version,
        mmflow_version,
        written_by: TableMeta {
            stage,
            fingerprint: StageFingerprint::known(fingerprint),
        },
        extra: map,
    })
}

/// Opens a file as the expected table and returns a batch reader builder over it.
pub(crate) fn open_table(
    path: &Path,
    table: &str,
    schema_version: u32,
) -> Result<(ParquetRecordBatchReaderBuilder<CheckedFile>, FileMeta)> {
    let (file, arrow, meta) = open_table_parts(path, table, schema_version)?;
    Ok((
        ParquetRecordBatchReaderBuilder::new_with_metadata(file, arrow),
        meta,
    ))
}

/// [`open_table`]'s parts, as [`open_parquet_parts`] gives them.
pub(crate) fn open_table_parts(
    path: &Path,
    table: &str,
    schema_version: u32,
) -> Result<(CheckedFile, ArrowReaderMetadata, FileMeta)> {
    let (file, arrow) = open_parquet_parts(path)?;
    let meta = FileMeta::of(path, arrow.metadata())?;
    if meta.table != table {
        return Err(SchemaError::WrongTable {
            path: path.to_path_buf(),
            expected: table.to_string(),
            found: format!("a `{}` table", meta.table),
        });
    }
    if meta.schema_version != schema_version {
        return Err(SchemaError::WrongTable {
            path: path.to_path_buf(),
            expected: format!("{table} (schema version {schema_version})"),
            found: format!("schema version {}", meta.schema_version),
        });
    }
    Ok((file, arrow, meta))
}

/// Reads every batch of a reader, naming the file on failure.
pub(crate) fn read_batches(
    path: &Path,
    builder: ParquetRecordBatchReaderBuilder<CheckedFile>,
) -> Result<Vec<RecordBatch>> {
    let reader = builder.build().map_err(|e| SchemaError::parquet(path, e))?;
    reader
        .map(|b| b.map_err(|e| SchemaError::arrow(path, e)))
        .collect()
}
