//! The bad-input table: every row is one bad input (a config, an override, a data file, a
//! tampered table or lock, a special file, a run directory) with the command that meets it and
//! what the failure must look like.
//!
//! For every row the runner checks that mmflow
//! - exits with the expected code (never a panic, an abort or a signal) within a time limit,
//!   under an address-space limit (unbounded memory is a failure, not a slow test);
//! - says what is at fault: every `says` string appears in its output;
//! - never says "internal error" or "panicked";
//! - leaves every file that existed before the command byte-for-byte as it was (previous good
//!   outputs and the lock file intact), and
//! - leaves nothing partial behind: no temporaries, no new files beyond `may_write`.
//!
//! Each area keeps its rows in its own module; one test per area runs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::Dir;

/// One bad input.
pub struct Case {
    /// What is wrong, in a few words (unique within the table).
    pub what: &'static str,
    /// Prepares the directory: writes the bad file, runs a good pipeline first, tampers with
    /// its outputs… Runs before the snapshot of existing files is taken.
    pub setup: fn(&Dir),
    /// The command under test (arguments to `mmflow`). `{data}` is replaced by the
    /// repository's `tests/data` folder.
    pub args: &'static [&'static str],
    /// The expected exit code (1: a stage or command failed on bad data, 2: bad config/usage).
    pub code: i32,
    /// Strings the output (stderr + stdout) must contain: the file, stage, key, row or video at fault.
    pub says: &'static [&'static str],
    /// Relative paths (prefixes) under which the failing command may create new files (e.g.
    /// the complete outputs of an independent stage that succeeded). Usually empty.
    pub may_write: &'static [&'static str],
}

/// How long one command may take before it counts as a hang.
const TIME_LIMIT: Duration = Duration::from_secs(120);
/// Address-space limit for one command: far above what these tiny inputs need, far below
/// what an unchecked size read from a file would allocate.
const MEMORY_LIMIT_BYTES: u64 = 8 << 30;

/// This repository's test inputs.
pub fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The OS lock a run takes on its run directory: rewritten (with the process id) by every
/// command that takes it, never read as a result.
const RUN_LOCK: &str = ".mmflow-run.lock";
/// Files that record a run that started: a failed first run leaves them behind as the record
/// of an unfinished run, which every reader of results refuses.
const RUN_RECORD: [&str; 2] = ["mmflow.lock", "pipeline.toml"];

/// Every file below `root` with its contents (symlinks recorded by their target); the run
/// lock is left out.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if entry.file_name() == RUN_LOCK {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap_or_default();
                out.insert(rel, target.to_string_lossy().as_bytes().to_vec());
            } else if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                out.insert(rel, std::fs::read(&path).unwrap_or_default());
            } else {
                // FIFOs, sockets, devices: recorded by kind only (never read).
                out.insert(rel, b"<special>".to_vec());
            }
        }
    }
    out
}

/// Runs `mmflow` in `dir` with a time and memory limit; `None` if it had to be killed.
fn run_bounded(dir: &Dir, args: &[String]) -> Option<(i32, String)> {
    let bin = env!("CARGO_BIN_EXE_mmflow");
    let mut cmd = if Path::new("/usr/bin/prlimit").exists() {
        let mut c = std::process::Command::new("/usr/bin/prlimit");
        c.arg(format!("--as={MEMORY_LIMIT_BYTES}")).arg(bin);
        c
    } else {
        std::process::Command::new(bin)
    };
    let out_path = dir.path().join("..").join(format!(
        "{}.out",
        dir.path().file_name().unwrap().to_string_lossy()
    ));
    let out_file = std::fs::File::create(&out_path).unwrap();
    let mut child = cmd
        .args(args)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .spawn()
        .expect("mmflow starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output =
        String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&out_path);
    status.map(|s| (s.code().unwrap_or(-1), output))
}

fn is_temporary(path: &Path) -> bool {
    path.components().any(|c| {
        let c = c.as_os_str().to_string_lossy();
        c.starts_with(".tmp") || c.ends_with(".tmp") || c.ends_with(".partial")
    })
}

/// Runs every case; collects every failure and panics once with all of them.
pub fn check(cases: &[Case]) {
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for case in cases {
        assert!(seen.insert(case.what), "duplicate row `{}`", case.what);
        if let Err(why) = check_one(case) {
            failures.push(format!("- {}: {why}", case.what));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs mishandled:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn check_one(case: &Case) -> Result<(), String> {
    let dir = Dir::new();
    (case.setup)(&dir);
    let before = snapshot(dir.path());
    let data = data();
    let args: Vec<String> = case
        .args
        .iter()
        .map(|a| a.replace("{data}", &data.to_string_lossy()))
        .collect();
    let Some((code, output)) = run_bounded(&dir, &args) else {
        return Err(format!("still running after {TIME_LIMIT:?} (a hang)"));
    };
    let show = || {
        format!(
            "\n    output: {}",
            output.trim().replace('\n', "\n            ")
        )
    };
    if code != case.code {
        return Err(format!(
            "exit code {code}, expected {}{}",
            case.code,
            show()
        ));
    }
    for bad in ["panicked", "internal error", "RUST_BACKTRACE"] {
        if output.contains(bad) {
            return Err(format!("output says `{bad}`{}", show()));
        }
    }
    for expected in case.says {
        if !output.contains(expected) {
            return Err(format!("output does not say `{expected}`{}", show()));
        }
    }
    let after = snapshot(dir.path());
    for (path, contents) in &before {
        match after.get(path) {
            None => return Err(format!("{} was removed", path.display())),
            Some(now) if now != contents => return Err(format!("{} was changed", path.display())),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        if is_temporary(path) {
            return Err(format!("temporary {} left behind", path.display()));
        }
        let records_a_run = path
            .file_name()
            .is_some_and(|n| RUN_RECORD.iter().any(|r| n == *r));
        if !records_a_run && !case.may_write.iter().any(|prefix| path.starts_with(prefix)) {
            return Err(format!(
                "new file {} written by a failed command",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Writes `text` as the pipeline file `p.toml`.
pub fn pipeline(dir: &Dir, text: &str) {
    dir.write("p.toml", text);
}

/// Writes raw bytes to `rel` (creating parent directories).
pub fn write_bytes(dir: &Dir, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// Runs `mmflow args` in `dir` and panics unless it succeeds (a good run before the bad one).
pub fn good_run(dir: &Dir, args: &[&str]) {
    dir.mmflow(args).ok();
}

mod cache;
mod config;
mod csv;
mod embed;
mod parquet;
mod readers;
mod reports;
mod runs;

/// A FIFO (named pipe) at `rel`: reading it would block forever.
pub fn mkfifo(d: &Dir, rel: &str) {
    let made = std::process::Command::new("mkfifo")
        .arg(d.join(rel))
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {rel}");
}
