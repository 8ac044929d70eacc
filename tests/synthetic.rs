//! The `synthetic` source: real shapes, ids and folds, and a learnable latent signal.

use std::collections::{BTreeSet, HashMap};

use mmflow_schemas::features::{FeatureBatch, FeatureReader};
use mmflow_schemas::segments::SegmentTable;
use mmflow_schemas::Split;

use crate::util::Dir;

const SOURCES: &str = r#"
[stages.mosei]
kind = "synthetic"
seed = 1
params = { profile = "mosei", scale = 0.02 }

[stages.mosi]
kind = "synthetic"
seed = 2
params = { profile = "mosi", scale = 0.5 }

[stages.va]
kind = "synthetic"
params = { profile = "valence_arousal", scale = 0.1 }
"#;

fn folds() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/standard_folds.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

/// Pearson correlation.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx).powi(2);
        syy += (b - my).powi(2);
    }
    sxy / (sxx * syy).sqrt()
}

/// A crude linear probe: the difference of the mean pooled vectors of positive and negative
/// train segments, as a direction to project on.
fn direction(
    batch: &FeatureBatch,
    label: &HashMap<String, f32>,
    train: &dyn Fn(&str) -> bool,
) -> Vec<f64> {
    let d = batch.dim;
    let (mut pos, mut neg) = (vec![0f64; d], vec![0f64; d]);
    let (mut np, mut nn) = (0.0, 0.0);
    for i in 0..batch.len() {
        let id = &batch.segment_ids[i];
        if !train(id) {
            continue;
        }
        let (acc, n) = if label[id] > 0.0 {
            (&mut pos, &mut np)
        } else {
            (&mut neg, &mut nn)
        };
        for (a, &x) in acc.iter_mut().zip(batch.pooled_of(i)) {
            *a += x as f64;
        }
        *n += 1.0;
    }
    pos.iter().zip(&neg).map(|(p, n)| p / np - n / nn).collect()
}

fn projection_correlation(
    batch: &FeatureBatch,
    label: &HashMap<String, f32>,
    dir: &[f64],
    keep: &dyn Fn(&str) -> bool,
) -> f64 {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in 0..batch.len() {
        let id = &batch.segment_ids[i];
        if keep(id) {
            xs.push(
                batch
                    .pooled_of(i)
                    .iter()
                    .zip(dir)
                    .map(|(&x, d)| x as f64 * d)
                    .sum(),
            );
            ys.push(label[id] as f64);
        }
    }
    pearson(&xs, &ys)
}

#[test]
fn sources_have_the_real_shapes_ids_folds_and_a_learnable_signal() {
    let dir = Dir::new();
    dir.write("p.toml", SOURCES);
    dir.mmflow(&["run", "p.toml"]).ok();
    let run = dir.join("data/runs/p");
    let folds = folds();

    let mut by_dataset = HashMap::new();
    for (stage, dims, grid) in [("mosei", [300, 74, 713], 3.0), ("mosi", [300, 74, 65], 5.0)] {
        let segs = SegmentTable::read(&run.join(format!("{stage}/segments.parquet"))).unwrap();
        assert_eq!(segs.label_names[0], "sentiment");
        if stage == "mosei" {
            assert_eq!(segs.label_names.len(), 7);
        }
        for r in &segs.rows {
            // `<video>[<i>]`, the video in the standard fold of its split.
            assert!(
                r.segment_id.starts_with(&format!("{}[", r.video_id))
                    && r.segment_id.ends_with(']')
            );
            let fold = folds[stage][r.split.as_str()].as_array().unwrap();
            assert!(
                fold.iter().any(|v| v == r.video_id.as_str()),
                "{} not in {}",
                r.video_id,
                r.split
            );
            let s = r.labels[0].unwrap() as f64;
            assert!((-3.0..=3.0).contains(&s));
            assert!(
                ((s * grid).round() - s * grid).abs() < 1e-3,
                "label {s} is not an annotator mean"
            );
            for e in &r.labels[1..] {
                assert!((0.0..=3.0).contains(&e.unwrap()));
            }
            assert!(r.start.unwrap() < r.end.unwrap() && r.speaker_id.is_some());
        }
        let counts = segs.split_counts();
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        let label: HashMap<String, f32> = segs
            .rows
            .iter()
            .map(|r| (r.segment_id.clone(), r.labels[0].unwrap()))
            .collect();
        let split: HashMap<String, Split> = segs
            .rows
            .iter()
            .map(|r| (r.segment_id.clone(), r.split))
            .collect();
        let mut tables = Vec::new();
        for (modality, dim) in ["text", "audio", "visual"].into_iter().zip(dims) {
            let reader =
                FeatureReader::open(&run.join(format!("{stage}/{modality}.parquet"))).unwrap();
            assert_eq!(reader.info().dim, dim);
            assert_eq!(reader.info().modality, modality);
            let batch = reader.read_all().unwrap();
            assert_eq!(batch.len(), segs.rows.len());
            for i in 0..batch.len() {
                assert!((2..=50).contains(&batch.length(i)));
            }
            if modality == "audio" && stage == "mosei" {
                assert!(
                    batch.frames.contains(&f32::NEG_INFINITY),
                    "COVAREP has -inf"
                );
            }
            tables.push(batch);
        }
        // Word-aligned: every modality has the same length per segment.
        for i in 0..tables[0].len() {
            assert_eq!(tables[0].length(i), tables[2].length(i));
        }
        by_dataset.insert(stage, (label, split, tables));
    }

    // The latent sentiment is learnable from text within a dataset…
    let (label, split, tables) = &by_dataset["mosei"];
    let train = |id: &str| split[id] == Split::Train;
    let dir_mosei = direction(&tables[0], label, &train);
    let within = projection_correlation(&tables[0], label, &dir_mosei, &|id| {
        split[id] != Split::Train
    });
    assert!(
        within > 0.5,
        "text → sentiment correlation on held-out MOSEI: {within}"
    );
    // …and text shares one space across datasets: MOSEI's direction works on MOSI.
    let (mosi_label, _, mosi_tables) = &by_dataset["mosi"];
    let across = projection_correlation(&mosi_tables[0], mosi_label, &dir_mosei, &|_| true);
    assert!(across > 0.4, "MOSEI text direction on MOSI: {across}");

    // Valence/arousal: users with texts in every split, integer labels in range.
    let va = SegmentTable::read(&run.join("va/segments.parquet")).unwrap();
    assert_eq!(va.label_names, vec!["valence", "arousal"]);
    let users: BTreeSet<&str> = va
        .rows
        .iter()
        .map(|r| r.speaker_id.as_deref().unwrap())
        .collect();
    assert_eq!(users.len(), 14); // ceil(137 · 0.1)
    for user in &users {
        let splits: BTreeSet<Split> = va
            .rows
            .iter()
            .filter(|r| r.speaker_id.as_deref() == Some(*user))
            .map(|r| r.split)
            .collect();
        assert_eq!(splits.len(), 3, "{user} has texts in every split");
    }
    for r in &va.rows {
        let (v, a) = (r.labels[0].unwrap(), r.labels[1].unwrap());
        assert!((-2.0..=2.0).contains(&v) && v.fract() == 0.0);
        assert!((0.0..=2.0).contains(&a) && a.fract() == 0.0);
    }
    let text = FeatureReader::open(&run.join("va/text.parquet"))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(text.len(), va.rows.len());
}
