//! The sweep's executors: local (`--jobs`) and Slurm against a real scheduler.
//!
//! The Slurm test needs a cluster that answers (`tests/slurm/up.sh` starts a single-host one
//! from Debian's packages; CI runs it where they install); elsewhere it prints why it is
//! skipped and passes.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::Dir;

/// A sweep of 2 points × 2 seeds sharing a source and its normalisation.
const SWEEP: &str = r#"
[pipeline]
name = "tiny"

[stages.mosei]
kind = "synthetic"
seed = 1
params = { profile = "mosei", scale = 0.02 }

[stages.norm]
kind = "normalize"
inputs = { segments = "mosei.segments", features = ["mosei.text"] }

[stages.model]
kind = "train_model"
inputs = { segments = "mosei.segments", features = ["norm.text"] }
params = { dropout = 0.2, optim = { epochs = 1, batch_size = 32 } }

[stages.eval]
kind = "evaluate"
inputs = { model = "model.model", segments = "mosei.segments", features = ["norm.text"] }
params = { bootstrap = 10 }

[sweep]
seeds = [1, 2]
vary = { "stages.model.params.dropout" = [0.4] }

[sweep.slurm]
max_parallel = 1
"#;

/// The comparison's table rows (the lines that start with `|`).
fn table(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(str::to_string)
        .collect()
}

#[test]
fn concurrent_local_runs_compute_the_shared_stages_once_and_match_sequential_ones() {
    let d = Dir::new();
    d.write("p.toml", SWEEP);
    let sequential = d.mmflow(&["-q", "sweep", "p.toml", "--out", "one"]).ok();
    let concurrent = d
        .mmflow(&["-q", "sweep", "p.toml", "--jobs", "2", "--out", "two"])
        .ok();
    assert!(
        concurrent
            .stdout
            .contains("stages every run shares (mosei, norm): 2 ran, 0 restored"),
        "{}",
        concurrent.stdout
    );
    // Every run restores the shared stages and computes its own model.
    assert_eq!(
        concurrent
            .stdout
            .matches(": 2 ran, 2 restored, 0 up to date")
            .count(),
        4,
        "{}",
        concurrent.stdout
    );
    assert_eq!(table(&sequential.stdout), table(&concurrent.stdout));
    assert!(!table(&sequential.stdout).is_empty());
}

#[test]
fn a_slurm_sweep_without_sbatch_is_a_clear_error() {
    let d = Dir::new();
    d.write("p.toml", SWEEP);
    let run = d
        .command(&["sweep", "p.toml", "--executor", "slurm"])
        .env("PATH", d.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`sbatch` is not on PATH"), "{stderr}");
    assert!(!d.join("data/runs/tiny/mmflow.sweep/base-seed1").exists());
}

/// Why a Slurm test cannot run here, if it cannot.
fn no_cluster() -> Option<String> {
    let sinfo = Command::new("sinfo")
        .args(["-h", "-t", "idle,mix,alloc", "-o", "%n"])
        .output();
    match sinfo {
        Err(e) => Some(format!(
            "no `sinfo` ({e}): start one with tests/slurm/up.sh --install"
        )),
        Ok(o) if !o.status.success() || o.stdout.trim_ascii().is_empty() => Some(format!(
            "no Slurm node is up ({}): tests/slurm/up.sh starts one",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// `mmflow sweep p.toml --executor slurm [--wait] --out slurm`.
fn slurm_sweep(d: &Dir, wait: bool) -> crate::util::Run {
    let mut args = vec![
        "-q",
        "sweep",
        "p.toml",
        "--executor",
        "slurm",
        "--out",
        "slurm",
    ];
    if wait {
        args.push("--wait");
    }
    d.mmflow(&args)
}

fn squeue_is_empty(job: &str) -> bool {
    Command::new("squeue")
        .args(["-h", "-o", "%i", "-j", job])
        .output()
        .map(|o| o.stdout.trim_ascii().is_empty())
        .unwrap_or(true)
}

#[test]
fn a_sweep_on_slurm_equals_the_local_one_and_resubmits_only_unfinished_runs() {
    if let Some(why) = no_cluster() {
        println!("skipped: {why}");
        return;
    }
    let d = Dir::new();
    // Resources no node has: the scheduler's refusal, and nothing submitted or run.
    d.write(
        "greedy.toml",
        &SWEEP.replace("max_parallel = 1", "max_parallel = 1\ncpus_per_task = 4096"),
    );
    let refused = d
        .mmflow(&[
            "-q",
            "sweep",
            "greedy.toml",
            "--executor",
            "slurm",
            "--out",
            "greedy",
        ])
        .expect(1);
    assert!(
        refused.stderr.contains("sbatch refused")
            && refused.stderr.contains("--cpus-per-task=4096"),
        "{}",
        refused.stderr
    );
    assert!(!d.join("greedy/mmflow.sweep/slurm/submission.json").exists());
    assert!(!d.join("greedy/mmflow.sweep/base-seed1").exists());

    d.write("p.toml", SWEEP);
    let local = d.mmflow(&["-q", "sweep", "p.toml", "--out", "local"]).ok();
    let slurm = slurm_sweep(&d, true).ok();
    assert!(
        slurm
            .stdout
            .contains("4 of 4 runs (tasks 0,1,2,3), after job"),
        "{}",
        slurm.stdout
    );
    assert_eq!(
        table(&local.stdout),
        table(&slurm.stdout),
        "{}",
        slurm.stdout
    );
    assert!(d.join("slurm/mmflow.sweep/comparison.parquet").is_file());

    // A task cancelled before it ran (as a pre-empted one) leaves its run unfinished: the
    // comparison names it with its job and log, and the next submission is that run alone.
    std::fs::remove_dir_all(d.join("slurm/mmflow.sweep/base-seed2")).unwrap();
    std::fs::remove_dir_all(d.join("slurm/mmflow.sweep/base-seed1")).unwrap();
    let submitted = slurm_sweep(&d, false).ok();
    let array = submitted
        .stdout
        .split("submitted job array ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("{}", submitted.stdout))
        .to_string();
    assert!(
        submitted.stdout.contains("2 of 4 runs (tasks 0,1)"),
        "{}",
        submitted.stdout
    );
    // The array runs one task at a time after the shared stages' job: task 1 is still queued.
    let cancelled = Command::new("scancel")
        .arg(format!("{array}_1"))
        .status()
        .unwrap();
    assert!(cancelled.success());
    let start = Instant::now();
    while !squeue_is_empty(&array) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the jobs never finished"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let collected = d
        .mmflow(&["-q", "sweep", "p.toml", "--collect", "--out", "slurm"])
        .expect(1);
    assert!(
        collected
            .stderr
            .contains("1 of 4 runs of the sweep are unfinished")
            && collected.stderr.contains("point base, seed 2")
            && collected.stderr.contains(&format!("Slurm job {array}_1")),
        "{}",
        collected.stderr
    );
    assert!(!d.join("slurm/mmflow.sweep/comparison.parquet").exists());
    let again = slurm_sweep(&d, true).ok();
    assert!(
        again.stdout.contains("1 of 4 runs (tasks 1)"),
        "{}",
        again.stdout
    );
    assert_eq!(table(&local.stdout), table(&again.stdout));
}

/// `--wait` asks `squeue` before anything is submitted: with a controller that does not
/// answer, nothing reaches `sbatch` (client commands stand in for Slurm's here, so the test
/// needs no cluster).
#[test]
fn wait_without_an_answering_squeue_submits_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let d = Dir::new();
    d.write("p.toml", SWEEP);
    let bin = d.join("bin");
    for (name, script) in [
        ("sbatch", "#!/bin/sh\ntouch \"$(dirname \"$0\")/../sbatch-was-called\"\necho 12\n"),
        (
            "squeue",
            "#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n",
        ),
    ] {
        let path = d.write(&format!("bin/{name}"), script);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let out = d
        .command(&["sweep", "p.toml", "--executor", "slurm", "--wait"])
        .env("PATH", path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not answer"), "{stderr}");
    assert!(
        stderr.contains("Unable to contact slurm controller"),
        "{stderr}"
    );
    assert!(!d.join("sbatch-was-called").exists(), "sbatch ran");
}
