//! Where a report goes: the destination must be new, an empty folder, or a folder mmflow
//! marked as a report (the marker [`MARKER`] lists the files mmflow wrote there); anything
//! else (a run directory, a user's folder, a file, a link, the current folder or one holding
//! it) is refused before anything is written. A finished report replaces an old one only
//! after it is complete.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use mmflow_pipeline::manifest::MANIFEST_FILE;
use mmflow_pipeline::manifest::RESOLVED_CONFIG_FILE;

use super::DEFAULT_FOLDER;
use crate::staging::Staging;

/// Written in every report folder: `MARKER_HEADER`, then the files mmflow wrote there, one
/// per line. Only a folder holding it (and nothing else) is ever replaced.
pub const MARKER: &str = ".mmflow-report";
const MARKER_HEADER: &str = "mmflow report (the next report replaces the files listed here)";

/// What is at the report's destination now.
#[derive(Debug, PartialEq)]
pub(crate) enum Destination {
    /// Nothing: the report folder is created.
    New,
    /// An empty folder: the report takes its place.
    Empty,
    /// A report mmflow wrote, holding only the files its marker lists.
    OldReport(Vec<String>),
}

impl Destination {
    /// Looks at `dest` without writing anything; refuses what mmflow may not replace (a
    /// folder holding one of the reported `runs` among it).
    pub(crate) fn check(dest: &Path, runs: &[&Path]) -> Result<Destination> {
        let refuse = |why: &str| anyhow!("cannot write the report to {}: {why}", dest.display());
        if dest.file_name().is_none() {
            return Err(refuse(
                "not a folder name (`.`, `..` and `/` are never replaced); name a new folder, e.g. `--out my-report`",
            ));
        }
        let meta = match fs::symlink_metadata(dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Destination::New),
            Err(e) => return Err(e).with_context(|| dest.display().to_string()),
            Ok(meta) => meta,
        };
        if meta.file_type().is_symlink() {
            return Err(refuse(
                "it is a symbolic link, and mmflow does not write through links; name the real folder or a new one",
            ));
        }
        if !meta.is_dir() {
            return Err(refuse(
                "it is a file, not a report folder; name a new folder",
            ));
        }
        if [MANIFEST_FILE, RESOLVED_CONFIG_FILE]
            .iter()
            .any(|f| fs::symlink_metadata(dest.join(f)).is_ok())
        {
            return Err(refuse(&format!(
                "it is a run directory (it has {MANIFEST_FILE} or {RESOLVED_CONFIG_FILE}); name a new folder (the default is `<RUN>/{DEFAULT_FOLDER}`)"
            )));
        }
        let here = fs::canonicalize(dest).with_context(|| dest.display().to_string())?;
        let holds = |p: io::Result<PathBuf>| {
            p.and_then(fs::canonicalize)
                .is_ok_and(|p| p.starts_with(&here))
        };
        if holds(std::env::current_dir()) {
            return Err(refuse(
                "it is the current folder or one that holds it; name a new folder",
            ));
        }
        if runs.iter().any(|run| holds(Ok(run.to_path_buf()))) {
            return Err(refuse("it holds a run directory; name a new folder"));
        }
        let entries = folder_entries(dest)?;
        if entries.is_empty() {
            return Ok(Destination::Empty);
        }
        let Some(listed) = read_marker(dest) else {
            return Err(refuse(&format!(
                "it is a folder with files in it that mmflow did not mark as a report (no `{MARKER}` inside); name a new folder, or empty this one yourself"
            )));
        };
        for entry in &entries {
            let ours = entry == MARKER || listed.contains(entry);
            if !ours || !is_plain_file(&dest.join(entry)) {
                return Err(refuse(&format!(
                    "`{entry}` in it was not written by mmflow; move it out, or name a new folder"
                )));
            }
        }
        Ok(Destination::OldReport(listed))
    }

    /// Moves the finished report in `new` to `dest`. An old report is renamed aside first,
    /// restored if the new one cannot be moved in, and removed (its listed files only)
    /// once the new one is in place.
    pub(crate) fn replace_with(self, new: Staging, dest: &Path) -> Result<()> {
        let install = |new: &Staging| {
            fs::rename(new.path(), dest)
                .with_context(|| format!("moving the report into {}", dest.display()))
        };
        match self {
            Destination::New | Destination::Empty => install(&new)?,
            Destination::OldReport(listed) => {
                // An empty folder of ours; renaming the old report onto it replaces it.
                let aside = Staging::beside(dest)
                    .with_context(|| format!("creating a folder beside {}", dest.display()))?;
                fs::rename(dest, aside.path()).with_context(|| {
                    format!("moving the previous report {} aside", dest.display())
                })?;
                let old = aside.path().to_path_buf();
                aside.release();
                if let Err(e) = install(&new) {
                    return Err(match fs::rename(&old, dest) {
                        Ok(()) => e,
                        Err(_) => {
                            e.context(format!("the previous report is kept at {}", old.display()))
                        }
                    });
                }
                remove_old_report(&old, &listed);
            }
        }
        new.release();
        Ok(())
    }
}

/// Names in a folder (not following links).
fn folder_entries(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn is_plain_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// The files a report folder's marker lists; `None` if it has no marker mmflow wrote.
fn read_marker(dir: &Path) -> Option<Vec<String>> {
    let path = dir.join(MARKER);
    if !fs::symlink_metadata(&path).ok()?.is_file() {
        return None;
    }
    let text = mmflow_schemas::files::read_text_at_most(&path, 1 << 20).ok()?;
    let mut lines = text.lines();
    (lines.next() == Some(MARKER_HEADER)).then(|| {
        lines
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    })
}

pub(crate) fn write_marker(dir: &Path, files: &[String]) -> Result<()> {
    let mut text = format!("{MARKER_HEADER}\n");
    for f in files {
        writeln!(text, "{f}")?;
    }
    fs::write(dir.join(MARKER), text).with_context(|| format!("writing {}", dir.display()))
}

/// Removes a previous report moved aside: the files its marker lists and the marker, then the
/// folder if that left it empty. Anything else in it stays (with a warning).
fn remove_old_report(old: &Path, listed: &[String]) {
    for name in folder_entries(old).unwrap_or_default() {
        let path = old.join(&name);
        if (name == MARKER || listed.contains(&name)) && is_plain_file(&path) {
            let _ = fs::remove_file(&path);
        }
    }
    if let Err(e) = fs::remove_dir(old) {
        tracing::warn!(
            "the previous report was moved to {} and could not be removed: {e}",
            old.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::MARKDOWN;

    fn marked(dir: &Path, files: &[&str]) {
        fs::create_dir_all(dir).unwrap();
        for f in files {
            fs::write(dir.join(f), "x").unwrap();
        }
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        write_marker(dir, &files).unwrap();
    }

    #[test]
    fn only_new_empty_or_marked_folders_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let at = |rel: &str| dir.path().join(rel);
        let run = at("run");
        fs::create_dir(&run).unwrap();
        fs::write(run.join(MANIFEST_FILE), "{}").unwrap();
        let check = |rel: &str| Destination::check(&at(rel), &[run.as_path()]);
        assert_eq!(check("new").unwrap(), Destination::New);
        fs::create_dir(at("empty")).unwrap();
        assert_eq!(check("empty").unwrap(), Destination::Empty);
        marked(&at("old"), &["report.md", "a.svg"]);
        assert_eq!(
            check("old").unwrap(),
            Destination::OldReport(vec!["report.md".into(), "a.svg".into()])
        );
        fs::create_dir(at("mine")).unwrap();
        fs::write(at("mine/notes.txt"), "mine").unwrap();
        fs::write(at("file"), "mine").unwrap();
        std::os::unix::fs::symlink(at("empty"), at("link")).unwrap();
        marked(&at("added"), &["report.md"]);
        fs::write(at("added/notes.txt"), "mine").unwrap();
        for (rel, why) in [
            ("mine", "did not mark as a report"),
            ("file", "it is a file"),
            ("link", "symbolic link"),
            ("run", "run directory"),
            ("added", "`notes.txt` in it was not written by mmflow"),
        ] {
            let err = check(rel).unwrap_err().to_string();
            assert!(err.contains(why), "{rel}: {err}");
        }
        for odd in [".", "/", "..", ""] {
            let err = Destination::check(Path::new(odd), &[run.as_path()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a folder name"), "{odd}: {err}");
        }
        let err = Destination::check(&std::env::current_dir().unwrap(), &[run.as_path()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("current folder") || err.contains("did not mark"),
            "{err}"
        );
    }

    #[test]
    fn an_old_report_is_swapped_out_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("rep");
        marked(&dest, &["report.md", "old.svg"]);
        let found = Destination::check(&dest, &[dir.path().join("run").as_path()]).unwrap();
        let new = Staging::beside(&dest).unwrap();
        fs::write(new.path().join(MARKDOWN), "new").unwrap();
        write_marker(new.path(), &[MARKDOWN.to_string()]).unwrap();
        found.replace_with(new, &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join(MARKDOWN)).unwrap(), "new");
        assert!(!dest.join("old.svg").exists());
        let left: Vec<String> = folder_entries(dir.path()).unwrap();
        assert_eq!(left, ["rep"]);
    }
}
