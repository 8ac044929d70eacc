//! The `normalize` stage: train-only statistics, z-scores, non-finite policy, `match_to`.

use mmflow_schemas::features::FeatureReader;
use mmflow_schemas::norm_stats::NormStatsTable;
use mmflow_schemas::segments::SegmentTable;
use mmflow_schemas::Split;

use crate::util::Dir;

const PIPELINE: &str = r#"
[stages.mosei]
kind = "synthetic"
seed = 1
params = { profile = "mosei", scale = 0.02 }

[stages.mosi]
kind = "synthetic"
seed = 2
params = { profile = "mosi", scale = 0.3 }

[stages.mosei_norm]
kind = "normalize"
inputs = { segments = "mosei.segments", features = ["mosei.text", "mosei.audio"] }

[stages.mosi_matched]
kind = "normalize"
inputs = { segments = "mosi.segments", features = ["mosi.audio"], match_to = "mosei_norm.stats" }
"#;

/// Mean and population std per feature over the frames of the train segments.
fn train_moments(
    run: &std::path::Path,
    stage: &str,
    segments: &str,
    table: &str,
) -> (Vec<f64>, Vec<f64>, usize) {
    let segs = SegmentTable::read(&run.join(segments)).unwrap();
    let train: std::collections::HashSet<&str> = segs
        .rows
        .iter()
        .filter(|r| r.split == Split::Train)
        .map(|r| r.segment_id.as_str())
        .collect();
    let batch = FeatureReader::open(&run.join(format!("{stage}/{table}.parquet")))
        .unwrap()
        .read_all()
        .unwrap();
    let d = batch.dim;
    let (mut sum, mut sq, mut n) = (vec![0f64; d], vec![0f64; d], 0usize);
    for i in 0..batch.len() {
        if !train.contains(batch.segment_ids[i].as_str()) {
            continue;
        }
        for row in batch.frames_of(i).chunks(d) {
            for j in 0..d {
                sum[j] += row[j] as f64;
                sq[j] += (row[j] as f64).powi(2);
            }
            n += 1;
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / n as f64 - m * m).max(0.0).sqrt())
        .collect();
    (mean, std, n)
}

#[test]
fn train_split_becomes_z_scores_and_nonfinite_values_are_replaced_and_counted() {
    let dir = Dir::new();
    dir.write("p.toml", PIPELINE);
    dir.mmflow(&["run", "p.toml"]).ok();
    let run = dir.join("data/runs/p");
    for table in ["text", "audio"] {
        let (mean, std, n) = train_moments(&run, "mosei_norm", "mosei/segments.parquet", table);
        assert!(n > 100);
        for j in 0..mean.len() {
            assert!(
                mean[j].abs() < 1e-3,
                "{table} feature {j}: mean {}",
                mean[j]
            );
            // Replaced non-finite values sit at 0 and shrink the std a little.
            assert!(
                (std[j] - 1.0).abs() < 0.02,
                "{table} feature {j}: std {}",
                std[j]
            );
        }
        let out = FeatureReader::open(&run.join(format!("mosei_norm/{table}.parquet")))
            .unwrap()
            .read_all()
            .unwrap();
        assert!(out.frames.iter().all(|x| x.is_finite()));
        // Pooled vectors are the means of the normalised frames.
        let i = 0;
        let d = out.dim;
        let mean0: f64 =
            out.frames_of(i).chunks(d).map(|r| r[0] as f64).sum::<f64>() / out.length(i) as f64;
        assert!((mean0 - out.pooled_of(i)[0] as f64).abs() < 1e-5);
    }
    let stats = NormStatsTable::read(&run.join("mosei_norm/stats.parquet")).unwrap();
    assert_eq!(stats.modalities.len(), 2);
    let audio = stats.modality("audio").unwrap();
    assert_eq!(audio.features.len(), 74);
    assert_eq!(audio.dataset, "mosei");
    let nonfinite: u64 = audio.features.iter().map(|f| f.nonfinite).sum();
    assert!(nonfinite > 0, "COVAREP's -inf are counted");
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("mmflow.lock")).unwrap()).unwrap();
    let report = &lock["stages"]["mosei_norm"]["report"]["audio"];
    assert!(
        report["nonfinite_replaced"].as_u64().unwrap() >= nonfinite,
        "{report}"
    );
    assert_eq!(
        report["fitted_frames"].as_u64().unwrap(),
        audio.features[0].count + audio.features[0].nonfinite
    );

    // match_to: MOSI's audio mapped onto MOSEI's raw audio statistics.
    let (mean, std, _) = train_moments(&run, "mosi_matched", "mosi/segments.parquet", "audio");
    for (j, f) in audio.features.iter().enumerate() {
        assert!(
            (mean[j] - f.mean).abs() < 1e-3 * f.std.max(1.0),
            "feature {j}: {} vs {}",
            mean[j],
            f.mean
        );
        assert!(
            (std[j] / f.std - 1.0).abs() < 0.03,
            "feature {j}: {} vs {}",
            std[j],
            f.std
        );
    }
}

#[test]
fn clip_bounds_values_and_match_to_checks_dimensions() {
    let dir = Dir::new();
    dir.write("p.toml", PIPELINE);
    dir.mmflow(&[
        "run",
        "p.toml",
        "--set",
        "stages.mosei_norm.params.clip=2.0",
    ])
    .ok();
    let out = FeatureReader::open(&dir.join("data/runs/p/mosei_norm/text.parquet"))
        .unwrap()
        .read_all()
        .unwrap();
    assert!(out.frames.iter().all(|x| x.abs() <= 2.0));
    assert!(out.frames.iter().any(|x| x.abs() == 2.0));

    let run = dir
        .mmflow(&[
            "run",
            "p.toml",
            "--set",
            "stages.mosi_matched.inputs.features=[\"mosi.visual\"]",
            "--set",
            "stages.mosei_norm.inputs.features=[\"mosei.visual\"]",
        ])
        .expect(1);
    assert!(
        run.stderr
            .contains("modality `visual` has 713 features, `mosi.visual` has 65"),
        "{}",
        run.stderr
    );
    let run = dir
        .mmflow(&[
            "run",
            "p.toml",
            "--set",
            "stages.mosi_matched.inputs.features=[\"mosi.text\"]",
            "--set",
            "stages.mosei_norm.inputs.features=[\"mosei.audio\"]",
        ])
        .expect(1);
    assert!(
        run.stderr.contains("has no statistics for modality `text`"),
        "{}",
        run.stderr
    );
}
