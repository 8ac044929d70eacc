//! Reading CMU-MultimodalSDK computational sequences (`.csd`, HDF5) without libhdf5.
//!
//! Layout: `/<root>/data/<video>/{features [T, D], intervals [T, 2]}` and
//! `/<root>/metadata/<key>` (one variable-length string each). Features may be float32 or
//! float64, contiguous or gzip-chunked; groups old-style or dense. `hdf5-reader` (pure Rust)
//! reads the file's structure with positioned reads, and every dataset that is not one
//! contiguous block of native floats; such a block (what h5py and the SDK write) is read in
//! place, one positioned read straight into its buffer. `CsdFile` can be shared between
//! threads.
//!
//! Shapes come from the file: before a buffer is allocated for a dataset, its declared size
//! (checked arithmetic) must fit in the file — as stored, or as gzip could at most have
//! compressed it — so a tiny file declaring 2^40 rows is refused, naming the video.
#![warn(clippy::cast_possible_truncation, clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hdf5_reader::messages::layout::DataLayout;
use hdf5_reader::messages::HdfMessage;
use hdf5_reader::object_header::ObjectHeader;
use hdf5_reader::{ByteOrder, Dataset, Datatype, FileStorage, H5Type, Hdf5File, OpenOptions};
use mmflow_schemas::files::open_regular;

use super::align::{Sequence, Values};
use super::readers::SourceError;

/// The most deflate (gzip) can expand data: about 1032 to 1.
const MAX_INFLATE: u64 = 1032;

/// The widest feature vector a features table can hold (Arrow list sizes are i32).
const MAX_WIDTH: u64 = i32::MAX as u64;

/// An open computational sequence.
pub struct CsdFile {
    path: PathBuf,
    /// The file's size in bytes, which bounds what its datasets can hold.
    size: u64,
    /// The file, for reading contiguous datasets in place (see [`CsdFile::read_in_place`]).
    data: File,
    file: Hdf5File,
    root: String,
    videos: Vec<String>,
    metadata: BTreeMap<String, String>,
}

/// A video's words and their intervals, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Words {
    /// `[start, end]` of each word, seconds.
    pub intervals: Vec<[f64; 2]>,
    /// The words.
    pub words: Vec<String>,
}

/// Shape and dtype of one video's features, read from the dataset header only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryShape {
    /// Frames.
    pub frames: usize,
    /// Feature width.
    pub dim: usize,
}

impl CsdFile {
    /// Opens a `.csd` file and lists its videos (sorted, as h5py lists them).
    pub fn open(path: &Path) -> Result<CsdFile, SourceError> {
        let fail = |message: String| SourceError {
            path: path.to_path_buf(),
            message,
        };
        let (opened, size) = open_regular(path).map_err(|e| fail(e.to_string()))?;
        // Strings (metadata) are read by the crate into buffers it sizes: bound them too.
        let options = OpenOptions::default().with_max_read_bytes(
            usize::try_from(size.saturating_mul(MAX_INFLATE)).unwrap_or(usize::MAX),
        );
        // The crate reads the file mmflow opened (and checked is a regular file), not the path
        // again: what is read is what was checked.
        let storage = opened
            .try_clone()
            .map_err(|e| fail(e.to_string()))
            .and_then(|f| FileStorage::from_file(f).map_err(|e| fail(e.to_string())))?;
        let file = Hdf5File::from_storage_with_options(Arc::new(storage), options)
            .map_err(|e| fail(format!("not a readable HDF5 file ({e})")))?;
        let top = file
            .root_group()
            .and_then(|g| g.member_names())
            .map_err(|e| fail(format!("cannot list the root group ({e})")))?;
        let mut roots = top.0;
        roots.sort();
        let Some(root) = roots.first().cloned() else {
            return Err(fail(
                "no top-level group: not a computational sequence".into(),
            ));
        };
        let data = file.group(&format!("/{root}/data")).map_err(|_| {
            fail(format!(
                "no `/{root}/data` group: not a computational sequence"
            ))
        })?;
        let (mut videos, stray) = data
            .member_names()
            .map_err(|e| fail(format!("cannot list `/{root}/data` ({e})")))?;
        if let Some(d) = stray.first() {
            return Err(fail(format!(
                "`/{root}/data/{d}` is a dataset, expected one group per video"
            )));
        }
        videos.sort();
        let mut metadata = BTreeMap::new();
        if let Ok(group) = file.group(&format!("/{root}/metadata")) {
            if let Ok((_, keys)) = group.member_names() {
                for key in keys {
                    let value = file
                        .dataset(&format!("/{root}/metadata/{key}"))
                        .and_then(|d| d.read_strings())
                        .map(|v| v.join("\n"))
                        .unwrap_or_default();
                    metadata.insert(key, value);
                }
            }
        }
        Ok(CsdFile {
            path: path.to_path_buf(),
            size,
            data: opened,
            file,
            root,
            videos,
            metadata,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root group's name (the sequence's name in the SDK).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Video ids, sorted.
    pub fn videos(&self) -> &[String] {
        &self.videos
    }

    /// The metadata strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn fail(&self, video: &str, message: impl std::fmt::Display) -> SourceError {
        SourceError {
            path: self.path.clone(),
            message: format!("video `{video}`: {message}"),
        }
    }

    /// The shape of a video's features, from the header (no data read).
    pub fn shape(&self, video: &str) -> Result<EntryShape, SourceError> {
        let ds = self
            .file
            .dataset(&format!("/{}/data/{video}/features", self.root))
            .map_err(|e| self.fail(video, format!("no `features` dataset ({e})")))?;
        self.features_shape(video, &ds)
    }

    /// `[frames, dim]` (or `[frames]`, one wide) of a `features` dataset whose declared
    /// size fits in the file, with a width a features table can hold.
    fn features_shape(&self, video: &str, ds: &Dataset) -> Result<EntryShape, SourceError> {
        let (frames, dim) = match *ds.shape() {
            [t, d] => (t, d),
            [t] => (t, 1),
            ref other => {
                return Err(self.fail(
                    video,
                    format!("`features` has shape {other:?}, expected [frames, dim]"),
                ))
            }
        };
        if dim == 0 {
            return Err(self.fail(
                video,
                format!("`features` has shape {:?}: 0 features wide", ds.shape()),
            ));
        }
        if dim > MAX_WIDTH {
            return Err(self.fail(
                video,
                format!(
                    "`features` has shape {:?}: {dim} features wide, more than the {MAX_WIDTH} a features table holds",
                    ds.shape()
                ),
            ));
        }
        self.checked_len(video, "features", ds)?;
        let frames = usize::try_from(frames)
            .map_err(|_| self.fail(video, format!("`features` declares {frames} frames")))?;
        let dim = usize::try_from(dim)
            .map_err(|_| self.fail(video, format!("`features` is {dim} features wide")))?;
        Ok(EntryShape { frames, dim })
    }

    /// The number of elements of dataset `name`, once its declared size (shape × element
    /// size, checked) is known to fit in the file: stored as it is, or gzip-compressed at
    /// the best ratio gzip can reach. Nothing is allocated before this check.
    fn checked_len(&self, video: &str, name: &str, ds: &Dataset) -> Result<usize, SourceError> {
        let shape = ds.shape();
        let element = ds
            .raw_element_size()
            .map_err(|e| self.fail(video, format!("`{name}`: unreadable element type ({e})")))?;
        let count = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let bytes = count.and_then(|c| c.checked_mul(u64::try_from(element).ok()?));
        let (limit, how) = if ds.chunks().is_some() {
            (
                self.size.saturating_mul(MAX_INFLATE),
                " even if gzip-compressed",
            )
        } else {
            (self.size, "")
        };
        match (count.and_then(|c| usize::try_from(c).ok()), bytes) {
            (Some(count), Some(bytes)) if bytes <= limit => Ok(count),
            (_, bytes) => Err(self.fail(
                video,
                format!(
                    "`{name}` declares shape {shape:?} of {element}-byte values ({} bytes), more than the {}-byte file can hold{how}: truncated or corrupt file",
                    bytes.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string()),
                    self.size
                ),
            )),
        }
    }

    /// Reads a video's intervals and features.
    pub fn read(&self, video: &str) -> Result<Sequence, SourceError> {
        let features = self.dataset(video, "features")?;
        let shape = self.features_shape(video, &features)?;
        let intervals = self.read_intervals(video, shape.frames)?;
        let n = self.checked_len(video, "features", &features)?;
        let values = match features.dtype() {
            Datatype::FloatingPoint { size: 4, .. } => {
                Values::F32(self.read_values(video, "features", &features, n)?)
            }
            Datatype::FloatingPoint { size: 8, .. } => {
                Values::F64(self.read_values(video, "features", &features, n)?)
            }
            Datatype::String { .. } | Datatype::VarLen { .. } => {
                return Err(self.fail(
                    video,
                    "`features` holds strings (words): name this file as the `text` of the source, not as a modality",
                ))
            }
            other => {
                return Err(self.fail(
                    video,
                    format!("`features` has type {other:?}, expected float32 or float64"),
                ))
            }
        };
        Ok(Sequence {
            intervals,
            values,
            dim: shape.dim,
        })
    }

    /// Reads a video's words and their intervals, from a words sequence (the SDK's
    /// `TimestampedWords`: `features` [words, 1] of UTF-8 byte strings, fixed-length or
    /// variable-length).
    pub fn read_words(&self, video: &str) -> Result<Words, SourceError> {
        let features = self.dataset(video, "features")?;
        let frames = match *features.shape() {
            [t, 1] | [t] => t,
            ref other => {
                return Err(self.fail(
                    video,
                    format!("`features` has shape {other:?}, expected [words, 1]"),
                ))
            }
        };
        if !matches!(
            features.dtype(),
            Datatype::String { .. } | Datatype::VarLen { .. }
        ) {
            return Err(self.fail(
                video,
                format!(
                    "`features` has type {:?}, expected strings (one word per interval)",
                    features.dtype()
                ),
            ));
        }
        self.checked_len(video, "features", &features)?;
        let frames = usize::try_from(frames)
            .map_err(|_| self.fail(video, format!("`features` declares {frames} words")))?;
        let intervals = self.read_intervals(video, frames)?;
        let words = features
            .read_strings()
            .map_err(|e| self.fail(video, format!("reading the words of `features`: {e}")))?;
        if words.len() != frames {
            return Err(self.fail(
                video,
                format!(
                    "`features` holds {} words, its shape says {frames}",
                    words.len()
                ),
            ));
        }
        Ok(Words { intervals, words })
    }

    /// One of a video's datasets.
    fn dataset(&self, video: &str, name: &str) -> Result<Dataset, SourceError> {
        self.file
            .dataset(&format!("/{}/data/{video}/{name}", self.root))
            .map_err(|e| self.fail(video, format!("no `{name}` dataset ({e})")))
    }

    /// A video's intervals, which must be `frames` rows of `[start, end]`.
    fn read_intervals(&self, video: &str, frames: usize) -> Result<Vec<[f64; 2]>, SourceError> {
        let intervals = self.dataset(video, "intervals")?;
        let interval_shape = intervals.shape();
        let [interval_rows, 2] = *interval_shape else {
            return Err(self.fail(
                video,
                format!("`intervals` has shape {interval_shape:?}, expected [frames, 2]"),
            ));
        };
        if usize::try_from(interval_rows).ok() != Some(frames) {
            return Err(self.fail(
                video,
                format!("{frames} feature rows but {interval_rows} intervals"),
            ));
        }
        let m = self.checked_len(video, "intervals", &intervals)?;
        let flat: Vec<f64> = match intervals.dtype() {
            Datatype::FloatingPoint { size: 8, .. } => {
                self.read_values(video, "intervals", &intervals, m)?
            }
            Datatype::FloatingPoint { size: 4, .. } => self
                .read_values::<f32>(video, "intervals", &intervals, m)?
                .into_iter()
                .map(f64::from)
                .collect(),
            other => {
                return Err(self.fail(
                    video,
                    format!("`intervals` has type {other:?}, expected float"),
                ));
            }
        };
        Ok(flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
    }

    /// The `n` values (checked against the file by [`CsdFile::checked_len`]) of a float
    /// dataset whose elements are `T`s: read in place where the file holds them as they are,
    /// else decoded by the crate.
    fn read_values<T: bytemuck::Pod + H5Type>(
        &self,
        video: &str,
        name: &str,
        ds: &Dataset,
        n: usize,
    ) -> Result<Vec<T>, SourceError> {
        let fail = |e: String| self.fail(video, format!("reading `{name}`: {e}"));
        if let Some(read) = self.read_in_place::<T>(ds, n) {
            return read.map_err(|e| fail(e.to_string()));
        }
        let mut values = vec![T::zeroed(); n];
        ds.read_into(&mut values).map_err(|e| fail(e.to_string()))?;
        Ok(values)
    }

    /// A dataset's `n` values read with one positioned read straight into their buffer, when
    /// the file holds exactly them as they are: one contiguous block (not chunked, filtered,
    /// external or unallocated) of `n` native-endian `T`s inside the file. `None` where
    /// anything else is the case: then the crate reads them.
    ///
    /// The crate would read the block into a buffer of its own and copy it out: for a
    /// MOSEI-sized OpenFace file, one more pass over 1 GB and a few-megabyte block per video
    /// for the allocator to hold.
    fn read_in_place<T: bytemuck::Pod>(
        &self,
        ds: &Dataset,
        n: usize,
    ) -> Option<std::io::Result<Vec<T>>> {
        let native = if cfg!(target_endian = "little") {
            ByteOrder::LittleEndian
        } else {
            ByteOrder::BigEndian
        };
        let width = std::mem::size_of::<T>();
        match ds.dtype() {
            Datatype::FloatingPoint { size, byte_order }
                if usize::from(*size) == width && *byte_order == native => {}
            _ => return None,
        }
        if ds.chunks().is_some() {
            return None;
        }
        let (start, size) = self.contiguous_extent(ds)?;
        let bytes = u64::try_from(n.checked_mul(width)?).ok()?;
        if size != bytes || start.checked_add(size)? > self.size {
            return None;
        }
        let mut values = vec![T::zeroed(); n];
        let read = self
            .data
            .read_exact_at(bytemuck::cast_slice_mut(&mut values), start);
        Some(read.map(|()| values))
    }

    /// Where in the file a contiguous dataset's bytes lie (offset from the file's start,
    /// length), from its object header; `None` for any other layout, for data in an
    /// external file, a filter pipeline or a shared message (left to the crate).
    fn contiguous_extent(&self, ds: &Dataset) -> Option<(u64, u64)> {
        let superblock = self.file.superblock();
        let header = ObjectHeader::parse_at_storage_with_limit(
            self.file.storage(),
            ds.address(),
            superblock.offset_size,
            superblock.length_size,
            MAX_HEADER_BYTES,
        )
        .ok()?;
        let mut extent = None;
        for message in &header.messages {
            match message {
                HdfMessage::DataLayout(layout) => match layout.layout {
                    DataLayout::Contiguous { address, size } => extent = Some((address, size)),
                    _ => return None,
                },
                HdfMessage::ExternalFiles(_)
                | HdfMessage::FilterPipeline(_)
                | HdfMessage::Shared(_) => return None,
                _ => {}
            }
        }
        let (address, size) = extent?;
        if hdf5_reader::io::Cursor::is_undefined_offset(address, superblock.offset_size) {
            return None;
        }
        Some((superblock.base_address.checked_add(address)?, size))
    }
}

/// The largest object header [`CsdFile::contiguous_extent`] reads (a dataset's is a few
/// hundred bytes).
const MAX_HEADER_BYTES: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/sdk")
            .join(name)
    }

    /// Every dataset's values, read in place where the file allows it and by the crate.
    fn both_ways(csd: &CsdFile, video: &str, name: &str) -> (Option<Vec<f32>>, Vec<f32>) {
        let ds = csd.dataset(video, name).unwrap();
        let n = csd.checked_len(video, name, &ds).unwrap();
        let in_place = csd.read_in_place::<f32>(&ds, n).map(Result::unwrap);
        let mut by_crate = vec![0f32; n];
        ds.read_into(&mut by_crate).unwrap();
        (in_place, by_crate)
    }

    #[test]
    fn contiguous_datasets_are_read_in_place_and_equal_the_crates_read() {
        let csd = CsdFile::open(&fixture("sdk_basic/mosei/CMU_MOSEI_VisualOpenFace2.csd")).unwrap();
        for video in csd.videos() {
            let (in_place, by_crate) = both_ways(&csd, video, "features");
            let in_place = in_place.expect("a contiguous float32 dataset is read in place");
            assert_eq!(in_place.len(), by_crate.len());
            assert!(in_place
                .iter()
                .zip(&by_crate)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            // A float64 dataset is not read as float32s.
            let intervals = csd.dataset(video, "intervals").unwrap();
            let n = csd.checked_len(video, "intervals", &intervals).unwrap();
            assert!(csd.read_in_place::<f32>(&intervals, n).is_none());
            assert!(csd.read_in_place::<f64>(&intervals, n).is_some());
        }
    }

    #[test]
    fn compressed_datasets_are_left_to_the_crate() {
        let csd = CsdFile::open(&fixture("sdk_edge/mosei/CMU_MOSEI_COVAREP.csd")).unwrap();
        let video = &csd.videos()[0];
        let (in_place, by_crate) = both_ways(&csd, video, "features");
        assert!(
            in_place.is_none(),
            "a gzip-chunked dataset is decoded by the crate"
        );
        assert!(!by_crate.is_empty());
    }
}
