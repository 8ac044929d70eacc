//! Every writer's bytes, pinned: each table is written from fixed rows and compared with the
//! file checked in under `tests/data/tables` at the workspace root. The project promises
//! byte-identical Parquet for the same config and seed; these files hold writers to it across
//! changes of their code.
//!
//! The bytes also hold the mmflow version and the Parquet library's `created_by`: when a
//! version bump or a schema change is meant to change them, rewrite the files with
//! `MMFLOW_WRITE_GOLDEN=1` set for this test and review the change.

use std::path::{Path, PathBuf};

use crate::comparison::{self, ComparisonRow};
use crate::diagnostics::{self, Diagnostic};
use crate::evaluation::{self, MetricRow, Prediction};
use crate::features::{FeatureBatch, FeatureInfo, FeatureWriter};
use crate::history::{self, HistoryRow};
use crate::norm_stats::{FeatureStats, ModalityStats, NormStatsTable};
use crate::segments::{Segment, SegmentTable};
use crate::targets::{TargetInfo, TargetRow, TargetTable};
use crate::{Split, StageFingerprint, TableMeta};

/// Set to rewrite the golden files instead of comparing with them.
const WRITE_GOLDEN: &str = "MMFLOW_WRITE_GOLDEN";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tables")
}

fn meta() -> TableMeta {
    TableMeta {
        stage: "golden".into(),
        fingerprint: StageFingerprint::known("0123456789abcdef0123456789abcdef"),
    }
}

fn segments(path: &Path) {
    let row = |id: &str, split, speaker: Option<&str>, labels: Vec<Option<f32>>| Segment {
        dataset: "mosi".into(),
        video_id: "v1".into(),
        segment_id: id.into(),
        split,
        speaker_id: speaker.map(str::to_string),
        start: Some(0.5),
        end: None,
        labels,
        text: None,
    };
    SegmentTable {
        label_names: vec!["sentiment".into(), "valence".into()],
        rows: vec![
            row("v1[0]", Split::Train, Some("s1"), vec![Some(1.5), None]),
            row("v1[1]", Split::Test, None, vec![Some(-2.0), Some(0.25)]),
        ],
    }
    .write(path, &meta())
    .unwrap();
}

/// Segments with transcripts: the `text` column after the labels, null where a segment has none.
fn segments_with_text(path: &Path) {
    let row = |id: &str, text: Option<&str>| Segment {
        dataset: "sims".into(),
        video_id: "v1".into(),
        segment_id: id.into(),
        split: Split::Valid,
        speaker_id: None,
        start: None,
        end: None,
        labels: vec![Some(0.5)],
        text: text.map(str::to_string),
    };
    SegmentTable {
        label_names: vec!["sentiment".into()],
        rows: vec![row("v1[0]", Some("我很开心 — fine")), row("v1[1]", None)],
    }
    .write(path, &meta())
    .unwrap();
}

fn features(path: &Path) {
    let info = FeatureInfo {
        dataset: "mosi".into(),
        modality: "text".into(),
        dim: 2,
    };
    let mut writer = FeatureWriter::create(path, &info, &meta()).unwrap();
    let mut first = FeatureBatch::new(2);
    first.push_timed("v1[0]".into(), &[1.0, 2.0, 3.0, 4.0], &[0.0, 0.5, 0.5, 1.0]);
    writer.write(first).unwrap();
    let mut second = FeatureBatch::new(2);
    second.push("v1[1]".into(), &[-1.0, 0.5]);
    second.push("v1[2]".into(), &[]);
    writer.write(second).unwrap();
    writer.finish().unwrap();
}

fn norm_stats(path: &Path) {
    let stats = |mean: f64| FeatureStats {
        count: 10,
        mean,
        std: 0.5,
        min: -1.0,
        max: 2.0,
        nonfinite: 1,
    };
    NormStatsTable {
        modalities: vec![ModalityStats {
            dataset: "mosi".into(),
            modality: "text".into(),
            features: vec![stats(0.25), stats(-0.75)],
        }],
    }
    .write(path, &meta())
    .unwrap();
}

fn targets(path: &Path) {
    let row = |id: &str, cluster| TargetRow {
        segment_id: id.into(),
        split: Split::Valid,
        matched: vec!["w[0]".into(), "w[3]".into()],
        cluster,
        similarity: Some(0.9),
        distance: None,
        source_label: Some(1.0),
        target_label: Some(-0.5),
    };
    TargetTable {
        info: TargetInfo {
            modality: "text".into(),
            dim: 2,
            method: "kmeans".into(),
            source_dataset: "mosi".into(),
            target_dataset: "mosei".into(),
        },
        rows: vec![row("v1[0]", Some(3)), row("v1[1]", None)],
        vectors: vec![0.5, 1.5, -2.5, 3.5],
    }
    .write(path, &meta())
    .unwrap();
}

fn diagnostics(path: &Path) {
    let rows = [
        Diagnostic::new("kmeans", "text", "inertia", 12.5).with_n(40),
        Diagnostic::new("kmeans", "matching", "label_agreement", 0.75)
            .with_ci((0.5, 0.9))
            .with_note("FLAG small split"),
    ];
    diagnostics::write(&rows, path, &meta()).unwrap();
}

fn history(path: &Path) {
    let row = |epoch, train, valid, is_best| HistoryRow {
        phase: "train".into(),
        epoch,
        lr: 1e-3,
        subject: "sentiment".into(),
        metric: "loss".into(),
        train,
        valid,
        is_best,
    };
    let rows = [
        row(1, Some(1.25), Some(1.5), false),
        row(2, Some(0.75), None, true),
    ];
    history::write(&rows, path, &meta()).unwrap();
}

fn predictions(path: &Path) {
    let row = |id: &str, label, calibrated| Prediction {
        segment_id: id.into(),
        split: Split::Test,
        head: "sentiment".into(),
        label,
        prediction: 0.5,
        calibrated,
    };
    let rows = [
        row("v1[0]", Some(1.0), None),
        row("v1[1]", None, Some(0.25)),
    ];
    evaluation::write_predictions(&rows, path, &meta()).unwrap();
}

fn metrics(path: &Path) {
    let row = |metric: &str, ci: Option<(f64, f64)>, note: Option<&str>| MetricRow {
        split: Split::Test,
        head: "sentiment".into(),
        metric: metric.into(),
        value: 0.625,
        ci_low: ci.map(|c| c.0),
        ci_high: ci.map(|c| c.1),
        n: 20,
        seed: 7,
        note: note.map(str::to_string),
    };
    let rows = [
        row("CCC", Some((0.5, 0.75)), None),
        row("MAE", None, Some("FLAG small split")),
    ];
    evaluation::write_metrics(&rows, path, &meta()).unwrap();
}

fn comparison(path: &Path) {
    let row = |group, std, ci: Option<(f64, f64)>| ComparisonRow {
        group,
        runs: "a1,a2".into(),
        stage: "eval".into(),
        params: "stages.model.params.dropout=0.4".into(),
        seeds: 2,
        split: "test".into(),
        head: "sentiment".into(),
        metric: "CCC".into(),
        mean: 0.5,
        std,
        ci_low: ci.map(|c| c.0),
        ci_high: ci.map(|c| c.1),
        delta: 0.125,
        within_noise: group == 0,
        is_best: group == 1,
    };
    let rows = [row(0, Some(0.25), None), row(1, None, Some((0.25, 0.75)))];
    comparison::write(&rows, path, &TableMeta::default()).unwrap();
}

/// Writes one table from fixed rows to the path given.
type Writer = fn(&Path);

/// Every writer, by the name of its golden file.
const WRITERS: [(&str, Writer); 10] = [
    ("segments.parquet", segments),
    ("segments_text.parquet", segments_with_text),
    ("features.parquet", features),
    ("norm_stats.parquet", norm_stats),
    ("targets.parquet", targets),
    ("diagnostics.parquet", diagnostics),
    ("history.parquet", history),
    ("predictions.parquet", predictions),
    ("metrics.parquet", metrics),
    ("comparison.parquet", comparison),
];

#[test]
fn every_writer_writes_the_golden_bytes_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let golden = golden_dir();
    let bless = std::env::var_os(WRITE_GOLDEN).is_some();
    for (name, write) in WRITERS {
        let (first, second) = (dir.path().join(name), dir.path().join(format!("2-{name}")));
        write(&first);
        write(&second);
        let bytes = std::fs::read(&first).unwrap();
        assert!(
            bytes == std::fs::read(&second).unwrap(),
            "{name}: two writes of the same rows differ"
        );
        if bless {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(golden.join(name), &bytes).unwrap();
            continue;
        }
        let expected = std::fs::read(golden.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", golden.join(name).display()));
        assert!(
            bytes == expected,
            "{name}: the bytes differ from {} (if the change is meant, see this module's doc)",
            golden.join(name).display()
        );
    }
}
