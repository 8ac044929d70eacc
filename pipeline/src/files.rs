//! Opening files a user names: only regular files are ever read.
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
