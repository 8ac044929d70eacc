//! `select_targets`: shapes, train-only targets, label agreement above chance, determinism,
//! and bad input.

use std::collections::{HashMap, HashSet};

use mmflow_schemas::diagnostics;
use mmflow_schemas::segments::SegmentTable;
use mmflow_schemas::targets::TargetTable;
use mmflow_schemas::Split;

use crate::sources::{fixture_videos, fixtures};
use crate::util::Dir;

const SOURCES: &str = r#"
[stages.mosei]
kind = "synthetic"
seed = 1
params = { profile = "mosei", scale = 0.06 }

[stages.mosi]
kind = "synthetic"
seed = 2
params = { profile = "mosi", scale = 0.5 }

[stages.mosei_norm]
kind = "normalize"
inputs = { segments = "mosei.segments", features = ["mosei.text", "mosei.visual"] }

[stages.mosi_norm]
kind = "normalize"
inputs = { segments = "mosi.segments", features = ["mosi.text", "mosi.visual"] }
"#;

fn stage(id: &str, params: &str) -> String {
    format!(
        "\n[stages.{id}]\nkind = \"select_targets\"\ninputs = {{ source_segments = \"mosi.segments\", source = [\"mosi_norm.text\", \"mosi_norm.visual\"], target_segments = \"mosei.segments\", target = [\"mosei_norm.text\", \"mosei_norm.visual\"] }}\nparams = {{ {params} }}\n"
    )
}

fn agreement(dir: &Dir, id: &str) -> (f64, f64, f64) {
    let rows =
        diagnostics::read(&dir.join(&format!("data/runs/p/{id}/diagnostics.parquet"))).unwrap();
    let d = rows
        .iter()
        .find(|d| d.metric == "label_agreement")
        .expect("label agreement reported");
    assert!(d.n.unwrap() > 100);
    (d.value, d.ci_low.unwrap(), d.ci_high.unwrap())
}

#[test]
fn kmeans_and_cosine_targets_carry_more_sentiment_than_random_ones() {
    let dir = Dir::new();
    let config = format!(
        "{SOURCES}{}{}{}{}",
        stage("random", "method = \"random\", match_on = [\"text\"], adapt = [\"visual\"]"),
        stage("kmeans", "method = \"kmeans\", k = 12, match_on = [\"text\"], adapt = [\"visual\"]"),
        stage("nearest", "method = \"kmeans\", k = 12, cluster_target = \"nearest_member\", match_on = [\"text\"], adapt = [\"visual\"]"),
        stage("cosine", "method = \"cosine\", top_k = 3, weighting = \"similarity\", match_on = [\"text\"], adapt = [\"visual\"]"),
    );
    dir.write("p.toml", &config);
    dir.mmflow(&["run", "p.toml"]).ok();
    let run = dir.join("data/runs/p");
    let mosi = SegmentTable::read(&run.join("mosi/segments.parquet")).unwrap();
    let mosei = SegmentTable::read(&run.join("mosei/segments.parquet")).unwrap();
    let mosei_train: HashSet<&str> = mosei
        .rows
        .iter()
        .filter(|r| r.split == Split::Train)
        .map(|r| r.segment_id.as_str())
        .collect();
    let mosi_split: HashMap<&str, Split> = mosi
        .rows
        .iter()
        .map(|r| (r.segment_id.as_str(), r.split))
        .collect();
    for id in ["random", "kmeans", "nearest", "cosine"] {
        let table = TargetTable::read(&run.join(format!("{id}/visual.parquet"))).unwrap();
        assert_eq!(
            table.rows.len(),
            mosi.rows.len(),
            "{id}: one target per source segment"
        );
        assert_eq!(
            table.info.dim, 713,
            "{id}: targets live in MOSEI's visual space"
        );
        assert_eq!(
            (
                table.info.source_dataset.as_str(),
                table.info.target_dataset.as_str()
            ),
            ("mosi", "mosei")
        );
        for row in &table.rows {
            assert_eq!(mosi_split[row.segment_id.as_str()], row.split);
            for m in &row.matched {
                assert!(
                    mosei_train.contains(m.as_str()),
                    "{id}: {m} is not a MOSEI train segment"
                );
            }
        }
        assert!(table.vectors.iter().all(|v| v.is_finite()));
    }
    let cosine = TargetTable::read(&run.join("cosine/visual.parquet")).unwrap();
    assert!(cosine
        .rows
        .iter()
        .all(|r| r.matched.len() == 3 && r.similarity.is_some()));
    let kmeans = TargetTable::read(&run.join("kmeans/visual.parquet")).unwrap();
    assert!(kmeans
        .rows
        .iter()
        .all(|r| r.cluster.is_some_and(|c| (0..12).contains(&c))));

    let (random, _, random_high) = agreement(&dir, "random");
    assert!(
        random.abs() < 0.15,
        "random targets carry no sentiment: r = {random}"
    );
    for id in ["kmeans", "nearest", "cosine"] {
        let (r, low, _) = agreement(&dir, id);
        assert!(
            low > random_high,
            "{id}: r = {r} (CI low {low}) not above random's CI ({random_high})"
        );
    }
    let rows = diagnostics::read(&run.join("kmeans/diagnostics.parquet")).unwrap();
    for metric in [
        "inertia",
        "cluster_size_min",
        "empty_cluster_share",
        "similarity_median",
        "distinct_targets",
        "target_spread_ratio",
    ] {
        assert!(
            rows.iter().any(|d| d.metric == metric),
            "kmeans diagnostics lack {metric}"
        );
    }

    // Deterministic for a seed; another seed changes k-means and random.
    dir.mmflow(&["run", "p.toml", "--out", "again"]).ok();
    for id in ["random", "kmeans", "cosine"] {
        let a = std::fs::read(run.join(format!("{id}/visual.parquet"))).unwrap();
        let b = std::fs::read(dir.join(&format!("again/{id}/visual.parquet"))).unwrap();
        assert!(a == b, "{id} is not reproducible");
    }
    dir.mmflow(&[
        "run",
        "p.toml",
        "--out",
        "reseeded",
        "--set",
        "pipeline.seed=7",
    ])
    .ok();
    let a = TargetTable::read(&run.join("random/visual.parquet")).unwrap();
    let b = TargetTable::read(&dir.join("reseeded/random/visual.parquet")).unwrap();
    assert_ne!(a.rows[0].matched, b.rows[0].matched);
}

#[test]
fn bad_target_selection_inputs_are_refused_with_stage_param_and_table_named() {
    let dir = Dir::new();
    // A matching modality the source lacks: caught by validation.
    let bad_match = format!(
        "{SOURCES}{}",
        stage("t", "match_on = [\"audio\"], adapt = [\"visual\"]")
    );
    dir.write("p.toml", &bad_match);
    let run = dir.mmflow(&["validate", "p.toml"]).expect(2);
    assert!(run.stderr.contains("`stages.t.params.match_on`: matching modality `audio` is not among the `source` inputs"), "{}", run.stderr);
    // Mismatched widths in the matching space (MOSI's visual is 65-d, MOSEI's 713-d).
    dir.write(
        "p.toml",
        &format!(
            "{SOURCES}{}",
            stage("t", "match_on = [\"visual\"], adapt = [\"visual\"]")
        ),
    );
    let run = dir.mmflow(&["run", "p.toml"]).expect(1);
    assert!(run.stderr.contains("matching modality `visual` (param `match_on`) is 65 wide in mosi_norm.visual but 713 wide in mosei_norm.visual"), "{}", run.stderr);
    // k larger than the target train set.
    dir.write(
        "p.toml",
        &format!(
            "{SOURCES}{}",
            stage(
                "t",
                "k = 100000, match_on = [\"text\"], adapt = [\"visual\"]"
            )
        ),
    );
    let run = dir.mmflow(&["run", "p.toml"]).expect(1);
    assert!(
        run.stderr
            .contains("param `k` = 100000 but mosei.segments has only"),
        "{}",
        run.stderr
    );
    assert!(!dir.join("data/runs/p/t/visual.parquet").exists());
    // NaN in the inputs: un-normalised visual features hold NaN frames (a lost face).
    let raw = format!(
        "{SOURCES}\n[stages.t]\nkind = \"select_targets\"\ninputs = {{ source_segments = \"mosi.segments\", source = [\"mosi.visual\", \"mosi_norm.text\"], target_segments = \"mosei.segments\", target = [\"mosei.visual\", \"mosei_norm.text\"] }}\nparams = {{ match_on = [\"text\"], adapt = [\"visual\"] }}\n"
    );
    dir.write("p.toml", &raw);
    let run = dir.mmflow(&["run", "p.toml"]).expect(1);
    assert!(
        run.stderr.contains("mosei.visual")
            && run.stderr.contains("non-finite value")
            && run.stderr.contains("segment `"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_empty_target_train_split_is_an_error() {
    // MOSI from the SDK fixtures with every video moved to the test fold is the "target".
    let folder = fixtures().join("sdk_basic/mosi");
    let dir = Dir::new();
    let videos: Vec<String> = fixture_videos("sdk_basic", "mosi")
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    let folds = serde_json::json!({"train": [], "valid": [], "test": videos});
    dir.write("folds.json", &folds.to_string());
    dir.write(
        "p.toml",
        &format!(
            "{SOURCES}\n[stages.sdk]\nkind = \"csd\"\n[stages.sdk.params]\nfolds = \"folds.json\"\nlabels = {{ path = {:?} }}\nmodalities = {{ text = {{ path = {:?} }}, visual = {{ path = {:?} }} }}\nreference = \"text\"\n\n[stages.t]\nkind = \"select_targets\"\ninputs = {{ source_segments = \"mosi.segments\", source = [\"mosi_norm.text\"], target_segments = \"sdk.segments\", target = [\"sdk.text\", \"sdk.visual\"] }}\nparams = {{ match_on = [\"text\"], adapt = [\"visual\"] }}\n",
            folder.join("CMU_MOSI_Opinion_Labels.csd"),
            folder.join("CMU_MOSI_TimestampedWordVectors.csd"),
            folder.join("CMU_MOSI_Visual_Facet_41.csd"),
        ),
    );
    let run = dir.mmflow(&["run", "p.toml"]).expect(1);
    assert!(run.stderr.contains("sdk.segments: no train segment has every matching (text) and adapted (visual) modality"), "{}", run.stderr);
}
