//! The comparison as a Parquet table (`compare --parquet`, and a sweep's
//! `comparison.parquet`): written only to a new file or over a comparison table mmflow wrote.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use mmflow_schemas::comparison::{self, ComparisonRow};
use mmflow_schemas::{read_file_meta, StageFingerprint, TableMeta};

use crate::staging::{parent_of, Parents, Staging};

/// The stage named in the table's metadata: the comparison, not a stage of a pipeline.
const WRITTEN_BY: &str = "compare";

/// `--parquet FILE` may name a new file or a comparison table mmflow wrote, nothing else: not
/// a user's file, a folder, a link or a special file.
pub fn check_parquet_destination(path: &Path) -> Result<()> {
    let refuse = |why: &str| anyhow!("--parquet {}: {why}", path.display());
    if path.file_name().is_none() {
        return Err(refuse(
            "not a file name; name a new file, e.g. `comparison.parquet`",
        ));
    }
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("--parquet {}", path.display())),
        Ok(meta) => meta,
    };
    if meta.file_type().is_symlink() {
        return Err(refuse(
            "it is a symbolic link, and mmflow does not write through links; name a new file",
        ));
    }
    if meta.is_dir() {
        return Err(refuse(
            "it is a folder; name a new file, e.g. `FOLDER/comparison.parquet`",
        ));
    }
    let ours = meta.is_file() && read_file_meta(path).is_ok_and(|m| m.table == comparison::TABLE);
    if !ours {
        return Err(refuse(
            "it exists and is not a comparison table written by mmflow, which replaces only its own; name a new file",
        ));
    }
    Ok(())
}

/// Writes the comparison of `runs` to `path` (new, or a comparison table mmflow wrote): built
/// in a fresh staging folder beside it and renamed into place, so the file is complete or
/// absent and nothing at `path` is ever written through. Its fingerprint is a hash of the
/// run directories compared.
pub fn write_parquet(path: &Path, rows: &[ComparisonRow], runs: &[PathBuf]) -> Result<()> {
    check_parquet_destination(path)?;
    let meta = TableMeta {
        stage: WRITTEN_BY.into(),
        fingerprint: StageFingerprint::known(
            &blake3::hash(format!("{runs:?}").as_bytes()).to_hex()[..32],
        ),
    };
    let parents = Parents::create(parent_of(path))
        .with_context(|| format!("creating the folder of {}", path.display()))?;
    let staging = Staging::beside(path)
        .with_context(|| format!("creating a staging folder beside {}", path.display()))?;
    let tmp = staging.path().join("comparison.parquet");
    comparison::write(rows, &tmp, &meta).with_context(|| format!("writing {}", path.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    parents.keep();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_files_or_comparison_tables_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let at = |rel: &str| dir.path().join(rel);
        assert!(check_parquet_destination(&at("new.parquet")).is_ok());
        std::fs::write(at("notes.txt"), "mine").unwrap();
        std::fs::create_dir(at("folder")).unwrap();
        for (rel, why) in [
            ("notes.txt", "not a comparison table"),
            ("folder", "it is a folder"),
        ] {
            let err = check_parquet_destination(&at(rel)).unwrap_err().to_string();
            assert!(err.contains(why), "{rel}: {err}");
        }
        let runs = [PathBuf::from("a1")];
        write_parquet(&at("deep/cmp.parquet"), &[], &runs).unwrap();
        assert!(check_parquet_destination(&at("deep/cmp.parquet")).is_ok());
        write_parquet(&at("deep/cmp.parquet"), &[], &runs).unwrap();
        let meta = read_file_meta(&at("deep/cmp.parquet")).unwrap();
        assert_eq!(meta.written_by.stage, WRITTEN_BY);
        let left: Vec<_> = std::fs::read_dir(at("deep")).unwrap().collect();
        assert_eq!(left.len(), 1, "no staging folder is left behind");
    }
}
