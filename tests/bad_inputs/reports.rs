//! Bad inputs: reports (`mmflow report`, its `--out`, plotting), `compare --parquet`, and links
//! where a run writes its own files. Nothing mmflow did not create may be removed, replaced or
//! written through.
//!
//! Most rows use a hand-made finished run (`run/`: a resolved config and a lock file, plus
//! whatever tables the row needs), so they cost no pipeline run.

use mmflow_pipeline::manifest::{hash_file, LOCK_FORMAT};
use mmflow_pipeline::record::config_hash;
use mmflow_schemas::history::{self, HistoryRow};
use mmflow_schemas::TableMeta;
use serde_json::json;

use super::{check, good_run, pipeline, write_bytes, Case};
use crate::util::Dir;

/// A finished run whose stages are `(id, kind, output, table kind, file)`:
/// `run/pipeline.toml` names them, `run/mmflow.lock` records each output (a stage named twice
/// has both).
pub fn finished_run(d: &Dir, stages: &[(&str, &str, &str, &str, &str)]) {
    let mut toml = String::from("[pipeline]\nname = \"hand-made\"\n");
    let mut entries = serde_json::Map::new();
    for (id, kind, output, table, file) in stages {
        let record = recorded(d, &format!("{id}/{file}"), table);
        if let Some(entry) = entries.get_mut(*id) {
            entry["outputs"][*output] = record;
            continue;
        }
        toml.push_str(&format!("\n[stages.{id}]\nkind = \"{kind}\"\n"));
        entries.insert(
            id.to_string(),
            json!({
                "kind": kind, "version": 1, "fingerprint": "0", "params": {}, "seed": 1,
                "inputs": {},
                "outputs": { *output: record },
                "duration_s": 0.0, "finished_unix": 0, "mmflow_version": "0.1.0"
            }),
        );
    }
    d.write("run/pipeline.toml", &toml);
    let completed: serde_json::Map<String, serde_json::Value> = stages
        .iter()
        .map(|(id, ..)| (id.to_string(), json!("0")))
        .collect();
    let lock = json!({
        "format": LOCK_FORMAT, "mmflow_version": "0.1.0", "pipeline": "hand-made",
        "stages": entries,
        "completed": { "config": config_hash(&toml), "stages": completed },
    });
    d.write("run/mmflow.lock", &lock.to_string());
}

/// The lock's record of `run/<path>`, a table of kind `table`: its real size and hash where it
/// is a regular file already (so the run's record vouches for it), zero size and hash "0"
/// otherwise.
fn recorded(d: &Dir, path: &str, table: &str) -> serde_json::Value {
    let file = d.join("run").join(path);
    let (size, hash) = match std::fs::symlink_metadata(&file) {
        Ok(meta) if meta.is_file() => (meta.len(), hash_file(&file).unwrap()),
        _ => (0, "0".to_string()),
    };
    json!({ "path": path, "size": size, "mtime_ns": 0, "hash": hash, "table": table })
}

/// A finished run without stages, a user's file and a user's folder beside it.
fn run_and_user_files(d: &Dir) {
    finished_run(d, &[]);
    d.write("notes.txt", "my notes");
    d.write("mine/thesis.tex", "my thesis");
}

/// A finished run with one training stage whose history holds `train`/`valid` losses.
fn run_with_losses(d: &Dir, losses: &[(f64, f64)]) {
    let rows: Vec<HistoryRow> = losses
        .iter()
        .enumerate()
        .map(|(epoch, &(train, valid))| HistoryRow {
            phase: "train".into(),
            epoch: epoch as u32,
            lr: 1e-3,
            subject: "model".into(),
            metric: "loss".into(),
            train: Some(train),
            valid: Some(valid),
            is_best: epoch == 0,
        })
        .collect();
    std::fs::create_dir_all(d.join("run/model")).unwrap();
    history::write(
        &rows,
        &d.join("run/model/history.parquet"),
        &TableMeta::default(),
    )
    .unwrap();
    finished_run(
        d,
        &[(
            "model",
            "train_model",
            "history",
            history::TABLE,
            "history.parquet",
        )],
    );
}

/// [`run_with_losses`] as an earlier mmflow recorded it: lock format 2, no output kinds.
fn run_of_lock_format_2(d: &Dir) {
    run_with_losses(d, &[(1.0, 1.0)]);
    let path = d.join("run/mmflow.lock");
    let mut lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    lock["format"] = 2.into();
    for entry in lock["stages"].as_object_mut().unwrap().values_mut() {
        for output in entry["outputs"].as_object_mut().unwrap().values_mut() {
            output.as_object_mut().unwrap().remove("table");
        }
    }
    std::fs::write(path, lock.to_string()).unwrap();
}

/// A symbolic link at `rel` (in the test's folder) to `target`.
fn link(d: &Dir, target: &str, rel: &str) {
    std::os::unix::fs::symlink(d.join(target), d.join(rel)).unwrap();
}

/// One synthetic stage, small enough to run in a second.
const SYNTHETIC: &str = r#"
[pipeline]
name = "s"

[stages.report]
kind = "synthetic"
seed = 1
params = { profile = "mosei", scale = 0.01, chunk_videos = 8 }
"#;

/// Synthetic data, a one-epoch model, its evaluation.
const TRAINED: &str = r#"
[pipeline]
name = "t"

[stages.mosei]
kind = "synthetic"
seed = 1
params = { profile = "mosei", scale = 0.02 }

[stages.model]
kind = "train_model"
inputs = { segments = "mosei.segments", features = ["mosei.text"] }
params = { optim = { epochs = 1, batch_size = 32 } }

[stages.eval]
kind = "evaluate"
inputs = { model = "model.model", segments = "mosei.segments", features = ["mosei.text"] }
params = { bootstrap = 10 }
"#;

const CASES: &[Case] = &[
    Case {
        what: "report --out . (the current folder)",
        setup: run_and_user_files,
        args: &["report", "run", "--out", "."],
        code: 1,
        says: &["cannot write the report to .", "not a folder name"],
        may_write: &[],
    },
    Case {
        what: "report --out / (the root folder)",
        setup: run_and_user_files,
        args: &["report", "run", "--out", "/"],
        code: 1,
        says: &["cannot write the report to /", "not a folder name"],
        may_write: &[],
    },
    Case {
        what: "report --out the run directory itself",
        setup: run_and_user_files,
        args: &["report", "run", "--out", "run"],
        code: 1,
        says: &["cannot write the report to run", "run directory"],
        may_write: &[],
    },
    Case {
        what: "report --out a user's folder with files in it",
        setup: run_and_user_files,
        args: &["report", "run", "--out", "mine"],
        code: 1,
        says: &[
            "cannot write the report to mine",
            "did not mark as a report",
        ],
        may_write: &[],
    },
    Case {
        what: "report --out an existing file",
        setup: run_and_user_files,
        args: &["report", "run", "--out", "notes.txt"],
        code: 1,
        says: &["notes.txt", "it is a file"],
        may_write: &[],
    },
    Case {
        what: "report --out a symbolic link to a user's folder",
        setup: |d| {
            run_and_user_files(d);
            link(d, "mine", "out");
        },
        args: &["report", "run", "--out", "out"],
        code: 1,
        says: &["cannot write the report to out", "symbolic link"],
        may_write: &[],
    },
    Case {
        what: "the default report folder is a link to a user's folder",
        setup: |d| {
            run_and_user_files(d);
            link(d, "mine", "run/mmflow.report");
        },
        args: &["report", "run"],
        code: 1,
        says: &["run/mmflow.report", "symbolic link"],
        may_write: &[],
    },
    Case {
        what: "report --out an old report a user added a file to",
        setup: |d| {
            run_and_user_files(d);
            good_run(d, &["report", "run", "--out", "rep"]);
            d.write("rep/my-notes.md", "mine");
        },
        args: &["report", "run", "--out", "rep"],
        code: 1,
        says: &["`my-notes.md` in it was not written by mmflow"],
        may_write: &[],
    },
    Case {
        what: "report of an unfinished run",
        setup: |d| {
            finished_run(d, &[]);
            d.write(
                "run/pipeline.toml",
                "[pipeline]\nname = \"x\"\n[stages.a]\nkind = \"synthetic\"\n",
            );
        },
        args: &["report", "run"],
        code: 1,
        says: &["unfinished run", "a have not completed"],
        may_write: &[],
    },
    Case {
        what: "report of a folder that is not a run",
        setup: run_and_user_files,
        args: &["report", "mine"],
        code: 1,
        says: &["mine: not an mmflow run directory"],
        may_write: &[],
    },
    Case {
        what: "report of a training history with only NaN and infinite losses",
        setup: |d| run_with_losses(d, &[(f64::NAN, f64::NAN), (f64::INFINITY, f64::NAN)]),
        args: &["report", "run"],
        code: 0,
        says: &["stage `model`: no finite loss value", "report written to"],
        may_write: &["run/mmflow.report/"],
    },
    Case {
        what: "report of a training history with some NaN losses",
        setup: |d| run_with_losses(d, &[(f64::NAN, 1.0), (0.5, 0.8), (0.4, f64::NEG_INFINITY)]),
        args: &["report", "run", "--out", "rep"],
        code: 0,
        says: &["2 non-finite loss value(s) left out", "report written to"],
        may_write: &["rep/"],
    },
    Case {
        what: "report of a run whose lock predates output kinds (format 2)",
        setup: run_of_lock_format_2,
        args: &["report", "run"],
        code: 1,
        says: &[
            "the lock file (format 2) does not record the kinds of the run's outputs",
            "run the pipeline again",
        ],
        may_write: &[],
    },
    Case {
        what: "compare of a run whose lock predates output kinds (format 2)",
        setup: run_of_lock_format_2,
        args: &["compare", "run"],
        code: 1,
        says: &["does not record the kinds", "run the pipeline again"],
        may_write: &[],
    },
    Case {
        what: "report of a run whose history table is truncated",
        setup: |d| {
            run_with_losses(d, &[(1.0, 1.0)]);
            let path = d.join("run/model/history.parquet");
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        },
        args: &["report", "run"],
        code: 1,
        says: &["stage `model`", "run/model/history.parquet"],
        may_write: &[],
    },
    Case {
        what: "report of a run whose history is a FIFO",
        setup: |d| {
            finished_run(
                d,
                &[(
                    "model",
                    "train_model",
                    "history",
                    history::TABLE,
                    "history.parquet",
                )],
            );
            std::fs::create_dir_all(d.join("run/model")).unwrap();
            let made = std::process::Command::new("mkfifo")
                .arg(d.join("run/model/history.parquet"))
                .status()
                .unwrap();
            assert!(made.success());
        },
        args: &["report", "run"],
        code: 1,
        says: &[
            "stage `model`",
            "history.parquet: output `history` of stage `model` is not a regular file",
        ],
        may_write: &[],
    },
    Case {
        what: "report of a trained run whose predictions table is tampered with",
        setup: |d| {
            pipeline(d, TRAINED);
            good_run(d, &["run", "p.toml", "--out", "run"]);
            write_bytes(d, "run/eval/predictions.parquet", b"PAR1 not really PAR1");
        },
        args: &["report", "run"],
        code: 1,
        says: &["stage `eval`", "run/eval/predictions.parquet"],
        may_write: &[],
    },
    Case {
        what: "a stage with id `report` keeps its outputs beside the default report",
        setup: |d| {
            pipeline(d, SYNTHETIC);
            good_run(d, &["run", "p.toml", "--out", "run"]);
        },
        args: &["report", "run"],
        code: 0,
        says: &["report written to run/mmflow.report/report.md"],
        may_write: &["run/mmflow.report/"],
    },
    Case {
        what: "report of several runs without --out",
        setup: run_and_user_files,
        args: &["report", "run", "run"],
        code: 2,
        says: &["a report of several runs needs --out DIR"],
        may_write: &[],
    },
    Case {
        what: "report --format of an unknown format",
        setup: run_and_user_files,
        args: &["report", "run", "--format", "pdf"],
        code: 2,
        says: &["`pdf`: the formats are `markdown` and `html`"],
        may_write: &[],
    },
    Case {
        what: "report --out a folder holding the run",
        setup: |d| {
            finished_run(d, &[]);
            std::fs::create_dir(d.join("outer")).unwrap();
            std::fs::rename(d.join("run"), d.join("outer/run")).unwrap();
        },
        args: &["report", "outer/run", "--out", "outer"],
        code: 1,
        says: &[
            "cannot write the report to outer",
            "it holds a run directory",
        ],
        may_write: &[],
    },
    Case {
        what: "report of a sweep folder whose every run is unfinished",
        setup: |d| {
            d.write(
                "sweep/base-seed1/pipeline.toml",
                "[pipeline]\nname = \"x\"\n[stages.a]\nkind = \"synthetic\"\n",
            );
            d.write("sweep/notes.txt", "mine");
        },
        args: &["report", "sweep", "--format", "html"],
        code: 1,
        says: &[
            "no finished run to report",
            "base-seed1: ",
            "unfinished run",
        ],
        may_write: &[],
    },
    Case {
        what: "report of a sweep folder whose only run is a symbolic link",
        setup: |d| {
            run_and_user_files(d);
            std::fs::create_dir(d.join("sweep")).unwrap();
            link(d, "run", "sweep/base-seed1");
        },
        args: &["report", "sweep"],
        code: 1,
        says: &["sweep: not an mmflow run directory"],
        may_write: &[],
    },
    Case {
        what: "HTML report of a training history with only NaN and infinite losses",
        setup: |d| run_with_losses(d, &[(f64::NAN, f64::NAN), (f64::INFINITY, f64::NAN)]),
        args: &["report", "run", "--format", "html"],
        code: 0,
        says: &["stage `model`: no finite loss value", "report.html"],
        may_write: &["run/mmflow.report/"],
    },
    Case {
        what: "mmflow.lock is a symbolic link to a user's file before a run",
        setup: |d| {
            pipeline(d, SYNTHETIC);
            d.write("notes.txt", "my notes");
            std::fs::create_dir_all(d.join("run")).unwrap();
            link(d, "notes.txt", "run/mmflow.lock");
        },
        args: &["run", "p.toml", "--out", "run"],
        code: 1,
        says: &["run/mmflow.lock", "symbolic link"],
        // The stage's outputs are complete (renamed into place) but recorded nowhere: the
        // next run re-runs the stage.
        may_write: &["run/report/", "run/pipeline.toml", "run/.mmflow-run.lock"],
    },
    Case {
        what: "pipeline.toml in the run directory is a symbolic link to a user's file",
        setup: |d| {
            pipeline(d, SYNTHETIC);
            d.write("notes.txt", "my notes");
            std::fs::create_dir_all(d.join("run")).unwrap();
            link(d, "notes.txt", "run/pipeline.toml");
        },
        args: &["run", "p.toml", "--out", "run"],
        code: 1,
        says: &["run/pipeline.toml", "symbolic link"],
        may_write: &["run/.mmflow-run.lock"],
    },
    Case {
        what: "the run lock file is a symbolic link to a user's file",
        setup: |d| {
            pipeline(d, SYNTHETIC);
            d.write("notes.txt", "my notes");
            std::fs::create_dir_all(d.join("run")).unwrap();
            link(d, "notes.txt", "run/.mmflow-run.lock");
        },
        args: &["run", "p.toml", "--out", "run"],
        code: 1,
        says: &["run/.mmflow-run.lock", "symbolic link"],
        may_write: &[],
    },
    Case {
        what: "compare --parquet a user's file that is not a Parquet table",
        setup: run_and_user_files,
        args: &["compare", "run", "--parquet", "notes.txt"],
        code: 1,
        says: &[
            "--parquet notes.txt",
            "not a comparison table written by mmflow",
        ],
        may_write: &[],
    },
    Case {
        what: "compare --parquet a folder",
        setup: run_and_user_files,
        args: &["compare", "run", "--parquet", "mine"],
        code: 1,
        says: &["--parquet mine", "it is a folder"],
        may_write: &[],
    },
    Case {
        what: "compare --parquet a run's own history table",
        setup: |d| run_with_losses(d, &[(1.0, 1.0)]),
        args: &["compare", "run", "--parquet", "run/model/history.parquet"],
        code: 1,
        says: &["not a comparison table written by mmflow"],
        may_write: &[],
    },
    Case {
        what: "compare --parquet a symbolic link",
        setup: |d| {
            run_and_user_files(d);
            link(d, "notes.txt", "cmp.parquet");
        },
        args: &["compare", "run", "--parquet", "cmp.parquet"],
        code: 1,
        says: &["--parquet cmp.parquet", "symbolic link"],
        may_write: &[],
    },
];

#[test]
fn bad_report_inputs_fail_cleanly() {
    check(CASES);
}

#[test]
fn markup_in_heads_segment_ids_and_notes_is_shown_as_text() {
    use mmflow_schemas::evaluation::{
        write_metrics, write_predictions, MetricRow, Prediction, METRICS, PREDICTIONS,
    };
    use mmflow_schemas::Split;
    let d = Dir::new();
    let head = "<b>x</b>&'\"";
    let predictions: Vec<Prediction> = (0..20)
        .map(|i| Prediction {
            segment_id: format!("<script>alert({i})</script>"),
            split: Split::Test,
            head: head.into(),
            label: Some(i as f32 / 10.0),
            prediction: i as f32 / 9.0,
            calibrated: None,
        })
        .collect();
    let metrics = vec![MetricRow {
        split: Split::Test,
        head: head.into(),
        metric: "CCC".into(),
        value: 0.5,
        ci_low: Some(0.4),
        ci_high: Some(0.6),
        n: 20,
        seed: 1,
        note: Some("</td></table><script>alert(2)</script>".into()),
    }];
    std::fs::create_dir_all(d.join("run/eval")).unwrap();
    let meta = TableMeta::default();
    write_predictions(&predictions, &d.join("run/eval/predictions.parquet"), &meta).unwrap();
    write_metrics(&metrics, &d.join("run/eval/metrics.parquet"), &meta).unwrap();
    finished_run(
        &d,
        &[
            ("eval", "evaluate", "metrics", METRICS, "metrics.parquet"),
            (
                "eval",
                "evaluate",
                "predictions",
                PREDICTIONS,
                "predictions.parquet",
            ),
        ],
    );
    d.mmflow(&["report", "run", "--format", "html"]).ok();
    let html = std::fs::read_to_string(d.join("run/mmflow.report/report.html")).unwrap();
    assert_eq!(
        html.matches("<script").count(),
        1,
        "only the page's own script"
    );
    for shown in [
        "&lt;b&gt;x&lt;/b&gt;&amp;&#39;&quot;",
        "&lt;script&gt;alert(3)&lt;/script&gt;: label 0.3000",
        "&lt;/td&gt;&lt;/table&gt;&lt;script&gt;alert(2)&lt;/script&gt;",
    ] {
        assert!(html.contains(shown), "missing {shown}");
    }
    // The Markdown report keeps its plot files inside the report folder.
    d.mmflow(&["report", "run", "--out", "md"]).ok();
    for entry in std::fs::read_dir(d.join("md")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{name}"
        );
    }
}
