//! The real-file sources against the SDK fixtures (written by the CMU SDK, h5py, numpy).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use mmflow_schemas::features::{FeatureBatch, FeatureReader};
use mmflow_schemas::segments::SegmentTable;
use mmflow_stages::ingest::align::Sequence;
use mmflow_stages::ingest::npz_file::NpzSource;
use mmflow_stages::ingest::readers::TimingOptions;

use crate::util::Dir;

/// This repository's test inputs (see tests/data/make_fixtures.py).
pub fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The files written by the CMU SDK, h5py and numpy (a few videos of each fixture set).
pub fn fixtures() -> PathBuf {
    data().join("sdk")
}

/// The videos of `dataset` in the fixture set `set` (e.g. `sdk_basic`), from its INDEX.json:
/// `(video id, standard fold)` in index order.
pub fn fixture_videos(set: &str, dataset: &str) -> Vec<(String, String)> {
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(set).join("INDEX.json")).unwrap(),
    )
    .unwrap();
    index[dataset]["videos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["video_id"].as_str().unwrap().to_string(),
                v["fold"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The videos of `fixture_videos` in `fold`.
pub fn videos_in_fold(set: &str, dataset: &str, fold: &str) -> Vec<String> {
    fixture_videos(set, dataset)
        .into_iter()
        .filter(|(_, f)| f == fold)
        .map(|(v, _)| v)
        .collect()
}

struct Set {
    dataset: &'static str,
    files: [(&'static str, &'static str); 3],
    labels: &'static str,
}

const MOSI: Set = Set {
    dataset: "mosi",
    files: [
        ("words", "CMU_MOSI_TimestampedWordVectors.csd"),
        ("COVAREP", "CMU_MOSI_COVAREP.csd"),
        ("FACET", "CMU_MOSI_Visual_Facet_41.csd"),
    ],
    labels: "CMU_MOSI_Opinion_Labels.csd",
};

const MOSEI: Set = Set {
    dataset: "mosei",
    files: [
        ("words", "CMU_MOSEI_TimestampedGloveVectors.csd"),
        ("COVAREP", "CMU_MOSEI_COVAREP.csd"),
        ("OpenFace2", "CMU_MOSEI_VisualOpenFace2.csd"),
    ],
    labels: "CMU_MOSEI_Labels.csd",
};

fn csd_config(set: &Set, folder: &Path, extra: &str) -> String {
    let mut s = format!(
        "[stages.src]\nkind = \"csd\"\n[stages.src.params]\ndataset = \"{}\"\nrequire_all_modalities = false\nlabels = {{ path = {:?} }}\n{extra}\n[stages.src.params.modalities]\n",
        set.dataset,
        folder.join(set.labels)
    );
    for (name, file) in set.files {
        s.push_str(&format!("{name} = {{ path = {:?} }}\n", folder.join(file)));
    }
    s
}

fn reference(folder: &Path) -> BTreeMap<String, Sequence> {
    let npz = NpzSource::open(
        &folder.join("sdk_aligned_reference.npz"),
        &TimingOptions::default(),
    )
    .unwrap();
    npz.videos()
        .iter()
        .map(|k| (k.clone(), npz.read(k).unwrap()))
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol
}

/// Every segment of `table` equals the reference's `<modality>/<segment>` entry (features
/// and intervals to 1e-6, NaN and ±inf in the same places), and vice versa.
fn assert_matches_reference(
    modality: &str,
    table: &FeatureBatch,
    reference: &BTreeMap<String, Sequence>,
) -> usize {
    let prefix = format!("{modality}/");
    let expected: BTreeSet<&str> = reference
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .collect();
    let got: BTreeSet<&str> = table.segment_ids.iter().map(String::as_str).collect();
    assert_eq!(got, expected, "{modality}: segments differ from the SDK's");
    for i in 0..table.len() {
        let id = &table.segment_ids[i];
        let r = &reference[&format!("{prefix}{id}")];
        assert_eq!(r.dim, table.dim, "{modality} {id}: width");
        assert_eq!(r.len(), table.length(i), "{modality} {id}: steps");
        let want = match &r.values {
            mmflow_stages::ingest::align::Values::F32(v) => {
                v.iter().map(|&x| x as f64).collect::<Vec<_>>()
            }
            mmflow_stages::ingest::align::Values::F64(v) => v.clone(),
        };
        for (j, (&g, &w)) in table.frames_of(i).iter().zip(&want).enumerate() {
            assert!(
                close(g as f64, w, 1e-6),
                "{modality} {id} value {j}: {g} vs SDK {w}"
            );
        }
        let intervals = table
            .intervals_of(i)
            .expect("aligned tables carry intervals");
        for (k, iv) in r.intervals.iter().enumerate() {
            assert!(
                close(intervals[2 * k], iv[0], 1e-6) && close(intervals[2 * k + 1], iv[1], 1e-6),
                "{modality} {id} interval {k}"
            );
        }
    }
    table.len()
}

/// The `csd` source on `root/<fixture>/<dataset>` equals the SDK's alignment of the same files.
fn check_against_sdk(root: &Path, set: &Set, fixture: &str) {
    let folder = root.join(fixture).join(set.dataset);
    let dir = Dir::new();
    dir.write("p.toml", &csd_config(set, &folder, ""));
    dir.mmflow(&["run", "p.toml"]).ok();
    let run = dir.join("data/runs/p/src");
    let reference = reference(&folder);
    for (name, _) in set.files {
        let table = FeatureReader::open(&run.join(format!("{name}.parquet")))
            .unwrap()
            .read_all()
            .unwrap();
        assert!(assert_matches_reference(name, &table, &reference) > 0);
    }
    // Labels: one segment per non-empty label interval, values equal.
    let segments = SegmentTable::read(&run.join("segments.parquet")).unwrap();
    let expected: BTreeSet<&str> = reference
        .keys()
        .filter_map(|k| k.strip_prefix("labels/"))
        .collect();
    let got: BTreeSet<&str> = segments
        .rows
        .iter()
        .map(|r| r.segment_id.as_str())
        .collect();
    assert_eq!(
        got, expected,
        "{fixture}/{}: labelled segments",
        set.dataset
    );
    for row in &segments.rows {
        let r = &reference[&format!("labels/{}", row.segment_id)];
        let want = match &r.values {
            mmflow_stages::ingest::align::Values::F32(v) => {
                v.iter().map(|&x| x as f64).collect::<Vec<_>>()
            }
            mmflow_stages::ingest::align::Values::F64(v) => v.clone(),
        };
        for (g, w) in row.labels.iter().zip(want) {
            assert!(close(g.unwrap() as f64, w, 1e-6));
        }
        assert!(
            close(row.start.unwrap(), r.intervals[0][0], 1e-9)
                && close(row.end.unwrap(), r.intervals[0][1], 1e-9)
        );
    }
}

#[test]
fn csd_alignment_equals_the_sdk_on_mosi_basic() {
    check_against_sdk(&fixtures(), &MOSI, "sdk_basic");
}

#[test]
fn csd_alignment_equals_the_sdk_on_mosei_basic() {
    check_against_sdk(&fixtures(), &MOSEI, "sdk_basic");
}

#[test]
fn csd_alignment_equals_the_sdk_on_mosi_edge_cases() {
    check_against_sdk(&fixtures(), &MOSI, "sdk_edge");
}

#[test]
fn csd_alignment_equals_the_sdk_on_mosei_edge_cases() {
    check_against_sdk(&fixtures(), &MOSEI, "sdk_edge");
}

/// With `MMFLOW_FULL_FIXTURES` naming the full fixture sets tests/data/sdk was cut from
/// (same layout), the alignment is checked on every video of them as well.
#[test]
fn csd_alignment_equals_the_sdk_on_the_full_fixture_sets_when_given() {
    let Some(root) = std::env::var_os("MMFLOW_FULL_FIXTURES") else {
        return;
    };
    for fixture in ["sdk_basic", "sdk_edge"] {
        for set in [&MOSI, &MOSEI] {
            check_against_sdk(Path::new(&root), set, fixture);
        }
    }
}

/// The `npz` and `csv` kinds read the same MOSI data (converted by numpy and written as
/// CSV) and must give the SDK's answer too; formats can be mixed in one stage.
#[test]
fn npz_and_csv_sources_align_like_the_csd_files_they_came_from() {
    let folder = fixtures().join("sdk_basic/mosi");
    let reference = reference(&folder);
    let configs = [
        (
            "npz",
            format!(
                "words = {{ path = {:?} }}\nFACET = {{ path = {:?} }}\nCOVAREP = {{ path = {:?}, format = \"csd\" }}\n",
                data().join("npz/words.npz"),
                data().join("npz/facet.npz"),
                folder.join("CMU_MOSI_COVAREP.csd")
            ),
        ),
        (
            "npz",
            format!(
                "words = {{ path = {:?} }}\nFACET = {{ path = {:?}, fps = 30.0 }}\nCOVAREP = {{ path = {:?}, format = \"csd\" }}\n",
                data().join("npz/words.npz"),
                data().join("npz/facet_fps.npz"),
                folder.join("CMU_MOSI_COVAREP.csd")
            ),
        ),
        (
            "csv",
            format!(
                "words = {{ path = {:?}, format = \"npz\" }}\nFACET = {{ path = {:?}, fps = 30.0 }}\nCOVAREP = {{ path = {:?}, format = \"csd\" }}\n",
                data().join("npz/words.npz"),
                data().join("csv/facet"),
                folder.join("CMU_MOSI_COVAREP.csd")
            ),
        ),
    ];
    for (kind, modalities) in configs {
        let dir = Dir::new();
        dir.write(
            "p.toml",
            &format!(
                "[stages.src]\nkind = \"{kind}\"\n[stages.src.params]\ndataset = \"mosi\"\nrequire_all_modalities = false\nlabels = {{ path = {:?}, format = \"csd\" }}\n[stages.src.params.modalities]\n{modalities}",
                folder.join("CMU_MOSI_Opinion_Labels.csd")
            ),
        );
        dir.mmflow(&["run", "p.toml"]).ok();
        for name in ["words", "FACET", "COVAREP"] {
            let table = FeatureReader::open(&dir.join(&format!("data/runs/p/src/{name}.parquet")))
                .unwrap()
                .read_all()
                .unwrap();
            assert!(
                assert_matches_reference(name, &table, &reference) > 0,
                "{kind} {name}"
            );
        }
    }
}

fn mosi_stage(extra: &str, modalities: &str) -> String {
    let folder = fixtures().join("sdk_edge/mosi");
    format!(
        "[stages.src]\nkind = \"csd\"\n[stages.src.params]\ndataset = \"mosi\"\nlabels = {{ path = {:?} }}\n{extra}\n[stages.src.params.modalities]\nwords = {{ path = {:?} }}\nFACET = {{ path = {:?} }}\n{modalities}",
        folder.join("CMU_MOSI_Opinion_Labels.csd"),
        folder.join("CMU_MOSI_TimestampedWordVectors.csd"),
        folder.join("CMU_MOSI_Visual_Facet_41.csd"),
    )
}

fn lock(dir: &Dir) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("data/runs/p/mmflow.lock")).unwrap())
        .unwrap()
}

#[test]
fn policies_are_applied_and_every_count_is_reported() {
    let covarep = fixtures().join("sdk_edge/mosi/CMU_MOSI_COVAREP.csd");
    let dir = Dir::new();
    // Default: only segments every modality covers; -inf kept and counted; a video missing
    // from FACET dropped everywhere (the SDK's unify).
    dir.write(
        "p.toml",
        &mosi_stage("", &format!("COVAREP = {{ path = {covarep:?} }}")),
    );
    dir.mmflow(&["run", "p.toml"]).ok();
    let report = &lock(&dir)["stages"]["src"]["report"];
    assert_eq!(report["videos_missing_per_file"]["FACET"], 1, "{report}");
    assert!(
        report["nonfinite_values"]["COVAREP"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        report["nonfinite_values"]["FACET"].as_u64().unwrap() > 0,
        "NaN frames: {report}"
    );
    assert_eq!(report["zero_length_label_intervals"], 1, "{report}");
    let covarep_table = FeatureReader::open(&dir.join("data/runs/p/src/COVAREP.parquet"))
        .unwrap()
        .read_all()
        .unwrap();
    assert!(covarep_table.frames.contains(&f32::NEG_INFINITY));
    let segments = SegmentTable::read(&dir.join("data/runs/p/src/segments.parquet")).unwrap();
    assert_eq!(
        segments.rows.len(),
        covarep_table.len(),
        "every kept segment has every modality"
    );
    assert!(
        segments.rows.iter().all(|r| r.video_id != "lXPQBPVc5Cw"),
        "the video FACET lacks is gone"
    );

    // zero: MulT/MMSA's treatment of -inf; error: fails naming file, video and segment.
    dir.write(
        "p.toml",
        &mosi_stage(
            "max_length = 2\nkeep = \"last\"",
            &format!("COVAREP = {{ path = {covarep:?}, nonfinite = \"zero\" }}"),
        ),
    );
    dir.mmflow(&["run", "p.toml"]).ok();
    let table = FeatureReader::open(&dir.join("data/runs/p/src/COVAREP.parquet"))
        .unwrap()
        .read_all()
        .unwrap();
    assert!(table.frames.iter().all(|x| x.is_finite()));
    assert!((0..table.len()).all(|i| table.length(i) <= 2));
    let report = &lock(&dir)["stages"]["src"]["report"];
    assert!(report["nonfinite_zeroed"]["COVAREP"].as_u64().unwrap() > 0);
    assert!(report["segments_truncated"]["COVAREP"].as_u64().unwrap() > 0);
    dir.write(
        "p.toml",
        &mosi_stage(
            "",
            &format!("COVAREP = {{ path = {covarep:?}, nonfinite = \"error\" }}"),
        ),
    );
    let run = dir.mmflow(&["run", "p.toml"]).expect(1);
    assert!(
        run.stderr.contains("CMU_MOSI_COVAREP.csd: video `")
            && run.stderr.contains("segment `")
            && run.stderr.contains("non-finite"),
        "{}",
        run.stderr
    );

    // Unaligned: COVAREP frames (100 Hz) cut to each label interval.
    dir.write(
        "p.toml",
        &mosi_stage(
            "align = \"none\"",
            &format!("COVAREP = {{ path = {covarep:?} }}"),
        ),
    );
    dir.mmflow(&["run", "p.toml"]).ok();
    let table = FeatureReader::open(&dir.join("data/runs/p/src/COVAREP.parquet"))
        .unwrap()
        .read_all()
        .unwrap();
    let segments = SegmentTable::read(&dir.join("data/runs/p/src/segments.parquet")).unwrap();
    let row = segments
        .rows
        .iter()
        .find(|r| r.segment_id == table.segment_ids[0])
        .unwrap();
    let duration = row.end.unwrap() - row.start.unwrap();
    assert!(
        (table.length(0) as f64 - duration * 100.0).abs() <= 2.0,
        "{} frames for {duration} s",
        table.length(0)
    );
}

#[test]
fn videos_of_another_width_follow_the_width_policy() {
    let bad = data().join("bad/covarep_43.csd");
    let dir = Dir::new();
    let config = |policy: &str| {
        let folder = fixtures().join("sdk_basic/mosi");
        format!(
            "[stages.src]\nkind = \"csd\"\n[stages.src.params]\ndataset = \"mosi\"\nlabels = {{ path = {:?} }}\n[stages.src.params.modalities]\nwords = {{ path = {:?} }}\nCOVAREP = {{ path = {bad:?}{policy} }}\n",
            folder.join("CMU_MOSI_Opinion_Labels.csd"),
            folder.join("CMU_MOSI_TimestampedWordVectors.csd"),
        )
    };
    dir.write("p.toml", &config(""));
    let run = dir.mmflow(&["run", "p.toml"]).expect(1);
    assert!(run.stderr.contains("covarep_43.csd: video `8d-gEyoeBzc`: features are 43 wide, modality `COVAREP` is 74 wide"), "{}", run.stderr);
    dir.write("p.toml", &config(", width_mismatch = \"drop\""));
    dir.mmflow(&["run", "p.toml"]).ok();
    let segments = SegmentTable::read(&dir.join("data/runs/p/src/segments.parquet")).unwrap();
    assert!(segments.rows.iter().all(|r| r.video_id != "8d-gEyoeBzc"));
    assert_eq!(
        lock(&dir)["stages"]["src"]["report"]["width_mismatch_videos"]["COVAREP"][0],
        "8d-gEyoeBzc"
    );
    dir.write("p.toml", &config(", width_mismatch = \"pad\""));
    dir.mmflow(&["run", "p.toml"]).ok();
    let table = FeatureReader::open(&dir.join("data/runs/p/src/COVAREP.parquet"))
        .unwrap()
        .read_all()
        .unwrap();
    let i = table
        .segment_ids
        .iter()
        .position(|s| s.starts_with("8d-gEyoeBzc["))
        .unwrap();
    assert_eq!(table.dim, 74);
    assert!(table
        .frames_of(i)
        .chunks(74)
        .all(|row| row[43..].iter().all(|x| *x == 0.0)));
}

#[test]
fn folds_can_be_overridden_and_unfolded_videos_are_reported() {
    let folder = fixtures().join("sdk_basic/mosi");
    let train = videos_in_fold("sdk_basic", "mosi", "train");
    let test = videos_in_fold("sdk_basic", "mosi", "test");
    let all = fixture_videos("sdk_basic", "mosi");
    // One standard-train video stays in train, another moves to valid; the rest is unfolded.
    let folds = serde_json::json!({"train": [&train[0]], "valid": [&train[1]], "test": [&test[0]]});
    let dir = Dir::new();
    dir.write("folds.json", &folds.to_string());
    dir.write(
        "p.toml",
        &csd_config(&MOSI, &folder, "folds = \"folds.json\""),
    );
    dir.mmflow(&["run", "p.toml"]).ok();
    let segments = SegmentTable::read(&dir.join("data/runs/p/src/segments.parquet")).unwrap();
    let videos: BTreeSet<&str> = segments.rows.iter().map(|r| r.video_id.as_str()).collect();
    assert_eq!(videos.len(), 3);
    assert!(segments
        .rows
        .iter()
        .any(|r| r.video_id == train[1] && r.split == mmflow_schemas::Split::Valid));
    let unfolded = lock(&dir)["stages"]["src"]["report"]["videos_in_no_fold"]
        .as_array()
        .unwrap()
        .len();
    assert!(all.len() > 3, "the fixture leaves a video unfolded");
    assert_eq!(unfolded, all.len() - 3);
}

#[test]
fn bad_source_files_fail_with_the_file_and_video_named_and_write_nothing() {
    let folder = fixtures().join("sdk_basic/mosi");
    let dir = Dir::new();
    let truncated = dir.join("truncated.csd");
    let bytes = std::fs::read(folder.join("CMU_MOSI_COVAREP.csd")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mosei_labels = fixtures().join("sdk_basic/mosei/CMU_MOSEI_Labels.csd");
    let cases: Vec<(String, String, &str)> = vec![
        (
            format!(
                "COVAREP = {{ path = {:?} }}",
                data().join("bad/no_data.csd")
            ),
            String::new(),
            "no_data.csd: no `/CMU_MOSI_COVAREP/data` group",
        ),
        (
            format!(
                "COVAREP = {{ path = {:?} }}",
                data().join("bad/length_mismatch.csd")
            ),
            String::new(),
            "length_mismatch.csd: video `2iD-tVS8NPw`: 5 feature rows but 4 intervals",
        ),
        (
            format!("COVAREP = {{ path = {truncated:?} }}"),
            String::new(),
            "truncated.csd: ",
        ),
        (
            format!("COVAREP = {{ path = {:?} }}", dir.join("nope.csd")),
            String::new(),
            "nope.csd: No such file or directory",
        ),
        (
            String::new(),
            format!("labels = {{ path = {mosei_labels:?} }}"),
            "no video is present in every modality and the labels",
        ),
    ];
    for (modality, labels, message) in cases {
        let labels = if labels.is_empty() {
            format!(
                "labels = {{ path = {:?} }}",
                folder.join("CMU_MOSI_Opinion_Labels.csd")
            )
        } else {
            labels
        };
        dir.write(
            "p.toml",
            &format!(
                "[stages.src]\nkind = \"csd\"\n[stages.src.params]\ndataset = \"mosi\"\n{labels}\n[stages.src.params.modalities]\nwords = {{ path = {:?} }}\n{modality}\n",
                folder.join("CMU_MOSI_TimestampedWordVectors.csd")
            ),
        );
        let run = dir.mmflow(&["run", "p.toml"]).expect(1);
        assert!(
            run.stderr.contains(message),
            "expected `{message}` in:\n{}",
            run.stderr
        );
        assert!(!dir.join("data/runs/p/src/segments.parquet").exists());
    }
}

#[test]
fn mmsa_pickles_become_segments_and_features() {
    let dir = Dir::new();
    let pkl = fixtures().join("mmsa_mosei_numpy1_p4.pkl");
    dir.write(
        "p.toml",
        &format!("[stages.m]\nkind = \"mmsa_pickle\"\nparams = {{ path = {pkl:?}, dataset = \"mosei\", nonfinite = {{ audio = \"zero\" }} }}\n"),
    );
    dir.mmflow(&["run", "p.toml"]).ok();
    let run = dir.join("data/runs/p/m");
    let segments = SegmentTable::read(&run.join("segments.parquet")).unwrap();
    assert_eq!(segments.rows[0].segment_id, "vid5_0[0]");
    assert_eq!(segments.rows[0].video_id, "vid5_0");
    assert_eq!(segments.rows[0].labels[0], Some(1.666_666_6));
    let audio = FeatureReader::open(&run.join("audio.parquet"))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(audio.dim, 74);
    assert_eq!(audio.length(0), 38, "cut to audio_lengths");
    assert!(audio.frames.iter().all(|x| x.is_finite()), "-inf zeroed");
    let vision = FeatureReader::open(&run.join("visual.parquet"))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(
        (vision.dim, vision.length(0)),
        (35, 27),
        "cut to the vision_lengths list"
    );
    let text = FeatureReader::open(&run.join("text.parquet"))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(
        (text.dim, text.length(0)),
        (300, 50),
        "no text lengths: whole sequences"
    );
    let report = &lock(&dir)["stages"]["m"]["report"];
    // EXPECTED.json: the -inf values of each split's audio (all within audio_lengths), and
    // each split's ids (the shipped pickle has at most two clips a split: all listed).
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("EXPECTED.json")).unwrap())
            .unwrap();
    let splits = expected["mmsa_mosei_numpy1_p4.pkl"].as_object().unwrap();
    let neginf: u64 = splits
        .values()
        .map(|s| s["audio"]["neginf"].as_u64().unwrap())
        .sum();
    assert!(neginf > 0);
    assert_eq!(report["nonfinite_values"]["audio"], neginf, "{report}");
    let mut ids = Vec::new();
    for split in splits.values() {
        let listed = split["id"]["first"].as_array().unwrap();
        assert_eq!(
            listed.len() as u64,
            split["id"]["shape"][0].as_u64().unwrap()
        );
        ids.extend(listed.iter().map(|id| id.as_str().unwrap()));
    }
    let repeats = ids.len() - ids.iter().collect::<BTreeSet<_>>().len();
    assert!(repeats > 0, "the fixture reuses ids across splits");
    assert_eq!(
        report["repeated_ids"].as_array().unwrap().len(),
        repeats,
        "{report}"
    );

    // A pickle that would run code, and a truncated one: refused, nothing written.
    let truncated = dir.join("truncated.pkl");
    let bytes = std::fs::read(&pkl).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    for (path, message) in [
        (
            data().join("pickle/evil.pkl"),
            "refusing global `posix.system`",
        ),
        (truncated, "truncated pickle"),
    ] {
        dir.write(
            "q.toml",
            &format!("[stages.m]\nkind = \"mmsa_pickle\"\nparams = {{ path = {path:?} }}\n"),
        );
        let run = dir.mmflow(&["run", "q.toml"]).expect(1);
        assert!(
            run.stderr.contains(message)
                && run
                    .stderr
                    .contains(path.file_name().unwrap().to_str().unwrap()),
            "{}",
            run.stderr
        );
        assert!(!dir.join("data/runs/q/m/segments.parquet").exists());
    }
}
