//! One `mmflow run` per run directory: an OS file lock (released by the OS if the process
//! dies, so a killed run never leaves the directory locked).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::EngineError;

const LOCK_FILE: &str = ".mmflow-run.lock";

/// Held for the duration of a run.
pub(crate) struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `run_dir`, waiting for it if `wait`, else failing at once if held.
    pub(crate) fn acquire(run_dir: &Path, wait: bool) -> Result<RunLock, EngineError> {
        let path = run_dir.join(LOCK_FILE);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
            return Err(EngineError::io(&path, not_ours()));
        }
        // O_NOFOLLOW: a link planted after the check above is refused, not followed (with
        // O_CREAT, a dangling link would create its target outside the run directory).
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| EngineError::io(&path, e))?;
        opened_in_place(&path, &file).map_err(|e| EngineError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if wait => {
                tracing::info!("waiting for another run to release {}", run_dir.display());
                file.lock().map_err(|e| EngineError::io(&path, e))?;
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(EngineError::Busy {
                    dir: run_dir.to_path_buf(),
                    holder: (!holder.is_empty()).then(|| holder.to_string()),
                });
            }
            Err(TryLockError::Error(e)) => return Err(EngineError::io(&path, e)),
        }
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(RunLock { _file: file })
    }
}

/// The lock file is rewritten (truncated) once held: it must be the regular file at `path`
/// itself, never a file reached through a symbolic link or a special file.
fn opened_in_place(path: &Path, file: &File) -> std::io::Result<()> {
    let at_path = std::fs::symlink_metadata(path)?;
    let opened = file.metadata()?;
    let same = {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            at_path.dev() == opened.dev() && at_path.ino() == opened.ino()
        }
        #[cfg(not(unix))]
        {
            !at_path.file_type().is_symlink()
        }
    };
    if same && at_path.is_file() {
        Ok(())
    } else {
        Err(not_ours())
    }
}

fn not_ours() -> std::io::Error {
    std::io::Error::other(
        "not a lock file mmflow wrote (a symbolic link or a special file); remove it",
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_linked_lock_file_is_refused_and_its_target_left_intact() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("notes.txt");
        std::fs::write(&user, "my notes").unwrap();
        std::os::unix::fs::symlink(&user, dir.path().join(LOCK_FILE)).unwrap();
        let err = RunLock::acquire(dir.path(), false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(LOCK_FILE) && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&user).unwrap(), "my notes");
    }

    #[test]
    fn a_regular_lock_file_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path(), false).unwrap();
        drop(lock);
        RunLock::acquire(dir.path(), false).unwrap();
    }
}
