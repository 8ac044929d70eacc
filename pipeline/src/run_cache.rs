//! The run-cache: outputs of stages that ran, kept by fingerprint, shared by every run
//! directory that uses the same cache (as DVC's run-cache).
//!
//! A stage that must run (never ran in this run directory, or its fingerprint changed) is
//! first looked up here. An entry is the stage's output files and a record (`entry.json`) of
//! their names, sizes and content hashes. When every file matches its record, the outputs are
//! put in place in the run directory as hard links to the entry's files (a copy only where the
//! filesystem cannot link) and the stage is not recomputed; otherwise the entry is set aside and
//! the stage runs. A stage that ran adds its outputs as a new entry (hard links again).
//!
//! The key of an entry is the stage's fingerprint and its id: a table records the id of the
//! stage that wrote it, so a restored file is byte for byte the file the stage would write.
//!
//! The cache also remembers the content hash of each source file it has seen (by canonical
//! path, size and modification time), so a new run directory, such as each point of a sweep,
//! does not read a large source file again only to hash it.
//!
//! ## Layout and concurrency
//! `<cache>/<key[..2]>/<key>/` holds the files and `entry.json`. An entry is filled in
//! `<cache>/tmp/` and published by renaming its folder into place, which succeeds for exactly
//! one writer: two runs filling the same entry at once both compute, one publishes, the other
//! discards its copy. A published entry is never changed; an entry that does not match its
//! record (a file edited through a link from a run directory, a truncated copy, a record that
//! is not one) is renamed into `tmp/` before it is removed, so no reader meets half of one.
//! Only folders mmflow made are removed — an entry's folder is mmflow's when it holds a
//! record; a folder without one is left in place — and nothing is followed through a link.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::manifest::{self, FileRecord};
use crate::stage::OutputPort;

/// Name of the run-cache folder when its location is not configured: beside the run
/// directory, so the runs under `data/runs/` share `data/runs/.mmflow-cache` and the points of a
/// sweep share the one in the sweep's folder.
pub const DEFAULT_FOLDER: &str = ".mmflow-cache";

/// Format of `entry.json`.
pub(crate) const ENTRY_FORMAT: u32 = 1;

/// File name of an entry's record.
const ENTRY_FILE: &str = "entry.json";

/// Folder (inside the cache) where entries are filled and discarded.
const WORK_FOLDER: &str = "tmp";

/// Folder (inside the cache) of the content hashes of source files, by path.
const HASHES_FOLDER: &str = "hashes";

/// The `[pipeline] run_cache` setting: `true` (default: `.mmflow-cache` beside the run
/// directory), `false` (no run-cache), or the cache's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunCacheSetting {
    /// On (at the default place) or off.
    Enabled(bool),
    /// At this folder (relative paths are relative to the current directory).
    At(PathBuf),
}

impl Default for RunCacheSetting {
    fn default() -> Self {
        RunCacheSetting::Enabled(true)
    }
}

impl RunCacheSetting {
    /// The cache folder for a run in `run_dir` (which exists), or `None` when off.
    pub fn folder(&self, run_dir: &Path) -> Option<PathBuf> {
        match self {
            RunCacheSetting::Enabled(false) => None,
            RunCacheSetting::At(dir) => Some(dir.clone()),
            RunCacheSetting::Enabled(true) => {
                let run_dir = fs::canonicalize(run_dir).ok()?;
                Some(run_dir.parent()?.join(DEFAULT_FOLDER))
            }
        }
    }
}

/// One output file as an entry records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedOutput {
    /// File name inside the entry (and inside the stage's folder).
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// Content hash (blake3, hex).
    pub hash: String,
    /// Row count, for tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Table kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

/// An entry's record (`entry.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedEntry {
    /// Format of the record.
    pub format: u32,
    /// The entry's key.
    pub key: String,
    /// The stage id.
    pub stage: String,
    /// The stage's fingerprint.
    pub fingerprint: String,
    /// Output name → file.
    pub outputs: BTreeMap<String, CachedOutput>,
    /// What the stage reported when it ran.
    #[serde(default)]
    pub report: BTreeMap<String, serde_json::Value>,
    /// Its wall time when it ran, in seconds.
    pub duration_s: f64,
    /// mmflow version that ran it.
    pub mmflow_version: String,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// No entry.
    Miss,
    /// An entry whose files match their record.
    Hit(CachedEntry),
    /// An entry that cannot be used, and why.
    Unusable {
        /// What is wrong with it.
        why: String,
        /// True if it was an entry mmflow wrote (it has a record) and has been removed; a
        /// folder without a record is not taken for one of mmflow's and is left in place.
        removed: bool,
    },
}

/// What [`RunCache::prune`] removed (or, in a dry run, would remove) and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Entries not used since the cutoff.
    pub removed: usize,
    /// Their size in bytes (a file still linked from a run directory keeps its bytes there).
    pub removed_bytes: u64,
    /// Entries used since.
    pub kept: usize,
    /// Their size in bytes.
    pub kept_bytes: u64,
    /// Abandoned work folders (in `tmp/`, older than the cutoff) of runs that were killed.
    pub abandoned: usize,
}

/// A run-cache at a folder.
#[derive(Debug, Clone)]
pub struct RunCache {
    root: PathBuf,
}

impl RunCache {
    /// The cache at `root` (created when the first entry is stored).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        RunCache { root: root.into() }
    }

    /// Its folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key of stage `stage_id` with fingerprint `fingerprint`.
    pub fn key(fingerprint: &str, stage_id: &str) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"mmflow run-cache\0");
        h.update(fingerprint.as_bytes());
        h.update(b"\0");
        h.update(stage_id.as_bytes());
        h.finalize().to_hex()[..32].to_string()
    }

    fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join(&key[..2]).join(key)
    }

    /// Looks up `key` for a stage declaring `ports`: a hit only when the entry is a folder
    /// mmflow made whose record names this key and every declared output, and every file is
    /// a regular file of the recorded size and content hash.
    pub fn lookup(&self, key: &str, ports: &[OutputPort]) -> Lookup {
        let dir = self.entry_dir(key);
        match fs::symlink_metadata(&dir) {
            Err(_) => return Lookup::Miss,
            // A link or a file in an entry's place is not mmflow's: neither used nor removed.
            Ok(meta) if !meta.is_dir() => return Lookup::Miss,
            Ok(_) => {}
        }
        match verify_entry(&dir, key, ports) {
            Ok(entry) => Lookup::Hit(entry),
            Err(why) => {
                let ours = fs::symlink_metadata(dir.join(ENTRY_FILE)).is_ok_and(|m| m.is_file());
                if ours {
                    self.discard(&dir);
                }
                Lookup::Unusable { why, removed: ours }
            }
        }
    }

    /// What a lookup of `key` would most likely find, without reading the files' contents
    /// or removing anything (for `mmflow plan`): the record, when it names every declared
    /// output and each file is a regular file of the recorded size.
    pub fn peek(&self, key: &str, ports: &[OutputPort]) -> Option<CachedEntry> {
        let dir = self.entry_dir(key);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return None;
        }
        let entry = read_record(&dir, key, ports).ok()?;
        let sound = entry.outputs.values().all(|output| {
            fs::symlink_metadata(dir.join(&output.file))
                .is_ok_and(|m| m.is_file() && m.len() == output.size)
        });
        sound.then_some(entry)
    }

    /// Path of an entry's output file (after a [`Lookup::Hit`]).
    pub fn file(&self, key: &str, output: &CachedOutput) -> PathBuf {
        self.entry_dir(key).join(&output.file)
    }

    /// Stores the files `outputs` (output name → (path in the run directory, record)) as the
    /// entry `entry.key`. Returns `Ok(false)` when another run published the entry first.
    pub fn store(
        &self,
        entry: &CachedEntry,
        files: &BTreeMap<String, PathBuf>,
    ) -> io::Result<bool> {
        let work = self.work_folder()?;
        let tmp = work.join(unique_name(&entry.key));
        fs::create_dir(&tmp)?;
        let filled = fill_entry(&tmp, entry, files);
        let published = filled.and_then(|()| {
            let dir = self.entry_dir(&entry.key);
            fs::create_dir_all(dir.parent().expect("an entry lies in a prefix folder"))?;
            match fs::rename(&tmp, &dir) {
                Ok(()) => Ok(true),
                // Another writer's entry is in place (a folder rename never replaces a
                // non-empty folder): theirs stays.
                Err(_) if fs::symlink_metadata(&dir).is_ok() => Ok(false),
                Err(e) => Err(e),
            }
        });
        if !matches!(published, Ok(true)) {
            let _ = fs::remove_dir_all(&tmp);
        }
        published
    }

    /// `<cache>/tmp`, created if absent; a link (or anything but a folder) in its place is not
    /// mmflow's, and nothing is filled or removed through it.
    fn work_folder(&self) -> io::Result<PathBuf> {
        let work = self.root.join(WORK_FOLDER);
        fs::create_dir_all(&self.root)?;
        match fs::create_dir(&work) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if fs::symlink_metadata(&work)?.is_dir() {
            Ok(work)
        } else {
            Err(io::Error::other(format!(
                "{} is not a folder mmflow made (a link or a file is in its place)",
                work.display()
            )))
        }
    }

    /// The content hash a run sharing this cache recorded for the source file `path` when it
    /// had this size and modification time.
    pub fn known_hash(&self, path: &Path, size: u64, mtime_ns: u128) -> Option<String> {
        let memo = self.hash_memo(path)?;
        let record: FileRecord = serde_json::from_slice(&fs::read(memo).ok()?).ok()?;
        (record.path == fs::canonicalize(path).ok()?
            && record.size == size
            && record.mtime_ns == mtime_ns)
            .then_some(record.hash)
    }

    /// Records a source file's hash for [`RunCache::known_hash`] (best effort: a memo that
    /// cannot be written only means the file is hashed again).
    pub fn remember_hash(&self, record: &FileRecord) {
        let (Some(memo), Ok(path)) = (self.hash_memo(&record.path), fs::canonicalize(&record.path))
        else {
            return;
        };
        let memo_record = FileRecord {
            path,
            ..record.clone()
        };
        let unchanged = fs::read(&memo)
            .ok()
            .and_then(|b| serde_json::from_slice::<FileRecord>(&b).ok())
            .is_some_and(|known| known == memo_record);
        if unchanged || fs::create_dir_all(self.root.join(HASHES_FOLDER)).is_err() {
            return;
        }
        if let Ok(json) = serde_json::to_vec(&memo_record) {
            let _ = manifest::write_atomically(&memo, &json);
        }
    }

    /// `<cache>/hashes/<hash of the file's canonical path>.json`.
    fn hash_memo(&self, path: &Path) -> Option<PathBuf> {
        let path = fs::canonicalize(path).ok()?;
        let name = blake3::hash(path.as_os_str().as_encoded_bytes()).to_hex();
        Some(
            self.root
                .join(HASHES_FOLDER)
                .join(format!("{}.json", &name[..32])),
        )
    }

    /// Marks an entry used now (its record's modification time), so that pruning by age keeps
    /// what runs still restore (best effort).
    pub fn mark_used(&self, key: &str) {
        let record = self.entry_dir(key).join(ENTRY_FILE);
        if fs::symlink_metadata(&record).is_ok_and(|m| m.is_file()) {
            let _ = fs::File::options()
                .append(true)
                .open(&record)
                .and_then(|f| f.set_modified(SystemTime::now()));
        }
    }

    /// Removes every entry not published or restored since `cutoff` (with `dry_run`, only
    /// counts them), and work folders in `tmp/` older than the cutoff. Only what mmflow made is
    /// removed: an entry folder whose record names it; anything else (a link, a file, a folder
    /// without a record) is left in place and nothing is followed through a link. Each entry
    /// is moved aside in one rename before it is removed, so a run restoring from it at the
    /// same time finds the whole entry or none (and then runs the stage).
    pub fn prune(&self, cutoff: SystemTime, dry_run: bool) -> io::Result<Pruned> {
        let mut pruned = Pruned::default();
        for prefix in real_folders(&self.root)? {
            let is_prefix = prefix.file_name().is_some_and(|n| {
                n.len() == 2 && n.to_string_lossy().bytes().all(|b| b.is_ascii_hexdigit())
            });
            if !is_prefix {
                continue;
            }
            for dir in real_folders(&prefix)? {
                let Some(used) = entry_last_used(&dir) else {
                    continue;
                };
                let bytes = folder_bytes(&dir);
                if used < cutoff {
                    pruned.removed += 1;
                    pruned.removed_bytes += bytes;
                    if !dry_run {
                        self.discard(&dir);
                    }
                } else {
                    pruned.kept += 1;
                    pruned.kept_bytes += bytes;
                }
            }
        }
        let work = self.root.join(WORK_FOLDER);
        if fs::symlink_metadata(&work).is_ok_and(|m| m.is_dir()) {
            for dir in real_folders(&work)? {
                let abandoned = fs::symlink_metadata(&dir)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < cutoff);
                if abandoned {
                    pruned.abandoned += 1;
                    if !dry_run {
                        let _ = fs::remove_dir_all(&dir);
                    }
                }
            }
        }
        Ok(pruned)
    }

    /// Moves an entry folder aside (one rename, so no reader sees part of it), then removes it.
    fn discard(&self, dir: &Path) {
        let Ok(work) = self.work_folder() else {
            return;
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let aside = work.join(unique_name(&format!("discarded-{name}")));
        if fs::rename(dir, &aside).is_ok() {
            let _ = fs::remove_dir_all(&aside);
        }
    }
}

/// The folders in `dir` (not links to folders), sorted; none when `dir` does not exist.
fn real_folders(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut folders = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            folders.push(entry.path());
        }
    }
    folders.sort();
    Ok(folders)
}

/// When an entry was last published or restored (its record's modification time), if `dir`
/// is an entry mmflow made: its record is a regular file naming the folder's key.
fn entry_last_used(dir: &Path) -> Option<SystemTime> {
    let record = dir.join(ENTRY_FILE);
    let meta = fs::symlink_metadata(&record).ok().filter(|m| m.is_file())?;
    let entry: CachedEntry = serde_json::from_slice(&fs::read(&record).ok()?).ok()?;
    let named = dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy() == entry.key);
    named.then(|| meta.modified().ok()).flatten()
}

/// The bytes of the regular files directly in `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok().filter(|m| m.is_file()))
        .map(|m| m.len())
        .sum()
}

/// `<stem>-<pid>-<nanos>`: unique among concurrent writers on this host, and with the host's
/// name among writers on several hosts sharing the cache.
fn unique_name(stem: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
        .unwrap_or_default();
    format!("{stem}-{host}-{}-{nanos}", std::process::id())
}

/// Links (or copies) each file into the entry folder and writes the record last.
fn fill_entry(
    tmp: &Path,
    entry: &CachedEntry,
    files: &BTreeMap<String, PathBuf>,
) -> io::Result<()> {
    for (name, output) in &entry.outputs {
        let from = files
            .get(name)
            .ok_or_else(|| io::Error::other(format!("no file for output `{name}`")))?;
        link_or_copy(from, &tmp.join(&output.file))?;
    }
    let json = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
    let record = tmp.join(ENTRY_FILE);
    fs::write(&record, json)?;
    fs::File::open(&record)?.sync_all()
}

/// A hard link to `from` at `to`, or a copy where the filesystem cannot link (another device,
/// no link support).
pub fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(_) => {
            fs::copy(from, to)?;
            fs::File::open(to)?.sync_all()
        }
    }
}

/// Reads and checks an entry; the reason it cannot be used otherwise.
fn verify_entry(dir: &Path, key: &str, ports: &[OutputPort]) -> Result<CachedEntry, String> {
    let entry = read_record(dir, key, ports)?;
    for port in ports {
        let output = &entry.outputs[&port.name];
        verify_file(&dir.join(&output.file), output)
            .map_err(|why| format!("{}: {why}", output.file))?;
    }
    Ok(entry)
}

/// An entry's record, when it is this entry's and names every declared output by its file.
fn read_record(dir: &Path, key: &str, ports: &[OutputPort]) -> Result<CachedEntry, String> {
    let record = dir.join(ENTRY_FILE);
    if !fs::symlink_metadata(&record).is_ok_and(|m| m.is_file()) {
        return Err(format!("{ENTRY_FILE} is missing"));
    }
    let text = fs::read(&record).map_err(|e| format!("{ENTRY_FILE}: {e}"))?;
    let entry: CachedEntry =
        serde_json::from_slice(&text).map_err(|e| format!("{ENTRY_FILE}: {e}"))?;
    if entry.format != ENTRY_FORMAT || entry.key != key {
        return Err(format!("{ENTRY_FILE} is not this entry's record"));
    }
    for port in ports {
        let Some(output) = entry.outputs.get(&port.name) else {
            return Err(format!("output `{}` is not in the entry", port.name));
        };
        if output.file != port.file_name() {
            return Err(format!(
                "output `{}` is recorded as `{}`",
                port.name, output.file
            ));
        }
    }
    Ok(entry)
}

fn verify_file(path: &Path, output: &CachedOutput) -> Result<(), String> {
    let meta = fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() != output.size {
        return Err(format!("{} bytes, recorded {}", meta.len(), output.size));
    }
    let hash = manifest::hash_file(path).map_err(|e| e.to_string())?;
    if hash != output.hash {
        return Err("its content does not match the recorded hash".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_filled_or_removed_through_a_link_in_place_of_the_work_folder() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("keep.txt"), "mine").unwrap();
        let cache = RunCache::at(dir.path().join("cache"));
        fs::create_dir(cache.root()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, cache.root().join(WORK_FOLDER)).unwrap();
        let output = dir.path().join("out.txt");
        fs::write(&output, "x").unwrap();
        let entry = CachedEntry {
            format: ENTRY_FORMAT,
            key: RunCache::key("f", "s"),
            stage: "s".into(),
            fingerprint: "f".into(),
            outputs: [(
                "out".to_string(),
                CachedOutput {
                    file: "out.txt".into(),
                    size: 1,
                    hash: manifest::hash_file(&output).unwrap(),
                    rows: None,
                    table: None,
                },
            )]
            .into(),
            report: BTreeMap::new(),
            duration_s: 0.0,
            mmflow_version: String::new(),
        };
        let files = [("out".to_string(), output)].into();
        let err = cache.store(&entry, &files).unwrap_err().to_string();
        assert!(err.contains("not a folder mmflow made"), "{err}");
        let left: Vec<_> = fs::read_dir(&elsewhere)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["keep.txt"]);
    }

    #[test]
    fn a_source_hash_is_known_only_at_the_size_and_time_it_was_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RunCache::at(dir.path().join("cache"));
        let source = dir.path().join("features.csd");
        fs::write(&source, b"abc").unwrap();
        let (size, mtime_ns) = manifest::stat(&source).unwrap();
        assert_eq!(cache.known_hash(&source, size, mtime_ns), None);
        let hash = manifest::hash_file(&source).unwrap();
        cache.remember_hash(&FileRecord {
            path: source.clone(),
            size,
            mtime_ns,
            hash: hash.clone(),
        });
        assert_eq!(cache.known_hash(&source, size, mtime_ns), Some(hash));
        // Another path to the same file finds it; another size or time does not.
        let link = dir.path().join("link.csd");
        std::os::unix::fs::symlink(&source, &link).unwrap();
        assert!(cache.known_hash(&link, size, mtime_ns).is_some());
        assert_eq!(cache.known_hash(&source, size + 1, mtime_ns), None);
        assert_eq!(cache.known_hash(&source, size, mtime_ns + 1), None);
    }
}
