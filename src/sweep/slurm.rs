//! The Slurm executor: a sweep's unfinished runs as one job array (`sbatch --array`), one
//! task per point × seed, each running `mmflow sweep FILE --task <index>` against the sweep's
//! run-cache. When the runs share stages, a job computing them goes first and the array
//! depends on it (`--dependency=afterok`), so they are computed once, not once per task.
//!
//! The submission is recorded in `mmflow.sweep/slurm/submission.json` (job ids and the run
//! each task is); every task's log is `mmflow.sweep/slurm/<job>_<task>.log`. `--wait` polls
//! `squeue` until the jobs are gone, then compares; without it, `mmflow sweep FILE --collect`
//! compares whatever finished later and names each unfinished run with its job and log.
//! Submitting again submits only the runs that are not finished.
//!
//! Each task checks that the sweep it loads is the one submitted (the same runs with the same
//! settings): a pipeline file edited while tasks wait in the queue fails them, visibly,
//! instead of running settings nobody submitted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use mmflow_pipeline::manifest::write_atomically;
use mmflow_pipeline::record::RunRecord;
use mmflow_schemas::files::{open_regular, own_folder, read_regular_at_most};
use serde::{Deserialize, Serialize};

use super::{shared_pipeline, Sweep};

/// Folder of the submission record, the task script and the logs, in the sweep folder.
const SLURM_FOLDER: &str = "slurm";
const SUBMISSION_FILE: &str = "submission.json";
const SCRIPT_FILE: &str = "task.sh";

/// How often `--wait` asks `squeue` whether the jobs are done.
const POLL: Duration = Duration::from_secs(2);

/// What was submitted last.
#[derive(Debug, Serialize, Deserialize)]
pub struct Submission {
    /// The job array's id.
    pub array_job: String,
    /// The id of the job computing the shared stages, if there was one.
    pub shared_job: Option<String>,
    /// The array's task ids: indices of runs among points × seeds.
    pub tasks: Vec<usize>,
    /// When (seconds since the Unix epoch).
    pub submitted_unix: u64,
}

/// Largest submission record read (a job id and a few thousand task numbers).
const MAX_SUBMISSION_BYTES: u64 = 16 << 20;

/// How much of the end of a task's log is read for its last line.
const LOG_TAIL_BYTES: u64 = 64 << 10;

impl Submission {
    /// The last submission of the sweep in `root`: `Ok(None)` when there is none, an error
    /// naming the record when it is not one mmflow wrote (a FIFO, a folder, not JSON…).
    pub fn load(root: &Path) -> Result<Option<Submission>> {
        let path = root.join(SLURM_FOLDER).join(SUBMISSION_FILE);
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(None);
        }
        let read = || -> Result<Submission> {
            let bytes = read_regular_at_most(&path, MAX_SUBMISSION_BYTES)?;
            Ok(serde_json::from_slice(&bytes)?)
        };
        read()
            .map(Some)
            .with_context(|| format!("{}: not a submission record mmflow wrote", path.display()))
    }

    /// `Slurm job 12_3, log …/12_3.log: <its last line>` for a run that was a task of it.
    pub fn describe_task(&self, root: &Path, index: usize) -> Option<String> {
        if !self.tasks.contains(&index) {
            return None;
        }
        let job = format!("{}_{index}", self.array_job);
        let log = root.join(SLURM_FOLDER).join(format!("{job}.log"));
        let last = match last_line(&log) {
            Ok(Some(line)) => format!(": {line}"),
            Ok(None) => " (empty or not written: the task may not have started)".into(),
            Err(e) => format!(" (cannot be read: {e})"),
        };
        Some(format!(
            "Slurm job {job} (`sacct -j {job}`), log {}{last}",
            log.display()
        ))
    }
}

/// The last non-empty line of a task's log (its first 200 characters), read from the log's
/// last [`LOG_TAIL_BYTES`]; `None` when the log is absent or blank. A log that is not a
/// regular file (a FIFO would block the reader) is an error saying what it is.
fn last_line(log: &Path) -> std::io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let (mut file, len) = match open_regular(log) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        opened => opened?,
    };
    file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
    let mut tail = Vec::new();
    file.take(LOG_TAIL_BYTES).read_to_end(&mut tail)?;
    Ok(String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().chars().take(200).collect()))
}

/// A hash of what the sweep's runs are (directories and resolved settings), passed to every
/// task so that a task refuses a sweep that changed after it was submitted.
pub fn identity(sweep: &Sweep) -> String {
    let mut h = blake3::Hasher::new();
    for run in &sweep.runs {
        h.update(run.pipeline.run_dir.to_string_lossy().as_bytes());
        h.update(b"\0");
        h.update(
            toml::to_string(&run.pipeline.resolved)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(b"\0");
    }
    h.finalize().to_hex()[..16].to_string()
}

/// Submits the unfinished runs of `sweep`; with `wait`, returns once the jobs are gone.
/// Returns false when there was nothing to submit.
pub fn submit(sweep: &Sweep, set: &[String], out: Option<&PathBuf>, wait: bool) -> Result<bool> {
    let unfinished: Vec<usize> = sweep
        .runs
        .iter()
        .enumerate()
        .filter(|(_, r)| RunRecord::load(&r.pipeline.run_dir).is_err())
        .map(|(i, _)| i)
        .collect();
    if unfinished.is_empty() {
        sweep.say.line(format_args!(
            "every run of the sweep is finished: nothing to submit"
        ));
        return Ok(false);
    }
    let folder = sweep.root.join(SLURM_FOLDER);
    own_folder(&sweep.root)
        .and_then(|()| own_folder(&folder))
        .with_context(|| format!("{}: the sweep's Slurm folder", folder.display()))?;
    let sbatch = find_on_path("sbatch").context(
        "--executor slurm: `sbatch` is not on PATH (the machine that submits needs Slurm's client commands)",
    )?;
    let squeue = if wait {
        Some(answering_squeue()?)
    } else {
        None
    };
    let script = folder.join(SCRIPT_FILE);
    write_script(&script, sweep, set, out)?;

    let mut common = sweep.section.slurm.sbatch_options();
    let cwd = std::env::current_dir().context("the current directory")?;
    common.push(format!("--chdir={}", cwd.display()));
    common.push(format!("--job-name=mmflow-{}", sweep.runs[0].pipeline.name));
    common.push("--parsable".into());

    // A job the partition can never run would wait in the queue for ever: ask first.
    check_resources(&sbatch, &common, &script)?;
    let shared_job = match shared_pipeline(sweep) {
        Some(_) => {
            let mut args = common.clone();
            args.push(format!(
                "--output={}",
                folder.join("%j-shared.log").display()
            ));
            Some(sbatch_job(
                &sbatch,
                &args,
                &script,
                "the job computing the shared stages",
            )?)
        }
        None => None,
    };
    let tasks = unfinished
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let args = array_args(common, sweep, &tasks, &folder, shared_job.as_deref());
    let array_job = sbatch_job(&sbatch, &args, &script, "the job array")?;
    let submission = Submission {
        array_job: array_job.clone(),
        shared_job: shared_job.clone(),
        tasks: unfinished,
        submitted_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let json = serde_json::to_vec_pretty(&submission)?;
    write_atomically(&folder.join(SUBMISSION_FILE), &json)?;
    say_submitted(sweep, &submission, &tasks, &folder);
    let Some(squeue) = squeue else {
        sweep.say.line(format_args!(
            "when it has finished: mmflow sweep {} --collect (or run the sweep again: only unfinished runs are submitted)",
            sweep.file.display()
        ));
        return Ok(true);
    };
    let mut jobs = vec![array_job];
    jobs.extend(shared_job);
    wait_for(&squeue, &jobs)?;
    Ok(true)
}

/// The job array's `sbatch` options: `common`, the array of `tasks` (throttled to
/// `max_parallel`), its logs, and its dependency on the shared stages' job.
fn array_args(
    mut args: Vec<String>,
    sweep: &Sweep,
    tasks: &str,
    folder: &Path,
    shared_job: Option<&str>,
) -> Vec<String> {
    let throttle = sweep
        .section
        .slurm
        .max_parallel
        .map(|k| format!("%{k}"))
        .unwrap_or_default();
    args.push(format!("--array={tasks}{throttle}"));
    args.push(format!("--output={}", folder.join("%A_%a.log").display()));
    if let Some(job) = shared_job {
        args.push(format!("--dependency=afterok:{job}"));
        args.push("--kill-on-invalid-dep=yes".into());
    }
    args
}

/// What was submitted, and where its logs go.
fn say_submitted(sweep: &Sweep, submission: &Submission, tasks: &str, folder: &Path) {
    let unfinished = &submission.tasks;
    sweep.say.line(format_args!(
        "submitted job array {}: {} of {} runs (tasks {}){}; logs in {}",
        submission.array_job,
        unfinished.len(),
        sweep.runs.len(),
        if unfinished.len() > 12 {
            format!("{}, … {}", unfinished[0], unfinished[unfinished.len() - 1])
        } else {
            tasks.to_string()
        },
        submission
            .shared_job
            .as_ref()
            .map(|j| format!(", after job {j} (the stages every run shares)"))
            .unwrap_or_default(),
        folder.display()
    ));
}

/// Runs `sbatch --parsable … script`; the job id, or an error with the scheduler's words.
fn sbatch_job(sbatch: &Path, args: &[String], script: &Path, what: &str) -> Result<String> {
    let output = Command::new(sbatch)
        .args(args)
        .arg(script)
        .output()
        .with_context(|| format!("running {}", sbatch.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "sbatch refused {what}: {} (options: {})",
            String::from_utf8_lossy(&output.stderr).trim(),
            args.join(" ")
        );
    }
    // `--parsable` prints `<id>` or `<id>;<cluster>`.
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("sbatch accepted {what} but printed no job id: {stdout:?}");
    }
    Ok(id)
}

/// `sbatch --test-only`: whether the scheduler could ever run a task with these options.
fn check_resources(sbatch: &Path, args: &[String], script: &Path) -> Result<()> {
    let output = Command::new(sbatch)
        .args(args.iter().filter(|a| *a != "--parsable"))
        .arg("--test-only")
        .arg(script)
        .output()
        .with_context(|| format!("running {}", sbatch.display()))?;
    if !output.status.success() {
        bail!(
            "sbatch refused the tasks' resources (nothing was submitted): {} (options: {})",
            String::from_utf8_lossy(&output.stderr).trim(),
            args.join(" ")
        );
    }
    Ok(())
}

/// `squeue`, when it is on PATH and the controller answers it: `--wait` polls it, so it is
/// asked before anything is submitted (jobs nobody could wait for are not started).
fn answering_squeue() -> Result<PathBuf> {
    let squeue = find_on_path("squeue")
        .context("--wait: `squeue` is not on PATH (nothing was submitted)")?;
    let output = Command::new(&squeue)
        .args(["--noheader", "--format=%i", "--me"])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", squeue.display()))?;
    if !output.status.success() {
        bail!(
            "--wait: `{}` does not answer, so the jobs could not be waited for (nothing was submitted): {}",
            squeue.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(squeue)
}

/// Waits until `squeue` lists none of `jobs`.
fn wait_for(squeue: &Path, jobs: &[String]) -> Result<()> {
    let mut failures = 0;
    loop {
        let output = Command::new(squeue)
            .args(["-h", "-o", "%i", "-j", &jobs.join(",")])
            .output()
            .with_context(|| format!("running {}", squeue.display()))?;
        if output.status.success() {
            failures = 0;
            if String::from_utf8_lossy(&output.stdout).trim().is_empty() {
                return Ok(());
            }
        } else {
            // squeue of a job that has left the controller's memory fails: done. Of a
            // controller that does not answer, too: give up after a while, saying so.
            let err = String::from_utf8_lossy(&output.stderr);
            if err.contains("Invalid job id") {
                return Ok(());
            }
            failures += 1;
            if failures > 30 {
                bail!("--wait: squeue keeps failing: {}", err.trim());
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The task script: one run of the sweep (the array task id selects it), or outside an
/// array, the stages every run shares.
fn write_script(path: &Path, sweep: &Sweep, set: &[String], out: Option<&PathBuf>) -> Result<()> {
    let exe = std::env::current_exe().context("the path of this mmflow")?;
    let cwd = std::env::current_dir().context("the current directory")?;
    let mut args = vec![
        quote(&exe.to_string_lossy()),
        "-q".into(),
        "sweep".into(),
        quote(&sweep.file.to_string_lossy()),
    ];
    for s in set {
        args.push("--set".into());
        args.push(quote(s));
    }
    if let Some(out) = out {
        args.push("--out".into());
        args.push(quote(&out.to_string_lossy()));
    }
    args.push("--expect".into());
    args.push(quote(&identity(sweep)));
    let command = args.join(" ");
    let text = format!(
        "#!/bin/sh\n\
         # Written by `mmflow sweep --executor slurm`: one run of the sweep (the array task id\n\
         # selects it), or outside an array, the stages every run shares.\n\
         cd {} || exit 1\n\
         if [ -n \"${{SLURM_ARRAY_TASK_ID:-}}\" ]; then\n\
         \x20   exec {command} --task \"$SLURM_ARRAY_TASK_ID\"\n\
         else\n\
         \x20   exec {command} --shared-stages\n\
         fi\n",
        quote(&cwd.to_string_lossy())
    );
    write_atomically(path, text.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

/// `'text'` for sh, with `'` written as `'\''`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The first executable `name` on PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf %s {}",
                quote("x'; echo injected; 'y $HOME")
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "x'; echo injected; 'y $HOME"
        );
    }
}
