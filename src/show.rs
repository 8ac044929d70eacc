//! `mmflow show`: schema, mmflow metadata and first rows of any Parquet table, opened as every
//! table is (`mmflow_schemas::open_parquet`: its footer and page headers checked before the
//! parquet crate reads them), read with the crate's Arrow reader and printed with arrow's
//! value formatter.

use std::path::Path;

use anyhow::anyhow;
use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;
use mmflow_schemas::FileMeta;

/// Widest cell printed, in characters (longer values end in `…`).
const CELL_WIDTH: usize = 40;
/// Most columns printed (the schema lists them all).
const MAX_COLUMNS: usize = 32;

/// Prints the table at `path`.
pub fn show(path: &Path, rows: usize) -> anyhow::Result<()> {
    let builder = mmflow_schemas::open_parquet(path)?;
    let unreadable = |e: parquet::errors::ParquetError| {
        anyhow!("{}: not a readable Parquet file: {e}", path.display())
    };
    let total = builder.metadata().file_metadata().num_rows();
    let meta = FileMeta::of(path, builder.metadata());
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder
        .with_limit(rows)
        .with_batch_size(rows.clamp(1, 1024))
        .build()
        .map_err(unreadable)?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{}: cannot read rows: {e}", path.display()))?;
    println!("{}", path.display());
    match meta {
        Ok(meta) => {
            println!(
                "table {} (schema v{}) · written by stage `{}` · fingerprint {} · mmflow {}",
                meta.table,
                meta.schema_version,
                meta.written_by.stage,
                meta.written_by.fingerprint,
                meta.mmflow_version
            );
            for (k, v) in &meta.extra {
                println!("  {k} = {v}");
            }
        }
        Err(_) => println!("(no mmflow metadata: not written by mmflow)"),
    }
    println!("{total} rows\n\nschema:");
    for field in schema.fields() {
        println!("  {}: {}", field.name(), type_name(field.data_type()));
    }
    let shown: usize = batches.iter().map(RecordBatch::num_rows).sum();
    println!("\nfirst {shown} rows:");
    print!("{}", table(&batches)?);
    Ok(())
}

/// A column type as analysts' tools name it (`f32`, `str`, `list[array[f32, 65]]`).
fn type_name(dtype: &DataType) -> String {
    match dtype {
        DataType::Boolean => "bool".into(),
        DataType::Int8 => "i8".into(),
        DataType::Int16 => "i16".into(),
        DataType::Int32 => "i32".into(),
        DataType::Int64 => "i64".into(),
        DataType::UInt8 => "u8".into(),
        DataType::UInt16 => "u16".into(),
        DataType::UInt32 => "u32".into(),
        DataType::UInt64 => "u64".into(),
        DataType::Float16 => "f16".into(),
        DataType::Float32 => "f32".into(),
        DataType::Float64 => "f64".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "str".into(),
        DataType::List(item) | DataType::LargeList(item) | DataType::ListView(item) => {
            format!("list[{}]", type_name(item.data_type()))
        }
        DataType::FixedSizeList(item, n) => format!("array[{}, {n}]", type_name(item.data_type())),
        other => other.to_string(),
    }
}

/// The rows as an aligned text table: a header, then one line per row, each cell cut to
/// [`CELL_WIDTH`] characters.
fn table(batches: &[RecordBatch]) -> anyhow::Result<String> {
    let Some(first) = batches.first() else {
        return Ok(String::new());
    };
    let columns = first.num_columns().min(MAX_COLUMNS);
    let mut cells: Vec<Vec<String>> = vec![first
        .schema()
        .fields()
        .iter()
        .take(columns)
        .map(|f| f.name().clone())
        .collect()];
    let options = FormatOptions::default().with_null("null");
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .take(columns)
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            cells.push(
                formatters
                    .iter()
                    .map(|f| cut(&f.value(row).to_string()))
                    .collect(),
            );
        }
    }
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join(" │ ").trim_end());
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|&w| "─".repeat(w)).collect();
            out.push_str(&rule.join("─┼─"));
            out.push('\n');
        }
    }
    if first.num_columns() > columns {
        out.push_str(&format!(
            "… and {} more columns (see the schema)\n",
            first.num_columns() - columns
        ));
    }
    Ok(out)
}

fn cut(text: &str) -> String {
    if text.chars().count() <= CELL_WIDTH {
        text.to_string()
    } else {
        let kept: String = text.chars().take(CELL_WIDTH - 1).collect();
        format!("{kept}…")
    }
}
