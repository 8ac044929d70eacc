//! Per-frame CSV rows with a timestamp column (OpenFace 2, MediaPipe, pandas, …).
//!
//! Either a directory holding one `<video>.csv` per video, or one CSV file with a
//! `video_column`. The first row is the header. Fields may be double-quoted (RFC 4180) and
//! are trimmed (OpenFace 2 writes `, ` between fields); a UTF-8 byte-order mark is skipped and
//! blank lines are ignored.
//!
//! Columns are matched by name, never by position. The feature columns are the configured
//! `columns`, else every column of the first file (in its order) that is neither the
//! timestamp, nor the video column, nor in `exclude`; every later file must hold exactly
//! those (a missing or an extra column is an error naming both files and the column).
//!
//! A text column (`text_column`, or by default a column named `text` that `columns` does not
//! list) is not a feature: its cells are kept as each row's text, and a label file's text
//! becomes its segments' `text`.
//!
//! Every feature cell is a number: `nan`, `inf` and `-inf` are numbers; an empty cell or text
//! is an error naming the file, the row (1-based, as a spreadsheet shows it: the header is
//! row 1) and the column, so a failed extraction is never read as missing data by accident
//! (write a missing value as `nan` to mean it). Every timestamp is a finite number.
//! Frame `i` spans `[t_i, t_i + 1/fps]`, or `[t_i, t_i + median step]` without `fps`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::align::{Sequence, Values};
use super::readers::{SourceError, TimingOptions};

/// A modality's CSV frames, read at open.
pub struct CsvSource {
    path: PathBuf,
    videos: Vec<String>,
    data: BTreeMap<String, Sequence>,
    texts: BTreeMap<String, Vec<String>>,
}

/// A video's frames, and each frame's text when the file has a text column.
type VideoRows = (Sequence, Option<Vec<String>>);

impl CsvSource {
    /// Reads the directory (or file).
    pub fn open(path: &Path, timing: &TimingOptions) -> Result<CsvSource, SourceError> {
        let rows = if path.is_dir() {
            read_directory(path, timing)?
        } else {
            read_single_file(path, timing)?
        };
        let mut data = BTreeMap::new();
        let mut texts = BTreeMap::new();
        for (video, (sequence, text)) in rows {
            if let Some(text) = text {
                texts.insert(video.clone(), text);
            }
            data.insert(video, sequence);
        }
        Ok(CsvSource {
            path: path.to_path_buf(),
            videos: data.keys().cloned().collect(),
            data,
            texts,
        })
    }

    /// The directory or file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Video ids, sorted.
    pub fn videos(&self) -> &[String] {
        &self.videos
    }

    /// A video's frames.
    pub fn read(&self, video: &str) -> Result<Sequence, SourceError> {
        self.data.get(video).cloned().ok_or_else(|| SourceError {
            path: self.path.clone(),
            message: format!("video `{video}` has no CSV"),
        })
    }

    /// Each of a video's frames' text, in the order of [`CsvSource::read`]'s frames, when its
    /// file has a text column.
    pub fn texts(&self, video: &str) -> Option<&[String]> {
        self.texts.get(video).map(Vec::as_slice)
    }
}

fn fail(path: &Path) -> impl Fn(String) -> SourceError + '_ {
    move |message| SourceError {
        path: path.to_path_buf(),
        message,
    }
}

/// One `<video>.csv` per video; the first file (by name) sets the feature columns.
fn read_directory(
    dir: &Path,
    timing: &TimingOptions,
) -> Result<BTreeMap<String, VideoRows>, SourceError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| fail(dir)(format!("cannot list ({e})")))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    let Some(first) = files.first().cloned() else {
        return Err(fail(dir)("no .csv files in the directory".into()));
    };
    let mut features: Option<Vec<String>> = None;
    let mut data = BTreeMap::new();
    for file in &files {
        let text = read_text(file)?;
        let mut reader = Reader::new(&text);
        let header = read_header(&mut reader).map_err(fail(file))?;
        let names = match &features {
            None => feature_names(&header, timing).map_err(fail(file))?,
            Some(names) => {
                same_columns(&header, timing, names, &first).map_err(fail(file))?;
                names.clone()
            }
        };
        let layout = Layout::new(header, timing, &names, None).map_err(fail(file))?;
        let frames = read_rows(&mut reader, &layout)
            .map_err(fail(file))?
            .into_values()
            .next()
            .ok_or_else(|| fail(file)(NO_ROWS.into()))?;
        let video = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        data.insert(video, frames.into_rows(timing.fps).map_err(fail(file))?);
        features.get_or_insert(names);
    }
    Ok(data)
}

/// One file holding every video, told apart by `video_column`.
fn read_single_file(
    path: &Path,
    timing: &TimingOptions,
) -> Result<BTreeMap<String, VideoRows>, SourceError> {
    let Some(video_column) = &timing.video_column else {
        return Err(fail(path)(
            "a single CSV file needs `csv.video_column` (or give a directory of <video>.csv files)"
                .into(),
        ));
    };
    let text = read_text(path)?;
    let mut reader = Reader::new(&text);
    let header = read_header(&mut reader).map_err(fail(path))?;
    let names = feature_names(&header, timing).map_err(fail(path))?;
    let layout = Layout::new(header, timing, &names, Some(video_column)).map_err(fail(path))?;
    let videos = read_rows(&mut reader, &layout).map_err(fail(path))?;
    if videos.is_empty() {
        return Err(fail(path)(NO_ROWS.into()));
    }
    videos
        .into_iter()
        .map(|(video, frames)| {
            let sequence = frames
                .into_rows(timing.fps)
                .map_err(|m| fail(path)(format!("video `{video}`: {m}")))?;
            Ok((video, sequence))
        })
        .collect()
}

const NO_ROWS: &str = "no data rows (the file holds only its header)";

/// The file as text: a regular file, UTF-8.
fn read_text(path: &Path) -> Result<String, SourceError> {
    let bytes = mmflow_schemas::files::read_regular(path)
        .map_err(|e| fail(path)(format!("cannot read ({e})")))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        fail(path)(format!(
            "line {line}: not UTF-8 text (save the file as UTF-8)"
        ))
    })
}

/// Where a cell is, as a spreadsheet shows it.
fn at(row: usize, column: &str) -> String {
    format!("row {row} (1-based, the header is row 1), column `{column}`")
}

/// A cell's text for a message, cut short.
fn shown(cell: &str) -> String {
    const MAX: usize = 40;
    match cell.char_indices().nth(MAX) {
        Some((cut, _)) => format!("`{}…`", &cell[..cut]),
        None => format!("`{cell}`"),
    }
}

/// Some of the header's names, for a message.
fn listed(header: &[String]) -> String {
    const MAX: usize = 12;
    let mut names: Vec<String> = header.iter().take(MAX).map(|n| format!("`{n}`")).collect();
    if header.len() > MAX {
        names.push(format!("… ({} columns)", header.len()));
    }
    names.join(", ")
}

/// The header's names: present, named, unique.
fn read_header(reader: &mut Reader<'_>) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    if !reader.next_record(&mut fields)? {
        return Err("empty file: no header row".into());
    }
    let header: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        if name.is_empty() {
            return Err(format!(
                "column {} of the header has no name{}",
                i + 1,
                if i == 0 {
                    " (pandas writes its index this way: save with `index=False`)"
                } else {
                    ""
                }
            ));
        }
        if let Some(before) = seen.insert(name, i) {
            return Err(format!(
                "header `{name}` appears twice (columns {} and {})",
                before + 1,
                i + 1
            ));
        }
    }
    Ok(header)
}

/// The column read as each row's text: `text_column` when configured, else a column named
/// [`TEXT_COLUMN`] when the header has one and `columns` does not list it as a feature.
fn text_name<'a>(header: &[String], timing: &'a TimingOptions) -> Option<&'a str> {
    match &timing.text_column {
        Some(name) => Some(name),
        None => {
            let listed = timing
                .columns
                .as_ref()
                .is_some_and(|c| c.iter().any(|n| n == TEXT_COLUMN));
            (!listed && header.iter().any(|n| n == TEXT_COLUMN)).then_some(TEXT_COLUMN)
        }
    }
}

/// The name of the column read as text when `text_column` names none.
pub const TEXT_COLUMN: &str = "text";

/// The feature columns a header offers: `columns` if configured, else every column that is
/// not the timestamp, the video column, the text column or excluded.
fn feature_names(header: &[String], timing: &TimingOptions) -> Result<Vec<String>, String> {
    let text = text_name(header, timing);
    let names: Vec<String> = match &timing.columns {
        Some(columns) => columns.clone(),
        None => header
            .iter()
            .filter(|n| {
                **n != timing.timestamp_column
                    && timing.video_column.as_ref() != Some(*n)
                    && text != Some(n.as_str())
                    && !timing.exclude.contains(n)
            })
            .cloned()
            .collect(),
    };
    if names.is_empty() {
        return Err(format!(
            "no feature columns: every column is the timestamp or in `csv.exclude` (the header has {})",
            listed(header)
        ));
    }
    Ok(names)
}

/// A later file of a directory offers exactly the first file's feature columns (unless
/// `columns` chose them: then extra columns are simply not read).
fn same_columns(
    header: &[String],
    timing: &TimingOptions,
    expected: &[String],
    first: &Path,
) -> Result<(), String> {
    let first = first
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(missing) = expected.iter().find(|n| !header.contains(n)) {
        return Err(if timing.columns.is_some() {
            format!("no column `{missing}` (listed in `csv.columns`)")
        } else {
            format!("no column `{missing}`, a feature column of `{first}` (the first file, which sets the feature columns)")
        });
    }
    if timing.columns.is_none() {
        let offered = feature_names(header, timing)?;
        if let Some(extra) = offered.iter().find(|n| !expected.contains(n)) {
            return Err(format!(
                "column `{extra}` is not in `{first}` (the first file, which sets the feature columns): list it in `csv.exclude`, or choose the feature `csv.columns`"
            ));
        }
    }
    Ok(())
}

/// Where each needed column is in a file.
struct Layout {
    header: Vec<String>,
    timestamp: usize,
    video: Option<usize>,
    text: Option<usize>,
    features: Vec<usize>,
}

impl Layout {
    fn new(
        header: Vec<String>,
        timing: &TimingOptions,
        features: &[String],
        video_column: Option<&String>,
    ) -> Result<Layout, String> {
        let find = |name: &str, role: &str| {
            header
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| format!("no {role} `{name}` (the header has {})", listed(&header)))
        };
        let timestamp = find(&timing.timestamp_column, "timestamp column")?;
        let video = video_column.map(|v| find(v, "video column")).transpose()?;
        let text = text_name(&header, timing)
            .map(|t| find(t, "text column"))
            .transpose()?;
        if let Some(t) = text.filter(|t| Some(*t) == video || *t == timestamp) {
            return Err(format!(
                "column `{}` cannot be both the text and the timestamp or video column",
                header[t]
            ));
        }
        let features = features
            .iter()
            .map(|n| find(n, "feature column"))
            .collect::<Result<_, _>>()?;
        Ok(Layout {
            header,
            timestamp,
            video,
            text,
            features,
        })
    }
}

/// One video's frames as read.
#[derive(Default)]
struct Frames {
    stamps: Vec<f64>,
    values: Vec<f32>,
    dim: usize,
    /// Each row's text, when the file has a text column.
    texts: Option<Vec<String>>,
}

impl Frames {
    fn into_rows(mut self, fps: Option<f64>) -> Result<VideoRows, String> {
        let texts = self.texts.take();
        Ok((self.into_sequence(fps)?, texts))
    }

    fn into_sequence(self, fps: Option<f64>) -> Result<Sequence, String> {
        let step = match fps {
            Some(fps) if fps.is_finite() && fps > 0.0 => 1.0 / fps,
            Some(fps) => return Err(format!("`fps` must be a finite number > 0, not {fps}")),
            None => median_step(&self.stamps).ok_or(
                "cannot infer the frame duration from fewer than two distinct timestamps; set `fps`",
            )?,
        };
        Ok(Sequence {
            intervals: self.stamps.iter().map(|&t| [t, t + step]).collect(),
            values: Values::F32(self.values),
            dim: self.dim,
        })
    }
}

/// The median of the positive steps between consecutive timestamps.
fn median_step(stamps: &[f64]) -> Option<f64> {
    let mut steps: Vec<f64> = stamps
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .collect();
    steps.sort_by(f64::total_cmp);
    steps.get(steps.len() / 2).copied()
}

/// Every data row, grouped by video (one group under `""` without a video column).
fn read_rows(reader: &mut Reader<'_>, layout: &Layout) -> Result<BTreeMap<String, Frames>, String> {
    let mut videos: BTreeMap<String, Frames> = BTreeMap::new();
    let mut fields = Vec::with_capacity(layout.header.len());
    let mut row_values = Vec::with_capacity(layout.features.len());
    while reader.next_record(&mut fields)? {
        let row = reader.row;
        if fields.len() != layout.header.len() {
            return Err(format!(
                "row {row} (1-based, the header is row 1) has {} fields, the header has {}",
                fields.len(),
                layout.header.len()
            ));
        }
        let stamp = timestamp(&fields[layout.timestamp])
            .map_err(|m| format!("{}: {m}", at(row, &layout.header[layout.timestamp])))?;
        row_values.clear();
        for &c in &layout.features {
            let value =
                feature(&fields[c]).map_err(|m| format!("{}: {m}", at(row, &layout.header[c])))?;
            row_values.push(value as f32);
        }
        let video = match layout.video {
            Some(c) if fields[c].is_empty() => {
                return Err(format!("{}: no video id", at(row, &layout.header[c])))
            }
            Some(c) => fields[c].as_ref(),
            None => "",
        };
        let frames = videos.entry(video.to_string()).or_insert_with(|| Frames {
            dim: layout.features.len(),
            texts: layout.text.map(|_| Vec::new()),
            ..Frames::default()
        });
        if let (Some(c), Some(texts)) = (layout.text, frames.texts.as_mut()) {
            texts.push(fields[c].to_string());
        }
        frames.stamps.push(stamp);
        frames.values.extend_from_slice(&row_values);
    }
    Ok(videos)
}

/// A timestamp cell: a finite number of seconds.
fn timestamp(cell: &str) -> Result<f64, String> {
    match cell.parse::<f64>() {
        Ok(t) if t.is_finite() => Ok(t),
        _ if cell.is_empty() => Err("empty timestamp".into()),
        _ => Err(format!(
            "timestamp {} is not a finite number of seconds",
            shown(cell)
        )),
    }
}

/// A feature cell: a number (`nan`, `inf`, `-inf` included).
fn feature(cell: &str) -> Result<f64, String> {
    if cell.is_empty() {
        return Err("empty cell (write a missing value as `nan`)".into());
    }
    cell.parse::<f64>().map_err(|_| {
        format!(
            "{} is not a number (if the column is not a feature, list it in `exclude`)",
            shown(cell)
        )
    })
}

/// Records of a CSV text: comma-separated, optionally double-quoted fields, trimmed.
struct Reader<'a> {
    text: &'a str,
    pos: usize,
    /// 1-based row of the record last read, counting blank lines as a spreadsheet does.
    row: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Reader {
            text: text.strip_prefix('\u{feff}').unwrap_or(text),
            pos: 0,
            row: 0,
        }
    }

    /// Reads the next record into `fields`; false at the end of the text.
    fn next_record(&mut self, fields: &mut Vec<Cow<'a, str>>) -> Result<bool, String> {
        fields.clear();
        loop {
            if self.pos >= self.text.len() {
                return Ok(false);
            }
            self.row += 1;
            let rest = &self.text[self.pos..];
            let line = rest.find('\n').map_or(rest.len(), |n| n + 1);
            if !rest[..line].trim().is_empty() {
                break;
            }
            self.pos += line;
        }
        loop {
            let (field, more) = self.field()?;
            fields.push(field);
            if !more {
                return Ok(true);
            }
        }
    }

    /// The field at the current position, and whether another follows on this record.
    fn field(&mut self) -> Result<(Cow<'a, str>, bool), String> {
        let text = self.text;
        let start = self.pos
            + text[self.pos..]
                .find(|c| c != ' ' && c != '\t')
                .unwrap_or(text.len() - self.pos);
        if !text[start..].starts_with('"') {
            let end = text[start..]
                .find([',', '\n'])
                .map_or(text.len(), |n| start + n);
            let more = self.end_field(end)?;
            return Ok((Cow::Borrowed(text[start..end].trim()), more));
        }
        let mut value = String::new();
        let mut at = start + 1;
        loop {
            let Some(quote) = text[at..].find('"') else {
                return Err(format!(
                    "row {} (1-based, the header is row 1): a quoted field is never closed",
                    self.row
                ));
            };
            value.push_str(&text[at..at + quote]);
            at += quote + 1;
            if text[at..].starts_with('"') {
                value.push('"');
                at += 1;
            } else {
                break;
            }
        }
        let end = at
            + text[at..]
                .find(|c| c != ' ' && c != '\t')
                .unwrap_or(text.len() - at);
        let more = self.end_field(end)?;
        Ok((Cow::Owned(value.trim().to_string()), more))
    }

    /// Moves past the separator at `end`: true after a comma, false at the end of a record.
    fn end_field(&mut self, end: usize) -> Result<bool, String> {
        let rest = &self.text[end..];
        let (skip, more) = if rest.is_empty() {
            (0, false)
        } else if rest.starts_with(',') {
            (1, true)
        } else if rest.starts_with('\n') {
            (1, false)
        } else if rest.starts_with("\r\n") {
            (2, false)
        } else if rest == "\r" {
            (1, false)
        } else {
            return Err(format!(
                "row {} (1-based, the header is row 1): text after a closing quote",
                self.row
            ));
        };
        self.pos = end + skip;
        Ok(more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> TimingOptions {
        TimingOptions {
            fps: None,
            timestamp_column: "timestamp".into(),
            columns: None,
            exclude: vec!["frame".into()],
            video_column: None,
            text_column: None,
        }
    }

    /// Writes `files` into a fresh directory and opens it.
    fn open_dir(
        files: &[(&str, &str)],
        timing: &TimingOptions,
    ) -> (tempfile::TempDir, Result<CsvSource, SourceError>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let source = CsvSource::open(dir.path(), timing);
        (dir, source)
    }

    fn error(files: &[(&str, &str)], timing: &TimingOptions) -> String {
        match open_dir(files, timing).1 {
            Ok(_) => panic!("{files:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    fn values(source: &CsvSource, video: &str) -> Vec<f32> {
        source.read(video).unwrap().values.to_f32()
    }

    #[test]
    fn a_text_column_is_kept_per_row_and_is_not_a_feature() {
        let file = "timestamp,sentiment,text,label_T\n0,0.5,\"我很开心, really\",1\n1,-1,,0\n";
        let (_dir, source) = open_dir(&[("v.csv", file)], &timing());
        let source = source.unwrap();
        assert_eq!(
            source.read("v").unwrap().dim,
            2,
            "sentiment and label_T only"
        );
        assert_eq!(values(&source, "v"), [0.5, 1.0, -1.0, 0.0]);
        assert_eq!(source.texts("v").unwrap(), ["我很开心, really", ""]);

        // A column of another name, chosen; one file holding every video.
        let timing_named = TimingOptions {
            text_column: Some("utterance".into()),
            video_column: Some("video".into()),
            fps: Some(1.0),
            ..timing()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.csv");
        std::fs::write(
            &path,
            "video,timestamp,utterance,y\nb,0,second,1\na,0,first,2\nb,1,third,3\n",
        )
        .unwrap();
        let source = CsvSource::open(&path, &timing_named).unwrap();
        assert_eq!(source.texts("a").unwrap(), ["first"]);
        assert_eq!(source.texts("b").unwrap(), ["second", "third"]);
        assert_eq!(values(&source, "b"), [1.0, 3.0]);

        // Without a text column: no texts; `columns` listing `text` makes it a feature.
        let (_dir, plain) = open_dir(&[("v.csv", "timestamp,x\n0,1\n1,2\n")], &timing());
        assert!(plain.unwrap().texts("v").is_none());
        let as_feature = TimingOptions {
            columns: Some(vec!["text".into()]),
            ..timing()
        };
        let (_dir, numeric) = open_dir(&[("v.csv", "timestamp,text\n0,1\n1,2\n")], &as_feature);
        let numeric = numeric.unwrap();
        assert!(numeric.texts("v").is_none());
        assert_eq!(values(&numeric, "v"), [1.0, 2.0]);

        let missing = TimingOptions {
            text_column: Some("transcript".into()),
            ..timing()
        };
        let e = error(&[("v.csv", "timestamp,x\n0,1\n1,2\n")], &missing);
        assert!(
            e.contains("v.csv") && e.contains("no text column `transcript`"),
            "{e}"
        );
    }

    #[test]
    fn openface_spacing_quotes_crlf_and_a_bom_are_read() {
        let (_d, source) = open_dir(
            &[(
                "v.csv",
                "\u{feff}frame, timestamp, \"a\", b\r\n1, 0.0, 1.5, \"2\"\r\n\r\n2, 0.1, nan, -inf\r\n",
            )],
            &timing(),
        );
        let source = source.unwrap();
        let seq = source.read("v").unwrap();
        assert_eq!(seq.dim, 2);
        assert_eq!(seq.intervals.len(), 2);
        assert!((seq.intervals[0][1] - 0.1).abs() < 1e-12, "median step");
        let v = values(&source, "v");
        assert_eq!(&v[..2], &[1.5, 2.0]);
        assert!(v[2].is_nan() && v[3] == f32::NEG_INFINITY);
    }

    #[test]
    fn columns_are_matched_by_name_across_files() {
        let (_d, source) = open_dir(
            &[
                ("a.csv", "timestamp,x,y\n0,1,2\n1,3,4\n"),
                ("b.csv", "y,timestamp,x\n20,0,10\n40,1,30\n"),
            ],
            &timing(),
        );
        let source = source.unwrap();
        assert_eq!(values(&source, "a"), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(values(&source, "b"), [10.0, 20.0, 30.0, 40.0]);
    }

    #[test]
    fn a_missing_or_extra_column_in_a_later_file_is_an_error() {
        let e = error(
            &[
                ("a.csv", "timestamp,x,y\n0,1,2\n1,3,4\n"),
                ("b.csv", "timestamp,y\n0,1\n1,2\n"),
            ],
            &timing(),
        );
        assert!(
            e.contains("b.csv") && e.contains("no column `x`") && e.contains("a.csv"),
            "{e}"
        );
        let e = error(
            &[
                ("a.csv", "timestamp,x\n0,1\n1,3\n"),
                ("b.csv", "timestamp,x,z\n0,1,2\n1,2,3\n"),
            ],
            &timing(),
        );
        assert!(
            e.contains("b.csv") && e.contains("column `z` is not in `a.csv`"),
            "{e}"
        );
        // With `columns` chosen, extra columns are not read.
        let mut chosen = timing();
        chosen.columns = Some(vec!["x".into()]);
        let (_d, source) = open_dir(
            &[
                ("a.csv", "timestamp,x\n0,1\n1,3\n"),
                ("b.csv", "timestamp,z,x\n0,9,1\n1,9,2\n"),
            ],
            &chosen,
        );
        assert_eq!(values(&source.unwrap(), "b"), [1.0, 2.0]);
    }

    #[test]
    fn bad_cells_name_file_row_and_column() {
        let cases = [
            (
                "timestamp,x\n0,1\n1,abc\n",
                "row 3 (1-based, the header is row 1), column `x`: `abc` is not a number",
            ),
            (
                "timestamp,x\n0,1\n1,\n",
                "row 3 (1-based, the header is row 1), column `x`: empty cell",
            ),
            (
                "timestamp,x\n0,1\n,2\n",
                "row 3 (1-based, the header is row 1), column `timestamp`: empty timestamp",
            ),
            (
                "timestamp,x\n0,1\ninf,2\n",
                "column `timestamp`: timestamp `inf` is not a finite number",
            ),
            (
                "timestamp,x\n0,1\n1,2,3\n",
                "row 3 (1-based, the header is row 1) has 3 fields, the header has 2",
            ),
            (
                "timestamp,x,x\n0,1,2\n",
                "header `x` appears twice (columns 2 and 3)",
            ),
            ("timestamp, x,x \n0,1,2\n", "header `x` appears twice"),
            (
                ",timestamp,x\n0,0,1\n",
                "column 1 of the header has no name (pandas",
            ),
            ("time,x\n0,1\n", "no timestamp column `timestamp`"),
            ("", "empty file: no header row"),
            ("timestamp,x\n", "no data rows"),
            (
                "timestamp,x\n0,\"1\n",
                "row 2 (1-based, the header is row 1): a quoted field is never closed",
            ),
            ("timestamp,x\n0,\"1\"2\n", "text after a closing quote"),
            ("timestamp,frame\n0,1\n", "no feature columns"),
            ("timestamp,x\n0,1\n", "fewer than two distinct timestamps"),
        ];
        for (text, says) in cases {
            let e = error(&[("v.csv", text)], &timing());
            assert!(e.contains("v.csv: ") && e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn blank_lines_count_as_rows() {
        let e = error(&[("v.csv", "timestamp,x\n\n0,1\n1,x\n")], &timing());
        assert!(e.contains("row 4 "), "{e}");
    }

    #[test]
    fn one_file_with_a_video_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.csv");
        std::fs::write(&path, "video,timestamp,x\nb,0,1\na,0,5\nb,1,2\na,1,6\n").unwrap();
        let mut options = timing();
        options.video_column = Some("video".into());
        let source = CsvSource::open(&path, &options).unwrap();
        assert_eq!(source.videos(), ["a", "b"]);
        assert_eq!(values(&source, "b"), [1.0, 2.0]);
        std::fs::write(&path, "video,timestamp,x\nb,0,1\n,1,2\n").unwrap();
        let e = CsvSource::open(&path, &options).err().unwrap().to_string();
        assert!(
            e.contains("row 3 (1-based, the header is row 1), column `video`: no video id"),
            "{e}"
        );
    }

    #[test]
    fn fps_must_be_a_positive_finite_number() {
        let mut options = timing();
        options.fps = Some(f64::INFINITY);
        let e = error(&[("v.csv", "timestamp,x\n0,1\n")], &options);
        assert!(e.contains("`fps` must be a finite number > 0"), "{e}");
    }
}
