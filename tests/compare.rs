//! `mmflow compare` and `mmflow sweep`: runs that differ only by seed are grouped (mean ±
//! std), the settings that differ are shown, changes within noise are marked, and runs of
//! different tasks or unfinished runs are refused.

use crate::util::Dir;

/// Synthetic data, a three-epoch model, its evaluation.
pub const TINY: &str = r#"
[pipeline]
name = "tiny"

[stages.mosei]
kind = "synthetic"
seed = 1
params = { profile = "mosei", scale = 0.02 }

[stages.model]
kind = "train_model"
inputs = { segments = "mosei.segments", features = ["mosei.text"] }
params = { dropout = 0.2, optim = { epochs = 3, batch_size = 32 } }

[stages.eval]
kind = "evaluate"
inputs = { model = "model.model", segments = "mosei.segments", features = ["mosei.text"] }
params = { bootstrap = 50 }
"#;

#[test]
fn compare_groups_seeds_and_shows_what_differs() {
    let dir = Dir::new();
    dir.write("p.toml", TINY);
    for (out, extra) in [
        ("a1", "pipeline.seed=1"),
        ("a2", "pipeline.seed=2"),
        ("b1", "stages.model.params.dropout=0.4"),
    ] {
        dir.mmflow(&["run", "p.toml", "--out", out, "--set", extra])
            .ok();
    }
    let run = dir
        .mmflow(&[
            "compare",
            "a1",
            "a2",
            "b1",
            "--metric",
            "CCC",
            "--metric",
            "sentiment/MAE",
            "--parquet",
            "cmp.parquet",
        ])
        .ok();
    let lines: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(lines.len(), 3, "a header and two groups:\n{}", run.stdout);
    assert!(
        lines[0].contains("sentiment CCC") && lines[0].contains("sentiment MAE"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("a1, a2") && lines[1].contains(" ± "),
        "the seeds form one group: {}",
        lines[1]
    );
    assert!(
        lines[2].contains("stages.model.params.dropout=0.4") && lines[2].contains('['),
        "{}",
        lines[2]
    );
    assert!(
        !run.stdout.contains("pipeline.seed="),
        "seeds are not a difference of settings"
    );
    let show = dir.mmflow(&["show", "cmp.parquet"]).ok();
    assert!(
        show.stdout.contains("table comparison") && show.stdout.contains("4 rows"),
        "{}",
        show.stdout
    );

    // Another task (valence/arousal heads) cannot be compared with sentiment.
    dir.write(
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
params = { bootstrap = 20 }
"#,
    );
    dir.mmflow(&["run", "va.toml", "--out", "va"]).ok();
    let run = dir.mmflow(&["compare", "a1", "va"]).expect(1);
    assert!(
        run.stderr
            .contains("cannot compare runs of different tasks"),
        "{}",
        run.stderr
    );
    // An unfinished run.
    dir.mmflow(&[
        "run",
        "p.toml",
        "--out",
        "broken",
        "--set",
        "stages.model.params.heads={ valence = {} }",
    ])
    .expect(1);
    let run = dir.mmflow(&["compare", "a1", "broken"]).expect(1);
    assert!(
        run.stderr
            .contains("broken: unfinished run: stage(s) eval, model have not completed"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_sweep_runs_each_point_over_seeds_and_compares_them() {
    let dir = Dir::new();
    let sweep = "\n[sweep]\nseeds = [1, 2]\nvary = { \"stages.model.params.dropout\" = [0.4] }\n";
    dir.write("p.toml", &format!("{TINY}{sweep}"));
    // `run` ignores the section.
    dir.mmflow(&["run", "p.toml"]).ok();
    let run = dir.mmflow(&["sweep", "p.toml"]).ok();
    for line in [
        "point base, seed 1",
        "point base, seed 2",
        "point stages.model.params.dropout=0.4, seed 1",
        "point stages.model.params.dropout=0.4, seed 2",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing `{line}`:\n{}",
            run.stdout
        );
    }
    let rows: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 3, "{}", run.stdout);
    assert!(
        rows[1].contains("base-seed1, base-seed2") && rows[1].contains(" ± "),
        "{}",
        rows[1]
    );
    assert!(
        rows[2].contains(
            "stages_model_params_dropout=0.4-seed1, stages_model_params_dropout=0.4-seed2"
        ) && rows[2].contains("| stages.model.params.dropout=0.4 |"),
        "{}",
        rows[2]
    );
    assert!(dir
        .join("data/runs/tiny/mmflow.sweep/comparison.parquet")
        .exists());
    // Re-running the sweep re-computes nothing.
    let again = dir.mmflow(&["sweep", "p.toml"]).ok();
    assert!(
        again
            .stdout
            .contains("point base, seed 1: 0 ran, 0 restored, 3 up to date"),
        "{}",
        again.stdout
    );

    // A key that does not exist: refused before anything runs.
    let bad = "\n[sweep]\nvary = { \"stages.model.params.dropuot\" = [0.4] }\n";
    dir.write(
        "q.toml",
        &format!("{}{bad}", TINY.replace("name = \"tiny\"", "name = \"bad\"")),
    );
    let run = dir.mmflow(&["sweep", "q.toml"]).expect(2);
    assert!(
        run.stderr
            .contains("sweep point `stages.model.params.dropuot=0.4`")
            && run.stderr.contains("unknown key"),
        "{}",
        run.stderr
    );
    assert!(!dir.join("data/runs/bad").exists(), "nothing may run");
}

/// [`TINY`] without `dropout`: the model's dropout and weight decay are left at their
/// defaults.
fn tiny_with_defaults() -> String {
    TINY.replace("dropout = 0.2, ", "")
        .replace("epochs = 3", "epochs = 2")
}

#[test]
fn a_sweep_over_defaulted_keys_groups_runs_by_their_effective_settings() {
    let dir = Dir::new();
    let sweep = "\n[sweep]\nseeds = [1, 2]\nvary = { \"stages.model.params.dropout\" = [0.4], \"stages.model.params.optim.weight_decay\" = [0.01] }\n";
    let config = format!("{}{sweep}", tiny_with_defaults());
    assert!(!config.contains("dropout =") && !config.contains("weight_decay ="));
    dir.write("p.toml", &config);
    let run = dir.mmflow(&["sweep", "p.toml", "-q"]).ok();
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| #"))
        .map(|l| l.split(" | ").collect())
        .collect();
    assert_eq!(rows.len(), 3, "base and two points:\n{}", run.stdout);
    for row in &rows {
        assert_eq!(row[4], "2", "each group holds its two seeds: {row:?}");
    }
    assert!(
        rows[0][3].contains("stages.model.params.dropout=0.2")
            && rows[0][3].contains("stages.model.params.optim.weight_decay=0.0001"),
        "the base shows the defaults it ran with: {:?}",
        rows[0]
    );
    assert!(
        rows[0][1].contains("base-seed1, base-seed2"),
        "{:?}",
        rows[0]
    );
    assert_eq!(
        rows[1][3], "stages.model.params.dropout=0.4",
        "{:?}",
        rows[1]
    );
    assert_eq!(
        rows[2][3], "stages.model.params.optim.weight_decay=0.01",
        "{:?}",
        rows[2]
    );
}

#[test]
fn a_failed_rerun_is_not_shown_under_its_settings_and_stale_stages_leave_the_lock() {
    let dir = Dir::new();
    dir.write("p.toml", &tiny_with_defaults());
    dir.mmflow(&["run", "p.toml", "--out", "r", "-q"]).ok();
    let before = dir.mmflow(&["compare", "r"]).ok().stdout;
    // A re-run with other settings fails in `model`: the directory holds the old results
    // but the new settings, so nothing reads it as a record.
    dir.mmflow(&[
        "run",
        "p.toml",
        "--out",
        "r",
        "-q",
        "--set",
        "stages.model.params.heads={ valence = {} }",
    ])
    .expect(1);
    for command in ["compare", "report"] {
        let refused = dir.mmflow(&[command, "r"]).expect(1);
        assert!(
            refused
                .stderr
                .contains("r: unfinished run: stage(s) eval, model have not completed"),
            "{command}: {}",
            refused.stderr
        );
    }
    assert!(!dir.join("r/report").exists());
    // A run of the old settings completes without re-computing anything, and the record is
    // back, the same as before.
    let rerun = dir.mmflow(&["run", "p.toml", "--out", "r"]).ok();
    assert!(
        rerun.stdout.contains("0 ran, 0 restored, 3 up to date"),
        "{}",
        rerun.stdout
    );
    assert_eq!(dir.mmflow(&["compare", "r"]).ok().stdout, before);

    // A renamed evaluate stage: the old entry leaves the lock once the new file completes.
    dir.write(
        "p.toml",
        &tiny_with_defaults().replace("[stages.eval]", "[stages.final_eval]"),
    );
    let lock = || std::fs::read_to_string(dir.join("r/mmflow.lock")).unwrap();
    dir.mmflow(&["run", "p.toml", "--out", "r", "-q"]).ok();
    assert!(
        !lock().contains("\"eval\"") && lock().contains("\"final_eval\""),
        "{}",
        lock()
    );
    let shown = dir.mmflow(&["compare", "r"]).ok().stdout;
    assert!(
        shown.contains("| final_eval |") && !shown.contains("| eval |"),
        "{shown}"
    );
}

#[test]
fn a_sweep_point_that_fails_is_listed_as_unfinished_and_the_others_compared() {
    let dir = Dir::new();
    let sweep =
        "\n[sweep]\nseeds = [1]\nvary = { \"stages.model.params.heads\" = [{ valence = {} }] }\n";
    dir.write("p.toml", &format!("{}{sweep}", tiny_with_defaults()));
    let run = dir.mmflow(&["sweep", "p.toml", "-q"]).expect(1);
    assert!(
        run.stderr.contains("stage `model` failed")
            && run
                .stderr
                .contains("1 of 2 runs of the sweep are unfinished")
            && run
                .stderr
                .contains("unfinished run: stage(s) eval, model have not completed"),
        "{}",
        run.stderr
    );
    let rows: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 2, "the base alone is compared:\n{}", run.stdout);
    assert!(rows[1].contains("base-seed1"), "{}", rows[1]);
    assert!(!dir
        .join("data/runs/tiny/mmflow.sweep/comparison.parquet")
        .exists());

    // The sweep folder a link to a folder of the user's holding a comparison table: the
    // failed sweep leaves the table alone (nothing is removed through a link).
    std::fs::create_dir(dir.join("kept")).unwrap();
    dir.mmflow(&[
        "compare",
        "data/runs/tiny/mmflow.sweep/base-seed1",
        "--parquet",
        "kept/comparison.parquet",
    ])
    .ok();
    let sweep_folder = dir.join("data/runs/tiny/mmflow.sweep");
    std::fs::rename(&sweep_folder, dir.join("moved.sweep")).unwrap();
    std::os::unix::fs::symlink(dir.join("kept"), &sweep_folder).unwrap();
    dir.mmflow(&["sweep", "p.toml", "-q"]).expect(1);
    assert!(dir.join("kept/comparison.parquet").is_file());
}

#[test]
fn a_run_of_lock_format_2_is_refused_until_a_rerun_records_its_output_kinds() {
    let dir = Dir::new();
    dir.write("p.toml", &tiny_with_defaults());
    dir.mmflow(&["run", "p.toml", "--out", "r", "-q"]).ok();
    let before = dir.mmflow(&["compare", "r"]).ok().stdout;
    // The lock as an earlier mmflow wrote it: format 2, no table kinds.
    let path = dir.join("r/mmflow.lock");
    let mut lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    lock["format"] = 2.into();
    for entry in lock["stages"].as_object_mut().unwrap().values_mut() {
        for output in entry["outputs"].as_object_mut().unwrap().values_mut() {
            output.as_object_mut().unwrap().remove("table");
        }
    }
    std::fs::write(&path, lock.to_string()).unwrap();
    for command in ["compare", "report"] {
        let refused = dir.mmflow(&[command, "r"]).expect(1);
        assert!(
            refused.stderr.contains(
                "r: the lock file (format 2) does not record the kinds of the run's outputs"
            ) && refused.stderr.contains("run the pipeline again"),
            "{command}: {}",
            refused.stderr
        );
    }
    // Re-running re-computes nothing and records the kinds.
    let rerun = dir.mmflow(&["run", "p.toml", "--out", "r"]).ok();
    assert!(
        rerun.stdout.contains("0 ran, 0 restored, 3 up to date"),
        "{}",
        rerun.stdout
    );
    let lock = std::fs::read_to_string(&path).unwrap();
    assert!(
        lock.contains("\"table\": \"metrics\"") && lock.contains("\"table\": \"history\""),
        "{lock}"
    );
    assert_eq!(dir.mmflow(&["compare", "r"]).ok().stdout, before);
    dir.mmflow(&["report", "r"]).ok();
}
