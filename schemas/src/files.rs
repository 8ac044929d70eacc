//! Opening files a user names (only regular files are ever read), and the folders mmflow
//! writes into (only real folders, never through a link).
//!
//! A FIFO blocks a reader forever, `/dev/zero` never ends, a socket cannot be read at all,
//! and a directory is not the file a stage expects. Every path mmflow reads on a user's word
//! (source files it hashes for fingerprints, and the files the readers parse) goes through
//! [`regular_file_size`] or [`open_regular`] first, so such a path is refused, with the kind
//! of thing it is, before anything is opened for reading. Symbolic links are followed: a
//! link to a regular file is fine.

use std::fs::{File, FileType, Metadata};
use std::io;
use std::path::Path;

/// What a path is, for messages.
fn describe(file_type: FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// `Ok` if `meta` describes a regular file; else an `InvalidInput` error saying what it is.
fn require_regular(meta: &Metadata) -> io::Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "is {}, expected a regular file (mmflow reads only regular files)",
            describe(meta.file_type())
        ),
    ))
}

/// The size of the regular file at `path` (a symlink to one is followed); an error saying
/// what the path is when it is a directory, FIFO, device or socket. Opens nothing.
pub fn regular_file_size(path: &Path) -> io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    require_regular(&meta)?;
    Ok(meta.len())
}

/// Opens the regular file at `path` for reading, with its size; refuses anything else
/// before opening it (see [`regular_file_size`]), and checks the opened file again, so a
/// path swapped for something else in between is refused too.
pub fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    regular_file_size(path)?;
    let file = File::open(path)?;
    let meta = file.metadata()?;
    require_regular(&meta)?;
    Ok((file, meta.len()))
}

/// Reads the whole regular file at `path` (see [`open_regular`]).
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let (mut file, len) = open_regular(path)?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads the whole regular file at `path` (see [`open_regular`]) if it holds at most `limit`
/// bytes; a larger file is an `InvalidData` error saying both sizes, found before anything is
/// read (and a file that grows past the limit while it is read is refused too).
pub fn read_regular_at_most(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let too_large = |len: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is {len} bytes, more than the {limit} bytes such a file may hold"),
        )
    };
    let (file, len) = open_regular(path)?;
    if len > limit {
        return Err(too_large(len));
    }
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))?;
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read_regular_at_most`] as UTF-8 text.
pub fn read_text_at_most(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_regular_at_most(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

/// The folder at `path` for mmflow to write into, created (with its parents) when absent.
/// A link, a file or anything but a real folder in its place is refused (an `InvalidInput`
/// error saying what it is): mmflow never writes, renames or removes through a link into a
/// folder someone else owns. Links among the parents are followed, as everywhere.
pub fn own_folder(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a link, not a folder mmflow made: mmflow writes only into real folders (name the folder it points to instead, or move the link away)",
        )),
        Ok(meta) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "is {}, not a folder mmflow made; move it away",
                describe(meta.file_type())
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path)?;
            // Created by someone else in between as a link: refused all the same.
            match std::fs::symlink_metadata(path)?.is_dir() {
                true => Ok(()),
                false => own_folder(path),
            }
        }
        Err(e) => Err(e),
    }
}

/// Syncs to disk a file mmflow wrote, or a folder after mmflow renamed something into it.
/// Anything else in its place (a FIFO would block the open) is refused before it is opened.
pub fn sync_to_disk(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if !(meta.is_file() || meta.is_dir()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {}, not a file mmflow wrote", describe(meta.file_type())),
        ));
    }
    File::open(path)?.sync_all()
}

/// `Ok` when `path` is a real folder or absent (to be made by [`own_folder`] when something
/// is written); a link, a file or anything else in its place is refused as [`own_folder`]
/// refuses it, and nothing is created.
pub fn check_own_folder(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_dir() => own_folder(path),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_and_links_to_them_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.bin");
        std::fs::write(&file, b"abc").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(regular_file_size(&file).unwrap(), 3);
        assert_eq!(read_regular(&link).unwrap(), b"abc");
    }

    #[test]
    fn bounded_reads_refuse_larger_files_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        std::fs::write(&file, b"{}").unwrap();
        assert_eq!(read_text_at_most(&file, 2).unwrap(), "{}");
        let err = read_regular_at_most(&file, 1).unwrap_err();
        assert!(err.to_string().contains("more than the 1 bytes"), "{err}");
        let err = read_regular_at_most(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
    }

    #[test]
    fn own_folders_are_made_and_links_or_files_in_their_place_refused() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/b");
        own_folder(&new).unwrap();
        own_folder(&new).unwrap();
        assert!(new.is_dir());
        let user = dir.path().join("user");
        std::fs::create_dir(&user).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&user, &link).unwrap();
        let err = own_folder(&link).unwrap_err();
        assert!(err.to_string().contains("is a link"), "{err}");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = own_folder(&file).unwrap_err();
        assert!(err.to_string().contains("a regular file"), "{err}");
        // Through a link among the parents is fine: only the folder itself must be real.
        own_folder(&link.join("inside")).unwrap();
        assert!(user.join("inside").is_dir());
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_regular_at_most(&file, 10).unwrap(), b"0123456789");
        let err = read_regular_at_most(&file, 9).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("10 bytes") && err.to_string().contains("9 bytes"),
            "{err}"
        );
        let err = read_regular_at_most(dir.path(), 9).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn special_files_are_refused_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_regular(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("is a directory"), "{err}");
        let err = regular_file_size(Path::new("/dev/zero")).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // Opening a FIFO for reading would block forever: it must be refused first.
            let err = read_regular(&fifo).unwrap_err();
            assert!(err.to_string().contains("FIFO"), "{err}");
        }
    }
}
