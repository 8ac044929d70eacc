//! Bad inputs: run directories, lock files, tampered tables, sweeps, comparisons.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{check, mkfifo, pipeline, write_bytes, Case};
use crate::util::Dir;

/// A train + evaluate pipeline that runs in seconds.
const TINY: &str = r#"
[pipeline]
name = "tiny"

[stages.mosei]
kind = "synthetic"
seed = 1
params = { profile = "mosei", scale = 0.02 }

[stages.mosi]
kind = "synthetic"
seed = 2
params = { profile = "mosi", scale = 0.05 }

[stages.model]
kind = "train_model"
inputs = { segments = "mosei.segments", features = ["mosei.text"] }
params = { dropout = 0.2, optim = { epochs = 1, batch_size = 32 } }

[stages.eval]
kind = "evaluate"
inputs = { model = "model.model", segments = "mosei.segments", features = ["mosei.text"] }
params = { bootstrap = 10 }
"#;

/// The run directory of [`TINY`] in a case's directory.
pub(super) const RUN: &str = "data/runs/tiny";

/// A finished run of [`TINY`] (with `p.toml`) in `d`: made once per test process (in the
/// build's temporary folder), then copied.
pub(super) fn finished(d: &Dir) {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let t = Dir::new();
        pipeline(&t, TINY);
        t.mmflow(&["run", "p.toml", "-q"]).ok();
        let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad_inputs_finished_run");
        let _ = std::fs::remove_dir_all(&keep);
        copy_tree(t.path(), &keep);
        keep
    });
    copy_tree(template, d.path());
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Rewrites the run's lock file through `edit`.
pub(super) fn edit_lock(d: &Dir, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = d.join(&format!("{RUN}/mmflow.lock"));
    let mut lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut lock);
    std::fs::write(path, serde_json::to_string_pretty(&lock).unwrap()).unwrap();
}

/// A finished run whose `eval` metrics are recorded at `path`, with a copy of the real
/// metrics table as a canary at `canary.parquet` in the case's directory (outside the run):
/// were the recorded path followed, it would be read without complaint.
fn metrics_recorded_at(d: &Dir, path: &str) {
    finished(d);
    std::fs::copy(
        d.join(&format!("{RUN}/eval/metrics.parquet")),
        d.join("canary.parquet"),
    )
    .unwrap();
    let path = path.replace("{dir}", &d.path().to_string_lossy());
    edit_lock(d, |lock| {
        lock["stages"]["eval"]["outputs"]["metrics"]["path"] = path.into();
    });
}

/// A finished run, then a re-run with other settings that fails in `model`.
fn failed_rerun(d: &Dir) {
    finished(d);
    d.mmflow(&[
        "run",
        "p.toml",
        "-q",
        "--set",
        "stages.model.params.heads={ valence = {} }",
    ])
    .expect(1);
}

/// Flips bytes in the middle of a file of the run.
fn flip_bytes(d: &Dir, rel: &str) {
    let path = d.join(&format!("{RUN}/{rel}"));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 8] {
        *b ^= 0xff;
    }
    std::fs::write(path, bytes).unwrap();
}

/// One synthetic stage `src` whose output folder is a link to a user's folder holding a
/// file named like an mmflow temporary.
fn stage_folder_linked_to_a_user_folder(d: &Dir) {
    pipeline(
        d,
        "[pipeline]\nname = \"p\"\n[stages.src]\nkind = \"synthetic\"\nparams = { profile = \"mosi\", scale = 0.05 }\n",
    );
    d.write("mine/.tmp-1-2/keep.txt", "mine");
    d.write("mine/notes.txt", "mine");
    std::fs::create_dir_all(d.join("data/runs/p")).unwrap();
    std::os::unix::fs::symlink(d.join("mine"), d.join("data/runs/p/src")).unwrap();
}

const CASES: &[Case] = &[
    Case {
        what: "compare of a run whose pipeline.toml is a FIFO",
        setup: |d| {
            d.write("run/mmflow.lock", "{}");
            mkfifo(d, "run/pipeline.toml");
        },
        args: &["compare", "run"],
        code: 1,
        says: &["pipeline.toml", "a FIFO"],
        may_write: &[],
    },
    Case {
        what: "a stage's output folder is a link to a user's folder",
        setup: stage_folder_linked_to_a_user_folder,
        args: &["run", "p.toml"],
        code: 1,
        says: &["data/runs/p/src", "not a folder mmflow made"],
        may_write: &[],
    },
    Case {
        what: "compare after a re-run with new settings failed",
        setup: failed_rerun,
        args: &["compare", RUN],
        code: 1,
        says: &[
            "unfinished run",
            "stage(s) eval, model have not completed",
            "pipeline.toml",
        ],
        may_write: &[],
    },
    Case {
        what: "report after a re-run with new settings failed",
        setup: failed_rerun,
        args: &["report", RUN],
        code: 1,
        says: &["unfinished run", "model"],
        may_write: &[],
    },
    Case {
        what: "run killed after saving its new settings",
        // What a run with a new dropout killed before any stage completed leaves: the new
        // settings beside the lock of the previous run.
        setup: |d| {
            finished(d);
            let path = d.join(&format!("{RUN}/pipeline.toml"));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("dropout = 0.2"), "{text}");
            std::fs::write(&path, text.replace("dropout = 0.2", "dropout = 0.4")).unwrap();
        },
        args: &["compare", RUN],
        code: 1,
        says: &[
            "unfinished run",
            "eval, model, mosei, mosi have not completed",
        ],
        may_write: &[],
    },
    Case {
        what: "run killed after some stages of its new settings completed",
        // The lock of a run killed while `model` ran: `started` names the new settings
        // (here: those saved), with `mosei` and `mosi` done; `completed` is the old run's.
        setup: |d| {
            finished(d);
            edit_lock(d, |lock| {
                lock["completed"]["config"] = "an older config".into();
                let started = lock["started"]["stages"].as_object_mut().unwrap();
                started.remove("model");
                started.remove("eval");
            });
        },
        args: &["report", RUN],
        code: 1,
        says: &["unfinished run", "stage(s) eval, model have not completed"],
        may_write: &[],
    },
    Case {
        what: "lock of an earlier mmflow that records no completed run",
        setup: |d| {
            finished(d);
            edit_lock(d, |lock| {
                let lock = lock.as_object_mut().unwrap();
                lock.remove("started");
                lock.remove("completed");
                lock.remove("format");
            });
        },
        args: &["compare", RUN],
        code: 1,
        says: &["records no completed run", "run the pipeline again"],
        may_write: &[],
    },
    Case {
        what: "lock records an output at ../ outside the run directory",
        setup: |d| metrics_recorded_at(d, "../../../canary.parquet"),
        args: &["compare", RUN],
        code: 1,
        says: &[
            "mmflow.lock",
            "stage `eval`",
            "output `metrics`",
            "../../../canary.parquet",
        ],
        may_write: &[],
    },
    Case {
        what: "lock records an absolute output path (run)",
        setup: |d| metrics_recorded_at(d, "{dir}/canary.parquet"),
        args: &["run", "p.toml"],
        code: 1,
        says: &["mmflow.lock", "stage `eval`", "canary.parquet", "delete it"],
        may_write: &[],
    },
    Case {
        what: "lock records an output in another stage's directory (report)",
        setup: |d| metrics_recorded_at(d, "model/model.safetensors"),
        args: &["report", RUN],
        code: 1,
        says: &[
            "mmflow.lock",
            "stage `eval`",
            "outside the stage's directory",
        ],
        may_write: &[],
    },
    Case {
        what: "lock that is not JSON (run)",
        setup: |d| {
            finished(d);
            write_bytes(d, &format!("{RUN}/mmflow.lock"), b"{ \"stages\": [1, 2");
        },
        args: &["run", "p.toml"],
        code: 1,
        says: &["mmflow.lock", "corrupt", "delete it"],
        may_write: &[],
    },
    Case {
        what: "lock that is not JSON (compare)",
        setup: |d| {
            finished(d);
            write_bytes(d, &format!("{RUN}/mmflow.lock"), &[0xff, 0xfe, 0, 1, 2]);
        },
        args: &["compare", RUN],
        code: 1,
        says: &["mmflow.lock", "corrupt"],
        may_write: &[],
    },
    Case {
        what: "lock records an output at ../ (plan)",
        setup: |d| metrics_recorded_at(d, "eval/../../canary.parquet"),
        args: &["plan", "p.toml"],
        code: 1,
        says: &["mmflow.lock", "stage `eval`", "eval/../../canary.parquet"],
        may_write: &[],
    },
    Case {
        what: "lock from a newer mmflow",
        setup: |d| {
            finished(d);
            edit_lock(d, |lock| lock["format"] = 99.into());
        },
        args: &["run", "p.toml"],
        code: 1,
        says: &["mmflow.lock", "newer mmflow", "lock format 99"],
        may_write: &[],
    },
    Case {
        what: "lock entry of a stage that is not in the file",
        // A leftover evaluate stage whose metrics are gone: were it compared, reading them
        // would fail.
        setup: |d| {
            finished(d);
            edit_lock(d, |lock| {
                let mut ghost = lock["stages"]["eval"].clone();
                for (name, output) in ghost["outputs"].as_object_mut().unwrap() {
                    output["path"] = format!("ghost_eval/{name}.parquet").into();
                }
                lock["stages"]["ghost_eval"] = ghost;
            });
        },
        args: &["compare", RUN],
        code: 0,
        says: &["| 0 | tiny | eval |"],
        may_write: &[],
    },
    Case {
        what: "metrics table with flipped bytes",
        setup: |d| {
            finished(d);
            flip_bytes(d, "eval/metrics.parquet");
        },
        args: &["compare", RUN],
        code: 1,
        says: &["eval/metrics.parquet", "stage `eval`", "has changed"],
        may_write: &[],
    },
    Case {
        what: "inspect --verify of a metrics table with flipped bytes",
        setup: |d| {
            finished(d);
            flip_bytes(d, "eval/metrics.parquet");
        },
        args: &["inspect", RUN, "--verify", "--json"],
        code: 1,
        says: &["eval/metrics.parquet", "stage `eval`", "has changed"],
        may_write: &[],
    },
    Case {
        what: "inspect of a run whose lock records an output at ../",
        setup: |d| metrics_recorded_at(d, "../../../canary.parquet"),
        args: &["inspect", RUN, "--verify"],
        code: 1,
        says: &["mmflow.lock", "stage `eval`", "../../../canary.parquet"],
        may_write: &[],
    },
    Case {
        what: "inspect --table naming no output (a path instead)",
        setup: finished,
        args: &["inspect", RUN, "--table", "../../etc.passwd"],
        code: 2,
        says: &[
            "--table ../../etc.passwd",
            "the run has no stage",
            "its stages are",
        ],
        may_write: &[],
    },
    Case {
        what: "inspect after a re-run with new settings failed",
        setup: failed_rerun,
        args: &["inspect", RUN, "--json"],
        code: 1,
        says: &["unfinished run"],
        may_write: &[],
    },
    Case {
        what: "truncated metrics table",
        setup: |d| {
            finished(d);
            let path = d.join(&format!("{RUN}/eval/metrics.parquet"));
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
        },
        args: &["compare", RUN],
        code: 1,
        says: &["eval/metrics.parquet", "bytes"],
        may_write: &[],
    },
    Case {
        what: "compare of runs of different tasks",
        setup: |d| {
            finished(d);
            d.write(
                "va.toml",
                r#"
[stages.va]
kind = "synthetic"
params = { profile = "valence_arousal", scale = 0.05 }
[stages.model]
kind = "train_model"
inputs = { segments = "va.segments", features = ["va.text"] }
params = { heads = { valence = {}, arousal = {} }, optim = { epochs = 1 } }
[stages.eval]
kind = "evaluate"
inputs = { model = "model.model", segments = "va.segments", features = ["va.text"] }
params = { bootstrap = 10 }
"#,
            );
            d.mmflow(&["run", "va.toml", "-q", "--out", "va"]).ok();
        },
        args: &["compare", RUN, "va"],
        code: 1,
        says: &["cannot compare runs of different tasks", "valence"],
        may_write: &[],
    },
    Case {
        what: "compare of a directory that is not a run",
        setup: |d| {
            finished(d);
            d.write("notes/readme.txt", "not a run");
        },
        args: &["compare", RUN, "notes"],
        code: 1,
        says: &["notes: not an mmflow run directory", "pipeline.toml"],
        may_write: &[],
    },
    Case {
        what: "compare of a run whose saved settings are not TOML",
        setup: |d| {
            finished(d);
            write_bytes(d, &format!("{RUN}/pipeline.toml"), b"[stages\n");
        },
        args: &["compare", RUN],
        code: 1,
        says: &["pipeline.toml", "cannot be read"],
        may_write: &[],
    },
    Case {
        what: "sweep over two keys with the same last segment and value",
        // Each point gets its own directory (they used to share `scale=0.03-seed1`).
        setup: |d| {
            pipeline(
                d,
                &format!(
                    "{TINY}\n[sweep]\nseeds = [1]\nvary = {{ \"stages.mosei.params.scale\" = [0.03], \"stages.mosi.params.scale\" = [0.03] }}\n"
                ),
            )
        },
        args: &["sweep", "p.toml", "-q"],
        code: 0,
        says: &[
            // Stages a point shares with an earlier one come from the run-cache.
            "point base, seed 1: 4 ran, 0 restored",
            "point stages.mosei.params.scale=0.03, seed 1: 3 ran, 1 restored",
            "point stages.mosi.params.scale=0.03, seed 1: 1 ran, 3 restored",
            "mmflow.sweep/stages_mosei_params_scale=0.03-seed1",
            "mmflow.sweep/stages_mosi_params_scale=0.03-seed1",
            "stages.mosei.params.scale=0.03 |",
            "stages.mosi.params.scale=0.03 |",
        ],
        may_write: &[RUN],
    },
    Case {
        what: "run --out pointing at an existing file",
        setup: |d| {
            pipeline(d, TINY);
            d.write("out.txt", "a file");
        },
        args: &["run", "p.toml", "--out", "out.txt"],
        code: 2,
        says: &["out.txt: cannot be the run directory", "not a directory"],
        may_write: &[],
    },
    Case {
        what: "run_dir of the file below an existing file",
        setup: |d| {
            pipeline(
                d,
                &TINY.replace(
                    "name = \"tiny\"",
                    "name = \"tiny\"\nrun_dir = \"f.txt/run\"",
                ),
            );
            d.write("f.txt", "a file");
        },
        args: &["run", "p.toml"],
        code: 2,
        says: &[
            "f.txt/run: cannot be the run directory",
            "f.txt is not a directory",
        ],
        may_write: &[],
    },
    Case {
        what: "sweep --out pointing at an existing file",
        setup: |d| {
            pipeline(
                d,
                &format!("{TINY}\n[sweep]\nseeds = [1]\nvary = {{ \"stages.model.params.dropout\" = [0.4] }}\n"),
            );
            d.write("out.txt", "a file");
        },
        args: &["sweep", "p.toml", "--out", "out.txt"],
        code: 1,
        says: &["cannot be the run directory", "out.txt is not a directory"],
        may_write: &[],
    },
];

#[test]
fn bad_runs_inputs_fail_cleanly() {
    check(CASES);
}
