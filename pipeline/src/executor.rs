//! Runs a validated pipeline.
//!
//! Stages run in topological order; a stage starts as soon as every stage it reads from has
//! finished, so independent stages run concurrently (up to `jobs` at once; each may use the
//! shared rayon pool for data-parallel work inside). A stage writes into a temporary
//! directory; its outputs are renamed into `<run dir>/<stage id>/` only after it succeeded,
//! and its lock entry is written last. A run killed at any moment leaves every stage either
//! with its old complete outputs and entry or with new complete outputs that the next run
//! will verify by hash.
//!
//! The lock also follows the run as a whole (see [`crate::record`]): its start (the hash of
//! the resolved config, saved beside the lock as `pipeline.toml`), each stage it completed,
//! and — only when every stage completed — the run as the directory's completed record, at
//! which point entries of stages no longer in the pipeline are pruned.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mmflow_schemas::{StageFingerprint, TableMeta};

use crate::config::{Pipeline, PlannedStage};
use crate::manifest::{self, Hashing, Manifest, OutputRecord, RunProgress, StageEntry};
use crate::plan::{self, Decision, Fingerprint, Prepared};
use crate::progress::Progress;
use crate::record;
use crate::run_cache::{self, CachedEntry, CachedOutput, Lookup, RunCache};
use crate::runlock::RunLock;
use crate::stage::{OutputPort, ResolvedDevice, ResolvedInput, RunContext, StageError};
use crate::EngineError;

/// Options of one run.
#[derive(Clone)]
pub struct RunOptions {
    /// Stages to run even if up to date.
    pub force: BTreeSet<String>,
    /// Keep running independent stages after one failed.
    pub keep_going: bool,
    /// Wait for another run on the same directory instead of refusing.
    pub wait_for_lock: bool,
    /// Progress display.
    pub progress: Progress,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            force: BTreeSet::new(),
            keep_going: false,
            wait_for_lock: false,
            progress: Progress::hidden(),
        }
    }
}

/// What happened to one stage.
#[derive(Debug, Clone)]
pub enum StageOutcome {
    /// Ran and succeeded.
    Ran {
        /// Why it ran.
        reason: String,
        /// Wall time in seconds.
        seconds: f64,
    },
    /// Not recomputed: its outputs were restored from the run-cache (it ran with the same
    /// fingerprint in another run directory).
    Restored {
        /// Why it would have run.
        reason: String,
        /// Wall time of the restore in seconds.
        seconds: f64,
    },
    /// Skipped: up to date.
    UpToDate,
    /// Failed.
    Failed {
        /// The error, naming what is at fault.
        error: String,
    },
    /// Not run because a stage it depends on failed (or the run stopped).
    NotRun,
}

/// The outcome of every stage, in topological order.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Run directory.
    pub run_dir: PathBuf,
    /// `(stage id, outcome)`.
    pub stages: Vec<(String, StageOutcome)>,
}

impl RunSummary {
    /// True if any stage failed.
    pub fn failed(&self) -> bool {
        self.stages
            .iter()
            .any(|(_, o)| matches!(o, StageOutcome::Failed { .. }))
    }
}

#[derive(Clone, PartialEq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
    NotRun,
}

struct Finished {
    index: usize,
    result: Result<Completed, String>,
}

enum Completed {
    /// Computed, or (with the seconds the restore took) restored from the run-cache.
    Ran {
        entry: Box<StageEntry>,
        reason: String,
        restored_in: Option<f64>,
    },
    Skipped {
        fingerprint: String,
        refreshed: Option<BTreeMap<String, OutputRecord>>,
    },
}

/// Runs the pipeline; stage failures are reported in the summary, engine failures
/// (run directory unusable, lock held) as errors.
pub fn run(pipeline: &Pipeline, options: &RunOptions) -> Result<RunSummary, EngineError> {
    check_options(pipeline, options)?;
    let run_dir = &pipeline.run_dir;
    let (cache, _lock, mut manifest) = start(pipeline, options)?;
    let n = pipeline.stages.len();
    let mut board = Board::new(n, options.keep_going);
    let (tx, rx) = mpsc::channel::<Finished>();
    let mut device = plan::DeviceSlot::new(pipeline);

    std::thread::scope(|scope| -> Result<(), EngineError> {
        let mut running = 0usize;
        loop {
            // Start every stage whose upstream stages are done, up to `jobs` at once.
            for i in 0..n {
                if board.stop || running >= pipeline.jobs {
                    break;
                }
                if !board.ready(pipeline, i) {
                    continue;
                }
                let stage = &pipeline.stages[i];
                // A device that cannot be used stops the stage before it starts.
                let resolved = match device.for_stage(stage) {
                    Ok(resolved) => resolved,
                    Err(why) => {
                        board.fail(i, stage, why);
                        continue;
                    }
                };
                // Source files are hashed by the stage's worker, not here (see `execute`).
                let prepared = match plan::prepare(stage, resolved, &manifest, cache.as_ref()) {
                    Ok(Some(prepared)) => prepared,
                    Ok(None) => {
                        let why = "internal error: an upstream output is not recorded";
                        board.fail(i, stage, why.into());
                        continue;
                    }
                    Err(e) => {
                        board.fail(i, stage, e.to_string());
                        continue;
                    }
                };
                let previous = manifest.stages.get(&stage.id).cloned();
                let forced = options.force.contains(&stage.id);
                let tx = tx.clone();
                let progress = options.progress.for_stage(&stage.id);
                let inputs = resolve_inputs(stage, &manifest, run_dir);
                let cache = cache.as_ref();
                board.states[i] = State::Running;
                running += 1;
                scope.spawn(move || {
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        let work = Work {
                            pipeline,
                            stage,
                            device: resolved,
                            cache,
                            progress: &progress,
                        };
                        work.execute(prepared, previous, inputs, forced)
                    }))
                    .unwrap_or_else(|panic| Err(panic_message(panic.as_ref())));
                    let _ = tx.send(Finished { index: i, result });
                });
            }
            if running == 0 {
                break;
            }
            let finished = rx.recv().expect("a worker always reports");
            running -= 1;
            board.finish(pipeline, finished, &mut manifest)?;
        }
        Ok(())
    })?;

    // The run's progress (stages found up to date included) is saved once at the end.
    if board.states.iter().all(|s| *s == State::Done) {
        record_run_complete(pipeline, &mut manifest);
    }
    manifest.save(run_dir)?;
    let stages = pipeline
        .stages
        .iter()
        .zip(board.outcomes)
        .map(|(s, o)| (s.id.clone(), o.unwrap_or(StageOutcome::NotRun)))
        .collect();
    Ok(RunSummary {
        run_dir: run_dir.clone(),
        stages,
    })
}

/// Refuses options that do not fit the pipeline: a `--force` of a stage it does not have, a
/// run-cache folder that would hold the run.
fn check_options(pipeline: &Pipeline, options: &RunOptions) -> Result<(), EngineError> {
    for id in &options.force {
        if pipeline.stage(id).is_none() {
            return Err(EngineError::Usage(format!(
                "--force {id}: the pipeline has no stage `{id}`"
            )));
        }
    }
    if let Some(why) = pipeline.run_cache.problem(&pipeline.run_dir) {
        return Err(EngineError::Usage(format!("pipeline.run_cache: {why}")));
    }
    Ok(())
}

/// Opens the run: the run directory and run-cache checked, the run lock taken, the lock file
/// read, stale temporaries of earlier runs removed, and the run's start recorded with its
/// settings saved beside the lock.
fn start(
    pipeline: &Pipeline,
    options: &RunOptions,
) -> Result<(Option<RunCache>, RunLock, Manifest), EngineError> {
    let run_dir = &pipeline.run_dir;
    create_run_dir(run_dir)?;
    let cache = pipeline.run_cache.folder(run_dir).map(RunCache::at);
    if let Some(cache) = &cache {
        cache
            .check_folder()
            .map_err(|e| EngineError::io(cache.root(), e))?;
    }
    // A lock file that cannot be trusted is refused before anything in the directory is
    // touched; it is read again under the run lock (another run may have replaced it).
    Manifest::load(run_dir)?;
    let lock = RunLock::acquire(run_dir, options.wait_for_lock)?;
    let mut manifest = Manifest::load(run_dir)?;
    remove_stale_temporaries(pipeline);
    manifest.format = manifest::LOCK_FORMAT;
    manifest.pipeline = pipeline.name.clone();
    manifest.mmflow_version = mmflow_schemas::MMFLOW_VERSION.to_string();
    // The lock records the start first, then the settings are saved: a run killed between
    // the two leaves the settings of the last completed run beside its entries.
    let config_text = toml::to_string(&pipeline.resolved).unwrap_or_default();
    manifest.started = Some(RunProgress {
        config: record::config_hash(&config_text),
        stages: BTreeMap::new(),
    });
    manifest.save(run_dir)?;
    manifest::write_atomically(
        &run_dir.join(manifest::RESOLVED_CONFIG_FILE),
        config_text.as_bytes(),
    )?;
    Ok((cache, lock, manifest))
}

/// What a panic in a stage's worker said, as a stage error.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error (panic): {what}")
}

/// Where each stage of a run stands, and whether new stages may start.
struct Board {
    states: Vec<State>,
    outcomes: Vec<Option<StageOutcome>>,
    /// A stage failed without `--keep-going`: no new stage starts.
    stop: bool,
    keep_going: bool,
}

impl Board {
    fn new(stages: usize, keep_going: bool) -> Board {
        Board {
            states: vec![State::Waiting; stages],
            outcomes: vec![None; stages],
            stop: false,
            keep_going,
        }
    }

    /// Whether stage `i` may start now: it waits and every stage it reads from is done. A
    /// stage one of whose upstream stages failed or did not run is marked as not run.
    fn ready(&mut self, pipeline: &Pipeline, i: usize) -> bool {
        if self.states[i] != State::Waiting {
            return false;
        }
        let upstream: Vec<&State> = pipeline.stages[i]
            .upstream
            .iter()
            .filter_map(|u| pipeline.stages.iter().position(|s| &s.id == u))
            .map(|j| &self.states[j])
            .collect();
        if upstream
            .iter()
            .any(|s| matches!(s, State::Failed | State::NotRun))
        {
            self.states[i] = State::NotRun;
            self.outcomes[i] = Some(StageOutcome::NotRun);
            return false;
        }
        upstream.iter().all(|s| **s == State::Done)
    }

    /// Stage `i` failed (logged); without `--keep-going`, nothing new starts.
    fn fail(&mut self, i: usize, stage: &PlannedStage, error: String) {
        tracing::error!(
            "stage `{}` ({}) failed: {error}",
            stage.id,
            stage.stage.kind()
        );
        self.states[i] = State::Failed;
        self.outcomes[i] = Some(StageOutcome::Failed { error });
        self.stop |= !self.keep_going;
    }

    /// A stage's worker finished: its outcome logged and recorded, in the lock first.
    fn finish(
        &mut self,
        pipeline: &Pipeline,
        finished: Finished,
        manifest: &mut Manifest,
    ) -> Result<(), EngineError> {
        let Finished { index, result } = finished;
        let stage = &pipeline.stages[index];
        let run_dir = &pipeline.run_dir;
        let outcome = match result {
            Ok(Completed::Ran {
                entry,
                reason,
                restored_in,
            }) => {
                let (how, outcome) = match restored_in {
                    None => (
                        "ran",
                        StageOutcome::Ran {
                            reason: reason.clone(),
                            seconds: entry.duration_s,
                        },
                    ),
                    Some(seconds) => (
                        "restored from the run-cache",
                        StageOutcome::Restored {
                            reason: reason.clone(),
                            seconds,
                        },
                    ),
                };
                tracing::info!(
                    "{} ({}) {how} in {:.2} s [{reason}]{}",
                    stage.id,
                    stage.stage.kind(),
                    restored_in.unwrap_or(entry.duration_s),
                    summarize_report(&entry)
                );
                record_completed(manifest, &stage.id, &entry.fingerprint);
                manifest.stages.insert(stage.id.clone(), *entry);
                manifest.save(run_dir)?;
                outcome
            }
            Ok(Completed::Skipped {
                fingerprint,
                refreshed,
            }) => {
                tracing::info!("{} ({}) up to date, skipped", stage.id, stage.stage.kind());
                record_completed(manifest, &stage.id, &fingerprint);
                if let Some(e) = manifest.stages.get_mut(&stage.id) {
                    let mut changed = false;
                    if let Some(outputs) = refreshed {
                        e.outputs = outputs;
                        changed = true;
                    }
                    changed |= record_output_kinds(e, &stage.outputs);
                    if changed {
                        manifest.save(run_dir)?;
                    }
                }
                StageOutcome::UpToDate
            }
            Err(error) => {
                self.fail(index, stage, error);
                return Ok(());
            }
        };
        self.states[index] = State::Done;
        self.outcomes[index] = Some(outcome);
        Ok(())
    }
}

/// Creates the run directory, refusing a path that is (or lies below) something other than a
/// directory.
fn create_run_dir(run_dir: &Path) -> Result<(), EngineError> {
    let blocker = run_dir
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| fs::metadata(a).is_ok_and(|m| !m.is_dir()));
    if let Some(blocker) = blocker {
        return Err(EngineError::NotADirectory {
            dir: run_dir.to_path_buf(),
            blocker: blocker.to_path_buf(),
        });
    }
    fs::create_dir_all(run_dir).map_err(|e| EngineError::io(run_dir, e))
}

/// Notes in the started run's progress that `stage` completed with `fingerprint`.
fn record_completed(manifest: &mut Manifest, stage: &str, fingerprint: &str) {
    if let Some(run) = manifest.started.as_mut() {
        run.stages
            .insert(stage.to_string(), fingerprint.to_string());
    }
}

/// Every stage completed: the started run becomes the completed one, and entries of stages
/// that are no longer in the pipeline (renamed or removed) leave the lock.
fn record_run_complete(pipeline: &Pipeline, manifest: &mut Manifest) {
    manifest.stages.retain(|id, _| pipeline.stage(id).is_some());
    manifest.completed = manifest.started.clone();
}

fn summarize_report(entry: &StageEntry) -> String {
    let rows: Vec<String> = entry
        .outputs
        .iter()
        .filter_map(|(name, o)| o.rows.map(|r| format!("{name} {r}")))
        .collect();
    if rows.is_empty() {
        String::new()
    } else {
        format!(" rows: {}", rows.join(", "))
    }
}

fn resolve_inputs(
    stage: &PlannedStage,
    manifest: &Manifest,
    run_dir: &Path,
) -> BTreeMap<String, Vec<ResolvedInput>> {
    stage
        .inputs
        .iter()
        .map(|(slot, refs)| {
            let resolved = refs
                .iter()
                .map(|r| ResolvedInput {
                    reference: r.clone(),
                    path: manifest
                        .stages
                        .get(&r.stage)
                        .and_then(|e| e.outputs.get(&r.output))
                        .map(|o| run_dir.join(&o.path))
                        .unwrap_or_default(),
                })
                .collect();
            (slot.clone(), resolved)
        })
        .collect()
}

fn temp_dir_name(stage_dir: &Path) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    stage_dir.join(format!(".tmp-{}-{nanos}", std::process::id()))
}

/// Whether `name` is one [`temp_dir_name`] makes: `.tmp-<pid>-<nanos>`.
fn is_temp_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(".tmp-") else {
        return false;
    };
    let mut parts = rest.split('-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// Removes temporary directories left by killed runs (we hold the run lock: none is live):
/// only folders named as mmflow names them, in stage folders that are real folders (never
/// through a link to somewhere else).
fn remove_stale_temporaries(pipeline: &Pipeline) {
    for stage in &pipeline.stages {
        let dir = pipeline.run_dir.join(&stage.id);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let ours = is_temp_dir_name(&entry.file_name().to_string_lossy())
                && entry.file_type().is_ok_and(|t| t.is_dir());
            if ours {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The output folder of a stage, created if absent. Anything else in its place (a link, a
/// file) is not mmflow's: outputs are never written through it.
fn stage_folder(run_dir: &Path, id: &str) -> Result<PathBuf, String> {
    let dir = run_dir.join(id);
    mmflow_schemas::files::own_folder(&dir)
        .map(|()| dir.clone())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// One stage to bring up to date, with what it needs from the run.
struct Work<'a> {
    pipeline: &'a Pipeline,
    stage: &'a PlannedStage,
    /// The device it computes on, as resolved for the run.
    device: ResolvedDevice,
    cache: Option<&'a RunCache>,
    progress: &'a Progress,
}

/// Outputs put in place from the run-cache, and the entry they came from.
type Restored = (BTreeMap<String, OutputRecord>, CachedEntry);

type RunResult = (
    BTreeMap<String, OutputRecord>,
    BTreeMap<String, serde_json::Value>,
    f64,
);

impl Work<'_> {
    /// Decides, and if needed restores or runs, the stage; returns its new lock entry.
    fn execute(
        &self,
        prepared: Prepared,
        previous: Option<StageEntry>,
        inputs: BTreeMap<String, Vec<ResolvedInput>>,
        forced: bool,
    ) -> Result<Completed, String> {
        if previous.is_none() && prepared.has_unhashed_sources() {
            return self.run_while_hashing(prepared, inputs);
        }
        let fp = prepared
            .hash_sources(Hashing::EveryCore)
            .map_err(|e| e.to_string())?;
        let (pipeline, stage) = (self.pipeline, self.stage);
        let run_dir = &pipeline.run_dir;
        let reason = match plan::decide(stage, &fp, previous.as_ref(), run_dir, forced) {
            Decision::Skip { refreshed } => {
                return Ok(Completed::Skipped {
                    fingerprint: fp.hash,
                    refreshed,
                })
            }
            Decision::Run(reason) => reason,
        };
        let stage_dir = stage_folder(run_dir, &stage.id)?;
        let key = RunCache::key(&fp.hash, &stage.id);
        if !forced {
            let started = Instant::now();
            if let Some((outputs, cached)) = self.restore(&key, &stage_dir)? {
                let entry = self.entry(fp, outputs, cached.report, cached.duration_s);
                self.remember_sources(&entry);
                return Ok(Completed::Ran {
                    entry: Box::new(entry),
                    reason,
                    restored_in: Some(started.elapsed().as_secs_f64()),
                });
            }
        }
        tracing::info!("{} ({}) running: {reason}", stage.id, stage.stage.kind());
        let tmp = temp_dir_name(&stage_dir);
        // `create_dir`, not `create_dir_all`: the temporary folder is always a new one of ours.
        fs::create_dir(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let fingerprint = StageFingerprint::known(fp.hash.clone());
        let result = self.run_in(&fingerprint, inputs, &tmp, &stage_dir);
        let _ = fs::remove_dir_all(&tmp);
        self.ran(fp, result?, reason)
    }

    /// A stage that never ran in this run directory, reading source files neither the lock
    /// nor the run-cache knows: it runs while they are hashed, on another thread (both read
    /// the same files: the second read comes from the page cache), instead of after. Its
    /// tables take the fingerprint when they finish (see [`StageFingerprint`]). No run-cache
    /// entry is looked up: that needs the fingerprint, and files the cache has not seen at
    /// this path have none but by coincidence. The result is the same as hashing first.
    fn run_while_hashing(
        &self,
        prepared: Prepared,
        inputs: BTreeMap<String, Vec<ResolvedInput>>,
    ) -> Result<Completed, String> {
        let stage = self.stage;
        let stage_dir = stage_folder(&self.pipeline.run_dir, &stage.id)?;
        tracing::info!(
            "{} ({}) running: never ran (its new source files are hashed meanwhile)",
            stage.id,
            stage.stage.kind()
        );
        let tmp = temp_dir_name(&stage_dir);
        fs::create_dir(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let fingerprint = StageFingerprint::pending();
        let (hashed, result) = std::thread::scope(|scope| {
            let hashing = scope.spawn(|| {
                // Settled whatever happens, so a writer waiting for it never waits forever.
                let settle_on_exit = SettleOnExit(&fingerprint);
                let fp = prepared
                    .hash_sources(Hashing::ThisThread)
                    .map_err(|e| e.to_string());
                fingerprint.settle(fp.as_ref().map(|f| f.hash.clone()).map_err(Clone::clone));
                drop(settle_on_exit);
                fp
            });
            let result = self.run_in(&fingerprint, inputs, &tmp, &stage_dir);
            let hashed = hashing.join().unwrap_or_else(|_| {
                Err("internal error (panic) while hashing the source files".into())
            });
            (hashed, result)
        });
        let _ = fs::remove_dir_all(&tmp);
        // The source files' error first: a stage's own error then is only its consequence.
        let fp = hashed?;
        self.ran(fp, result?, "never ran".into())
    }

    /// The lock entry of a stage that ran, its outputs added to the run-cache.
    fn ran(&self, fp: Fingerprint, result: RunResult, reason: String) -> Result<Completed, String> {
        let key = RunCache::key(&fp.hash, &self.stage.id);
        let (outputs, report, duration_s) = result;
        let entry = self.entry(fp, outputs, report, duration_s);
        self.store(&key, &entry);
        self.remember_sources(&entry);
        Ok(Completed::Ran {
            entry: Box::new(entry),
            reason,
            restored_in: None,
        })
    }

    /// The lock entry of the stage's outputs.
    fn entry(
        &self,
        fp: Fingerprint,
        outputs: BTreeMap<String, OutputRecord>,
        report: BTreeMap<String, serde_json::Value>,
        duration_s: f64,
    ) -> StageEntry {
        plan::stage_entry(self.stage, fp, outputs, report, duration_s)
    }

    /// Puts the outputs of the run-cache's entry `key` in place, if it has a sound one:
    /// linked into a temporary folder of the stage's, then renamed into place one by one.
    fn restore(&self, key: &str, stage_dir: &Path) -> Result<Option<Restored>, String> {
        let Some(cache) = self.cache else {
            return Ok(None);
        };
        let stage = self.stage;
        let cached = match cache.lookup(key, &stage.outputs) {
            Lookup::Hit(cached) => cached,
            Lookup::Miss => return Ok(None),
            Lookup::Unusable { why, removed } => {
                tracing::warn!(
                    "{}: the run-cache entry {key} in {} was not used ({why}); {}, and the stage runs",
                    stage.id,
                    cache.root().display(),
                    if removed {
                        "it was removed"
                    } else {
                        "it is not an entry mmflow wrote (no record) and was left in place"
                    }
                );
                return Ok(None);
            }
        };
        cache.mark_used(key);
        let tmp = temp_dir_name(stage_dir);
        fs::create_dir(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let linked = stage
            .outputs
            .iter()
            .map(|port| {
                let output = &cached.outputs[&port.name];
                let staged = tmp.join(&output.file);
                run_cache::link_or_copy(&cache.file(key, output), &staged)?;
                Ok((port.name.clone(), staged))
            })
            .collect::<std::io::Result<Vec<_>>>();
        let staged = match linked {
            Ok(staged) => staged,
            // The entry went away since the lookup (pruned by another process): run the stage.
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                tracing::warn!(
                    "{}: the run-cache entry {key} could not be restored ({e}); the stage runs",
                    stage.id
                );
                return Ok(None);
            }
        };
        let result = staged
            .into_iter()
            .map(|(name, from)| {
                let output = &cached.outputs[&name];
                let record = self.put_in_place(
                    &from,
                    stage_dir,
                    &output.file,
                    output.hash.clone(),
                    output.rows,
                )?;
                Ok((name, record))
            })
            .collect::<Result<BTreeMap<_, _>, String>>();
        let _ = fs::remove_dir_all(&tmp);
        Ok(Some((result?, cached)))
    }

    /// Adds the stage's outputs to the run-cache (a failure to is a warning: the run is
    /// complete without it).
    fn store(&self, key: &str, entry: &StageEntry) {
        let Some(cache) = self.cache else {
            return;
        };
        let run_dir = &self.pipeline.run_dir;
        let files = entry
            .outputs
            .iter()
            .map(|(name, o)| (name.clone(), run_dir.join(&o.path)))
            .collect();
        let outputs = entry
            .outputs
            .iter()
            .map(|(name, o)| {
                let file = o
                    .path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let cached = CachedOutput {
                    file,
                    size: o.size,
                    hash: o.hash.clone(),
                    rows: o.rows,
                    table: o.table.clone(),
                };
                (name.clone(), cached)
            })
            .collect();
        let record = CachedEntry {
            format: run_cache::ENTRY_FORMAT,
            key: key.to_string(),
            stage: self.stage.id.clone(),
            fingerprint: entry.fingerprint.clone(),
            outputs,
            report: entry.report.clone(),
            duration_s: entry.duration_s,
            mmflow_version: entry.mmflow_version.clone(),
        };
        if let Err(e) = cache.store(&record, &files) {
            tracing::warn!(
                "{}: its outputs could not be added to the run-cache in {}: {e}",
                self.stage.id,
                cache.root().display()
            );
        }
    }

    /// Tells the run-cache the hashes of the source files a completed stage read (a stage
    /// that failed leaves nothing behind, there either).
    fn remember_sources(&self, entry: &StageEntry) {
        if let Some(cache) = self.cache {
            for record in &entry.external_files {
                cache.remember_hash(record);
            }
        }
    }

    fn run_in(
        &self,
        fingerprint: &StageFingerprint,
        inputs: BTreeMap<String, Vec<ResolvedInput>>,
        tmp: &Path,
        stage_dir: &Path,
    ) -> Result<RunResult, String> {
        let stage = self.stage;
        let outputs: BTreeMap<String, PathBuf> = stage
            .outputs
            .iter()
            .map(|o| (o.name.clone(), tmp.join(o.file_name())))
            .collect();
        let mut ctx = RunContext {
            stage_id: &stage.id,
            seed: stage.seed,
            device: self.device,
            progress: self.progress,
            inputs: &inputs,
            outputs: outputs.clone(),
            meta: TableMeta {
                stage: stage.id.clone(),
                fingerprint: fingerprint.clone(),
            },
            report: BTreeMap::new(),
        };
        let started = Instant::now();
        stage
            .stage
            .run(&stage.params, &mut ctx)
            .map_err(|e: StageError| e.to_string())?;
        let duration_s = started.elapsed().as_secs_f64();
        // Every declared output must exist before anything is moved into place.
        for (name, path) in &outputs {
            if !path.is_file() {
                return Err(format!(
                    "internal error: the stage did not write its output `{name}`"
                ));
            }
        }
        let mut records = BTreeMap::new();
        for port in &stage.outputs {
            let from = &outputs[&port.name];
            let hash = manifest::hash_file(from).map_err(|e| format!("{}: {e}", from.display()))?;
            let rows = (port.kind.extension == "parquet")
                .then(|| mmflow_schemas::row_count(from).ok())
                .flatten();
            let record = self.put_in_place(from, stage_dir, &port.file_name(), hash, rows)?;
            records.insert(port.name.clone(), record);
        }
        Ok((records, ctx.report, duration_s))
    }

    /// Renames a finished output file into the stage's folder; its lock record.
    fn put_in_place(
        &self,
        from: &Path,
        stage_dir: &Path,
        file: &str,
        hash: String,
        rows: Option<u64>,
    ) -> Result<OutputRecord, String> {
        let to = stage_dir.join(file);
        fs::rename(from, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        let (size, mtime_ns) = manifest::stat(&to).map_err(|e| format!("{}: {e}", to.display()))?;
        let table = self
            .stage
            .outputs
            .iter()
            .find(|p| p.file_name() == file)
            .map(|p| p.kind.name.to_string());
        Ok(OutputRecord {
            path: Path::new(&self.stage.id).join(file),
            size,
            mtime_ns,
            hash,
            rows,
            table,
        })
    }
}

/// Settles a pending fingerprint as missing when dropped before it was given one (the
/// hashing thread panicked): a writer waiting for it fails instead of waiting forever.
struct SettleOnExit<'a>(&'a StageFingerprint);

impl Drop for SettleOnExit<'_> {
    fn drop(&mut self) {
        self.0
            .settle(Err("hashing the source files stopped unexpectedly".into()));
    }
}

/// Records the table kind of each declared output in an entry that lacks it (an entry of a
/// lock written before format 3, found up to date); returns whether anything was added.
fn record_output_kinds(entry: &mut StageEntry, ports: &[OutputPort]) -> bool {
    let mut added = false;
    for port in ports {
        if let Some(record) = entry.outputs.get_mut(&port.name) {
            if record.table.is_none() {
                record.table = Some(port.kind.name.to_string());
                added = true;
            }
        }
    }
    added
}
