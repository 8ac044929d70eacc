//! Writing beside a user's files without ever losing one: what this crate writes (a report
//! folder, a comparison table) is built in a fresh folder that this process created beside
//! the destination, under a name of mmflow's own pattern, and renamed into place. Every
//! error path removes that folder and nothing else.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Name suffix of every staging folder (what a killed process may leave behind).
pub const SUFFIX: &str = ".partial";

/// A folder this process created for staging; removed when dropped unless handed over.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    owned: bool,
}

impl Staging {
    /// Creates a fresh, empty folder `.<name>.<pid>-<n>.partial` beside `dest` (`create_dir`
    /// refuses an existing path, a symbolic link included, so the folder is always ours).
    pub fn beside(dest: &Path) -> io::Result<Staging> {
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::other("the destination has no file name"))?
            .to_string_lossy()
            .into_owned();
        let parent = parent_of(dest);
        for n in 0..1000 {
            let path = parent.join(format!(".{name}.{}-{n}{SUFFIX}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Staging { path, owned: true }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "no free staging name beside {}",
            dest.display()
        )))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops owning the folder: it is no longer removed when dropped (it was renamed into
    /// place, or its contents were removed one by one).
    pub fn release(mut self) {
        self.owned = false;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.owned {
            // `remove_dir_all` never follows symbolic links, and the folder is ours.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Folders created to hold a destination; removed again (only while still empty) unless
/// kept, so a failed command leaves no folder behind either.
#[derive(Debug)]
pub struct Parents {
    /// Deepest first.
    created: Vec<PathBuf>,
}

impl Parents {
    /// Creates `dir` and whichever of its ancestors are missing.
    pub fn create(dir: &Path) -> io::Result<Parents> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at.filter(|d| !d.as_os_str().is_empty()) {
            match fs::symlink_metadata(d) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(d.to_path_buf()),
                Err(e) => return Err(e),
            }
            at = d.parent();
        }
        let mut parents = Parents {
            created: Vec::new(),
        };
        for d in missing.into_iter().rev() {
            fs::create_dir(&d)?;
            parents.created.insert(0, d);
        }
        Ok(parents)
    }

    /// Keeps the folders created.
    pub fn keep(mut self) {
        self.created.clear();
    }
}

impl Drop for Parents {
    fn drop(&mut self) {
        for d in &self.created {
            // `remove_dir` removes nothing but an empty folder.
            let _ = fs::remove_dir(d);
        }
    }
}

/// The folder holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_folder_is_fresh_and_removed_unless_released() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let a = Staging::beside(&dest).unwrap();
        let b = Staging::beside(&dest).unwrap();
        assert_ne!(a.path(), b.path());
        assert!(a
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with(SUFFIX));
        fs::write(a.path().join("x"), "x").unwrap();
        let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
        drop(a);
        assert!(!pa.exists());
        b.release();
        assert!(pb.is_dir());
    }

    #[test]
    fn missing_parents_are_created_and_removed_again_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        let parents = Parents::create(&deep).unwrap();
        assert!(deep.is_dir());
        drop(parents);
        assert!(!dir.path().join("a").exists());
        Parents::create(&deep).unwrap().keep();
        assert!(deep.is_dir());
    }

    #[cfg(unix)]
    #[test]
    fn a_link_at_the_staging_name_is_skipped_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("keep"), "keep").unwrap();
        let dest = dir.path().join("out");
        let taken = dir
            .path()
            .join(format!(".out.{}-0{SUFFIX}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &taken).unwrap();
        let s = Staging::beside(&dest).unwrap();
        assert_ne!(s.path(), taken);
        drop(s);
        assert_eq!(fs::read_to_string(victim.join("keep")).unwrap(), "keep");
        assert!(fs::symlink_metadata(&taken)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
