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
//! record naming it; a work folder in `tmp/` when its name is one mmflow gives and it holds
//! the work mark mmflow writes into it first (or, set aside, its entry's record); anything
//! else is left in place — and nothing is written or followed through a link: the cache
//! folder, `tmp/`, `hashes/` and the prefix folders must be real folders.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mmflow_schemas::files::{own_folder, read_regular_at_most, read_text_at_most};
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

/// The file mmflow writes first into every work folder it makes in `tmp/`: a folder there
/// without it (or, for an entry set aside, without its record) is not mmflow's to remove.
const WORK_MARK: &str = ".mmflow-work";

/// Prefix of the work folder name of an entry set aside to be removed.
const DISCARDED: &str = "discarded-";

/// Largest `entry.json` read (a record names a few files and a stage's report).
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// Largest source-hash memo read (a path, a size, a time and a hash).
const MAX_MEMO_BYTES: u64 = 64 << 10;

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
    /// Why a run in `run_dir` cannot use this setting's folder, if it cannot: an empty path
    /// (the current folder), or the run directory or a folder holding it — pruning and
    /// filling the cache there would meet the run's and the user's own files.
    pub fn problem(&self, run_dir: &Path) -> Option<String> {
        let RunCacheSetting::At(folder) = self else {
            return None;
        };
        if folder.as_os_str().is_empty() {
            return Some(
                "must name a folder: an empty path would put the cache in the current folder \
                 (use `true` for `.mmflow-cache` beside the run directory, or `false`)"
                    .into(),
            );
        }
        let holds = |cache: &Path, run: &Path| run.starts_with(cache);
        let lexically = holds(&absolute(folder), &absolute(run_dir));
        let really = match (fs::canonicalize(folder), fs::canonicalize(run_dir)) {
            (Ok(cache), Ok(run)) => holds(&cache, &run),
            _ => false,
        };
        (lexically || really).then(|| {
            format!(
                "`{}` is the run directory {} or a folder holding it; the run-cache needs a \
                 folder of its own (use `true` for `.mmflow-cache` beside the run directory)",
                folder.display(),
                run_dir.display()
            )
        })
    }

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

/// `path` made absolute against the current folder, `.` and `..` resolved by name (the path
/// need not exist).
fn absolute(path: &Path) -> PathBuf {
    use std::path::Component;
    let joined = std::env::current_dir().unwrap_or_default().join(path);
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
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
        /// True if it was an entry mmflow wrote (it has a record naming its key) and has been
        /// removed; a folder without one is not taken for one of mmflow's and is left in place.
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
    /// What is in the cache folder but was not made by mmflow, left where it is.
    pub skipped: Vec<PathBuf>,
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

    /// `Ok` when the cache folder is a real folder or absent (it is made when the first entry
    /// is stored); a link or a file in its place is refused, saying so: mmflow would otherwise
    /// fill, set aside and remove folders inside someone else's folder.
    pub fn check_folder(&self) -> io::Result<()> {
        mmflow_schemas::files::check_own_folder(&self.root)
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
                let ours = record_key(&dir).as_deref() == Some(key);
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
        let tmp = self.new_work_folder(&entry.key)?;
        let filled = fill_entry(&tmp, entry, files);
        let published = filled.and_then(|()| {
            let dir = self.entry_dir(&entry.key);
            own_folder(dir.parent().expect("an entry lies in a prefix folder"))?;
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

    /// `<cache>/tmp`, created if absent; a link (or anything but a folder) in place of it or
    /// of the cache folder is not mmflow's, and nothing is filled or removed through it.
    fn work_folder(&self) -> io::Result<PathBuf> {
        own_folder(&self.root)?;
        let work = self.root.join(WORK_FOLDER);
        own_folder(&work)?;
        Ok(work)
    }

    /// A new work folder in `tmp/` named after `stem` ([`unique_name`]), the work mark
    /// written into it first: what prune may later recognise as mmflow's.
    pub(crate) fn new_work_folder(&self, stem: &str) -> io::Result<PathBuf> {
        let tmp = self.work_folder()?.join(unique_name(stem));
        fs::create_dir(&tmp)?;
        fs::write(
            tmp.join(WORK_MARK),
            b"a work folder of mmflow's run-cache\n",
        )?;
        Ok(tmp)
    }

    /// The content hash a run sharing this cache recorded for the source file `path` when it
    /// had this size and modification time.
    pub fn known_hash(&self, path: &Path, size: u64, mtime_ns: u128) -> Option<String> {
        let memo = self.hash_memo(path)?;
        let record: FileRecord =
            serde_json::from_slice(&read_regular_at_most(&memo, MAX_MEMO_BYTES).ok()?).ok()?;
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
        // Something else in the memo's place (a FIFO, a folder, a link) is not mmflow's to
        // replace: the file is hashed again next time.
        if fs::symlink_metadata(&memo).is_ok_and(|m| !m.is_file()) {
            return;
        }
        let unchanged = read_regular_at_most(&memo, MAX_MEMO_BYTES)
            .ok()
            .and_then(|b| serde_json::from_slice::<FileRecord>(&b).ok())
            .is_some_and(|known| known == memo_record);
        let folders =
            || own_folder(&self.root).and_then(|()| own_folder(&self.root.join(HASHES_FOLDER)));
        if unchanged || folders().is_err() {
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
    /// removed: an entry folder whose record names it, a work folder named as mmflow names them
    /// holding its work mark (or, set aside, its entry's record). Anything else (a link, a
    /// file, a folder without a record or mark, a name mmflow never gives) is left in place,
    /// listed in [`Pruned::skipped`], and nothing is followed through a link; a cache folder
    /// that is itself a link is refused. Each entry is moved aside in one rename before it is
    /// removed, so a run restoring from it at the same time finds the whole entry or none (and
    /// then runs the stage).
    pub fn prune(&self, cutoff: SystemTime, dry_run: bool) -> io::Result<Pruned> {
        let mut pruned = Pruned::default();
        self.check_folder()?;
        if !fs::symlink_metadata(&self.root).is_ok_and(|m| m.is_dir()) {
            return Ok(pruned);
        }
        for (path, file_type) in folder_entries(&self.root)? {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            match name.as_ref() {
                WORK_FOLDER if file_type.is_dir() => {
                    self.prune_work_folders(&path, cutoff, dry_run, &mut pruned)?
                }
                HASHES_FOLDER if file_type.is_dir() => {}
                _ if is_prefix(&name) && file_type.is_dir() => {
                    self.prune_prefix(&path, cutoff, dry_run, &mut pruned)?
                }
                _ => pruned.skipped.push(path),
            }
        }
        Ok(pruned)
    }

    /// Prunes the entries of one prefix folder (`<cache>/ab/`).
    fn prune_prefix(
        &self,
        prefix: &Path,
        cutoff: SystemTime,
        dry_run: bool,
        pruned: &mut Pruned,
    ) -> io::Result<()> {
        for (dir, file_type) in folder_entries(prefix)? {
            let used = file_type.is_dir().then(|| entry_last_used(&dir)).flatten();
            let Some(used) = used else {
                pruned.skipped.push(dir);
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
        Ok(())
    }

    /// Removes the work folders in `tmp/` that mmflow made and nobody touched since `cutoff`
    /// (left by killed runs).
    fn prune_work_folders(
        &self,
        work: &Path,
        cutoff: SystemTime,
        dry_run: bool,
        pruned: &mut Pruned,
    ) -> io::Result<()> {
        for (dir, file_type) in folder_entries(work)? {
            if !(file_type.is_dir() && is_own_work_folder(&dir)) {
                pruned.skipped.push(dir);
                continue;
            }
            let abandoned = fs::symlink_metadata(&dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if abandoned {
                pruned.abandoned += 1;
                if !dry_run {
                    // `remove_dir_all` never follows a link inside the folder.
                    let _ = fs::remove_dir_all(&dir);
                }
            }
        }
        Ok(())
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
        let aside = work.join(unique_name(&format!("{DISCARDED}{name}")));
        if fs::rename(dir, &aside).is_ok() {
            let _ = fs::remove_dir_all(&aside);
        }
    }
}

/// What is in `dir`, with each thing's own type (a link is a link, not what it points to),
/// sorted by name.
fn folder_entries(dir: &Path) -> io::Result<Vec<(PathBuf, fs::FileType)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        entries.push((entry.path(), entry.file_type()?));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// A prefix folder's name: the first two hex digits of the keys it holds.
fn is_prefix(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A key as [`RunCache::key`] makes them: 32 lowercase hex digits.
fn is_key(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `dir` (a real folder in `tmp/`) is a work folder mmflow made: named as
/// [`unique_name`] names them — a key, or `discarded-` and a key, then `-<host>-<pid>-<nanos>`
/// — and holding the work mark, or, for an entry set aside, the record of that key.
fn is_own_work_folder(dir: &Path) -> bool {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Some(stem) = work_folder_stem(name) else {
        return false;
    };
    let has_mark = fs::symlink_metadata(dir.join(WORK_MARK)).is_ok_and(|m| m.is_file());
    let set_aside_entry = stem
        .strip_prefix(DISCARDED)
        .is_some_and(|key| record_key(dir).as_deref() == Some(key));
    has_mark || set_aside_entry
}

/// The stem of a name [`unique_name`] made (`<stem>-<host>-<pid>-<nanos>`), when the stem is
/// a key or a discarded key.
fn work_folder_stem(name: &str) -> Option<&str> {
    let mut parts = name.rsplitn(4, '-');
    let nanos = parts.next()?;
    let pid = parts.next()?;
    let host = parts.next()?;
    let stem = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let host_ok = host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let stem_ok = is_key(stem.strip_prefix(DISCARDED).unwrap_or(stem));
    (digits(nanos) && digits(pid) && host_ok && stem_ok).then_some(stem)
}

/// The key the record in `dir` names, if it holds one.
fn record_key(dir: &Path) -> Option<String> {
    let bytes = read_regular_at_most(&dir.join(ENTRY_FILE), MAX_RECORD_BYTES).ok()?;
    Some(serde_json::from_slice::<CachedEntry>(&bytes).ok()?.key)
}

/// When an entry was last published or restored (its record's modification time), if `dir`
/// is an entry mmflow made: its record is a regular file naming the folder's key.
fn entry_last_used(dir: &Path) -> Option<SystemTime> {
    let record = dir.join(ENTRY_FILE);
    let meta = fs::symlink_metadata(&record).ok().filter(|m| m.is_file())?;
    let named = dir
        .file_name()
        .is_some_and(|n| Some(n.to_string_lossy().as_ref()) == record_key(dir).as_deref());
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
    let host = read_text_at_most(Path::new("/proc/sys/kernel/hostname"), 4096)
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
    let mut record = fs::File::create_new(tmp.join(ENTRY_FILE))?;
    io::Write::write_all(&mut record, &json)?;
    record.sync_all()
}

/// A hard link to `from` at `to`, or a copy where the filesystem cannot link (another device,
/// no link support).
pub fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(_) => {
            fs::copy(from, to)?;
            mmflow_schemas::files::sync_to_disk(to)
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
    let text =
        read_regular_at_most(&record, MAX_RECORD_BYTES).map_err(|e| format!("{ENTRY_FILE} {e}"))?;
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
