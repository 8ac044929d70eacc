//! The run's lock file (`mmflow.lock`, JSON): per stage, what it was run with and what it
//! wrote. Like `dvc.lock`, it is what makes re-runs incremental: a stage whose fingerprint
//! is unchanged and whose outputs are intact on disk is skipped.
//!
//! The file is only ever replaced atomically (written beside, synced, renamed), and a
//! stage's entry is written only after all its outputs are in place.
//!
//! Besides the stage entries it records runs as wholes: the run last `started` (the hash of
//! its resolved config and the stages it has completed so far) and the run last `completed`
//! (the same, for a run in which every stage completed). [`crate::record`] reads a run
//! directory as a record of results only when the settings saved beside the lock are those
//! of the completed run.
//!
//! A lock file is checked when it is read: a format newer than this mmflow's is refused, and
//! every recorded output must lie inside its stage's directory (a relative path below
//! `<stage id>/`, without `..`), so an edited lock cannot make mmflow read, hash or replace
//! anything outside the run directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::EngineError;

/// File name of the lock file inside the run directory.
pub const MANIFEST_FILE: &str = "mmflow.lock";

/// File name of the resolved config saved in the run directory.
pub const RESOLVED_CONFIG_FILE: &str = "pipeline.toml";

/// Format of the lock files this mmflow writes (and the newest it reads). Format 3 records
/// the table kind of every output ([`OutputRecord::table`]); a run whose lock predates it is
/// read, and its outputs' kinds are recorded the next time the pipeline runs there (stages
/// that are up to date are not re-computed for that).
pub const LOCK_FORMAT: u32 = 3;

/// Lock files written before the format was recorded.
fn unrecorded_format() -> u32 {
    1
}

/// The whole lock file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format of the file (see [`LOCK_FORMAT`]).
    #[serde(default = "unrecorded_format")]
    pub format: u32,
    /// mmflow version that last wrote the file.
    pub mmflow_version: String,
    /// Pipeline name.
    pub pipeline: String,
    /// One entry per stage that completed.
    pub stages: BTreeMap<String, StageEntry>,
    /// The run last started on this directory, and how far it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<RunProgress>,
    /// The last run in which every stage completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<RunProgress>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format: LOCK_FORMAT,
            mmflow_version: String::new(),
            pipeline: String::new(),
            stages: BTreeMap::new(),
            started: None,
            completed: None,
        }
    }
}

/// One run of a pipeline on a run directory: the config it ran and the stages it completed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProgress {
    /// Hash of the resolved config the run was started with (the text of `pipeline.toml`).
    pub config: String,
    /// Stage id → fingerprint of the entry the run left for it (ran, or found up to date).
    pub stages: BTreeMap<String, String>,
}

/// What one stage run used and produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageEntry {
    /// Stage kind.
    pub kind: String,
    /// Stage kind version.
    pub version: u32,
    /// Hash of kind, version, params, seed, device (if used) and input hashes.
    pub fingerprint: String,
    /// Canonical params, defaults included.
    pub params: serde_json::Value,
    /// The stage's seed.
    pub seed: u64,
    /// Device, for stages whose results depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Input slot → the references read and their content hashes.
    pub inputs: BTreeMap<String, Vec<InputRecord>>,
    /// Files read from outside the run directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_files: Vec<FileRecord>,
    /// Output name → the file written.
    pub outputs: BTreeMap<String, OutputRecord>,
    /// Facts the stage reported (counts, sizes, warnings).
    #[serde(default)]
    pub report: BTreeMap<String, serde_json::Value>,
    /// Wall time of the run in seconds.
    pub duration_s: f64,
    /// When it finished (seconds since the Unix epoch).
    pub finished_unix: u64,
    /// mmflow version that ran it.
    pub mmflow_version: String,
}

/// One input a stage read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    /// `"<stage>.<output>"`.
    pub reference: String,
    /// Content hash of the file read.
    pub hash: String,
}

/// A file read from outside the run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path as configured (directories are listed file by file).
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (ns since the epoch): when size and time are unchanged the recorded
    /// hash is trusted instead of re-reading the file.
    pub mtime_ns: u128,
    /// blake3 of the content.
    pub hash: String,
}

/// One output a stage wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Path relative to the run directory.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (ns since the epoch).
    pub mtime_ns: u128,
    /// blake3 of the content.
    pub hash: String,
    /// Rows, for tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// The kind of table the output holds (the name of the stage's declared `TableKind`,
    /// e.g. `metrics`); absent in locks written before format 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl Manifest {
    /// Reads the lock file of a run directory; an absent file is an empty manifest. A file
    /// that does not parse, comes from a newer mmflow or records an output outside its
    /// stage's directory is an error naming the file (and the stage).
    pub fn load(run_dir: &Path) -> Result<Manifest, EngineError> {
        let path = run_dir.join(MANIFEST_FILE);
        // A link or a special file in place of the lock is not mmflow's: never read through it.
        let bytes = match refuse_link(&path)
            .and_then(|()| mmflow_schemas::files::read_regular(&path))
        {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(e) => return Err(EngineError::io(&path, e)),
        };
        let text = String::from_utf8(bytes).map_err(|_| EngineError::Corrupt {
            path: path.clone(),
            message: "not UTF-8 text".into(),
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| EngineError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if manifest.format > LOCK_FORMAT {
            return Err(EngineError::NewerLock {
                path,
                format: manifest.format,
            });
        }
        manifest.check_paths(&path)?;
        Ok(manifest)
    }

    /// Every recorded output must be a relative path inside its stage's directory.
    fn check_paths(&self, lock: &Path) -> Result<(), EngineError> {
        for (stage, entry) in &self.stages {
            for (output, record) in &entry.outputs {
                if !inside_stage_dir(stage, &record.path) {
                    return Err(EngineError::UnsafeLock {
                        path: lock.to_path_buf(),
                        stage: stage.clone(),
                        output: output.clone(),
                        recorded: record.path.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Atomically replaces the lock file of a run directory.
    pub fn save(&self, run_dir: &Path) -> Result<(), EngineError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| EngineError::Corrupt {
            path: run_dir.join(MANIFEST_FILE),
            message: e.to_string(),
        })?;
        write_atomically(&run_dir.join(MANIFEST_FILE), text.as_bytes())
    }
}

/// Whether `path` is `<stage>/<file…>`: relative, below the stage's directory, no `..`.
fn inside_stage_dir(stage: &str, path: &Path) -> bool {
    let mut components = path.components();
    let first_is_stage =
        matches!(components.next(), Some(Component::Normal(first)) if first == stage);
    let rest: Vec<Component> = components.collect();
    first_is_stage && !rest.is_empty() && rest.iter().all(|c| matches!(c, Component::Normal(_)))
}

/// Writes `bytes` to `path` through a synced temporary file and a rename, so readers see the
/// old content or the new one, never a mix. Nothing is ever written through a symbolic link:
/// the temporary file is created new (`create_new` refuses any existing path, a link
/// included) beside `path`, and a link at `path` itself is refused rather than replaced, so
/// whatever it points to and the link both stay as they were.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let (tmp, mut file) = create_temporary(path).map_err(|e| EngineError::io(path, e))?;
    let mut write = || -> std::io::Result<()> {
        file.write_all(bytes)?;
        file.sync_all()?;
        refuse_link(path)?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            // Persist the rename itself (best effort: not every platform can sync a directory).
            let _ = mmflow_schemas::files::sync_to_disk(dir);
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        EngineError::io(path, e)
    })
}

/// A symbolic link where mmflow writes one of its own files is not mmflow's to replace.
pub(crate) fn refuse_link(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(std::io::Error::other(
            "a symbolic link, not a file mmflow wrote; mmflow neither writes through nor replaces it (remove the link)",
        )),
        _ => Ok(()),
    }
}

/// Creates a new temporary file `.<name>.<pid>-<n>.tmp` beside `path`, never opening an
/// existing one.
fn create_temporary(path: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?
        .to_string_lossy();
    for n in 0..1000 {
        let tmp = path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary name"))
}

/// Size and modification time of a file.
pub fn stat(path: &Path) -> std::io::Result<(u64, u128)> {
    let meta = fs::metadata(path)?;
    let mtime = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok((meta.len(), mtime))
}

/// blake3 of a file's content, as hex. Read in 8 MiB blocks, each hashed on every core: fast
/// on large source files without mapping them into memory. Only regular files are hashed: a
/// FIFO, device, socket or directory is refused by [`mmflow_schemas::files::open_regular`] before it
/// is opened (hashing `/dev/zero` or a FIFO would never end).
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    hash_file_with(path, Hashing::EveryCore)
}

/// Which threads hash a file's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashing {
    /// Every core (rayon's pool), for hashing while nothing else runs.
    EveryCore,
    /// The calling thread alone, for hashing beside a stage that keeps the cores busy: on the
    /// pool, each block would wait behind the stage's tasks.
    ThisThread,
}

/// [`hash_file`] on the threads `hashing` says.
pub fn hash_file_with(path: &Path, hashing: Hashing) -> std::io::Result<String> {
    use std::io::Read;
    let mut hasher = blake3::Hasher::new();
    let (mut file, _) = mmflow_schemas::files::open_regular(path)?;
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        match hashing {
            Hashing::EveryCore => hasher.update_rayon(&buf[..filled]),
            Hashing::ThisThread => hasher.update(&buf[..filled]),
        };
        if filled < buf.len() {
            break;
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// A source file as listed, before it is hashed: its hash is there when it was recorded
/// before for a file of its size and modification time.
#[derive(Debug, Clone)]
pub struct ListedFile {
    /// Path as configured (directories are listed file by file).
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (ns since the epoch).
    pub mtime_ns: u128,
    /// The hash recorded before, if any.
    pub known_hash: Option<String>,
}

impl ListedFile {
    /// Its record: the known hash, or the file read and hashed on the threads `hashing` says.
    pub fn hashed(self, hashing: Hashing) -> Result<FileRecord, EngineError> {
        let hash = match self.known_hash {
            Some(hash) => hash,
            None => {
                hash_file_with(&self.path, hashing).map_err(|e| EngineError::io(&self.path, e))?
            }
        };
        Ok(FileRecord {
            path: self.path,
            size: self.size,
            mtime_ns: self.mtime_ns,
            hash,
        })
    }
}

/// Lists the regular files at `path` (itself, or everything below it, sorted) with their size
/// and modification time: `known(file, size, mtime)` gives a hash recorded before for a file
/// of that size and mtime. Nothing is read.
pub fn list_files(
    path: &Path,
    known: impl Fn(&Path, u64, u128) -> Option<String>,
) -> Result<Vec<ListedFile>, EngineError> {
    let mut files = Vec::new();
    collect_files(path, &mut files).map_err(|e| EngineError::io(path, e))?;
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let (size, mtime_ns) = stat(&file).map_err(|e| EngineError::io(&file, e))?;
            Ok(ListedFile {
                known_hash: known(&file, size, mtime_ns),
                path: file,
                size,
                mtime_ns,
            })
        })
        .collect()
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = fs::metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            collect_files(&entry.path(), out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod write_tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_file_is_replaced_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        write_atomically(&path, b"old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), [MANIFEST_FILE]);
    }

    #[test]
    fn a_link_at_the_destination_is_neither_followed_nor_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.txt");
        fs::write(&user, "precious").unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        symlink(&user, &path).unwrap();
        let err = write_atomically(&path, b"{}").unwrap_err().to_string();
        assert!(
            err.contains("mmflow.lock") && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&user).unwrap(), "precious");
        assert_eq!(fs::read_link(&path).unwrap(), user);
        assert_eq!(names(dir.path()), [MANIFEST_FILE, "user.txt"]);
    }

    #[test]
    fn a_link_at_the_temporary_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.txt");
        fs::write(&user, "precious").unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        let taken = dir
            .path()
            .join(format!(".{MANIFEST_FILE}.{}-0.tmp", std::process::id()));
        symlink(&user, &taken).unwrap();
        write_atomically(&path, b"{}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        assert_eq!(fs::read_to_string(&user).unwrap(), "precious");
        assert_eq!(fs::read_link(&taken).unwrap(), user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock with one stage `s` whose output `o` is recorded at `path`.
    fn lock_with_output(path: &str) -> String {
        serde_json::json!({
            "format": LOCK_FORMAT,
            "mmflow_version": "0",
            "pipeline": "p",
            "stages": { "s": {
                "kind": "k", "version": 1, "fingerprint": "f", "params": {}, "seed": 1,
                "inputs": {}, "duration_s": 0.0, "finished_unix": 0, "mmflow_version": "0",
                "outputs": { "o": { "path": path, "size": 1, "mtime_ns": 0, "hash": "h" } },
            }},
        })
        .to_string()
    }

    fn load_text(text: &str) -> Result<Manifest, EngineError> {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MANIFEST_FILE), text).unwrap();
        Manifest::load(dir.path())
    }

    #[test]
    fn outputs_outside_their_stage_directory_are_refused() {
        assert!(load_text(&lock_with_output("s/o.parquet")).is_ok());
        assert!(load_text(&lock_with_output("s/sub/o.parquet")).is_ok());
        for bad in [
            "../outside",
            "s/../../outside",
            "/etc/passwd",
            "other/o.parquet",
            "s",
            "./s/o.parquet",
            "",
        ] {
            match load_text(&lock_with_output(bad)) {
                Err(e @ EngineError::UnsafeLock { .. }) => {
                    let message = e.to_string();
                    assert!(
                        message.contains(MANIFEST_FILE)
                            && message.contains("stage `s`")
                            && message.contains("output `o`"),
                        "{message}"
                    );
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn newer_formats_and_garbage_are_refused_and_old_locks_read() {
        let newer = lock_with_output("s/o").replace(
            &format!("\"format\":{LOCK_FORMAT}"),
            &format!("\"format\":{}", LOCK_FORMAT + 1),
        );
        assert!(matches!(
            load_text(&newer),
            Err(EngineError::NewerLock { format, .. }) if format == LOCK_FORMAT + 1
        ));
        assert!(matches!(
            load_text("{ not json"),
            Err(EngineError::Corrupt { .. })
        ));
        let old = lock_with_output("s/o").replace(&format!("\"format\":{LOCK_FORMAT},"), "");
        let m = load_text(&old).unwrap();
        assert_eq!(m.format, 1);
        assert!(m.completed.is_none() && m.started.is_none());
    }
}
