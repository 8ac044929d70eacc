//! Bad inputs: the run-cache (its folder, its work folders, its memos of source hashes) and
//! `mmflow cache prune`, and the folders and records of sweeps. Nothing mmflow did not make
//! may be removed, replaced or written through a link; special files are refused, not read.

use std::time::{Duration, SystemTime};

use super::{check, mkfifo, pipeline, Case};
use crate::util::Dir;

/// One synthetic stage: a run takes a second and fills the run-cache with one entry.
const ONE: &str = "[pipeline]\nname = \"p\"\n[stages.src]\nkind = \"synthetic\"\nparams = { profile = \"mosi\", scale = 0.05 }\n";

/// [`ONE`] with `extra` appended to its `[pipeline]` table.
fn one_with(d: &Dir, extra: &str) {
    pipeline(
        d,
        &ONE.replace("name = \"p\"\n", &format!("name = \"p\"\n{extra}\n")),
    );
}

/// Sets the modification time of `rel` (a file or a folder) `days` ago.
fn age(d: &Dir, rel: &str, days: u64) {
    let then = SystemTime::now() - Duration::from_secs(days * 86_400);
    std::fs::File::open(d.join(rel))
        .unwrap()
        .set_modified(then)
        .unwrap();
}

/// A user's folder `mine/` holding a `tmp/` folder of their own, 40 days old.
fn users_folder_with_a_tmp(d: &Dir) {
    d.write("mine/tmp/old/notes.txt", "mine");
    d.write("mine/notes.txt", "mine");
    age(d, "mine/tmp/old", 40);
}

/// [`ONE`] run once, then a user's old folder, file and link put in the cache's `tmp/`.
fn users_things_in_the_cache_tmp(d: &Dir) {
    pipeline(d, ONE);
    d.mmflow(&["run", "p.toml", "-q"]).ok();
    d.write("data/runs/.mmflow-cache/tmp/users/notes.txt", "mine");
    age(d, "data/runs/.mmflow-cache/tmp/users", 40);
    d.write("data/runs/.mmflow-cache/tmp/a-file", "mine");
    d.write("elsewhere/keep.txt", "mine");
    std::os::unix::fs::symlink(
        d.join("elsewhere"),
        d.join("data/runs/.mmflow-cache/tmp/a-link"),
    )
    .unwrap();
}

/// The default run-cache folder (`data/runs/.mmflow-cache`) is a link to a user's folder.
fn default_cache_linked_to_a_users_folder(d: &Dir) {
    pipeline(d, ONE);
    users_folder_with_a_tmp(d);
    std::fs::create_dir_all(d.join("data/runs/p")).unwrap();
    std::os::unix::fs::symlink(d.join("mine"), d.join("data/runs/.mmflow-cache")).unwrap();
}

/// A `csv` source run once, then every memo of a source file's hash made a FIFO.
fn hash_memos_are_fifos(d: &Dir) {
    super::csv::toy(d, &[]);
    d.mmflow(&["run", "p.toml", "-q"]).ok();
    let memos = d.join("data/runs/.mmflow-cache/hashes");
    let names: Vec<String> = std::fs::read_dir(&memos)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.is_empty(), "the run remembered no source hash");
    for name in names {
        std::fs::remove_file(memos.join(&name)).unwrap();
        mkfifo(d, &format!("data/runs/.mmflow-cache/hashes/{name}"));
    }
}

/// A sweep of [`ONE`] over two scales.
fn sweep_of_one(d: &Dir) {
    pipeline(
        d,
        &format!("{ONE}[sweep]\nseeds = [1]\nvary = {{ \"stages.src.params.scale\" = [0.04] }}\n"),
    );
}

/// A Slurm submission record naming task 0 of job 12 (whose run never finished).
fn submitted(d: &Dir) {
    sweep_of_one(d);
    d.write(
        "data/runs/p/mmflow.sweep/slurm/submission.json",
        r#"{"array_job": "12", "shared_job": null, "tasks": [0, 1], "submitted_unix": 0}"#,
    );
}

const CASES: &[Case] = &[
    Case {
        what: "prune meets a user's folder, a file and a link in the cache's tmp/",
        setup: users_things_in_the_cache_tmp,
        args: &["cache", "prune", "p.toml", "--older-than", "1"],
        code: 0,
        says: &[
            "skipped 3 things mmflow did not make",
            "tmp/users",
            "tmp/a-file",
            "tmp/a-link",
        ],
        may_write: &[],
    },
    Case {
        what: "prune of a run-cache folder that is a link to a user's folder",
        setup: |d| {
            one_with(d, "run_cache = \"cache\"");
            users_folder_with_a_tmp(d);
            std::os::unix::fs::symlink(d.join("mine"), d.join("cache")).unwrap();
        },
        args: &["cache", "prune", "p.toml", "--older-than", "1"],
        code: 1,
        says: &["cache", "is a link, not a folder mmflow made"],
        may_write: &[],
    },
    Case {
        what: "prune of a default .mmflow-cache that is a link to a user's folder",
        setup: default_cache_linked_to_a_users_folder,
        args: &["cache", "prune", "p.toml", "--older-than", "0"],
        code: 1,
        says: &[".mmflow-cache", "is a link"],
        may_write: &[],
    },
    Case {
        what: "run with a default .mmflow-cache that is a link to a user's folder",
        setup: default_cache_linked_to_a_users_folder,
        args: &["run", "p.toml"],
        code: 1,
        says: &[".mmflow-cache", "is a link"],
        may_write: &[],
    },
    Case {
        what: "run with a run-cache folder that is a file",
        setup: |d| {
            one_with(d, "run_cache = \"cache\"");
            d.write("cache", "mine");
        },
        args: &["run", "p.toml"],
        code: 1,
        says: &["cache", "a regular file, not a folder mmflow made"],
        may_write: &[],
    },
    Case {
        what: "run_cache = \"\" (the current folder)",
        setup: |d| one_with(d, "run_cache = \"\""),
        args: &["validate", "p.toml"],
        code: 2,
        says: &["p.toml:3:", "pipeline.run_cache", "must name a folder"],
        may_write: &[],
    },
    Case {
        what: "run_cache = \".\" (a folder holding the run directory)",
        setup: |d| one_with(d, "run_cache = \".\""),
        args: &["run", "p.toml"],
        code: 2,
        says: &["p.toml:3:", "pipeline.run_cache", "a folder holding it"],
        may_write: &[],
    },
    Case {
        what: "run_cache is the run directory",
        setup: |d| one_with(d, "run_cache = \"data/runs/p\""),
        args: &["run", "p.toml"],
        code: 2,
        says: &["pipeline.run_cache", "the run directory"],
        may_write: &[],
    },
    Case {
        what: "run_cache is a folder above the run directory, through ..",
        setup: |d| one_with(d, "run_cache = \"data/other/../runs\""),
        args: &["run", "p.toml"],
        code: 2,
        says: &["pipeline.run_cache", "data/other/../runs"],
        may_write: &[],
    },
    Case {
        what: "--set run_cache to the current folder",
        setup: |d| pipeline(d, ONE),
        args: &["run", "p.toml", "--set", "pipeline.run_cache=\".\""],
        code: 2,
        says: &["--set pipeline.run_cache", "a folder holding it"],
        may_write: &[],
    },
    Case {
        what: "--out inside the folder named as run_cache",
        setup: |d| one_with(d, "run_cache = \"out\""),
        args: &["run", "p.toml", "--out", "out/run"],
        code: 2,
        says: &["pipeline.run_cache", "out/run"],
        may_write: &[],
    },
    Case {
        what: "memos of source hashes are FIFOs",
        setup: hash_memos_are_fifos,
        args: &["run", "p.toml", "--out", "data/runs/q"],
        code: 0,
        says: &["restored"],
        may_write: &["data/runs/q"],
    },
    Case {
        what: "prune --older-than a negative number",
        setup: |d| pipeline(d, ONE),
        args: &["cache", "prune", "p.toml", "--older-than", "-1"],
        code: 2,
        says: &["--older-than", "≥ 0"],
        may_write: &[],
    },
    Case {
        what: "prune --older-than nan",
        setup: |d| pipeline(d, ONE),
        args: &["cache", "prune", "p.toml", "--older-than", "nan"],
        code: 2,
        says: &["--older-than", "not `nan`"],
        may_write: &[],
    },
    Case {
        what: "prune --older-than 1e300 days (nothing is that old)",
        setup: |d| {
            pipeline(d, ONE);
            d.mmflow(&["run", "p.toml", "-q"]).ok();
        },
        args: &["cache", "prune", "p.toml", "--older-than", "1e300"],
        code: 0,
        says: &["removed 0 entries", "kept 1"],
        may_write: &[],
    },
    Case {
        what: "sweep --collect with a submission record that is a FIFO",
        setup: |d| {
            sweep_of_one(d);
            std::fs::create_dir_all(d.join("data/runs/p/mmflow.sweep/slurm")).unwrap();
            mkfifo(d, "data/runs/p/mmflow.sweep/slurm/submission.json");
        },
        args: &["sweep", "p.toml", "--collect"],
        code: 1,
        says: &["submission.json", "a FIFO"],
        may_write: &[],
    },
    Case {
        what: "sweep --collect with a submission record that is not JSON",
        setup: |d| {
            sweep_of_one(d);
            d.write(
                "data/runs/p/mmflow.sweep/slurm/submission.json",
                "{not json",
            );
        },
        args: &["sweep", "p.toml", "--collect"],
        code: 1,
        says: &["submission.json", "not a submission record"],
        may_write: &[],
    },
    Case {
        what: "sweep --collect with a task log that is a FIFO",
        setup: |d| {
            submitted(d);
            mkfifo(d, "data/runs/p/mmflow.sweep/slurm/12_0.log");
        },
        args: &["sweep", "p.toml", "--collect"],
        code: 1,
        says: &["12_0.log", "cannot be read", "a FIFO"],
        may_write: &[],
    },
    Case {
        what: "sweep --executor slurm with its slurm folder a link to a user's folder",
        setup: |d| {
            sweep_of_one(d);
            d.write("mine/task.sh", "#!/bin/sh\necho mine\n");
            std::fs::create_dir_all(d.join("data/runs/p/mmflow.sweep")).unwrap();
            std::os::unix::fs::symlink(d.join("mine"), d.join("data/runs/p/mmflow.sweep/slurm"))
                .unwrap();
        },
        args: &["sweep", "p.toml", "--executor", "slurm"],
        code: 1,
        says: &["mmflow.sweep/slurm", "is a link"],
        may_write: &[],
    },
    Case {
        what: "sweep whose folder is a link to a user's folder",
        setup: |d| {
            sweep_of_one(d);
            d.write("mine/notes.txt", "mine");
            std::fs::create_dir_all(d.join("data/runs/p")).unwrap();
            std::os::unix::fs::symlink(d.join("mine"), d.join("data/runs/p/mmflow.sweep")).unwrap();
        },
        args: &["sweep", "p.toml"],
        code: 1,
        says: &["mmflow.sweep", "is a link"],
        may_write: &[],
    },
    Case {
        what: "sweep vary key holding `=`",
        setup: |d| {
            pipeline(
                d,
                &format!(
                    "{ONE}[sweep]\nseeds = [1]\nvary = {{ \"stages.src.params.scale=0.5\" = [0.04] }}\n"
                ),
            );
        },
        args: &["sweep", "p.toml"],
        code: 2,
        says: &["sweep.vary", "not a dotted key path"],
        may_write: &[],
    },
    Case {
        what: "sweep vary key with an empty segment",
        setup: |d| {
            pipeline(
                d,
                &format!("{ONE}[sweep]\nseeds = [1]\nvary = {{ \"stages..scale\" = [0.04] }}\n"),
            );
        },
        args: &["sweep", "p.toml"],
        code: 2,
        says: &["sweep.vary", "`stages..scale` is not a dotted key path"],
        may_write: &[],
    },
    Case {
        what: "sweep --task beyond the sweep's runs",
        setup: sweep_of_one,
        args: &["sweep", "p.toml", "--task", "99"],
        code: 2,
        says: &["--task 99", "the sweep has 2 runs"],
        may_write: &[],
    },
];

#[test]
fn cache_and_sweep_folders() {
    check(CASES);
}
