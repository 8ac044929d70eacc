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
            "no video is present in every modality, the text and the labels",
        ),
        (
            format!("COVAREP = {{ path = {:?} }}", folder.join(WORDS_CSD)),
            String::new(),
            "CMU_MOSI_TimestampedWords.csd: video `2iD-tVS8NPw`: `features` holds strings (words): name this file as the `text`",
        ),
        (
            String::new(),
            format!(
                "labels = {{ path = {:?} }}\ntext = {{ path = {:?} }}",
                folder.join("CMU_MOSI_Opinion_Labels.csd"),
                folder.join("CMU_MOSI_COVAREP.csd")
            ),
            "text: ",
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
    // The raw text of each segment, in split order (train, valid, test).
    let texts: Vec<&str> = ["train", "valid", "test"]
        .iter()
        .flat_map(|s| splits[*s]["raw_text"]["first"].as_array().unwrap())
        .map(|t| t.as_str().unwrap())
        .collect();
    let written: Vec<&str> = segments
        .rows
        .iter()
        .map(|r| r.text.as_deref().unwrap())
        .collect();
    assert_eq!(written, texts);
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

/// `tests/data/mmsa`: one small pickle per layout (see its make_layouts.py) and what numpy
/// read back from each.
fn layout_fixtures() -> (PathBuf, serde_json::Value) {
    let folder = data().join("mmsa");
    let expected =
        serde_json::from_str(&std::fs::read_to_string(folder.join("EXPECTED.json")).unwrap())
            .unwrap();
    (folder, expected)
}

/// An array's values as numpy read them.
fn numbers(array: &serde_json::Value) -> Vec<f64> {
    array["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn strings(array: &serde_json::Value) -> Vec<String> {
    array["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// MulT's id rows `[video, start, end]` → `video[k]`, `k` the rank of the segment's start
/// (then end) among the video's segments in the whole file.
fn mult_segment_ids(rows: &[(String, f64, f64)]) -> Vec<String> {
    rows.iter()
        .map(|(video, start, end)| {
            let before = rows
                .iter()
                .filter(|(v, s, e)| v == video && (s, e) < (start, end))
                .count();
            format!("{video}[{before}]")
        })
        .collect()
}

#[test]
fn every_pickle_layout_becomes_segments_with_labels_text_and_features() {
    let dir = Dir::new();
    let (folder, expected) = layout_fixtures();
    let files = [
        ("mmsa", "mmsa_unaligned.pkl", ""),
        ("sims", "sims_unaligned.pkl", ""),
        ("mult", "mult_data.pkl", ""),
        ("text_only", "text_only.pkl", ", modalities = {}"),
    ];
    let mut config = String::new();
    for (stage, file, extra) in files {
        config += &format!(
            "[stages.{stage}]\nkind = \"mmsa_pickle\"\nparams = {{ path = {:?}{extra} }}\n",
            folder.join(file)
        );
    }
    dir.write("p.toml", &config);
    dir.mmflow(&["run", "p.toml"]).ok();
    let lock = lock(&dir);
    for (stage, file, _) in files {
        let want = &expected[file];
        let layout = want["layout"].as_str().unwrap();
        let report = &lock["stages"][stage]["report"];
        assert_eq!(report["layout"], layout, "{stage}: {report}");
        assert_eq!(
            report["repeated_ids"],
            serde_json::json!([]),
            "{stage}: {report}"
        );
        let out = dir.join(&format!("data/runs/p/{stage}"));
        let table = SegmentTable::read(&out.join("segments.parquet")).unwrap();
        let label_keys: BTreeMap<&str, &str> = match layout {
            "sims" => [
                ("sentiment", "regression_labels"),
                ("sentiment_A", "regression_labels_A"),
                ("sentiment_T", "regression_labels_T"),
                ("sentiment_V", "regression_labels_V"),
            ]
            .into(),
            "mult" => [("sentiment", "labels")].into(),
            _ => [("sentiment", "regression_labels")].into(),
        };
        assert_eq!(
            table.label_names,
            label_keys.keys().copied().collect::<Vec<_>>()
        );
        let mut rows = table.rows.iter();
        let mut mult_rows = Vec::new();
        for split in ["train", "valid", "test"] {
            let want = &want["splits"][split];
            let ids = strings(&want["id"]);
            let n = want["id"]["shape"][0].as_u64().unwrap() as usize;
            let texts = want.get("raw_text").map(strings);
            let labels: Vec<Vec<f64>> = label_keys.values().map(|k| numbers(&want[*k])).collect();
            let id_width = ids.len() / n;
            for i in 0..n {
                let row = rows
                    .next()
                    .unwrap_or_else(|| panic!("{stage}: too few rows"));
                assert_eq!(row.split.as_str(), split);
                assert_eq!(row.dataset, if layout == "sims" { "sims" } else { "mosi" });
                assert_eq!(row.text, texts.as_ref().map(|t| t[i].clone()), "{stage}");
                for (got, values) in row.labels.iter().zip(&labels) {
                    assert_eq!(*got, Some(values[i] as f32), "{stage} {split} {i}");
                }
                if id_width == 1 {
                    let (video, clip) = ids[i].split_once("$_$").unwrap();
                    assert_eq!(row.video_id, video);
                    assert_eq!(row.segment_id, format!("{video}[{clip}]"));
                    assert_eq!((row.start, row.end), (None, None));
                } else {
                    let id = &ids[i * id_width..(i + 1) * id_width];
                    let (start, end) = (id[1].parse().unwrap(), id[2].parse().unwrap());
                    assert_eq!(row.video_id, id[0]);
                    assert_eq!((row.start, row.end), (Some(start), Some(end)));
                    mult_rows.push((id[0].clone(), start, end));
                }
            }
        }
        assert!(rows.next().is_none(), "{stage}: more rows than ids");
        if layout == "mult" {
            let got: Vec<&str> = table.rows.iter().map(|r| r.segment_id.as_str()).collect();
            assert_eq!(got, mult_segment_ids(&mult_rows));
            assert!(
                got.windows(2).any(|w| w[0] > w[1]),
                "numbering by start differs from file order in the fixture: {got:?}"
            );
        }
        // Features: every modality with the frames each segment keeps (cut to its lengths).
        let modalities: &[(&str, &str)] = if stage == "text_only" {
            &[]
        } else {
            &[("text", "text"), ("audio", "audio"), ("visual", "vision")]
        };
        let written: BTreeSet<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut outputs: BTreeSet<String> = modalities
            .iter()
            .map(|(m, _)| format!("{m}.parquet"))
            .collect();
        outputs.insert("segments.parquet".into());
        assert_eq!(written, outputs, "{stage}");
        let mut nonfinite = 0;
        for (modality, key) in modalities {
            let features = FeatureReader::open(&out.join(format!("{modality}.parquet")))
                .unwrap()
                .read_all()
                .unwrap();
            let mut k = 0;
            for split in ["train", "valid", "test"] {
                let want = &want["splits"][split][*key];
                assert_eq!(features.dim as u64, want["shape"][2].as_u64().unwrap());
                for (steps, sum) in want["kept_steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(want["finite_sum"].as_array().unwrap())
                {
                    assert_eq!(features.length(k) as u64, steps.as_u64().unwrap());
                    let frames = features.frames_of(k);
                    let finite: f64 = frames
                        .iter()
                        .filter(|x| x.is_finite())
                        .map(|&x| x as f64)
                        .sum();
                    assert!(
                        (finite - sum.as_f64().unwrap()).abs() < 1e-4,
                        "{stage} {modality}"
                    );
                    k += 1;
                }
                if *modality == "audio" {
                    nonfinite += want["nonfinite_kept"].as_u64().unwrap();
                }
            }
            assert_eq!(k, table.rows.len());
        }
        if stage != "text_only" && stage != "mult" {
            assert!(nonfinite > 0, "the fixture has -inf inside a segment");
            assert_eq!(report["nonfinite_values"]["audio"], nonfinite, "{report}");
            let unused = report["keys_not_used"].to_string();
            assert!(
                unused.contains("text_bert") && !unused.contains("raw_text"),
                "{unused}"
            );
        }
    }
}

/// `numpy_edges.pkl` and `mult_edges.pkl` (see make_layouts.py): ids with NULs inside and at
/// the end, lengths as whole floats and ints, labels `[N, 1]` and `[N, 1, 1]`, texts with NULs.
/// What the stage writes is what numpy read: each id whole (two ids that differ only after a
/// NUL are two videos), each label, each segment cut to its length, each text.
#[test]
fn ids_lengths_labels_and_texts_are_what_numpy_reads() {
    let dir = Dir::new();
    let (folder, expected) = layout_fixtures();
    let files = [
        ("edges", "numpy_edges.pkl"),
        ("mult_edges", "mult_edges.pkl"),
    ];
    let config: String = files
        .iter()
        .map(|(stage, file)| {
            format!(
                "[stages.{stage}]\nkind = \"mmsa_pickle\"\nparams = {{ path = {:?} }}\n",
                folder.join(file)
            )
        })
        .collect();
    dir.write("p.toml", &config);
    dir.mmflow(&["run", "p.toml"]).ok();
    let lock = lock(&dir);
    for (stage, file) in files {
        let want = &expected[file];
        let layout = want["layout"].as_str().unwrap();
        let report = &lock["stages"][stage]["report"];
        assert_eq!(report["layout"], layout, "{stage}: {report}");
        assert_eq!(report["repeated_ids"], serde_json::json!([]), "{report}");
        let out = dir.join(&format!("data/runs/p/{stage}"));
        let table = SegmentTable::read(&out.join("segments.parquet")).unwrap();
        let mut rows = table.rows.iter();
        let mut segment_ids = Vec::new();
        let mut mult_rows = Vec::new();
        for split in ["train", "valid", "test"] {
            let want = &want["numpy"][split];
            let texts = want.get("raw_text").map(|t| {
                t.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            });
            for (i, (id, labels)) in want["ids"]
                .as_array()
                .unwrap()
                .iter()
                .zip(want["labels"].as_array().unwrap())
                .enumerate()
            {
                let id: Vec<&str> = id
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap())
                    .collect();
                let row = rows
                    .next()
                    .unwrap_or_else(|| panic!("{stage}: too few rows"));
                assert_eq!(row.split.as_str(), split);
                let what = format!("{stage} {split} {id:?}");
                if let [one] = id.as_slice() {
                    let (video, clip) = one.split_once("$_$").unwrap();
                    assert_eq!(row.video_id, video, "{what}");
                    segment_ids.push(format!("{video}[{clip}]"));
                } else {
                    let (start, end) = (id[1].parse().unwrap(), id[2].parse().unwrap());
                    assert_eq!(row.video_id, id[0], "{what}");
                    assert_eq!((row.start, row.end), (Some(start), Some(end)), "{what}");
                    mult_rows.push((id[0].to_string(), start, end));
                }
                let labels: Vec<Option<f32>> = labels
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| Some(x.as_f64().unwrap() as f32))
                    .collect();
                assert_eq!(row.labels, labels, "{what}");
                assert_eq!(row.text, texts.as_ref().map(|t| t[i].clone()), "{what}");
            }
        }
        assert!(rows.next().is_none(), "{stage}: more rows than ids");
        if layout == "mult" {
            segment_ids = mult_segment_ids(&mult_rows);
        }
        let written: Vec<&str> = table.rows.iter().map(|r| r.segment_id.as_str()).collect();
        assert_eq!(written, segment_ids, "{stage}");
        let videos: BTreeSet<&str> = table.rows.iter().map(|r| r.video_id.as_str()).collect();
        let apart = if layout == "mult" {
            ["m\0a", "m\0b", "m"]
        } else {
            ["v\0a", "v\0b", "w"]
        };
        assert!(apart.iter().all(|v| videos.contains(v)), "{videos:?}");
        for (modality, key) in [("text", "text"), ("audio", "audio"), ("visual", "vision")] {
            let features = FeatureReader::open(&out.join(format!("{modality}.parquet")))
                .unwrap()
                .read_all()
                .unwrap();
            let mut k = 0;
            for split in ["train", "valid", "test"] {
                let want = &want["numpy"][split][key];
                for (steps, sum) in want["kept_steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(want["finite_sum"].as_array().unwrap())
                {
                    let what = format!("{stage} {modality} segment {k}");
                    assert_eq!(features.length(k) as u64, steps.as_u64().unwrap(), "{what}");
                    let got: f64 = features.frames_of(k).iter().map(|&x| x as f64).sum();
                    assert!((got - sum.as_f64().unwrap()).abs() < 1e-4, "{what}");
                    k += 1;
                }
            }
            assert_eq!(k, table.rows.len());
        }
        let cut = layout != "mult";
        assert_eq!(report["cut_to_lengths"]["audio"], cut, "{report}");
        assert_eq!(report["cut_to_lengths"]["visual"], cut, "{report}");
        assert_eq!(report["cut_to_lengths"]["text"], false, "{report}");
    }
}

#[test]
fn a_forced_layout_and_explicit_maps_win_over_what_the_keys_say() {
    let dir = Dir::new();
    let (folder, _) = layout_fixtures();
    let sims = folder.join("sims_unaligned.pkl");
    dir.write(
        "p.toml",
        &format!(
            "[stages.forced]\nkind = \"mmsa_pickle\"\nparams = {{ path = {sims:?}, layout = \"mmsa\" }}\n\
             [stages.explicit]\nkind = \"mmsa_pickle\"\nparams = {{ path = {sims:?}, dataset = \"simsv2\", labels = {{ audio_only = \"regression_labels_A\" }}, modalities = {{ acoustic = \"audio\" }}, text = \"annotations\" }}\n"
        ),
    );
    dir.mmflow(&["run", "p.toml"]).ok();
    let lock = lock(&dir);
    assert_eq!(lock["stages"]["forced"]["report"]["layout"], "mmsa");
    let forced = SegmentTable::read(&dir.join("data/runs/p/forced/segments.parquet")).unwrap();
    assert_eq!(forced.label_names, ["sentiment"]);
    assert_eq!(forced.rows[0].dataset, "mosi");
    assert!(forced.rows[0].text.is_some());

    assert_eq!(lock["stages"]["explicit"]["report"]["layout"], "sims");
    let out = dir.join("data/runs/p/explicit");
    let explicit = SegmentTable::read(&out.join("segments.parquet")).unwrap();
    assert_eq!(explicit.label_names, ["audio_only"]);
    assert_eq!(explicit.rows[0].dataset, "simsv2");
    let annotation = explicit.rows[0].text.as_deref().unwrap();
    assert!(
        annotation == "Positive" || annotation == "Negative",
        "{annotation}"
    );
    assert!(out.join("acoustic.parquet").exists() && !out.join("audio.parquet").exists());
}

/// A label file with a `text` column (as CH-SIMS's `label.csv`): each label row's text is its
/// segment's `text`; the column is not a label.
#[test]
fn a_csv_label_files_text_column_becomes_the_segments_text() {
    let dir = Dir::new();
    dir.write(
        "p.toml",
        r#"
[stages.src]
kind = "csv"
[stages.src.params]
dataset = "toy"
label_columns = ["sentiment", "sentiment_T"]
folds = "folds.json"
align = "none"
reference = "audio"
labels = { path = "labels.csv", fps = 0.5, csv = { video_column = "video_id" } }
[stages.src.params.modalities]
audio = { path = "audio", fps = 4.0 }
"#,
    );
    dir.write(
        "folds.json",
        r#"{"train": ["v1"], "valid": [], "test": ["v2"]}"#,
    );
    dir.write(
        "labels.csv",
        "video_id,timestamp,text,sentiment,sentiment_T\n\
         v1,0,\"我很开心, 真的\",0.8,1\n\
         v1,2,then it broke,-0.4,-1\n\
         v2,0,,0.2,0\n",
    );
    for video in ["v1", "v2"] {
        let rows: String = (0..16)
            .map(|i| format!("{},{}\n", i as f64 / 4.0, i))
            .collect();
        dir.write(
            &format!("audio/{video}.csv"),
            &format!("timestamp,a0\n{rows}"),
        );
    }
    dir.mmflow(&["run", "p.toml"]).ok();
    let table = SegmentTable::read(&dir.join("data/runs/p/src/segments.parquet")).unwrap();
    assert_eq!(table.label_names, ["sentiment", "sentiment_T"]);
    let got: Vec<_> = table
        .rows
        .iter()
        .map(|r| (r.segment_id.as_str(), r.text.as_deref(), r.labels.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("v1[0]", Some("我很开心, 真的"), vec![Some(0.8), Some(1.0)]),
            ("v1[1]", Some("then it broke"), vec![Some(-0.4), Some(-1.0)]),
            ("v2[0]", Some(""), vec![Some(0.2), Some(0.0)]),
        ]
    );
}

/// The SDK's words file (written by `tests/data/sdk/make_words.py`).
const WORDS_CSD: &str = "CMU_MOSI_TimestampedWords.csd";

/// `text` names the SDK's words sequence: each segment's text is its words as the SDK's
/// alignment to the labels puts them (`words_aligned_reference.json`, the SDK's own output),
/// `sp` left out; with `modalities = {}` the segments table comes alone.
#[test]
fn sdk_words_joined_per_segment_become_the_segments_text() {
    let folder = fixtures().join("sdk_basic/mosi");
    let reference: BTreeMap<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(folder.join("words_aligned_reference.json")).unwrap(),
    )
    .unwrap();
    let expected = |skip_sp: bool| -> BTreeMap<String, String> {
        reference
            .iter()
            .map(|(id, entry)| {
                let text = if skip_sp {
                    entry["text"].as_str().unwrap().to_string()
                } else {
                    let words = entry["words"].as_array().unwrap();
                    let words: Vec<&str> = words.iter().map(|w| w.as_str().unwrap()).collect();
                    words.join(" ")
                };
                (id.clone(), text)
            })
            .collect()
    };
    assert!(expected(true).values().any(|t| t.contains("café")));
    let labels = folder.join("CMU_MOSI_Opinion_Labels.csd");
    let words = folder.join(WORDS_CSD);
    let with_modalities = format!(
        "words = {{ path = {:?} }}\nFACET = {{ path = {:?} }}",
        folder.join("CMU_MOSI_TimestampedWordVectors.csd"),
        folder.join("CMU_MOSI_Visual_Facet_41.csd")
    );
    for (modalities, skip, skip_sp) in [
        (with_modalities.as_str(), "", true),
        ("", "", true),
        ("", ", skip = []", false),
    ] {
        let dir = Dir::new();
        // The text goes on to `embed_text` (a tiny random BERT: it runs, it means nothing).
        let model = data().join("models/tiny-bert");
        dir.write(
            "p.toml",
            &format!(
                "[stages.src]\nkind = \"csd\"\n[stages.src.params]\ndataset = \"mosi\"\nlabels = {{ path = {labels:?} }}\ntext = {{ path = {words:?}{skip} }}\n[stages.src.params.modalities]\n{modalities}\n\
                 [stages.emb]\nkind = \"embed_text\"\ninputs = {{ segments = \"src.segments\" }}\nparams = {{ model = {model:?} }}\n"
            ),
        );
        dir.mmflow(&["run", "p.toml"]).ok();
        let table = SegmentTable::read(&dir.join("data/runs/p/src/segments.parquet")).unwrap();
        let got: BTreeMap<String, String> = table
            .rows
            .iter()
            .map(|r| (r.segment_id.clone(), r.text.clone().unwrap()))
            .collect();
        let want = expected(skip_sp);
        // Every segment the stage keeps has the SDK's words; without modalities it keeps
        // every labelled segment the SDK aligns.
        assert!(!got.is_empty());
        for (id, text) in &got {
            assert_eq!(Some(text), want.get(id), "{id} ({modalities:?}{skip})");
        }
        if modalities.is_empty() {
            assert_eq!(got.len(), want.len());
            let outputs: Vec<_> = std::fs::read_dir(dir.join("data/runs/p/src"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".parquet"))
                .collect();
            assert_eq!(outputs, ["segments.parquet"]);
        }
        let embedded = FeatureReader::open(&dir.join("data/runs/p/emb/text.parquet"))
            .unwrap()
            .read_all()
            .unwrap();
        assert_eq!(
            embedded.segment_ids,
            got.keys().cloned().collect::<Vec<_>>()
        );
        let report = &lock(&dir)["stages"]["src"]["report"];
        assert_eq!(report["segments_without_words"], 0, "{report}");
        assert_eq!(report["videos_missing_per_file"]["text"], 0, "{report}");
    }
}

/// A first run over source files mmflow has not seen runs its stage while it hashes them: the
/// lock records their hashes, every table records the fingerprint the lock records, and the
/// tables are byte for byte those of a run that knew the hashes before it started.
#[test]
fn new_source_files_are_hashed_while_the_stage_runs_with_the_same_result() {
    let dir = Dir::new();
    let originals = fixtures().join("sdk_basic/mosi");
    // Copies: new files to mmflow (no lock or run-cache has seen them at these paths).
    let folder = dir.join("sources");
    std::fs::create_dir(&folder).unwrap();
    for file in MOSI.files.iter().map(|(_, f)| *f).chain([MOSI.labels]) {
        std::fs::copy(originals.join(file), folder.join(file)).unwrap();
    }
    dir.write("p.toml", &csd_config(&MOSI, &folder, ""));
    let first = dir.mmflow(&["run", "p.toml", "--out", "run"]).ok();
    assert!(
        first.stderr.contains("hashed meanwhile"),
        "the first run did not hash while running: {}",
        first.stderr
    );
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/mmflow.lock")).unwrap())
            .unwrap();
    let entry = &lock["stages"]["src"];
    let fingerprint = entry["fingerprint"].as_str().unwrap();
    let recorded = entry["external_files"].as_array().unwrap();
    assert_eq!(recorded.len(), 4);
    for file in recorded {
        let bytes = std::fs::read(file["path"].as_str().unwrap()).unwrap();
        assert_eq!(
            file["hash"].as_str().unwrap(),
            blake3::hash(&bytes).to_hex().as_str()
        );
    }
    let tables = crate::util::parquet_files(&dir.join("run/src"));
    assert_eq!(tables.len(), 4, "{tables:?}");
    let written: Vec<Vec<u8>> = tables
        .iter()
        .map(|t| {
            let path = dir.join("run/src").join(t);
            let meta = mmflow_schemas::read_file_meta(&path).unwrap();
            assert_eq!(meta.written_by.fingerprint.to_string(), fingerprint);
            std::fs::read(path).unwrap()
        })
        .collect();
    // Run again with the hashes known (from the lock): the same fingerprint, the same bytes.
    let again = dir
        .mmflow(&["run", "p.toml", "--out", "run", "--force", "src"])
        .ok();
    assert!(
        !again.stderr.contains("hashed meanwhile"),
        "{}",
        again.stderr
    );
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/mmflow.lock")).unwrap())
            .unwrap();
    assert_eq!(
        lock["stages"]["src"]["fingerprint"].as_str(),
        Some(fingerprint)
    );
    for (table, before) in tables.iter().zip(&written) {
        let after = std::fs::read(dir.join("run/src").join(table)).unwrap();
        assert!(&after == before, "{} differs", table.display());
    }
}
