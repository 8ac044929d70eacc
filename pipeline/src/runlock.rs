//! One `mmflow run` per run directory: an OS file lock (released by the OS if the process
//! dies, so a killed run never leaves the directory locked).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
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
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| EngineError::io(&path, e))?;
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
