//! Per-frame CSV rows with a timestamp column (OpenFace 2, MediaPipe, …), read with polars.
//!
//! Either a directory holding one `<video>.csv` per video, or one CSV file with a
//! `video_column`. Column names are trimmed (OpenFace 2 writes `, timestamp`). Frame `i`
//! spans `[t_i, t_i + 1/fps]`, or `[t_i, t_i + median step]` without `fps`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::align::{Sequence, Values};
use super::source::{SourceError, TimingOptions};

/// A modality's CSV frames, read at open.
pub struct CsvSource {
    path: PathBuf,
    videos: Vec<String>,
    data: BTreeMap<String, Sequence>,
}

impl CsvSource {
    /// Reads the directory (or file).
    pub fn open(path: &Path, timing: &TimingOptions) -> Result<CsvSource, SourceError> {
        let fail = |p: &Path, message: String| SourceError {
            path: p.to_path_buf(),
            message,
        };
        let mut data = BTreeMap::new();
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| fail(path, format!("cannot list ({e})")))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "csv"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(fail(path, "no .csv files in the directory".into()));
            }
            for file in files {
                let video = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let frame = read_csv(&file).map_err(|m| fail(&file, m))?;
                let seq = frames_to_sequence(&frame, timing).map_err(|m| fail(&file, m))?;
                data.insert(video, seq);
            }
        } else {
            let frame = read_csv(path).map_err(|m| fail(path, m))?;
            let Some(video_column) = &timing.video_column else {
                return Err(fail(
                    path,
                    "a single CSV file needs `video_column` (or give a directory of <video>.csv files)".into(),
                ));
            };
            let videos = frame
                .column(video_column)
                .map_err(|_| fail(path, format!("no column `{video_column}`")))?
                .cast(&DataType::String)
                .map_err(|e| fail(path, e.to_string()))?;
            let videos = videos.str().map_err(|e| fail(path, e.to_string()))?;
            let mut rows: BTreeMap<String, Vec<IdxSize>> = BTreeMap::new();
            for (i, v) in videos.iter().enumerate() {
                rows.entry(v.unwrap_or_default().to_string())
                    .or_default()
                    .push(i as IdxSize);
            }
            for (video, idx) in rows {
                let idx = IdxCa::from_vec("idx".into(), idx);
                let part = frame.take(&idx).map_err(|e| fail(path, e.to_string()))?;
                let mut options = timing.clone();
                options.exclude.push(video_column.clone());
                let seq = frames_to_sequence(&part, &options)
                    .map_err(|m| fail(path, format!("video `{video}`: {m}")))?;
                data.insert(video, seq);
            }
        }
        Ok(CsvSource {
            path: path.to_path_buf(),
            videos: data.keys().cloned().collect(),
            data,
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
}

fn read_csv(path: &Path) -> Result<DataFrame, String> {
    let frame = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(1000))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(|e| format!("not a readable CSV ({e})"))?;
    // OpenFace 2 writes `, ` between fields: trim names, and read padded numbers as numbers.
    let columns = frame
        .columns()
        .iter()
        .map(|c| {
            let name = c.name().trim();
            if c.dtype() != &DataType::String {
                return Ok(c.clone().with_name(name.into()));
            }
            let text = c.str().map_err(|e| e.to_string())?;
            let parsed: Option<Vec<Option<f64>>> = text
                .iter()
                .map(|v| match v.map(str::trim) {
                    None | Some("") => Some(None),
                    Some(t) => t.parse::<f64>().ok().map(Some),
                })
                .collect();
            Ok(match parsed {
                Some(values) => Column::new(name.into(), values),
                None => c.clone().with_name(name.into()),
            })
        })
        .collect::<Result<Vec<Column>, String>>()?;
    DataFrame::new(frame.height(), columns).map_err(|e| e.to_string())
}

fn frames_to_sequence(frame: &DataFrame, timing: &TimingOptions) -> Result<Sequence, String> {
    let as_f64 = |name: &str| -> Result<Vec<f64>, String> {
        let column = frame
            .column(name)
            .map_err(|_| format!("no column `{name}`"))?;
        let cast = column
            .cast(&DataType::Float64)
            .map_err(|_| format!("column `{name}` is not numeric"))?;
        let values = cast.f64().map_err(|e| e.to_string())?;
        Ok(values.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    };
    let stamps = as_f64(&timing.timestamp_column)?;
    let columns: Vec<String> = match &timing.columns {
        Some(c) => c.clone(),
        None => frame
            .columns()
            .iter()
            .filter(|c| c.dtype().is_primitive_numeric())
            .map(|c| c.name().to_string())
            .filter(|n| *n != timing.timestamp_column && !timing.exclude.contains(n))
            .collect(),
    };
    if columns.is_empty() {
        return Err("no feature columns".into());
    }
    let data: Vec<Vec<f64>> = columns
        .iter()
        .map(|c| as_f64(c))
        .collect::<Result<_, _>>()?;
    let n = stamps.len();
    let step = match timing.fps {
        Some(fps) if fps > 0.0 => 1.0 / fps,
        _ => {
            let mut diffs: Vec<f64> = stamps
                .windows(2)
                .map(|w| w[1] - w[0])
                .filter(|d| *d > 0.0)
                .collect();
            diffs.sort_by(f64::total_cmp);
            diffs.get(diffs.len() / 2).copied().ok_or(
                "cannot infer the frame duration from fewer than two timestamps; set `fps`",
            )?
        }
    };
    let mut values = Vec::with_capacity(n * columns.len());
    for i in 0..n {
        values.extend(data.iter().map(|col| col[i] as f32));
    }
    Ok(Sequence {
        intervals: stamps.iter().map(|&t| [t, t + step]).collect(),
        values: Values::F32(values),
        dim: columns.len(),
    })
}
