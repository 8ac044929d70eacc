//! Bad inputs: CSV files as users' extractors write them (OpenFace 2, MediaPipe, pandas).
//!
//! Every row starts from a small good dataset written from scratch (two videos `v1`, `v2`:
//! words, labels and OpenFace-style `visual` frames, all CSV) and spoils one file.

use super::{check, mkfifo, pipeline, write_bytes, Case};
use mmflow_schemas::features::FeatureReader;

use crate::util::Dir;

/// A `csv` stage over `words/`, `labels/` and `visual/` (one `<video>.csv` each).
const TOY: &str = r#"
[stages.src]
kind = "csv"
[stages.src.params]
dataset = "toy"
label_columns = ["sentiment"]
folds = "folds.json"
labels = { path = "labels", fps = 1.0 }
[stages.src.params.modalities]
words = { path = "words", fps = 2.0 }
visual = { path = "visual" }
"#;

/// OpenFace 2 style: `, ` between fields, bookkeeping columns, 4 frames a second.
const VISUAL: &str = "frame, timestamp, confidence, success, f0, f1
1, 0.0, 0.98, 1, 0.1, 0.2
2, 0.25, 0.98, 1, 0.3, 0.4
3, 0.5, 0.98, 1, 0.5, 0.6
4, 0.75, 0.98, 1, 0.7, 0.8
5, 1.0, 0.98, 1, 0.9, 1.0
6, 1.25, 0.98, 1, 1.1, 1.2
7, 1.5, 0.98, 1, 1.3, 1.4
8, 1.75, 0.98, 1, 1.5, 1.6
";

/// Writes the good dataset, then `files` over it.
pub(super) fn toy(d: &Dir, files: &[(&str, &str)]) {
    pipeline(d, TOY);
    d.write(
        "folds.json",
        r#"{"train": ["v1"], "valid": [], "test": ["v2"]}"#,
    );
    for video in ["v1", "v2"] {
        d.write(
            &format!("words/{video}.csv"),
            "timestamp,w0,w1\n0,1,0\n0.5,0,1\n1,1,1\n1.5,0,0\n",
        );
        d.write(
            &format!("labels/{video}.csv"),
            "timestamp,sentiment\n0,1.5\n1,-0.5\n",
        );
        d.write(&format!("visual/{video}.csv"), VISUAL);
    }
    for (rel, text) in files {
        d.write(rel, text);
    }
}

const RUN: &[&str] = &["run", "p.toml"];
/// What a failed run leaves in its run directory: the OS lock file (empty) and the resolved
/// config (`pipeline.toml`); never an output or a lock-file entry.
pub const RUN_BOOKKEEPING: &[&str] = &["data/runs/p/.mmflow-run.lock", "data/runs/p/pipeline.toml"];

const CASES: &[Case] = &[
    Case {
        // Hashed for the fingerprint while the stage runs, never read by the stage itself: the
        // stage's tables wait for the fingerprint, which cannot be had.
        what: "a FIFO beside the CSV files of a source folder",
        setup: |d| {
            toy(d, &[]);
            mkfifo(d, "visual/notes");
        },
        args: RUN,
        code: 1,
        says: &["visual/notes", "a FIFO"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "text in a feature cell",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v2.csv",
                    "frame, timestamp, confidence, success, f0, f1\n1, 0.0, 0.9, 1, 0.1, 0.2\n2, 0.25, 0.9, 1, 0.3, abc\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &[
            "v2.csv: row 3 (1-based, the header is row 1), column `f1`: `abc` is not a number",
        ],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "empty feature cell",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v1.csv",
                    "frame, timestamp, confidence, success, f0, f1\n1, 0.0, 0.9, 1, , 0.2\n2, 0.25, 0.9, 1, 0.3, 0.4\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &[
            "v1.csv: row 2 (1-based, the header is row 1), column `f0`: empty cell",
            "`nan`",
        ],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "duplicate header",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v2.csv",
                    "frame, timestamp, f0, f0\n1, 0.0, 0.1, 0.2\n2, 0.25, 0.3, 0.4\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &["v2.csv: header `f0` appears twice (columns 3 and 4)"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "swapped columns with one missing",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v2.csv",
                    "f1, timestamp, frame\n0.2, 0.0, 1\n0.4, 0.25, 2\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &["v2.csv: no column `f0`, a feature column of `v1.csv`"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "an extra column in a later file",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v2.csv",
                    "timestamp, f1, f0, f2\n0.0, 0.2, 0.1, 9\n0.25, 0.4, 0.3, 9\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &["v2.csv: column `f2` is not in `v1.csv`", "exclude"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "no timestamp column",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v1.csv",
                    "frame, time, f0, f1\n1, 0.0, 0.1, 0.2\n2, 0.25, 0.3, 0.4\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &["v1.csv: no timestamp column `timestamp`", "`time`"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "empty timestamp cell",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v2.csv",
                    "timestamp, f0, f1\n0.0, 0.1, 0.2\n, 0.3, 0.4\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &["v2.csv: row 3 (1-based, the header is row 1), column `timestamp`: empty timestamp"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "non-finite timestamp",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v2.csv",
                    "timestamp, f0, f1\n0.0, 0.1, 0.2\n0.25, 0.3, 0.4\nnan, 0.5, 0.6\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &[
            "v2.csv: row 4 (1-based, the header is row 1), column `timestamp`: timestamp `nan` is not a finite number",
        ],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "empty file",
        setup: |d| toy(d, &[("visual/v2.csv", "")]),
        args: RUN,
        code: 1,
        says: &["v2.csv: empty file"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "header only",
        setup: |d| toy(d, &[("visual/v2.csv", "frame, timestamp, confidence, success, f0, f1\n")]),
        args: RUN,
        code: 1,
        says: &["v2.csv: no data rows"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "a row with too many fields",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v1.csv",
                    "timestamp, f0, f1\n0.0, 0.1, 0.2\n0.25, 0.3, 0.4, 0.5\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &["v1.csv: row 3 (1-based, the header is row 1) has 4 fields, the header has 3"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "a row cut short",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v2.csv",
                    "timestamp, f0, f1\n0.0, 0.1, 0.2\n0.25, 0.3, 0.4\n0.5, 0.5\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &["v2.csv: row 4 (1-based, the header is row 1) has 2 fields, the header has 3"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "a quoted field never closed",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v2.csv",
                    "timestamp, f0, f1\n0.0, \"0.1, 0.2\n0.25, 0.3, 0.4\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &["v2.csv: row 2 (1-based, the header is row 1): a quoted field is never closed"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "pandas index column without a name",
        setup: |d| {
            toy(
                d,
                &[(
                    "visual/v1.csv",
                    ",timestamp,f0,f1\n0,0.0,0.1,0.2\n1,0.25,0.3,0.4\n",
                )],
            )
        },
        args: RUN,
        code: 1,
        says: &["v1.csv: column 1 of the header has no name", "index=False"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "not UTF-8",
        setup: |d| {
            toy(d, &[]);
            write_bytes(
                d,
                "visual/v2.csv",
                b"timestamp, f0, f1\n0.0, 0.1, 0.2\n0.25, \xff\xfe, 0.4\n",
            );
        },
        args: RUN,
        code: 1,
        says: &["v2.csv: line 3: not UTF-8 text"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "a configured column missing",
        setup: |d| {
            toy(d, &[]);
            pipeline(
                d,
                &TOY.replace(
                    "visual = { path = \"visual\" }",
                    "visual = { path = \"visual\", csv = { columns = [\"f0\", \"f9\"] } }",
                ),
            );
        },
        args: RUN,
        code: 1,
        says: &["v1.csv: no feature column `f9`"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "text in a label cell",
        setup: |d| {
            toy(
                d,
                &[("labels/v2.csv", "timestamp,sentiment\n0,1.5\n1,positive\n")],
            )
        },
        args: RUN,
        code: 1,
        says: &[
            "labels: ",
            "v2.csv: row 3 (1-based, the header is row 1), column `sentiment`: `positive` is not a number",
        ],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "one file for every video without a video column",
        setup: |d| {
            toy(d, &[("all.csv", "video,timestamp,f0\nv1,0,1\nv2,0,2\n")]);
            pipeline(
                d,
                &TOY.replace(
                    "visual = { path = \"visual\" }",
                    "visual = { path = \"all.csv\" }",
                ),
            );
        },
        args: RUN,
        code: 1,
        says: &["all.csv: a single CSV file needs `csv.video_column`"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "an empty video id",
        setup: |d| {
            toy(
                d,
                &[("all.csv", "video,timestamp,f0\nv1,0,1\nv1,0.25,1\n,0,2\n")],
            );
            pipeline(
                d,
                &TOY.replace(
                    "visual = { path = \"visual\" }",
                    "visual = { path = \"all.csv\", csv = { video_column = \"video\" } }",
                ),
            );
        },
        args: RUN,
        code: 1,
        says: &["all.csv: row 4 (1-based, the header is row 1), column `video`: no video id"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "one frame and no fps",
        setup: |d| toy(d, &[("visual/v2.csv", "timestamp, f0, f1\n0.0, 0.1, 0.2\n")]),
        args: RUN,
        code: 1,
        says: &["v2.csv: cannot infer the frame duration", "set `fps`"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "no feature column left",
        setup: |d| {
            toy(
                d,
                &[
                    ("visual/v1.csv", "frame, timestamp\n1, 0.0\n2, 0.25\n"),
                    ("visual/v2.csv", "frame, timestamp\n1, 0.0\n2, 0.25\n"),
                ],
            )
        },
        args: RUN,
        code: 1,
        says: &["v1.csv: no feature columns"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "a directory without CSV files",
        setup: |d| {
            toy(d, &[]);
            std::fs::remove_file(d.join("visual/v1.csv")).unwrap();
            std::fs::remove_file(d.join("visual/v2.csv")).unwrap();
        },
        args: RUN,
        code: 1,
        says: &["visual: no .csv files in the directory"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "a directory named like a CSV",
        setup: |d| {
            toy(d, &[]);
            std::fs::create_dir(d.join("visual/v3.csv")).unwrap();
        },
        args: RUN,
        code: 1,
        says: &["v3.csv: cannot read (is a directory"],
        may_write: RUN_BOOKKEEPING,
    },
    Case {
        what: "text after a closing quote",
        setup: |d| {
            toy(
                d,
                &[("visual/v2.csv", "timestamp, f0, f1\n0.0, \"0.1\"x, 0.2\n")],
            )
        },
        args: RUN,
        code: 1,
        says: &["v2.csv: row 2 (1-based, the header is row 1): text after a closing quote"],
        may_write: RUN_BOOKKEEPING,
    },
];

#[test]
fn bad_csv_inputs_fail_cleanly() {
    check(CASES);
}

/// The dataset every row spoils is good (so the rows fail for what they spoil), and its
/// columns are matched by name: the same frames in another column order read the same.
#[test]
fn the_good_csv_dataset_runs_and_reads_columns_by_name() {
    let visual = |d: &Dir| {
        FeatureReader::open(&d.join("data/runs/p/src/visual.parquet"))
            .unwrap()
            .read_all()
            .unwrap()
            .frames
    };
    let d = Dir::new();
    toy(&d, &[]);
    d.mmflow(&["run", "p.toml"]).ok();
    let before = visual(&d);
    assert!(!before.is_empty());
    let reordered: String = VISUAL
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            format!(
                "{}, {}, {}, {}, {}, {}\n",
                f[5], f[1], f[4], f[3], f[2], f[0]
            )
        })
        .collect();
    d.write("visual/v2.csv", &reordered);
    d.mmflow(&["run", "p.toml"]).ok();
    assert_eq!(visual(&d), before);
}
