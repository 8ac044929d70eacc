//! What a report is of: run directories named on the command line, or a sweep's folder (a
//! folder whose subfolders are runs: `<run dir>/mmflow.sweep`). A named run must be finished;
//! a sweep's unfinished runs are named in the report, and the finished ones reported.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mmflow_pipeline::manifest::{MANIFEST_FILE, RESOLVED_CONFIG_FILE};
use mmflow_pipeline::record::RunRecord;

use super::DEFAULT_FOLDER;

/// Folder names mmflow gives its own folders in a sweep's folder (the stages every run
/// shares, reports): never a run of the sweep, whose folders are named by their settings.
const OWN_FOLDER_PREFIX: &str = "mmflow.";

/// A finished run and the name the report gives it.
pub(crate) struct Run {
    pub(crate) name: String,
    pub(crate) record: RunRecord,
}

/// The runs a report is of.
pub(crate) struct Study {
    pub(crate) runs: Vec<Run>,
    /// The runs of a sweep that are not finished: `name: why`.
    pub(crate) unfinished: Vec<String>,
    /// The sweep's folder, when the report is of one sweep.
    pub(crate) sweep: Option<PathBuf>,
}

impl Study {
    /// Reads each of `paths` as a finished run or a sweep's folder.
    pub(crate) fn load(paths: &[PathBuf]) -> Result<Study> {
        let mut study = Study {
            runs: Vec::new(),
            unfinished: Vec::new(),
            sweep: None,
        };
        for path in paths {
            if is_run(path) {
                study.runs.push(Run {
                    name: path.display().to_string(),
                    record: RunRecord::load(path)?,
                });
                continue;
            }
            let Some(children) = sweep_runs(path)? else {
                // Not a run, not a sweep: the record says why.
                RunRecord::load(path)?;
                bail!("{}: not an mmflow run directory", path.display());
            };
            for (name, dir) in children {
                match RunRecord::load(&dir) {
                    Ok(record) => study.runs.push(Run { name, record }),
                    Err(e) => study.unfinished.push(format!("{name}: {e}")),
                }
            }
            if paths.len() == 1 {
                study.sweep = Some(path.clone());
            }
        }
        if study.runs.is_empty() {
            bail!("no finished run to report: {}", study.unfinished.join("; "));
        }
        for line in &study.unfinished {
            tracing::warn!("not in the report (unfinished): {line}");
        }
        Ok(study)
    }

    /// Where the report goes unless `--out` says: `<run>/mmflow.report` for one run,
    /// `<sweep folder>/mmflow.report` for a sweep; `None` for several runs.
    pub(crate) fn default_destination(&self, paths: &[PathBuf]) -> Option<PathBuf> {
        match paths {
            [one] => Some(one.join(DEFAULT_FOLDER)),
            _ => None,
        }
    }

    /// The run directories read.
    pub(crate) fn dirs(&self) -> Vec<&Path> {
        self.runs.iter().map(|r| r.record.dir.as_path()).collect()
    }
}

/// Whether `path` is a run directory (it has a lock file or the settings of a run).
fn is_run(path: &Path) -> bool {
    [MANIFEST_FILE, RESOLVED_CONFIG_FILE]
        .iter()
        .any(|f| fs::symlink_metadata(path.join(f)).is_ok())
}

/// The runs in a sweep's folder (its subfolders that are run directories, by name), or `None`
/// when `path` is no folder holding runs. Links are not followed.
fn sweep_runs(path: &Path) -> Result<Option<Vec<(String, PathBuf)>>> {
    if !fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Ok(None);
    }
    let mut runs = Vec::new();
    for entry in fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        let entry = entry.with_context(|| format!("listing {}", path.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let real_folder = fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        if real_folder && !name.starts_with(OWN_FOLDER_PREFIX) && is_run(&dir) {
            runs.push((name, dir));
        }
    }
    runs.sort();
    Ok((!runs.is_empty()).then_some(runs))
}
