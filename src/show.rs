//! `mmflow show`: schema, mmflow metadata and first rows of any Parquet table, via polars.

use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, Context};
use polars::prelude::{DataFrame, ParquetReader, SerReader};

/// Polars display settings for wide tables: every column, long lists kept short. Must be
/// called before any thread starts (it sets environment variables).
pub fn configure_display() {
    for (key, value) in [
        ("POLARS_FMT_MAX_COLS", "32"),
        ("POLARS_FMT_STR_LEN", "40"),
        ("POLARS_FMT_TABLE_WIDTH", "160"),
    ] {
        if std::env::var_os(key).is_none() {
            std::env::set_var(key, value);
        }
    }
}

/// Prints the table at `path`.
pub fn show(path: &Path, rows: usize) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut reader = ParquetReader::new(file);
    let total = reader
        .num_rows()
        .map_err(|e| anyhow!("{}: not a readable Parquet file: {e}", path.display()))?;
    let frame: DataFrame = reader
        .with_slice(Some((0, rows)))
        .finish()
        .map_err(|e| anyhow!("{}: cannot read rows: {e}", path.display()))?;
    println!("{}", path.display());
    match mmflow_schemas::read_file_meta(path) {
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
    for (name, dtype) in frame.schema().iter() {
        println!("  {name}: {dtype}");
    }
    println!("\nfirst {} rows:\n{frame}", frame.height());
    Ok(())
}
